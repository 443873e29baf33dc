"""Off-policy evaluation on simulated gateway logs from both shared datasets, against the truth.

    python bench/ope.py [--datasets ../shared/datasets] [--seeds 100] [--n 5000]

Per dataset: a logging router (lexical + logistic, trained on the train split, lambda
calibrated to "quality>=1.0") serves ``--n`` requests drawn from the test split with the
default safe exploration; only the chosen model's outcome is revealed, as a gateway log
would have it (:func:`routeiq.evaluation.replay.simulate_log`). A new policy (lexical + kNN,
same lambda, greedy) is then estimated from that log with IPS, SNIPS, DM and DR
(:func:`routeiq.evaluation.replay.evaluate_log`) and compared with its true mean utility,
computed from the full quality and cost matrix. Prints, per estimator, the median relative
error, the share of seeds within 3% and the share whose 95% interval covers the truth.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from routeiq.data.loaders import load_dataset
from routeiq.decision.exploration import Exploration
from routeiq.evaluation.ope import ESTIMATORS
from routeiq.evaluation.replay import LoggedRequest, evaluate_log, policy, simulate_log
from routeiq.evaluation.runner import build_router, train_test
from routeiq.features import make_featurizer
from routeiq.features.cache import CachedFeaturizer

DATASETS = {
    "routerbench": "routerbench/routerbench_0shot_arc_mbpp_winogrande.csv",
    "llmrouter": "llmrouter/llmrouter_dc_scores.csv",
}


def run(name: str, path: Path, seeds: int, n: int, n_bootstrap: int) -> list[str]:
    dataset = load_dataset(path)
    train, test = train_test(dataset)
    feat = make_featurizer("lexical").fit(train.prompts)
    cached = CachedFeaturizer(feat, max_entries=len(train) + len(test) + 1)
    logging_router = build_router(cached, "logistic", target="quality>=1.0")
    logging_router.fit(train, fit_featurizer=False)
    lam, _ = logging_router.tradeoff()
    new_router = build_router(cached, "knn", lam=lam).fit(train, fit_featurizer=False)
    explore = Exploration(mode="epsilon")
    truths = []
    errors: dict[str, list[float]] = {k: [] for k in ESTIMATORS}
    covered: dict[str, int] = dict.fromkeys(ESTIMATORS, 0)
    ess, explored, unsupported, started = [], [], [], time.perf_counter()
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        rows = rng.integers(0, len(test), n)
        sample = test.subset(rows)
        # Distinct ids per draw, so exploration draws differ between repeated prompts.
        sample = type(sample)(
            prompts=sample.prompts,
            models=sample.models,
            quality=sample.quality,
            cost=sample.cost,
            ids=[f"{seed}-{k}" for k in range(n)],
        )
        log = simulate_log(
            sample, logging_router, exploration=explore.model_copy(update={"seed": seed})
        )
        explored.append(
            np.mean([r["decision"]["greedy"] != r["decision"]["deployment"] for r in log])
        )
        report = evaluate_log(log, new_router, n_bootstrap=n_bootstrap, seed=seed)
        requests = [
            LoggedRequest(sample.ids[i], sample.prompts[i], sample.models, list(sample.cost[i]))
            for i in range(n)
        ]
        decisions = policy(new_router, requests)
        picks = np.array([sample.models.index(d.model) for d in decisions])
        q = sample.quality[np.arange(n), picks]
        c = sample.cost[np.arange(n), picks]
        truth = float(np.mean(q - report["lambda"] * c))
        res = report["utility"]
        ess.append(res.ess)
        unsupported.append(res.unsupported)
        for k, est in res.estimates.items():
            errors[k].append(abs(est.value - truth) / abs(truth))
            covered[k] += est.low <= truth <= est.high
        truths.append(truth)
    seconds = time.perf_counter() - started
    lines = [
        f"### {name}: {seeds} seeds x {n} logged decisions; logging lexical+logistic "
        f"(lambda {lam:.4g}, epsilon 0.05, margin 0.05), new policy lexical+kNN greedy",
        "",
        f"true new-policy utility: mean {statistics.fmean(truths):.4f}; explored share "
        f"{statistics.fmean(explored):.3f}; ESS median {statistics.median(ess):.0f} of {n}; "
        f"new-policy mass without logged support {statistics.fmean(unsupported):.3f}; "
        f"{seconds / seeds:.1f} s per seed",
        "",
        "| estimator | median rel. error | seeds within 3% | 95% interval covers truth |",
        "|---|---|---|---|",
    ]
    for k in ESTIMATORS:
        if errors[k]:
            lines.append(
                f"| {k} | {statistics.median(errors[k]):.4f} "
                f"| {np.mean(np.array(errors[k]) <= 0.03):.2f} | {covered[k] / seeds:.2f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--n", type=int, default=5000, help="logged decisions per seed")
    parser.add_argument("--bootstrap", type=int, default=300)
    args = parser.parse_args()
    for name, rel in DATASETS.items():
        print("\n".join(run(name, args.datasets / rel, args.seeds, args.n, args.bootstrap)))
        print()


if __name__ == "__main__":
    main()
