"""Reports: headline numbers per router and baseline on one fully labelled test set."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from routeiq.decision.choice import best_single, cheapest_single
from routeiq.evaluation.metrics import (
    Curve,
    _matrix,
    _num,
    _truth,
    aiq,
    cost_range,
    oracle_point,
    single_models,
    sweep,
)
from routeiq.evaluation.two_model import two_model_curve


@dataclass
class RouterReport:
    """Headline numbers for one router (or baseline). Costs are mean USD per request.

    ``cost_to_match_best`` is the least cost at which the frontier reaches the best single
    model's quality, as a fraction of that model's cost (None if never reached). The two-model
    fields are None unless a strong/weak pair was evaluated.
    """

    name: str
    aiq: float | None
    log_aiq: float | None
    best_quality: float
    best_quality_cost: float
    min_cost: float
    cost_to_match_best: float | None
    apgr: float | None = None
    cpt50: float | None = None
    cpt80: float | None = None
    curve: Curve | None = field(default=None, repr=False)

    def to_dict(self, include_curve: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "aiq": _num(self.aiq),
            "log_aiq": _num(self.log_aiq),
            "best_quality": _num(self.best_quality),
            "best_quality_cost": _num(self.best_quality_cost),
            "min_cost": _num(self.min_cost),
            "cost_to_match_best": _num(self.cost_to_match_best),
            "apgr": _num(self.apgr),
            "cpt50": _num(self.cpt50),
            "cpt80": _num(self.cpt80),
        }
        if include_curve and self.curve is not None:
            out["curve"] = self.curve.to_dict()
            out["frontier"] = self.curve.frontier().to_dict()
        return out


def _auto_pair(
    Q: np.ndarray, C: np.ndarray, pair: tuple[int, int] | None
) -> tuple[int, int] | None:
    m = Q.shape[1]
    if pair is not None:
        s, w = (int(pair[0]), int(pair[1]))
        if not (0 <= s < m and 0 <= w < m) or s == w:
            raise ValueError(f"invalid strong/weak pair {pair} for {m} models")
        return s, w
    if m != 2:
        return None
    s = best_single(Q, C)
    return s, 1 - s


def _index(model: int | str, names: Sequence[str]) -> int:
    if isinstance(model, int | np.integer):
        return int(model)
    if model not in names:
        raise ValueError(f"unknown model {model!r} in pair; models are {list(names)}")
    return list(names).index(model)


def report_curve(
    name: str,
    curve: Curve,
    Q: Any,
    C: Any,
    *,
    score: Any = None,
    pair: tuple[int, int] | None = None,
) -> RouterReport:
    """Report for an already computed curve. ``score`` (n,) ranks rows for the strong model of
    ``pair`` (default for m == 2: strong = best single model); None skips two-model metrics."""
    Q, C = _truth(Q, C)
    lo, hi = cost_range(Q, C)
    best = best_single(Q, C)
    front = curve.frontier()
    # Same reductions as single_models/cost_range, so the best model's own point matches exactly.
    reach = front.cost_to_reach(float(Q.mean(axis=0)[best]))
    best_cost = float(C.mean(axis=0)[best])
    if reach is None:
        match = None
    elif best_cost > 0:
        match = reach / best_cost
    else:
        match = 0.0 if reach == 0 else None
    report = RouterReport(
        name=name,
        aiq=aiq(curve, (lo, hi)),
        log_aiq=aiq(curve, (lo, hi), log_cost=True),
        best_quality=front.best_quality,
        best_quality_cost=front.best_quality_cost,
        min_cost=float(curve.cost.min()),
        cost_to_match_best=match,
        curve=curve,
    )
    sw = _auto_pair(Q, C, pair)
    if sw is not None and score is not None:
        tm = two_model_curve(score, Q[:, sw[0]], Q[:, sw[1]])
        report.apgr, report.cpt50, report.cpt80 = tm.apgr(), tm.cpt(0.5), tm.cpt(0.8)
    return report


def evaluate_router(
    name: str,
    P: Any,
    C_hat: Any,
    Q: Any,
    C: Any,
    *,
    pair: tuple[int, int] | None = None,
    lambdas: Any = None,
    n_lambdas: int = 200,
) -> RouterReport:
    """Sweep a router's predictions and report it. Two-model metrics use ``P[:, s] - P[:, w]``."""
    Q, C = _truth(Q, C)
    P = _matrix("P (predicted quality)", P, Q.shape)
    curve = sweep(P, C_hat, Q, C, lambdas, n_lambdas=n_lambdas)
    sw = _auto_pair(Q, C, pair)
    score = None if sw is None else P[:, sw[0]] - P[:, sw[1]]
    return report_curve(name, curve, Q, C, score=score, pair=sw)


@dataclass
class EvaluationReport:
    """Routers and baselines on one test set. ``singles`` maps model -> (mean cost, quality)."""

    models: list[str]
    n_rows: int
    cost_range: tuple[float, float]
    singles: dict[str, tuple[float, float]]
    best_single: str
    cheapest_single: str
    oracle: tuple[float, float]
    pair: tuple[str, str] | None
    baselines: dict[str, RouterReport]
    routers: dict[str, RouterReport]

    def to_dict(self, include_curves: bool = True) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "n_rows": int(self.n_rows),
            "cost_range": [float(v) for v in self.cost_range],
            "singles": {
                k: {"cost": float(c), "quality": float(q)} for k, (c, q) in self.singles.items()
            },
            "best_single": self.best_single,
            "cheapest_single": self.cheapest_single,
            "oracle": {"cost": float(self.oracle[0]), "quality": float(self.oracle[1])},
            "pair": None if self.pair is None else {"strong": self.pair[0], "weak": self.pair[1]},
            "baselines": {k: r.to_dict(include_curves) for k, r in self.baselines.items()},
            "routers": {k: r.to_dict(include_curves) for k, r in self.routers.items()},
        }


def evaluate(
    Q: Any,
    C: Any,
    routers: Mapping[str, tuple[Any, Any]],
    *,
    models: Sequence[str] | None = None,
    pair: tuple[int | str, int | str] | None = None,
    lambdas: Any = None,
    n_lambdas: int = 200,
) -> EvaluationReport:
    """Evaluate routers given as ``name -> (P, C_hat)`` against the truth, with baselines.

    Baselines: ``random_mixture`` (the hull of the single models; APGR 0.5 by construction) and
    ``oracle`` (the sweep of the true values: its lambda = 0 point is per row the cheapest best
    model). ``pair`` = (strong, weak) by name or index; default for m == 2: strong = best single.
    """
    Q, C = _truth(Q, C)
    n, m = Q.shape
    names = [f"model_{j}" for j in range(m)] if models is None else [str(x) for x in models]
    if len(names) != m or len(set(names)) != m:
        raise ValueError(f"models must be {m} distinct names, got {names}")
    idx = None if pair is None else (_index(pair[0], names), _index(pair[1], names))
    sw = _auto_pair(Q, C, idx)
    singles = single_models(Q, C)
    baselines = {
        "random_mixture": report_curve("random_mixture", singles, Q, C, score=np.zeros(n), pair=sw),
        "oracle": evaluate_router(
            "oracle", Q, C, Q, C, pair=sw, lambdas=lambdas, n_lambdas=n_lambdas
        ),
    }
    reports = {
        name: evaluate_router(name, P, C_hat, Q, C, pair=sw, lambdas=lambdas, n_lambdas=n_lambdas)
        for name, (P, C_hat) in routers.items()
    }
    return EvaluationReport(
        models=names,
        n_rows=n,
        cost_range=cost_range(Q, C),
        singles={
            k: (float(c), float(q))
            for k, c, q in zip(names, singles.cost, singles.quality, strict=True)
        },
        best_single=names[best_single(Q, C)],
        cheapest_single=names[cheapest_single(Q, C)],
        oracle=oracle_point(Q, C),
        pair=None if sw is None else (names[sw[0]], names[sw[1]]),
        baselines=baselines,
        routers=reports,
    )
