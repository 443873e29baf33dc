"""Do calibrated targets hold on the unseen test split? Mean vs robust calibration.

    python bench/calibration.py [--datasets ../shared/datasets] [--routers ensemble,knn,logistic]
                                [--targets quality>=1.0,quality>=0.95] [--featurizer lexical]

For each shared dataset and router: train on the train split (``routeiq eval``'s split: test
prompts seen in train removed, fully labelled test rows only), calibrate each target on the
out-of-fold predictions over train twice, on the mean (``confidence=None``, the method before
robust calibration) and robustly (the default confidence, resampled task mixes), then apply
each lambda to the test split with the evaluation's own sweep. "target" is the fraction times
the best single model's test quality, as ``routeiq eval`` measures it; "$ frac" the mean test
cost as a fraction of the best single model's. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from routeiq.data.loaders import load_dataset
from routeiq.decision import best_single, parse_target
from routeiq.decision.calibrate import DEFAULT_CONFIDENCE
from routeiq.decision.targets import QualityTarget
from routeiq.evaluation.metrics import sweep
from routeiq.evaluation.runner import train_test
from routeiq.features import make_featurizer
from routeiq.features.cache import CachedFeaturizer
from routeiq.quality import make_quality_model
from routeiq.router import LearnedRouter

DATASETS = {
    "routerbench": "routerbench/routerbench_0shot_arc_mbpp_winogrande.csv",
    "llmrouter": "llmrouter/llmrouter_dc_scores.csv",
}
METHODS = {"mean (old)": None, f"robust {DEFAULT_CONFIDENCE:g} (new)": DEFAULT_CONFIDENCE}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        type=Path,
        default=Path(os.environ.get("ROUTEIQ_DATASETS", "../shared/datasets")),
    )
    parser.add_argument("--routers", default="ensemble,knn,logistic")
    parser.add_argument("--targets", default="quality>=1.0,quality>=0.95")
    parser.add_argument("--featurizer", default="lexical")
    args = parser.parse_args()
    targets = [parse_target(t) for t in args.targets.split(",")]
    print(
        "| dataset | router | target | calibration | lambda | met on train | test quality "
        "| target value | diff | $ frac of best single |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, rel in DATASETS.items():
        train, test = train_test(load_dataset(args.datasets / rel))
        Q, C = test.quality, test.cost
        best = best_single(Q, C)
        best_q, best_c = float(Q[:, best].mean()), float(C[:, best].mean())
        feat = CachedFeaturizer(
            make_featurizer(args.featurizer), max_entries=len(train) + len(test) + 1
        )
        feat.fit(train.prompts)
        for router in args.routers.split(","):
            started = time.perf_counter()
            learned = LearnedRouter(feat, make_quality_model(router))
            learned.fit(train, fit_featurizer=False)
            P, C_hat = learned.predict_quality(test.prompts), learned.predict_cost(test.prompts)
            for target in targets:
                for label, confidence in METHODS.items():
                    cal = learned.calibrate(target, confidence=confidence)
                    point = sweep(P, C_hat, Q, C, lambdas=[cal.lam])
                    quality, cost = float(point.quality[0]), float(point.cost[0])
                    goal = target.fraction * best_q if isinstance(target, QualityTarget) else None
                    diff = "-" if goal is None else f"{quality - goal:+.4f}"
                    print(
                        f"| {name} | {router} | {target} | {label} | {cal.lam:.4g} "
                        f"| {'yes' if cal.met else 'no'} | {quality:.4f} "
                        f"| {'-' if goal is None else f'{goal:.4f}'} | {diff} "
                        f"| {cost / best_c:.3f} |",
                        flush=True,
                    )
            print(f"<!-- {name}/{router}: {time.perf_counter() - started:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
