"""Fit lambda to an operator's target on calibration data.

Targets (:mod:`routeiq.decision.targets`): :class:`QualityTarget` ("at least X of the best
single model's quality", measured with true quality), :class:`BudgetTarget` ("at most $Y per
1k requests") and :class:`ExpensiveShareTarget` ("at most Z of calls to the most expensive
model"). The best single model is the one with the highest mean true quality on the
calibration data; the most expensive model the one with the highest mean cost there.

:func:`calibrate_lambda` evaluates every lambda of the sweep grid that evaluation uses
(:func:`routeiq.decision.choice.lambda_grid`: 0, one lambda per distinct set of choices or
quantiles of the switch points, inf) with the same choice kernel, and keeps the cheapest one
meeting the target. Realised true quality is not monotone in lambda on noisy data, so the
whole grid is scanned (no bisection). An unreachable target is not an error: the best
achievable lambda is returned with ``met=False`` and an explanation.

Robust calibration (``confidence``): a target met *on average* over the calibration rows is
missed on traffic whose mix of tasks differs (measured: LLMRouter's test split, where a
``quality>=1.0`` lambda fitted on train out-of-fold predictions landed 2-3 points short). With
``confidence=p`` each grid point is instead scored on ``n_bootstrap`` cluster-bootstrap
replicates of the calibration rows: ``groups`` (tasks; every row its own group when absent)
get random weights (the Bayesian bootstrap: Dirichlet(1, ..., 1)), so each replicate is
another plausible traffic mix. A quality target then needs ``router quality - X * best single
quality`` (the best single model re-chosen in each replicate, as an evaluation on that
traffic would) to be >= 0 in a fraction ``p`` of the replicates; budget and share targets
need the mean cost or share to stay under the ceiling in a fraction ``p``. The choices
themselves still come from :func:`choose` over :func:`lambda_grid`; only the test applied to
each grid point changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from routeiq.decision.choice import best_single, choose, lambda_grid, nanmean, validate
from routeiq.decision.targets import (
    BudgetTarget,
    ExpensiveShareTarget,
    QualityTarget,
    Target,
    finite_number,
)

# Floating-point slack when comparing realised means with a target.
_EPS = 1e-9
# Robust calibration defaults (see the module docstring): the probability, over
# cluster-bootstrap replicates of the calibration rows, that the target holds; the number of
# replicates; and the seed that makes calibration deterministic.
DEFAULT_CONFIDENCE = 0.9
DEFAULT_N_BOOTSTRAP = 1000
BOOTSTRAP_SEED = 0
# Bootstrap weights are built in blocks of at most this many (replicate x group) entries.
_BOOT_BLOCK = 2_000_000
# More groups than this (say one per row) are pooled at random into this many blocks.
_MAX_GROUPS = 1000


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


def check_confidence(value: Any) -> float | None:
    """``confidence`` checked: None (calibrate on the mean, as before robust calibration) or a
    probability in [0.5, 1); ``ValueError`` otherwise."""
    if value is None:
        return None
    v = finite_number("confidence", value)
    if not 0.5 <= v < 1:
        raise ValueError(
            f"confidence must be in [0.5, 1) (the probability that the target holds on a "
            f"resampled mix of tasks, e.g. 0.9) or None (meet it on average), got {v}"
        )
    return v


def _check_groups(groups: Any, n: int) -> np.ndarray:
    """Integer group codes 0..G-1 for ``groups`` (n labels: task names, cluster ids)."""
    arr = np.asarray(groups)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"groups must be a 1-D array of {n} labels (one per row), got {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("groups has NaN/inf labels")
    if arr.dtype.kind not in "iufUSO":
        raise ValueError(f"groups must hold task names or integer ids, got dtype {arr.dtype}")
    codes = np.unique(arr.astype(str) if arr.dtype.kind == "O" else arr, return_inverse=True)[1]
    return np.asarray(codes, dtype=np.intp).ravel()


def calibrate_lambda(
    target: Target,
    predicted_quality: Any,
    cost: Any,
    true_quality: Any = None,
    *,
    models: Sequence[str] | None = None,
    n_points: int = 200,
    groups: Any = None,
    confidence: float | None = None,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
) -> Calibration:
    """Pick lambda for ``target`` on calibration data (all arrays (n, m), cost in USD/request).

    ``true_quality`` (NaN = unobserved) is required for :class:`QualityTarget`, which uses only
    the fully labelled rows (the others are counted in ``metrics["n_dropped"]``). Budget and
    share targets use every row; their reported quality is over the labelled chosen pairs.
    ``models`` (names) only labels the metrics.

    ``confidence=None`` meets the target on average over the rows. ``confidence=p`` (in
    [0.5, 1)) meets it in a fraction ``p`` of ``n_bootstrap`` cluster-bootstrap replicates
    over ``groups`` (one label per row, e.g. the task; None: every row its own group), drawn
    with ``seed`` (see the module docstring).
    """
    if not isinstance(target, QualityTarget | BudgetTarget | ExpensiveShareTarget):
        raise ValueError(
            f"target must be a QualityTarget, BudgetTarget or "
            f"ExpensiveShareTarget (see parse_target), got {target!r}"
        )
    conf = check_confidence(confidence)
    if conf is not None and (
        isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 20
    ):
        raise ValueError(f"n_bootstrap must be an integer >= 20, got {n_bootstrap!r}")
    pq, c, _ = validate(predicted_quality, cost)
    n_in = pq.shape[0]
    codes = None if groups is None else _check_groups(groups, n_in)
    tq = None
    if true_quality is not None:
        tq = np.asarray(true_quality, dtype=np.float64)
        if tq.shape != pq.shape:
            raise ValueError(f"true_quality has shape {tq.shape}, expected {pq.shape}")
        if isinstance(target, QualityTarget):
            # The target is about realised quality: only fully labelled rows can measure it.
            keep = np.isfinite(tq).all(axis=1)
            pq, c, tq = pq[keep], c[keep], tq[keep]
            codes = None if codes is None else codes[keep]
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

    boot: _Bootstrap | None = None
    if conf is not None:
        if codes is None:
            codes = np.arange(n)
        _, codes = np.unique(codes, return_inverse=True)  # dropped rows may empty a group
        boot = _Bootstrap(codes.ravel(), n_bootstrap, seed)

    best_q = float(mean_q[best])
    if isinstance(target, QualityTarget):
        goal = target.fraction * best_q
        goal_text = f"true quality >= {goal:.4f} ({target.fraction:g} x {best_q:.4f})"
        if boot is None or conf is None:
            score = curve["quality"] - goal
        else:
            assert tq is not None  # a quality target has it (checked above)
            router_q = boot.means(tq[rows, chosen])  # (grid, replicates)
            best_rep = boot.means(tq.T).max(axis=0)  # best single model of each replicate
            margin = router_q - target.fraction * best_rep
            score = np.quantile(margin, 1 - conf, axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.where(best_rep > 0, router_q / best_rep, np.nan)
            curve["margin_lower"] = score
            curve["quality_ratio_lower"] = np.nanquantile(ratio, 1 - conf, axis=1)
            goal_text += (
                f", and >= {target.fraction:g} x the best single model in "
                f"{conf:.0%} of {boot.n} resampled mixes of {boot.groups} groups"
            )
        ok = score >= -_EPS
        # Cost falls as lambda grows, so the largest feasible lambda is the cheapest.
        pick = int(np.flatnonzero(ok)[-1]) if ok.any() else _last_argmax(score)
    else:
        if isinstance(target, BudgetTarget):
            goal = target.usd_per_1k / 1000.0
            key, slack = "cost", goal * _EPS + 1e-15
            goal_text = f"mean cost <= ${target.usd_per_1k:g} per 1k requests"
            values = c[rows, chosen]
        else:
            goal = target.max_share
            key, slack = "expensive_share", _EPS
            goal_text = f"share of calls to the most expensive model <= {goal:.1%}"
            values = (chosen == expensive).astype(np.float64)
        upper = curve[key]
        if boot is not None and conf is not None:
            upper = np.quantile(boot.means(values), conf, axis=1)
            curve[key + "_upper"] = upper
            goal_text += f" in {conf:.0%} of {boot.n} resampled mixes of {boot.groups} groups"
        ok = upper <= goal + slack
        pick = int(np.flatnonzero(ok)[0]) if ok.any() else _last_argmax(-upper)
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
        "confidence": conf,
    }
    if boot is not None:
        metrics["n_groups"] = boot.groups
        metrics["n_bootstrap"] = boot.n
        for key in ("quality_ratio_lower", "cost_upper", "expensive_share_upper"):
            if key in curve:
                metrics[key] = _opt(float(curve[key][pick]))
    achieved = (
        f"lambda={lam:.6g}: mean cost ${metrics['cost_per_request']:.6g}/request "
        f"({metrics['usd_per_1k']:.4g} per 1k), expensive share "
        f"{metrics['expensive_share']:.1%}"
    )
    if tq is not None and math.isfinite(curve["quality"][pick]):
        achieved += f", true quality {metrics['quality']:.4f} (best single {best_q:.4f})"
    if metrics.get("quality_ratio_lower") is not None:
        achieved += (
            f", quality >= {metrics['quality_ratio_lower']:.4f} x the best single model "
            f"in {conf:.0%} of resampled mixes"
        )
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


class _Bootstrap:
    """Cluster-bootstrap replicates of the calibration rows: each reweights whole groups at
    random (a plausible other mix of tasks) and keeps the rows within a group together."""

    def __init__(self, codes: np.ndarray, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        groups = int(codes.max()) + 1
        if groups > _MAX_GROUPS:
            # Many groups (every row its own): pool them at random into _MAX_GROUPS blocks.
            # A block of randomly pooled groups is a random sample of them, so the spread of
            # the replicate means barely changes, and memory stays bounded.
            codes = rng.permutation(groups)[codes] % _MAX_GROUPS
            groups = _MAX_GROUPS
        self.groups = groups
        self.n = n
        self.size = np.bincount(codes, minlength=self.groups).astype(np.float64)
        # Rows sorted by group, and where each group starts: per-group sums by reduceat.
        self.order = np.argsort(codes, kind="stable")
        self.starts = np.searchsorted(codes[self.order], np.arange(self.groups))
        # (replicates, groups): the weight of each group's rows, Dirichlet(1, ..., 1) x G (the
        # Bayesian bootstrap: mean weight 1 as in the classic one, but continuous, so a few
        # groups still give a smooth spread of mixes instead of a handful of distinct draws).
        self.weights = rng.dirichlet(np.ones(self.groups), size=n) * self.groups
        self.rows = self.weights @ self.size  # weighted rows per replicate

    def means(self, values: np.ndarray) -> np.ndarray:
        """Mean of ``values`` (k, n_rows) in each replicate: (k, replicates)."""
        sums = np.add.reduceat(values[:, self.order], self.starts, axis=1)
        out = np.empty((values.shape[0], self.n))
        step = max(1, _BOOT_BLOCK // self.groups)
        for start in range(0, self.n, step):
            w = self.weights[start : start + step]
            out[:, start : start + step] = (sums @ w.T) / self.rows[start : start + step]
        return out


def _closest_target(target: Target, curve: dict[str, np.ndarray], best_q: float) -> str | None:
    """The strictest target of the same kind that the calibration rows do reach (with the
    same confidence, when calibration is robust)."""
    if isinstance(target, QualityTarget):
        if "quality_ratio_lower" in curve:
            r = curve["quality_ratio_lower"][np.isfinite(curve["quality_ratio_lower"])]
            return None if r.size == 0 else f"quality>={math.floor(float(r.max()) * 1000) / 1000:g}"
        q = curve["quality"][np.isfinite(curve["quality"])]
        if q.size == 0 or best_q <= 0:
            return None
        return f"quality>={math.floor(float(q.max()) / best_q * 1000) / 1000:g}"
    if isinstance(target, BudgetTarget):
        cost = curve.get("cost_upper", curve["cost"])
        return f"budget<={math.ceil(float(cost.min()) * 1e6) / 1e3:g}"
    share = curve.get("expensive_share_upper", curve["expensive_share"])
    return f"expensive<={math.ceil(float(share.min()) * 1000) / 1000:g}"


def _last_argmax(values: np.ndarray) -> int:
    """Index of the maximum, ties to the last (the largest lambda: cheapest, and the most
    robustly so on new data)."""
    return int(len(values) - 1 - np.argmax(values[::-1]))


def _opt(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
