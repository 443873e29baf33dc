"""Per-model cost prediction from prompt length."""

from __future__ import annotations

from typing import Self

import numpy as np

from routeiq.estimator import Estimator


class CostModel(Estimator):
    """``cost[j] = intercept_[j] + slope_[j] * input_tokens``, fitted per model.

    Cost is driven by length, not content, so a two-parameter fit per model on the observed
    (prompt, model) costs is enough; slopes are clipped at zero so longer prompts never look
    cheaper. A model with fewer than ``min_rows`` observed costs gets its mean cost (or, with
    none, the mean over all models) as a flat estimate.
    """

    name = "linear-tokens"

    def __init__(self, min_rows: int = 10) -> None:
        self.min_rows = min_rows

    def fit(self, input_tokens: np.ndarray, cost: np.ndarray) -> Self:
        tokens = np.asarray(input_tokens, dtype=np.float64)
        cost = np.asarray(cost, dtype=np.float64)
        m = cost.shape[1]
        observed_all = cost[~np.isnan(cost)]
        fallback = float(observed_all.mean()) if observed_all.size else 0.0
        intercept, slope = np.full(m, fallback), np.zeros(m)
        for j in range(m):
            seen = ~np.isnan(cost[:, j])
            if seen.sum() == 0:
                continue
            t, c = tokens[seen], cost[seen, j]
            intercept[j] = c.mean()
            if seen.sum() >= self.min_rows and t.std() > 0:
                b = max(0.0, float(np.cov(t, c, bias=True)[0, 1] / t.var()))
                slope[j], intercept[j] = b, max(0.0, float(c.mean() - b * t.mean()))
        self.intercept_, self.slope_ = intercept, slope
        return self

    def predict(self, input_tokens: np.ndarray) -> np.ndarray:
        self._check_fitted("slope_")
        tokens = np.asarray(input_tokens, dtype=np.float64).reshape(-1, 1)
        return self.intercept_[None, :] + tokens * self.slope_[None, :]
