"""k-nearest-neighbour quality: average the labels of the most similar training prompts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from routeiq.quality._util import Model, check_XY, column_means, l2_normalize
from routeiq.quality.selection import kfold, score

_CHUNK = 512  # query rows per similarity block: bounds memory at 512 x n_train floats


def _neighbours(Q: np.ndarray, R: np.ndarray, k: int, ordered: bool) -> tuple[np.ndarray, ...]:
    """Indices (q, k) of the ``k`` most cosine-similar rows of ``R`` and their similarities."""
    S = Q @ R.T
    k = min(k, S.shape[1])
    if k < S.shape[1]:
        idx = np.argpartition(-S, k - 1, axis=1)[:, :k]
    else:
        idx = np.broadcast_to(np.arange(S.shape[1]), S.shape)
    sims = np.take_along_axis(S, idx, axis=1)
    if ordered:
        order = np.argsort(-sims, axis=1, kind="stable")
        idx, sims = np.take_along_axis(idx, order, axis=1), np.take_along_axis(sims, order, 1)
    return idx, sims


def _aggregate(
    idx: np.ndarray,
    sims: np.ndarray,
    Y0: np.ndarray,
    M: np.ndarray,
    means: np.ndarray,
    prior: float,
    weights: str,
) -> np.ndarray:
    """Weighted masked mean of the neighbours' labels, shrunk to ``means`` by ``prior``."""
    if weights == "distance":
        w = np.maximum(sims, 0.0) + 1e-6
        w = w / w.mean(axis=1, keepdims=True)
    else:
        w = np.ones(idx.shape, dtype=np.float32)
    num = np.einsum("qk,qkm->qm", w, Y0[idx])
    den = np.einsum("qk,qkm->qm", w, M[idx])
    return (num + prior * means) / (den + prior)


class KNNQuality(Model):
    """Cosine kNN over L2-normalised features (brute-force numpy matmul).

    For each model, the prediction is the (optionally similarity-weighted) mean of the labels
    the model has among the ``k`` nearest training prompts, shrunk toward the model's global
    mean with ``prior`` pseudo-neighbours: ``(sum w*y + prior*mean) / (sum w + prior)``. A
    neighbour without a label for that model simply does not count (masked average), so
    logged traffic with one observed model per prompt works; there the shrinkage matters,
    since each model then has only a fraction of the k neighbours labelled.

    Parameters
    ----------
    k, prior: neighbours and shrinkage strength (in neighbours); ``None`` chooses from
        ``k_grid`` x ``prior_grid`` by K-fold CV (``scoring``, see
        :mod:`routeiq.quality.selection`). One neighbour search per fold serves the grid.
    weights: ``"uniform"`` or ``"distance"`` (weight = cosine similarity clipped at 0,
        rescaled to mean 1 over the k neighbours so ``prior`` keeps its meaning).
    """

    name = "knn"

    def __init__(
        self,
        k: int | None = None,
        k_grid: Sequence[int] = (5, 10, 25, 50, 100),
        weights: str = "distance",
        prior: float | None = None,
        prior_grid: Sequence[float] = (1.0, 5.0, 20.0),
        cv: int = 3,
        seed: int = 0,
        scoring: str = "brier",
    ) -> None:
        self.k = k
        self.k_grid = k_grid
        self.weights = weights
        self.prior = prior
        self.prior_grid = prior_grid
        self.cv = cv
        self.seed = seed
        self.scoring = scoring

    def _select(self, Xn: np.ndarray, Y: np.ndarray, mask: np.ndarray) -> None:
        ks = sorted(int(k) for k in self.k_grid) if self.k is None else [int(self.k)]
        priors = [float(p) for p in self.prior_grid] if self.prior is None else [self.prior]
        grid = [(k, p) for k in ks for p in priors]
        self.k_, self.prior_ = grid[0]
        if len(grid) == 1:
            return
        Y0 = np.where(mask, Y, 0.0).astype(np.float32)
        M = mask.astype(np.float32)
        P = np.empty((len(grid), *Y.shape))
        for tr, va in kfold(len(Xn), self.cv, self.seed):
            means = column_means(Y[tr], mask[tr])
            for start in range(0, len(va), _CHUNK):
                rows = va[start : start + _CHUNK]
                idx, sims = _neighbours(Xn[rows], Xn[tr], ks[-1], ordered=True)
                for g, (k, p) in enumerate(grid):
                    P[g][rows] = _aggregate(
                        idx[:, :k], sims[:, :k], Y0[tr], M[tr], means, p, self.weights
                    )
        scores = [score(Y, P[g], self.scoring) for g in range(len(grid))]
        self.k_, self.prior_ = grid[int(np.argmin(scores))]
        self.cv_scores_ = scores

    def fit(self, X: np.ndarray, Y: np.ndarray, cost: np.ndarray | None = None) -> Self:
        if self.weights not in ("uniform", "distance"):
            raise ValueError(f"weights must be 'uniform' or 'distance', got {self.weights!r}")
        X, Y, mask = check_XY(X, Y)
        keep = mask.any(axis=1)  # unlabelled rows carry no information
        X, Y, mask = X[keep], Y[keep], mask[keep]
        Xn = l2_normalize(X).astype(np.float32)
        self._select(Xn, Y, mask)
        self._set_shape(X, Y)
        self.X_ = Xn.astype(np.float16)  # half the artifact; served from the same values
        self.Y_ = Y.astype(np.float32)  # NaN = unobserved
        self.mean_ = column_means(Y, mask)
        self._after_load()
        return self

    def fixed_params(self) -> dict[str, Any]:
        return {**self.get_params(), "k": self.k_, "prior": self.prior_}

    def _after_load(self) -> None:
        self._X = np.asarray(self.X_, dtype=np.float32)
        mask = ~np.isnan(self.Y_)
        self._mask = mask.astype(np.float32)
        self._Y0 = np.where(mask, self.Y_, 0.0).astype(np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = l2_normalize(self._check_predict(X)).astype(np.float32)
        out = np.empty((len(X), self.n_models_))
        for start in range(0, len(X), _CHUNK):
            idx, sims = _neighbours(X[start : start + _CHUNK], self._X, self.k_, ordered=False)
            out[start : start + _CHUNK] = _aggregate(
                idx, sims, self._Y0, self._mask, self.mean_, self.prior_, self.weights
            )
        return self._out(out)
