"""Load shedding and drain on a real ASGI app: FastAPI served by uvicorn on a free port.

The app's auth dependency calls :meth:`ProxyLifecycle.admit` exactly as the RouteIQ proxy
callback's ``async_pre_call_hook`` does (after auth, in the request's task), so the limiter,
the 503s, the stream accounting and the readiness route are the ones the proxy runs.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest

httpx = pytest.importorskip("httpx", reason="httpx is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed")
fastapi = pytest.importorskip("fastapi", reason="fastapi is not installed")

from fastapi import Depends, FastAPI, Request  # noqa: E402
from fastapi.responses import StreamingResponse  # noqa: E402

from routeiq.integrations.litellm.lifecycle import (  # noqa: E402
    READY_PATH,
    ProxyLifecycle,
    register_readiness_endpoint,
)
from routeiq.resilience.drain import Drain, DrainSettings  # noqa: E402
from routeiq.resilience.shedding import (  # noqa: E402
    InFlightLimiter,
    Shed,
    SheddingError,
    SheddingSettings,
)
from routeiq.serving.settings import RouteIQConfigError  # noqa: E402
from routeiq.serving.settings_file import parse_settings  # noqa: E402
from routeiq.telemetry.metrics import RouteIQMetrics  # noqa: E402

WAIT_S = 10.0  # bound on every wait below (they normally take milliseconds)


class Gates:
    """What the app's endpoints wait for, opened by the test."""

    def __init__(self) -> None:
        self.reply = asyncio.Event()
        self.chunk = asyncio.Event()
        self.streamed = 0


def make_app(lifecycle: ProxyLifecycle, gates: Gates) -> FastAPI:
    app = FastAPI()

    async def auth(request: Request) -> Any:
        # Stands in for LiteLLM's auth + RouteIQ's pre-call hook: the verified identity.
        caller = SimpleNamespace(
            team_id=request.headers.get("x-team"), api_key=request.headers.get("x-key")
        )
        lifecycle.admit(caller)
        return caller

    @app.post("/v1/chat/completions")
    async def chat(caller: Any = Depends(auth)) -> Any:  # noqa: B008
        await gates.reply.wait()
        return {"ok": True}

    @app.post("/v1/endless")
    async def endless(caller: Any = Depends(auth)) -> Any:  # noqa: B008
        async def chunks() -> AsyncIterator[str]:
            while True:
                yield "data: more\n\n"
                await asyncio.sleep(0.01)

        return StreamingResponse(chunks(), media_type="text/event-stream")

    @app.post("/v1/stream")
    async def stream(caller: Any = Depends(auth)) -> Any:  # noqa: B008
        async def chunks() -> AsyncIterator[str]:
            yield "data: first\n\n"
            await gates.chunk.wait()
            yield "data: last\n\n"
            gates.streamed += 1

        return StreamingResponse(chunks(), media_type="text/event-stream")

    @app.post("/v1/fail")
    async def fail(caller: Any = Depends(auth)) -> Any:  # noqa: B008
        raise RuntimeError("provider exploded")

    @app.get("/health/liveliness")
    async def alive() -> Any:
        return "I'm alive!"

    register_readiness_endpoint(lifecycle, app)
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(WAIT_S):
            while not server.started:
                await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT_S) as c:
            yield c
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT_S)


async def until(predicate: Any) -> None:
    async with asyncio.timeout(WAIT_S):
        while not predicate():
            await asyncio.sleep(0.005)


def lifecycle_with(metrics: RouteIQMetrics | None = None, **shedding: Any) -> ProxyLifecycle:
    drain = DrainSettings(deadline_s=5, readiness_grace_s=0.2)
    return ProxyLifecycle(SheddingSettings(**shedding), drain, metrics=metrics)


def shed_count(metrics: RouteIQMetrics, reason: str) -> float:
    return metrics.registry.get_sample_value("routeiq_shed_total", {"reason": reason}) or 0.0


# -- per worker ----------------------------------------------------------------------------------


async def test_over_the_worker_limit_is_refused_at_once_with_retry_after() -> None:
    metrics = RouteIQMetrics(None)
    life = lifecycle_with(metrics, max_in_flight=2, retry_after_s=2.5)
    gates = Gates()
    async with serving(make_app(life, gates)) as client:
        held = [asyncio.create_task(client.post("/v1/chat/completions")) for _ in range(2)]
        await until(lambda: life.limiter.in_flight == 2)
        refused = await client.post("/v1/chat/completions")  # answered while 2 are held
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "3"  # whole seconds, rounded up
        assert "overloaded" in refused.text
        assert metrics.registry.get_sample_value("routeiq_in_flight_requests") == 2
        gates.reply.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        await until(lambda: life.limiter.in_flight == 0)
        assert (await client.post("/v1/chat/completions")).status_code == 200
    assert shed_count(metrics, "worker") == 1
    assert metrics.registry.get_sample_value("routeiq_in_flight_requests") == 0


async def test_team_and_key_limits_count_each_caller_separately() -> None:
    metrics = RouteIQMetrics(None)
    life = lifecycle_with(metrics, max_in_flight=10, per_team=1, per_key=1)
    gates = Gates()
    async with serving(make_app(life, gates)) as client:
        t1 = asyncio.create_task(client.post("/v1/chat/completions", headers={"x-team": "t1"}))
        k1 = asyncio.create_task(client.post("/v1/chat/completions", headers={"x-key": "sk-1"}))
        await until(lambda: life.limiter.in_flight == 2)
        same_team = await client.post("/v1/chat/completions", headers={"x-team": "t1"})
        same_key = await client.post("/v1/chat/completions", headers={"x-key": "sk-1"})
        assert same_team.status_code == 503 and "team 't1'" in same_team.text
        assert same_key.status_code == 503 and "API key" in same_key.text
        assert "sk-1" not in same_key.text  # the key is never echoed
        others = [
            asyncio.create_task(client.post("/v1/chat/completions", headers=h))
            for h in ({"x-team": "t2"}, {"x-key": "sk-2"}, {})
        ]
        await until(lambda: life.limiter.in_flight == 5)
        gates.reply.set()
        results = await asyncio.gather(t1, k1, *others)
        assert [r.status_code for r in results] == [200] * 5
    assert shed_count(metrics, "team") == 1 and shed_count(metrics, "key") == 1
    assert life.limiter.team_in_flight("t1") == 0


# -- what a request's slot covers -------------------------------------------------------------


async def test_a_stream_holds_its_slot_until_the_last_chunk() -> None:
    life = lifecycle_with(max_in_flight=1)
    gates = Gates()
    async with serving(make_app(life, gates)) as client:
        async with client.stream("POST", "/v1/stream") as stream:
            chunks = stream.aiter_text()
            assert "first" in await anext(chunks)
            # The handler has returned its StreamingResponse; the stream is still open.
            assert life.limiter.in_flight == 1
            assert (await client.post("/v1/chat/completions")).status_code == 503
            gates.chunk.set()
            rest = "".join([c async for c in chunks])
            assert "last" in rest
        await until(lambda: life.limiter.in_flight == 0)
        gates.reply.set()
        assert (await client.post("/v1/chat/completions")).status_code == 200
    assert gates.streamed == 1


async def test_slots_are_released_on_errors_and_on_client_disconnects() -> None:
    life = lifecycle_with(max_in_flight=1)
    gates = Gates()
    async with serving(make_app(life, gates)) as client:
        failed = await client.post("/v1/fail")
        assert failed.status_code == 500
        assert life.limiter.in_flight == 0
        # A client that goes away mid-stream: the next chunk's send fails, the task ends.
        other = httpx.AsyncClient(base_url=str(client.base_url), timeout=WAIT_S)
        async with other, other.stream("POST", "/v1/endless") as stream:
            assert "more" in await anext(stream.aiter_text())
            assert life.limiter.in_flight == 1
        await until(lambda: life.limiter.in_flight == 0)
        # A client that gives up on a slow reply: the slot is held until the handler returns
        # (nothing tells a handler that waits on its upstream that the client left).
        slow = asyncio.create_task(client.post("/v1/chat/completions"))
        await until(lambda: life.limiter.in_flight == 1)
        slow.cancel()
        await asyncio.sleep(0.05)
        assert life.limiter.in_flight == 1
        gates.reply.set()
        await until(lambda: life.limiter.in_flight == 0)
        assert (await client.post("/v1/chat/completions")).status_code == 200


async def test_health_and_readiness_are_never_shed() -> None:
    life = lifecycle_with(max_in_flight=1)
    gates = Gates()
    async with serving(make_app(life, gates)) as client:
        held = asyncio.create_task(client.post("/v1/chat/completions"))
        await until(lambda: life.limiter.in_flight == 1)
        assert (await client.post("/v1/chat/completions")).status_code == 503
        for _ in range(3):  # over the limit, repeatedly
            assert (await client.get("/health/liveliness")).status_code == 200
            ready = await client.get(READY_PATH)
            assert ready.status_code == 200
            assert ready.json() == {"status": "ready", "in_flight": 1}
        gates.reply.set()
        assert (await held).status_code == 200


async def test_a_task_is_counted_once_and_admission_needs_a_task() -> None:
    limiter = InFlightLimiter(SheddingSettings(max_in_flight=1))

    async def twice() -> None:
        first = limiter.admit_task(team="t")
        assert limiter.admit_task(team="t") is first  # e.g. a hook that runs twice
        assert limiter.in_flight == 1

    await asyncio.create_task(twice())
    await asyncio.sleep(0)  # done-callbacks run on the loop's next turn
    assert limiter.in_flight == 0
    lease = limiter.acquire()
    with pytest.raises(Shed) as refused:
        limiter.acquire()
    assert refused.value.reason == "worker" and refused.value.headers == {"Retry-After": "1"}
    lease.release()
    lease.release()  # idempotent
    assert limiter.in_flight == 0

    def outside_a_task() -> None:
        limiter.admit_task()

    with pytest.raises(SheddingError, match="running asyncio task"):
        await asyncio.to_thread(outside_a_task)


# -- drain ---------------------------------------------------------------------------------------


async def test_drain_fails_readiness_refuses_new_requests_and_waits_for_in_flight() -> None:
    metrics = RouteIQMetrics(None)
    events: list[tuple[str, int]] = []
    life = ProxyLifecycle(
        SheddingSettings(),  # no limits: the drain alone refuses
        DrainSettings(deadline_s=5, readiness_grace_s=0.2),
        metrics=metrics,
        prepare=lambda: events.append(("prepare", life.limiter.in_flight)),
        flush=lambda: events.append(("flush", life.limiter.in_flight)),
    )
    gates = Gates()
    handed: list[int] = []
    async with serving(make_app(life, gates)) as client:
        reply = asyncio.create_task(client.post("/v1/chat/completions"))
        async with client.stream("POST", "/v1/stream") as stream:
            chunks = stream.aiter_text()
            assert "first" in await anext(chunks)
            await until(lambda: life.limiter.in_flight == 2)
            drain = asyncio.create_task(
                life.drain_then_hand_over(lambda signum, frame: handed.append(signum))
            )
            await until(lambda: not life.drain.ready)
            ready = await client.get(READY_PATH)
            assert ready.status_code == 503 and ready.json()["status"] == "draining"
            assert (await client.get("/health/liveliness")).status_code == 200
            new = await client.post("/v1/chat/completions")
            assert new.status_code == 503 and "shutting down" in new.text
            assert new.headers["retry-after"] == "1"
            assert not drain.done()  # two requests still in flight
            gates.reply.set()
            gates.chunk.set()
            assert "last" in "".join([c async for c in chunks])
        assert (await reply).status_code == 200
        report = await asyncio.wait_for(drain, WAIT_S)
    assert report.left_in_flight == 0 and report.flushed
    assert report.waited_s >= 0.2  # the readiness grace is kept even when idle sooner
    assert events == [("prepare", 2), ("flush", 0)]
    assert handed == [signal.SIGTERM]  # handed on after the flush
    assert shed_count(metrics, "draining") == 1


async def test_drain_stops_waiting_at_the_deadline_and_still_flushes() -> None:
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    drain = Drain(
        DrainSettings(deadline_s=3, readiness_grace_s=1), clock=lambda: now[0], sleep=sleep
    )
    flushed: list[bool] = []
    report = await drain.run(in_flight=lambda: 4, flush=lambda: flushed.append(True))
    assert report.left_in_flight == 4 and report.flushed and flushed == [True]
    assert report.waited_s == pytest.approx(3.0)
    assert drain.state == "drained" and not drain.begin()  # once only


async def test_drain_reports_a_failing_flush_and_hands_over_anyway() -> None:
    def broken() -> None:
        raise OSError("disk full")

    life = ProxyLifecycle(
        SheddingSettings(), DrainSettings(deadline_s=1, readiness_grace_s=0), flush=broken
    )
    handed: list[int] = []
    report = await life.drain_then_hand_over(lambda signum, frame: handed.append(signum))
    assert not report.flushed and report.flush_error == "OSError: disk full"
    assert handed == [signal.SIGTERM]


async def test_sigterm_starts_the_drain_and_is_handed_on_once() -> None:
    handed: list[int] = []
    original = signal.signal(signal.SIGTERM, lambda signum, frame: handed.append(signum))
    try:
        life = ProxyLifecycle(SheddingSettings(), DrainSettings(deadline_s=2, readiness_grace_s=0))
        assert life.install_sigterm()
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)  # forwarded again by a supervisor: ignored
        assert not life.drain.ready
        await until(lambda: handed)
        assert handed == [signal.SIGTERM]
        assert life.report is not None and life.report.left_in_flight == 0
        with pytest.raises(Shed, match="shutting down"):
            life.limiter.acquire()
    finally:
        signal.signal(signal.SIGTERM, original)


def test_disabled_drain_leaves_sigterm_alone() -> None:
    life = ProxyLifecycle(SheddingSettings(), DrainSettings(enabled=False))
    before = signal.getsignal(signal.SIGTERM)
    assert not life.install_sigterm()
    assert signal.getsignal(signal.SIGTERM) is before


# -- settings ------------------------------------------------------------------------------------


def test_settings_are_off_by_default_and_typos_fail() -> None:
    settings = parse_settings({})
    assert not settings.shedding.enabled
    assert settings.drain.enabled and settings.drain.deadline_s == 25
    on = parse_settings({"shedding": {"max_in_flight": 64, "per_team": 16, "retry_after_s": 1}})
    assert on.shedding.enabled and on.shedding.per_team == 16
    bad = [
        ({"shedding": {"max_inflight": 4}}, "shedding.max_inflight: Extra inputs"),
        ({"shedding": {"max_in_flight": 0}}, "shedding.max_in_flight"),
        ({"shedding": {"retry_after_s": 0}}, "shedding.retry_after_s"),
        ({"drain": {"deadline_s": 1, "readiness_grace_s": 2}}, "must not exceed deadline_s"),
    ]
    for data, message in bad:
        with pytest.raises(RouteIQConfigError, match=message):
            parse_settings(data)
