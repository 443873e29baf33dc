"""Thread-safe LRU cache of feature rows keyed by a content hash of the text."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from routeiq.features._text import check_texts
from routeiq.features.base import Featurizer


def text_key(text: str) -> bytes:
    """128-bit BLAKE2b digest of the UTF-8 text (the cache never holds prompt text)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class CachedFeaturizer(Featurizer):
    """Wraps a fitted featurizer; repeated prompts (retries, shared templates) skip the work.

    ``transform`` computes only the misses, in one call to the wrapped featurizer, and returns
    fresh arrays (callers may modify them). Safe to call from several threads: the lock guards
    the LRU only, so a slow inner ``transform`` does not serialise other threads' cache hits.

    This is a serving wrapper, not an artifact: persist ``.featurizer`` instead.
    """

    def __init__(self, featurizer: Featurizer, max_entries: int = 4096) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self.featurizer = featurizer
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._rows: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._generation = 0  # bumped by clear(): rows computed before it are not stored

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.featurizer.name

    @property
    def inline_safe(self) -> bool:  # type: ignore[override]
        return bool(self.featurizer.inline_safe)

    @property
    def n_features_out(self) -> int:
        return int(self.featurizer.n_features_out)

    def fit(self, texts: Sequence[str]) -> Self:
        self.featurizer.fit(texts)
        self.clear()  # rows from the previous fit are stale
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        keys = [text_key(t) for t in texts]
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            generation = self._generation
            for k in keys:
                row = self._rows.get(k)
                if row is not None:
                    self._rows.move_to_end(k)
                    found[k] = row
        # Unique misses in first-seen order: a batch with duplicates computes each text once.
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if todo:
            computed = np.asarray(self.featurizer.transform(list(todo.values())))
            with self._lock:
                for k, row in zip(todo, computed, strict=True):
                    stored = row.copy()
                    stored.flags.writeable = False
                    found[k] = stored
                    if self.max_entries and generation == self._generation:
                        self._rows[k] = stored
                        self._rows.move_to_end(k)
                while len(self._rows) > self.max_entries:
                    self._rows.popitem(last=False)
        with self._lock:
            self._hits += len(keys) - len(todo)
            self._misses += len(todo)
        if not keys:
            return np.asarray(self.featurizer.transform([]))
        return np.stack([found[k] for k in keys])

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self._generation += 1

    def cache_info(self) -> dict[str, int]:
        """Hits and misses counted per text since construction, and the current size."""
        with self._lock:
            return {
                "hits": self._hits,
                "misses": self._misses,
                "size": len(self._rows),
                "max_entries": self.max_entries,
            }

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        raise TypeError("CachedFeaturizer is a serving wrapper; save .featurizer instead")
