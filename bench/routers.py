"""Train every router on both shared datasets, evaluate on their test splits, time decisions.

    python bench/routers.py [--datasets ../shared/datasets] [--featurizers lexical,minilm]
                            [--routers all] [--context task] [--markdown bench/results.md]

Prints one table per dataset and featurizer (AIQ, log-cost AIQ, best quality and its cost, cost
to match the best single model, APGR/CPT for best-vs-cheapest, a calibrated "quality>=1.0"
target measured on test, training time; with ``--context``, each router again with the
request context blended in and every row's AIQ difference to the task lookup with a 95% paired
bootstrap interval) and one decision-latency table per dataset: p50/p99 of
the decision with features precomputed (quality model + decision rule) and end to end (prompt
string in, choice out, featurization included). One thread, one process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from routeiq.data.loaders import load_dataset
from routeiq.decision import decide
from routeiq.evaluation.runner import ALL_ROUTERS, run_evaluation, train_test
from routeiq.features import make_featurizer
from routeiq.features.cache import CachedFeaturizer
from routeiq.quality import make_quality_model
from routeiq.router import LearnedRouter

DATASETS = {
    "routerbench": "routerbench/routerbench_0shot_arc_mbpp_winogrande.csv",
    "llmrouter": "llmrouter/llmrouter_dc_scores.csv",
}


def fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def quality_table(name: str, summary: dict) -> list[str]:
    pair = summary["report"].get("pair")
    lines = [
        f"### {name}: {summary['title']}",
        "",
        summary["note"],
        "",
        f"APGR/CPT pair: {pair}" if pair else "",
        "",
        "| router | AIQ | log-AIQ | best quality | its $/query | $ to match best | APGR | CPT50 "
        "| CPT80 | target quality | target $ frac | AIQ vs task lookup [95%] | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        diff = r.get("aiq_vs_task_lookup")
        vs = f"{diff[0]:+.4f} [{diff[1]:+.4f}, {diff[2]:+.4f}]" if diff else "-"
        lines.append(
            f"| {r['router']} | {fmt(r['aiq'], '.4f')} | {fmt(r['log_aiq'], '.4f')} "
            f"| {fmt(r['best_quality'], '.4f')} | {fmt(r['best_quality_cost'], '.6f')} "
            f"| {fmt(r['cost_to_match_best_fraction'], '.3f')} | {fmt(r.get('apgr'), '.3f')} "
            f"| {fmt(r.get('cpt50'), '.3f')} | {fmt(r.get('cpt80'), '.3f')} "
            f"| {fmt(r.get('target_quality'), '.4f')} "
            f"| {fmt(r.get('target_cost_fraction'), '.3f')} | {vs} "
            f"| {fmt(r.get('fit_seconds'), '.1f')} |"
        )
    return lines


def percentiles(samples: list[float]) -> tuple[float, float]:
    arr = np.array(samples) * 1e3
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def latency_table(
    name: str, dataset, routers: list[str], featurizer: str, n: int = 300
) -> list[str]:
    train, test = train_test(dataset)
    prompts = test.prompts[:n]
    lines = [
        f"### {name}: decision latency, featurizer {featurizer}, {len(prompts)} test prompts, "
        "one thread (ms)",
        "",
        "| router | precomputed p50 | precomputed p99 | end-to-end p50 | end-to-end p99 "
        "| featurizer alone p50 | end-to-end / featurizer | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    feat = make_featurizer(featurizer).fit(train.prompts)
    X = feat.transform(prompts)
    cached = CachedFeaturizer(feat, max_entries=len(train) + 1)
    cached.transform(train.prompts)
    for router in routers:
        # Train on cached features (train s = quality model + out-of-fold calibration only),
        # then time decisions with the plain featurizer, as a gateway would run them.
        learned = LearnedRouter(cached, make_quality_model(router))
        started = time.perf_counter()
        learned.fit(train, fit_featurizer=False)
        train_s = time.perf_counter() - started
        learned.featurizer = feat
        cost = learned.predict_cost(prompts)
        models = learned.models_
        pre, e2e, alone = [], [], []
        for i, prompt in enumerate(prompts):
            # Interleaved so the three timings see the same machine load.
            t0 = time.perf_counter()
            q = learned.quality_model.predict(X[i : i + 1])[0]
            decide(models, models, q, cost[i], 0.0)
            t1 = time.perf_counter()
            learned.route(prompt)
            t2 = time.perf_counter()
            feat.transform([prompt])
            t3 = time.perf_counter()
            pre.append(t1 - t0)
            e2e.append(t2 - t1)
            alone.append(t3 - t2)
        p50, p99 = percentiles(pre)
        e50, e99 = percentiles(e2e)
        f50, _ = percentiles(alone)
        lines.append(
            f"| {router} | {p50:.3f} | {p99:.3f} | {e50:.3f} | {e99:.3f} "
            f"| {f50:.3f} | {statistics.median(e2e) / statistics.median(alone):.2f} "
            f"| {train_s:.1f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        type=Path,
        default=Path(os.environ.get("ROUTEIQ_DATASETS", "../shared/datasets")),
    )
    parser.add_argument("--featurizers", default="lexical")
    parser.add_argument("--routers", default="all")
    parser.add_argument(
        "--context",
        default="",
        help="Context fields to blend in too, e.g. task (default none).",
    )
    parser.add_argument("--latency-featurizers", default="lexical,minilm")
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="Skip the quality tables (for a rerun on a quiet machine).",
    )
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    routers = list(ALL_ROUTERS) if args.routers == "all" else args.routers.split(",")
    out: list[str] = []
    for name, rel in DATASETS.items():
        dataset = load_dataset(args.datasets / rel)
        for featurizer in [] if args.latency_only else args.featurizers.split(","):
            label = f"{name}/{featurizer}"
            summary = run_evaluation(
                dataset,
                featurizer=featurizer,
                routers=routers,
                context=[f for f in args.context.split(",") if f],
                on_step=lambda r, label=label: print(f"  {label}: {r}", flush=True),
            )
            block = quality_table(name, summary)
            print("\n".join(block), "\n", flush=True)
            out += [*block, ""]
        for featurizer in [f for f in args.latency_featurizers.split(",") if f]:
            block = latency_table(name, dataset, routers, featurizer)
            print("\n".join(block), "\n", flush=True)
            out += [*block, ""]
    if args.markdown:
        args.markdown.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
