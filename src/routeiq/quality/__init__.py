"""Quality models: each routing method is a small class behind :class:`QualityModel`.

Build one by registry name with :func:`make_quality_model`; rebuild a saved one with
``quality_model_class(name).from_state(params, scalars, arrays)``. Third-party quality models
registered under the ``routeiq.quality_models`` entry-point group are found by the same
functions (:mod:`routeiq.extensions`); a built-in name always means the built-in.

=============  ==============================================================================
name           method
=============  ==============================================================================
constant       per-model mean quality (best single model / cheapest, by lambda)
random         uniform random scores, deterministic per (seed, prompt features)
knn            cosine kNN, masked neighbour average shrunk to the model mean
logistic       per-model L2 logistic regression, soft labels
svm            per-model linear SVM + Platt scaling
mlp            one-hidden-layer numpy MLP, masked cross-entropy
mf             bilinear matrix factorisation (RouteLLM MF)
elo            global Bradley-Terry ratings -> quality (query-independent)
sw_ranking     similarity-weighted Bradley-Terry over the top-k similar prompts (RouteLLM)
routerdc       contrastive query projection + model embeddings (RouterDC, frozen encoder)
cluster        k-means cluster lookup with shrinkage
ensemble       stacked average of other quality models
=============  ==============================================================================

Conventions shared by all of them:

- ``Y`` may hold NaN for unobserved (prompt, model) pairs; every model trains on observed
  entries only (per-model masks or masked losses, nothing imputed) and predicts finite values
  for every model, including one never observed (its prediction is the overall mean).
- A hyper-parameter left at ``None`` is chosen by seeded K-fold CV on the training data
  (:mod:`routeiq.quality.selection`); the chosen value is kept as a ``*_`` attribute and
  :meth:`fixed_params` returns the parameters with it filled in.
- Learned state is numpy arrays and JSON scalars only; ``predict`` is plain numpy.
- ``cost`` is accepted by ``fit`` for the interface but none of these models uses it: cost
  enters at decision time (``routeiq.decision``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from routeiq.extensions import QUALITY_MODEL_GROUP, Registry
from routeiq.quality.base import QualityModel
from routeiq.quality.baselines import ConstantQuality, RandomQuality
from routeiq.quality.cluster import ClusterQuality
from routeiq.quality.ensemble import EnsembleQuality
from routeiq.quality.knn import KNNQuality
from routeiq.quality.linear import LogisticQuality, SVMQuality
from routeiq.quality.mf import MFQuality
from routeiq.quality.mlp import MLPQuality
from routeiq.quality.ranking import EloQuality, SWRankingQuality
from routeiq.quality.routerdc import RouterDCQuality

_CLASSES: tuple[type[QualityModel], ...] = (
    ConstantQuality,
    RandomQuality,
    KNNQuality,
    LogisticQuality,
    SVMQuality,
    MLPQuality,
    MFQuality,
    EloQuality,
    SWRankingQuality,
    RouterDCQuality,
    ClusterQuality,
    EnsembleQuality,
)

# The built-ins, fixed at import; extensions are read from entry points at lookup.
QUALITY_MODELS: MappingProxyType[str, type[QualityModel]] = MappingProxyType(
    {cls.name: cls for cls in _CLASSES}
)
QUALITY_MODEL_REGISTRY: Registry[QualityModel] = Registry(
    "quality model", QUALITY_MODEL_GROUP, QualityModel, QUALITY_MODELS
)


def quality_model_names() -> list[str]:
    """The built-in names (what ``routeiq eval --routers all`` compares)."""
    return list(QUALITY_MODELS)


def quality_models() -> Mapping[str, type[QualityModel]]:
    """Built-ins plus installed extensions, by name (read-only; loads the extensions)."""
    return QUALITY_MODEL_REGISTRY.mapping()


def quality_model_class(name: str) -> type[QualityModel]:
    """The class registered under ``name`` (built-in, else an installed extension);
    ``ValueError`` listing the known names otherwise."""
    return QUALITY_MODEL_REGISTRY.get(name)


def make_quality_model(name: str, **params: Any) -> QualityModel:
    """An unfitted quality model. Unknown names or parameters raise with the valid choices."""
    cls = quality_model_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise TypeError(
            f"bad parameters for quality model {name!r}: {exc}; valid: {', '.join(valid) or '-'}"
        ) from None


__all__ = [
    "QUALITY_MODELS",
    "QUALITY_MODEL_REGISTRY",
    "ClusterQuality",
    "ConstantQuality",
    "EloQuality",
    "EnsembleQuality",
    "KNNQuality",
    "LogisticQuality",
    "MFQuality",
    "MLPQuality",
    "QualityModel",
    "RandomQuality",
    "RouterDCQuality",
    "SVMQuality",
    "SWRankingQuality",
    "make_quality_model",
    "quality_model_class",
    "quality_model_names",
    "quality_models",
]
