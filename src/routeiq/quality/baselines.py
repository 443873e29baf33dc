"""Query-independent baselines: per-model mean quality, and random scores."""

from __future__ import annotations

import hashlib
from typing import Self

import numpy as np

from routeiq.quality._util import Model, check_XY, column_means


class ConstantQuality(Model):
    """Per-model mean observed quality, the same for every prompt.

    With the utility rule (quality - lambda * cost) this is the best single model at
    lambda = 0 and the cheapest model as lambda grows. A model with no observations gets the
    mean over all observed entries.
    """

    name = "constant"

    def __init__(self) -> None:
        pass

    def fit(self, X: np.ndarray, Y: np.ndarray, cost: np.ndarray | None = None) -> Self:
        X, Y, mask = check_XY(X, Y)
        self._set_shape(X, Y)
        self.mean_ = column_means(Y, mask)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._check_predict(X)
        return np.repeat(self.mean_[None, :], len(X), axis=0).astype(np.float64)


class RandomQuality(Model):
    """Uniform random scores: the random-router baseline for evaluation.

    Each row's scores come from a generator seeded with ``seed`` and a hash of the row's
    feature bytes, so predictions are deterministic given the seed and the input (hence also
    given the input order), identical whether rows are scored one at a time or in a batch, and
    independent across distinct prompts. Argmax of the scores is a uniformly random model.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, X: np.ndarray, Y: np.ndarray, cost: np.ndarray | None = None) -> Self:
        X, Y, _ = check_XY(X, Y)
        self._set_shape(X, Y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(self._check_predict(X), dtype=np.float32)
        out = np.empty((len(X), self.n_models_), dtype=np.float64)
        salt = int(self.seed).to_bytes(8, "little", signed=True)
        for i, row in enumerate(X):
            digest = hashlib.blake2b(row.tobytes(), digest_size=16, salt=salt).digest()
            out[i] = np.random.default_rng(int.from_bytes(digest, "little")).random(self.n_models_)
        return out
