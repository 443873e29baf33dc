"""Featurizer interface: texts in, a float32 matrix out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from routeiq.estimator import Estimator


class Featurizer(Estimator):
    """Turns prompt texts into fixed-width feature rows.

    ``fit`` may learn corpus statistics (IDF weights); ``transform`` is pure and thread-safe,
    so the gateway can call it from a worker thread. ``inline_safe`` says one text costs well
    under a millisecond, bounded: the gateway may then featurize on its event loop instead of
    paying a thread hop (``scoring: auto``).
    """

    inline_safe = False

    @property
    def n_features_out(self) -> int:
        """Width of the rows :meth:`transform` returns."""
        raise NotImplementedError

    def fit(self, texts: Sequence[str]) -> Self:
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def fit_transform(self, texts: Sequence[str]) -> np.ndarray:
        return self.fit(texts).transform(texts)


def featurizer_digest(featurizer: Featurizer) -> str:
    """SHA-256 of a fitted featurizer (name, parameters, learned state): tags logged feature
    vectors, so training on them can check it uses the featurizer that made them."""
    import hashlib
    import json

    scalars, arrays = featurizer.get_state()
    h = hashlib.sha256()
    head = [featurizer.name, featurizer.get_params(), scalars]
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for key in sorted(arrays):
        arr = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()
