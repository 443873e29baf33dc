"""``RouteIQRoutingStrategy``: LiteLLM's custom routing strategy backed by a learned router.

Installed per ``Router`` instance (``register_plugin`` on LiteLLM 1.110+, else
``set_custom_routing_strategy``); nothing is patched at class level and nothing is kept at
module level. For every call (every model group, fallback hops and retries included):

1. Ask LiteLLM for the healthy deployments (``router.select(..., kind="healthy")`` on 1.110+,
   ``router.async_get_healthy_deployments`` before), so cooldowns, context-window pre-call
   checks, tag/team filters and ``async_filter_deployments`` callbacks keep working. A dict
   back means the caller pinned one deployment: it is returned as is.
2. Map each deployment to a model the router knows and price the request
   (:mod:`routeiq.integrations.litellm.deployments`).
3. Score off the event loop: featurization and scoring run in a thread pool of
   ``threads`` workers, bounded by ``decision_timeout_ms``. On timeout or a router error the
   **cheapest healthy deployment** is chosen (unknown prices count as most expensive; ties go
   to the first deployment) and the decision carries a ``fallback_reason``. (``scoring:
   inline`` runs a known-fast router, e.g. lexical features, on the loop instead: no thread
   hop, but no timeout either; router errors still fall back.)
4. Emit a span, metrics and a decision record; append a summary (id, chosen model and
   deployment, router digest) to the request metadata's ``routeiq_decisions`` list, for
   outcome joins and response headers.

Requests with no routable text (empty, whitespace only, no user turn, only images) or a
routing text longer than ``max_prompt_chars`` are refused with ``litellm.BadRequestError``
(HTTP 400 on the proxy) naming the problem. Only the last ``featurize_chars`` characters of
the routing text are featurized (the end of the last user turn; shared instruction
templates tend to sit at the start).

Client overrides: request ``metadata.routeiq`` may be ``"cheapest"``, ``"best"`` (lambda 0),
``{"lambda": 5.0}`` or ``{"target": "quality>=0.9"}``. They apply only where the group's
``allow_client_overrides`` is true; elsewhere they are ignored and the response header
``x-routeiq-override: ignored`` says so. A malformed override where allowed is a 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import litellm
from litellm.types.router import CustomRoutingStrategyBase

from routeiq.data.prices import estimate_tokens
from routeiq.data.prompts import PromptError, prompt_text
from routeiq.decision.calibrate import parse_target
from routeiq.decision.policy import check_lambda
from routeiq.integrations.litellm import deployments as deps
from routeiq.integrations.litellm.callbacks import DECISIONS_KEY
from routeiq.integrations.litellm.config import ResolvedGroup, RouteIQConfigError, RouteIQSettings
from routeiq.integrations.litellm.decision_log import DecisionLog
from routeiq.router import Candidate, LearnedRouter
from routeiq.telemetry.metrics import RouteIQMetrics
from routeiq.telemetry.tracing import (
    ERROR_TYPE,
    GEN_AI_OPERATION,
    GEN_AI_PROVIDER,
    GEN_AI_RESPONSE_MODEL,
    DecisionTracer,
    clean_attributes,
    provider_of,
)

log = logging.getLogger(__name__)

_MAX_CACHED_GROUPS = 4096
OVERRIDE_KEY = "routeiq"  # request metadata key a client uses for overrides


@dataclass(frozen=True)
class _Choice:
    """One decision, in the terms the gateway needs."""

    deployment: dict[str, Any]  # the router's own dict, returned as is
    outcome: str  # routed | fallback | pinned | cheapest | shuffle
    model: str
    candidates: list[dict[str, Any]]
    propensity: float
    lam: float | None
    fallback_reason: str | None = None
    predicted_quality: float | None = None
    cost: float | None = None


class RouteIQRoutingStrategy(CustomRoutingStrategyBase):
    """Chooses among LiteLLM's healthy deployments with learned routers.

    ``routers`` maps artifact paths (as in ``settings``) to loaded routers;
    ``default_router`` serves groups whose settings name no artifact (SDK users may pass a
    router object instead of a path). Build with :func:`install`, which also validates the
    settings against the router's model list.
    """

    def __init__(
        self,
        router: Any,
        settings: RouteIQSettings,
        *,
        routers: Mapping[Path, LearnedRouter] | None = None,
        default_router: LearnedRouter | None = None,
        decision_log: DecisionLog | None = None,
        metrics: RouteIQMetrics | None = None,
        tracer_provider: Any = None,
        clock: Callable[[], float] = time.perf_counter,
        rng: random.Random | None = None,
    ) -> None:
        self.router = router
        self.settings = settings
        self.routers = dict(routers or {})
        self.default_router = default_router
        self.decision_log = decision_log
        self.metrics = metrics
        self.tracer = DecisionTracer(tracer_provider)
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.callback: Any = None  # set by install() when it registers the outcome callback
        # Tags this strategy's decisions in request metadata, so that only its own callback
        # joins their outcomes when several routers share one process.
        self.token = uuid.uuid4().hex[:16]
        self._groups: dict[str, ResolvedGroup] = {}
        self._executor = (
            ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="routeiq-score")
            if settings.scoring == "thread"
            else None
        )
        # LiteLLM 1.110+ exposes select(kind=...); 1.108 the older healthy-list method.
        self._use_select = callable(getattr(router, "select", None)) and callable(
            getattr(router, "register_plugin", None)
        )

    # -- LiteLLM entry points ------------------------------------------------------------------

    async def async_get_available_deployment(  # type: ignore[override]  # base says None
        self,
        model: str,
        messages: list[dict[str, Any]] | None = None,
        input: str | list | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict | None = None,
    ) -> dict[str, Any]:
        started = self.clock()
        request_kwargs = {} if request_kwargs is None else request_kwargs
        metadata = _metadata(request_kwargs)
        group = self._groups.get(model)
        if group is None:  # settings are frozen: resolve each group once
            group = self.settings.group(model)
            if len(self._groups) < _MAX_CACHED_GROUPS:  # bounded: names come from clients
                self._groups[model] = group
        with self.tracer.decision_span(model, metadata.get("litellm_parent_otel_span")) as span:
            try:
                choice, text, override = await self._choose(
                    model, group, messages, input, specific_deployment, request_kwargs, metadata
                )
            except Exception as exc:
                span.set_attribute(ERROR_TYPE, type(exc).__name__)
                if self.metrics is not None:
                    self.metrics.observe_decision(model, "", "rejected", self.clock() - started)
                raise
            seconds = self.clock() - started
            decision_id = f"{os.getpid()}-{uuid.uuid4().hex}"
            digest = self._digest_for(group) if choice.outcome in ("routed", "fallback") else None
            dep_id = deps.deployment_id(choice.deployment)
            summary = {
                "id": decision_id,
                "model": choice.model,
                "deployment": dep_id,
                "router": digest,
                "outcome": choice.outcome,
                "fallback_reason": choice.fallback_reason,
                "override": override,
                "owner": self.token,
            }
            # Every decision of this request, for outcome joins and response headers: a retry
            # or fallback hop is a new decision (LiteLLM may copy the metadata dict between
            # hops; the list object is shared, so every copy sees every decision).
            metadata.setdefault(DECISIONS_KEY, []).append(summary)
            span.set_attributes(
                clean_attributes(
                    self._span_attributes(
                        choice, group, decision_id, digest, override, messages, seconds
                    )
                )
            )
            if self.metrics is not None:
                label_group = (
                    model
                    if choice.outcome != "pinned"
                    else str(choice.deployment.get("model_name") or model)
                )
                self.metrics.observe_decision(
                    label_group, dep_id, choice.outcome, seconds, choice.fallback_reason
                )
            if self.decision_log is not None:
                self.decision_log.add_decision(self._record(decision_id, text, choice, digest))
        return choice.deployment  # the router's own dict: LiteLLM reads it by identity

    def get_available_deployment(  # type: ignore[override]  # base annotates None
        self,
        model: str,
        messages: list[dict[str, Any]] | None = None,
        input: str | list | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict | None = None,
    ) -> dict[str, Any]:
        """Sync entry (``Router.completion``): runs the async path on a private event loop."""

        def run() -> dict[str, Any]:
            return asyncio.run(
                self.async_get_available_deployment(
                    model, messages, input, specific_deployment, request_kwargs
                )
            )

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return run()
        # A sync call made from inside a running loop: that loop's thread must not nest.
        with ThreadPoolExecutor(max_workers=1) as one:
            return one.submit(run).result()

    def close(self) -> None:
        """Stop the scoring threads (in-flight scores finish)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the decision ------------------------------------------------------------------------

    async def _choose(
        self,
        model: str,
        group: ResolvedGroup,
        messages: list[dict[str, Any]] | None,
        input: str | list | None,
        specific_deployment: bool | None,
        request_kwargs: dict,
        metadata: dict,
    ) -> tuple[_Choice, str | None, str | None]:
        healthy = await self._healthy(
            model,
            request_kwargs,
            messages,
            input,
            specific_deployment,
            metadata.get("litellm_parent_otel_span"),
        )
        if isinstance(healthy, Mapping):  # the caller pinned this deployment
            known = self._known_models(group)
            return (
                _Choice(
                    healthy,
                    "pinned",
                    deps.router_model(healthy, known, self.settings.aliases),
                    [self._pinned_row(healthy, known)],
                    1.0,
                    None,
                ),
                None,
                None,
            )
        healthy = list(healthy)
        if not healthy:
            raise litellm.ServiceUnavailableError(
                message=f"RouteIQ: no healthy deployment for model group {model!r}",
                model=model,
                llm_provider="",
            )
        lam, target, override = self._tradeoff(model, group, metadata.get(OVERRIDE_KEY))
        text = None
        if group.mode == "route":
            text = self._routing_text(model, messages, input)
        elif self.settings.log_prompt == "text":
            with contextlib.suppress(PromptError):
                text = self._routing_text(model, messages, input)
        input_tokens = _input_tokens(messages, input)
        known = self._known_models(group)
        models = [deps.router_model(d, known, self.settings.aliases) for d in healthy]
        costs = [
            deps.request_cost(deps.deployment_price(d), input_tokens, group.estimated_output_tokens)
            for d in healthy
        ]
        if group.mode == "shuffle":
            return self._shuffle(healthy, models, costs), text, override
        if group.mode == "cheapest":
            return self._cheapest(healthy, models, costs, "cheapest", None, lam), text, override
        choice = await self._route(group, healthy, models, costs, text or "", lam, target)
        return choice, text, override

    async def _route(
        self,
        group: ResolvedGroup,
        healthy: list[dict[str, Any]],
        models: list[str],
        costs: list[float | None],
        text: str,
        lam: float | None,
        target: str | None,
    ) -> _Choice:
        learned = self._router_for(group)
        names = [deps.deployment_id(d) for d in healthy]
        candidates = [
            Candidate(name=n, model=m, cost=c) for n, m, c in zip(names, models, costs, strict=True)
        ]
        tail = text[-self.settings.featurize_chars :]
        timeout = self.settings.decision_timeout_ms / 1000.0
        deadline = time.monotonic() + timeout
        try:
            if self._executor is None:  # scoring: inline (see RouteIQSettings.scoring)
                decision, scoring_s = _score(learned, tail, candidates, lam, target, deadline)
            else:
                future = asyncio.get_running_loop().run_in_executor(
                    self._executor, _score, learned, tail, candidates, lam, target, deadline
                )
                decision, scoring_s = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            reason = f"timeout: no decision within {self.settings.decision_timeout_ms:g} ms"
            return self._cheapest(healthy, models, costs, "fallback", reason, lam)
        except _Expired:
            return self._cheapest(
                healthy, models, costs, "fallback", "timeout: scoring queue too long", lam
            )
        except Exception as exc:
            log.exception("RouteIQ: router failed for model group %r; using cheapest", group.name)
            return self._cheapest(
                healthy, models, costs, "fallback", f"error: {type(exc).__name__}: {exc}"[:300], lam
            )
        if self.metrics is not None:
            self.metrics.scoring_seconds.labels(group.name).observe(scoring_s)
        by_name = dict(zip(names, healthy, strict=True))
        rows = []
        for row in decision.candidates:
            rows.append(
                {
                    "model": row.model,
                    "deployment": row.name,
                    "predicted_quality": row.predicted_quality,
                    "cost": row.cost,
                    "probability": 1.0 if row.name == decision.chosen else 0.0,
                }
            )
        chosen_row = decision.chosen_row
        return _Choice(
            deployment=by_name[decision.chosen],
            outcome="routed",
            model=decision.model,
            candidates=rows,
            propensity=1.0,
            lam=decision.lam,
            predicted_quality=chosen_row.predicted_quality if chosen_row else None,
            cost=chosen_row.cost if chosen_row else None,
        )

    def _cheapest(
        self,
        healthy: list[dict[str, Any]],
        models: list[str],
        costs: list[float | None],
        outcome: str,
        reason: str | None,
        lam: float | None,
    ) -> _Choice:
        # Unknown prices sort last; ties keep LiteLLM's order (first deployment wins).
        order = sorted(range(len(healthy)), key=lambda j: (costs[j] is None, costs[j] or 0.0, j))
        j = order[0]
        rows = [
            {
                "model": m,
                "deployment": deps.deployment_id(d),
                "cost": c,
                "probability": 1.0 if k == j else 0.0,
            }
            for k, (d, m, c) in enumerate(zip(healthy, models, costs, strict=True))
        ]
        return _Choice(healthy[j], outcome, models[j], rows, 1.0, lam, reason, None, costs[j])

    def _shuffle(
        self, healthy: list[dict[str, Any]], models: list[str], costs: list[float | None]
    ) -> _Choice:
        j = self.rng.randrange(len(healthy))
        p = 1.0 / len(healthy)
        rows = [
            {"model": m, "deployment": deps.deployment_id(d), "cost": c, "probability": p}
            for d, m, c in zip(healthy, models, costs, strict=True)
        ]
        return _Choice(healthy[j], "shuffle", models[j], rows, p, None, None, None, costs[j])

    # -- helpers -------------------------------------------------------------------------------

    async def _healthy(
        self,
        model: str,
        request_kwargs: dict,
        messages: list[dict[str, Any]] | None,
        input: str | list | None,
        specific_deployment: bool | None,
        parent_span: Any,
    ) -> list[dict[str, Any]] | dict[str, Any]:
        if self._use_select:
            return await self.router.select(
                model,
                request_kwargs,
                kind="healthy",
                messages=messages,
                input=input,
                specific_deployment=specific_deployment,
                parent_otel_span=parent_span,
            )
        return await self.router.async_get_healthy_deployments(
            model=model,
            request_kwargs=request_kwargs,
            messages=messages,
            input=input,
            specific_deployment=specific_deployment,
            parent_otel_span=parent_span,
        )

    def _routing_text(
        self, model: str, messages: list[dict[str, Any]] | None, input: str | list | None
    ) -> str:
        try:
            if messages is not None:
                text = prompt_text(list(messages))
            elif isinstance(input, str):
                text = prompt_text(input)
            elif isinstance(input, list) and input and all(isinstance(x, str) for x in input):
                text = prompt_text("\n".join(input))
            else:
                raise PromptError("the request has no chat messages or text input to route on")
        except PromptError as exc:
            raise litellm.BadRequestError(
                message=f"RouteIQ cannot route this request to model group {model!r}: {exc}",
                model=model,
                llm_provider="routeiq",
            ) from None
        if len(text) > self.settings.max_prompt_chars:
            raise litellm.BadRequestError(
                message=(
                    f"RouteIQ cannot route this request to model group {model!r}: the last "
                    f"user message has {len(text):,} characters, more than the "
                    f"{self.settings.max_prompt_chars:,} allowed "
                    "(routeiq_settings.max_prompt_chars)"
                ),
                model=model,
                llm_provider="routeiq",
            )
        return text

    def _tradeoff(
        self, model: str, group: ResolvedGroup, override: Any
    ) -> tuple[float | None, str | None, str | None]:
        """(lambda, target, override status) for this request."""
        lam, target = group.lam, group.target
        if override is None:
            return lam, target, None
        if not group.allow_client_overrides:
            return lam, target, "ignored"

        def bad(why: str) -> litellm.BadRequestError:
            return litellm.BadRequestError(
                message=(
                    f"invalid metadata.routeiq override for model group {model!r}: {why}. "
                    'Use "cheapest", "best", {"lambda": <number >= 0>} or '
                    '{"target": "quality>=0.9"}'
                ),
                model=model,
                llm_provider="routeiq",
            )

        if override == "cheapest":
            return math.inf, None, "cheapest"
        if override == "best":
            return 0.0, None, "best"
        if not isinstance(override, Mapping) or len(override) != 1:
            raise bad(f"got {override!r}")
        key, value = next(iter(override.items()))
        if key == "lambda":
            try:
                return check_lambda(value), None, "lambda"
            except ValueError as exc:
                raise bad(str(exc)) from None
        if key == "target":
            try:
                parse_target(value)
            except ValueError as exc:
                raise bad(str(exc)) from None
            return None, value, "target"
        raise bad(f"unknown key {key!r}")

    def _router_for(self, group: ResolvedGroup) -> LearnedRouter:
        if group.router is not None and group.router in self.routers:
            return self.routers[group.router]
        if group.router is None and self.default_router is not None:
            return self.default_router
        raise RouteIQConfigError(
            f"model group {group.name!r} is in mode 'route' but no router artifact is loaded "
            f"for it (routeiq_settings.router or groups.{group.name}.router)"
        )

    def _known_models(self, group: ResolvedGroup) -> list[str]:
        if group.mode != "route":
            return []
        try:
            return list(self._router_for(group).models_)
        except RouteIQConfigError:
            return []

    def _digest_for(self, group: ResolvedGroup) -> str | None:
        try:
            return self._router_for(group).digest or None
        except RouteIQConfigError:
            return None

    def _pinned_row(self, dep: Mapping[str, Any], known: Sequence[str]) -> dict[str, Any]:
        return {
            "model": deps.router_model(dep, known, self.settings.aliases),
            "deployment": deps.deployment_id(dep),
            "probability": 1.0,
        }

    def _record(
        self, decision_id: str, text: str | None, choice: _Choice, digest: str | None
    ) -> dict[str, Any]:
        lam = choice.lam if choice.lam is not None and math.isfinite(choice.lam) else None
        return {
            "id": decision_id,
            "prompt": text if self.settings.log_prompt == "text" else None,
            "decision": {
                "candidates": choice.candidates,
                "chosen": choice.model,
                "propensity": choice.propensity,
                "lambda": lam,
                "router": digest,
            },
        }

    def _span_attributes(
        self,
        choice: _Choice,
        group: ResolvedGroup,
        decision_id: str,
        digest: str | None,
        override: str | None,
        messages: list[dict[str, Any]] | None,
        seconds: float,
    ) -> dict[str, Any]:
        litellm_name = deps.litellm_model(choice.deployment)
        lam = choice.lam
        return {
            GEN_AI_OPERATION: "chat" if messages is not None else None,
            GEN_AI_RESPONSE_MODEL: litellm_name,
            GEN_AI_PROVIDER: provider_of(litellm_name),
            "routeiq.decision.id": decision_id,
            "routeiq.decision.outcome": choice.outcome,
            "routeiq.decision.duration_ms": seconds * 1000.0,
            "routeiq.mode": group.mode,
            "routeiq.router.digest": digest,
            "routeiq.lambda": lam if lam is None or math.isfinite(lam) else "inf",
            "routeiq.target": group.target,
            "routeiq.override": override,
            "routeiq.chosen.deployment": deps.deployment_id(choice.deployment),
            "routeiq.chosen.model": choice.model,
            "routeiq.predicted_quality": choice.predicted_quality,
            "routeiq.cost_usd": choice.cost,
            "routeiq.propensity": choice.propensity,
            "routeiq.fallback_reason": choice.fallback_reason,
            "routeiq.candidates.deployments": [r["deployment"] for r in choice.candidates],
            "routeiq.candidates.models": [r["model"] for r in choice.candidates],
            "routeiq.candidates.predicted_quality": [
                r.get("predicted_quality") for r in choice.candidates
            ],
            "routeiq.candidates.cost_usd": [r.get("cost") for r in choice.candidates],
        }


class _Expired(Exception):
    """The scoring job started after its deadline (queue backlog): skipped."""


def _score(
    learned: LearnedRouter,
    text: str,
    candidates: list[Candidate],
    lam: float | None,
    target: str | None,
    deadline: float,
) -> Any:
    # Runs in a scoring thread. A job that waited past its deadline is skipped: its caller
    # already fell back, and scoring it anyway would only lengthen the backlog.
    if time.monotonic() > deadline:
        raise _Expired
    started = time.perf_counter()
    decision = learned.route(text, candidates, lam=lam, target=target)
    return decision, time.perf_counter() - started


def _metadata(request_kwargs: dict) -> dict:
    for key in ("metadata", "litellm_metadata"):
        value = request_kwargs.get(key)
        if isinstance(value, dict):
            return value
    request_kwargs["metadata"] = {}
    return request_kwargs["metadata"]


def _input_tokens(messages: Sequence[Mapping[str, Any]] | None, input: Any) -> int:
    """Estimated input tokens of the whole request (every message, not only the last)."""
    texts: list[str] = []
    if messages:
        for msg in messages:
            content = msg.get("content") if isinstance(msg, Mapping) else None
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts.extend(
                    part["text"]
                    for part in content
                    if isinstance(part, Mapping) and isinstance(part.get("text"), str)
                )
    elif isinstance(input, str):
        texts.append(input)
    elif isinstance(input, list):
        texts.extend(x for x in input if isinstance(x, str))
    return sum(estimate_tokens(t) for t in texts) if texts else 1
