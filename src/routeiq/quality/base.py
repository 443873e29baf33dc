"""Quality-model interface: features in, expected quality per model out."""

from __future__ import annotations

from typing import Self

import numpy as np

from routeiq.estimator import Estimator


class QualityModel(Estimator):
    """Predicts the expected quality in [0, 1] of each candidate model for each prompt.

    ``fit(X, Y, cost)``: ``X`` (n, d) float32 features, ``Y`` (n, m) qualities with NaN for
    unobserved pairs, ``cost`` (n, m) USD or None. ``predict(X)`` returns (n, m) float64.
    Routing (which model to call) is not decided here: see :mod:`routeiq.decision`.
    """

    def fit(self, X: np.ndarray, Y: np.ndarray, cost: np.ndarray | None = None) -> Self:
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError
