"""Feedback on served decisions and the online router behind it, in one process and shared
through real Redis (and a real 3-node Redis Cluster started here)."""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from redis_helpers import redis_url
from routeiq.data.records import read_records
from routeiq.online.store import RedisStore
from routeiq.router import Candidate
from routeiq.serving import RouteRequest
from routeiq.serving.feedback import (
    DuplicateFeedback,
    FeedbackForbidden,
    Identity,
    InvalidFeedback,
    StoreUnavailable,
    UnknownDecision,
    parse_score,
)

CODE = "Write a Python function that computes the median of a list, with tests."
CANDS = (Candidate("strong", "gpt-4o", 0.0026), Candidate("cheap", "gpt-4o-mini", 0.00003))
# A weak prior: a few ratings move the prediction (the defaults are tuned for real traffic).
ONLINE = {
    "online": {
        "enabled": True,
        "prior_precision": 1.0,
        "calibration_precision": 1.0,
        "pooled_precision": None,
        "noise": 0.1,
    }
}


def req(identity: Identity | None = None, text: str = CODE) -> RouteRequest:
    return RouteRequest(
        group="chat",
        candidates=CANDS,
        messages=[{"role": "user", "content": text}],
        identity=identity,
    )


def quality_of(decision: Any, name: str) -> float:
    return next(r.predicted_quality for r in decision.candidates if r.name == name)


# ------------------------------------------------------------------------------ scores


@pytest.mark.parametrize(
    ("value", "expected"), [(0.25, 0.25), (1, 1.0), ("up", 1.0), ("Down", 0.0), (True, 1.0)]
)
def test_scores_are_numbers_in_unit_interval_or_thumbs(value, expected):
    assert parse_score(value) == expected


@pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), "great", None, [1]])
def test_bad_scores_are_refused_with_the_rule(value):
    with pytest.raises(InvalidFeedback, match=r"\[0, 1\]"):
        parse_score(value)


# ------------------------------------------------------------------------------ one process


async def test_feedback_is_joined_with_its_decision_in_the_log(make_engine, tmp_path):
    engine = make_engine(log=True)
    decision = await engine.decide(req())
    result = engine.feedback(decision.id, "up")
    assert result == {
        "decision_id": decision.id,
        "metric": "quality",
        "score": 1.0,
        "model": decision.model,
        "learned": False,  # online learning is off
    }
    engine.feedback(decision.id, 0.4, metric="helpfulness")
    engine.decision_log.close()
    (record,) = read_records(tmp_path / "decisions.jsonl")
    outcome = record.outcomes[decision.model]
    assert outcome.quality == 1.0
    assert outcome.scores == {"helpfulness": 0.4}
    assert record.decision is not None and record.decision.deployment == decision.chosen


async def test_unknown_duplicate_and_invalid_feedback_get_clear_errors(make_engine, metrics):
    engine = make_engine()
    decision = await engine.decide(req())
    with pytest.raises(UnknownDecision, match="no decision 'nope'"):
        engine.feedback("nope", 1.0)
    engine.feedback(decision.id, 1.0)
    with pytest.raises(DuplicateFeedback, match="already has a 'quality' score"):
        engine.feedback(decision.id, 0.0)
    with pytest.raises(InvalidFeedback):
        engine.feedback(decision.id, 2.0, metric="other")
    with pytest.raises(InvalidFeedback, match="metric"):
        engine.feedback(decision.id, 1.0, metric="bad metric!")
    samples = {
        s.labels["result"]: s.value
        for f in metrics.registry.collect()
        for s in f.samples
        if s.name == "routeiq_feedback_total"
    }
    assert samples == {"accepted": 1.0, "unknown": 1.0, "duplicate": 1.0}


async def test_feedback_expires_after_ttl(make_engine):
    engine = make_engine({"feedback": {"ttl_s": 0.05}})
    decision = await engine.decide(req())
    time.sleep(0.1)
    with pytest.raises(UnknownDecision, match=r"older than feedback\.ttl_s"):
        engine.feedback(decision.id, 1.0)


async def test_only_the_requesting_key_its_team_admin_or_a_proxy_admin_may_rate(make_engine):
    engine = make_engine()
    owner = Identity(key_hash="k1", team_id="t1")
    ids = [(await engine.decide(req(owner))).id for _ in range(4)]
    with pytest.raises(FeedbackForbidden, match="another key"):
        engine.feedback(ids[0], 1.0, identity=Identity(key_hash="k2", team_id="t1"))
    with pytest.raises(FeedbackForbidden):  # an admin of another team
        engine.feedback(
            ids[0], 1.0, identity=Identity(key_hash="k3", team_id="t2", team_admin=True)
        )
    engine.feedback(ids[0], 1.0, identity=owner)
    engine.feedback(ids[1], 1.0, identity=Identity(key_hash="k9", team_id="t1", team_admin=True))
    engine.feedback(ids[2], 1.0, identity=Identity(key_hash="m", role="proxy_admin"))
    engine.feedback(ids[3], 1.0)  # in-process (SDK) callers are trusted


async def test_online_router_starts_as_the_artifact_and_learns_from_feedback(make_engine):
    offline = make_engine()
    online = make_engine(ONLINE)
    before = await offline.decide(req())
    first = await online.decide(req())
    # Warm start: no feedback yet, so the same predictions and the same choice.
    assert quality_of(first, "strong") == pytest.approx(quality_of(before, "strong"))
    assert first.chosen == before.chosen
    for _ in range(40):  # the first choice keeps failing...
        decision = await online.decide(req())
        if decision.chosen != first.chosen:
            break
        assert online.feedback(decision.id, 0.0)["learned"] is True
    after = await online.decide(req())
    assert quality_of(after, first.chosen) < quality_of(before, first.chosen) - 0.05
    assert after.chosen != first.chosen  # ...so the router moves to the other candidate


async def test_failed_attempts_teach_the_router_when_configured(make_engine):
    engine = make_engine({**ONLINE, "feedback": {"error_quality": 0.0}})
    before = await engine.decide(req())
    for _ in range(30):
        d = await engine.decide(req())
        engine.record_outcome(
            d.id, group="chat", deployment=d.chosen, model=d.model, status="failure"
        )
    after = await engine.decide(req())
    assert quality_of(after, before.chosen) < quality_of(before, before.chosen)


# ------------------------------------------------------------------------------ shared


async def test_two_workers_share_feedback_and_learning_through_redis(make_engine):
    prefix = f"routeiq-test-{time.time_ns()}"
    shared = {**ONLINE, "shared_state": {"url": redis_url(), "prefix": prefix}}
    a, b = make_engine(shared), make_engine(shared)
    decisions = [await a.decide(req(Identity(key_hash="k1"))) for _ in range(3)]
    a.learning.store.sync()  # what the sync thread does every sync_interval_s
    b_before = await b.decide(req())
    for d in decisions:  # every rating reaches the worker that did not decide
        assert b.feedback(d.id, 0.0, identity=Identity(key_hash="k1"))["learned"] is True
    with pytest.raises(DuplicateFeedback):  # refused on the other worker too
        a.feedback(decisions[0].id, 1.0)
    with pytest.raises(FeedbackForbidden):
        a.feedback(decisions[1].id, 1.0, metric="other", identity=Identity(key_hash="k2"))
    b.learning.store.sync()
    a.learning.store.sync()
    chosen = decisions[0].chosen
    a_after, b_after = await a.decide(req()), await b.decide(req())
    assert quality_of(a_after, chosen) == pytest.approx(quality_of(b_after, chosen), abs=1e-9)
    assert quality_of(a_after, chosen) < quality_of(b_before, chosen) - 0.05
    # A restarted worker starts from the shared state, not from the artifact.
    c = make_engine(shared)
    await c.decide(req())
    c.learning.store.sync()
    assert quality_of(await c.decide(req()), chosen) == pytest.approx(
        quality_of(a_after, chosen), abs=1e-9
    )


async def test_redis_down_learning_and_feedback_continue_locally(make_engine, metrics):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    shared = {**ONLINE, "shared_state": {"url": f"redis://127.0.0.1:{port}/0"}}
    engine = make_engine(shared)
    before = await engine.decide(req())
    for _ in range(30):
        d = await engine.decide(req())
        engine.feedback(d.id, 0.0)
    assert engine.learning.store.sync() is False
    with pytest.raises(StoreUnavailable, match="unreachable; retry later"):
        engine.feedback("another-workers-decision", 1.0)  # a 503, not "unknown"
    after = await engine.decide(req())
    assert quality_of(after, before.chosen) < quality_of(before, before.chosen)
    errors = sum(
        s.value
        for f in metrics.registry.collect()
        for s in f.samples
        if s.name == "routeiq_online_store_errors_total"
    )
    assert errors >= 1


# ------------------------------------------------------------------------------ cluster


def _free_ports(n: int) -> list[int]:
    """Ports p with p and p + 10000 (the cluster bus) free; Redis wants p <= 55535."""
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        p = rng.randrange(20000, 45000)
        try:
            for q in (p, p + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", q))
        except OSError:
            continue
        if p not in ports:
            ports.append(p)
    return ports


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[str]:
    """A 3-master Redis Cluster on spare 127.0.0.1 ports, stopped after the test."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.skip("redis-server / redis-cli not installed: no local Redis Cluster")
    ports = _free_ports(3)
    procs = []
    try:
        for port in ports:
            d = tmp_path / str(port)
            d.mkdir()
            procs.append(
                subprocess.Popen(
                    [
                        server,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(d / "nodes.conf"),
                        "--dir",
                        str(d),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 10
        for port in ports:
            while (
                subprocess.run(
                    [cli, "-p", str(port), "ping"], capture_output=True, text=True
                ).stdout.strip()
                != "PONG"
            ):
                if time.monotonic() > deadline:
                    pytest.fail(f"redis-server on port {port} did not start")
                time.sleep(0.05)
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        while (
            "cluster_state:ok"
            not in subprocess.run(
                [cli, "-p", str(ports[0]), "cluster", "info"], capture_output=True, text=True
            ).stdout
        ):
            if time.monotonic() > deadline + 20:
                pytest.fail("the Redis Cluster did not reach state ok")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


async def test_shared_state_works_on_redis_cluster(make_engine, redis_cluster):
    shared = {**ONLINE, "shared_state": {"url": redis_cluster, "cluster": True}}
    a, b = make_engine(shared), make_engine(shared)
    decisions = [await a.decide(req()) for _ in range(3)]
    assert a.learning.store.sync() is True
    await b.decide(req())
    for d in decisions:
        assert b.feedback(d.id, 0.0)["learned"] is True
    with pytest.raises(DuplicateFeedback):
        a.feedback(decisions[0].id, 0.0)
    assert b.learning.store.sync() and a.learning.store.sync()
    chosen = decisions[0].chosen
    qa = quality_of(await a.decide(req()), chosen)
    qb = quality_of(await b.decide(req()), chosen)
    assert qa == pytest.approx(qb, abs=1e-9)
    store = a.learning.store
    assert isinstance(store, RedisStore)
    key = next(iter(store._learners))
    counts = np.array(store._learners[key].state()["count"])
    assert counts.sum() == pytest.approx(3)


# ------------------------------------------------------------------------------ batch import


async def test_batch_import_is_checked_line_by_line_and_all_or_nothing(make_engine, tmp_path):
    from typer.testing import CliRunner

    from routeiq.cli.main import app

    engine = make_engine(log=True)
    ids = [(await engine.decide(req())).id for _ in range(3)]
    engine.decision_log.close()
    log = tmp_path / "decisions.jsonl"
    ratings = tmp_path / "ratings.jsonl"
    lines = [
        {"decision_id": ids[0], "score": 0.9},
        {"decision_id": ids[1], "score": "down", "metric": "helpfulness"},
        {"decision_id": "missing", "score": 1},
        {"decision_id": ids[2], "score": 7},
        {"decision_id": ids[0], "score": 0.1},
    ]
    ratings.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    before = log.read_text()
    result = CliRunner().invoke(app, ["feedback", str(ratings), "--log", str(log)])
    assert result.exit_code == 2, result.output
    for expected in [
        "line 3: decision 'missing' is not in",
        "line 4: score must be",
        "line 5: decision",
        "already has a 'quality' score",
        "line 6:",
        "nothing written",
    ]:
        assert expected in " ".join(result.output.split()), result.output
    assert log.read_text() == before
    ratings.write_text("\n".join(json.dumps(x) for x in lines[:2]) + "\n")
    result = CliRunner().invoke(app, ["feedback", str(ratings), "--log", str(log)])
    assert result.exit_code == 0, result.output
    merged = {r.id: r for r in read_records(log)}
    assert merged[ids[0]].outcomes[merged[ids[0]].decision.chosen].quality == 0.9
    assert merged[ids[1]].outcomes[merged[ids[1]].decision.chosen].scores == {"helpfulness": 0.0}
    again = CliRunner().invoke(app, ["feedback", str(ratings), "--log", str(log)])
    assert again.exit_code == 2 and "already has" in again.output


def test_shared_state_needs_a_redis_url():
    from routeiq.serving.settings import RouteIQConfigError
    from routeiq.serving.settings_file import parse_settings

    with pytest.raises(RouteIQConfigError, match=r"shared_state\.url must be redis://"):
        parse_settings({"shared_state": {"url": "http://127.0.0.1:6379"}})
    with pytest.raises(RouteIQConfigError, match="online"):
        parse_settings({"online": {"enabled": True, "typo": 1}})


async def test_the_shared_online_state_exports_as_a_verified_snapshot(
    make_engine, artifact, tmp_path
):
    from typer.testing import CliRunner

    from routeiq.artifacts import ArtifactError
    from routeiq.cli.main import app
    from routeiq.online.snapshot import SnapshotError, load_snapshot

    prefix = f"routeiq-test-{time.time_ns()}"
    url = redis_url()
    engine = make_engine({**ONLINE, "shared_state": {"url": url, "prefix": prefix}})
    decisions = [await engine.decide(req(Identity(key_hash="k1"))) for _ in range(3)]
    for d in decisions:
        engine.feedback(d.id, 0.0, identity=Identity(key_hash="k1"))
    engine.learning.store.sync()
    (key, learner), *_ = engine.learning._online.items()

    runner = CliRunner()
    listed = runner.invoke(app, ["online", "list", "--redis", url, "--prefix", prefix])
    assert listed.exit_code == 0 and listed.output.split() == [key], listed.output
    out = tmp_path / "snap"
    args = ["online", "export", key, "--out", str(out), "--redis", url, "--prefix", prefix]
    exported = runner.invoke(app, [*args, "--router", str(artifact)])
    assert exported.exit_code == 0, exported.output
    state, meta = load_snapshot(out)
    assert meta["key"] == key and meta["observations"] == 3.0
    assert meta["models"] == list(learner.models)
    for name, arr in learner.state().items():  # exactly the learner's merged state
        assert state[name] == pytest.approx(arr)
    # A snapshot is an artifact: an edited file is refused; so is an unknown key.
    with open(out / "metadata.json", "a") as fh:
        fh.write(" ")
    with pytest.raises((SnapshotError, ArtifactError)):
        load_snapshot(out)
    other = ["online", "export", "chat:nope", "--out", str(tmp_path / "x")]
    missing = runner.invoke(app, [*other, "--redis", url, "--prefix", prefix])
    assert missing.exit_code == 2 and "no online state" in missing.output
