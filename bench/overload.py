"""Overload on the LiteLLM proxy: what load shedding does to the requests it accepts.

Starts one real proxy on 127.0.0.1 (mock deployments answering after ``--delay`` seconds,
RouteIQ with ``shedding: {max_in_flight: --limit}``), then runs, in rounds:

* ``unloaded``: ``--limit`` concurrent requests per round (never more than one worker's
  limit: nothing is shed);
* ``overload``: bursts of ``--factor`` x ``--limit`` concurrent requests: the excess gets 503.

and prints, per phase, the status counts and client-side latency (p50/p99) of accepted
requests and of 503s. With ``--compare`` a second proxy without shedding takes the same
overload bursts (everything accepted; latency is what queueing costs).

    .venv/bin/python bench/overload.py --workers 2 --limit 16 --delay 0.5 --rounds 5

The load generator runs on the same machine: absolute numbers are machine- and load-bound.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: bundled price map

REPO = Path(__file__).resolve().parents[1]
LITELLM = Path(sys.executable).with_name("litellm")
PRICES = {
    "gpt-4o": {"input_cost_per_token": 2.5e-6, "output_cost_per_token": 1e-5},
    "gpt-4o-mini": {"input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_router(path: Path) -> Path:
    # By file path: the demo module's package imports LiteLLM (seconds), this does not.
    source = REPO / "src" / "routeiq" / "integrations" / "litellm" / "demo.py"
    spec = importlib.util.spec_from_file_location("_routeiq_demo", source)
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    demo.build_demo_router(path)
    return path


def config(router: Path, delay: float, shedding: dict[str, Any] | None) -> dict[str, Any]:
    deployments = [
        {
            "model_name": "chat",
            "litellm_params": {
                "model": f"openai/{model}",
                "api_key": "fake",
                "mock_response": "ok",
                "mock_delay": delay,
                **price,
            },
            "model_info": {"id": model},
        }
        for model, price in PRICES.items()
    ]
    settings: dict[str, Any] = {"router": str(router), "lambda": 20.0}
    if shedding is not None:
        settings["shedding"] = shedding
    return {
        "model_list": deployments,
        "router_settings": {"num_retries": 0},
        "litellm_settings": {"callbacks": ["routeiq.integrations.litellm.proxy.routeiq_callback"]},
        "routeiq_settings": settings,
    }


class Proxy:
    def __init__(self, name: str, cfg: dict[str, Any], workers: int, key: str, work: Path) -> None:
        self.name, self.key, self.workers = name, key, workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        self.log = work / f"{name}.log"
        env = dict(os.environ, LITELLM_MASTER_KEY=key)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO / "src"), env.get("PYTHONPATH")])
        )
        cmd = [str(LITELLM), "--config", str(path), "--host", "127.0.0.1", "--port", str(self.port)]
        # A loaded machine boots workers slowly: uvicorn's 5 s default health check kills them.
        cmd += ["--num_workers", str(workers), "--timeout_worker_healthcheck", "120"]
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.log.read_text(errors="replace").count("Application startup complete") < (
            self.workers
        ):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


async def burst(proxy: Proxy, n: int) -> list[tuple[int | str, float]]:
    """``n`` concurrent requests, one connection each: (status, seconds) per request."""
    limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=0)
    body = {"model": "chat", "messages": [{"role": "user", "content": "Hi, how are you?"}]}
    headers = {"Authorization": f"Bearer {proxy.key}", "Connection": "close"}

    async def one(client: httpx.AsyncClient) -> tuple[int | str, float]:
        start = time.perf_counter()
        try:
            r = await client.post(f"{proxy.url}/v1/chat/completions", json=body, headers=headers)
            return r.status_code, time.perf_counter() - start
        except httpx.HTTPError as exc:
            return type(exc).__name__, time.perf_counter() - start

    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        return list(await asyncio.gather(*(one(client) for _ in range(n))))


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(name: str, results: list[tuple[int | str, float]]) -> str:
    ok = [s for status, s in results if status == 200]
    shed = [s for status, s in results if status == 503]
    other = len(results) - len(ok) - len(shed)
    ms = lambda v: f"{v * 1000:8.0f}"  # noqa: E731
    return (
        f"{name:<22}{len(results):>6}{len(ok):>6}{len(shed):>6}{other:>6}"
        f"{ms(quantile(ok, 0.5))}{ms(quantile(ok, 0.99))}{ms(quantile(shed, 0.5))}"
        f"{ms(quantile(shed, 0.99))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=16, help="shedding.max_in_flight")
    parser.add_argument("--factor", type=int, default=4, help="burst size / limit")
    parser.add_argument("--delay", type=float, default=0.5, help="mock_delay of deployments (s)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compare", action="store_true", help="also a proxy without shedding")
    args = parser.parse_args()

    key = "sk-bench-" + secrets.token_hex(8)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))  # stop the proxies too
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        router = build_router(work / "router")
        proxies = [
            Proxy(
                "shedding",
                config(router, args.delay, {"max_in_flight": args.limit, "retry_after_s": 1}),
                args.workers,
                key,
                work,
            )
        ]
        if args.compare:
            proxies.append(
                Proxy("no-shedding", config(router, args.delay, None), args.workers, key, work)
            )
        try:
            for p in proxies:
                p.wait_ready()
            results: dict[str, list[tuple[int | str, float]]] = {}
            for _ in range(args.rounds):  # interleaved: machine-load drifts hit every phase
                for p in proxies:
                    if p.name == "shedding":
                        results.setdefault("shedding unloaded", []).extend(
                            asyncio.run(burst(p, args.limit))
                        )
                    results.setdefault(f"{p.name} overload", []).extend(
                        asyncio.run(burst(p, args.factor * args.limit))
                    )
        finally:
            for p in proxies:
                p.stop()

    print(
        f"\nworkers={args.workers} limit={args.limit}/worker burst={args.factor * args.limit} "
        f"delay={args.delay:g}s rounds={args.rounds} (latency in ms, client side)\n"
    )
    head = f"{'phase':<22}{'reqs':>6}{'200':>6}{'503':>6}{'other':>6}"
    print(head + f"{'ok p50':>8}{'ok p99':>8}{'503 p50':>8}{'503 p99':>8}")
    for name, rs in results.items():
        print(row(name, rs))


if __name__ == "__main__":
    main()
