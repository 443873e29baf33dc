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

Two-model metrics (RouteLLM)
    For a strong/weak pair, rows are ranked by a score (the router's ``P[:, s] - P[:, w]``) and
    the top ``k`` go to the strong model, for every threshold between distinct score values
    (RouteLLM's quantile sweep at full resolution). Tied scores enter together and the curve is
    linear between thresholds: the expected curve under random tie-breaking, so a constant score
    is exactly the random router. PGR = (quality - weak) / (strong - weak); APGR = the area
    under PGR over the strong-call share 0..1 (random = 0.5; can exceed 1 when the weak model
    wins some rows). CPT(x) = the smallest strong-call share with PGR >= x, as a fraction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from routeiq.decision.choice import as_lambdas, best_single, cheapest_single, choose, lambda_grid

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
            v = float(self(hi))
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


# ----------------------------------------------------------------------------- two models


@dataclass(frozen=True)
class TwoModelCurve:
    """Quality against the share of calls sent to the strong model (RouteLLM)."""

    share: np.ndarray
    quality: np.ndarray
    strong_quality: float
    weak_quality: float

    @property
    def gap(self) -> float:
        return self.strong_quality - self.weak_quality

    def pgr(self) -> np.ndarray | None:
        """Performance gap recovered at each share; None if the two models tie on average."""
        if abs(self.gap) <= _EPS:
            return None
        return (self.quality - self.weak_quality) / self.gap

    def apgr(self) -> float | None:
        p = self.pgr()
        if p is None:
            return None
        return float(np.sum((p[1:] + p[:-1]) / 2 * np.diff(self.share)))

    def cpt(self, level: float) -> float | None:
        """Smallest strong-call share (0..1) with PGR >= ``level``; None if never."""
        p = self.pgr()
        if p is None:
            return None
        hit = np.flatnonzero(p >= level - 1e-9)
        if hit.size == 0:
            return None
        i = int(hit[0])
        if i == 0:
            return float(self.share[0])
        x0, x1, p0, p1 = self.share[i - 1], self.share[i], p[i - 1], p[i]
        return float(x0 + (x1 - x0) * min(1.0, max(0.0, (level - p0) / (p1 - p0))))


def two_model_curve(score: Any, q_strong: Any, q_weak: Any) -> TwoModelCurve:
    """Route the rows with the highest ``score`` to the strong model, for every threshold."""
    s = np.asarray(score, dtype=np.float64).ravel()
    qs = np.asarray(q_strong, dtype=np.float64).ravel()
    qw = np.asarray(q_weak, dtype=np.float64).ravel()
    n = s.size
    if n == 0 or qs.shape != s.shape or qw.shape != s.shape:
        raise ValueError("score, q_strong and q_weak must be non-empty and of equal length")
    if not (np.isfinite(s).all() and np.isfinite(qs).all() and np.isfinite(qw).all()):
        raise ValueError("score and qualities must be finite")
    order = np.argsort(-s, kind="stable")
    gain = np.concatenate([[0.0], np.cumsum((qs - qw)[order])])
    ss = s[order]
    # Thresholds between distinct scores: tied rows switch together.
    k = np.concatenate([[0], np.flatnonzero(ss[1:] != ss[:-1]) + 1, [n]])
    weak = float(qw.mean())
    return TwoModelCurve(
        share=k / n,
        quality=weak + gain[k] / n,
        strong_quality=float(qs.mean()),
        weak_quality=weak,
    )


# ----------------------------------------------------------------------------- reports


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
