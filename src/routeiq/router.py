"""The learned router: featurizer + quality model + cost model + decision rule, as one artifact."""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from routeiq.data.dataset import DataError, RoutingDataset
from routeiq.data.prices import estimate_tokens
from routeiq.data.prompts import Prompt, prompt_text
from routeiq.decision.calibrate import (
    DEFAULT_CONFIDENCE,
    Calibration,
    calibrate_lambda,
    check_confidence,
)
from routeiq.decision.choice import check_lambda
from routeiq.decision.cost_model import CostModel
from routeiq.decision.decision import Decision
from routeiq.decision.rules import DEFAULT_RULE, decide
from routeiq.decision.targets import Target, parse_target
from routeiq.decision.unknown import ResolvedCandidates, resolve_candidates
from routeiq.features.base import Featurizer, featurizer_digest
from routeiq.features.context import Context
from routeiq.online.router import OnlineContext, OnlineRouter
from routeiq.quality.base import QualityModel
from routeiq.quality.context import ContextModel

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
        context: ContextModel | None = None,
    ) -> None:
        self.featurizer = featurizer
        self.quality_model = quality_model
        self.context = context
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
        if self.context is not None:
            self._fit_context(data, X)
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

    def with_context(self, context: ContextModel, dataset: RoutingDataset) -> LearnedRouter:
        """A copy of this fitted router that blends in ``context``, fitted on ``dataset`` (the
        data this router was trained on; its text model is shared, not retrained)."""
        self._check_fitted()
        if self.context is not None:
            raise ValueError("this router already blends a context model")
        data = dataset.labelled()
        if data.digest() != self.training_digest_:
            raise DataError("with_context needs the data this router was trained on")
        new = copy.copy(self)
        new.context = context
        new.calibration_ = dict(self.calibration_)
        new._calibrations = {}
        new._lock = threading.Lock()
        new.digest = ""
        if data.features is not None:
            X = self._logged(data, False)[0]
        else:
            X = self.featurizer.transform(data.prompts)
        new._fit_context(data, X)
        if new.target is not None:
            cal = new.calibrate(new.target)
            new.lam, new.target_met_ = cal.lam, cal.met
        return new

    def _fit_context(self, data: RoutingDataset, X: np.ndarray) -> None:
        """Fit the context model on the out-of-fold text predictions; calibration then uses
        its out-of-fold blend (what serving does)."""
        assert self.context is not None
        cal = self.calibration_
        self.context.fit(
            data.context_rows(), cal["true_quality"], cal["predicted_quality"], X, cal["cost"]
        )
        cal["predicted_quality"] = self.context.oof_predictions

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
        out = {"predicted_quality": pred, "cost": cost, "true_quality": data.quality}
        # The task of each row (integer codes), when the data names more than one: robust
        # calibration resamples the mix of tasks. Artifacts without it resample rows.
        tasks = list(data.tasks) if data.tasks else []
        if len(set(tasks)) > 1:
            out["group"] = np.unique(np.array(tasks, dtype=str), return_inverse=True)[1]
        return out

    def is_calibrated(
        self, target: str | Target, *, confidence: float | None = DEFAULT_CONFIDENCE
    ) -> bool:
        """Whether ``target`` is already calibrated (a cache hit costs nothing)."""
        target = parse_target(target) if isinstance(target, str) else target
        return f"{target!r}@{check_confidence(confidence)}" in self._calibrations

    def calibrate(
        self, target: str | Target, *, confidence: float | None = DEFAULT_CONFIDENCE
    ) -> Calibration:
        """Lambda meeting ``target`` on the stored out-of-fold predictions (cached per target).

        ``confidence`` (default 0.9): the target must hold in that fraction of resampled mixes
        of the training tasks (of rows, when the data names no tasks), so that it holds on
        traffic whose mix differs; None meets it on average over the training rows (see
        :mod:`routeiq.decision.calibrate`).
        """
        self._check_fitted()
        target = parse_target(target) if isinstance(target, str) else target
        confidence = check_confidence(confidence)
        key = f"{target!r}@{confidence}"  # one entry per target and confidence
        cached = self._calibrations.get(key)
        if cached is not None:
            return cached
        # Calibrate outside the lock: a slow new target must not hold up other threads.
        cal = self.calibration_
        fresh = calibrate_lambda(
            target,
            cal["predicted_quality"],
            cal["cost"],
            cal["true_quality"],
            groups=cal.get("group"),  # absent in older artifacts: rows are resampled
            confidence=confidence,
        )
        with self._lock:
            # Targets can come from clients (per-request overrides): keep the cache bounded.
            if key not in self._calibrations and len(self._calibrations) >= MAX_CACHED_TARGETS:
                self._calibrations.pop(next(iter(self._calibrations)))
            return self._calibrations.setdefault(key, fresh)

    # -- inference --------------------------------------------------------------------------

    def predict_quality(
        self, texts: Sequence[str], contexts: Sequence[Context | None] | None = None
    ) -> np.ndarray:
        """(n, m) predicted quality; ``contexts`` (one per text) blend in the context model."""
        self._check_fitted()
        X = self.featurizer.transform(list(texts))
        quality = self.quality_model.predict(X)
        if self.context is not None:
            rows = contexts if contexts is not None else [None] * len(X)
            quality = self.context.apply(quality, rows, X)
        return quality

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

    def score(
        self, text: str, candidates: Sequence[Candidate], context: Context | None = None
    ) -> ResolvedCandidates:
        """Predicted quality and cost of each candidate for one routing text (and request
        context, when the router learned from one).

        Candidates the router does not know are mapped by the unknown-model rule
        (:mod:`routeiq.decision.unknown`); a candidate's own ``cost`` wins over the cost model.
        """
        return self.score_online(text, candidates, None, context)[0]

    def score_online(
        self,
        text: str,
        candidates: Sequence[Candidate],
        online: OnlineRouter | None,
        context: Context | None = None,
    ) -> tuple[ResolvedCandidates, OnlineContext | None]:
        """:meth:`score` with the known models' quality corrected by an online router."""
        self._check_fitted()
        x = self.featurizer.transform([text])
        quality = self.quality_model.predict(x)[0]
        if self.context is not None:
            quality = self.context.apply_one(quality, context, x[0])
        cost = self.predict_cost([text])[0]
        online_ctx = None
        if online is not None:
            quality, online_ctx = online.adjust(x[0], quality, cost)
        resolved = resolve_candidates(
            [c.model for c in candidates],
            self.models_,
            quality,
            cost,
            candidate_costs=[c.cost for c in candidates],
            aliases=self.aliases,
        )
        return resolved, online_ctx

    def route(
        self,
        prompt: Prompt,
        candidates: Sequence[Candidate] | None = None,
        *,
        lam: float | None = None,
        target: str | Target | None = None,
        context: Context | None = None,
    ) -> Decision:
        """Choose among ``candidates`` (default: every model the router knows); ``context``
        is the request's context (:mod:`routeiq.features.context`), used when the router
        was trained with a :class:`~routeiq.quality.context.ContextModel`."""
        self._check_fitted()
        text = prompt_text(prompt)
        if candidates is None:
            candidates = [Candidate(name=m, model=m) for m in self.models_]
        if not candidates:
            raise ValueError("no candidates to route between")
        lam, rule = self.tradeoff(lam, target)
        resolved = self.score(text, candidates, context)
        note = None if self.context is None else self.context.describe(context)
        if note is not None:
            rule = f"{rule or DEFAULT_RULE}; {note}"
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
        from routeiq.router_artifact import save_router

        self._check_fitted()
        self.digest = save_router(self, path)
        return self.digest

    @classmethod
    def load(cls, path: str | Path) -> LearnedRouter:
        """Load an artifact after verifying every file against its manifest."""
        from routeiq.router_artifact import load_router

        return load_router(cls, path)

    def _check_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise RuntimeError("LearnedRouter is not fitted; call fit() or LearnedRouter.load()")
