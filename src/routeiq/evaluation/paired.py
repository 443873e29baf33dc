"""Paired bootstrap of an AIQ difference: is router A better than router B on this test set?

    diff, lo, hi = aiq_difference(Q, C, (P_a, C_a), (P_b, C_b))

Both routers are scored on the same resampled rows each time (the rows' difficulty cancels),
and the AIQ range is the resample's own single-model cost range, as in
:func:`routeiq.evaluation.report.evaluate`. Each router's choices are made once per lambda of
its grid on all rows (a resample changes which rows count, not what the router would choose
for a row), so a resample is two weighted sums instead of a new sweep. The interval is the
percentile interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from routeiq.decision.choice import choose, lambda_grid
from routeiq.evaluation.metrics import Curve, aiq


class _Realised:
    """A router's true quality and cost per (lambda, row) of its sweep."""

    def __init__(self, P: Any, C_hat: Any, Q: np.ndarray, C: np.ndarray) -> None:
        P = np.asarray(P, dtype=np.float64)
        C_hat = np.asarray(C_hat, dtype=np.float64)
        lam = lambda_grid(P, C_hat, 200)
        choice = choose(P, C_hat, lam)  # (lambdas, rows)
        rows = np.arange(Q.shape[0])[None, :]
        self.quality = Q[rows, choice]
        self.cost = C[rows, choice]

    def aiq(self, weights: np.ndarray, cost_range: tuple[float, float]) -> float:
        total = float(weights.sum())
        curve = Curve(cost=self.cost @ weights / total, quality=self.quality @ weights / total)
        value = aiq(curve, cost_range)
        return float("nan") if value is None else value


def aiq_difference(
    Q: Any,
    C: Any,
    a: tuple[Any, Any],
    b: tuple[Any, Any],
    *,
    n_boot: int = 300,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """AIQ(a) - AIQ(b) on all rows, and its ``level`` paired-bootstrap interval."""
    Q = np.asarray(Q, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    if n_boot < 10 or not 0 < level < 1:
        raise ValueError("n_boot must be >= 10 and level in (0, 1)")
    ra, rb = _Realised(*a, Q, C), _Realised(*b, Q, C)
    n = Q.shape[0]

    def diff(weights: np.ndarray) -> float:
        means = weights @ C / weights.sum()
        span = (float(means.min()), float(means.max()))
        return ra.aiq(weights, span) - rb.aiq(weights, span)

    point = diff(np.ones(n))
    rng = np.random.default_rng(seed)
    draws = np.array(
        [diff(rng.multinomial(n, np.full(n, 1.0 / n)).astype(float)) for _ in range(n_boot)]
    )
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(draws, [tail, 100 - tail])
    return point, float(lo), float(hi)
