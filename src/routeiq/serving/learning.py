"""The serving side of the learning loop: keep what feedback needs, take feedback, learn.

The engine hands every decision to :meth:`LearningLoop.remember` and gets online routers
from :meth:`LearningLoop.online_for`; :meth:`LearningLoop.feedback` validates a rating,
authorizes the caller, writes it to the decision log (joined by decision id, however late)
and updates the online router, shared with every worker through the store.
"""

from __future__ import annotations

import logging
from typing import Any

from routeiq.decision.decision import Decision
from routeiq.online.router import OnlineContext, OnlineRouter
from routeiq.online.store import LocalStore, RedisStore
from routeiq.router import LearnedRouter
from routeiq.serving.decision_log import DecisionLog
from routeiq.serving.feedback import (
    DEFAULT_METRIC,
    DecisionContext,
    DuplicateFeedback,
    Identity,
    StoreUnavailable,
    UnknownDecision,
    authorize,
    check_metric,
    parse_score,
)
from routeiq.serving.registry import RouterRegistry
from routeiq.serving.settings import ResolvedGroup, RouteIQSettings
from routeiq.telemetry.metrics import RouteIQMetrics

log = logging.getLogger(__name__)


def build_store(settings: RouteIQSettings, metrics: RouteIQMetrics | None = None) -> LocalStore:
    """The context and online-state store the settings ask for."""
    fb = settings.feedback
    if settings.shared_state is None:
        return LocalStore(ttl_s=fb.ttl_s, max_contexts=fb.max_contexts)
    errors = None if metrics is None else metrics.online_store_errors
    return RedisStore(
        settings.shared_state,
        ttl_s=fb.ttl_s,
        max_contexts=fb.max_contexts,
        sync_interval_s=settings.online.sync_interval_s,
        on_error=None if errors is None else (lambda _reason: errors.inc()),
    )


def _known_model(decision: Decision, online: OnlineRouter) -> int | None:
    """Index of the chosen candidate's model in the online router (None: not learnable,
    e.g. an unknown model priced like a known one)."""
    for row in decision.candidates:
        if row.name == decision.chosen:
            same = row.mapping_rule in ("alias", "prefix")  # the known model, renamed
            known = row.mapped_from if same else row.model
            if row.mapping_rule is not None and not same:
                return None
            return online.index.get(known) if known is not None else None
    return None


class LearningLoop:
    """Decision contexts, online routers by (group, artifact), and feedback handling."""

    def __init__(
        self,
        settings: RouteIQSettings,
        store: LocalStore,
        registry: RouterRegistry,
        *,
        decision_log: DecisionLog | None = None,
        metrics: RouteIQMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.decision_log = decision_log
        self.metrics = metrics
        self._online: dict[str, OnlineRouter] = {}

    def online_for(
        self, group: ResolvedGroup, learned: LearnedRouter
    ) -> tuple[str | None, OnlineRouter | None]:
        """The online router of a group (created on first use), keyed by group and artifact:
        a new artifact starts a new correction (the old one corrected other predictions)."""
        if not group.online.enabled:
            return None, None
        key = f"{group.name}:{(learned.digest or 'unsaved')[:16]}"
        online = self._online.get(key)
        if online is None:
            online = OnlineRouter(learned.models_, learned.featurizer.n_features_out, group.online)
            self._online[key] = online
            self.store.register(key, online)
        return key, online

    def remember(
        self,
        decision: Decision,
        identity: Identity | None,
        online: tuple[str, OnlineContext] | None,
    ) -> None:
        """Keep what rating ``decision`` later needs."""
        if not self.settings.feedback.enabled or decision.id is None:
            return
        fields: dict[str, Any] = {}
        if online is not None:
            key, ctx = online
            router = self._online.get(key)
            j = None if router is None else _known_model(decision, router)
            if j is not None:
                prior, z = ctx.row(j)
                fields = {"online_key": key, "online_model": j, "prior": prior, "z": tuple(z)}
        self.store.put(
            decision.id,
            DecisionContext(
                group=decision.group or "",
                deployment=decision.chosen,
                model=decision.model,
                key_hash=None if identity is None else identity.key_hash,
                team_id=None if identity is None else identity.team_id,
                **fields,
            ),
        )

    def feedback(
        self,
        decision_id: str,
        score: Any,
        *,
        metric: str | None = None,
        identity: Identity | None = None,
    ) -> dict[str, Any]:
        """Rate a decision (blocking on the shared store: call it off the event loop).

        Raises :class:`~routeiq.serving.feedback.FeedbackError` subclasses: invalid score or
        metric (422), unknown or expired decision (404), not the caller's (403), already
        rated for this metric (409).
        """
        value = parse_score(score)
        name = check_metric(metric)
        if not isinstance(decision_id, str) or not decision_id:
            raise UnknownDecision("decision_id must be a non-empty string")
        context = self.store.get(decision_id)
        if context is None and not getattr(self.store, "healthy", True):
            self._count("unavailable")
            raise StoreUnavailable(
                f"decision {decision_id!r} is not in this worker and the shared state (Redis) "
                "is unreachable; retry later"
            )
        if context is None:
            self._count("unknown")
            ttl = self.settings.feedback.ttl_s
            raise UnknownDecision(
                f"no decision {decision_id!r} to rate: unknown, or older than feedback.ttl_s "
                f"({ttl:g} s)"
                + (
                    ""
                    if self.settings.shared_state
                    else ", or made by another worker "
                    "(set shared_state to rate decisions on any worker)"
                )
            )
        try:
            authorize(identity, context, decision_id)
        except Exception:
            self._count("forbidden")
            raise
        if not self.store.claim(decision_id, name):
            self._count("duplicate")
            raise DuplicateFeedback(f"decision {decision_id!r} already has a {name!r} score")
        outcome = {"quality": value} if name == DEFAULT_METRIC else {"scores": {name: value}}
        if self.decision_log is not None:
            self.decision_log.add_outcome(decision_id, outcome, context.model)
        learned = name == DEFAULT_METRIC and self._learn(context, value)
        self._count("accepted")
        return {
            "decision_id": decision_id,
            "metric": name,
            "score": value,
            "model": context.model,
            "learned": learned,
        }

    def implicit(self, decision_id: str, status: str) -> None:
        """An attempt's outcome as a reward, when ``feedback.error_quality`` says so."""
        quality = self.settings.feedback.error_quality
        if quality is None or status == "success":
            return
        context = self.store.get(decision_id)
        if context is not None and self.store.claim(decision_id, "implicit"):
            self._learn(context, quality)

    def _learn(self, context: DecisionContext, value: float) -> bool:
        if context.online_key is None or context.online_model is None or context.z is None:
            return False
        router = self._online.get(context.online_key)
        if router is None:  # feedback on another worker's decision: this worker's router
            group = self.settings.group(context.group)
            try:
                key, router = self.online_for(group, self.registry.for_group(group))
            except Exception:
                key, router = None, None
            if router is None or key != context.online_key:
                return False  # online learning is off now, or the artifact changed
        delta = router.learn(context.online_model, context.prior or 0.0, context.z, value)
        self.store.push(context.online_key, delta)
        return True

    def share_wait(self) -> float | None:
        """How long a decision made on another worker may take to reach this one (its context
        is pushed every sync interval); None when contexts are not shared or Redis is down."""
        interval = getattr(self.store, "sync_interval_s", None)
        if interval is None or not getattr(self.store, "healthy", False):
            return None
        return min(float(interval) + 0.25, 5.0)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.feedback.labels(result).inc()

    def close(self) -> None:
        self.store.close()


__all__ = ["LearningLoop", "build_store"]
