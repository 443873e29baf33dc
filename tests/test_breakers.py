"""Circuit breakers per deployment: every state transition with an injected clock, the guard
in the engine, and sharing through a real Redis (two "workers" in one process)."""

from __future__ import annotations

import logging
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from routeiq.online.store import SharedStateSettings
from routeiq.resilience.breaker import CircuitBreaker, State, Transition
from routeiq.resilience.breaker_settings import BreakerSettings
from routeiq.resilience.breakers import CircuitBreakers
from routeiq.router import Candidate
from routeiq.serving import NoCandidatesError, RouteRequest
from routeiq.serving.guards import Outcome, build_guards
from routeiq.serving.settings import RouteIQConfigError
from routeiq.serving.settings_file import parse_settings
from test_feedback import redis_cluster  # noqa: F401  (the 3-node Redis Cluster fixture)

CODE = "Write a Python function that computes the median of a list, with tests."
CANDS = (Candidate("strong", "gpt-4o", 0.0026), Candidate("cheap", "gpt-4o-mini", 0.00003))


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings(**kwargs: Any) -> BreakerSettings:
    data: dict[str, Any] = {"enabled": True, "minimum_calls": 5, "open_s": 30.0, **kwargs}
    return BreakerSettings.model_validate(data)


def make(clock: Clock, **kwargs: Any) -> tuple[CircuitBreaker, list[Transition]]:
    seen: list[Transition] = []
    return CircuitBreaker("d1", settings(**kwargs), clock=clock, on_transition=seen.append), seen


def fail(b: CircuitBreaker, n: int, **kwargs: Any) -> None:
    for _ in range(n):
        b.record(failed=True, **kwargs)


def ok(b: CircuitBreaker, n: int, **kwargs: Any) -> None:
    for _ in range(n):
        b.record(failed=False, **kwargs)


def states(seen: list[Transition]) -> list[tuple[str, str]]:
    return [(t.old.value, t.new.value) for t in seen]


# -- the state machine -------------------------------------------------------------------------


def test_count_window_opens_only_after_minimum_calls_at_the_failure_rate():
    clock = Clock()
    b, seen = make(clock)
    fail(b, 4)
    assert b.state is State.CLOSED and b.check() is None  # 4 < minimum_calls
    fail(b, 1)
    assert b.state is State.OPEN
    assert b.check() == "circuit open (failure rate 100% over 5 calls; retry in 30.0 s)"
    assert states(seen) == [("closed", "open")]
    assert seen[0].open_s == 30.0 and seen[0].trips == 1


def test_count_window_below_the_rate_stays_closed_and_old_calls_slide_out():
    clock = Clock()
    b, _ = make(clock, window={"type": "count", "size": 10}, failure_rate=0.5)
    ok(b, 6)
    fail(b, 4)  # 4/10 failed < 50 %
    assert b.state is State.CLOSED and b.counts().failures == 4
    ok(b, 10)  # the 4 failures slid out
    assert b.counts().failures == 0 and b.counts().calls == 10
    fail(b, 4)
    assert b.state is State.CLOSED  # 4/10
    fail(b, 1)
    assert b.state is State.OPEN  # 5/10 >= 50 %


def test_time_window_forgets_calls_older_than_its_length():
    clock = Clock()
    b, _ = make(clock, window={"type": "time", "seconds": 10})
    fail(b, 4)
    clock.advance(10.0)  # those 4 left the window
    assert b.counts().calls == 0
    fail(b, 4)
    assert b.state is State.CLOSED
    clock.advance(5.0)
    fail(b, 1)  # 5 failures within 10 s
    assert b.state is State.OPEN


def test_slow_calls_open_at_the_slow_call_rate_and_only_when_configured():
    clock = Clock()
    b, _ = make(clock, slow_call_ms=1000, slow_call_rate=0.8)
    ok(b, 1)
    ok(b, 3, slow=True)
    assert b.state is State.CLOSED  # 4 calls < minimum
    ok(b, 1, slow=True)  # 4/5 slow = 80 %
    assert b.state is State.OPEN
    assert "slow-call rate 80% over 5 calls > 1000 ms" in (b.check() or "")
    guard = CircuitBreakers(settings(), clock=clock)  # no slow_call_ms: latency ignored
    for _ in range(10):
        guard.observe(Outcome("x", "chat", "d2", None, "success", latency_ms=1e6))
    assert guard.breaker("d2").state is State.CLOSED


def test_open_turns_half_open_after_the_open_time_then_probes_close_it():
    clock = Clock()
    b, seen = make(clock, half_open_probes=2)
    fail(b, 5)
    clock.advance(29.9)
    assert b.check() == "circuit open (failure rate 100% over 5 calls; retry in 0.1 s)"
    clock.advance(0.1)
    assert b.state is State.HALF_OPEN
    assert b.check() is None and b.check() is None  # two probe slots
    ok(b, 1)
    assert b.state is State.HALF_OPEN
    ok(b, 1)
    assert b.state is State.CLOSED
    assert states(seen) == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert seen[-1].reason == "2 probe(s) succeeded"
    assert b.counts().calls == 0  # the window starts empty after a transition


def test_half_open_lets_only_the_configured_probes_through_at_once():
    clock = Clock()
    b, _ = make(clock, half_open_probes=2, probe_timeout_s=10)
    fail(b, 5)
    clock.advance(30)
    assert [b.check() for _ in range(2)] == [None, None]
    assert b.check() == "circuit half-open (2 probe(s) in flight)"
    ok(b, 1)  # one probe done: its slot is free again, one in flight
    assert b.check() is None
    assert b.check() == "circuit half-open (2 probe(s) in flight)"
    clock.advance(10)  # both probes lost (the decision chose another deployment)
    assert b.check() is None
    b.release()  # a probe that ended with the caller's error gives its slot back too
    assert [b.check() is None for _ in range(3)] == [True, True, False]


def test_a_failed_probe_reopens_with_a_growing_capped_wait():
    clock = Clock()
    b, seen = make(clock, open_multiplier=2.0, max_open_s=100.0)
    fail(b, 5)
    waits = [seen[-1].open_s]
    for _ in range(3):
        clock.advance(waits[-1] or 0)
        assert b.check() is None  # the probe
        b.record(failed=True)
        assert b.state is State.OPEN
        waits.append(seen[-1].open_s)
    assert waits == [30.0, 60.0, 100.0, 100.0]
    assert seen[-1].reason == "probe failed" and seen[-1].trips == 4
    assert "retry in 100.0 s" in (b.check() or "")


def test_a_slow_probe_reopens_and_a_quiet_period_resets_the_streak():
    clock = Clock()
    b, seen = make(clock, open_multiplier=2.0, max_open_s=100.0, slow_call_ms=500)
    fail(b, 5)
    clock.advance(30)
    assert b.check() is None
    b.record(failed=False, slow=True)
    assert (seen[-1].reason, seen[-1].open_s) == ("probe was slow", 60.0)
    clock.advance(60)
    assert b.check() is None
    b.record(failed=False)
    assert b.state is State.CLOSED
    fail(b, 5)  # soon after closing: the streak goes on (capped)
    assert (seen[-1].open_s, seen[-1].trips) == (100.0, 3)
    clock.advance(100)
    b.check()
    b.record(failed=False)
    assert b.state is State.CLOSED
    clock.advance(100)  # closed for max_open_s: forgotten
    fail(b, 5)
    assert seen[-1].open_s == 30.0 and seen[-1].trips == 1


def test_calls_finishing_while_open_are_not_counted():
    clock = Clock()
    b, _ = make(clock)
    fail(b, 5)
    ok(b, 50)  # in flight before the trip
    clock.advance(30)
    assert b.state is State.HALF_OPEN


def test_settings_are_validated_with_clear_errors():
    with pytest.raises(ValidationError, match="max_open_s"):
        BreakerSettings(open_s=60, max_open_s=10)
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        BreakerSettings(failure_rate=1.5)
    with pytest.raises(RouteIQConfigError, match=r"breakers\.window\.kind"):
        parse_settings({"breakers": {"enabled": True, "window": {"kind": "count"}}})
    with pytest.raises(RouteIQConfigError, match=r"breakers\.shared needs"):
        build_guards(parse_settings({"breakers": {"enabled": True, "shared": True}}))
    assert build_guards(parse_settings({})) == []  # off by default
    s = parse_settings({"breakers": {"enabled": True, "window": {"type": "time", "seconds": 30}}})
    (guard,) = build_guards(s)
    assert isinstance(guard, CircuitBreakers) and guard.settings.window.seconds == 30


def test_groups_override_the_top_level_values_or_turn_breakers_off():
    s = settings(groups={"embed": {"enabled": False}, "chat": {"minimum_calls": 10}})
    guard = CircuitBreakers(s, clock=Clock())
    cands = [Candidate("e1", "m"), Candidate("c1", "m")]
    for _ in range(20):
        guard.observe(Outcome("x", "embed", "e1", None, "failure"))
    assert guard.exclude(RouteRequest("embed", cands[:1]), cands[:1]) == {}
    for _ in range(9):
        guard.observe(Outcome("x", "chat", "c1", None, "failure"))
    assert guard.exclude(RouteRequest("chat", cands[1:]), cands[1:]) == {}
    guard.observe(Outcome("x", "chat", "c1", None, "failure"))
    assert "over 10 calls" in guard.exclude(RouteRequest("chat", cands[1:]), cands[1:])["c1"]
    with pytest.raises(RouteIQConfigError, match=r"groups\.chat: max_open_s \(300\) < open_s"):
        parse_settings({"breakers": {"groups": {"chat": {"open_s": 600}}}})


# -- the guard -----------------------------------------------------------------------------------


def outcome(deployment: str, status: str = "failure", **kwargs: Any) -> Outcome:
    return Outcome("dec-1", "chat", deployment, "gpt-4o", status, **kwargs)


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        ("BadRequestError", False),
        ("ContextWindowExceededError", False),
        ("ContentPolicyViolationError", False),
        ("UnprocessableEntityError", False),
        ("AuthenticationError", True),  # the deployment's own key is wrong
        ("RateLimitError", True),
        ("InternalServerError", True),
        ("Timeout", True),
        ("APIConnectionError", True),
        (None, True),
    ],
)
def test_client_caused_errors_are_not_counted(error: str | None, counted: bool):
    guard = CircuitBreakers(settings(), clock=Clock())
    for _ in range(5):
        guard.observe(outcome("d1", error_type=error))
    assert guard.breaker("d1").state is (State.OPEN if counted else State.CLOSED)
    assert guard.breaker("d1").counts().calls == 0  # not in the window (or cleared by the trip)


def test_transitions_are_logged_and_counted(metrics, caplog):
    clock = Clock()
    guard = CircuitBreakers(settings(), clock=clock, metrics=metrics)
    caplog.set_level(logging.INFO, logger="routeiq.resilience.breakers")
    for _ in range(5):
        guard.observe(outcome("d1"))
    clock.advance(30)
    assert guard.exclude(RouteRequest("chat", [Candidate("d1", "m")]), [Candidate("d1", "m")]) == {}
    guard.observe(outcome("d1", "success", latency_ms=10.0))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "RouteIQ breaker d1: closed -> open for 30.0 s (failure rate 100% over 5 calls; trip 1)",
        "RouteIQ breaker d1: open -> half_open (open time elapsed)",
        "RouteIQ breaker d1: half_open -> closed (1 probe(s) succeeded)",
    ]
    reg = metrics.registry
    for state in ("open", "half_open", "closed"):
        labels = {"deployment": "d1", "state": state}
        assert reg.get_sample_value("routeiq_breaker_transitions_total", labels) == 1
    assert reg.get_sample_value("routeiq_breaker_state", {"deployment": "d1"}) == 0


def request(**kwargs: Any) -> RouteRequest:
    kwargs.setdefault("candidates", CANDS)
    return RouteRequest(group="chat", messages=[{"role": "user", "content": CODE}], **kwargs)


async def test_an_open_breakers_deployment_is_never_chosen(make_engine):
    clock = Clock()
    guard = CircuitBreakers(settings(open_s=30), clock=clock)
    engine = make_engine(guards=[guard])
    assert (await engine.decide(request())).chosen == "strong"  # the code prompt's pick
    for i in range(5):
        engine.record_outcome(
            f"d{i}", group="chat", deployment="strong", model="gpt-4o", status="failure",
            error_type="InternalServerError",
        )  # fmt: skip
    clock.advance(2.0)
    for _ in range(20):
        d = await engine.decide(request())
        assert d.chosen == "cheap"
    row = next(r for r in d.candidates if r.name == "strong")
    assert row.available is False
    assert row.excluded == "circuit open (failure rate 100% over 5 calls; retry in 28.0 s)"
    assert "; excluded strong" in d.rule
    for i in range(5):
        engine.record_outcome(
            f"e{i}", group="chat", deployment="cheap", model="gpt-4o-mini", status="failure",
            error_type="RateLimitError",
        )  # fmt: skip
    with pytest.raises(NoCandidatesError, match=r"strong: circuit open .*cheap: circuit open"):
        await engine.decide(request())
    clock.advance(28.0)  # strong half-open: one probe goes to it
    assert (await engine.decide(request())).chosen == "strong"


# -- shared through Redis --------------------------------------------------------------------


def redis_or_skip(port: int = 6379) -> Any:
    redis = pytest.importorskip("redis", reason="redis-py is not installed")
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"no Redis on 127.0.0.1:{port}")
    return client


def shared_pair(url: str, prefix: str, **kwargs: Any) -> tuple[CircuitBreakers, CircuitBreakers]:
    s = settings(shared=True, sync_interval_s=0.1, **kwargs)
    shared = SharedStateSettings(url=url, prefix=prefix, socket_timeout_s=0.2)
    return CircuitBreakers(s, shared=shared), CircuitBreakers(s, shared=shared)


def wait_for(check: Any, timeout: float) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - started


def see(guard: CircuitBreakers, name: str = "d1") -> dict[str, str]:
    cands = [Candidate(name, "m")]
    return dict(guard.exclude(RouteRequest("chat", cands), cands))


@pytest.fixture
def pair() -> Iterator[tuple[CircuitBreakers, CircuitBreakers]]:
    client = redis_or_skip()
    prefix = "routeiq-test-breakers-" + secrets.token_hex(4)
    a, b = shared_pair("redis://127.0.0.1:6379/0", prefix)
    yield a, b
    a.close()
    b.close()
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def test_two_workers_see_one_breaker_open_within_a_second(pair):
    a, b = pair
    assert see(a) == {} and see(b) == {}  # both know d1; their sync threads run
    for _ in range(5):
        a.observe(outcome("d1"))
    assert "circuit open" in see(a)["d1"]
    took = wait_for(lambda: b.breaker("d1").state is State.OPEN, timeout=1.0)
    print(f"\nworker B saw worker A's breaker open after {took * 1000:.0f} ms")
    reason = see(b)["d1"]
    assert reason.startswith("circuit open (failure rate 100% over 5 calls; retry in 2")


def test_the_fleets_calls_open_a_breaker_no_single_worker_would(pair):
    a, b = pair
    see(a), see(b)
    for _ in range(3):
        a.observe(outcome("d1"))
    for _ in range(2):
        b.observe(outcome("d1"))  # 3 + 2 = minimum_calls over the fleet
    wait_for(lambda: a.breaker("d1").state is State.OPEN, timeout=2.0)
    wait_for(lambda: b.breaker("d1").state is State.OPEN, timeout=2.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_stopped_gives_zero_errors_and_one_warning(tmp_path: Path, caplog):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        redis_client = redis_or_skip_started(port)
        a, b = shared_pair(f"redis://127.0.0.1:{port}/0", "rq")
        see(a), see(b)
        wait_for(lambda: a.sync is not None and a.sync.rounds > 0, timeout=2.0)
        redis_client.close()
        proc.terminate()
        proc.wait(timeout=10)
        caplog.set_level(logging.WARNING, logger="routeiq.resilience.shared_breakers")
        time.sleep(0.3)  # sync rounds fail now
        for _ in range(5):  # the request path never touches Redis: no error, local state
            a.observe(outcome("d1"))
        assert "circuit open" in see(a)["d1"]
        assert see(b) == {}  # B cannot hear of it: it keeps serving on its own state
        time.sleep(0.5)
        assert a.sync is not None and not a.sync.healthy
        warned = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
        assert len(warned) == 2  # once per worker, not once per round
        a.close()
        b.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def redis_or_skip_started(port: int) -> Any:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return client
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                pytest.fail("redis-server did not start")
            time.sleep(0.05)


def test_shared_breakers_work_on_redis_cluster(redis_cluster: str):  # noqa: F811
    s = settings(shared=True, sync_interval_s=0.1)
    shared = SharedStateSettings(url=redis_cluster, cluster=True, prefix="rq")
    a, b = CircuitBreakers(s, shared=shared), CircuitBreakers(s, shared=shared)
    try:
        names = [f"d{i}" for i in range(6)]  # keys in several hash slots
        for guard in (a, b):
            for name in names:
                see(guard, name)
        for name in names[::2]:
            for _ in range(5):
                a.observe(outcome(name))
        wait_for(lambda: all(b.breaker(n).state is State.OPEN for n in names[::2]), timeout=2.0)
        assert all(b.breaker(n).state is State.CLOSED for n in names[1::2])
        assert a.sync is not None and a.sync.healthy and b.sync is not None and b.sync.healthy
    finally:
        a.close()
        b.close()
