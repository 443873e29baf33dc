"""A real 2-worker LiteLLM proxy deciding through 2 ``routeiq serve`` replicas, all sharing
Redis: decisions are made by the replicas (ids carry their pids), joined with outcomes in the
proxy's log, rated through either replica, keep being remote when one replica dies, fall back
in the proxy (header ``x-routeiq-fallback-reason: service: ...``) when both are gone, and go
remote again when the replicas are back, without restarting the proxy."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("litellm.proxy.proxy_server", reason="litellm[proxy] is not installed")
pytest.importorskip("aiohttp", reason="aiohttp is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")
yaml = pytest.importorskip("yaml", reason="pyyaml is not installed")

from litellm_helpers import CHAT, CHEAP_PRICE, CODE, STRONG_PRICE, deployment  # noqa: E402
from proxy_helpers import free_port, log_lines, proxy_env, start_proxy, stop, wait_ready  # noqa: E402
from redis_helpers import redis_url  # noqa: E402
from test_service_remote import TOKEN, Service  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("proxy-service")
    shared = {"url": redis_url(), "prefix": f"routeiq-test-{uuid.uuid4().hex[:8]}"}
    replicas = [Service(work, artifact, shared_state=shared) for _ in range(2)]
    log = work / "decisions.jsonl"
    config = work / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    deployment("chat", "strong", "gpt-4o", STRONG_PRICE, "strong says hi"),
                    deployment("chat", "cheap", "gpt-4o-mini", CHEAP_PRICE, "cheap says hi"),
                ],
                "litellm_settings": {
                    "callbacks": ["routeiq.integrations.litellm.proxy.routeiq_callback"]
                },
                "routeiq_settings": {
                    "router": str(artifact),
                    "lambda": 20.0,
                    "decision_log": str(log),
                    # Generous: the proxy shares two cores with both replicas and the test.
                    "service": {"urls": [r.url for r in replicas], "timeout_ms": 2000},
                    "shared_state": shared,
                },
            }
        )
    )
    key = "sk-" + secrets.token_hex(16)
    env = {**proxy_env(key), "ROUTEIQ_SERVICE_TOKEN": TOKEN}
    port, out = free_port(), work / "proxy.log"
    proc = None
    try:
        for r in replicas:
            r.start()
        proc = start_proxy(config, 2, out, env, port)
        wait_ready(proc, out, 2)
        yield {"url": f"http://127.0.0.1:{port}", "key": key, "log": log, "replicas": replicas}
    finally:
        if proc is not None:
            stop(proc)
        for r in replicas:
            r.stop()


def post(setup: dict[str, Any], text: str) -> Any:
    with httpx.Client(timeout=60) as client:  # a new connection: either proxy worker
        resp = client.post(
            f"{setup['url']}/v1/chat/completions",
            headers={"Authorization": f"Bearer {setup['key']}", "Connection": "close"},
            json={"model": "chat", "messages": [{"role": "user", "content": text}]},
        )
    assert resp.status_code == 200, resp.text
    return resp


def maker(resp: Any) -> int:
    return int(resp.headers["x-routeiq-decision-id"].split("-", 1)[0])


def test_proxy_decides_through_both_replicas_and_logs_outcomes(setup):
    a, b = (r.proc.pid for r in setup["replicas"])
    responses = [post(setup, text) for text in [CODE, CHAT] * 4]
    assert [r.headers["x-litellm-model-id"] for r in responses] == ["strong", "cheap"] * 4
    assert {maker(r) for r in responses} == {a, b}  # round-robin in each proxy worker
    assert all("x-routeiq-fallback-reason" not in r.headers for r in responses)
    ids = {r.headers["x-routeiq-decision-id"] for r in responses}
    logged = {rec["id"]: rec for rec in log_lines(setup["log"], 8)}
    assert ids <= set(logged)
    for rid in ids:
        assert logged[rid]["outcomes"], logged[rid]  # joined in the proxy, as in process


def test_one_replica_down_then_both(setup):
    first, second = setup["replicas"]
    first.kill()
    alive = [post(setup, CODE) for _ in range(4)]
    assert {maker(r) for r in alive} == {second.proc.pid}
    assert all("x-routeiq-fallback-reason" not in r.headers for r in alive)
    second.kill()
    down = [post(setup, text) for text in (CODE, CHAT)]
    assert [r.headers["x-litellm-model-id"] for r in down] == ["strong", "cheap"]  # local rule
    for r in down:
        assert r.headers["x-routeiq-fallback-reason"].startswith("service: ")
        assert maker(r) not in (first.proc.pid, second.proc.pid)


def test_restarted_replicas_take_over_again_without_a_proxy_restart(setup):
    for replica in setup["replicas"]:
        replica.start()  # same ports
    pids = {r.proc.pid for r in setup["replicas"]}
    deadline = time.monotonic() + 30
    while True:  # the proxy's client breaker lets a trial through after its reset time
        resp = post(setup, CODE)
        if "x-routeiq-fallback-reason" not in resp.headers:
            break
        assert time.monotonic() < deadline, resp.headers["x-routeiq-fallback-reason"]
        time.sleep(0.5)
    assert maker(resp) in pids
    # Feedback on a replica's decision is accepted by the other: contexts are in Redis.
    decision_id = resp.headers["x-routeiq-decision-id"]
    maker_pid = maker(resp)
    other = next(r for r in setup["replicas"] if r.proc.pid != maker_pid)
    # At once: the maker shares its contexts every sync interval, and a replica that does not
    # know a decision yet waits one interval before it answers 404.
    status, body = other.post("/v1/feedback", {"decision_id": decision_id, "score": 1})
    assert status == 200 and body["decision_id"] == decision_id and body["score"] == 1.0, body
