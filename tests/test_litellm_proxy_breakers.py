"""Circuit breakers on a real 2-worker LiteLLM proxy.

Group "chat": "good" (gpt-4o) and "bad" (gpt-4o-mini, the learned router's pick for chit-chat,
always failing), ``num_retries: 1``. With breakers, each worker's breaker on "bad" opens after
``minimum_calls`` failures and learned routing sends the rest to "good" at the first attempt
(``bench/breakers.py`` compares LiteLLM's cooldowns alone on the same config). Group
"heal": "backup" and "flaky", whose api_base is a local port nobody listens on until the test
starts a tiny OpenAI-compatible server there; half-open probes then close the breaker.
"""

from __future__ import annotations

import json
import re
import secrets
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from proxy_helpers import require_litellm_proxy

require_litellm_proxy()
httpx = pytest.importorskip("httpx", reason="httpx is not installed")
yaml = pytest.importorskip("yaml", reason="pyyaml is not installed")

from litellm_helpers import CHAT, CHEAP_PRICE, STRONG_PRICE, deployment  # noqa: E402
from proxy_helpers import (  # noqa: E402
    counter_total,
    free_port,
    proxy_env,
    start_proxy,
    stop,
    wait_ready,
)

pytestmark = pytest.mark.slow

MINIMUM_CALLS = 5
OPEN_S = 3.0
REQUESTS = 200
BREAKERS = {
    "enabled": True,
    "window": {"type": "count", "size": 20},
    "minimum_calls": MINIMUM_CALLS,
    "failure_rate": 0.5,
    "open_s": OPEN_S,
    "open_multiplier": 2.0,
    "max_open_s": 30,
    "half_open_probes": 2,
    "slow_call_ms": 1000,
    "slow_call_rate": 0.5,
}
SLOW_S = 2.0  # "sluggish" answers after this long: a slow call


def model_list(flaky_port: int) -> list[dict]:
    flaky = deployment("heal", "flaky", "gpt-4o-mini", CHEAP_PRICE)
    del flaky["litellm_params"]["mock_response"]
    flaky["litellm_params"].update(
        api_base=f"http://127.0.0.1:{flaky_port}/v1", max_retries=0, timeout=10
    )
    sluggish = deployment("lag", "sluggish", "gpt-4o-mini", CHEAP_PRICE, "slow hi")
    sluggish["litellm_params"]["mock_delay"] = SLOW_S
    return [
        deployment("chat", "good", "gpt-4o", STRONG_PRICE, "strong says hi"),
        deployment("chat", "bad", "gpt-4o-mini", CHEAP_PRICE, "litellm.InternalServerError"),
        deployment("heal", "backup", "gpt-4o", STRONG_PRICE, "backup says hi"),
        flaky,
        deployment("lag", "brisk", "gpt-4o", STRONG_PRICE, "brisk says hi"),
        sluggish,
    ]


def write_config(path: Path, artifact: Path, flaky_port: int, breakers: bool) -> None:
    settings: dict[str, Any] = {"router": str(artifact), "lambda": 20.0}
    if breakers:
        settings["breakers"] = BREAKERS
    config = {
        "model_list": model_list(flaky_port),
        "router_settings": {"num_retries": 1, "retry_after": 0},  # LiteLLM's cooldown defaults
        "litellm_settings": {"callbacks": ["routeiq.integrations.litellm.proxy.routeiq_callback"]},
        "routeiq_settings": settings,
    }
    path.write_text(yaml.safe_dump(config))


class _Healed(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps(
            {
                "id": "chatcmpl-healed",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "healed"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def proxy(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The 2-worker proxy with breakers (bench/breakers.py runs it next to one without)."""
    work = tmp_path_factory.mktemp("breakers")
    key = "sk-" + secrets.token_hex(16)
    flaky_port = free_port()  # closed until test_half_open_probes_close_a_healed_breaker
    config, out, metrics = work / "config.yaml", work / "proxy.out", work / "prom"
    write_config(config, artifact, flaky_port, breakers=True)
    port = free_port()
    proc = start_proxy(config, 2, out, proxy_env(key, metrics), port)
    try:
        wait_ready(proc, out, 2)
        yield {
            "proc": proc,
            "out": out,
            "metrics": metrics,
            "url": f"http://127.0.0.1:{port}",
            "key": key,
            "flaky_port": flaky_port,
        }
    finally:
        stop(proc)


def post(proxy: dict, text: str, model: str = "chat") -> tuple[Any, float]:
    started = time.perf_counter()
    # A new connection per request, so the kernel spreads requests over both workers.
    with httpx.Client(timeout=60) as client:
        reply = client.post(
            f"{proxy['url']}/v1/chat/completions",
            headers={"Authorization": f"Bearer {proxy['key']}", "Connection": "close"},
            json={"model": model, "messages": [{"role": "user", "content": text}]},
        )
    return reply, time.perf_counter() - started


def breaker_lines(proxy: dict, deployment: str) -> list[str]:
    text = proxy["out"].read_text(errors="replace")
    return [line for line in text.splitlines() if f"RouteIQ breaker {deployment}:" in line]


def test_an_open_breaker_keeps_traffic_off_a_failing_deployment(proxy: dict) -> None:
    texts = [f"{CHAT} (request {i})" for i in range(REQUESTS)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda t: post(proxy, t), texts))
    errors = sum(r.status_code != 200 for r, _ in results)
    metrics = proxy["metrics"]
    bad = counter_total(metrics, "routeiq_outcomes", deployment="bad", status="failure")
    latencies = sorted(s for _, s in results)
    print(
        f"\n{REQUESTS} requests, 8 at a time, num_retries 1, 'bad' always fails, 2 workers, "
        f"breakers on: client errors {errors}, attempts on bad {bad:.0f}, "
        f"p50 {statistics.median(latencies) * 1e3:.0f} ms "
        "(LiteLLM cooldowns alone, side by side: bench/breakers.py)"
    )
    assert errors == 0
    opened = [line for line in breaker_lines(proxy, "bad") if "closed -> open" in line]
    assert len(opened) == 2, opened  # one breaker per worker (shared: false)
    assert all(f"failure rate 100% over {MINIMUM_CALLS} calls; trip 1" in line for line in opened)
    assert (
        counter_total(metrics, "routeiq_breaker_transitions", deployment="bad", state="open") >= 2
    )
    # Per worker: MINIMUM_CALLS to open, calls in flight then (<= 8 at a time over both
    # workers) and one failed probe per 3 s, 6 s, ... of open time.
    assert bad <= 2 * MINIMUM_CALLS + 8 + 2 * 4
    answered = [r.headers["x-litellm-model-id"] for r, _ in results]
    assert answered.count("good") == REQUESTS


def test_half_open_probes_close_a_healed_breaker(proxy: dict) -> None:
    # Flaky's port is closed: its connection errors open both workers' breakers.
    deadline = time.monotonic() + 30
    while sum("closed -> open" in line for line in breaker_lines(proxy, "flaky")) < 2:
        reply, _ = post(proxy, CHAT, model="heal")
        assert reply.status_code == 200, reply.text  # the retry went to backup
        assert time.monotonic() < deadline, breaker_lines(proxy, "flaky")
    server = ThreadingHTTPServer(("127.0.0.1", proxy["flaky_port"]), _Healed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        served: list[str] = []
        deadline = time.monotonic() + 30
        while sum("half_open -> closed" in line for line in breaker_lines(proxy, "flaky")) < 2:
            reply, _ = post(proxy, CHAT, model="heal")
            assert reply.status_code == 200, reply.text
            served.append(reply.headers["x-litellm-model-id"])
            assert time.monotonic() < deadline, breaker_lines(proxy, "flaky")
            time.sleep(0.1)
    finally:
        server.shutdown()
        server.server_close()
    closed = [line for line in breaker_lines(proxy, "flaky") if "half_open -> closed" in line]
    assert all("2 probe(s) succeeded" in line for line in closed)
    assert served[-1] == "flaky"  # learned routing is back on the cheap deployment
    lines = breaker_lines(proxy, "flaky")
    assert any(re.search(r"open -> half_open \(open time elapsed\)", line) for line in lines)


def test_a_slow_deployment_is_ejected_like_a_failing_one(proxy: dict) -> None:
    # Chat goes to the cheap deployment, which answers, but slower than slow_call_ms: once
    # MINIMUM_CALLS slow calls are in the window, its breaker opens and the group moves on.
    texts = [f"{CHAT} (slow {i})" for i in range(40)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda t: post(proxy, t, model="lag"), texts))
    assert [r.status_code for r, _ in results] == [200] * len(texts)
    opened = [line for line in breaker_lines(proxy, "sluggish") if "closed -> open" in line]
    assert opened and all("slow-call rate" in line for line in opened), opened
    served = [r.headers["x-litellm-model-id"] for r, _ in results]
    print(f"\nslow deployment: {served.count('sluggish')} of {len(texts)} served by it")
    assert served[-8:] == ["brisk"] * 8  # traffic left the slow deployment
