"""Train routers on a train split, evaluate them on the test split, write JSON and a PNG."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from routeiq.data.dataset import DataError, RoutingDataset
from routeiq.decision.choice import best_single, cheapest_single, choose
from routeiq.evaluation.frontier import plot_report
from routeiq.evaluation.paired import aiq_difference
from routeiq.evaluation.report import evaluate
from routeiq.evaluation.task_lookup import task_lookup
from routeiq.features import make_featurizer
from routeiq.features.base import Featurizer
from routeiq.features.cache import CachedFeaturizer
from routeiq.features.context import check_fields
from routeiq.quality import make_quality_model, quality_model_names
from routeiq.quality.context import ContextModel
from routeiq.router import LearnedRouter

ALL_ROUTERS = tuple(quality_model_names())
TASK_LOOKUP = "task lookup (baseline)"


def task_lookup_applies(train: RoutingDataset, test: RoutingDataset) -> bool:
    """Whether the data names a task per row, with more than one task (the lookup baseline)."""
    return bool(train.tasks) and bool(test.tasks) and len(set(train.tasks)) > 1


def build_router(
    featurizer: str | Featurizer,
    router: str,
    *,
    lam: float = 0.0,
    target: str | None = None,
    context: Sequence[str] = (),
) -> LearnedRouter:
    """A LearnedRouter from registry names with default (cross-validated) parameters;
    ``context`` names the request-context fields it learns from (none: text only)."""
    feat = make_featurizer(featurizer) if isinstance(featurizer, str) else featurizer
    ctx = context_model(context)
    return LearnedRouter(feat, make_quality_model(router), lam=lam, target=target, context=ctx)


def context_model(fields: Sequence[str]) -> ContextModel | None:
    """The context model for ``fields`` (None for none). A ``task`` is also read from the
    text when a request does not name one: gateway traffic rarely does, and the text says it."""
    names = check_fields(fields)
    if not names:
        return None
    return ContextModel(names, impute=["task"] if "task" in names else [])


def default_context(dataset: RoutingDataset) -> tuple[str, ...]:
    """``routeiq train``'s context when none is asked for: the task, when the data names
    more than one (a task prior that serving reads from the text), else none."""
    return ("task",) if len(set(dataset.tasks)) > 1 else ()


def train_test(dataset: RoutingDataset) -> tuple[RoutingDataset, RoutingDataset]:
    """The train split and the fully labelled test rows whose prompt is not in train."""
    if dataset.features is not None:
        raise DataError(
            "the data holds logged feature vectors (log_prompt: features), not prompts: "
            "routeiq eval featurizes text; train on them with routeiq train --featurizer-from"
        )
    train = dataset.split("train").labelled()
    test = dataset.split("test").without_prompts_in(train)
    unpriced = [m for j, m in enumerate(dataset.models) if np.isnan(test.cost[:, j]).all()]
    if unpriced and len(test):
        raise DataError(
            f"no cost for model(s) {', '.join(unpriced)} on any test row: price them with "
            "--prices (an LLMRouter-style JSON of input_price/output_price in USD per "
            "million tokens) or give each row a cost column"
        )
    complete = ~(np.isnan(test.quality).any(axis=1) | np.isnan(test.cost).any(axis=1))
    test = test.subset(np.flatnonzero(complete))
    if len(test) == 0:
        raise DataError("no fully labelled test rows left after removing prompts seen in train")
    return train, test


def run_evaluation(
    dataset: RoutingDataset,
    *,
    featurizer: str = "lexical",
    routers: Sequence[str] = ALL_ROUTERS,
    target: str | None = "quality>=1.0",
    out_dir: Path | None = None,
    pair: tuple[str, str] | None = None,
    on_step: Callable[[str], None] | None = None,
    context: Sequence[str] = (),
    n_boot: int = 300,
) -> dict[str, Any]:
    """Fit each router on train, sweep lambda on test; return rows for a table plus the report.

    ``context`` (field names, e.g. ``["task"]``) adds two rows per router: ``<router> +
    context`` (the same text model with a :class:`~routeiq.quality.context.ContextModel`
    blended in, the test rows' context read) and ``<router> + <fields> prior`` (trained with
    the context, tested on text only: the fields imputed from the text).
    With a task column every row gets its AIQ difference to the task lookup and a paired
    bootstrap interval (``n_boot`` resamples).
    """
    train, test = train_test(dataset)
    models = list(dataset.models)
    if pair is None and len(models) > 2:
        # RouteLLM-style two-model view: the best single model on train vs the cheapest.
        pair = (
            models[best_single(train.quality, train.cost)],
            models[cheapest_single(train.quality, train.cost)],
        )
    # Room for every prompt: one embedding per prompt however many routers are compared.
    feat = CachedFeaturizer(make_featurizer(featurizer), max_entries=len(train) + len(test) + 1)
    feat.fit(train.prompts)
    feat.transform(train.prompts + test.prompts)  # warm the cache once for every router
    predictions: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    extra: dict[str, dict[str, Any]] = {}
    Q, C = test.quality, test.cost
    best = best_single(Q, C)
    names: list[str] = []
    fields = check_fields(context)
    test_contexts = test.context_rows() if fields else None

    def add(name: str, learned: LearnedRouter, seconds: float, contexts: Any = None) -> None:
        P = learned.predict_quality(test.prompts, contexts)
        C_hat = learned.predict_cost(test.prompts)
        predictions[name] = (P, C_hat)
        names.append(name)
        row: dict[str, Any] = {"fit_seconds": seconds}
        if target:
            row.update(_target_row(learned, target, P, C_hat, Q, C, best))
        extra[name] = row

    for name in routers:
        if on_step:
            on_step(name)
        started = time.perf_counter()
        learned = LearnedRouter(feat, make_quality_model(name)).fit(train, fit_featurizer=False)
        add(name, learned, time.perf_counter() - started)
        if fields:
            started = time.perf_counter()
            with_ctx = learned.with_context(ContextModel(fields), train)
            add(f"{name} + context", with_ctx, time.perf_counter() - started, test_contexts)
            # Text only at test: the context read from the text (imputed), trained on it.
            started = time.perf_counter()
            prior = learned.with_context(ContextModel(fields, impute=fields), train)
            add(f"{name} + {'/'.join(fields)} prior", prior, time.perf_counter() - started)
    if task_lookup_applies(train, test):
        started = time.perf_counter()
        predictions[TASK_LOOKUP] = task_lookup(train.tasks, train.quality, train.cost, test.tasks)
        extra[TASK_LOOKUP] = {"fit_seconds": time.perf_counter() - started}
        names.append(TASK_LOOKUP)
        for name in names[:-1]:
            diff = aiq_difference(Q, C, predictions[name], predictions[TASK_LOOKUP], n_boot=n_boot)
            extra[name]["aiq_vs_task_lookup"] = list(diff)
    report = evaluate(Q, C, predictions, models=models, pair=pair)
    data = report.to_dict(include_curves=True)
    rows = []
    for name in names:
        r = data["routers"][name]
        rows.append(
            {
                "router": name,
                "aiq": r["aiq"],
                "log_aiq": r["log_aiq"],
                "best_quality": r["best_quality"],
                "best_quality_cost": r["best_quality_cost"],
                "cost_to_match_best_fraction": r["cost_to_match_best"],
                "apgr": r["apgr"],
                "cpt50": r["cpt50"],
                "cpt80": r["cpt80"],
                **extra[name],
            }
        )
    for base, label in (
        ("random_mixture", "random mixture (single-model hull)"),
        ("oracle", "oracle (evaluation only)"),
    ):
        b = data["baselines"][base]
        rows.append(
            {
                "router": label,
                "aiq": b.get("aiq"),
                "log_aiq": b.get("log_aiq"),
                "best_quality": b.get("best_quality"),
                "best_quality_cost": b.get("best_quality_cost"),
                "cost_to_match_best_fraction": b.get("cost_to_match_best"),
            }
        )
    best_name, cheap_name = models[best], models[cheapest_single(Q, C)]
    title = f"{len(train)} train / {len(test)} test prompts, featurizer {featurizer}"
    if fields:
        title += f", context {','.join(fields)}"
    summary: dict[str, Any] = {
        "title": title,
        "note": (
            f"best single model {best_name}: quality {Q[:, best].mean():.4f} at "
            f"${C[:, best].mean():.6f}/query; cheapest {cheap_name}: quality "
            f"{Q[:, cheapest_single(Q, C)].mean():.4f}. Target {target} is calibrated on "
            "out-of-fold predictions over train and measured on test."
        ),
        "featurizer": featurizer,
        "context": list(fields),
        "n_train": len(train),
        "n_test": len(test),
        "rows": rows,
        "report": data,
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / f".report.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(summary, indent=1, allow_nan=False))
        os.replace(tmp, out_dir / "report.json")
        plot_report(report, out_dir / "frontier.png", title=title)
    return summary


def _target_row(
    learned: LearnedRouter,
    target: str,
    P: np.ndarray,
    C_hat: np.ndarray,
    Q: np.ndarray,
    C: np.ndarray,
    best: int,
) -> dict[str, Any]:
    """The calibrated target's lambda (on train) and what it achieved on test."""
    cal = learned.calibrate(target)
    chosen = choose(P, C_hat, cal.lam)[0]
    at = np.arange(len(Q))
    return {
        "target": str(cal.target),
        "target_lambda": cal.lam,
        "target_met_on_train": cal.met,
        "target_quality": float(Q[at, chosen].mean()),
        "target_cost": float(C[at, chosen].mean()),
        "target_cost_fraction": float(C[at, chosen].mean() / C[:, best].mean()),
    }
