"""Per-model linear classifiers: logistic regression and a Platt-calibrated linear SVM.

Both are fitted on standardised features, with the standardisation folded into ``coef_`` and
``intercept_`` so ``predict`` is one matmul. Each model is fitted on the rows where it was
observed (per-model mask). Fractional qualities in [0, 1] are soft labels.
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
    logit,
    sigmoid,
    standardizer,
)
from routeiq.quality.selection import kfold, masked_brier, select_params


def _per_model(value: float | Sequence[float], m: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        return np.full(m, float(arr[0]))
    if arr.size != m:
        raise ValueError(f"C has {arr.size} values for {m} models")
    return arr


def _fit_soft_logistic(
    Xs: np.ndarray, Y: np.ndarray, mask: np.ndarray, C: np.ndarray, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """L2 logistic regression per model with soft labels, on observed entries only.

    The loss is a sum of independent per-model terms ``sum_i CE(y_ij, sigmoid(x_i.w_j + b_j))
    + ||w_j||^2 / (2 C_j)`` (the scikit-learn ``LogisticRegression(C)`` objective with the
    soft label written as weights y and 1-y on the two classes), solved jointly with L-BFGS
    because one masked matmul per step serves every model.
    """
    d = Xs.shape[1]
    m = Y.shape[1]
    Y0 = np.where(mask, Y, 0.0)
    Mf = mask.astype(np.float64)
    lam = 1.0 / C
    means = column_means(Y, mask)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W = theta[: d * m].reshape(d, m)
        b = theta[d * m :]
        Z = Xs @ W + b
        value = np.sum((np.logaddexp(0.0, Z) - Y0 * Z) * Mf) + 0.5 * np.sum(lam * W * W)
        R = (sigmoid(Z) - Y0) * Mf
        grad = np.concatenate([(Xs.T @ R + lam * W).ravel(), R.sum(axis=0)])
        return float(value), grad

    theta0 = np.concatenate([np.zeros(d * m), logit(means)])
    from scipy.optimize import minimize  # training only: serving stays numpy (start-up time)

    res = minimize(
        loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": 1e-6}
    )
    return res.x[: d * m].reshape(d, m), res.x[d * m :]


class LogisticQuality(Model):
    """Per-model L2 logistic regression; soft labels for fractional qualities.

    Soft labels: a row with quality y counts as a positive with weight y and a negative with
    weight 1 - y (the duplication trick), i.e. cross-entropy against y. Binary labels are the
    special case. ``C=None`` picks C from ``C_grid`` by K-fold CV: per model with
    ``scoring="brier"`` (masked Brier is separable per model), one C for all models with
    ``scoring="regret"``; a float or a per-model list fixes C.
    """

    name = "logistic"

    def __init__(
        self,
        C: float | Sequence[float] | None = None,
        C_grid: Sequence[float] = (0.001, 0.003, 0.01, 0.03, 0.1, 1.0),
        max_iter: int = 300,
        cv: int = 3,
        seed: int = 0,
        scoring: str = "brier",
    ) -> None:
        self.C = C
        self.C_grid = C_grid
        self.max_iter = max_iter
        self.cv = cv
        self.seed = seed
        self.scoring = scoring

    def fit(self, X: np.ndarray, Y: np.ndarray, cost: np.ndarray | None = None) -> Self:
        X, Y, mask = check_XY(X, Y)
        m = Y.shape[1]
        if self.C is None:
            grid = [{"C": float(c)} for c in self.C_grid]
            sel = select_params(
                self._with, grid, X, Y, n_splits=self.cv, seed=self.seed, scoring=self.scoring
            )
            if self.scoring == "brier":  # separable: one C per model
                C = np.array([grid[g]["C"] for g in sel.per_column_best()])
            else:
                C = np.full(m, sel.best["C"])
            self.cv_scores_ = [float(s) for s in sel.scores]
        else:
            C = _per_model(self.C, m)
        mean, scale = standardizer(X)
        W, b = _fit_soft_logistic((X - mean) / scale, Y, mask, C, self.max_iter)
        self.coef_ = W / scale[:, None]
        self.intercept_ = b - mean @ self.coef_
        self.C_ = [float(c) for c in C]
        self._set_shape(X, Y)
        return self

    def fixed_params(self) -> dict[str, Any]:
        return {**self.get_params(), "C": list(self.C_)}

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._check_predict(X)
        return self._out(sigmoid(X @ self.coef_ + self.intercept_))


class SVMQuality(Model):
    """Per-model ``LinearSVC`` with Platt scaling of the decision function.

    Soft labels use the same duplication trick as logistic (sample weights y and 1 - y). The
    Platt map ``sigmoid(a * f + b)`` of each model is fitted on out-of-fold decision values
    (K-fold over the training rows), which are also used to choose C per model from
    ``C_grid``. The final SVM is refitted on all rows. A model whose labels never vary gets a
    constant prediction (its mean).
    """

    name = "svm"

    def __init__(
        self,
        C: float | Sequence[float] | None = None,
        C_grid: Sequence[float] = (1e-5, 1e-4, 1e-3, 1e-2, 0.1),
        cv: int = 3,
        seed: int = 0,
    ) -> None:
        self.C = C
        self.C_grid = C_grid
        self.cv = cv
        self.seed = seed

    @staticmethod
    def _fit_column(
        Xs: np.ndarray, y: np.ndarray, C: float, seed: int
    ) -> tuple[np.ndarray, float] | None:
        """Linear SVM on soft labels; None when the labels carry no contrast."""
        pos, neg = y, 1.0 - y
        if pos.sum() <= 1e-9 or neg.sum() <= 1e-9:
            return None
        XX = np.vstack([Xs, Xs])
        labels = np.r_[np.ones(len(y)), np.zeros(len(y))]
        weights = np.r_[pos, neg]
        keep = weights > 0
        from sklearn.svm import LinearSVC  # training only: serving stays numpy (start-up time)

        svc = LinearSVC(C=C, dual="auto", random_state=seed, max_iter=2000)
        svc.fit(XX[keep], labels[keep], sample_weight=weights[keep])
        return svc.coef_[0].copy(), float(svc.intercept_[0])

    def fit(self, X: np.ndarray, Y: np.ndarray, cost: np.ndarray | None = None) -> Self:
        X, Y, mask = check_XY(X, Y)
        n, d = X.shape
        m = Y.shape[1]
        means = column_means(Y, mask)
        mean, scale = standardizer(X)
        Xs = (X - mean) / scale
        if self.C is None:
            candidates = [np.full(m, float(c)) for c in self.C_grid]
        else:
            candidates = [_per_model(self.C, m)]
        folds = kfold(n, self.cv, self.seed)
        # Out-of-fold decision values per candidate C: they choose C and fit the Platt map.
        best_score = np.full(m, np.inf)
        chosen_C = np.zeros(m)
        platt = np.zeros((m, 2))
        for Cs in candidates:
            for j in range(m):
                Cj = float(Cs[j])
                F = np.full(n, np.nan)
                for tr, va in folds:
                    rows = tr[mask[tr, j]]
                    fitted = self._fit_column(Xs[rows], Y[rows, j], Cj, self.seed)
                    F[va] = 0.0 if fitted is None else Xs[va] @ fitted[0] + fitted[1]
                obs = mask[:, j]
                if not obs.any():
                    a, b = 0.0, float(logit(means[j]))
                    err = 0.0
                else:
                    a, b = fit_platt(F[obs], Y[obs, j])
                    err = float(masked_brier(Y[obs, j], sigmoid(a * F[obs] + b)))
                if err < best_score[j]:
                    best_score[j], chosen_C[j], platt[j] = err, Cj, (a, b)
        coef = np.zeros((d, m))
        intercept = np.zeros(m)
        for j in range(m):
            rows = mask[:, j]
            fitted = self._fit_column(Xs[rows], Y[rows, j], chosen_C[j], self.seed)
            if fitted is None:  # constant labels: prediction = sigmoid(b) = mean
                platt[j] = (0.0, float(logit(means[j])))
            else:
                coef[:, j], intercept[j] = fitted
        self.coef_ = coef / scale[:, None]
        self.intercept_ = intercept - mean @ self.coef_
        self.platt_a_ = platt[:, 0].copy()
        self.platt_b_ = platt[:, 1].copy()
        self.C_ = [float(c) for c in chosen_C]
        self._set_shape(X, Y)
        return self

    def fixed_params(self) -> dict[str, Any]:
        return {**self.get_params(), "C": list(self.C_)}

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._check_predict(X)
        F = X @ self.coef_ + self.intercept_
        return self._out(sigmoid(self.platt_a_ * F + self.platt_b_))
