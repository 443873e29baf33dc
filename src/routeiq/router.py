"""The learned router: featurizer + quality model + cost model + decision rule, as one artifact."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Self

import numpy as np

from routeiq.artifacts import ArtifactError, read_artifact, write_artifact
from routeiq.data.dataset import DataError, RoutingDataset
from routeiq.data.prices import estimate_tokens
from routeiq.data.prompts import Prompt, prompt_text
from routeiq.decision.calibrate import Calibration, Target, calibrate_lambda, parse_target
from routeiq.decision.choice import check_lambda
from routeiq.decision.cost_model import CostModel
from routeiq.decision.decision import Decision
from routeiq.decision.rules import decide
from routeiq.decision.unknown import ResolvedCandidates, resolve_candidates
from routeiq.estimator import Estimator
from routeiq.features import FEATURIZER_REGISTRY
from routeiq.features.base import Featurizer, featurizer_digest
from routeiq.online.router import OnlineContext, OnlineRouter
from routeiq.strategies import QUALITY_MODEL_REGISTRY
from routeiq.strategies.base import QualityModel

ARTIFACT_FORMAT = 1
MAX_CACHED_TARGETS = 256


@dataclass(frozen=True)
class Candidate:
    """One routable option: ``name`` is what the decision returns (a deployment id),
    ``model`` what the router knows it as, ``cost`` the caller's USD estimate for this request
    (None: the router's own cost model predicts it), ``weight`` its share under the shuffle
    rule (LiteLLM's deployment ``weight``), ``cached_cost`` its cost if the conversation stays
    on it (see :mod:`routeiq.serving.sticky`)."""

    name: str
    model: str
    cost: float | None = None
    weight: float = 1.0
    # The cost when the conversation so far is in this deployment's prompt cache (a follow-up
    # turn that stays where the conversation started): cached input tokens at the cache-read
    # price. None: no cache price known.
    cached_cost: float | None = None


def _library_version() -> str:
    try:
        return version("routeiq-router")
    except PackageNotFoundError:
        return "0+unknown"


class LearnedRouter:
    """Routes each prompt to the candidate with the best predicted quality - lambda * cost.

    ``lam`` fixes the trade-off directly; a ``target`` (for example ``"quality>=1.0"``: match the
    best single model) is calibrated to a lambda on out-of-fold predictions over the training
    data, which the artifact keeps so other targets can be calibrated later without retraining.
    """

    def __init__(
        self,
        featurizer: Featurizer,
        quality_model: QualityModel,
        *,
        lam: float = 0.0,
        target: str | Target | None = None,
        cv_folds: int = 5,
        aliases: Mapping[str, str] | None = None,
        random_state: int = 0,
    ) -> None:
        self.featurizer = featurizer
        self.quality_model = quality_model
        self.lam = check_lambda(lam)
        self.target = parse_target(target) if isinstance(target, str) else target
        self.cv_folds = cv_folds
        self.aliases = dict(aliases or {})
        self.random_state = random_state
        self.cost_model = CostModel()
        self.digest = ""
        self._calibrations: dict[str, Calibration] = {}
        self._lock = threading.Lock()

    # -- training ---------------------------------------------------------------------------

    def fit(self, dataset: RoutingDataset, *, fit_featurizer: bool = True) -> Self:
        """Train on the labelled rows. ``fit_featurizer=False`` reuses an already fitted
        featurizer (evaluation fits one featurizer and compares many quality models on it)."""
        data = dataset.labelled()
        if len(data) < 2:
            raise DataError(f"need at least 2 labelled prompts to train, got {len(data)}")
        texts = data.prompts
        if data.features is not None:
            X, tokens = self._logged(data, fit_featurizer)
        else:
            if fit_featurizer:
                self.featurizer.fit(texts)
                self.__dict__.pop("_featurizer_digest", None)
            X = self.featurizer.transform(texts)
            tokens = np.array([estimate_tokens(t) for t in texts], dtype=np.float64)
        self.cost_model.fit(tokens, data.cost)
        self.quality_model.fit(X, data.quality, data.cost)
        self.models_ = list(data.models)
        self.training_digest_ = data.digest()
        self.calibration_ = self._out_of_fold(X, tokens, data)
        self.target_met_: bool | None = None
        if self.target is not None:
            cal = self.calibrate(self.target)
            self.lam, self.target_met_ = cal.lam, cal.met
        return self

    def _logged(self, data: RoutingDataset, fit_featurizer: bool) -> tuple[np.ndarray, np.ndarray]:
        """Features and tokens of a dataset of logged feature vectors (text rows featurized)."""
        if fit_featurizer or data.featurizer != self.featurizer_digest:
            raise DataError(
                f"the data holds feature vectors logged by featurizer {data.featurizer!s:.12}; "
                "train with that featurizer, fitted (routeiq train --featurizer-from the "
                "router artifact that logged them)"
            )
        assert data.features is not None and data.tokens is not None
        X = data.features.copy()
        text_rows = np.flatnonzero(np.isnan(X).any(axis=1))
        if text_rows.size:
            X[text_rows] = self.featurizer.transform([data.prompts[i] for i in text_rows])
        tokens = data.tokens.copy()
        for i in np.flatnonzero(np.isnan(tokens)):
            tokens[i] = estimate_tokens(data.prompts[i])
        return X, tokens

    @property
    def featurizer_digest(self) -> str:
        """Digest of the (fitted) featurizer, computed once: tags logged feature vectors."""
        digest = self.__dict__.get("_featurizer_digest")
        if digest is None:
            digest = self.__dict__["_featurizer_digest"] = featurizer_digest(self.featurizer)
        return str(digest)

    def log_features(self, text: str) -> dict[str, Any]:
        """The ``features`` field of a decision record for ``text`` (the featurized tail)."""
        x = self.featurizer.transform([text])[0]
        return {
            "featurizer": self.featurizer_digest,
            "values": [round(float(v), 6) for v in x],
            "tokens": estimate_tokens(text),
        }

    def _out_of_fold(
        self, X: np.ndarray, tokens: np.ndarray, data: RoutingDataset
    ) -> dict[str, np.ndarray]:
        """Predictions for each training row from a model that did not see it."""
        n = len(data)
        folds = min(self.cv_folds, n)
        order = np.random.default_rng(self.random_state).permutation(n)
        pred = np.empty_like(data.quality)
        model_type = type(self.quality_model)
        params = self.quality_model.get_params()
        for k in range(folds):
            held = order[k::folds]
            train = np.setdiff1d(order, held)
            fold_model = model_type(**params).fit(X[train], data.quality[train], data.cost[train])
            pred[held] = fold_model.predict(X[held])
        cost = np.where(np.isnan(data.cost), self.cost_model.predict(tokens), data.cost)
        return {"predicted_quality": pred, "cost": cost, "true_quality": data.quality}

    def is_calibrated(self, target: str | Target) -> bool:
        """Whether ``target`` is already calibrated (a cache hit costs nothing)."""
        target = parse_target(target) if isinstance(target, str) else target
        return repr(target) in self._calibrations

    def calibrate(self, target: str | Target) -> Calibration:
        """Lambda meeting ``target`` on the stored out-of-fold predictions (cached per target)."""
        self._check_fitted()
        target = parse_target(target) if isinstance(target, str) else target
        key = repr(target)
        cached = self._calibrations.get(key)
        if cached is not None:
            return cached
        # Calibrate outside the lock: a slow new target must not hold up other threads.
        cal = self.calibration_
        fresh = calibrate_lambda(target, cal["predicted_quality"], cal["cost"], cal["true_quality"])
        with self._lock:
            # Targets can come from clients (per-request overrides): keep the cache bounded.
            if key not in self._calibrations and len(self._calibrations) >= MAX_CACHED_TARGETS:
                self._calibrations.pop(next(iter(self._calibrations)))
            return self._calibrations.setdefault(key, fresh)

    # -- inference --------------------------------------------------------------------------

    def predict_quality(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        return self.quality_model.predict(self.featurizer.transform(list(texts)))

    def predict_cost(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        return self.cost_model.predict(np.array([estimate_tokens(t) for t in texts]))

    def tradeoff(
        self, lam: float | None = None, target: str | Target | None = None
    ) -> tuple[float, str | None]:
        """(lambda, rule text) for an explicit ``lam``, a ``target``, or the router's own."""
        if target is not None:
            cal = self.calibrate(target)
            return cal.lam, cal.rule
        if lam is not None:
            return check_lambda(lam), None
        if self.target is not None:
            met = getattr(self, "target_met_", None)
            if met is None:  # an artifact from before target_met was saved
                return self.lam, self.calibrate(self.target).rule
            return self.lam, self.target.rule(self.lam) + ("" if met else " (target not met)")
        return self.lam, None

    def score(self, text: str, candidates: Sequence[Candidate]) -> ResolvedCandidates:
        """Predicted quality and cost of each candidate for one routing text.

        Candidates the router does not know are mapped by the unknown-model rule
        (:mod:`routeiq.decision.unknown`); a candidate's own ``cost`` wins over the cost model.
        """
        return self.score_online(text, candidates, None)[0]

    def score_online(
        self, text: str, candidates: Sequence[Candidate], online: OnlineRouter | None
    ) -> tuple[ResolvedCandidates, OnlineContext | None]:
        """:meth:`score` with the known models' quality corrected by an online router."""
        self._check_fitted()
        x = self.featurizer.transform([text])
        quality = self.quality_model.predict(x)[0]
        cost = self.predict_cost([text])[0]
        context = None
        if online is not None:
            quality, context = online.adjust(x[0], quality, cost)
        resolved = resolve_candidates(
            [c.model for c in candidates],
            self.models_,
            quality,
            cost,
            candidate_costs=[c.cost for c in candidates],
            aliases=self.aliases,
        )
        return resolved, context

    def route(
        self,
        prompt: Prompt,
        candidates: Sequence[Candidate] | None = None,
        *,
        lam: float | None = None,
        target: str | Target | None = None,
    ) -> Decision:
        """Choose among ``candidates`` (default: every model the router knows)."""
        self._check_fitted()
        text = prompt_text(prompt)
        if candidates is None:
            candidates = [Candidate(name=m, model=m) for m in self.models_]
        if not candidates:
            raise ValueError("no candidates to route between")
        lam, rule = self.tradeoff(lam, target)
        resolved = self.score(text, candidates)
        decision = decide(
            names=[c.name for c in candidates],
            models=[c.model for c in candidates],
            quality=resolved.quality,
            cost=resolved.cost,
            lam=lam,
            rule=rule,
            mapped_from=resolved.mapped_from,
            mapping_rules=resolved.mapping_rules,
        )
        return decision.with_context(router=self.digest or None)

    # -- artifacts --------------------------------------------------------------------------

    def save(self, path: str | Path) -> str:
        """Write the router as a verified artifact directory; returns its digest."""
        self._check_fitted()
        parts: dict[str, Estimator] = {
            "featurizer": self.featurizer,
            "quality_model": self.quality_model,
            "cost_model": self.cost_model,
        }
        metadata: dict[str, Any] = {
            "format": ARTIFACT_FORMAT,
            "library_version": _library_version(),
            "models": self.models_,
            "lambda": self.lam if math.isfinite(self.lam) else "inf",  # strict JSON has no inf
            "target": None if self.target is None else str(self.target),
            "target_met": getattr(self, "target_met_", None),
            "aliases": self.aliases,
            "cv_folds": self.cv_folds,
            "random_state": self.random_state,
            "training_data_digest": self.training_digest_,
        }
        arrays: dict[str, dict[str, np.ndarray]] = {"calibration": self.calibration_}
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
        self.digest = write_artifact(path, metadata, arrays)
        return self.digest

    @classmethod
    def load(cls, path: str | Path) -> LearnedRouter:
        """Load an artifact after verifying every file against its manifest."""
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
            router = cls(
                featurizer,
                quality_model,
                lam=float(metadata["lambda"]),
                target=metadata["target"],
                cv_folds=metadata["cv_folds"],
                aliases=metadata["aliases"],
                random_state=metadata["random_state"],
            )
            router.cost_model = cost_model
            router.models_ = list(metadata["models"])
            router.training_digest_ = metadata["training_data_digest"]
            router.target_met_ = metadata.get("target_met")
            router.calibration_ = dict(arrays["calibration"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"{path}: artifact metadata is incomplete or invalid: {exc}"
            ) from exc
        router.digest = artifact.digest
        return router

    def _check_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise RuntimeError("LearnedRouter is not fitted; call fit() or LearnedRouter.load()")
