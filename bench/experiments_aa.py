"""A/A and A/B simulations of the always-valid test (mSPRT) under continuous monitoring.

    python bench/experiments_aa.py [--experiments 1000] [--ab-experiments 200]
        [--max-requests 10000] [--look-every 100] [--seed 0] [--data CSV] [--json]

Each simulated experiment assigns requests to control or treatment by a fair coin (as
:class:`routeiq.experiments.Experiment` does at 50%) and runs
:func:`routeiq.experiments.msprt` (alpha 0.05, default tau) after every ``--look-every``
requests up to ``--max-requests``, on the statistics the report feeds it. Experiments are
vectorised with numpy.

* A/A rows: both arms draw from the same distribution; "rejected" is the false-positive rate
  (any rejection at any look), goal <= 5%. For contrast, "naive z" is the rate of a plain
  two-sided z-test (|z| > 1.96) checked at the same looks: the peeking problem.
* A/B row: quality 0.70 vs 0.73; "rejected" is the share detected by the last look, with the
  median and p90 requests to detection among detected runs; "naive z" here is the power of a
  single fixed-horizon z-test at ``--max-requests``.

Distributions: Bernoulli quality (p = 0.7, sample variance as the report uses for feedback),
a 2% Bernoulli error rate (the report's error-rate variance), and, when the RouterBench CSV
is found (``--data``; read in place), real per-request cost and quality: each request draws
a random row and a random model, so cost has RouterBench's heavy tail.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from routeiq.experiments.sequential import msprt

Draw = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]
ROUTERBENCH = "routerbench/routerbench_0shot_arc_mbpp_winogrande.csv"
Z95 = 1.959963984540054


def simulate(
    experiments: int,
    looks: int,
    every: int,
    draw_c: Draw,
    draw_t: Draw,
    rng: np.random.Generator,
    bernoulli: bool = False,
) -> tuple[np.ndarray, ...]:
    """Cumulative (n, mean, variance) of both arms at each look, each (experiments, looks)."""
    shape = (experiments, looks)
    n, s1, s2 = (np.zeros((2, *shape)) for _ in range(3))
    run_n, run_s1, run_s2 = (np.zeros((2, experiments)) for _ in range(3))
    for look in range(looks):
        treated = rng.random((experiments, every)) < 0.5
        x = np.where(treated, draw_t(rng, (experiments, every)), draw_c(rng, (experiments, every)))
        for arm, mask in enumerate((~treated, treated)):
            run_n[arm] += mask.sum(axis=1)
            run_s1[arm] += np.where(mask, x, 0.0).sum(axis=1)
            run_s2[arm] += np.where(mask, x * x, 0.0).sum(axis=1)
        n[:, :, look], s1[:, :, look], s2[:, :, look] = run_n, run_s1, run_s2
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / n
        if bernoulli:  # as ArmStats.bernoulli: q (1 - q), q = (events + 0.5) / (n + 1)
            q = (s1 + 0.5) / (n + 1)
            var = q * (1 - q)
        else:
            var = np.maximum(s2 - s1 * mean, 0.0) / (n - 1)
    return n[0], mean[0], var[0], n[1], mean[1], var[1]


def naive_z(stats: tuple[np.ndarray, ...]) -> np.ndarray:
    """|z| > 1.96 at each look, (experiments, looks)."""
    nc, mc, vc, nt, mt, vt = stats
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (mt - mc) / np.sqrt(vc / nc + vt / nt)
    return np.abs(np.nan_to_num(z)) > Z95


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson interval for a binomial share."""
    p, z2 = k / n, Z95**2
    mid = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, mid - half), min(1.0, mid + half)


def run(
    name: str,
    draw_c: Draw,
    draw_t: Draw,
    *,
    experiments: int,
    looks: int,
    every: int,
    rng: np.random.Generator,
    bernoulli: bool = False,
    ab: bool = False,
) -> dict[str, Any]:
    started = time.perf_counter()
    stats = simulate(experiments, looks, every, draw_c, draw_t, rng, bernoulli)
    res = msprt(*stats)
    rejected = res.rejected.any(axis=1)
    k = int(rejected.sum())
    naive = naive_z(stats)
    row: dict[str, Any] = {
        "scenario": name,
        "experiments": experiments,
        "max_requests": looks * every,
        "looks": looks,
        "rejected": k / experiments,
        "rejected_95": wilson(k, experiments),
        # A/A: the naive test's peeking false-positive rate; A/B: one fixed-horizon test.
        "naive_z": float(naive[:, -1].mean() if ab else naive.any(axis=1).mean()),
        "median_requests": None,
        "p90_requests": None,
    }
    if ab and k:
        first = (res.rejected[rejected].argmax(axis=1) + 1) * every
        row["median_requests"] = float(np.median(first))
        row["p90_requests"] = float(np.quantile(first, 0.9))
    row["seconds"] = time.perf_counter() - started
    return row


def bernoulli(p: float) -> Draw:
    return lambda rng, size: (rng.random(size) < p).astype(np.float64)


def resample(pool: np.ndarray) -> Draw:
    return lambda rng, size: pool[rng.integers(0, pool.size, size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000, help="A/A runs per scenario")
    parser.add_argument("--ab-experiments", type=int, default=200, help="A/B runs")
    parser.add_argument("--max-requests", type=int, default=10_000)
    parser.add_argument("--look-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    default_data = Path(os.environ.get("ROUTEIQ_DATASETS", "../shared/datasets")) / ROUTERBENCH
    parser.add_argument("--data", type=Path, default=default_data, help="RouterBench CSV")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    looks = max(1, args.max_requests // args.look_every)
    common = {"looks": looks, "every": args.look_every}
    seeds = iter(np.random.SeedSequence(args.seed).spawn(8))

    def rng() -> np.random.Generator:
        return np.random.default_rng(next(seeds))

    aa = {"experiments": args.experiments, **common}
    rows = [
        run("A/A quality p=0.70", bernoulli(0.7), bernoulli(0.7), rng=rng(), **aa),
        run("A/A error rate 2%", bernoulli(0.02), bernoulli(0.02), rng=rng(), bernoulli=True, **aa),
    ]
    if args.data.exists():
        from routeiq.data.loaders import load_dataset

        data = load_dataset(args.data)
        cost = data.cost[np.isfinite(data.cost)]
        quality = data.quality[np.isfinite(data.quality)]
        rows.append(run("A/A RouterBench cost", resample(cost), resample(cost), rng=rng(), **aa))
        rows.append(
            run("A/A RouterBench quality", resample(quality), resample(quality), rng=rng(), **aa)
        )
    rows.append(
        run(
            "A/B quality 0.70 vs 0.73",
            bernoulli(0.70),
            bernoulli(0.73),
            rng=rng(),
            experiments=args.ab_experiments,
            ab=True,
            **common,
        )
    )
    if args.json:
        print(json.dumps({"alpha": 0.05, "look_every": args.look_every, "rows": rows}))
        return
    print(
        f"mSPRT (alpha 0.05, tau 0.1 sd), a look every {args.look_every} requests up to "
        f"{looks * args.look_every}; A/A: false positives at any look (goal <= 5%); A/B: share "
        "detected. naive z: A/A peeking false-positive rate / A/B fixed-horizon power."
    )
    print()
    print("| scenario | runs | rejected [95% CI] | median requests | p90 requests | naive z | s |")
    print("|---|---|---|---|---|---|---|")
    fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    for r in rows:
        low, high = r["rejected_95"]
        print(
            f"| {r['scenario']} | {r['experiments']} | {r['rejected']:.1%} "
            f"[{low:.1%}, {high:.1%}] | {fmt(r['median_requests'])} | "
            f"{fmt(r['p90_requests'])} | {r['naive_z']:.1%} | {r['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
