"""RouteLLM-style bilinear matrix factorisation: q_ij = sigmoid(<W x_i, v_j> + b_j)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Self

import numpy as np

from routeiq.quality._util import (
    Adam,
    Model,
    check_XY,
    column_means,
    logit,
    masked_bce_grad,
    minibatches,
    sigmoid,
    standardizer,
)
from routeiq.quality.selection import select_with_epochs


class MFQuality(Model):
    """Prompt features projected to ``dim`` factors (``W``), one factor vector per model.

    RouteLLM's MF router scores a (prompt, model) pair by the inner product of a projected
    prompt embedding with a learned model embedding; with N models this is a rank-``dim``
    multi-output logistic model. Trained with Adam on the observed entries only (masked
    soft-label cross-entropy) with L2 ``l2`` on ``W`` and ``V``. ``dim=None`` / ``epochs=None``
    pick from ``dim_grid`` x ``epochs_grid`` by K-fold CV (epochs from checkpoints of one run
    per fold and dim).
    """

    name = "mf"

    def __init__(
        self,
        dim: int | None = None,
        dim_grid: Sequence[int] = (8, 32),
        epochs: int | None = None,
        epochs_grid: Sequence[int] = (5, 10, 20, 40),
        l2: float = 1e-4,
        lr: float = 3e-3,
        batch_size: int = 128,
        cv: int = 3,
        seed: int = 0,
        scoring: str = "brier",
    ) -> None:
        self.dim = dim
        self.dim_grid = dim_grid
        self.epochs = epochs
        self.epochs_grid = epochs_grid
        self.l2 = l2
        self.lr = lr
        self.batch_size = batch_size
        self.cv = cv
        self.seed = seed
        self.scoring = scoring

    def _train(
        self,
        Xs: np.ndarray,
        Y: np.ndarray,
        mask: np.ndarray,
        callback: Callable[[int, Any], None] | None = None,
        *,
        dim: int,
        epochs: int,
    ) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        d, m = Xs.shape[1], Y.shape[1]
        W = rng.normal(0.0, 1.0 / np.sqrt(d), (d, dim))
        V = rng.normal(0.0, 0.1, (m, dim))
        b = logit(column_means(Y, mask))
        params = [W, V, b]
        opt = Adam(params, lr=self.lr)
        Y0 = np.where(mask, Y, 0.0)
        for epoch in range(1, epochs + 1):
            for idx in minibatches(len(Xs), int(self.batch_size), rng):
                if not mask[idx].any():
                    continue
                U = Xs[idx] @ W
                _, G = masked_bce_grad(U @ V.T + b, Y0[idx], mask[idx])
                opt.step([Xs[idx].T @ (G @ V) + self.l2 * W, G.T @ U + self.l2 * V, G.sum(0)])
            if callback is not None:
                callback(epoch, params)
        return params

    @staticmethod
    def _forward(params: list[np.ndarray], Xs: np.ndarray) -> np.ndarray:
        W, V, b = params
        return sigmoid((Xs @ W) @ V.T + b)

    def fit(self, X: np.ndarray, Y: np.ndarray, cost: np.ndarray | None = None) -> Self:
        X, Y, mask = check_XY(X, Y)
        mean, scale = standardizer(X)
        Xs = (X - mean) / scale
        dims = [int(x) for x in self.dim_grid] if self.dim is None else [int(self.dim)]
        epochs = self.epochs_grid if self.epochs is None else [int(self.epochs)]
        self.dim_, self.epochs_, scores = select_with_epochs(
            lambda dim, n: partial(self._train, dim=dim, epochs=n),
            self._forward,
            dims,
            epochs,
            Xs,
            Y,
            mask,
            self.cv,
            self.seed,
            self.scoring,
        )
        if scores is not None:
            self.cv_scores_ = scores
        W, V, b = self._train(Xs, Y, mask, dim=self.dim_, epochs=self.epochs_)
        self.W_ = W / scale[:, None]  # fold the standardisation into the projection
        self.w0_ = -mean @ self.W_
        self.V_, self.b_ = V, b
        self._set_shape(X, Y)
        return self

    def fixed_params(self) -> dict[str, Any]:
        return {**self.get_params(), "dim": self.dim_, "epochs": self.epochs_}

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._check_predict(X)
        return self._out(sigmoid((X @ self.W_ + self.w0_) @ self.V_.T + self.b_))
