"""The LiteLLM strategy's client of the routing service, against real ``routeiq serve``
processes on 127.0.0.1: decisions made remotely and recorded locally; the service killed
(every decision falls back, with ``fallback_reason``, counted); restarted (remote again);
a hanging service (the hard timeout); two workers sharing feedback through Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest

from proxy_helpers import free_port
from redis_helpers import redis_url
from routeiq.integrations.litellm.remote import RemoteEngine, ServiceDown, _trace_headers
from routeiq.router import Candidate
from routeiq.service.client import ServiceClient
from routeiq.serving import DecisionLog, RouteIQSettings, RouteRequest, RouterRegistry
from routeiq.serving.engine import NoCandidatesError
from routeiq.telemetry.metrics import RouteIQMetrics

pytest.importorskip("aiohttp")

ROUTEIQ = Path(sys.executable).with_name("routeiq")
TOKEN = "remote-test-token-0123456789"
CODE = "Write a Python function that computes the median of a list, with tests."
CHAT = "Hi there! How are you doing this weekend? Any fun plans?"
CANDS = (Candidate("strong", "gpt-4o", 0.0026), Candidate("cheap", "gpt-4o-mini", 0.00003))
START_TIMEOUT_S = 60


class Service:
    """One ``routeiq serve`` process group on a free port; always stopped."""

    def __init__(self, tmp: Path, artifact: Path, workers: int = 1, **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp, self.workers = tmp, workers
        self.config = tmp / f"service-{self.port}.yaml"
        data = {"routeiq_settings": {"router": str(artifact), "lambda": 20.0, **settings}}
        self.config.write_text(json.dumps(data))  # JSON is YAML
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        env = {**os.environ, "ROUTEIQ_SERVICE_TOKEN": TOKEN}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.out = self.tmp / f"service-{self.port}.log"
        cmd = [str(ROUTEIQ), "serve", "--config", str(self.config), "--port", str(self.port)]
        cmd += ["--workers", str(self.workers), "--log-level", "info"]
        with self.out.open("ab") as sink:
            self.proc = subprocess.Popen(
                cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"service did not start:\n{self.out.read_text()[-3000:]}")
            time.sleep(0.1)
        if self.workers > 1:  # every worker up, not just the first
            while self.out.read_text().count("Application startup complete") < self.workers:
                assert time.monotonic() < deadline, self.out.read_text()[-3000:]
                time.sleep(0.1)
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def get(self, path: str) -> str:
        req = urllib.request.Request(self.url + path, headers={"authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.read().decode()

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"routeiq-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def service(tmp_path_factory, artifact, prefix) -> Iterator[Service]:
    """Two workers sharing feedback contexts through Redis."""
    shared = {"shared_state": {"url": redis_url(), "prefix": prefix}}
    svc = Service(tmp_path_factory.mktemp("svc"), artifact, workers=2, **shared).start()
    yield svc
    svc.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def remote(artifact, router, tmp_path) -> Any:
    """``remote(urls, **service_settings)`` -> (engine, metrics, clock); closed at teardown."""
    made: list[RemoteEngine] = []

    def make(urls: list[str], settings: dict[str, Any] | None = None, **service: Any) -> Any:
        service = {"urls": urls, "timeout_ms": 1000, **service}
        data = {"router": str(artifact), "lambda": 20.0, "service": service, **(settings or {})}
        parsed = RouteIQSettings.model_validate(data)
        clock, metrics = Clock(), RouteIQMetrics(prometheus_client.CollectorRegistry())
        assert parsed.service is not None
        engine = RemoteEngine(
            parsed,
            RouterRegistry({artifact: router}),
            client=ServiceClient(parsed.service, TOKEN, clock=clock),
            metrics=metrics,
            decision_log=DecisionLog(tmp_path / f"log-{len(made)}.jsonl", metrics=metrics),
        )
        made.append(engine)
        return engine, metrics, clock

    yield make
    for engine in made:
        await engine.client.aclose()  # on this test's loop, before it closes
        engine.close()


def ask(text: str = CODE, **kwargs: Any) -> RouteRequest:
    kwargs.setdefault("candidates", CANDS)
    return RouteRequest("chat", messages=[{"role": "user", "content": text}], **kwargs)


def local_id(decision: Any) -> bool:
    return str(decision.id).startswith(f"{os.getpid()}-")


def fallbacks(metrics: RouteIQMetrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("routeiq_service_fallbacks_total", {"reason": reason})
    return value or 0.0


async def test_decisions_are_made_remotely_and_logged_locally(service, remote, tmp_path):
    engine, metrics, _ = remote([service.url])
    code, chat = await engine.decide(ask(CODE)), await engine.decide(ask(CHAT))
    assert (code.chosen, chat.chosen) == ("strong", "cheap")
    assert not local_id(code) and not local_id(chat)  # ids of the service's workers
    assert code.fallback_reason is None and code.router is not None
    local = await engine.__class__.__mro__[1].decide(engine, ask(CODE))  # the in-process rule
    assert [r.predicted_quality for r in code.candidates] == pytest.approx(
        [r.predicted_quality for r in local.candidates]
    )
    engine.record_outcome(code.id, group="chat", deployment="strong", model="gpt-4o",
                          status="success", cost=0.002)  # fmt: skip
    engine.decision_log.close()
    records = [json.loads(line) for line in (tmp_path / "log-0.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in records}
    assert by_id[code.id]["prompt"] == CODE
    assert by_id[code.id]["outcomes"]["gpt-4o"]["status"] == "success"
    assert by_id[chat.id]["decision"]["deployment"] == "cheap"
    assert metrics.registry.get_sample_value(
        "routeiq_decisions_total", {"model_group": "chat", "deployment": "strong",
                                    "outcome": "routed"}
    ) == 2  # fmt: skip
    assert fallbacks(metrics, "connection") == 0


async def test_retry_history_and_local_guard_exclusions_reach_the_service(service, remote):
    engine, _, _ = remote([service.url])
    retry = await engine.decide(ask(CODE, failed={"strong": "retry: failed"}, attempt=2))
    assert retry.chosen == "cheap" and retry.attempt == 2
    assert "retry: excluded strong" in retry.rule

    class NoStrong:
        def exclude(self, request: Any, candidates: Any) -> dict[str, str]:
            return {"strong": "breaker open"}

    engine.guards.filters.append(NoStrong())
    guarded = await engine.decide(ask(CODE))
    assert guarded.chosen == "cheap" and not local_id(guarded)
    assert next(r for r in guarded.candidates if r.name == "strong").excluded == "breaker open"
    engine.guards.filters.append(type("All", (), {"exclude": lambda s, r, c: {"cheap": "x"}})())
    with pytest.raises(NoCandidatesError, match="excluded"):
        await engine.decide(ask(CODE))


async def test_requests_that_need_no_model_are_decided_here(service, remote):
    engine, _, _ = remote([service.url])
    pinned = await engine.decide(ask(CODE, candidates=CANDS[:1], pinned=True))
    system_only = [{"role": "system", "content": "x"}]
    no_text = await engine.decide(RouteRequest("chat", CANDS, messages=system_only))
    assert local_id(pinned) and local_id(no_text)
    assert no_text.outcome == "fallback" and no_text.fallback_reason.startswith("no routable")


async def test_service_killed_falls_back_locally_then_resumes(artifact, tmp_path, remote):
    svc = Service(tmp_path, artifact).start()
    try:
        engine, metrics, clock = remote([svc.url], breaker={"failures": 3, "reset_s": 5})
        assert not local_id(await engine.decide(ask(CODE)))
        svc.kill()
        decisions = [await engine.decide(ask(CODE)) for _ in range(6)]
        for d in decisions:
            assert local_id(d) and d.chosen == "strong" and d.outcome == "routed"
            assert d.fallback_reason.startswith("service: ")
        assert "connection error" in decisions[0].fallback_reason
        assert "breaker is open" in decisions[-1].fallback_reason  # no connect attempts now
        assert fallbacks(metrics, "connection") == 3
        assert fallbacks(metrics, "breaker open") == 3
        svc.start()  # same port
        assert local_id(await engine.decide(ask(CODE)))  # still open: the clock has not moved
        clock.now += 5.0
        back = await engine.decide(ask(CODE))  # the trial call closes the breaker
        assert not local_id(back) and back.fallback_reason is None
        assert not local_id(await engine.decide(ask(CHAT)))
    finally:
        svc.stop()


async def test_a_hanging_service_is_cut_at_the_timeout(remote):
    with socket.socket() as black_hole:  # accepts connections, never answers
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(16)
        url = f"http://127.0.0.1:{black_hole.getsockname()[1]}"
        engine, metrics, _ = remote([url], timeout_ms=50)
        started = time.monotonic()
        decision = await engine.decide(ask(CODE))
        elapsed = time.monotonic() - started
    assert decision.fallback_reason == "service: timeout after 50 ms"
    assert local_id(decision) and decision.chosen == "strong"
    assert fallbacks(metrics, "timeout") == 1
    assert elapsed < 2.0  # bounded (not a performance claim: the call would otherwise hang)


@pytest.mark.parametrize("on_failure", ["cheapest", "error"])
async def test_on_failure_cheapest_and_error(remote, on_failure):
    dead = f"http://127.0.0.1:{free_port()}"
    engine, _, _ = remote([dead], on_failure=on_failure)
    if on_failure == "error":
        with pytest.raises(ServiceDown, match="on_failure: error"):
            await engine.decide(ask(CODE))
        return
    decision = await engine.decide(ask(CODE))
    assert (decision.chosen, decision.outcome) == ("cheap", "fallback")
    assert decision.fallback_reason.startswith("service: connection error")
    assert local_id(decision)


async def test_a_dead_replica_is_skipped_for_a_live_one(service, remote):
    dead = f"http://127.0.0.1:{free_port()}"
    engine, _, _ = remote([dead, service.url])
    decisions = [await engine.decide(ask(CODE)) for _ in range(8)]
    assert all(not local_id(d) and d.fallback_reason is None for d in decisions)
    assert engine.client.breakers[dead].state == "open"


async def test_service_refusals_are_the_callers_errors(service, remote):
    engine, _, _ = remote([service.url])
    # Overrides are not allowed in the service's settings: ignored, as in process.
    assert (await engine.decide(ask(CODE, override={"lambda": -1}))).chosen == "strong"
    with pytest.raises(NoCandidatesError):
        await engine.decide(ask(CODE, candidates=()))


async def test_concurrent_decisions_share_the_pool(service, remote):
    engine, _, _ = remote([service.url])
    decisions = await asyncio.gather(*(engine.decide(ask(t)) for t in [CODE, CHAT] * 16))
    assert [d.chosen for d in decisions] == ["strong", "cheap"] * 16
    assert all(not local_id(d) for d in decisions)
    assert len({d.id for d in decisions}) == 32


async def test_two_workers_metrics_and_shared_feedback(service, remote):
    engine, _, _ = remote([service.url])
    before = _decisions_total(service.get("/metrics"))
    decisions = [await engine.decide(ask(CODE)) for _ in range(6)]
    workers = {d.id.split("-")[0] for d in decisions}
    # Fresh connections land on either worker; feedback works wherever it lands (Redis).
    for d in decisions:
        # Contexts reach Redis from a background writer: a rating that lands on the other
        # worker within milliseconds may wait for it (404 until then).
        deadline = time.monotonic() + 10
        while True:
            status, result = service.post("/v1/feedback", {"decision_id": d.id, "score": "up"})
            if status != 404 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 200, result
    status, result = service.post("/v1/feedback", {"decision_id": decisions[0].id, "score": 1})
    assert status == 409
    assert _decisions_total(service.get("/metrics")) - before == 6
    assert len(workers) >= 1


def _decisions_total(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("routeiq_decisions_total{")
    )


def test_client_injects_the_callers_traceparent():
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("llm request") as span:
        ctx = span.get_span_context()
        header = _trace_headers(span)["traceparent"]
        assert header.startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
        assert _trace_headers(None)["traceparent"] == header  # the current span
    assert _trace_headers(None) == {}


def test_the_installer_builds_the_remote_engine(artifact, monkeypatch):
    pytest.importorskip("litellm")
    from litellm import Router

    from litellm_helpers import model_list
    from routeiq.integrations.litellm import install, uninstall

    settings = RouteIQSettings.model_validate(
        {"router": str(artifact), "service": {"urls": ["http://127.0.0.1:9"]}}
    )
    monkeypatch.delenv("ROUTEIQ_SERVICE_TOKEN", raising=False)
    router = Router(model_list=model_list())
    with pytest.raises(ValueError, match="ROUTEIQ_SERVICE_TOKEN is empty or unset"):
        install(router, settings, register_callback=False)
    monkeypatch.setenv("ROUTEIQ_SERVICE_TOKEN", TOKEN)
    strategy = install(router, settings, register_callback=False)
    try:
        assert isinstance(strategy.engine, RemoteEngine)
    finally:
        uninstall(router, strategy)


async def test_litellm_router_routes_through_the_service(service, artifact, tmp_path, monkeypatch):
    pytest.importorskip("litellm")
    from litellm import Router

    from litellm_helpers import ask as complete
    from litellm_helpers import model_list, served
    from routeiq.integrations.litellm import install, uninstall

    monkeypatch.setenv("ROUTEIQ_SERVICE_TOKEN", TOKEN)
    log = tmp_path / "gateway.jsonl"
    settings = RouteIQSettings.model_validate(
        {
            "router": str(artifact),
            "lambda": 20.0,
            "decision_log": str(log),
            "service": {"urls": [service.url], "timeout_ms": 5000},
        }
    )  # fmt: skip  (LiteLLM's first call stalls this loop for a while: not a service delay)
    router = Router(model_list=model_list())
    metrics = RouteIQMetrics(prometheus_client.CollectorRegistry())
    strategy = install(router, settings, metrics=metrics)
    try:
        assert served(await complete(router, CODE)) == "strong"
        assert served(await complete(router, CHAT)) == "cheap"
        for _ in range(200):  # LiteLLM runs success callbacks in the background
            strategy.engine.decision_log.flush()
            if log.exists() and len(log.read_text().splitlines()) >= 2:
                break
            await asyncio.sleep(0.02)
        reasons = ("timeout", "connection", "error", "breaker open")
        assert {r: fallbacks(metrics, r) for r in reasons} == dict.fromkeys(reasons, 0)
    finally:
        uninstall(router, strategy)  # flushes the log
    records = {}
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        records.setdefault(rec["id"], {}).update(rec)
    assert len(records) == 2, records
    for rec in records.values():
        assert not rec["id"].startswith(f"{os.getpid()}-"), rec  # decided by the service
        (outcome,) = rec["outcomes"].values()
        assert outcome["status"] == "success"  # joined here, as for local decisions


async def test_a_follow_up_turn_is_decided_remotely_as_here(service, remote, artifact):
    """The sticky rule needs the opening turn and the cached prices: both cross the wire."""
    from routeiq.router import Candidate, LearnedRouter
    from routeiq.serving import DecisionEngine, RouteIQSettings, RouteRequest, RouterRegistry

    cands = (
        Candidate("strong", "gpt-4o", 0.0026, cached_cost=0.0004),
        Candidate("cheap", "gpt-4o-mini", 0.00003),
    )
    messages = [
        {"role": "user", "content": CODE},
        {"role": "assistant", "content": "def median(xs): ..."},
        {"role": "user", "content": "Thanks! Any weekend plans?"},
    ]
    local = DecisionEngine(
        RouteIQSettings.model_validate({"router": str(artifact), "lambda": 20.0}),
        RouterRegistry({artifact: LearnedRouter.load(artifact)}),
    )
    here = await local.decide(RouteRequest("chat", cands, messages=messages))
    local.close()
    engine, _, _ = remote([service.url])
    there = await engine.decide(RouteRequest("chat", cands, messages=messages))
    assert not local_id(there)  # decided by the service
    assert (there.chosen, there.rule) == (here.chosen, here.rule) and "sticky:" in here.rule
    assert [r.cost for r in there.candidates] == [r.cost for r in here.candidates]
