"""Paired bootstrap of an AIQ difference: is router A better than router B on this test set?

    diff, lo, hi = aiq_difference(Q, C, (P_a, C_a), (P_b, C_b))

Both routers are swept over lambda on the same resampled rows each time (the rows' difficulty
cancels), and the AIQ range is the resample's own single-model cost range, as in
:func:`routeiq.evaluation.report.evaluate`. The interval is the percentile interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from routeiq.evaluation.metrics import aiq, cost_range, sweep


def _aiq(P: np.ndarray, C_hat: np.ndarray, Q: np.ndarray, C: np.ndarray) -> float:
    value = aiq(sweep(P, C_hat, Q, C), cost_range(Q, C))
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
    Pa, Ca = (np.asarray(x, dtype=np.float64) for x in a)
    Pb, Cb = (np.asarray(x, dtype=np.float64) for x in b)
    if n_boot < 10 or not 0 < level < 1:
        raise ValueError("n_boot must be >= 10 and level in (0, 1)")
    point = _aiq(Pa, Ca, Q, C) - _aiq(Pb, Cb, Q, C)
    rng = np.random.default_rng(seed)
    n = Q.shape[0]
    diffs = np.empty(n_boot)
    for k in range(n_boot):
        i = rng.integers(0, n, n)
        diffs[k] = _aiq(Pa[i], Ca[i], Q[i], C[i]) - _aiq(Pb[i], Cb[i], Q[i], C[i])
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(diffs, [tail, 100 - tail])
    return point, float(lo), float(hi)
