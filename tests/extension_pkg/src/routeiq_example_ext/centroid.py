"""Nearest-centroid quality model: per-centroid mean quality per model."""

from __future__ import annotations

from typing import Self

import numpy as np

from routeiq.quality.base import QualityModel


class CentroidQuality(QualityModel):
    """``k`` training rows picked with ``seed`` are the centroids; a prompt gets the mean
    observed quality of the training rows nearest the same centroid, shrunk towards each
    model's overall mean by ``shrinkage`` pseudo-observations."""

    name = "centroid"

    def __init__(self, k: int = 8, shrinkage: float = 5.0, seed: int = 0) -> None:
        self.k = k
        self.shrinkage = shrinkage
        self.seed = seed

    def fit(self, X: np.ndarray, Y: np.ndarray, cost: np.ndarray | None = None) -> Self:
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y) or len(X) == 0:
            raise ValueError(f"X (n, d) and Y (n, m) must match, got {X.shape} and {Y.shape}")
        mask = ~np.isnan(Y)
        if not mask.any():
            raise ValueError("Y has no observed quality values")
        rng = np.random.default_rng(self.seed)
        k = min(self.k, len(X))
        self.centroids_ = X[rng.choice(len(X), size=k, replace=False)]
        assign = self._nearest(X)
        counts = mask.sum(axis=0)
        sums = np.where(mask, Y, 0.0).sum(axis=0)
        overall = sums.sum() / counts.sum()
        self.mean_ = np.where(counts > 0, sums / np.maximum(counts, 1), overall)
        table = np.empty((k, Y.shape[1]))
        for c in range(k):
            rows = assign == c
            n = mask[rows].sum(axis=0)
            s = np.where(mask[rows], Y[rows], 0.0).sum(axis=0)
            table[c] = (s + self.shrinkage * self.mean_) / (n + self.shrinkage)
        self.table_ = table
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "table_"):
            raise RuntimeError("CentroidQuality is not fitted; call fit() first")
        return self.table_[self._nearest(np.asarray(X, dtype=np.float64))].astype(np.float64)

    def _nearest(self, X: np.ndarray) -> np.ndarray:
        d = ((X[:, None, :] - self.centroids_[None, :, :]) ** 2).sum(axis=2)
        return np.argmin(d, axis=1)
