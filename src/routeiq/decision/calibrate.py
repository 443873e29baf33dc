"""Fit lambda to an operator's target on calibration data.

Targets: :class:`QualityTarget` ("at least X of the best single model's quality", measured with
true quality), :class:`BudgetTarget` ("at most $Y per 1k requests") and
:class:`ExpensiveShareTarget` ("at most Z of calls to the most expensive model"). The best
single model is the one with the highest mean true quality on the calibration data; the most
expensive model the one with the highest mean cost there.

:func:`calibrate_lambda` evaluates every lambda of the sweep grid that evaluation uses
(:func:`routeiq.decision.choice.lambda_grid`: 0, one lambda per distinct set of choices or
quantiles of the switch points, inf) with the same choice kernel, and keeps the cheapest one
meeting the target. Realised true quality is not monotone in lambda on noisy data, so the
whole grid is scanned (no bisection). An unreachable target is not an error: the best
achievable lambda is returned with ``met=False`` and an explanation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from routeiq.decision.choice import best_single, choose, lambda_grid, nanmean, validate

# Floating-point slack when comparing realised means with a target.
_EPS = 1e-9


@dataclass(frozen=True)
class QualityTarget:
    """At least ``fraction`` of the best single model's (true) quality, e.g. 1.0 or 0.95."""

    fraction: float
    kind = "quality"

    def __post_init__(self) -> None:
        f = _number("QualityTarget.fraction", self.fraction)
        if not 0 < f <= 2:
            raise ValueError(
                f"QualityTarget.fraction must be in (0, 2], got {f} "
                "(1.0 = match the best single model, 0.95 = 95% of it)"
            )
        object.__setattr__(self, "fraction", f)

    def __str__(self) -> str:
        return f"quality>={self.fraction:g}"

    def describe(self) -> str:
        return f"at least {self.fraction:.0%} of the best single model's quality"

    def rule(self, lam: float) -> str:
        return (
            f"target: {self.fraction * 100:g}% of best single model quality, "
            f"calibrated lambda={lam:.6g}"
        )


@dataclass(frozen=True)
class BudgetTarget:
    """At most ``usd_per_1k`` dollars per 1,000 requests on average."""

    usd_per_1k: float
    kind = "budget"

    def __post_init__(self) -> None:
        v = _number("BudgetTarget.usd_per_1k", self.usd_per_1k)
        if v < 0:
            raise ValueError(f"BudgetTarget.usd_per_1k must be >= 0, got {v}")
        object.__setattr__(self, "usd_per_1k", v)

    def __str__(self) -> str:
        return f"budget<={self.usd_per_1k:g}"

    def describe(self) -> str:
        return f"at most ${self.usd_per_1k:g} per 1k requests"

    def rule(self, lam: float) -> str:
        return f"target: at most ${self.usd_per_1k:g} per 1k requests, calibrated lambda={lam:.6g}"


@dataclass(frozen=True)
class ExpensiveShareTarget:
    """At most ``max_share`` (0-1) of calls to the most expensive model."""

    max_share: float
    kind = "expensive"

    def __post_init__(self) -> None:
        v = _number("ExpensiveShareTarget.max_share", self.max_share)
        if not 0 <= v <= 1:
            raise ValueError(f"ExpensiveShareTarget.max_share must be in [0, 1], got {v}")
        object.__setattr__(self, "max_share", v)

    def __str__(self) -> str:
        return f"expensive<={self.max_share:g}"

    def describe(self) -> str:
        return f"at most {self.max_share:.0%} of calls to the most expensive model"

    def rule(self, lam: float) -> str:
        return (
            f"target: at most {self.max_share * 100:g}% of calls to the most expensive "
            f"model, calibrated lambda={lam:.6g}"
        )


Target = QualityTarget | BudgetTarget | ExpensiveShareTarget


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


_TARGET_RE = re.compile(
    r"^\s*(?P<kind>[a-z_]+)\s*(?P<op><=|>=|=<|=>|<|>|=)?\s*(?P<dollar>\$)?\s*"
    r"(?P<num>[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(?P<pct>%)?\s*$",
    re.IGNORECASE,
)
_FORMS = '"quality>=0.95" (or 95%), "budget<=0.5" (USD per 1k requests), "expensive<=0.2"'


def parse_target(text: str) -> Target:
    """Parse ``quality>=X``, ``budget<=Y`` or ``expensive<=Z`` (``%`` allowed on X and Z)."""
    if not isinstance(text, str):
        raise ValueError(f"target must be a string like {_FORMS}, got {text!r}")
    match = _TARGET_RE.match(text)
    if not match:
        raise ValueError(f"cannot parse target {text!r}; expected one of {_FORMS}")
    kind, op = match["kind"].lower(), match["op"]
    value = float(match["num"])
    want = {"quality": ">=", "budget": "<=", "expensive": "<="}.get(kind)
    if want is None:
        raise ValueError(f"unknown target {kind!r} in {text!r}; expected one of {_FORMS}")
    if op is None or op.replace("=<", "<=").replace("=>", ">=") != want:
        raise ValueError(
            f"target {text!r}: use {kind}{want}VALUE (a {kind} target is "
            f"{'a floor' if want == '>=' else 'a ceiling'})"
        )
    if match["dollar"] and kind != "budget":
        raise ValueError(f"target {text!r}: '$' only applies to budget")
    if match["pct"]:
        if kind == "budget":
            raise ValueError(f"target {text!r}: budget is in USD per 1k requests, not a percent")
        value /= 100.0
    if kind == "quality":
        return QualityTarget(value)
    if kind == "budget":
        return BudgetTarget(value)
    return ExpensiveShareTarget(value)


@dataclass(frozen=True, eq=False)
class Calibration:
    """The fitted lambda, whether the target was met, and what it achieved on the data."""

    lam: float
    met: bool
    target: Target
    metrics: dict[str, Any]
    explanation: str
    grid: np.ndarray = field(repr=False)
    curve: dict[str, np.ndarray] = field(repr=False)  # per grid point: quality, cost, ...

    @property
    def rule(self) -> str:
        """Rule text for :func:`routeiq.decision.decide`."""
        return self.target.rule(self.lam) + ("" if self.met else " (target not met)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "lambda": self.lam,
            "met": self.met,
            "target": str(self.target),
            "metrics": dict(self.metrics),
            "explanation": self.explanation,
        }


def calibrate_lambda(
    target: Target,
    predicted_quality: Any,
    cost: Any,
    true_quality: Any = None,
    *,
    models: Sequence[str] | None = None,
    n_points: int = 200,
) -> Calibration:
    """Pick lambda for ``target`` on calibration data (all arrays (n, m), cost in USD/request).

    ``true_quality`` (NaN = unobserved) is required for :class:`QualityTarget`, which uses only
    the fully labelled rows (the others are counted in ``metrics["n_dropped"]``). Budget and
    share targets use every row; their reported quality is over the labelled chosen pairs.
    ``models`` (names) only labels the metrics.
    """
    if not isinstance(target, QualityTarget | BudgetTarget | ExpensiveShareTarget):
        raise ValueError(
            f"target must be a QualityTarget, BudgetTarget or "
            f"ExpensiveShareTarget (see parse_target), got {target!r}"
        )
    pq, c, _ = validate(predicted_quality, cost)
    n_in = pq.shape[0]
    tq = None
    if true_quality is not None:
        tq = np.asarray(true_quality, dtype=np.float64)
        if tq.shape != pq.shape:
            raise ValueError(f"true_quality has shape {tq.shape}, expected {pq.shape}")
        if isinstance(target, QualityTarget):
            # The target is about realised quality: only fully labelled rows can measure it.
            keep = np.isfinite(tq).all(axis=1)
            pq, c, tq = pq[keep], c[keep], tq[keep]
    elif isinstance(target, QualityTarget):
        raise ValueError(
            "a quality target needs true_quality (labelled calibration data): "
            "it is measured with the true quality of the chosen models"
        )
    n = pq.shape[0]
    if n == 0:
        raise ValueError("no calibration rows (true_quality has a NaN in every row?)")

    if models is not None and len(models) != pq.shape[1]:
        raise ValueError(f"{len(models)} model names for {pq.shape[1]} columns")
    rows = np.arange(n)
    mean_cost = c.mean(axis=0)
    # Budget/share targets keep partially labelled rows; quality is then over labelled pairs.
    mean_q = nanmean(tq, axis=0) if tq is not None else pq.mean(axis=0)
    best = best_single(tq if tq is not None else pq, c)
    expensive = int(np.argmax(mean_cost))

    grid = lambda_grid(pq, c, n_points)
    chosen = choose(pq, c, grid)  # (grid, rows): the kernel evaluation sweeps with
    curve = {
        "cost": c[rows, chosen].mean(axis=1),
        "predicted_quality": pq[rows, chosen].mean(axis=1),
        "quality": nanmean(tq[rows, chosen], axis=1)
        if tq is not None
        else np.full(grid.size, np.nan),
        "expensive_share": (chosen == expensive).mean(axis=1),
    }

    best_q = float(mean_q[best])
    if isinstance(target, QualityTarget):
        goal = target.fraction * best_q
        ok = curve["quality"] >= goal - _EPS
        # Cost falls as lambda grows, so the largest feasible lambda is the cheapest.
        pick = int(np.flatnonzero(ok)[-1]) if ok.any() else _last_argmax(curve["quality"])
        goal_text = f"true quality >= {goal:.4f} ({target.fraction:g} x {best_q:.4f})"
    elif isinstance(target, BudgetTarget):
        goal = target.usd_per_1k / 1000.0
        ok = curve["cost"] <= goal * (1 + _EPS) + 1e-15
        pick = int(np.flatnonzero(ok)[0]) if ok.any() else _last_argmax(-curve["cost"])
        goal_text = f"mean cost <= ${target.usd_per_1k:g} per 1k requests"
    else:
        goal = target.max_share
        ok = curve["expensive_share"] <= goal + _EPS
        share = curve["expensive_share"]
        pick = int(np.flatnonzero(ok)[0]) if ok.any() else _last_argmax(-share)
        goal_text = f"share of calls to the most expensive model <= {goal:.1%}"
    met = bool(ok.any())
    lam = float(grid[pick])

    best_cost = float(mean_cost[best])
    metrics: dict[str, Any] = {
        "quality": _opt(curve["quality"][pick]),
        "predicted_quality": float(curve["predicted_quality"][pick]),
        "cost_per_request": float(curve["cost"][pick]),
        "usd_per_1k": float(curve["cost"][pick] * 1000.0),
        "expensive_share": float(curve["expensive_share"][pick]),
        "expensive_model": str(models[expensive]) if models is not None else expensive,
        "best_single_model": str(models[best]) if models is not None else best,
        "best_single_quality": _opt(best_q) if tq is not None else None,
        "best_single_cost_per_request": best_cost,
        "cost_vs_best_single": float(curve["cost"][pick] / best_cost) if best_cost > 0 else None,
        "goal": float(goal),
        "n_rows": n,
        "n_dropped": n_in - n,
        "grid_size": int(grid.size),
    }
    achieved = (
        f"lambda={lam:.6g}: mean cost ${metrics['cost_per_request']:.6g}/request "
        f"({metrics['usd_per_1k']:.4g} per 1k), expensive share "
        f"{metrics['expensive_share']:.1%}"
    )
    if tq is not None and math.isfinite(curve["quality"][pick]):
        achieved += f", true quality {metrics['quality']:.4f} (best single {best_q:.4f})"
    if met:
        explanation = f"target met ({goal_text}) on {n} calibration rows; {achieved}"
    else:
        explanation = (
            f"target NOT reachable on {n} calibration rows ({goal_text}); "
            f"using the best achievable, {achieved}"
        )
        closest = _closest_target(target, curve, best_q)
        if closest is not None:
            explanation += f"; closest reachable target: {closest}"
    return Calibration(
        lam=lam,
        met=met,
        target=target,
        metrics=metrics,
        explanation=explanation,
        grid=grid,
        curve=curve,
    )


def _closest_target(target: Target, curve: dict[str, np.ndarray], best_q: float) -> str | None:
    """The strictest target of the same kind that the calibration rows do reach."""
    if isinstance(target, QualityTarget):
        q = curve["quality"][np.isfinite(curve["quality"])]
        if q.size == 0 or best_q <= 0:
            return None
        return f"quality>={math.floor(float(q.max()) / best_q * 1000) / 1000:g}"
    if isinstance(target, BudgetTarget):
        return f"budget<={math.ceil(float(curve['cost'].min()) * 1e6) / 1e3:g}"
    return f"expensive<={math.ceil(float(curve['expensive_share'].min()) * 1000) / 1000:g}"


def _last_argmax(values: np.ndarray) -> int:
    """Index of the maximum, ties to the last (the largest lambda: cheapest, and the most
    robustly so on new data)."""
    return int(len(values) - 1 - np.argmax(values[::-1]))


def _opt(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
