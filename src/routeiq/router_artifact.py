"""A :class:`~routeiq.router.LearnedRouter` as a verified artifact directory, and back.

``metadata.json`` holds each component's type, parameters and JSON state, the model list,
lambda/target and the training-data digest; one ``.npz`` per component holds its arrays
(:mod:`routeiq.artifacts` writes, verifies and swaps them atomically; never pickle).
"""

from __future__ import annotations

import math
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from routeiq.artifacts import ArtifactError, read_artifact, write_artifact
from routeiq.decision.cost_model import CostModel
from routeiq.estimator import Estimator
from routeiq.features import FEATURIZER_REGISTRY
from routeiq.quality import QUALITY_MODEL_REGISTRY
from routeiq.quality.context import ContextModel

if TYPE_CHECKING:
    from routeiq.router import LearnedRouter

ARTIFACT_FORMAT = 1


def _library_version() -> str:
    try:
        return version("routeiq-router")
    except PackageNotFoundError:
        return "0+unknown"


def save_router(router: LearnedRouter, path: str | Path) -> str:
    """Write a fitted router to ``path``; returns the artifact's digest."""
    parts: dict[str, Estimator] = {
        "featurizer": router.featurizer,
        "quality_model": router.quality_model,
        "cost_model": router.cost_model,
    }
    if router.context is not None:
        parts["context"] = router.context
    metadata: dict[str, Any] = {
        "format": ARTIFACT_FORMAT,
        "library_version": _library_version(),
        "models": router.models_,
        "lambda": router.lam if math.isfinite(router.lam) else "inf",  # strict JSON has no inf
        "target": None if router.target is None else str(router.target),
        "target_met": getattr(router, "target_met_", None),
        "aliases": router.aliases,
        "cv_folds": router.cv_folds,
        "random_state": router.random_state,
        "training_data_digest": router.training_digest_,
    }
    arrays: dict[str, dict[str, np.ndarray]] = {"calibration": router.calibration_}
    for key, part in parts.items():
        scalars, part_arrays = part.get_state()
        metadata[key] = {"name": part.name, "params": part.get_params(), "state": scalars}
        arrays[key] = part_arrays
    # Extensions (routeiq.extensions) record who provides them, so loading can say which
    # package to install instead of "unknown quality model".
    for key, registry in (
        ("featurizer", FEATURIZER_REGISTRY),
        ("quality_model", QUALITY_MODEL_REGISTRY),
    ):
        provider = registry.provider(metadata[key]["name"])
        if provider is not None:
            metadata[key]["provider"] = provider.to_dict()
    return write_artifact(path, metadata, arrays)


def load_router(cls: type[LearnedRouter], path: str | Path) -> LearnedRouter:
    """Read a router after verifying every file against the artifact's manifest."""
    artifact = read_artifact(path)
    metadata, arrays = artifact.metadata, artifact.arrays
    if metadata.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path}: unsupported artifact format {metadata.get('format')!r}")
    try:
        feat_meta, qm_meta = metadata["featurizer"], metadata["quality_model"]
        for meta, registry in (
            (feat_meta, FEATURIZER_REGISTRY),
            (qm_meta, QUALITY_MODEL_REGISTRY),
        ):
            registry.check_provider(meta["name"], meta.get("provider"), where=str(path))
        featurizer = FEATURIZER_REGISTRY.get(feat_meta["name"]).from_state(
            feat_meta["params"], feat_meta["state"], arrays["featurizer"]
        )
        quality_model = QUALITY_MODEL_REGISTRY.get(qm_meta["name"]).from_state(
            qm_meta["params"], qm_meta["state"], arrays["quality_model"]
        )
        cm = metadata["cost_model"]
        cost_model = CostModel.from_state(cm["params"], cm["state"], arrays["cost_model"])
        context = None
        if "context" in metadata:  # artifacts before context features have none
            ctx = metadata["context"]
            context = ContextModel.from_state(ctx["params"], ctx["state"], arrays["context"])
        router = cls(
            featurizer,
            quality_model,
            lam=float(metadata["lambda"]),
            target=metadata["target"],
            cv_folds=metadata["cv_folds"],
            aliases=metadata["aliases"],
            random_state=metadata["random_state"],
            context=context,
        )
        router.cost_model = cost_model
        router.models_ = list(metadata["models"])
        router.training_digest_ = metadata["training_data_digest"]
        router.target_met_ = metadata.get("target_met")
        router.calibration_ = dict(arrays["calibration"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: artifact metadata is incomplete or invalid: {exc}") from exc
    router.digest = artifact.digest
    return router
