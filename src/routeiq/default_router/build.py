"""Build the packaged default router from the public RouterBench subset, reproducibly.

    python -m routeiq.default_router.build \\
        --data ../shared/datasets/routerbench/routerbench_0shot_arc_mbpp_winogrande.csv \\
        --out src/routeiq/default_router/artifact

Same data + seed (+ routeiq version, which the artifact records) -> same digest. The router is
trained the way ``routeiq train`` trains (:func:`routeiq.evaluation.runner.build_router`, then
``fit`` on the train split and ``save``), on three of RouterBench's models, one per price tier
(:data:`TIERS`), with a smaller lexical featurizer so the artifact stays well under 1 MB.
``--evaluate`` then scores the built artifact on the held-out test split with the code of
``routeiq eval`` (:func:`routeiq.evaluation.report.evaluate`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from routeiq.data.dataset import DataError, RoutingDataset

# One RouterBench model per price tier, priced roughly 60x apart end to end (mean $/query on
# the test split: 0.0050, 0.00042, 0.00008). Spread-out tiers make the price-nearest mapping
# of unseen deployments (routeiq.decision.unknown) land on the tier a deployment is priced in.
TIERS: tuple[str, ...] = ("gpt-4-1106-preview", "gpt-3.5-turbo-1106", "mistralai/mistral-7b-chat")
FEATURIZER = "lexical"
# 3,000 buckets x 64 dimensions in float16: about 0.4 MB (the default 30,000 x 192: 11 MB).
FEATURIZER_PARAMS: dict[str, Any] = {"n_components": 64, "max_vocab": 3000}
QUALITY_MODEL = "logistic"
# The artifact's own trade-off, used when the settings give no lambda or target.
TARGET = "quality>=0.95"


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_default_router` wrote."""

    path: Path
    digest: str
    n_train: int
    training_data_digest: str


def tier_dataset(data: RoutingDataset, tiers: Sequence[str] = TIERS) -> RoutingDataset:
    """``data`` restricted to the ``tiers`` models (in that order)."""
    missing = [m for m in tiers if m not in data.models]
    if missing:
        raise DataError(
            f"the data has no column for {missing} (models: {data.models}); the default "
            "router is built from the RouterBench subset"
        )
    cols = [data.models.index(m) for m in tiers]
    return RoutingDataset(
        prompts=list(data.prompts),
        models=list(tiers),
        quality=data.quality[:, cols],
        cost=data.cost[:, cols],
        ids=list(data.ids),
        tasks=list(data.tasks),
        splits=list(data.splits),
    )


def training_rows(data: RoutingDataset, max_rows: int | None = None) -> RoutingDataset:
    """The train split, or its first ``max_rows`` rows (a quick build, e.g. in tests)."""
    train = data.split("train")
    if max_rows is not None:
        if max_rows < 50:
            raise ValueError(f"max_train_rows must be at least 50, got {max_rows}")
        train = train.subset(np.arange(min(max_rows, len(train))))
    return train


def build_default_router(
    data_path: str | Path,
    out: str | Path,
    *,
    seed: int = 0,
    max_train_rows: int | None = None,
) -> BuildResult:
    """Train the default router on ``data_path``'s train split and write it to ``out``."""
    from routeiq.data import load_dataset
    from routeiq.evaluation.runner import build_router
    from routeiq.features import make_featurizer

    featurizer = make_featurizer(FEATURIZER, random_state=seed, **FEATURIZER_PARAMS)
    learned = build_router(featurizer, QUALITY_MODEL, target=TARGET)
    learned.random_state = seed  # the cross-validation folds of the calibration
    train = training_rows(tier_dataset(load_dataset(data_path)), max_train_rows)
    learned.fit(train)
    digest = learned.save(out)
    return BuildResult(Path(out), digest, len(train), learned.training_digest_)


def evaluate_default_router(data_path: str | Path, artifact: str | Path) -> dict[str, Any]:
    """The artifact on the held-out test split (prompts not in train) vs the single models."""
    from routeiq.data import load_dataset
    from routeiq.decision.choice import choose
    from routeiq.evaluation.report import evaluate
    from routeiq.evaluation.runner import train_test
    from routeiq.router import LearnedRouter

    learned = LearnedRouter.load(artifact)
    _, test = train_test(tier_dataset(load_dataset(data_path), learned.models_))
    P, C_hat = learned.predict_quality(test.prompts), learned.predict_cost(test.prompts)
    models = list(learned.models_)
    report = evaluate(
        test.quality, test.cost, {"default": (P, C_hat)}, models=models, pair=(TIERS[0], TIERS[-1])
    )
    row = report.routers["default"]
    best = models.index(report.best_single)
    chosen = choose(P, C_hat, learned.lam)[0]
    at = np.arange(len(test))
    best_cost = float(test.cost[:, best].mean())
    shares = np.bincount(chosen, minlength=len(models)) / len(test)
    return {
        "n_test": len(test),
        "best_single": report.best_single,
        "best_single_quality": float(test.quality[:, best].mean()),
        "best_single_cost": best_cost,
        "aiq": row.aiq,
        "apgr": row.apgr,
        "cost_to_match_best": row.cost_to_match_best,
        "lambda": learned.lam,
        "quality": float(test.quality[at, chosen].mean()),
        "cost": float(test.cost[at, chosen].mean()),
        "cost_fraction": float(test.cost[at, chosen].mean()) / best_cost,
        "shares": {m: float(s) for m, s in zip(models, shares, strict=True)},
    }


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    data: Annotated[
        Path | None,
        typer.Option(help="RouterBench CSV (default: $ROUTEIQ_DATASETS/routerbench/...)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Artifact directory (default: the packaged one).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the featurizer and the CV folds.")] = 0,
    max_train_rows: Annotated[
        int | None, typer.Option(help="Train on the first N train rows only (quick builds).")
    ] = None,
    do_evaluate: Annotated[
        bool, typer.Option("--evaluate/--no-evaluate", help="Score it on the test split.")
    ] = True,
) -> None:
    """Build (and evaluate) the default router artifact."""
    from routeiq.cli.common import console, default_dataset, user_errors
    from routeiq.default_router import ARTIFACT_DIR

    data_path = data or default_dataset()
    target = out or Path(__file__).resolve().parent / ARTIFACT_DIR
    with user_errors():
        started = time.perf_counter()
        result = build_default_router(data_path, target, seed=seed, max_train_rows=max_train_rows)
        seconds = time.perf_counter() - started
        size = sum(f.stat().st_size for f in target.iterdir())
        console.print(
            f"wrote {target}: digest {result.digest}, {size / 1e6:.2f} MB, "
            f"{result.n_train} train prompts, {seconds:.1f} s",
            highlight=False,
        )
        if do_evaluate:
            ev = evaluate_default_router(data_path, target)
            console.print(
                f"test split ({ev['n_test']} prompts): best single {ev['best_single']} quality "
                f"{ev['best_single_quality']:.4f} at ${ev['best_single_cost']:.6f}/query; "
                f"default router at its lambda {ev['lambda']:.4g}: quality {ev['quality']:.4f} "
                f"at {ev['cost_fraction']:.3f} of its cost (shares "
                + ", ".join(f"{m} {s:.2f}" for m, s in ev["shares"].items())
                + f"); AIQ {ev['aiq']:.4f}, APGR {ev['apgr']:.3f}, $ to match best "
                + ("-" if ev["cost_to_match_best"] is None else f"{ev['cost_to_match_best']:.3f}"),
                highlight=False,
            )


if __name__ == "__main__":
    app()
