"""A small multi-output MLP trained in numpy with a masked soft-label cross-entropy."""

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


class MLPQuality(Model):
    """One hidden ReLU layer, one sigmoid output per model, trained on observed entries only.

    The loss is soft-label cross-entropy averaged over observed (row, model) pairs plus L2
    (``alpha``) on the weights, minimised with Adam on minibatches. That is the per-model mask
    scikit-learn's ``MLPRegressor`` cannot express (it has no sample weights per output), so
    nothing is imputed. Inputs are standardised. ``alpha=None`` / ``epochs=None`` pick from
    ``alpha_grid`` x ``epochs_grid`` by K-fold CV (one training run per fold and alpha, scored
    at each epoch checkpoint).
    """

    name = "mlp"

    def __init__(
        self,
        hidden: int = 64,
        alpha: float | None = None,
        alpha_grid: Sequence[float] = (1e-3, 1e-2),
        epochs: int | None = None,
        epochs_grid: Sequence[int] = (5, 10, 20, 40),
        lr: float = 3e-3,
        batch_size: int = 128,
        cv: int = 3,
        seed: int = 0,
        scoring: str = "brier",
    ) -> None:
        self.hidden = hidden
        self.alpha = alpha
        self.alpha_grid = alpha_grid
        self.epochs = epochs
        self.epochs_grid = epochs_grid
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
        alpha: float,
        epochs: int,
    ) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        d, m, h = Xs.shape[1], Y.shape[1], int(self.hidden)
        W1 = rng.normal(0.0, np.sqrt(2.0 / d), (d, h))
        b1 = np.zeros(h)
        W2 = rng.normal(0.0, np.sqrt(1.0 / h), (h, m))
        b2 = logit(column_means(Y, mask))
        params = [W1, b1, W2, b2]
        opt = Adam(params, lr=self.lr)
        Y0 = np.where(mask, Y, 0.0)
        for epoch in range(1, epochs + 1):
            for idx in minibatches(len(Xs), int(self.batch_size), rng):
                if not mask[idx].any():
                    continue
                H = np.maximum(Xs[idx] @ W1 + b1, 0.0)
                _, G = masked_bce_grad(H @ W2 + b2, Y0[idx], mask[idx])
                dH = (G @ W2.T) * (H > 0)
                # objective: mean cross-entropy + alpha / 2 * ||W||^2
                opt.step([Xs[idx].T @ dH + alpha * W1, dH.sum(0), H.T @ G + alpha * W2, G.sum(0)])
            if callback is not None:
                callback(epoch, params)
        return params

    @staticmethod
    def _forward(params: list[np.ndarray], Xs: np.ndarray) -> np.ndarray:
        W1, b1, W2, b2 = params
        return sigmoid(np.maximum(Xs @ W1 + b1, 0.0) @ W2 + b2)

    def fit(self, X: np.ndarray, Y: np.ndarray, cost: np.ndarray | None = None) -> Self:
        X, Y, mask = check_XY(X, Y)
        mean, scale = standardizer(X)
        Xs = (X - mean) / scale
        alphas = [float(a) for a in self.alpha_grid] if self.alpha is None else [self.alpha]
        epochs = self.epochs_grid if self.epochs is None else [int(self.epochs)]
        alpha, self.epochs_, scores = select_with_epochs(
            lambda a, n: partial(self._train, alpha=a, epochs=n),
            self._forward,
            alphas,
            epochs,
            Xs,
            Y,
            mask,
            self.cv,
            self.seed,
            self.scoring,
        )
        self.alpha_ = float(alpha)
        if scores is not None:
            self.cv_scores_ = scores
        W1, b1, W2, b2 = self._train(Xs, Y, mask, alpha=self.alpha_, epochs=self.epochs_)
        # fold the standardisation into the first layer
        self.W1_ = W1 / scale[:, None]
        self.b1_ = b1 - mean @ self.W1_
        self.W2_, self.b2_ = W2, b2
        self._set_shape(X, Y)
        return self

    def fixed_params(self) -> dict[str, Any]:
        return {**self.get_params(), "alpha": self.alpha_, "epochs": self.epochs_}

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._check_predict(X)
        return self._out(self._forward([self.W1_, self.b1_, self.W2_, self.b2_], X))
