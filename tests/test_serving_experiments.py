"""A/B experiments in the serving engine: sticky arms, variant settings, the logged label."""

from __future__ import annotations

import random
from typing import Any

import pytest

from routeiq.data.records import read_records
from routeiq.experiments import analyze
from routeiq.router import Candidate
from routeiq.serving import RouteRequest
from routeiq.serving.settings import RouteIQConfigError
from routeiq.serving.settings_file import parse_settings

CODE = "Write a Python function that computes the median of a list, with tests."
CANDS = (Candidate("strong", "gpt-4o", 0.0026), Candidate("cheap", "gpt-4o-mini", 0.00003))


def experiment(unit: str = "user", **treatment: Any) -> dict[str, Any]:
    return {
        "groups": {
            "chat": {
                "experiment": {
                    "name": "cheaper",
                    "salt": "s1",
                    "unit": unit,
                    "variants": [
                        {"name": "control", "weight": 50, "control": True},
                        {"name": "cheap", "weight": 50, **(treatment or {"lambda": "inf"})},
                    ],
                }
            }
        }
    }


def req(user: str | None = None, **kwargs: Any) -> RouteRequest:
    return RouteRequest(
        group="chat",
        candidates=CANDS,
        messages=[{"role": "user", "content": CODE}],
        user=user,
        **kwargs,
    )


async def test_users_stay_in_their_arm_and_each_arm_runs_its_settings(make_engine):
    engine = make_engine(experiment())
    arms: dict[str, str] = {}
    for round_ in range(2):
        for i in range(60):
            d = await engine.decide(req(f"user-{i}"))
            assert d.variant in ("cheaper/control", "cheaper/cheap")
            if round_ == 0:
                arms[f"user-{i}"] = d.variant
            assert arms[f"user-{i}"] == d.variant  # sticky
            # Control keeps lambda 20 (code goes to the strong model); the arm is cheapest.
            assert d.chosen == ("cheap" if d.variant.endswith("/cheap") else "strong")
    assert 15 < sum(v.endswith("/cheap") for v in arms.values()) < 45


async def test_a_request_without_the_unit_gets_control_and_no_label(make_engine):
    engine = make_engine(experiment())
    d = await engine.decide(req(None))
    assert d.variant is None and d.chosen == "strong"


async def test_unit_request_keeps_retries_in_the_requests_arm(make_engine):
    engine = make_engine(experiment(unit="request"))
    for _ in range(20):
        first = await engine.decide(req())
        retry = await engine.decide(req(request_id=first.id, attempt=2))
        assert retry.variant == first.variant


async def test_a_shuffle_variant_is_stock_litellm_selection(make_engine):
    engine = make_engine(experiment(mode="shuffle"))
    rules = {(d.variant, d.outcome) for d in [await engine.decide(req(f"u{i}")) for i in range(40)]}
    assert ("cheaper/cheap", "shuffle") in rules
    assert ("cheaper/control", "routed") in rules


def test_bad_variant_settings_refuse_start_up():
    with pytest.raises(RouteIQConfigError, match="exploration"):
        parse_settings(experiment(exploration={"mode": "epsilon", "epsilon": 0.9}))
    bad = experiment()
    bad["groups"]["chat"]["experiment"]["variants"][1]["weight"] = 60
    with pytest.raises(RouteIQConfigError, match="sum to 100"):
        parse_settings(bad)


async def test_the_report_reads_the_arms_from_the_log(make_engine, tmp_path):
    engine = make_engine(experiment(), log=True)
    rng = random.Random(0)
    for i in range(200):
        d = await engine.decide(req(f"user-{i}"))
        cost = (0.0026 if d.chosen == "strong" else 0.00003) * rng.uniform(0.5, 1.5)
        engine.record_outcome(
            d.id, group="chat", deployment=d.chosen, model=d.model, status="success", cost=cost
        )
    engine.decision_log.close()
    report = analyze(read_records(tmp_path / "decisions.jsonl"), experiment="cheaper")
    assert report.comparisons["cheap"]["cost"].verdict == "better"
