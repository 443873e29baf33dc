"""LiteLLM proxy throughput and latency: RouteIQ (lexical featurizer) vs stock simple-shuffle.

Starts real proxies on 127.0.0.1 with the same mock deployments, router settings and number
of workers: ``stock`` (LiteLLM's ``simple-shuffle``), ``routeiq`` (installed through the
callbacks line with default settings: ``scoring: auto``, i.e. inline for the lexical
featurizer) and ``routeiq-thread`` (featurize + score in the thread pool). Then rotates
bounded load runs between them (a fixed number of requests at a fixed concurrency;
interleaved, so drifts in machine load hit every variant alike) and prints
throughput, client-side p50/p99 latency, CPU time per request of the proxy's processes (less
sensitive to other load on the machine than throughput), ratios to stock, and RouteIQ's
latency inside the proxy: the decision's wall time and the featurize + score part alone,
from its Prometheus histograms aggregated over workers (``PROMETHEUS_MULTIPROC_DIR``).

    .venv/bin/python bench/proxy_throughput.py --workers 2 --requests 400 --concurrency 16

The load generator runs on the same machine: absolute numbers are machine- and load-bound,
the ratio is the result.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import statistics
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
STRONG_PRICE = {"input_cost_per_token": 2.5e-6, "output_cost_per_token": 1e-5}
CHEAP_PRICE = {"input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_list() -> list[dict]:
    def dep(ident: str, model: str, price: dict) -> dict:
        return {
            "model_name": "chat",
            "litellm_params": {
                "model": f"openai/{model}",
                "api_key": "fake",
                "mock_response": "ok",
                **price,
            },
            "model_info": {"id": ident},
        }

    return [dep("strong", "gpt-4o", STRONG_PRICE), dep("cheap", "gpt-4o-mini", CHEAP_PRICE)]


def write_config(path: Path, routeiq: dict | None) -> None:
    """Same deployments and router settings; RouteIQ adds only its two config entries."""
    config: dict[str, Any] = {
        "model_list": model_list(),
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 0},
    }
    if routeiq is not None:
        config["litellm_settings"] = {
            "callbacks": ["routeiq.integrations.litellm.proxy.routeiq_callback"]
        }
        config["routeiq_settings"] = routeiq
    path.write_text(yaml.safe_dump(config))


class Proxy:
    def __init__(self, name: str, config: Path, workers: int, key: str, work: Path) -> None:
        self.name, self.port, self.key = name, free_port(), key
        self.log = work / f"{name}.log"
        self.metrics_dir = work / f"{name}-prom"
        self.metrics_dir.mkdir()
        env = dict(os.environ)
        env.update(
            {
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_MASTER_KEY": key,
                "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO / "src"), env.get("PYTHONPATH")])
                ),
            }
        )
        cmd = [
            str(LITELLM),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--num_workers",
            str(workers),
            "--timeout_worker_healthcheck",
            "120",
        ]
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                cmd,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=config.parent,
                start_new_session=True,
            )
        self.workers = workers

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.log.read_text(errors="replace").count("Application startup complete") < (
            self.workers
        ):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} proxy failed to start:\n"
                    f"{self.log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.5)

    def cpu_seconds(self) -> float:
        """User + system CPU of every process of this proxy (its process group; Linux /proc)."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the process ended meanwhile
            if int(fields[2]) == self.proc.pid:  # field 5 (pgrp), counted after ")"
                total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def prompts(n: int) -> list[str]:
    from routeiq.integrations.litellm.demo import demo_prompts

    base, _ = demo_prompts(seed=1)
    return [f"{base[i % len(base)]} (request {i})" for i in range(n)]


async def load(proxy: Proxy, texts: list[str], concurrency: int) -> dict[str, Any]:
    """Send every text once with at most ``concurrency`` in flight; return timings."""
    latencies: list[float] = []
    errors = 0
    queue = list(reversed(texts))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{proxy.port}", timeout=60, limits=limits
    ) as client:

        async def worker() -> None:
            nonlocal errors
            while queue:
                text = queue.pop()
                t0 = time.perf_counter()
                reply = await client.post(
                    "/v1/chat/completions",
                    headers={"Authorization": f"Bearer {proxy.key}"},
                    json={"model": "chat", "messages": [{"role": "user", "content": text}]},
                )
                latencies.append(time.perf_counter() - t0)
                errors += reply.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    latencies.sort()
    return {
        "rps": len(texts) / wall,
        "p50": quantile(latencies, 0.5),
        "p99": quantile(latencies, 0.99),
        "errors": errors,
    }


def quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def proxy_metrics(metrics_dir: Path) -> Any:
    """Every worker's metrics, aggregated from the multiprocess files."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    return list(registry.collect())


def counter_total(families: Any, name: str) -> float:
    return sum(
        s.value for f in families if f.name == name for s in f.samples if s.name.endswith("_total")
    )


def histogram_summary(families: Any, name: str) -> dict[str, float]:
    """Count, mean and bucket-interpolated p50/p99 (ms) of a histogram summed over labels."""
    buckets: dict[float, float] = {}
    total = count = 0.0
    for family in families:
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
    if not count:
        return {"count": 0}
    edges = sorted(buckets)

    def bucket_quantile(q: float) -> float:
        # Linear interpolation inside the bucket, as Prometheus' histogram_quantile does.
        rank, lower, below = q * count, 0.0, 0.0
        for le in edges:
            if buckets[le] >= rank:
                if le == float("inf"):
                    return lower
                width = buckets[le] - below
                return lower + (le - lower) * ((rank - below) / width if width else 1.0)
            lower, below = le, buckets[le]
        return lower

    return {
        "count": count,
        "mean_ms": 1e3 * total / count,
        "p50_ms": 1e3 * bucket_quantile(0.5),
        "p99_ms": 1e3 * bucket_quantile(0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=400, help="requests per run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="runs per proxy, alternated")
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument(
        "--variants",
        default="stock,routeiq,routeiq-thread",
        help="stock = simple-shuffle; routeiq = default settings; routeiq-thread = scoring: thread",
    )
    args = parser.parse_args()

    from routeiq.integrations.litellm.demo import build_demo_router

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - {"stock", "routeiq", "routeiq-thread"}
    if unknown or "stock" not in variants:
        parser.error(f"--variants: 'stock' plus routeiq and/or routeiq-thread; got {variants}")
    with tempfile.TemporaryDirectory(prefix="routeiq-bench-") as tmp:
        work = Path(tmp)
        digest = build_demo_router(work / "router")
        key = "sk-" + secrets.token_hex(16)
        proxies = []
        for name in variants:
            settings = None
            if name != "stock":
                settings = {
                    "router": str(work / "router"),
                    "lambda": 20.0,
                    "decision_log": str(work / f"{name}-decisions.jsonl"),
                }
                if name == "routeiq-thread":
                    settings["scoring"] = "thread"
            write_config(work / f"{name}.yaml", settings)
            proxies.append(Proxy(name, work / f"{name}.yaml", args.workers, key, work))
        try:
            for p in proxies:
                p.wait_ready()
            load1, load5, _ = os.getloadavg()
            print(f"load average before the runs: {load1:.2f} (1 min), {load5:.2f} (5 min)")
            texts = prompts(args.requests)
            for p in proxies:
                asyncio.run(load(p, prompts(args.warmup), args.concurrency))
            runs: dict[str, list[dict]] = {p.name: [] for p in proxies}
            for r in range(args.rounds):
                # Rotate the order so no variant always runs first (or right after another).
                for p in proxies[r % len(proxies) :] + proxies[: r % len(proxies)]:
                    cpu = p.cpu_seconds()
                    run = asyncio.run(load(p, texts, args.concurrency))
                    run["cpu_ms"] = 1e3 * (p.cpu_seconds() - cpu) / len(texts)
                    runs[p.name].append(run)
            inside = {p.name: proxy_metrics(p.metrics_dir) for p in proxies if p.name != "stock"}
        finally:
            for p in proxies:
                p.stop()

    def med(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    print(
        f"\nLiteLLM proxy, {args.workers} workers each, {args.rounds} rotating runs of "
        f"{args.requests} requests at concurrency {args.concurrency} per variant (medians "
        f"over runs); router {digest[:12]} (lexical featurizer + logistic)\n"
    )
    print(
        f"{'':<16}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}{'errors':>8}"
        f"{'rps ratio':>11}{'p50 ratio':>11}{'p99 ratio':>11}{'CPU ratio':>11}"
    )
    for name in variants:
        errors = sum(run["errors"] for run in runs[name])
        print(
            f"{name:<16}{med(name, 'rps'):>9.1f}{1e3 * med(name, 'p50'):>9.1f}"
            f"{1e3 * med(name, 'p99'):>9.1f}{med(name, 'cpu_ms'):>12.2f}{errors:>8d}"
            f"{med(name, 'rps') / med('stock', 'rps'):>11.3f}"
            f"{med(name, 'p50') / med('stock', 'p50'):>11.3f}"
            f"{med(name, 'p99') / med('stock', 'p99'):>11.3f}"
            f"{med(name, 'cpu_ms') / med('stock', 'cpu_ms'):>11.3f}"
        )
    print("\nper run req/s (CPU ms/req):")
    for name in variants:
        print(
            f"  {name:<16}"
            + " ".join(f"{run['rps']:6.1f} ({run['cpu_ms']:4.1f})" for run in runs[name])
        )
    print("\nratios to stock, run by run (same round, adjacent in time): median [min, max]")
    for name in variants:
        if name == "stock":
            continue
        for key, label in (("rps", "req/s"), ("cpu_ms", "CPU ms/req")):
            paired = [a[key] / b[key] for a, b in zip(runs[name], runs["stock"], strict=True)]
            print(
                f"  {name:<16}{label:<12}{statistics.median(paired):7.3f} "
                f"[{min(paired):.3f}, {max(paired):.3f}]"
            )
    print("\nRouteIQ inside the proxy (all workers; p50/p99 interpolated within buckets):")
    for name, families in inside.items():
        decisions = histogram_summary(families, "routeiq_decision_duration_seconds")
        scoring = histogram_summary(families, "routeiq_scoring_duration_seconds")
        fallbacks = counter_total(families, "routeiq_fallbacks")
        print(f"  {name}: {decisions.get('count', 0):.0f} decisions, {fallbacks:.0f} fallbacks")
        for label, h in (("decision wall time", decisions), ("featurize + score", scoring)):
            if h.get("count"):
                print(
                    f"    {label:<20} mean {h['mean_ms']:7.3f} ms  p50 ~{h['p50_ms']:7.3f} ms"
                    f"  p99 ~{h['p99_ms']:7.3f} ms"
                )


if __name__ == "__main__":
    main()
