"""The serving engine (LiteLLM-independent): rules, fallbacks, overrides, decision log, swap.

Nothing here imports LiteLLM: the ``artifact``, ``router`` and ``make_engine`` fixtures
(conftest) build the demo artifact without it.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from routeiq.data.records import read_records
from routeiq.decision.rules import CHEAPEST_RULE, DEFAULT_RULE, SHUFFLE_RULE
from routeiq.router import Candidate, LearnedRouter
from routeiq.serving import (
    DecisionEngine,
    DecisionLog,
    NoCandidatesError,
    OverrideError,
    RouteIQSettings,
    RouteRequest,
    RouterRegistry,
)
from routeiq.telemetry.metrics import RouteIQMetrics

# As in tests/litellm_helpers.py (which imports the demo module, hence LiteLLM).
CODE = "Write a Python function that computes the median of a list, with tests."
CHAT = "Hi there! How are you doing this weekend? Any fun plans?"
STRONG_COST, CHEAP_COST = 0.0026, 0.00003  # USD per demo request: gpt-4o, gpt-4o-mini
CANDS = (
    Candidate("strong", "gpt-4o", STRONG_COST),
    Candidate("cheap", "gpt-4o-mini", CHEAP_COST),
)
ID_RE = re.compile(rf"^{os.getpid()}-[0-9a-f]{{32}}$")


def user(text: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def request(text: Any = CODE, group: str = "chat", **kwargs: Any) -> RouteRequest:
    kwargs.setdefault("candidates", CANDS)
    return RouteRequest(group=group, messages=user(text), **kwargs)


def sample_sum(metrics: RouteIQMetrics, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def row(decision: Any, name: str) -> Any:
    return next(r for r in decision.candidates if r.name == name)


# ------------------------------------------------------------------------------ fixtures


# ------------------------------------------------------------------------------ route mode


@pytest.mark.parametrize("scoring", ["auto", "inline", "thread"])
async def test_route_mode_sends_code_to_strong_and_chat_to_cheap(make_engine, router, scoring):
    engine = make_engine({"scoring": scoring, "decision_timeout_ms": 5000})
    code = await engine.decide(request(CODE))
    chat = await engine.decide(request(CHAT, attempt=3))

    assert (code.chosen, code.model) == ("strong", "gpt-4o")
    assert (chat.chosen, chat.model) == ("cheap", "gpt-4o-mini")
    for d, attempt in ((code, 1), (chat, 3)):
        assert ID_RE.match(d.id), d.id
        assert d.group == "chat"
        assert d.attempt == attempt
        assert d.router == router.digest and len(router.digest) == 64
        assert d.outcome == "routed" and d.fallback_reason is None
        assert d.lam == 20.0 and d.rule == DEFAULT_RULE
        assert d.override is None
        assert d.propensity == 1.0
        probs = {r.name: r.probability for r in d.candidates}
        assert probs == {d.chosen: 1.0, ({"strong", "cheap"} - {d.chosen}).pop(): 0.0}
        assert [r.cost for r in d.candidates] == [STRONG_COST, CHEAP_COST]  # the caller's
    assert code.id != chat.id
    assert row(code, "strong").predicted_quality > row(code, "cheap").predicted_quality + 0.5
    # Chit-chat: equal quality, so 20 * $0.00257 decides it.
    assert abs(row(chat, "strong").predicted_quality - row(chat, "cheap").predicted_quality) < 0.05


async def test_routing_text_is_the_last_user_turn(make_engine):
    engine = make_engine()
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": CODE},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": [{"type": "text", "text": CHAT}, {"type": "image_url"}]},
    ]
    d = await engine.decide(RouteRequest("chat", CANDS, messages=messages))
    assert d.chosen == "cheap"
    assert (await engine.decide(RouteRequest("chat", CANDS, input=CODE))).chosen == "strong"


# ------------------------------------------------------------------------------ retries


async def test_retry_excludes_the_failed_candidate(make_engine):
    engine = make_engine()
    d = await engine.decide(request(CODE, failed={"strong": "retry: provider down"}, attempt=2))
    assert d.chosen == "cheap" and d.outcome == "routed"
    assert "retry: excluded strong" in d.rule
    strong = row(d, "strong")
    assert strong.available is False and strong.probability == 0.0
    assert strong.excluded == "retry: provider down"
    assert row(d, "cheap").excluded is None and d.propensity == 1.0
    record = d.to_record()["decision"]
    assert [c.get("excluded") for c in record["candidates"]] == ["retry: provider down", None]
    assert record["attempt"] == 2

    # Failures of names that are not candidates do not count.
    d = await engine.decide(request(CODE, failed={"elsewhere": "retry: x"}))
    assert d.chosen == "strong" and "retry" not in d.rule


async def test_retry_with_every_candidate_failed_excludes_nothing(make_engine):
    engine = make_engine()
    failed = {"strong": "retry: a", "cheap": "retry: b"}
    d = await engine.decide(request(CODE, failed=failed))
    assert d.chosen == "strong"
    assert "retry" not in d.rule
    assert all(r.available and r.excluded is None for r in d.candidates)


@pytest.mark.parametrize("mode", ["cheapest", "shuffle"])
async def test_retry_exclusion_applies_in_every_mode(make_engine, mode):
    engine = make_engine({"mode": mode}, rng=random.Random(0))
    for _ in range(20):
        d = await engine.decide(request(CODE, failed={"cheap": "retry: 429"}))
        assert d.chosen == "strong" and d.propensity == 1.0
        assert row(d, "cheap").excluded == "retry: 429" and row(d, "cheap").probability == 0
        assert d.rule.endswith("retry: excluded cheap")


# ------------------------------------------------------------------------------ fallback


NO_TEXT = {
    "image only": {"messages": user([{"type": "image_url", "image_url": {"url": "data:,"}}])},
    "system only": {"messages": [{"role": "system", "content": "Be brief."}]},
    "blank user": {"messages": user("   ")},
    "empty messages": {"messages": []},
    "no input": {},
    "token ids": {"input": [101, 2023, 102]},
}


@pytest.mark.parametrize("case", list(NO_TEXT))
async def test_no_routable_text_falls_back_to_the_cheapest_known_cost(make_engine, metrics, case):
    engine = make_engine()
    cands = [
        Candidate("unpriced", "gpt-4o", None),
        Candidate("strong", "gpt-4o", STRONG_COST),
        Candidate("cheap", "gpt-4o-mini", CHEAP_COST),
    ]
    d = await engine.decide(RouteRequest("chat", cands, **NO_TEXT[case]))
    assert d.outcome == "fallback"
    assert d.fallback_reason.startswith("no routable text"), d.fallback_reason
    assert d.chosen == "cheap" and d.propensity == 1.0
    assert d.lam == 20.0 and d.router is None and d.id and d.group == "chat"
    assert sample_sum(metrics, "routeiq_fallbacks_total", reason="no routable text") == 1
    assert (
        sample_sum(metrics, "routeiq_decisions_total", deployment="cheap", outcome="fallback") == 1
    )


async def test_fallback_puts_unknown_costs_last_and_respects_exclusions(make_engine):
    engine = make_engine()
    image = NO_TEXT["image only"]
    unpriced = Candidate("unpriced", "gpt-4o", None)
    strong = CANDS[0]
    d = await engine.decide(RouteRequest("chat", [unpriced, strong], **image))
    assert d.chosen == "strong"
    d = await engine.decide(RouteRequest("chat", [unpriced, Candidate("x", "m", None)], **image))
    assert d.chosen == "unpriced"  # nothing priced: the first
    d = await engine.decide(RouteRequest("chat", CANDS, failed={"cheap": "retry: x"}, **image))
    assert d.chosen == "strong" and d.outcome == "fallback"
    assert "retry: excluded cheap" in d.rule


async def test_prompt_over_max_prompt_chars_falls_back(make_engine, metrics):
    engine = make_engine({"max_prompt_chars": 50})
    d = await engine.decide(request(CODE))
    assert d.outcome == "fallback" and d.chosen == "cheap"
    assert d.fallback_reason.startswith("prompt too long"), d.fallback_reason
    assert f"{len(CODE)} characters" in d.fallback_reason
    assert sample_sum(metrics, "routeiq_fallbacks_total", reason="prompt too long") == 1
    assert (await engine.decide(request(CODE[:50]))).outcome == "routed"  # at the limit


@pytest.mark.parametrize("scoring", ["inline", "thread"])
async def test_router_error_falls_back(make_engine, artifact, metrics, scoring, caplog):
    broken = LearnedRouter.load(artifact)

    def boom(text: str, candidates: Any, online: Any, context: Any = None) -> Any:
        raise RuntimeError("model file corrupted")

    broken.score_online = boom  # type: ignore[method-assign]
    engine = make_engine({"scoring": scoring, "decision_timeout_ms": 5000}, router=broken)
    d = await engine.decide(request(CODE))
    assert d.outcome == "fallback" and d.chosen == "cheap"
    assert d.fallback_reason.startswith("error:"), d.fallback_reason
    assert "RuntimeError: model file corrupted" in d.fallback_reason
    assert sample_sum(metrics, "routeiq_fallbacks_total", reason="error") == 1
    assert "router failed" in caplog.text


@pytest.fixture
def slow_router(artifact: Path) -> Iterator[tuple[LearnedRouter, threading.Event, list[str]]]:
    """A router whose ``score`` takes 0.3 s unless ``gate`` is set (set at teardown)."""
    slow = LearnedRouter.load(artifact)
    gate, calls = threading.Event(), []
    score = slow.score_online

    def sleepy(text: str, candidates: Any, online: Any, context: Any = None) -> Any:
        calls.append(text)
        gate.wait(0.3)
        return score(text, candidates, online, context)

    slow.score_online = sleepy  # type: ignore[method-assign]
    yield slow, gate, calls
    gate.set()


async def test_scoring_timeout_falls_back_without_blocking_the_loop(make_engine, slow_router):
    slow, _gate, calls = slow_router
    engine = make_engine(
        {"scoring": "thread", "decision_timeout_ms": 20, "threads": 1}, router=slow
    )
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    d = await engine.decide(request(CODE))
    elapsed = time.perf_counter() - started
    task.cancel()

    assert d.outcome == "fallback" and d.chosen == "cheap"
    assert d.fallback_reason == "timeout: no decision within 20 ms"
    assert calls in ([CODE], [])  # [] if a loaded machine did not start the job in 20 ms
    # The 20 ms budget, not the router's 0.3 s; and the loop was never blocked that long.
    assert elapsed < 0.25
    assert len(ticks) >= 3
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.25


async def test_backlogged_scoring_jobs_are_skipped(make_engine, slow_router):
    slow, gate, calls = slow_router
    engine = make_engine(
        {"scoring": "thread", "decision_timeout_ms": 20, "threads": 1}, router=slow
    )
    texts = [CODE, CHAT, CODE + " Quickly.", CHAT + " Tell me."]
    decisions = await asyncio.gather(*(engine.decide(request(t)) for t in texts))
    assert all(d.fallback_reason.startswith("timeout") for d in decisions)
    gate.set()
    # One worker, busy with the first job that started (0.3 s, or until the gate opens, long
    # after every deadline): the jobs queued behind it were cancelled while queued, or skipped
    # as expired when they started. This runs after all of them.
    await asyncio.wrap_future(engine.scorer.executor.submit(lambda: None))
    assert len(calls) <= 1, calls


def test_auto_scoring_is_inline_for_lexical_routers(router):
    assert router.featurizer.inline_safe is True


# ------------------------------------------------------------------------------ modes


async def test_shuffle_mode_honours_weights_and_logs_the_weight_share(make_engine):
    cands = [Candidate("a", "gpt-4o", STRONG_COST, 3.0), Candidate("b", "gpt-4o-mini", None, 1.0)]
    engine = make_engine({"mode": "shuffle"}, rng=random.Random(1234))
    chosen = []
    for _ in range(1000):
        d = await engine.decide(RouteRequest("chat", cands, messages=user(CODE)))
        assert d.outcome == "shuffle" and d.rule == SHUFFLE_RULE and d.lam is None
        assert [r.probability for r in d.candidates] == [0.75, 0.25]
        assert d.propensity == {"a": 0.75, "b": 0.25}[d.chosen]
        assert d.router is None
        chosen.append(d.chosen)
    assert 0.70 < chosen.count("a") / len(chosen) < 0.80  # 0.75 +- 3.6 sd

    # Seeded: the same sequence again.
    again = make_engine({"mode": "shuffle"}, rng=random.Random(1234))
    replay = [
        (await again.decide(RouteRequest("chat", cands, messages=user(CODE)))).chosen
        for _ in range(50)
    ]
    assert replay == chosen[:50]


async def test_shuffle_with_zero_weights_is_uniform(make_engine):
    cands = [Candidate("a", "gpt-4o", None, 0.0), Candidate("b", "gpt-4o-mini", None, 0.0)]
    engine = make_engine({"mode": "shuffle"}, rng=random.Random(0))
    d = await engine.decide(RouteRequest("chat", cands))
    assert [r.probability for r in d.candidates] == [0.5, 0.5] and d.propensity == 0.5


async def test_unrouted_group_in_route_mode_is_shuffled(make_engine, router):
    engine = make_engine(unrouted={"embed"}, rng=random.Random(0))
    cands = [
        Candidate("e1", "text-embedding-3-small", 2e-8, 1.0),
        Candidate("e2", "text-embedding-3-large", 1e-7, 4.0),
    ]
    d = await engine.decide(RouteRequest("embed", cands, input="hello"))
    assert d.outcome == "shuffle" and d.router is None
    assert d.propensity == {"e1": 0.2, "e2": 0.8}[d.chosen]
    routed = await engine.decide(request(CODE))  # another group still routes
    assert routed.outcome == "routed" and routed.router == router.digest


async def test_cheapest_mode_top_level_and_per_group(make_engine):
    cands = [Candidate("unpriced", "gpt-4o", None), *CANDS]
    engine = make_engine({"groups": {"econ": {"mode": "cheapest"}}})
    d = await engine.decide(RouteRequest("econ", cands, messages=user(CODE)))
    assert d.outcome == "cheapest" and d.chosen == "cheap" and d.router is None
    assert d.propensity == 1.0
    assert (await engine.decide(RouteRequest("chat", cands, messages=user(CODE)))).chosen == (
        "strong"
    )
    everywhere = make_engine({"mode": "cheapest", "lambda": None})
    d = await everywhere.decide(RouteRequest("any", cands[:2], messages=user(CODE)))
    assert d.outcome == "cheapest" and d.chosen == "strong"  # unknown cost last
    assert d.lam is None


async def test_pinned_request_is_not_a_choice(make_engine):
    d = await make_engine().decide(request(CHAT, candidates=CANDS[:1], pinned=True))
    assert (d.chosen, d.outcome, d.lam, d.propensity) == ("strong", "pinned", None, 1.0)


# ------------------------------------------------------------------------------ overrides


OPEN = {"groups": {"open": {"allow_client_overrides": True}}, "decision_timeout_ms": 5000}


async def test_allowed_client_overrides(make_engine, router):
    engine = make_engine(OPEN)

    async def ask(text: str, override: Any) -> Any:
        return await engine.decide(request(text, group="open", override=override))

    d = await ask(CODE, "cheapest")
    assert (d.chosen, d.lam, d.override, d.rule) == ("cheap", math.inf, "cheapest", CHEAPEST_RULE)
    assert d.outcome == "routed"
    for override, kind in (("best", "best"), ({"lambda": 0}, "lambda")):
        d = await ask(CHAT, override)
        assert d.lam == 0.0 and d.override == kind
        best = max(r.predicted_quality for r in d.candidates)
        assert d.chosen_row.predicted_quality == best
        assert (await ask(CODE, override)).chosen == "strong"
    d = await ask(CODE, {"lambda": 1e6})
    assert d.chosen == "cheap" and d.lam == 1e6

    d = await ask(CODE, {"target": "quality>=0.5"})
    expected = router.route(CODE, list(CANDS), target="quality>=0.5")
    assert d.override == "target"
    assert d.lam == router.calibrate("quality>=0.5").lam == expected.lam
    assert d.chosen == expected.chosen and d.rule == expected.rule
    assert d.rule.startswith("target: 50% of best single model quality")
    # No override: the group's lambda.
    d = await engine.decide(request(CHAT, group="open"))
    assert d.lam == 20.0 and d.override is None


MALFORMED = [
    "fastest",
    "",
    5,
    ["cheapest"],
    {},
    {"lambda": -1},
    {"lambda": "1"},
    {"lambda": True},
    {"lambda": math.nan},
    {"lambda": None},
    {"target": "quality<=0.5"},
    {"target": 0.9},
    {"speed": 1},
    {"lambda": 1, "target": "quality>=0.9"},
]


async def test_malformed_overrides_are_rejected_and_counted(make_engine, metrics):
    engine = make_engine(OPEN, log=True)
    for override in MALFORMED:
        with pytest.raises(OverrideError, match=r"metadata\.routeiq"):
            await engine.decide(request(CODE, group="open", override=override))
    assert sample_sum(
        metrics, "routeiq_rejections_total", model_group="open", reason="OverrideError"
    ) == len(MALFORMED)
    assert sample_sum(metrics, "routeiq_decisions_total") == 0
    assert engine.decision_log.pending() == 0


async def test_overrides_where_not_allowed_are_ignored(make_engine):
    engine = make_engine(OPEN)
    for override in ("cheapest", {"lambda": 0}, "not even valid"):
        d = await engine.decide(request(CODE, override=override))  # group "chat"
        assert d.override == "ignored" and d.lam == 20.0 and d.chosen == "strong"


@pytest.mark.parametrize("mode", ["route", "cheapest", "shuffle"])
async def test_no_candidates_is_rejected_and_counted(make_engine, metrics, mode):
    engine = make_engine({"mode": mode})
    with pytest.raises(NoCandidatesError, match="'chat'"):
        await engine.decide(request(CODE, candidates=()))
    assert (
        sample_sum(
            metrics, "routeiq_rejections_total", reason="NoCandidatesError", model_group="chat"
        )
        == 1
    )
    assert sample_sum(metrics, "routeiq_decisions_total") == 0


# ------------------------------------------------------------------------------ decision log


async def test_every_decision_gives_exactly_one_record(make_engine, metrics, tmp_path, router):
    engine = make_engine(OPEN, log=True)
    decisions = [
        await engine.decide(request(CODE)),
        await engine.decide(request(CHAT)),
        await engine.decide(request(CODE, failed={"strong": "retry: 500"}, attempt=2)),
        await engine.decide(RouteRequest("chat", CANDS, **NO_TEXT["image only"])),
        await engine.decide(request(CHAT, candidates=CANDS[:1], pinned=True)),
        await engine.decide(request(CODE, group="open", override="cheapest")),
    ]
    with pytest.raises(OverrideError):  # rejected: no record
        await engine.decide(request(CODE, group="open", override="bogus"))
    joined = decisions[:3]
    for k, d in enumerate(joined):
        engine.record_outcome(
            d.id,
            group=d.group,
            deployment=d.chosen,
            model=d.model,
            status="success",
            cost=0.001 * (k + 1),
            latency_ms=100.0 + k,
        )
    engine.close()

    path = tmp_path / "decisions.jsonl"
    lines = path.read_text().splitlines()
    records = {r.id: r for r in read_records(path)}
    assert len(lines) == len(records) == len(decisions)  # joined in memory: one line each
    assert sample_sum(metrics, "routeiq_decisions_total") == len(records)
    assert set(records) == {d.id for d in decisions}
    assert sample_sum(metrics, "routeiq_outcomes_total", status="success") == len(joined)

    for k, d in enumerate(decisions):
        rec = records[d.id]
        assert rec.decision.chosen == d.model and rec.decision.deployment == d.chosen
        assert rec.decision.outcome == d.outcome and rec.decision.group == d.group
        assert rec.decision.attempt == d.attempt and rec.decision.propensity == d.propensity
        assert rec.decision.router == d.router
        if d in joined:
            outcome = rec.outcomes[d.model]
            assert outcome.status == "success" and outcome.cost == pytest.approx(0.001 * (k + 1))
            assert outcome.latency_ms == 100.0 + k
        else:
            assert rec.outcomes == {}
    assert records[decisions[0].id].prompt == CODE  # log_prompt: text
    assert records[decisions[0].id].decision.lam == 20.0
    assert records[decisions[0].id].decision.router == router.digest
    assert records[decisions[3].id].prompt is None  # nothing routable to log
    retry = records[decisions[2].id].decision
    assert [c.excluded for c in retry.candidates] == ["retry: 500", None]
    cheapest = records[decisions[5].id].decision
    assert cheapest.lam is None and cheapest.cheapest is True and cheapest.override == "cheapest"


async def test_log_prompt_none_keeps_prompts_out(make_engine, tmp_path):
    engine = make_engine({"log_prompt": "none"}, log=True)
    await engine.decide(request(CODE))
    engine.close()
    (rec,) = read_records(tmp_path / "decisions.jsonl")
    assert rec.prompt is None


async def test_drain_writes_pending_at_once_then_writes_through(make_engine, metrics, tmp_path):
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, metrics=metrics)
    engine = make_engine(log=log)
    early = [await engine.decide(request(text)) for text in (CODE, CHAT, CODE)]
    assert log.pending() == 3

    log.drain()  # on this thread: no wait, no flush
    assert log.pending() == 0
    assert [r.id for r in read_records(path)] == [d.id for d in early]
    assert all(r.outcomes == {} for r in read_records(path))

    late = await engine.decide(request(CHAT))
    assert not log.is_pending(late.id)
    assert read_records(path)[-1].id == late.id  # written through at once
    for d in (early[0], late):
        engine.record_outcome(
            d.id, group="chat", deployment=d.chosen, model=d.model, status="success", cost=0.002
        )
    lines = path.read_text().splitlines()
    assert len(lines) == 6  # 3 drained + 1 decision + 2 partial outcome lines
    merged = {r.id: r for r in read_records(path)}
    assert len(merged) == 4
    for d in (early[0], late):
        assert merged[d.id].outcomes[d.model].status == "success"
        assert merged[d.id].decision.chosen == d.model  # the decision survives the merge
    assert merged[early[1].id].outcomes == {}

    log.drain()  # idempotent
    log.close()
    log.close()
    engine.close()  # closes the log a third time
    assert path.read_text().splitlines() == lines
    assert sample_sum(metrics, "routeiq_decisions_total") == len(merged)


def test_close_is_idempotent_and_flushes_without_a_writer(tmp_path):
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path)
    log.close()
    log.close()
    assert not path.exists() or path.read_text() == ""
    log = DecisionLog(path)
    log.add_decision({"id": "x1", "decision": {"chosen": "gpt-4o", "propensity": 1.0}})
    log.close()
    log.close()
    assert [r.id for r in read_records(path)] == ["x1"]


class BlockingSink:
    """A sink whose writes block until ``release`` is set (a stuck disk or network)."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.lines: list[str] = []

    def write(self, lines: Any) -> None:
        self.entered.set()
        self.release.wait(5.0)
        self.lines.extend(lines)

    def close(self) -> None:
        self.release.set()


def test_full_queue_drops_and_counts_instead_of_blocking(metrics):
    sink = BlockingSink()
    log = DecisionLog(sink, max_queued=1, metrics=metrics)
    k = 10
    try:
        for i in range(k):
            log.add_decision({"id": f"d{i}", "decision": {"chosen": "gpt-4o", "propensity": 1.0}})
        started = time.perf_counter()
        assert log.add_outcome("d0", {"status": "success"})
        assert sink.entered.wait(2.0)  # the writer holds d0 and is stuck in the sink
        for i in range(1, k):
            log.add_outcome(f"d{i}", {"status": "success"})  # d1 queues, the rest drop
        assert time.perf_counter() - started < 1.0
        assert log.dropped == k - 2
        dropped = sample_sum(metrics, "routeiq_decision_log_dropped_total", sink="queue")
        assert dropped == k - 2
    finally:
        sink.release.set()
    log.close(timeout=2.0)
    assert len(sink.lines) == 2
    assert log.pending() == 0


# ------------------------------------------------------------------------------ registry


async def test_swap_serves_the_new_router_from_the_next_decision(make_engine, artifact, router):
    first = LearnedRouter.load(artifact)
    engine = make_engine(router=first)
    before = await engine.decide(request(CODE))
    assert before.router == first.digest == router.digest

    second = LearnedRouter.load(artifact)
    second.digest = "f" * 64
    engine.registry.swap(artifact, second)
    after = await engine.decide(request(CODE))
    assert after.router == "f" * 64
    assert engine.registry.get(artifact) is second
    assert engine.registry.paths() == {artifact: second}


async def test_swap_of_the_default_router(artifact, metrics):
    first, second = LearnedRouter.load(artifact), LearnedRouter.load(artifact)
    second.digest = "e" * 64
    registry = RouterRegistry(default=first)
    engine = DecisionEngine(RouteIQSettings.model_validate({"lambda": 20}), registry)
    try:
        assert (await engine.decide(request(CODE))).router == first.digest
        registry.swap(None, second)
        assert (await engine.decide(request(CODE))).router == "e" * 64
        assert registry.paths() == {}
    finally:
        engine.close()


# ------------------------------------------------------------------------------ no LiteLLM


@pytest.mark.slow
def test_engine_runs_with_litellm_unimportable(artifact):
    code = f"""
import asyncio, sys
sys.modules["litellm"] = None  # any "import litellm" now raises ImportError
from pathlib import Path
from routeiq.router import Candidate, LearnedRouter
from routeiq.serving import DecisionEngine, RouteIQSettings, RouteRequest, RouterRegistry
path = Path({str(artifact)!r})
settings = RouteIQSettings.model_validate({{"router": str(path), "lambda": 20}})
engine = DecisionEngine(settings, RouterRegistry({{path: LearnedRouter.load(path)}}))
cands = [Candidate("strong", "gpt-4o", 0.0026), Candidate("cheap", "gpt-4o-mini", 0.00003)]
msgs = [{{"role": "user", "content": {CODE!r}}}]
print(asyncio.run(engine.decide(RouteRequest("chat", cands, messages=msgs))).chosen)
engine.close()
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "strong"


# ------------------------------------------------------------------------------ exploration


async def test_exploration_logs_replayable_propensities(make_engine, tmp_path, router):
    explore = {"mode": "epsilon", "epsilon": 0.3, "margin": 0.2, "max_cost_ratio": 1000, "seed": 5}
    engine = make_engine({"exploration": explore}, log=True)
    decisions = [await engine.decide(request(CHAT)) for _ in range(200)]
    engine.decision_log.close()
    from routeiq.decision.exploration import draw, sample

    chosen = [d.chosen for d in decisions]
    assert 0.2 < chosen.count("strong") / len(chosen) < 0.4  # epsilon 0.3 of the traffic
    explored = sample_sum(engine.metrics, "routeiq_explored_total", model_group="chat")
    assert explored == chosen.count("strong")
    for d in decisions:
        assert d.greedy == "cheap"
        assert d.propensity == pytest.approx(0.7 if d.chosen == "cheap" else 0.3)
    # Replay: (seed, decision id, router digest) fixes the choice, from the log alone.
    records = read_records(tmp_path / "decisions.jsonl")
    assert len(records) == 200
    for rec in records:
        probs = [c.probability for c in rec.decision.candidates]
        pick = sample(probs, draw(5, rec.id, rec.decision.router))
        assert rec.decision.candidates[pick].deployment == rec.decision.deployment
        assert rec.decision.propensity == pytest.approx(probs[pick])


async def test_exploration_respects_the_cost_cap_and_group_settings(make_engine):
    # Strong costs ~87x cheap: the default max_cost_ratio (2) never explores it for chat.
    engine = make_engine(
        {
            "exploration": {"mode": "epsilon", "epsilon": 0.5, "margin": 1.0},
            "groups": {"quiet": {"exploration": {"mode": "off"}}},
        }
    )
    for _ in range(50):
        d = await engine.decide(request(CHAT))
        assert d.chosen == "cheap" and d.propensity == 1.0 and "explore epsilon" in d.rule
        q = await engine.decide(request(CODE, group="quiet"))
        assert q.chosen == "strong" and q.greedy is None and q.rule == DEFAULT_RULE
    # Code: greedy is strong; cheap is cheaper (the cap only bounds extra cost) and within
    # a margin of 1.0, so half the traffic explores it.
    code = [await engine.decide(request(CODE)) for _ in range(100)]
    assert all(d.greedy == "strong" and d.propensity == 0.5 for d in code)
    assert 30 < sum(d.chosen == "cheap" for d in code) < 70
