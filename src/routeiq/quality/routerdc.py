"""RouterDC-style dual contrastive routing on frozen query features (numpy)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Self

import numpy as np

from routeiq.quality._util import (
    Adam,
    Model,
    check_XY,
    column_means,
    fit_platt,
    logit,
    minibatches,
    sigmoid,
    standardizer,
)
from routeiq.quality.selection import select_with_epochs


def _normalize(U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norm = np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
    return U / norm, norm


class RouterDCQuality(Model):
    """Learned query projection ``P`` and one embedding ``v_j`` per model; score = cosine / tau.

    RouterDC (Chen et al. 2024) fine-tunes a query encoder; here the encoder is frozen and only
    a linear projection of the features is learned, so training is a few seconds of numpy.
    Loss (RouterDC's sample-LLM contrastive loss): for each training row, positives are the
    observed models with the row's top observed score, negatives the observed models scoring
    strictly lower; each positive p contributes ``-log(e^s_p / (e^s_p + sum_neg e^s_n))``.
    Rows where all observed models tie carry no signal and are skipped, so a model is only
    ever compared with models observed on the same prompt. RouterDC's sample-sample loss
    (which regularises the fine-tuned encoder) is omitted. Scores map to quality with a Platt
    curve per model fitted on the training rows where that model was observed. ``epochs=None``
    picks the epoch count from ``epochs_grid`` by K-fold CV. The default CV score is the
    routing regret, not Brier: the loss only ranks models within a prompt (it cannot see how
    hard a prompt is), so Brier barely moves and prefers settings that route worse.
    """

    name = "routerdc"

    def __init__(
        self,
        dim: int = 32,
        temperature: float = 0.05,
        epochs: int | None = None,
        epochs_grid: Sequence[int] = (5, 10, 20, 40),
        lr: float = 3e-3,
        l2: float = 1e-4,
        batch_size: int = 128,
        cv: int = 3,
        seed: int = 0,
        scoring: str = "regret",
    ) -> None:
        self.dim = dim
        self.temperature = temperature
        self.epochs = epochs
        self.epochs_grid = epochs_grid
        self.lr = lr
        self.l2 = l2
        self.batch_size = batch_size
        self.cv = cv
        self.seed = seed
        self.scoring = scoring

    @staticmethod
    def _roles(Y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Yo = np.where(mask, Y, -np.inf)
        top = Yo.max(axis=1, keepdims=True)
        pos = mask & (Yo >= top - 1e-12)
        neg = mask & ~pos
        useful = neg.any(axis=1) & pos.any(axis=1)
        return pos & useful[:, None], neg & useful[:, None]

    def _scores(self, P: np.ndarray, V: np.ndarray, Xs: np.ndarray) -> np.ndarray:
        u, _ = _normalize(Xs @ P)
        v, _ = _normalize(V)
        return (u @ v.T) / float(self.temperature)

    def _train(
        self,
        Xs: np.ndarray,
        Y: np.ndarray,
        mask: np.ndarray,
        epochs: int,
        callback: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        rng = np.random.default_rng(self.seed)
        d, m, k = Xs.shape[1], Y.shape[1], int(self.dim)
        tau = float(self.temperature)
        P = rng.normal(0.0, 1.0 / np.sqrt(d), (d, k))
        V = rng.normal(0.0, 1.0, (m, k))
        pos, neg = self._roles(Y, mask)
        rows = np.flatnonzero(pos.any(axis=1))
        opt = Adam([P, V], lr=self.lr)
        for epoch in range(1, epochs + 1):
            for batch in minibatches(len(rows), int(self.batch_size), rng):
                idx = rows[batch]
                Xb, POS, NEG = Xs[idx], pos[idx], neg[idx]
                u, unorm = _normalize(Xb @ P)
                v, vnorm = _normalize(V)
                S = (u @ v.T) / tau
                E = np.exp(S - 1.0 / tau)  # |S| <= 1/tau: shift keeps exp in range
                D = E + (E * NEG).sum(axis=1, keepdims=True)  # per positive: e^s_p + sum_neg
                R = np.where(POS, 1.0 / D, 0.0)
                G = POS * (E * R - 1.0) + NEG * E * R.sum(axis=1, keepdims=True)
                G /= max(int(POS.sum()), 1)
                du = (G @ v) / tau
                dv = (G.T @ u) / tau
                du = (du - u * (u * du).sum(axis=1, keepdims=True)) / unorm
                dv = (dv - v * (v * dv).sum(axis=1, keepdims=True)) / vnorm
                opt.step([Xb.T @ du + self.l2 * P, dv])
            if callback is not None:
                # calibrated lazily in _forward: only checkpoint epochs are scored
                callback(epoch, (P, V, None, Xs, Y, mask))
        return [P, V, self._calibrate(P, V, Xs, Y, mask)]

    def _calibrate(
        self, P: np.ndarray, V: np.ndarray, Xs: np.ndarray, Y: np.ndarray, mask: np.ndarray
    ) -> np.ndarray:
        S = self._scores(P, V, Xs)
        means = column_means(Y, mask)
        return np.array(
            [
                fit_platt(S[mask[:, j], j], Y[mask[:, j], j])
                if mask[:, j].any()
                else (0.0, float(logit(means[j])))  # never observed: the overall mean
                for j in range(Y.shape[1])
            ]
        )

    def _forward(self, state: Any, Xs: np.ndarray) -> np.ndarray:
        P, V, platt = state[:3]
        if platt is None:
            platt = self._calibrate(P, V, *state[3:])
        return sigmoid(self._scores(P, V, Xs) * platt[:, 0] + platt[:, 1])

    def fit(self, X: np.ndarray, Y: np.ndarray, cost: np.ndarray | None = None) -> Self:
        X, Y, mask = check_XY(X, Y)
        mean, scale = standardizer(X)
        Xs = (X - mean) / scale
        epochs = self.epochs_grid if self.epochs is None else [int(self.epochs)]
        _, self.epochs_, scores = select_with_epochs(
            lambda _, n: lambda Xt, Yt, Mt, cb: self._train(Xt, Yt, Mt, n, cb),
            self._forward,
            [None],
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
        P, V, platt = self._train(Xs, Y, mask, self.epochs_)
        self.proj_ = P / scale[:, None]  # fold the standardisation into the projection
        self.proj_bias_ = -mean @ self.proj_
        self.model_emb_ = _normalize(V)[0]
        self.platt_a_ = platt[:, 0].copy()
        self.platt_b_ = platt[:, 1].copy()
        self._set_shape(X, Y)
        return self

    def fixed_params(self) -> dict[str, Any]:
        return {**self.get_params(), "epochs": self.epochs_}

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._check_predict(X)
        u, _ = _normalize(X @ self.proj_ + self.proj_bias_)
        S = (u @ self.model_emb_.T) / float(self.temperature)
        return self._out(sigmoid(S * self.platt_a_ + self.platt_b_))
