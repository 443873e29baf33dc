"""Hashed character 3-grams with IDF weights."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Self

import numpy as np

from routeiq.features.base import Featurizer


class CharHashFeaturizer(Featurizer):
    """Counts of character 3-grams of the last ``max_chars`` characters, hashed into
    ``n_features`` buckets, weighted by IDF learned at ``fit``, L2-normalised."""

    name = "charhash"
    inline_safe = True

    def __init__(self, n_features: int = 256, max_chars: int = 2000) -> None:
        self.n_features = n_features
        self.max_chars = max_chars

    @property
    def n_features_out(self) -> int:
        return self.n_features

    def fit(self, texts: Sequence[str]) -> Self:
        counts = self._counts(texts)
        df = (counts > 0).sum(axis=0)
        self.idf_ = (np.log((1 + len(texts)) / (1 + df)) + 1.0).astype(np.float32)
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        if not hasattr(self, "idf_"):
            raise RuntimeError("CharHashFeaturizer is not fitted; call fit() first")
        rows = self._counts(texts) * self.idf_
        norm = np.linalg.norm(rows, axis=1, keepdims=True)
        return (rows / np.maximum(norm, 1e-12)).astype(np.float32)

    def _counts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.n_features), dtype=np.float32)
        for i, text in enumerate(texts):
            tail = text[-self.max_chars :].lower()
            for j in range(max(len(tail) - 2, 0)):
                out[i, zlib.crc32(tail[j : j + 3].encode()) % self.n_features] += 1.0
        return out
