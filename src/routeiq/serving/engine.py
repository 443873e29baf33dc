"""The serving engine: one decision path for every front end (LiteLLM SDK, proxy, service).

Input: a :class:`RouteRequest` (the model group, its routable candidates with model and
cost, the request's messages or text input, a client override, the deployments that already
failed in this request). Output: one :class:`routeiq.decision.Decision`, already emitted as
a span, metrics and a decision-log record. Front ends only translate: the LiteLLM strategy
asks LiteLLM for the healthy deployments, maps them to candidates, calls :meth:`decide` and
returns the chosen deployment.

The rule, in order:

1. A candidate that failed earlier in the same request (a retry or fallback hop) is not
   chosen again while another candidate is left; the decision names it ("retry: excluded").
2. ``mode: shuffle`` (and groups the router knows no model of): random by weight.
   ``mode: cheapest``: the lowest known cost.
3. ``mode: route``: the learned rule on the routing text (the tail of the last user turn).
   A request with no routable text (only images or audio, no user turn, embeddings) or a text
   over ``max_prompt_chars``, a router error and a timeout are served by the **fallback
   rule**, the cheapest candidate (unknown prices last), with a ``fallback_reason``: a request
   LiteLLM would serve is never refused here.

Featurize + score runs inline or in a bounded thread pool (:mod:`routeiq.serving.scoring`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from routeiq.data.prompts import PromptError, opening_text, request_text
from routeiq.decision.decision import FALLBACK, Decision
from routeiq.decision.exploration import Exploration
from routeiq.decision.rules import DEFAULT_RULE, cheapest, decide, pinned, shuffle
from routeiq.online.budget_holds import BudgetHolds, held_target
from routeiq.online.router import OnlineContext
from routeiq.online.store import LocalStore
from routeiq.router import Candidate
from routeiq.serving.arms import ExperimentArms
from routeiq.serving.decision_log import DecisionLog, outcome_fields
from routeiq.serving.feedback import Identity, UnknownDecision
from routeiq.serving.guards import (
    GuardRefusal,
    Guards,
    Outcome,
    build_guards,
    excluded_fields,
    exclusions,
)
from routeiq.serving.learning import LearningLoop, build_store
from routeiq.serving.logged_prompt import logged_prompt
from routeiq.serving.overrides import OverrideError, Tradeoff, resolve_tradeoff
from routeiq.serving.registry import RouterRegistry
from routeiq.serving.request import RouteRequest
from routeiq.serving.scoring import Scorer, ScoringExpired
from routeiq.serving.settings import ResolvedGroup, RouteIQSettings
from routeiq.serving.sticky import stay, stay_inputs
from routeiq.telemetry.metrics import RouteIQMetrics
from routeiq.telemetry.tracing import ERROR_TYPE, DecisionTracer, decision_attributes

log = logging.getLogger(__name__)

_MAX_CACHED_GROUPS = 4096


class NoCandidatesError(RuntimeError):
    """Nothing is routable in the group (LiteLLM's own "no deployments available")."""


def _columns(cands: Sequence[Candidate]) -> tuple[list[str], list[str], list[float | None]]:
    return [c.name for c in cands], [c.model for c in cands], [c.cost for c in cands]


class DecisionEngine:
    """Makes, explains and records routing decisions under one :class:`RouteIQSettings`.

    ``unrouted`` names groups in ``route`` mode that the router knows no model of: they get
    the shuffle rule (LiteLLM's own default). ``clock`` times decisions; ``rng`` drives the
    shuffle rule (seed it for reproducible tests).
    """

    def __init__(
        self,
        settings: RouteIQSettings,
        registry: RouterRegistry,
        *,
        decision_log: DecisionLog | None = None,
        metrics: RouteIQMetrics | None = None,
        tracer_provider: Any = None,
        unrouted: Collection[str] = (),
        clock: Callable[[], float] = time.perf_counter,
        rng: random.Random | None = None,
        store: LocalStore | None = None,
        guards: Sequence[object] | None = None,
        budgets: BudgetHolds | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.decision_log = decision_log
        self.metrics = metrics
        self.tracer = DecisionTracer(tracer_provider)
        self.unrouted = frozenset(unrouted)
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self._groups: dict[str, ResolvedGroup] = {}
        self.arms = ExperimentArms()
        self.budgets = budgets if budgets is not None else BudgetHolds(settings.shared_state)
        self.guards = Guards(guards if guards is not None else build_guards(settings, metrics))
        self.learning = LearningLoop(
            settings,
            store if store is not None else build_store(settings, metrics),
            registry,
            decision_log=decision_log,
            metrics=metrics,
        )
        # Decision ids: a random prefix per engine and a counter. uuid4 per decision would
        # read os.urandom, a syscall that drops the GIL (bench/gil_contention.py).
        self._id_prefix = f"{os.getpid()}-{uuid.uuid4().hex[:16]}"
        self._ids = itertools.count()
        self.scorer = Scorer(settings)  # inline scoring never starts a thread

    def group(self, name: str) -> ResolvedGroup:
        """Effective settings of a group, resolved once (names come from clients: bounded)."""
        group = self._groups.get(name)
        if group is None:
            group = self.settings.group(name)
            if len(self._groups) < _MAX_CACHED_GROUPS:
                self._groups[name] = group
        return group

    async def decide(self, request: RouteRequest) -> Decision:
        """Decide, then emit the span, metrics and decision-log record."""
        started = self.clock()
        decision_id = f"{self._id_prefix}{next(self._ids):016x}"
        group, variant = self.arms.arm(self.group(request.group), request, decision_id)
        with self.tracer.decision_span(group.name, request.parent_span) as span:
            try:
                # The context is read only where it is used: the log, or a router that learned it.
                ctx = request.routing_context() if self.decision_log is not None else None
                decision, text, context, online = await self._decide(
                    group, request, decision_id, ctx
                )
            except (NoCandidatesError, OverrideError, GuardRefusal) as exc:
                span.set_attribute(ERROR_TYPE, type(exc).__name__)
                if self.metrics is not None:
                    self.metrics.observe_rejection(group.name, type(exc).__name__)
                raise
            decision = decision.with_context(  # one copy: replace() costs microseconds
                id=decision_id,
                group=group.name,
                attempt=request.attempt,
                variant=variant,
                **context,
            )
            seconds = self.clock() - started
            if span.is_recording():  # building attributes for a no-op span costs ~20 us
                span.set_attributes(
                    decision_attributes(
                        decision,
                        seconds=seconds,
                        mode=group.mode,
                        target=group.target,
                        operation=request.operation,
                        upstream=request.upstream.get(decision.chosen),
                    )
                )
        if self.metrics is not None:
            self.metrics.observe_decision(decision, seconds)
        self.learning.remember(decision, request.identity, online)
        if self.decision_log is not None:
            prompt, features = logged_prompt(self.settings, self.registry, group, request, text)
            record = decision.to_record(prompt)
            if ctx:
                record["context"] = ctx
            self.decision_log.add_decision(record, features=features)
        return decision

    def record_outcome(
        self,
        decision_id: str,
        *,
        group: str,
        deployment: str,
        model: str | None,
        status: str,
        cost: float | None = None,
        latency_ms: float | None = None,
        error_type: str | None = None,
    ) -> None:
        """Join one attempt's result with its decision (metrics, decision log, guards)."""
        self.guards.observe(
            Outcome(decision_id, group, deployment, model, status, latency_ms, error_type)
        )
        if self.metrics is not None:
            self.metrics.observe_outcome(group, deployment, status)
        if self.decision_log is not None:
            fields = outcome_fields(
                status=status, cost=cost, latency_ms=latency_ms, error_type=error_type
            )
            self.decision_log.add_outcome(decision_id, fields, model)
        self.learning.implicit(decision_id, status)

    def feedback(
        self,
        decision_id: str,
        score: Any,
        *,
        metric: str | None = None,
        identity: Identity | None = None,
    ) -> dict[str, Any]:
        """Rate a served decision: see :meth:`routeiq.serving.learning.LearningLoop.feedback`
        (blocking with ``shared_state``: from async code use :meth:`afeedback`)."""
        return self.learning.feedback(decision_id, score, metric=metric, identity=identity)

    async def afeedback(self, decision_id: str, score: Any, **kwargs: Any) -> dict[str, Any]:
        """:meth:`feedback` off the event loop (same arguments). A decision unknown here is
        tried once more after one sync interval: another worker may not have shared it yet."""
        rate = self.learning.feedback
        try:
            return await asyncio.to_thread(rate, decision_id, score, **kwargs)
        except UnknownDecision:
            wait = self.learning.share_wait()
            if wait is None:
                raise
        await asyncio.sleep(wait)
        return await asyncio.to_thread(rate, decision_id, score, **kwargs)

    def close(self) -> None:
        """Stop the scoring threads (in-flight scores finish), flush the decision log and
        the shared online state."""
        self.scorer.close()
        self.registry.close()  # stops the hot-reload watcher, if any
        self.guards.close()
        self.budgets.close()
        self.learning.close()
        if self.decision_log is not None:
            self.decision_log.close()

    # -- the rule ----------------------------------------------------------------------------

    async def _decide(
        self,
        group: ResolvedGroup,
        request: RouteRequest,
        decision_id: str,
        ctx: Mapping[str, Any] | None,
    ) -> tuple[Decision, str | None, dict[str, Any], tuple[str, OnlineContext] | None]:
        """The decision, the routing text (for the log), serving fields to set on it, and the
        online router's context (its key and features) when one corrected the prediction."""
        cands = list(request.candidates)
        if not cands:
            raise NoCandidatesError(f"no healthy deployment for model group {group.name!r}")
        names, models, costs = _columns(cands)
        blocked = self.guards.blocked(request, cands)
        if blocked and all(n in blocked for n in names):
            reasons = "; ".join(f"{n}: {blocked[n]}" for n in names)
            raise NoCandidatesError(
                f"every deployment of model group {group.name!r} is excluded ({reasons})"
            )
        if request.pinned:
            return pinned(names[0], models[0], costs[0]), None, {}, None
        avail, why = exclusions(names, request.failed, blocked)
        tradeoff = resolve_tradeoff(group, request.override)
        mode = "shuffle" if group.mode == "route" and group.name in self.unrouted else group.mode
        if mode == "shuffle":
            weights = [c.weight for c in cands]
            decision = shuffle(names, models, costs, self.rng, weights=weights, available=avail)
        elif mode == "cheapest":
            decision = cheapest(names, models, costs, lam=tradeoff.lam, available=avail)
        else:
            decision, text, digest, online = await self._route(
                group, request, cands, tradeoff, avail, decision_id, ctx
            )
            noted = self._noted(decision, why, tradeoff, router=digest, blocked=blocked)
            return decision, text, noted, online
        noted = self._noted(decision, why, tradeoff, blocked=blocked)
        return decision, None, noted, None

    async def _route(
        self,
        group: ResolvedGroup,
        request: RouteRequest,
        cands: list[Candidate],
        tradeoff: Tradeoff,
        avail: list[bool],
        decision_id: str,
        ctx: Mapping[str, Any] | None,
    ) -> tuple[Decision, str | None, str | None, tuple[str, OnlineContext] | None]:
        """The learned rule, or the fallback rule; with the text, the router's digest and the
        online context."""
        names, models, costs = _columns(cands)

        def fallback(reason: str) -> Decision:
            return cheapest(
                names,
                models,
                costs,
                outcome=FALLBACK,
                fallback_reason=reason,
                lam=tradeoff.lam,
                available=avail,
            )

        try:
            text = request_text(request.messages, request.input)
        except PromptError as exc:
            return fallback(f"no routable text: {exc}"), None, None, None
        limit = self.settings.max_prompt_chars
        if len(text) > limit:
            reason = f"prompt too long: {len(text):,} characters > max_prompt_chars {limit:,}"
            return fallback(reason), text, None, None
        learned = self.registry.for_group(group)
        if learned.context is None:
            ctx = None
        elif ctx is None:
            ctx = request.routing_context()
        online_key, online = self.learning.online_for(group, learned)
        tail = text[-self.settings.featurize_chars :]
        sticky = self.settings.sticky
        opening = opening_text(request.messages) if sticky.enabled else None
        if opening is not None:
            opening = opening[-self.settings.featurize_chars :]
        try:
            resolved, lam, rule, scoring_s, octx, first = await self.scorer.run(
                learned, tail, cands, tradeoff, online, opening, ctx
            )
        except (TimeoutError, ScoringExpired):
            ms = self.settings.decision_timeout_ms
            return fallback(f"timeout: no decision within {ms:g} ms"), text, None, None
        except Exception as exc:
            log.exception("RouteIQ: router failed for model group %r; using cheapest", group.name)
            return fallback(f"error: {type(exc).__name__}: {exc}"[:300]), text, None, None
        if self.metrics is not None:
            self.metrics.scoring_seconds.labels(group.name).observe(scoring_s)
        # A budget target held online: lambda from the recent spend of every worker.
        own = learned.target if tradeoff.lam is None and tradeoff.target is None else None
        budget = held_target(group.hold_budget, tradeoff.target or own)
        budget_key = f"{group.name}:{group.variant or ''}"
        if budget is not None:
            lam = self.budgets.lam(budget_key, budget, lam, group.hold_budget)
            rule = f"budget<={budget:g} held online, lambda={lam:.4g}"
        note = None if ctx is None or learned.context is None else learned.context.describe(ctx)
        if note is not None:
            rule = f"{rule or DEFAULT_RULE}; {note}"
        cost, allowed, why = resolved.cost, avail, None
        exploration: Exploration | None = group.exploration
        cached = [c.cached_cost for c in cands]
        st = None
        if first is not None:
            st = stay(
                first.quality, first.cost, resolved.quality, cost, cached, lam, avail, sticky.margin
            )
        if st is not None:
            rule = f"{rule or DEFAULT_RULE}; {st.note(names, sticky.margin)}"
            if st.stays:  # deterministic: the conversation's own candidate, cache-priced
                allowed, why, cost = stay_inputs(st, names, cost, cached)
                exploration = None
        decision = decide(
            names,
            models,
            resolved.quality,
            cost,
            lam,
            rule,
            available=allowed,
            excluded=why,
            mapped_from=resolved.mapped_from,
            mapping_rules=resolved.mapping_rules,
            exploration=exploration,
            u=group.exploration.draw(decision_id, learned.digest),
        )
        if budget is not None:
            spent = resolved.cost[names.index(decision.chosen)]
            self.budgets.observe(budget_key, resolved.quality, resolved.cost, float(spent))
        online_ctx = None if octx is None or online_key is None else (online_key, octx)
        return decision, text, learned.digest or None, online_ctx

    @staticmethod
    def _noted(
        decision: Decision,
        why: Mapping[str, str],
        tradeoff: Tradeoff,
        router: str | None = None,
        blocked: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Serving fields for the decision: excluded candidates, override, router digest."""
        context: dict[str, Any] = {"override": tradeoff.override, "router": router}
        if why:
            context.update(excluded_fields(decision, why, blocked or {}))
        return context
