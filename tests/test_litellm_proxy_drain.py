"""Load shedding and the SIGTERM drain on a real 2-worker LiteLLM proxy.

One proxy (deployments answer ``mock_response`` after ``mock_delay``; ``custom_auth`` puts key
B in team t2), ``shedding: {max_in_flight: 50, per_team: 2}``, ``drain: {deadline_s: 20,
readiness_grace_s: 1}``. In file order: an overload burst (4x the in-flight limit), a team
burst, then SIGTERM to the proxy with streaming and plain requests in flight (the proxy is
gone afterwards). Latency numbers are measured by ``bench/overload.py``, not asserted here.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy_helpers import require_litellm_proxy

require_litellm_proxy()
httpx = pytest.importorskip("httpx", reason="httpx is not installed")
yaml = pytest.importorskip("yaml", reason="pyyaml is not installed")

from litellm_helpers import CHEAP_PRICE, STRONG_PRICE, deployment  # noqa: E402
from proxy_helpers import free_port, proxy_env, start_proxy, stop, wait_ready  # noqa: E402

pytestmark = pytest.mark.slow

# The kernel may hand every connection of a burst to one worker: LIMIT bounds one worker.
WORKERS, LIMIT, PER_TEAM = 2, 50, 2
DELAY_S = 3.0  # every accepted request takes this long: the shed ones must not
DRAIN_DELAY_S = 8.0  # group "slow": long enough for every drain request to be in flight
KEY_B = "sk-key-b-" + secrets.token_hex(8)

CUSTOM_AUTH = """
import os

from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth


async def user_api_key_auth(request, api_key):
    if api_key == os.environ["LITELLM_MASTER_KEY"]:
        admin = LitellmUserRoles.PROXY_ADMIN
        return UserAPIKeyAuth(api_key=api_key, user_id="admin", user_role=admin)
    if api_key == {KEY_B!r}:
        return UserAPIKeyAuth(api_key=api_key, team_id="t2", user_id="user-b")
    raise Exception("unknown API key")
"""


def proxy_config(artifact: Path, log: Path) -> dict:
    slow = {"mock_delay": DELAY_S}
    strong = deployment("chat", "strong", "gpt-4o", STRONG_PRICE, "strong says hi")
    cheap = deployment("chat", "cheap", "gpt-4o-mini", CHEAP_PRICE, "cheap says hi")
    for d in (strong, cheap):
        d["litellm_params"].update(slow)
    slow_strong = deployment("slow", "slow-strong", "gpt-4o", STRONG_PRICE, "slow strong")
    slow_cheap = deployment("slow", "slow-cheap", "gpt-4o-mini", CHEAP_PRICE, "slow cheap")
    for d in (slow_strong, slow_cheap):
        d["litellm_params"]["mock_delay"] = DRAIN_DELAY_S
    return {
        "model_list": [strong, cheap, slow_strong, slow_cheap],
        "router_settings": {"num_retries": 0},
        "general_settings": {"custom_auth": "custom_auth.user_api_key_auth"},
        "litellm_settings": {"callbacks": ["routeiq.integrations.litellm.proxy.routeiq_callback"]},
        "routeiq_settings": {
            "router": str(artifact),
            "lambda": 20.0,
            "decision_log": str(log),
            "shedding": {"max_in_flight": LIMIT, "per_team": PER_TEAM, "retry_after_s": 2},
            "drain": {"deadline_s": 20, "readiness_grace_s": 1},
        },
    }


@pytest.fixture(scope="module")
def stack(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    work = tmp_path_factory.mktemp("proxy-drain")
    (work / "custom_auth.py").write_text(CUSTOM_AUTH.replace("{KEY_B!r}", repr(KEY_B)))
    log, config = work / "decisions.jsonl", work / "config.yaml"
    config.write_text(yaml.safe_dump(proxy_config(artifact, log)))
    master = "sk-master-" + secrets.token_hex(8)
    port, out, metrics = free_port(), work / "proxy.log", work / "metrics"
    proc = start_proxy(config, WORKERS, out, proxy_env(master, metrics), port)
    try:
        wait_ready(proc, out, WORKERS)
        yield {
            "proc": proc,
            "url": f"http://127.0.0.1:{port}",
            "master": master,
            "log": log,
            "out": out,
            "metrics": metrics,
            "served": [],  # decision ids of every 200
        }
    finally:
        stop(proc)


# -- helpers ---------------------------------------------------------------------------------


async def one(
    client: Any, url: str, key: str, stream: bool = False, model: str = "chat"
) -> dict[str, Any]:
    """One chat request on its own connection: status, seconds, headers, body."""
    start = time.monotonic()
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
    try:
        async with client.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers=headers
        ) as r:
            text = (await r.aread()).decode(errors="replace")
            return {
                "status": r.status_code,
                "s": time.monotonic() - start,
                "headers": dict(r.headers),
                "text": text,
            }
    except httpx.TransportError as exc:
        return {"status": type(exc).__name__, "s": time.monotonic() - start, "text": str(exc)}


async def burst(
    url: str, key: str, n: int, streams: int = 0, model: str = "chat"
) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        return await asyncio.gather(
            *(one(client, url, key, stream=i < streams, model=model) for i in range(n))
        )


def run_burst(
    url: str, key: str, n: int, streams: int = 0, model: str = "chat"
) -> list[dict[str, Any]]:
    return asyncio.run(burst(url, key, n, streams, model))


def get(url: str, timeout: float = 30) -> int | str:
    try:
        with httpx.Client(timeout=timeout) as client:
            return client.get(url, headers={"Connection": "close"}).status_code
    except httpx.TransportError as exc:
        return type(exc).__name__


def metric_total(metrics_dir: Path, name: str, **labels: str) -> float:
    """A metric's samples named ``name`` summed over every worker."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    return sum(
        s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def record_served(stack: dict, results: list[dict[str, Any]]) -> None:
    for r in results:
        if r["status"] == 200:
            stack["served"].append(r["headers"].get("x-routeiq-decision-id"))


# -- overload --------------------------------------------------------------------------------


def test_an_overload_burst_gets_immediate_503s_and_health_stays_up(stack: dict) -> None:
    n = 4 * LIMIT  # 4x the in-flight limit (2x the proxy's two workers together)
    probes: list[tuple[str, int | str]] = []

    def probe() -> None:
        time.sleep(DELAY_S / 3)  # while the accepted ones are in flight
        for path in ("/health/liveliness", "/routeiq/ready", "/routeiq/ready"):
            probes.append((path, get(stack["url"] + path)))

    prober = threading.Thread(target=probe)
    prober.start()
    results = run_burst(stack["url"], stack["master"], n)
    prober.join()
    record_served(stack, results)
    statuses = [r["status"] for r in results]
    accepted = [r for r in results if r["status"] == 200]
    shed = [r for r in results if r["status"] == 503]
    assert len(accepted) + len(shed) == n, sorted({str(s) for s in statuses})
    assert LIMIT <= len(accepted) <= LIMIT * WORKERS
    assert all(r["headers"].get("retry-after") == "2" for r in shed)
    assert all("overloaded" in r["text"] for r in shed), shed[0]["text"]
    # Refused at once: never held until a slot freed up (that takes a whole DELAY_S after the
    # first accepted reply; the bound is relative, so a loaded machine does not fail it).
    slowest_shed, first_done = max(r["s"] for r in shed), min(r["s"] for r in accepted)
    assert first_done >= DELAY_S and slowest_shed < first_done + DELAY_S, (slowest_shed, first_done)
    assert probes == [
        ("/health/liveliness", 200),
        ("/routeiq/ready", 200),
        ("/routeiq/ready", 200),
    ]
    assert metric_total(stack["metrics"], "routeiq_shed_total", reason="worker") == len(shed)


def test_a_team_over_its_limit_is_shed_while_others_are_served(stack: dict) -> None:
    results = run_burst(stack["url"], KEY_B, 4 * PER_TEAM * WORKERS)
    record_served(stack, results)
    accepted = [r for r in results if r["status"] == 200]
    shed = [r for r in results if r["status"] == 503]
    assert len(accepted) + len(shed) == len(results)
    assert PER_TEAM <= len(accepted) <= PER_TEAM * WORKERS
    assert all("team 't2'" in r["text"] and r["headers"].get("retry-after") for r in shed)


# -- drain -----------------------------------------------------------------------------------


def test_sigterm_drains_in_flight_requests_and_exits_cleanly(stack: dict) -> None:
    url, proc = stack["url"], stack["proc"]
    n, streams = LIMIT, LIMIT // 3  # fits one worker, whichever gets them
    results: list[dict[str, Any]] = []
    sender = threading.Thread(
        target=lambda: results.extend(run_burst(url, stack["master"], n, streams, "slow"))
    )
    sender.start()
    deadline = time.monotonic() + DRAIN_DELAY_S
    while metric_total(stack["metrics"], "routeiq_in_flight_requests") < n:
        if time.monotonic() > deadline or not sender.is_alive():
            sender.join(60)
            pytest.fail(f"not all {n} requests got in flight: {[r['status'] for r in results]}")
        time.sleep(0.05)

    timeline: list[tuple[float, str, Any]] = []
    stop_probing = threading.Event()

    def probe_readiness() -> None:
        while not stop_probing.is_set():
            timeline.append((time.monotonic(), "ready", get(url + "/routeiq/ready")))
            timeline.append((time.monotonic(), "litellm", get(url + "/health/readiness")))
            time.sleep(0.05)

    def probe_new_requests() -> None:
        while not stop_probing.is_set():
            sent = time.monotonic()  # a new request counts from when it was sent
            timeline.append((sent, "new", asyncio.run(burst(url, stack["master"], 1))[0]))
            time.sleep(0.05)

    probers = [
        threading.Thread(target=probe_readiness),
        threading.Thread(target=probe_new_requests),
    ]
    for prober in probers:
        prober.start()
    time.sleep(0.2)
    sigterm_at = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)  # the supervisor, as an orchestrator does
    try:
        code = proc.wait(timeout=60)
    finally:
        stop_probing.set()
        for prober in probers:
            prober.join(30)
        sender.join(30)
    assert code == 0
    timeline.append((time.monotonic(), "ready", get(url + "/routeiq/ready")))  # gone now

    # Every in-flight request completed, streams to their last chunk.
    assert [r["status"] for r in results] == [200] * n, [r["text"][:200] for r in results]
    assert all(r["text"].rstrip().endswith("data: [DONE]") for r in results[:streams])
    record_served(stack, results)

    after = [(t - sigterm_at, kind, v) for t, kind, v in timeline if t >= sigterm_at]
    after.sort(key=lambda entry: entry[0])  # two probing threads appended to it
    ready = [(t, v) for t, kind, v in after if kind == "ready"]
    first_503 = next(t for t, v in ready if v == 503)
    first_down = next(t for t, v in ready if v == "ConnectError")  # listener closed
    assert first_503 < first_down  # readiness failed while the listener was still open
    assert all(v != 200 for t, v in ready if t > first_503)
    # The supervisor forwards SIGTERM to the workers within its 0.5 s signal poll: requests
    # sent before the workers began draining may still be served.
    new = [v for t, kind, v in after if kind == "new" and t > first_503 + 0.1]
    outcomes = {
        str(v["status"]) + (" retry-after" if v.get("headers", {}).get("retry-after") else "")
        for v in new
    }
    assert "503 retry-after" in outcomes, outcomes
    assert "200" not in outcomes  # nothing new was accepted once draining
    litellm_ready = {v for t, kind, v in after if kind == "litellm" and t < first_down}
    before = {(kind, v) for t, kind, v in timeline if t < sigterm_at and kind != "new"}
    assert before == {("ready", 200), ("litellm", 200)}, before
    assert 503 in litellm_ready  # LiteLLM's own /health/readiness fails during the drain too
    print(
        f"\nafter SIGTERM: readiness 503 at {first_503:.2f} s, listener closed at "
        f"{first_down:.2f} s; new requests {sorted(outcomes)}; /health/readiness {litellm_ready}"
    )
    stack["served"].extend(
        v["headers"].get("x-routeiq-decision-id")
        for t, kind, v in timeline
        if kind == "new" and v["status"] == 200
    )

    # Every decision made, by either worker, is in the decision log.
    records = [json.loads(line) for line in stack["log"].read_text().splitlines()]
    decided = {r["id"] for r in records if "decision" in r}
    served_ids = [i for i in stack["served"] if i]
    assert len(decided) == len(stack["served"])
    assert set(served_ids) <= decided
