"""Offline evaluation of cost-aware routers on a fully labelled test set.

Pure numpy on plain ``(n, m)`` arrays (n prompts, m models); nothing here knows about routers.

Inputs
    ``Q`` true quality and ``C`` true cost (USD per request) score a router; ``P`` predicted
    quality and ``C_hat`` predicted cost are what the router decides with. ``Q`` and ``C`` must
    be complete (no NaN): evaluate on the fully labelled rows only.

Sweep
    A router is swept over a willingness-to-pay ``lam`` with the serving and calibration
    kernel (:mod:`routeiq.decision.choice`): per row the argmax of ``P - lam * C_hat``; ties
    go to the lower predicted cost, then the lower column index. ``lam = inf`` picks the
    cheapest predicted model (ties to the higher predicted quality). Each lambda gives one
    operating point: mean true cost, mean true quality, share of calls per model. The default
    grid (:func:`routeiq.decision.choice.lambda_grid`) is exact (one lambda per distinct set
    of decisions) when there are few decision changes, otherwise it mixes quantiles of the
    switching lambdas with a log-spaced grid over their range.

Frontier (the convention used for AIQ, cost-to-match and plots)
    ``F(c)`` = the best mean quality reachable at a mean cost of at most ``c``, where any
    randomised mixture of two operating points is reachable (flip a biased coin per request
    between two lambdas). That is the upper concave hull of the points, cut at its highest point
    and flat to the right of it (RouterBench's "non-decreasing convex hull"), linear in cost
    between vertices. Left of the router's cheapest point nothing is reachable and ``F`` is
    undefined (NaN); AIQ counts it as zero quality, so a router that cannot operate as cheaply
    as the cheapest single model is penalised there, as in RouterBench.

AIQ
    Mean of ``F`` over the cost range ``[lo, hi]`` = [cheapest, most expensive] single-model
    mean cost: the area under ``F`` on that interval divided by ``hi - lo``, a number on the
    quality scale. Points cheaper than ``lo`` are clipped to ``lo`` (reachable at <= lo); points
    dearer than ``hi`` still shape the hull, and ``F`` is integrated only up to ``hi``.
    ``log_cost=True`` is the same computation with ``log10(cost)`` as the cost axis: hull and
    interpolation in (log10 cost, quality), range ``[log10 lo, log10 hi]``. It weighs the cheap
    decades as much as the expensive one. Interpolating in log cost is slightly optimistic
    between distant points (it favours the sparse random-mixture baseline, not a densely swept
    router); it is the convention of the project's reference numbers (RouterBench test split:
    random mixture 0.823 / log 0.781). ``log_cost`` needs ``lo > 0`` (else None); a degenerate
    range (``lo == hi``) gives ``F(hi)``.

Two-model metrics (APGR, CPT): :mod:`routeiq.evaluation.two_model`; reports over routers and
baselines: :mod:`routeiq.evaluation.report`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from routeiq.decision.choice import as_lambdas, choose, lambda_grid

# Quality comparisons (cost-to-match, CPT) tolerate float rounding of means.
_EPS = 1e-12


# ----------------------------------------------------------------------------- validation


def _matrix(name: str, x: Any, shape: tuple[int, int] | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_rows, n_models) array, got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"{name} has {int(bad.sum())} NaN/inf entries (first rows {rows[:5].tolist()}); "
            "evaluation needs every model's value on every row: keep fully labelled rows only"
        )
    return arr


def _truth(Q: Any, C: Any) -> tuple[np.ndarray, np.ndarray]:
    Q = _matrix("Q (true quality)", Q)
    C = _matrix("C (true cost)", C, Q.shape)
    if (C < 0).any():
        raise ValueError("C (true cost) has negative entries")
    return Q, C


def _lambdas(lambdas: Any) -> np.ndarray:
    return np.sort(as_lambdas(lambdas))


def _num(x: Any) -> float | None:
    """A JSON-safe float: non-finite values become None (strict JSON has no inf/NaN)."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


# ----------------------------------------------------------------------------- sweep


@dataclass(frozen=True)
class Curve:
    """Operating points of a router: mean true cost and quality per lambda, sorted by lambda.

    ``shares[k, j]`` is the share of calls that went to model ``j`` at ``lambdas[k]``. Baselines
    that are not lambda sweeps (the single models) leave ``lambdas`` as None.
    """

    cost: np.ndarray
    quality: np.ndarray
    lambdas: np.ndarray | None = None
    shares: np.ndarray | None = None

    def __post_init__(self) -> None:
        cost = np.asarray(self.cost, dtype=np.float64).ravel()
        quality = np.asarray(self.quality, dtype=np.float64).ravel()
        if cost.shape != quality.shape or cost.size == 0:
            raise ValueError(f"cost {cost.shape} and quality {quality.shape} must be equal, > 0")
        if not (np.isfinite(cost).all() and np.isfinite(quality).all()):
            raise ValueError("curve points must be finite")
        object.__setattr__(self, "cost", cost)
        object.__setattr__(self, "quality", quality)

    def frontier(self, log_cost: bool = False) -> Frontier:
        return upper_frontier(self.cost, self.quality, log_cost=log_cost)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cost": [float(v) for v in self.cost],
            "quality": [float(v) for v in self.quality],
        }
        if self.lambdas is not None:
            out["lambda"] = [_num(v) for v in self.lambdas]  # inf (cheapest) -> null
        if self.shares is not None:
            out["shares"] = [[float(v) for v in row] for row in self.shares]
        return out


def sweep(
    P: Any,
    C_hat: Any,
    Q: Any,
    C: Any,
    lambdas: Any = None,
    *,
    n_lambdas: int = 200,
) -> Curve:
    """Sweep lambda: decide with (P, C_hat), score with (Q, C). Returns the operating points."""
    Q, C = _truth(Q, C)
    P = _matrix("P (predicted quality)", P, Q.shape)
    C_hat = _matrix("C_hat (predicted cost)", C_hat, Q.shape)
    lam = lambda_grid(P, C_hat, n_lambdas) if lambdas is None else _lambdas(lambdas)
    choice = choose(P, C_hat, lam)
    n, m = Q.shape
    rows = np.arange(n)[None, :]
    quality = Q[rows, choice].mean(axis=1)
    cost = C[rows, choice].mean(axis=1)
    flat = (choice + m * np.arange(lam.size)[:, None]).ravel()
    shares = np.bincount(flat, minlength=lam.size * m).reshape(lam.size, m) / n
    return Curve(cost=cost, quality=quality, lambdas=lam, shares=shares)


# ----------------------------------------------------------------------------- frontier, AIQ


@dataclass(frozen=True)
class Frontier:
    """Vertices of the non-decreasing frontier (see the module docstring).

    ``cost`` and ``quality`` strictly increase. ``F`` is linear between vertices in cost, or in
    log10(cost) if ``log_cost``; undefined (NaN) left of ``cost[0]``, flat right of ``cost[-1]``.
    """

    cost: np.ndarray
    quality: np.ndarray
    log_cost: bool = False

    def _x(self, c: Any) -> np.ndarray:
        c = np.asarray(c, dtype=np.float64)
        if not self.log_cost:
            return c
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log10(c)

    def __call__(self, c: Any) -> np.ndarray:
        c = np.asarray(c, dtype=np.float64)
        v = np.interp(self._x(c), self._x(self.cost), self.quality)
        return np.where(c < self.cost[0], np.nan, v)

    @property
    def best_quality(self) -> float:
        return float(self.quality[-1])

    @property
    def best_quality_cost(self) -> float:
        return float(self.cost[-1])

    def cost_to_reach(self, target: float) -> float | None:
        """The least mean cost at which ``F >= target``; None if it is never reached."""
        if target > self.quality[-1] + _EPS:
            return None
        i = int(np.searchsorted(self.quality, target - _EPS, side="left"))
        if i == 0 or self.quality[i] <= target + _EPS:
            return float(self.cost[i])
        x0, x1 = self._x(self.cost[i - 1 : i + 1])
        q0, q1 = self.quality[i - 1], self.quality[i]
        x = x0 + (x1 - x0) * (target - q0) / (q1 - q0)
        return float(10.0**x if self.log_cost else x)

    def aiq(self, lo: float, hi: float) -> float | None:
        """Mean of ``F`` over ``[lo, hi]`` on this frontier's cost axis; 0 where unreachable.

        None for a log-cost frontier when ``lo <= 0``; ``F(hi)`` for a degenerate range.
        """
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
            raise ValueError(f"invalid cost range [{lo}, {hi}]")
        if self.log_cost and lo <= 0:
            return None
        if hi == lo:
            # Every model costs the same: a router's mean cost is that cost summed in another
            # order, possibly ulps above it; read F at the first vertex then.
            first = float(self.cost[0])
            at = first if hi < first <= hi + 1e-9 * abs(hi) + _EPS else hi
            v = float(self(at))
            return 0.0 if math.isnan(v) else v
        inside = self.cost[(self.cost > lo) & (self.cost < hi)]
        knots = np.unique(np.concatenate([[lo, hi], inside]))
        a, b = knots[:-1], knots[1:]
        # F is linear (in x) on each (a, b): no vertex inside. Zero where unreachable.
        reachable = (a + b) / 2 >= self.cost[0]
        # A knot may sit an ulp left of the first vertex (the same mean cost summed in another
        # order): evaluate there at the vertex, where F is defined.
        y1 = np.where(reachable, self(np.maximum(a, self.cost[0])), 0.0)
        y2 = np.where(reachable, self(b), 0.0)
        xa, xb, xlo, xhi = self._x(a), self._x(b), self._x(lo), self._x(hi)
        return float(np.sum((y1 + y2) / 2 * (xb - xa)) / (xhi - xlo))

    def to_dict(self) -> dict[str, Any]:
        return {
            "cost": [float(v) for v in self.cost],
            "quality": [float(v) for v in self.quality],
            "log_cost": self.log_cost,
        }


def upper_frontier(cost: Any, quality: Any, *, log_cost: bool = False) -> Frontier:
    """The non-decreasing upper concave hull of (cost, quality) points.

    The hull is taken in (cost, quality), or in (log10 cost, quality) if ``log_cost`` (which
    then needs positive costs).
    """
    c = np.asarray(cost, dtype=np.float64).ravel()
    q = np.asarray(quality, dtype=np.float64).ravel()
    if c.shape != q.shape or c.size == 0:
        raise ValueError("cost and quality must be non-empty and of equal length")
    if not (np.isfinite(c).all() and np.isfinite(q).all()):
        raise ValueError("frontier points must be finite")
    if log_cost and (c <= 0).any():
        raise ValueError("a log-cost frontier needs positive costs")
    order = np.lexsort((-q, c))  # by cost, best quality first among equal costs
    c, q = c[order], q[order]
    keep = np.concatenate([[True], c[1:] != c[:-1]])
    c, q = c[keep], q[keep]
    x = np.log10(c) if log_cost else c
    hull: list[int] = []
    for k in range(x.size):
        # Pop the last vertex while it lies on or below the chord to the new point.
        while len(hull) >= 2:
            i, j = hull[-2], hull[-1]
            if (x[j] - x[i]) * (q[k] - q[i]) - (q[j] - q[i]) * (x[k] - x[i]) >= 0:
                hull.pop()
            else:
                break
        hull.append(k)
    h = np.array(hull)
    top = int(np.argmax(q[h]))  # first maximum = cheapest best; beyond it F stays flat
    return Frontier(cost=c[h[: top + 1]], quality=q[h[: top + 1]], log_cost=log_cost)


def aiq(
    points: Curve | Frontier, cost_range: tuple[float, float], *, log_cost: bool = False
) -> float | None:
    """AIQ over ``cost_range`` = (lo, hi); None for ``log_cost`` with ``lo <= 0``.

    A curve's points cheaper than ``lo`` are clipped to ``lo`` before the frontier is built (they
    are reachable at a cost <= lo; this also keeps zero costs off the log axis). A frontier is
    used as given and must have been built with the same ``log_cost``.
    """
    lo, hi = float(cost_range[0]), float(cost_range[1])
    if log_cost and lo <= 0:
        return None
    if isinstance(points, Frontier):
        if points.log_cost != log_cost:
            raise ValueError(f"frontier has log_cost={points.log_cost}, asked for {log_cost}")
        return points.aiq(lo, hi)
    front = upper_frontier(np.maximum(points.cost, lo), points.quality, log_cost=log_cost)
    return front.aiq(lo, hi)


# ----------------------------------------------------------------------------- baselines


def single_models(Q: Any, C: Any) -> Curve:
    """Each single model as one point (mean true cost, mean true quality); ``shares`` = identity.

    As a curve its frontier is the random-mixture baseline (the hull of the single models).
    """
    Q, C = _truth(Q, C)
    m = Q.shape[1]
    return Curve(cost=C.mean(axis=0), quality=Q.mean(axis=0), shares=np.eye(m))


def cost_range(Q: Any, C: Any) -> tuple[float, float]:
    """[cheapest, most expensive] single-model mean cost: the AIQ integration range."""
    _, C = _truth(Q, C)
    means = C.mean(axis=0)
    return float(means.min()), float(means.max())


def oracle_choice(Q: Any, C: Any) -> np.ndarray:
    """Per row the cheapest model among those with the highest true quality."""
    Q, C = _truth(Q, C)
    return choose(Q, C, [0.0])[0]


def oracle_point(Q: Any, C: Any) -> tuple[float, float]:
    """(mean cost, mean quality) of the oracle: per row the cheapest best model."""
    Q, C = _truth(Q, C)
    j = oracle_choice(Q, C)
    rows = np.arange(Q.shape[0])
    return float(C[rows, j].mean()), float(Q[rows, j].mean())
