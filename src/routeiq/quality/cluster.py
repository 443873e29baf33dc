"""k-means cluster lookup: per-cluster, per-model mean quality shrunk to the model's mean."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from routeiq.quality._util import Model, check_XY, column_means, l2_normalize
from routeiq.quality.selection import kfold, score


def _table(
    labels: np.ndarray, Y: np.ndarray, mask: np.ndarray, k: int, prior: float, means: np.ndarray
) -> np.ndarray:
    """(k, m) shrunk means: (sum of observed y + prior * model mean) / (count + prior)."""
    sums = np.zeros((k, Y.shape[1]))
    counts = np.zeros((k, Y.shape[1]))
    np.add.at(sums, labels, np.where(mask, Y, 0.0))
    np.add.at(counts, labels, mask.astype(np.float64))
    return (sums + prior * means) / (counts + prior)


class ClusterQuality(Model):
    """k-means on (L2-normalised) features; a prompt gets its nearest centre's quality table.

    Each cell is the mean observed quality of that model on the cluster's training prompts,
    shrunk toward the model's global mean with ``prior`` pseudo-observations, so small clusters
    and rarely observed models stay sensible. ``k=None`` picks the number of clusters from
    ``k_grid`` by K-fold CV. k-means never sees labels, so it is fitted once per k on all
    training features and only the quality tables are cross-validated (a cheap, label-free
    form of transduction).
    """

    name = "cluster"

    def __init__(
        self,
        k: int | None = None,
        k_grid: Sequence[int] = (2, 4, 8, 16, 32, 64),
        prior: float = 5.0,
        normalize: bool = True,
        n_init: int = 1,
        cv: int = 3,
        seed: int = 0,
        scoring: str = "brier",
    ) -> None:
        self.k = k
        self.k_grid = k_grid
        self.prior = prior
        self.normalize = normalize
        self.n_init = n_init
        self.cv = cv
        self.seed = seed
        self.scoring = scoring

    def _kmeans(self, Xn: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, min(int(k), len(Xn)))
        from sklearn.cluster import KMeans  # training only: serving stays numpy (start-up time)

        km = KMeans(n_clusters=k, n_init=int(self.n_init), random_state=self.seed).fit(Xn)
        return km.cluster_centers_.astype(np.float64), km.labels_.astype(np.int64)

    def fit(self, X: np.ndarray, Y: np.ndarray, cost: np.ndarray | None = None) -> Self:
        X, Y, mask = check_XY(X, Y)
        Xn = l2_normalize(X) if self.normalize else X.astype(np.float64)
        means = column_means(Y, mask)
        ks = [int(k) for k in self.k_grid] if self.k is None else [int(self.k)]
        best: tuple[float, np.ndarray, np.ndarray] | None = None
        scores = []
        folds = kfold(len(X), self.cv, self.seed) if len(ks) > 1 else []
        for k in ks:
            centers, labels = self._kmeans(Xn, k)
            if folds:
                P = np.empty(Y.shape)
                for tr, va in folds:
                    fold_means = column_means(Y[tr], mask[tr])
                    table = _table(
                        labels[tr], Y[tr], mask[tr], len(centers), self.prior, fold_means
                    )
                    P[va] = table[labels[va]]
                s = score(Y, P, self.scoring)
                scores.append(s)
            else:
                s = 0.0
            if best is None or s < best[0]:
                best = (s, centers, labels)
        assert best is not None
        _, centers, labels = best
        self.centers_ = centers
        self.table_ = _table(labels, Y, mask, len(centers), self.prior, means)
        self.k_ = len(centers)
        if scores:
            self.cv_scores_ = scores
        self._set_shape(X, Y)
        self._after_load()
        return self

    def _after_load(self) -> None:
        self._half_sq = 0.5 * np.sum(self.centers_**2, axis=1)

    def fixed_params(self) -> dict[str, Any]:
        return {**self.get_params(), "k": self.k_}

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._check_predict(X)
        Xn = l2_normalize(X) if self.normalize else X
        # nearest centre: argmin ||x - c||^2 = argmax (x.c - ||c||^2 / 2)
        labels = np.argmax(Xn @ self.centers_.T - self._half_sq, axis=1)
        return self._out(self.table_[labels])
