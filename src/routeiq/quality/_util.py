"""Shared helpers for the quality models: input checks, masked statistics, small optimisers.

Everything here is plain numpy so that ``predict`` never touches scikit-learn.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from routeiq.estimator import NotFittedError
from routeiq.quality.base import QualityModel

EPS = 1e-6


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (tanh form: no overflow warnings)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def logit(p: np.ndarray | float, eps: float = 1e-4) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def l2_normalize(X: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norm, 1e-12)


def check_X(X: Any) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinite values")
    return X


def check_XY(X: Any, Y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate training inputs. Returns (X, Y float64 with NaN = unobserved, observed mask)."""
    X = check_X(X)
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2 or Y.shape[0] != X.shape[0] or Y.shape[1] < 1:
        raise ValueError(f"Y must have shape ({X.shape[0]}, n_models), got {Y.shape}")
    mask = ~np.isnan(Y)
    if not mask.any():
        raise ValueError("Y has no observed (non-NaN) quality values")
    observed = Y[mask]
    if np.any(np.isinf(observed)) or observed.min() < 0.0 or observed.max() > 1.0:
        raise ValueError("observed qualities must lie in [0, 1]")
    return X, Y, mask


def column_means(Y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-model mean of observed qualities; models never observed get the global mean."""
    counts = mask.sum(axis=0)
    sums = np.where(mask, Y, 0.0).sum(axis=0)
    overall = sums.sum() / max(counts.sum(), 1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), overall)


def standardizer(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and scale (std, 1 for constant columns)."""
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    return mean, np.where(scale > 1e-12, scale, 1.0)


def fit_platt(
    f: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None = None,
    l2: float = 1e-3,
    monotone: bool = True,
    n_iter: int = 50,
) -> tuple[float, float]:
    """Fit ``y ~ sigmoid(a * f + b)`` with soft labels y in [0, 1] (Newton's method).

    ``monotone`` clips ``a`` at 0 so the map never reverses the score order. A small L2 on
    ``a`` keeps it finite when ``f`` separates the labels.
    """
    f = np.asarray(f, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(f) if w is None else np.asarray(w, dtype=np.float64)
    total = w.sum()
    if total <= 0:
        return 0.0, 0.0
    a, b = 0.0, float(logit(np.sum(w * y) / total))
    reg = l2 * total
    for _ in range(n_iter):
        p = sigmoid(a * f + b)
        r = w * (p - y)
        s = w * p * (1.0 - p) + 1e-12
        g = np.array([np.dot(r, f) + reg * a, r.sum()])
        H = np.array([[np.dot(s, f * f) + reg, np.dot(s, f)], [np.dot(s, f), s.sum()]])
        step = np.linalg.solve(H + 1e-9 * np.eye(2), g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-8:
            break
    if monotone and a < 0:
        a = 0.0
        b = float(logit(np.sum(w * y) / total))
    return float(a), float(b)


class Adam:
    """Minimal Adam optimiser over a list of numpy arrays (updated in place)."""

    def __init__(
        self,
        params: list[np.ndarray],
        lr: float = 1e-2,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        self.params, self.lr, self.b1, self.b2, self.eps = params, lr, beta1, beta2, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        c1, c2 = 1.0 - self.b1**self.t, 1.0 - self.b2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m *= self.b1
            m += (1.0 - self.b1) * g
            v *= self.b2
            v += (1.0 - self.b2) * g * g
            p -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)


def minibatches(
    n: int, batch_size: int, rng: np.random.Generator, min_batches: int = 8
) -> list[np.ndarray]:
    """Shuffled index batches. Small data sets get smaller batches (at least ``min_batches``
    per epoch), so an epoch count means enough optimiser steps at any training-set size."""
    size = max(1, min(int(batch_size), -(-n // min_batches)))
    order = rng.permutation(n)
    return [order[i : i + size] for i in range(0, n, size)]


def masked_bce_grad(Z: np.ndarray, Y0: np.ndarray, mask: np.ndarray) -> tuple[float, np.ndarray]:
    """Soft-label cross-entropy of logits Z on observed entries: (mean loss, dLoss/dZ)."""
    count = max(int(mask.sum()), 1)
    P = sigmoid(Z)
    loss = float(np.sum((np.logaddexp(0.0, Z) - Y0 * Z) * mask) / count)
    return loss, (P - Y0) * mask / count


class Model(QualityModel):
    """Common plumbing for the quality models in this package (not a model itself)."""

    def _with(self, **overrides: Any) -> Self:
        """An unfitted copy with some parameters replaced (used by cross-validation)."""
        return type(self)(**{**self.get_params(), **overrides})

    def fixed_params(self) -> dict[str, Any]:
        """Parameters with every CV-chosen value filled in (no further selection on refit)."""
        return self.get_params()

    def _set_shape(self, X: np.ndarray, Y: np.ndarray) -> None:
        self.n_features_in_ = int(X.shape[1])
        self.n_models_ = int(Y.shape[1])

    def _check_predict(self, X: Any) -> np.ndarray:
        if not hasattr(self, "n_models_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")
        X = check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, {type(self).__name__} was fitted with "
                f"{self.n_features_in_}"
            )
        return X

    @staticmethod
    def _out(P: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(P, dtype=np.float64), 0.0, 1.0)
