"""Remote vs in-process routing decisions on loopback, in the same run.

    python bench/remote_decision.py [--requests 2000] [--concurrency 1,4,16] [--rounds 1]
                                    [--workers 1] [--seconds 5] [--clients]

Starts ``routeiq serve`` (``--workers`` uvicorn workers) on 127.0.0.1 with the demo router,
then times ``decide()`` of the same requests through a plain ``DecisionEngine`` (in process)
and through ``RemoteEngine`` (the LiteLLM strategy's client: pooled aiohttp, JSON both ways),
at each ``--concurrency``. *Added* latency is remote minus in-process, per percentile; the
ratio is remote / in-process p50. ``--rounds`` repeats the table against the same service and
ends with the median and range of each cell over the rounds (the machine is shared: one round
is noisy). Throughput: 32 concurrent callers for ``--seconds`` against the service,
decisions/s, per service worker, and per second of service CPU (the service processes' own
user + system time from /proc: what one core does, whatever else runs on the machine). The
caller and the service share this machine's cores, so wall-clock decisions/s is a lower
bound. ``--clients`` also compares raw aiohttp and httpx request latency against the service.
Goal (issue 11): added p50 <= 1 ms and p99 <= 5 ms at 16 concurrent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # the demo imports LiteLLM

import numpy as np

from routeiq.integrations.litellm.remote import RemoteEngine
from routeiq.router import Candidate, LearnedRouter
from routeiq.serving import DecisionEngine, RouteIQSettings, RouteRequest, RouterRegistry

TOKEN = "bench-token-0123456789abcdef"
PROMPTS = [
    "Write a Python function that computes the median of a list, with tests.",
    "Hi there! How are you doing this weekend? Any fun plans?",
    "Prove that the square root of two is irrational, step by step.",
    "Translate 'good morning' into French and Spanish.",
]
CANDS = (Candidate("strong", "gpt-4o", 0.0026), Candidate("cheap", "gpt-4o-mini", 0.00003))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(config: Path, port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("routeiq")
    env = {**os.environ, "ROUTEIQ_SERVICE_TOKEN": TOKEN}
    cmd = [str(exe), "serve", "--config", str(config), "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--workers", str(workers), "--log-level", "info"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                if workers == 1 or log.read_text().count("startup complete") >= workers:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit(f"service did not start:\n{log.read_text()[-2000:]}")


def request(i: int) -> RouteRequest:
    text = PROMPTS[i % len(PROMPTS)]
    return RouteRequest("chat", CANDS, messages=[{"role": "user", "content": text}])


async def timed(engine: Any, n: int, concurrency: int) -> np.ndarray:
    """Latency of each of ``n`` decisions, ``concurrency`` in flight at a time (seconds)."""
    out: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await engine.decide(request(i))
            out.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return np.array(out)


def service_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in the service's process group."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == pgid:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


async def throughput(engine: RemoteEngine, seconds: float, concurrency: int = 32) -> float:
    stop = time.perf_counter() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop:
            await engine.decide(request(i))
            i += 1
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - t0)


async def raw_clients(url: str, n: int) -> list[tuple[str, int, float, float, float]]:
    """p50, p99 (ms) and requests/s of bare POST /v1/route with aiohttp and httpx."""
    import aiohttp
    import httpx

    body = json.dumps(
        {"group": "chat", "text": PROMPTS[0],
         "candidates": [{"name": c.name, "model": c.model, "cost": c.cost} for c in CANDS]}
    ).encode()  # fmt: skip
    headers = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    rows = []
    async with aiohttp.ClientSession() as session, httpx.AsyncClient() as hx:

        async def via_aiohttp() -> None:
            async with session.post(url + "/v1/route", data=body, headers=headers) as r:
                await r.read()

        async def via_httpx() -> None:
            (await hx.post(url + "/v1/route", content=body, headers=headers)).read()

        for name, call in (("aiohttp", via_aiohttp), ("httpx", via_httpx)):
            for conc in (1, 16):
                lat: list[float] = []
                it = iter(range(n))

                async def worker(call: Any = call, lat: list[float] = lat, it: Any = it) -> None:
                    for _ in it:
                        t0 = time.perf_counter()
                        await call()
                        lat.append(time.perf_counter() - t0)

                t0 = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(conc)))
                rate = n / (time.perf_counter() - t0)
                a = np.array(lat) * 1e3
                rows.append((name, conc, float(np.percentile(a, 50)),
                             float(np.percentile(a, 99)), rate))  # fmt: skip
    return rows


def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q) * 1e3)


def print_table(rows: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
    head = ("concurrent", "in-process p50", "p99", "remote p50", "p99", "added p50", "p99")
    print(" | ".join(f"{h:>14}" for h in head) + "   (ms)")
    print("-" * 116)
    for conc, loc, rem in rows:
        cells = [pct(loc, 50), pct(loc, 99), pct(rem, 50), pct(rem, 99)]
        cells += [cells[2] - cells[0], cells[3] - cells[1]]
        print(f"{conc:>14} | " + " | ".join(f"{c:>14.3f}" for c in cells))


def summarize(rounds: list[list[tuple[int, np.ndarray, np.ndarray]]]) -> None:
    """Median [min-max] over the rounds of added p50/p99 and of the remote/in-process ratio."""
    print(f"\nover {len(rounds)} rounds: median [min-max] (ms)")
    head = ("added p50", "added p99", "remote/in-process p50")
    print(f"{'concurrent':>10} | " + " | ".join(f"{h:>22}" for h in head))
    for k, (conc, _, _) in enumerate(rounds[0]):
        p50s, p99s, ratios = [], [], []
        for rows in rounds:
            _, loc, rem = rows[k]
            p50s.append(pct(rem, 50) - pct(loc, 50))
            p99s.append(pct(rem, 99) - pct(loc, 99))
            ratios.append(pct(rem, 50) / pct(loc, 50))
        cells = [
            f"{statistics.median(v):.3f} [{min(v):.3f}-{max(v):.3f}]" for v in (p50s, p99s)
        ] + [f"{statistics.median(ratios):.1f}x [{min(ratios):.1f}-{max(ratios):.1f}]"]
        print(f"{conc:>10} | " + " | ".join(f"{c:>22}" for c in cells))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", default="1,4,16", help="comma-separated in-flight counts")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the latency table")
    ap.add_argument("--workers", type=int, default=1, help="service workers")
    ap.add_argument("--seconds", type=float, default=5.0, help="throughput run length")
    ap.add_argument("--clients", action="store_true", help="also compare aiohttp and httpx")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    from routeiq.integrations.litellm.demo import build_demo_router

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        build_demo_router(tmp / "router")
        config = tmp / "config.yaml"
        config.write_text(json.dumps({"routeiq_settings": {"router": str(tmp / "router"),
                                                           "lambda": 20.0}}))  # fmt: skip
        port = free_port()
        proc = start_service(config, port, args.workers, tmp / "service.log")
        try:
            url = f"http://127.0.0.1:{port}"
            base = {"router": str(tmp / "router"), "lambda": 20.0}
            remote_settings = {**base, "service": {"urls": [url], "timeout_ms": 1000}}
            learned = LearnedRouter.load(tmp / "router")
            registry = RouterRegistry({tmp / "router": learned})
            local = DecisionEngine(RouteIQSettings.model_validate(base), registry)
            os.environ["ROUTEIQ_SERVICE_TOKEN"] = TOKEN
            remote = RemoteEngine(RouteIQSettings.model_validate(remote_settings), registry)
            await timed(remote, 200, 16)  # warm connections and both engines
            await timed(local, 200, 16)
            same = 0
            for i in range(len(PROMPTS)):  # the service decides as the engine does here
                a, b = await remote.decide(request(i)), await local.decide(request(i))
                rows_a = [(r.name, r.predicted_quality, r.cost, r.utility) for r in a.candidates]
                rows_b = [(r.name, r.predicted_quality, r.cost, r.utility) for r in b.candidates]
                same += (a.chosen, a.rule, a.router, rows_a) == (b.chosen, b.rule, b.router, rows_b)
            print(f"remote decisions identical to in-process ones: {same}/{len(PROMPTS)}")
            rounds = []
            for r in range(args.rounds):
                rows = []
                for conc in levels:
                    # Interleave halves so machine noise lands on both sides alike.
                    half = args.requests // 2
                    loc = await timed(local, half, conc)
                    rem = await timed(remote, half, conc)
                    loc = np.concatenate([loc, await timed(local, half, conc)])
                    rem = np.concatenate([rem, await timed(remote, half, conc)])
                    rows.append((conc, loc, rem))
                rounds.append(rows)
                print(
                    f"\nround {r + 1}: remote vs in-process decision on loopback "
                    f"({os.cpu_count()} cores, {args.workers} service worker(s), "
                    f"{args.requests} decisions per row)\n"
                )
                print_table(rows)
            if args.rounds > 1:
                summarize(rounds)
            cpu0, client0 = service_cpu_seconds(proc.pid), time.process_time()
            t0 = time.perf_counter()
            rate = await throughput(remote, args.seconds)
            wall = time.perf_counter() - t0
            cpu = service_cpu_seconds(proc.pid) - cpu0
            client_cpu = time.process_time() - client0
            fallbacks = remote._fallback_counter  # none expected: the timeout is 1 s
            done = rate * wall
            print(
                f"\nservice throughput, 32 concurrent callers for {args.seconds:g} s: "
                f"{rate:,.0f} decisions/s = {rate / args.workers:,.0f} per service worker "
                "(the caller shares the cores)"
            )
            print(
                f"service CPU per decision: {cpu / done * 1e3:.3f} ms = "
                f"{done / cpu:,.0f} decisions per service CPU-second (one core); caller CPU "
                f"per decision: {client_cpu / done * 1e3:.3f} ms"
            )
            samples = [s for m in fallbacks.collect() for s in m.samples] if fallbacks else []
            print(f"fallbacks during the run: {sum(s.value for s in samples):g}")
            if args.clients:
                print(
                    f"\n{'client':>8} | {'concurrent':>10} | {'p50 ms':>7} | {'p99 ms':>7} | req/s"
                )
                for name, conc, p50, p99, rps in await raw_clients(url, args.requests):
                    print(f"{name:>8} | {conc:>10} | {p50:>7.3f} | {p99:>7.3f} | {rps:,.0f}")
            await remote.client.aclose()
            local.close()
            remote.close()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


if __name__ == "__main__":
    try:
        import uvloop  # the loop LiteLLM's proxy runs on under uvicorn

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
