"""Decision latency of the serving engine: greedy vs exploration vs the online router.

    python bench/decision_latency.py [--router DIR] [--requests 1000] [--rounds 5]

One engine per variant, each deciding the same RouterBench test prompts among the router's
models (costs: each model's mean cost in the data), scoring inline as in a proxy with the
lexical featurizer; rounds rotate the variants so machine noise spreads evenly. The whole
``DecisionEngine.decide`` is timed (featurize, score, online correction, rule, exploration
draw, feedback context, metrics), not the proxy around it. ``online, trained`` has learned
from 2,000 rated decisions first. Prints p50/p99 per variant and the ratio of medians to
``greedy``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np

from routeiq.data.loaders import load_dataset
from routeiq.evaluation.runner import build_router
from routeiq.router import Candidate, LearnedRouter
from routeiq.serving import DecisionEngine, RouteIQSettings, RouteRequest, RouterRegistry

DATA = Path("../shared/datasets/routerbench/routerbench_0shot_arc_mbpp_winogrande.csv")
EXPLORE = {"mode": "epsilon", "epsilon": 0.05, "margin": 0.05}
VARIANTS: dict[str, dict[str, Any]] = {
    "greedy, no feedback": {"feedback": {"enabled": False}},
    "greedy": {},
    "explore": {"exploration": EXPLORE},
    "online": {"online": {"enabled": True}},
    "online, trained": {"online": {"enabled": True}},
    "explore + online, trained": {"exploration": EXPLORE, "online": {"enabled": True}},
}


def _engine(path: Path, router: LearnedRouter, extra: dict[str, Any]) -> DecisionEngine:
    settings = RouteIQSettings.model_validate(
        {"router": str(path), "lambda": 20.0, "scoring": "inline", **extra}
    )
    return DecisionEngine(settings, RouterRegistry({path: router}))


async def _train(engine: DecisionEngine, texts: list[str], cands: list[Candidate], q: Any) -> None:
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(texts), 2000):
        d = await engine.decide(_request(texts[i], cands))
        engine.feedback(d.id, float(q[i, [c.name for c in cands].index(d.chosen)]))


def _request(text: str, cands: list[Candidate]) -> RouteRequest:
    return RouteRequest(
        group="chat", candidates=cands, messages=[{"role": "user", "content": text}]
    )


async def _time(engine: DecisionEngine, texts: list[str], cands: list[Candidate]) -> list[float]:
    out = []
    for text in texts:
        started = time.perf_counter()
        await engine.decide(_request(text, cands))
        out.append(time.perf_counter() - started)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--router", type=Path, help="artifact (default: train ensemble on --data)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    data = load_dataset(args.data).labelled()
    train, test = data.split("train"), data.split("test")
    path = args.router
    if path is None:
        path = Path(tempfile.mkdtemp()) / "router"
        print(f"training ensemble on {len(train)} prompts -> {path}", file=sys.stderr)
        build_router("lexical", "ensemble", lam=20.0).fit(train).save(path)
    router = LearnedRouter.load(path)
    mean_cost = np.nanmean(data.cost, axis=0)
    cands = [Candidate(m, m, float(c)) for m, c in zip(data.models, mean_cost, strict=True)]
    texts = [test.prompts[i % len(test)] for i in range(args.requests)]
    engines = {name: _engine(path, router, extra) for name, extra in VARIANTS.items()}
    for name, engine in engines.items():
        if "trained" in name:
            await _train(engine, train.prompts, cands, train.quality)
        await _time(engine, texts[:50], cands)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in engines}
    for r in range(args.rounds):
        order = list(engines)[r % len(engines) :] + list(engines)[: r % len(engines)]
        for name in order:
            times[name] += await _time(engines[name], texts, cands)
    base = statistics.median(times["greedy"])
    print(f"\n{args.requests} decisions x {args.rounds} rounds, {len(cands)} candidates")
    print("| variant | p50 us | p99 us | p50 ratio to greedy |\n|---|---|---|---|")
    for name, ts in times.items():
        p50, p99 = statistics.median(ts), float(np.percentile(ts, 99))
        print(f"| {name} | {p50 * 1e6:.0f} | {p99 * 1e6:.0f} | {p50 / base:.3f} |")
    for engine in engines.values():
        engine.close()


if __name__ == "__main__":
    asyncio.run(main())
