"""Pairwise-ranking quality models: global Bradley-Terry (``elo``) and RouteLLM's
similarity-weighted ranking (``sw_ranking``).

Pairwise outcomes come from rows where two models are both observed: with qualities read as
success probabilities of independent draws, model a beats b with weight ``y_a * (1 - y_b)``
and ties carry no preference (for 0/1 labels: one win for the correct model when exactly one
of the two is correct). Ratings are in natural log-odds units (not the 400/log10 Elo scale).
Logged traffic with one observed model per prompt has no pairs: ``elo`` then falls back to
ratings from per-model mean quality, i.e. the ``constant`` baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from routeiq.quality._util import (
    Model,
    check_XY,
    column_means,
    fit_platt,
    l2_normalize,
    logit,
    sigmoid,
)
from routeiq.quality.knn import _neighbours
from routeiq.quality.selection import select_params

_CHUNK = 256


def pair_wins(Y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-row win weights, shape (n, m, m): ``[i, a, b]`` = weight of a beating b in row i."""
    Y0 = np.where(mask, Y, 0.0)
    M = mask.astype(np.float64)
    wins = (Y0 * M)[:, :, None] * ((1.0 - Y0) * M)[:, None, :]
    idx = np.arange(Y.shape[1])
    wins[:, idx, idx] = 0.0
    return wins


def bradley_terry(
    W: np.ndarray, prior: np.ndarray, strength: float, n_iter: int = 25
) -> np.ndarray:
    """Batched MAP Bradley-Terry ratings by Newton's method.

    ``W`` (q, m, m) win weights, ``prior`` (q, m) or (m,) prior ratings, ``strength`` > 0 the
    Gaussian prior precision (it also fixes the otherwise free rating offset).
    Maximises ``sum_ab W_ab log sigmoid(r_a - r_b) - strength / 2 * ||r - prior||^2``.
    """
    q, m, _ = W.shape
    prior = np.broadcast_to(prior, (q, m))
    r = prior.copy()
    Wt = W.transpose(0, 2, 1)
    N = W + Wt
    eye = np.eye(m)
    for _ in range(n_iter):
        P = sigmoid(r[:, :, None] - r[:, None, :])  # P[a, b] = P(a beats b)
        grad = (W * (1.0 - P)).sum(axis=2) - (Wt * P).sum(axis=2) - strength * (r - prior)
        Q = N * P * (1.0 - P)
        A = Q.sum(axis=2)[:, :, None] * eye - Q + strength * eye  # minus the Hessian
        step = np.linalg.solve(A, grad[:, :, None])[:, :, 0]
        r = r + step
        if np.abs(step).max() < 1e-5:  # ratings finer than this never change a routing choice
            break
    return r


class EloQuality(Model):
    """Query-independent Bradley-Terry ratings mapped to expected quality.

    The map is a monotone Platt curve ``q_j = sigmoid(a * r_j + b)`` (``a >= 0``) fitted to all
    observed (model, quality) entries, so predicted quality keeps the rating order and matches
    per-model mean quality as closely as a monotone curve allows. ``l2`` is the prior
    precision on ratings (in pairwise-outcome units).
    """

    name = "elo"

    def __init__(self, l2: float = 1.0) -> None:
        self.l2 = l2

    def fit(self, X: np.ndarray, Y: np.ndarray, cost: np.ndarray | None = None) -> Self:
        X, Y, mask = check_XY(X, Y)
        means = column_means(Y, mask)
        W = pair_wins(Y, mask).sum(axis=0)
        if W.sum() <= 0:  # no row with two observed models: nothing to rank pairwise
            ratings = logit(means)
        else:
            ratings = bradley_terry(W[None], np.zeros(Y.shape[1]), float(self.l2))[0]
        counts = mask.sum(axis=0).astype(np.float64)
        a, b = fit_platt(ratings, means, w=counts)
        self.ratings_ = ratings
        self.quality_ = sigmoid(a * ratings + b)
        self.platt_ = [a, b]
        self._set_shape(X, Y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._check_predict(X)
        return np.repeat(self.quality_[None, :], len(X), axis=0)


class SWRankingQuality(Model):
    """RouteLLM similarity-weighted ranking, restricted to the ``k`` most similar prompts.

    For a query, each of the ``k`` nearest training prompts (cosine) weights its pairwise
    outcomes by RouteLLM's ``10 ** (sim / max_sim)`` (rescaled to mean 1), and Bradley-Terry
    ratings are fitted to those weighted outcomes with a Gaussian prior (precision ``prior``)
    centred on the global ratings. Restricting to top-k rows and solving all queries' m x m
    Newton systems in one batch replaces RouteLLM's per-query logistic regression over every
    battle (too slow to serve). Ratings map to quality through the global Platt curve of
    ``elo`` plus a per-query level shift ``logit(local mean) - logit(global mean)``, where the
    local mean is the weighted mean observed quality of the neighbours (shrunk with ``prior``
    pseudo-rows): ratings only say which model is better, the shift says how hard the prompt is.
    ``k=None`` picks ``k`` from ``k_grid`` by K-fold CV.
    """

    name = "sw_ranking"

    def __init__(
        self,
        k: int | None = None,
        k_grid: Sequence[int] = (20, 50, 200),
        prior: float = 5.0,
        l2: float = 1.0,
        cv: int = 3,
        seed: int = 0,
        scoring: str = "brier",
    ) -> None:
        self.k = k
        self.k_grid = k_grid
        self.prior = prior
        self.l2 = l2
        self.cv = cv
        self.seed = seed
        self.scoring = scoring

    def fit(self, X: np.ndarray, Y: np.ndarray, cost: np.ndarray | None = None) -> Self:
        X, Y, mask = check_XY(X, Y)
        keep = mask.any(axis=1)
        X, Y, mask = X[keep], Y[keep], mask[keep]
        if self.k is None:
            grid = [{"k": int(k)} for k in self.k_grid]
            sel = select_params(
                self._with, grid, X, Y, n_splits=self.cv, seed=self.seed, scoring=self.scoring
            )
            self.k_ = int(sel.best["k"])
            self.cv_scores_ = [float(s) for s in sel.scores]
        else:
            self.k_ = int(self.k)
        elo = EloQuality(l2=self.l2).fit(X, Y)
        self.ratings_ = elo.ratings_
        self.platt_ = list(elo.platt_)
        self.X_ = l2_normalize(X).astype(np.float32)
        self.Y_ = Y.astype(np.float32)  # NaN = unobserved
        self.global_mean_ = float(Y[mask].mean())
        self._set_shape(X, Y)
        self._after_load()
        return self

    def _after_load(self) -> None:
        mask = ~np.isnan(self.Y_)
        Y0 = np.where(mask, self.Y_, 0.0).astype(np.float64)
        # pair_wins factorises: wins[i, a, b] = win_[i, a] * lose_[i, b] (diagonal dropped)
        self._win = Y0 * mask
        self._lose = (1.0 - Y0) * mask
        self._row_sum = Y0.sum(axis=1)
        self._row_count = mask.sum(axis=1).astype(np.float64)

    def fixed_params(self) -> dict[str, Any]:
        return {**self.get_params(), "k": self.k_}

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = l2_normalize(self._check_predict(X)).astype(np.float32)
        m = self.n_models_
        a, b = self.platt_
        g = self.global_mean_
        off_diagonal = 1.0 - np.eye(m)
        out = np.empty((len(X), m))
        for start in range(0, len(X), _CHUNK):
            idx, sims = _neighbours(X[start : start + _CHUNK], self.X_, self.k_, ordered=False)
            sims = sims.astype(np.float64)
            top = sims.max(axis=1, keepdims=True)
            w = np.where(top > 0, 10.0 ** (sims / np.where(top > 0, top, 1.0)), 1.0)
            w /= w.mean(axis=1, keepdims=True)
            weighted_wins = (w[:, :, None] * self._win[idx]).transpose(0, 2, 1)  # (q, m, k)
            W = (weighted_wins @ self._lose[idx]) * off_diagonal
            r = bradley_terry(W, self.ratings_, float(self.prior))
            level = (np.einsum("qk,qk->q", w, self._row_sum[idx]) + self.prior * g) / (
                np.einsum("qk,qk->q", w, self._row_count[idx]) + self.prior
            )
            shift = logit(level) - logit(g)
            out[start : start + _CHUNK] = sigmoid(a * r + b + shift[:, None])
        return self._out(out)
