"""Per-prompt featurizer latency on real prompts: one prompt per call, one thread.

    python bench/featurizers.py [--datasets ../shared/datasets] [--n 300]
                                [--featurizers lexical,minilm]

Fits the lexical featurizer on both datasets' train prompts, then times ``transform([prompt])``
on test prompts, short (< 500 characters) and long (>= 2,000 characters) separately. Prints
wall-clock p50/p99 and thread-CPU p50 in milliseconds. BLAS/OpenMP pools are limited to one
thread, as in a gateway worker. Absolute numbers move with machine load; compare ratios.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from routeiq.data.loaders import load_dataset
from routeiq.features import Featurizer, make_featurizer

DATASETS = {
    "routerbench": "routerbench/routerbench_0shot_arc_mbpp_winogrande.csv",
    "llmrouter": "llmrouter/llmrouter_dc_scores.csv",
}
SHORT, LONG = 500, 2000


def load_prompts(root: Path) -> tuple[list[str], list[str]]:
    train: list[str] = []
    test: list[str] = []
    for rel in DATASETS.values():
        ds = load_dataset(root / rel)
        for text, split in zip(ds.prompts, ds.splits, strict=True):
            (test if split == "test" else train).append(text)
    return train, test


def time_one_by_one(f: Featurizer, texts: list[str]) -> tuple[float, float, float]:
    for t in texts[:5]:
        f.transform([t])  # warm up (lazy model load, caches)
    wall, cpu = [], []
    for t in texts:
        w0, c0 = time.perf_counter(), time.thread_time()
        f.transform([t])
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return (
        float(np.percentile(wall, 50)) * 1e3,
        float(np.percentile(wall, 99)) * 1e3,
        float(np.percentile(cpu, 50)) * 1e3,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_root = os.environ.get("ROUTEIQ_DATASETS", "../shared/datasets")
    ap.add_argument("--datasets", type=Path, default=Path(default_root))
    ap.add_argument("--n", type=int, default=300, help="prompts per length bucket")
    ap.add_argument("--featurizers", default="lexical,minilm")
    args = ap.parse_args()

    train, test = load_prompts(args.datasets)
    rng = np.random.default_rng(0)
    buckets = {}
    for name, keep in (("short", lambda s: len(s) < SHORT), ("long", lambda s: len(s) >= LONG)):
        pool = [t for t in test if keep(t)]
        idx = rng.choice(len(pool), size=min(args.n, len(pool)), replace=False)
        buckets[name] = [pool[i] for i in idx]

    print(f"train prompts {len(train)}, test prompts {len(test)}")
    header = f"{'featurizer':<10} {'bucket':<6} {'n':>4} {'chars p50':>9} "
    header += f"{'wall p50 ms':>11} {'wall p99 ms':>11} {'cpu p50 ms':>10}"
    print(header)
    print("-" * len(header))
    with threadpool_limits(limits=1):
        for fname in args.featurizers.split(","):
            f = make_featurizer(fname)
            t0 = time.perf_counter()
            f.fit(train)
            fit_s = time.perf_counter() - t0
            for bname, texts in buckets.items():
                p50, p99, cpu = time_one_by_one(f, texts)
                chars = int(np.median([len(t) for t in texts]))
                print(
                    f"{fname:<10} {bname:<6} {len(texts):>4} {chars:>9} "
                    f"{p50:>11.3f} {p99:>11.3f} {cpu:>10.3f}"
                )
            print(f"{fname:<10} fit on {len(train)} prompts: {fit_s:.1f} s")


if __name__ == "__main__":
    main()
