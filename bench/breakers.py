"""Circuit breakers vs LiteLLM's cooldowns alone, on a real proxy with one failing deployment.

Group "chat": "good" (gpt-4o, a mock answer) and "bad" (gpt-4o-mini: the learned router's pick
for the chit-chat prompts sent here), whose api_base is a local HTTP server that answers every
call with a 500 (after ``--fail-delay`` seconds) and counts the calls it gets. Same config,
``num_retries: 1`` and LiteLLM's default cooldowns for every variant:

* ``breakers``: RouteIQ with ``breakers`` on (per worker);
* ``breakers-shared``: the same, shared through Redis (``--redis``; skipped if unreachable);
* ``cooldowns``: RouteIQ without breakers (LiteLLM's cooldowns only);
* ``stock``: plain LiteLLM (``simple-shuffle``, cooldowns), no RouteIQ.

Proxies run one at a time. Printed per variant: client errors, calls that reached "bad"
(counted by its server), client-side p50/p95 latency.

    .venv/bin/python bench/breakers.py --workers 2 --requests 400 --concurrency 8 --fail-delay 0.2
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: bundled price map

REPO = Path(__file__).resolve().parents[1]
LITELLM = Path(sys.executable).with_name("litellm")
STRONG_PRICE = {"input_cost_per_token": 2.5e-6, "output_cost_per_token": 1e-5}
CHEAP_PRICE = {"input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7}
CHAT = "Hi there! How are you doing this weekend? Any fun plans?"
BREAKERS = {
    "enabled": True,
    "window": {"type": "count", "size": 20},
    "minimum_calls": 5,
    "failure_rate": 0.5,
    "open_s": 10,
    "open_multiplier": 2.0,
    "max_open_s": 120,
    "half_open_probes": 1,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FailingServer:
    """An OpenAI-compatible base URL that fails every call with a 500, counting them."""

    def __init__(self, delay_s: float) -> None:
        self.calls = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with lock:
                    outer.calls += 1
                time.sleep(delay_s)
                body = b'{"error": {"message": "provider down", "type": "server_error"}}'
                self.send_response(500)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_config(path: Path, bad_port: int, routeiq: dict | None) -> None:
    bad_params = {
        "model": "openai/gpt-4o-mini",
        "api_key": "fake",
        "api_base": f"http://127.0.0.1:{bad_port}/v1",
        "max_retries": 0,
        **CHEAP_PRICE,
    }
    good_params = {
        "model": "openai/gpt-4o",
        "api_key": "fake",
        "mock_response": "hi",
        **STRONG_PRICE,
    }
    config: dict[str, Any] = {
        "model_list": [
            {"model_name": "chat", "litellm_params": good_params, "model_info": {"id": "good"}},
            {"model_name": "chat", "litellm_params": bad_params, "model_info": {"id": "bad"}},
        ],
        "router_settings": {"num_retries": 1, "retry_after": 0},
    }
    if routeiq is not None:
        config["litellm_settings"] = {
            "callbacks": ["routeiq.integrations.litellm.proxy.routeiq_callback"]
        }
        config["routeiq_settings"] = routeiq
    else:
        config["router_settings"]["routing_strategy"] = "simple-shuffle"
    path.write_text(yaml.safe_dump(config))


def start(config: Path, workers: int, key: str, log: Path) -> tuple[Any, int]:
    port = free_port()
    env = dict(os.environ)
    env["LITELLM_MASTER_KEY"] = key
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    cmd = [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--num_workers", str(workers), "--timeout_worker_healthcheck", "120"]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    deadline = time.monotonic() + 300
    while log.read_text(errors="replace").count("Application startup complete") < workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"proxy failed to start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return proc, port


def stop(proc: Any) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run(port: int, key: str, n: int, concurrency: int) -> dict[str, float]:
    def one(i: int) -> tuple[int, float]:
        started = time.perf_counter()
        with httpx.Client(timeout=120) as client:  # a new connection: spread over workers
            r = client.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}", "Connection": "close"},
                json={"model": "chat", "messages": [{"role": "user", "content": f"{CHAT} {i}"}]},
            )
        return r.status_code, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - started
    lat = sorted(s for _, s in results)
    return {
        "errors": sum(code != 200 for code, _ in results),
        "p50": statistics.median(lat) * 1e3,
        "p95": lat[max(0, int(0.95 * len(lat)) - 1)] * 1e3,
        "wall": wall,
    }


def redis_ok(url: str) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except Exception:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--fail-delay", type=float, default=0.2, help="seconds 'bad' takes to fail")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--variants", default="breakers,breakers-shared,cooldowns,stock")
    args = parser.parse_args()

    from routeiq.integrations.litellm.demo import build_demo_router

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "breakers-shared" in variants and not redis_ok(args.redis):
        print(f"no Redis at {args.redis}: skipping breakers-shared")
        variants.remove("breakers-shared")
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="routeiq-bench-") as tmp:
        work = Path(tmp)
        build_demo_router(work / "router")
        key = "sk-" + secrets.token_hex(16)
        for name in variants:
            bad = FailingServer(args.fail_delay)
            settings: dict[str, Any] | None = None
            if name != "stock":
                settings = {"router": str(work / "router"), "lambda": 20.0}
                if name.startswith("breakers"):
                    settings["breakers"] = {**BREAKERS, "shared": name == "breakers-shared"}
                if name == "breakers-shared":
                    prefix = "routeiq-bench-" + secrets.token_hex(4)
                    settings["shared_state"] = {"url": args.redis, "prefix": prefix}
            config = work / f"{name}.yaml"
            write_config(config, bad.port, settings)
            proc, port = start(config, args.workers, key, work / f"{name}.log")
            try:
                rows[name] = run(port, key, args.requests, args.concurrency)
                rows[name]["bad_calls"] = bad.calls
            finally:
                stop(proc)
                bad.close()
    load1, _, _ = os.getloadavg()
    print(
        f"\n{args.requests} chit-chat requests at concurrency {args.concurrency}, "
        f"{args.workers} workers, num_retries 1; 'bad' fails every call after "
        f"{args.fail_delay:g} s (load average {load1:.1f})\n"
    )
    print(f"{'':<17}{'errors':>8}{'calls on bad':>14}{'p50 ms':>9}{'p95 ms':>9}{'wall s':>8}")
    for name, r in rows.items():
        print(
            f"{name:<17}{r['errors']:>8.0f}{r['bad_calls']:>14.0f}{r['p50']:>9.0f}"
            f"{r['p95']:>9.0f}{r['wall']:>8.1f}"
        )


if __name__ == "__main__":
    main()
