"""Hyper-parameter selection by seeded K-fold cross-validation on the training data only.

Scores (lower is better):

- ``"brier"`` (default): masked Brier score, the mean squared error between predicted and
  observed quality over observed (non-NaN) entries only. For 0/1 labels this is the Brier score;
  for fractional qualities it is the MSE. It is defined for logged traffic with one observed
  model per prompt, and it decomposes per model, which lets per-model families pick one
  hyper-parameter per model.
- ``"regret"``: routing-aware. For each validation row with at least two observed models, the
  row's best observed quality minus the quality of the observed model with the highest
  prediction (so it only compares models whose outcome is known). Averaged over those rows.
  Blind to calibration, so it suits lambda = 0 routing only; falls back to Brier when no
  row has two observed models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from routeiq.quality.base import QualityModel

SCORINGS = ("brier", "regret")


def kfold(n: int, n_splits: int = 3, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled K-fold (train_idx, val_idx) pairs, deterministic given ``seed``."""
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}")
    n_splits = min(n_splits, n)
    if n_splits < 2:
        raise ValueError(f"need at least 2 rows for cross-validation, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(order, n_splits)
    return [
        (np.sort(np.concatenate(folds[:i] + folds[i + 1 :])), np.sort(folds[i]))
        for i in range(n_splits)
    ]


def masked_brier(Y: np.ndarray, P: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Mean squared error over observed entries of ``Y`` (NaN = unobserved).

    With ``axis=0`` returns one score per model (NaN for a model never observed).
    """
    mask = ~np.isnan(Y)
    err = np.where(mask, (np.nan_to_num(Y) - P) ** 2, 0.0)
    if axis is None:
        return float(err.sum() / max(mask.sum(), 1))
    counts = mask.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, err.sum(axis=axis) / counts, np.nan)


def routing_regret(Y: np.ndarray, P: np.ndarray) -> float:
    """Mean regret of picking the highest-predicted observed model (rows with >= 2 observed)."""
    mask = ~np.isnan(Y)
    rows = mask.sum(axis=1) >= 2
    if not rows.any():
        return float("nan")
    Yr, Pr, Mr = Y[rows], P[rows], mask[rows]
    pick = np.argmax(np.where(Mr, Pr, -np.inf), axis=1)
    chosen = Yr[np.arange(len(Yr)), pick]
    best = np.nanmax(Yr, axis=1)
    return float(np.mean(best - chosen))


def oof_predict(
    make: Callable[[], QualityModel],
    X: np.ndarray,
    Y: np.ndarray,
    cost: np.ndarray | None = None,
    n_splits: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """Out-of-fold predictions: each row predicted by a model fitted without its fold."""
    P = np.empty(Y.shape, dtype=np.float64)
    for tr, va in kfold(len(X), n_splits, seed):
        model = make().fit(X[tr], Y[tr], None if cost is None else cost[tr])
        P[va] = model.predict(X[va])
    return P


@dataclass(frozen=True)
class SelectionResult:
    """Outcome of :func:`select_params`. ``scores[g]`` is the CV score of ``grid[g]``."""

    best: dict[str, Any]
    best_index: int
    scores: np.ndarray  # (n_grid,)
    column_scores: np.ndarray  # (n_grid, n_models) masked Brier per model

    def per_column_best(self) -> list[int]:
        """Grid index with the lowest Brier for each model (models never observed: overall)."""
        cols = self.column_scores
        out = []
        for j in range(cols.shape[1]):
            col = cols[:, j]
            out.append(int(np.nanargmin(col)) if np.isfinite(col).any() else self.best_index)
        return out


def score(Y: np.ndarray, P: np.ndarray, scoring: str = "brier") -> float:
    if scoring == "brier":
        return float(masked_brier(Y, P))
    if scoring == "regret":
        regret = routing_regret(Y, P)
        return float(masked_brier(Y, P)) if np.isnan(regret) else regret
    raise ValueError(f"unknown scoring {scoring!r}; known: {', '.join(SCORINGS)}")


def select_params(
    make: Callable[..., QualityModel],
    grid: Sequence[dict[str, Any]],
    X: np.ndarray,
    Y: np.ndarray,
    cost: np.ndarray | None = None,
    *,
    n_splits: int = 3,
    seed: int = 0,
    scoring: str = "brier",
) -> SelectionResult:
    """Score every grid point by K-fold CV; ``make(**point)`` must build an unfitted model.

    Ties go to the earlier grid point, so list grids from simplest to most complex.
    """
    grid = list(grid)
    if not grid:
        raise ValueError("empty hyper-parameter grid")
    if scoring not in SCORINGS:
        raise ValueError(f"unknown scoring {scoring!r}; known: {', '.join(SCORINGS)}")
    if len(grid) == 1:
        nan_cols = np.full((1, Y.shape[1]), np.nan)
        return SelectionResult(dict(grid[0]), 0, np.array([np.nan]), nan_cols)
    folds = kfold(len(X), n_splits, seed)
    scores = np.empty(len(grid))
    cols = np.empty((len(grid), Y.shape[1]))
    for g, point in enumerate(grid):
        P = np.empty(Y.shape, dtype=np.float64)
        for tr, va in folds:
            model = make(**point).fit(X[tr], Y[tr], None if cost is None else cost[tr])
            P[va] = model.predict(X[va])
        scores[g] = score(Y, P, scoring)
        cols[g] = masked_brier(Y, P, axis=0)
    best = int(np.argmin(scores))
    return SelectionResult(dict(grid[best]), best, scores, cols)


def checkpoint_cv(
    train: Callable[[np.ndarray, np.ndarray, np.ndarray, Callable[[int, Any], None]], Any],
    predict: Callable[[Any, np.ndarray], np.ndarray],
    checkpoints: Sequence[int],
    X: np.ndarray,
    Y: np.ndarray,
    mask: np.ndarray,
    n_splits: int,
    seed: int,
    scoring: str = "brier",
) -> np.ndarray:
    """K-fold CV of an iterative trainer at several epoch counts from one run per fold.

    ``train(X, Y, mask, callback)`` must call ``callback(epoch, state)`` after every epoch and
    stop after ``max(checkpoints)`` epochs; ``predict(state, X)`` scores rows. Returns the
    CV score (see :func:`score`) per checkpoint, sorted by epoch.
    """
    wanted = sorted(int(c) for c in checkpoints)
    P = np.zeros((len(wanted), *Y.shape))
    for tr, va in kfold(len(X), n_splits, seed):

        def record(epoch: int, state: Any, va: np.ndarray = va) -> None:
            if epoch in wanted:
                P[wanted.index(epoch)][va] = predict(state, X[va])

        train(X[tr], Y[tr], mask[tr], record)
    return np.array([score(Y, P[g], scoring) for g in range(len(wanted))])


def select_with_epochs(
    trainer: Callable[[Any, int], Callable[..., Any]],
    predict: Callable[[Any, np.ndarray], np.ndarray],
    values: Sequence[Any],
    epochs_grid: Sequence[int],
    X: np.ndarray,
    Y: np.ndarray,
    mask: np.ndarray,
    n_splits: int,
    seed: int,
    scoring: str = "brier",
) -> tuple[Any, int, list[float] | None]:
    """Pick (value, epochs) for an iterative trainer by :func:`checkpoint_cv`.

    ``trainer(value, epochs)`` returns ``train(X, Y, mask, callback)``: one CV run per value
    scores every epoch count in ``epochs_grid``. A single candidate pair is returned as is,
    without CV (scores None).
    """
    grid = sorted(int(e) for e in epochs_grid)
    best_value, best_epochs = values[0], grid[0]
    if len(values) * len(grid) == 1:
        return best_value, best_epochs, None
    best, scores = np.inf, list[float]()
    for value in values:
        s = checkpoint_cv(
            trainer(value, grid[-1]), predict, grid, X, Y, mask, n_splits, seed, scoring
        )
        scores.extend(float(v) for v in s)
        g = int(np.argmin(s))
        if s[g] < best:
            best, best_value, best_epochs = float(s[g]), value, grid[g]
    return best_value, best_epochs, scores
