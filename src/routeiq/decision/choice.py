"""The choice kernel: ``utility = predicted quality - lambda * cost``, argmax per row.

Serving (one request), calibration (out-of-fold predictions over train) and evaluation (a
lambda sweep over test) all choose with :func:`choose`, sweep the same :func:`lambda_grid` and
name the same :func:`best_single` model, so a lambda calibrated on train means on test exactly
what it meant there.

``lambda`` is the willingness to pay: quality points given up per dollar saved. ``lambda = 0``
picks the best predicted quality, ``lambda = inf`` the cheapest candidate. Ties (utilities
within :data:`TIE_RTOL`) go to the cheaper candidate, then to the lower index; with
``lambda = inf`` to the higher quality, then the lower index. Every choice is deterministic.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Utilities closer than this (relative to the best one) count as tied: q - lam*c computed in
# floating point can differ in the last bits for choices that are equal on paper.
TIE_RTOL = 1e-12
# Elements per temporary (lambdas x rows x models) block: bounds memory at ~32 MB.
_BLOCK = 4_000_000


def check_lambda(lam: Any) -> float:
    """``lam`` as a float; ``ValueError`` unless it is >= 0 (finite, or ``inf`` = cheapest)."""
    if isinstance(lam, bool) or not isinstance(lam, int | float | np.integer | np.floating):
        raise ValueError(f"lambda must be a number >= 0, got {lam!r} ({type(lam).__name__})")
    value = float(lam)
    if math.isnan(value) or value < 0:
        raise ValueError(
            f"lambda must be finite and >= 0 (or inf to always pick the cheapest), got {value!r}"
        )
    return value


def as_matrix(name: str, values: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``values`` as a float64 (n, m) array with m > 0; ``ValueError`` naming ``name``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, m) array, got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: no candidate models (m = 0)")
    return arr


def validate(
    quality: Any, cost: Any, available: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(quality, cost, available) checked: equal shapes, a boolean mask, every row with an
    available candidate, finite values wherever a candidate is available."""
    q = as_matrix("quality", quality)
    c = as_matrix("cost", cost, q.shape)
    if available is None:
        avail = np.ones(q.shape, dtype=bool)
    else:
        avail = np.asarray(available)
        if avail.dtype != np.bool_:
            raise ValueError(f"available must be a boolean mask, got dtype {avail.dtype}")
        if avail.shape != q.shape:
            raise ValueError(f"available has shape {avail.shape}, quality has shape {q.shape}")
    empty = ~avail.any(axis=1)
    if empty.any():
        first = int(empty.argmax())
        raise ValueError(
            f"{int(empty.sum())} row(s) have no available candidate, first row {first}"
        )
    for name, arr in (("quality", q), ("cost", c)):
        bad = avail & ~np.isfinite(arr)
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            raise ValueError(
                f"{name} has {int(bad.sum())} non-finite (NaN/inf) value(s) at available "
                f"candidates, first at row {row}, column {col}: {arr[row, col]!r}"
            )
    return q, c, avail


def as_lambdas(lambdas: Any) -> np.ndarray:
    """``lambdas`` (a number or a sequence) as a flat float array, each >= 0 (inf allowed)."""
    raw = np.asarray(lambdas)
    if raw.dtype.kind not in "iuf":  # "1", True, None: a config mistake, not a number
        raise ValueError(f"lambda must be a number >= 0 (or a sequence of them), got {lambdas!r}")
    lam = raw.astype(np.float64).ravel()
    if lam.size == 0:
        raise ValueError("lambdas is empty")
    if np.isnan(lam).any() or (lam < 0).any():
        raise ValueError("lambdas must be >= 0 (inf allowed, NaN not)")
    return lam


def choose(quality: Any, cost: Any, lambdas: Any, available: Any = None) -> np.ndarray:
    """Index of the chosen candidate per (lambda, row): an (L, n) int array.

    ``quality`` and ``cost`` are (n, m); ``available`` an optional (n, m) boolean mask (values
    at unavailable entries may be NaN). ``lambdas`` is a scalar or a sequence (L = its size).
    """
    q, c, avail = validate(quality, cost, available)
    lam = as_lambdas(lambdas)
    q = np.where(avail, q, 0.0)  # neutralise unavailable entries: the arithmetic stays quiet
    c = np.where(avail, c, 0.0)
    n, m = q.shape
    out = np.empty((lam.size, n), dtype=np.intp)
    finite = np.flatnonzero(np.isfinite(lam))
    step = max(1, _BLOCK // max(1, n * m))
    for start in range(0, finite.size, step):
        idx = finite[start : start + step]
        u = np.where(avail[None], q[None] - lam[idx, None, None] * c[None], -np.inf)
        best = u.max(axis=2, keepdims=True)
        tied = avail[None] & (u >= best - TIE_RTOL * np.maximum(1.0, np.abs(best)))
        cmin = np.where(tied, c[None], np.inf).min(axis=2, keepdims=True)
        out[idx] = _first_true(tied & (c[None] == cmin), axis=2)
    infinite = np.flatnonzero(np.isinf(lam))
    if infinite.size:
        cmin = np.where(avail, c, np.inf).min(axis=1, keepdims=True)
        tied = avail & (c == cmin)
        qmax = np.where(tied, q, -np.inf).max(axis=1, keepdims=True)
        out[infinite] = _first_true(tied & (q == qmax), axis=1)
    return out


def _first_true(mask: np.ndarray, axis: int) -> np.ndarray:
    """Index of the first True along ``axis`` (each lane has one). Not ``argmax``: numpy's
    arg-reductions drop the GIL at any size, which stalls a gateway's event loop
    (``bench/gil_contention.py``); a max over ``m - index`` does not."""
    m = mask.shape[axis]
    shape = [1] * mask.ndim
    shape[axis] = m
    rank = np.arange(m, 0, -1).reshape(shape)  # m, m-1, ..., 1
    return m - np.where(mask, rank, 0).max(axis=axis)


def choose_one(quality: Any, cost: Any, lam: float, available: Any = None) -> int:
    """:func:`choose` for one request: ``quality``/``cost``/``available`` are (m,)."""
    avail = None if available is None else np.asarray(available).reshape(1, -1)
    q = np.asarray(quality, dtype=np.float64).reshape(1, -1)
    c = np.asarray(cost, dtype=np.float64).reshape(1, -1)
    return int(choose(q, c, check_lambda(lam), avail)[0, 0])


def switch_points(quality: Any, cost: Any) -> np.ndarray:
    """Every lambda > 0 at which some row's choice changes (one entry per row and switch).

    Per row the utility lines ``q_j - lam*c_j`` are followed from lam = 0 upward: the chosen
    model is only ever overtaken by a strictly cheaper one, so there are at most m - 1 switches.
    """
    q, c, _ = validate(quality, cost)
    n, m = q.shape
    order = np.argsort(c, axis=1, kind="stable")
    qs, cs = np.take_along_axis(q, order, 1), np.take_along_axis(c, order, 1)
    rows = np.arange(n)
    j = qs.argmax(axis=1)
    current = np.zeros(n)
    found: list[np.ndarray] = []
    for _ in range(m - 1):
        pj, cj = qs[rows, j][:, None], cs[rows, j][:, None]
        cheaper = cs < cj
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = np.where(cheaper, (pj - qs) / np.where(cheaper, cj - cs, 1.0), np.inf)
        nxt = cross.argmin(axis=1)  # first minimum = cheapest of the lines crossing together
        at = cross[rows, nxt]
        moved = np.isfinite(at)
        if not moved.any():
            break
        at = np.maximum(at, current)  # j is optimal at `current`; guard float rounding
        found.append(at[moved])
        j = np.where(moved, nxt, j)
        current = np.where(moved, at, current)
    return np.concatenate(found) if found else np.empty(0)


def lambda_grid(quality: Any, cost: Any, n_lambdas: int = 200) -> np.ndarray:
    """Sorted lambdas to sweep: 0, lambdas between the switch points, inf (<= ``n_lambdas``).

    With K distinct switch points there are K + 1 distinct decision sets; if they fit, the grid
    has one lambda inside each (geometric midpoints), so a sweep is exact. Otherwise half the
    budget goes to quantiles of the switch points (equal numbers of decision changes between
    neighbours) and half to a log grid across their range (coverage of sparse regions).
    """
    if n_lambdas < 2:
        raise ValueError("n_lambdas must be >= 2 (0 and inf)")
    b = np.unique(switch_points(quality, cost))
    b = b[b > 0]
    mids = np.sqrt(b[:-1] * b[1:])
    budget = n_lambdas - 2
    if mids.size > budget:
        n_q = budget // 2
        quant = mids[np.round(np.linspace(0, mids.size - 1, n_q)).astype(int)]
        logs = np.geomspace(b[0], b[-1], budget - n_q + 2)[1:-1]
        mids = np.unique(np.concatenate([quant, logs]))
    return np.concatenate([[0.0], mids, [np.inf]])


def nanmean(values: np.ndarray, axis: int | None = None) -> Any:
    """Mean over finite entries; NaN (no warning) where there are none."""
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    count = finite.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def best_single(quality: Any, cost: Any) -> int:
    """The best single model: highest mean quality over its observed (finite) entries; ties
    to the lower mean cost, then the lower index. A model never observed ranks last."""
    q = nanmean(as_matrix("quality", quality), axis=0)
    c = nanmean(as_matrix("cost", cost, np.shape(quality)), axis=0)
    q = np.where(np.isfinite(q), q, -np.inf)
    c = np.where(np.isfinite(c), c, np.inf)
    return int(np.lexsort((np.arange(q.size), c, -q))[0])


def cheapest_single(quality: Any, cost: Any) -> int:
    """The model with the lowest mean cost (ties: higher mean quality, then lower index)."""
    q = nanmean(as_matrix("quality", quality), axis=0)
    c = nanmean(as_matrix("cost", cost, np.shape(quality)), axis=0)
    q = np.where(np.isfinite(q), q, -np.inf)
    c = np.where(np.isfinite(c), c, np.inf)
    return int(np.lexsort((np.arange(q.size), -q, c))[0])
