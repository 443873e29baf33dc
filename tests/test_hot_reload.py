"""Hot reload of router artifacts: verified off the request path, swapped in atomically.

Engine-level tests drive the watcher by hand (``poll()``; its thread sleeps for an hour);
one test runs the thread itself, and one runs a real 2-worker LiteLLM proxy under load.
"""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest

from litellm_helpers import CHEAP_PRICE, CODE, STRONG_PRICE, deployment
from proxy_helpers import counter_total, free_port, proxy_env, start_proxy, stop, wait_ready
from routeiq.artifacts import artifact_digest
from routeiq.artifacts.atomic import commit, temp_sibling
from routeiq.integrations.litellm.demo import CHEAP, STRONG, build_demo_router
from routeiq.integrations.litellm.installer import build_engine
from routeiq.router import Candidate
from routeiq.security.signing import publish_signed, sign_artifact, write_keypair
from routeiq.serving.engine import DecisionEngine
from routeiq.serving.registry import RouterRegistry, load_routers
from routeiq.serving.reload import RouterReloader
from routeiq.serving.request import RouteRequest
from routeiq.serving.settings import RouteIQSettings
from routeiq.telemetry.metrics import RouteIQMetrics

MODEL_LIST = [
    deployment("chat", "strong", STRONG, STRONG_PRICE, "strong says hi"),
    deployment("chat", "cheap", CHEAP, CHEAP_PRICE, "cheap says hi"),
]
CANDS = [Candidate("strong", STRONG, 2.6e-3), Candidate("cheap", CHEAP, 3e-5)]


def request() -> RouteRequest:
    return RouteRequest("chat", CANDS, messages=[{"role": "user", "content": CODE}])


def tampered(path: Path, lam: float, work: Path) -> None:
    """Publish (atomically) a version of ``path`` with one byte of one file changed."""
    build = work / f"build-{lam}"
    build_demo_router(build, lam=lam)
    meta = build / "metadata.json"
    meta.write_bytes(meta.read_bytes().replace(b'"lambda": ', b'"lambda":-', 1))
    tmp, token = temp_sibling(path)
    shutil.copytree(build, tmp)
    commit(tmp, path, token)


@pytest.fixture
def live(artifact: Path, tmp_path: Path) -> Path:
    """A served copy of the demo artifact that tests replace with new versions."""
    path = tmp_path / "router"
    shutil.copytree(artifact, path)
    return path


@pytest.fixture
def metrics() -> RouteIQMetrics:
    return RouteIQMetrics(prometheus_client.CollectorRegistry())


@pytest.fixture
def engines() -> Iterator[list[DecisionEngine]]:
    made: list[DecisionEngine] = []
    yield made
    for engine in made:
        engine.close()


def make(
    path: Path, metrics: RouteIQMetrics, engines: list, interval_s: float = 3600, **extra: Any
) -> tuple[DecisionEngine, RouterReloader]:
    settings = RouteIQSettings.model_validate(
        {
            "router": str(path),
            "lambda": 20.0,
            "decision_timeout_ms": 10_000,
            "hot_reload": {"enabled": True, "interval_s": interval_s},
            **extra,
        }
    )
    engine = build_engine(
        settings, MODEL_LIST, RouterRegistry(load_routers(settings)), metrics=metrics
    )
    engines.append(engine)
    assert isinstance(engine.registry.watcher, RouterReloader)
    return engine, engine.registry.watcher


def reloads(metrics: RouteIQMetrics, result: str) -> float:
    value = metrics.registry.get_sample_value("routeiq_router_reloads_total", {"result": result})
    return value or 0.0


async def test_new_version_is_swapped_in_for_the_next_decision(
    live: Path, metrics: RouteIQMetrics, engines: list
) -> None:
    engine, reloader = make(live, metrics, engines)
    old = (await engine.decide(request())).router
    assert reloader.poll() == []  # nothing new
    new = build_demo_router(live, lam=30.0)
    assert new != old
    [result] = reloader.poll()
    assert (result.result, result.old, result.new) == ("swapped", old, new)
    assert (await engine.decide(request())).router == new
    assert reloader.poll() == []
    assert reloads(metrics, "swapped") == 1 and reloads(metrics, "refused") == 0


async def test_in_flight_decision_finishes_on_the_router_it_started_with(
    live: Path, metrics: RouteIQMetrics, engines: list
) -> None:
    engine, reloader = make(live, metrics, engines, scoring="thread")
    old_router = engine.registry.get(live)
    assert old_router is not None
    entered, release = threading.Event(), threading.Event()
    score = old_router.score_online

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(10)
        return score(*args, **kwargs)

    old_router.score_online = held  # type: ignore[method-assign]
    in_flight = asyncio.create_task(engine.decide(request()))
    assert await asyncio.to_thread(entered.wait, 10)
    new = build_demo_router(live, lam=30.0)
    assert [r.result for r in await asyncio.to_thread(reloader.poll)] == ["swapped"]
    release.set()
    assert (await in_flight).router == old_router.digest
    assert (await engine.decide(request())).router == new


async def test_tampered_version_is_refused_and_the_old_one_keeps_serving(
    live: Path, metrics: RouteIQMetrics, engines: list, tmp_path: Path, caplog: Any
) -> None:
    engine, reloader = make(live, metrics, engines)
    old = engine.registry.get(live).digest  # type: ignore[union-attr]
    tampered(live, 30.0, tmp_path)
    [result] = reloader.poll()
    assert result.result == "refused"
    assert "metadata.json: altered (SHA-256 does not match manifest.json)" in str(result.reason)
    assert f"refused new router version at {live} (still serving {old[:12]})" in caplog.text
    assert (await engine.decide(request())).router == old
    assert reloader.poll() == []  # the same refused version is not retried every poll
    assert reloads(metrics, "refused") == 1
    new = build_demo_router(live, lam=40.0)  # a good version after a bad one
    assert [r.result for r in reloader.poll()] == ["swapped"]
    assert (await engine.decide(request())).router == new
    assert reloads(metrics, "refused") == 1 and reloads(metrics, "swapped") == 1


async def test_signatures_are_required_on_reload(
    live: Path, metrics: RouteIQMetrics, engines: list, tmp_path: Path
) -> None:
    good, _ = write_keypair(tmp_path / "good")
    other, _ = write_keypair(tmp_path / "other")
    sign_artifact(live, good)
    signing = {"public_keys": [str(tmp_path / "good.pub")], "require_signature": True}
    engine, reloader = make(live, metrics, engines, signing=signing)
    old = engine.registry.get(live).digest  # type: ignore[union-attr]
    staging = tmp_path / "staging"
    build_demo_router(staging, lam=30.0)
    publish_signed(staging, live, other)  # signed, by a key nobody pinned
    [result] = reloader.poll()
    assert result.result == "refused" and "not signed by any pinned key" in str(result.reason)
    build_demo_router(live, lam=30.0)  # the same version unsigned
    [result] = reloader.poll()
    assert result.result == "refused" and "unsigned (no model.sig)" in str(result.reason)
    assert (await engine.decide(request())).router == old
    sign_artifact(live, good)  # a new signature is a new fingerprint: tried again
    [result] = reloader.poll()
    assert result.result == "swapped"
    assert (await engine.decide(request())).router == result.new != old


async def test_a_version_that_does_not_fit_the_served_groups_is_refused(
    live: Path, metrics: RouteIQMetrics, engines: list
) -> None:
    engine, reloader = make(live, metrics, engines)
    engine_digest = engine.registry.get(live).digest  # type: ignore[union-attr]
    pinned, pinned_reloader = make(live, metrics, engines, router_digest=engine_digest)
    build_demo_router(live, lam=30.0)
    [result] = pinned_reloader.poll()
    assert result.result == "refused" and "router_digest pins" in str(result.reason)
    assert (await pinned.decide(request())).router == engine_digest
    assert [r.result for r in reloader.poll()] == ["swapped"]  # the unpinned engine takes it


async def test_watcher_thread_swaps_and_stops_on_close(
    live: Path, metrics: RouteIQMetrics, engines: list
) -> None:
    engine, reloader = make(live, metrics, engines, interval_s=0.05)
    new = build_demo_router(live, lam=30.0)
    for _ in range(200):
        if engine.registry.get(live).digest == new:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.05)
    assert (await engine.decide(request())).router == new
    assert reloader.running
    engine.close()
    assert not reloader.running and engine.registry.watcher is None


def test_a_version_that_would_unroute_a_group_is_refused(live: Path, artifact: Path) -> None:
    registry = RouterRegistry(load_routers(RouteIQSettings(router=live)))
    old = registry.get(live).digest  # type: ignore[union-attr]
    reloader = RouterReloader(
        registry,
        lambda path: load_routers(RouteIQSettings(router=path))[path],
        check=lambda candidate: ["chat"],  # the new version knows none of chat's models
        unrouted=frozenset,
    )
    build_demo_router(live, lam=30.0)
    [result] = reloader.poll()
    assert result.result == "refused"
    assert "model groups ['chat'] map to no model this version knows" in str(result.reason)
    assert registry.get(live).digest == old  # type: ignore[union-attr]


# -- a real 2-worker proxy under load ----------------------------------------------------------


def _proxy_available() -> str | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return "litellm is not installed"
    if not (Path(spec.origin).parent / "proxy" / "proxy_server.py").exists():
        return "litellm[proxy] is not installed"
    for module in ("fastapi", "httpx", "yaml"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    return None


@pytest.fixture(scope="module")
def proxy(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A 2-worker proxy serving a signed artifact with hot reload every 0.25 s."""
    reason = _proxy_available()
    if reason:
        pytest.skip(reason)
    import yaml

    work = tmp_path_factory.mktemp("proxy-reload")
    key, _ = write_keypair(work / "keys" / "router")
    live = work / "router"
    publish_signed(artifact, live, key)
    config = {
        "model_list": MODEL_LIST,
        "router_settings": {"num_retries": 0},
        "litellm_settings": {"callbacks": ["routeiq.integrations.litellm.proxy.routeiq_callback"]},
        "routeiq_settings": {
            "router": "./router",
            "lambda": 20.0,
            "signing": {"public_keys": ["./keys/router.pub"], "require_signature": True},
            "hot_reload": {"enabled": True, "interval_s": 0.25},
        },
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    master, port, out = "sk-master-" + secrets.token_hex(8), free_port(), work / "proxy.log"
    metrics_dir = work / "metrics"
    proc = start_proxy(work / "config.yaml", 2, out, proxy_env(master, metrics_dir), port)
    try:
        wait_ready(proc, out, 2)
        yield {
            "url": f"http://127.0.0.1:{port}",
            "master": master,
            "work": work,
            "live": live,
            "key": key,
            "metrics": metrics_dir,
            "out": out,
        }
    finally:
        stop(proc)


class Load:
    """``threads`` clients sending chat requests back to back (a new connection each, so the
    kernel spreads them over both workers) until :meth:`stop`."""

    def __init__(self, url: str, master: str, threads: int = 4) -> None:
        self.url, self.master = url, master
        self.results: list[tuple[int, str | None, str]] = []  # status, router digest, pid
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        import httpx

        body = {"model": "chat", "messages": [{"role": "user", "content": CODE}]}
        headers = {"Authorization": f"Bearer {self.master}", "Connection": "close"}
        while not self._stop.is_set():
            try:
                with httpx.Client(timeout=30) as client:
                    reply = client.post(
                        f"{self.url}/v1/chat/completions", headers=headers, json=body
                    )
                status = reply.status_code
                router = reply.headers.get("x-routeiq-router")
                pid = reply.headers.get("x-routeiq-decision-id", "?").split("-", 1)[0]
            except httpx.HTTPError as exc:
                status, router, pid = -1, type(exc).__name__, "?"
            with self._lock:
                self.results.append((status, router, pid))

    def mark(self) -> int:
        with self._lock:
            return len(self.results)

    def since(self, start: int) -> list[tuple[int, str | None, str]]:
        with self._lock:
            return self.results[start:]

    def wait_for(self, start: int, router: str, timeout: float = 30) -> int:
        """Wait until every worker has answered with ``router`` after ``start``; the index
        from which every worker has switched."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.since(start)
            switched = {pid for _, r, pid in seen if r == router}
            if len(switched) >= 2:
                return self.mark()
            time.sleep(0.1)
        pytest.fail(
            f"not every worker served {router} within {timeout} s: {self.since(start)[-8:]}"
        )

    def wait_count(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.mark() < count:
            if time.monotonic() > deadline:
                pytest.fail(f"{self.mark()} requests answered, expected {count} by now")
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def _wait_counter(metrics_dir: Path, result: str, at_least: float, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while counter_total(metrics_dir, "routeiq_router_reloads", result=result) < at_least:
        if time.monotonic() > deadline:
            pytest.fail(f"routeiq_router_reloads_total{{result={result!r}}} < {at_least}")
        time.sleep(0.1)


@pytest.mark.slow
def test_proxy_hot_reload_under_load(proxy: dict, artifact: Path, tmp_path: Path) -> None:
    v1 = artifact_digest(proxy["live"])
    load = Load(proxy["url"], proxy["master"])
    try:
        load.wait_for(0, v1)
        # A new signed version, published atomically: both workers switch to it.
        staging = tmp_path / "v2"
        v2 = build_demo_router(staging, lam=30.0)
        start = load.mark()
        publish_signed(staging, proxy["live"], proxy["key"])
        switched = load.wait_for(start, v2)
        _wait_counter(proxy["metrics"], "swapped", 2)
        # A tampered version (signed, then one byte edited): refused, v2 keeps serving.
        bad = tmp_path / "v3"
        build_demo_router(bad, lam=40.0)
        sign_artifact(bad, proxy["key"])
        meta = bad / "metadata.json"
        meta.write_bytes(meta.read_bytes().replace(b'"lambda": ', b'"lambda":-', 1))
        tmp, token = temp_sibling(proxy["live"])
        shutil.copytree(bad, tmp)
        commit(tmp, proxy["live"], token)
        _wait_counter(proxy["metrics"], "refused", 2)
        after_refusal = load.mark()
        load.wait_count(after_refusal + 12)
    finally:
        load.stop()
    results = load.since(0)
    failed = [r for r in results if r[0] != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
    served_after = {r for _, r, _ in load.since(switched)}
    # Requests in flight at the switch may finish on v1; from then on only v2 serves.
    assert {r for _, r, _ in load.since(after_refusal)} == {v2}
    assert served_after <= {v1, v2}
    assert len({pid for _, r, pid in results if r == v2}) == 2
    log = proxy["out"].read_text(errors="replace")
    assert log.count("files altered since signing: metadata.json") >= 2, log[-3000:]
