"""``RemoteEngine``: the serving engine that asks the routing service first.

    routeiq_settings:
      router: ./router                 # the local fallback (on_failure: local)
      service: {urls: [http://routeiq:8080], timeout_ms: 20, on_failure: local}

:func:`routeiq.integrations.litellm.installer.build_engine` builds one instead of a plain
:class:`DecisionEngine` when ``service`` is set, so the strategy, the proxy callback and the
feedback endpoint use it unchanged. Per decision:

* learned-rule groups go to the service (the routing text's featurized tail, the healthy
  candidates with their costs, the retry history, this gateway's guard exclusions, the caller);
  pinned requests, ``cheapest``/``shuffle`` groups, groups the router knows no model of and
  requests with no routable text are decided here, as they need no model;
* the service's decision is recorded here like a local one (metrics, decision log with the
  prompt, so outcomes join as before; the feedback context when there is no ``shared_state``,
  else the service already put it in Redis);
* on a timeout, an error or open breakers: ``on_failure: local`` decides in process with the
  same artifact, ``cheapest`` picks the cheapest healthy deployment, ``error`` fails closed
  (LiteLLM answers 503). The decision's ``fallback_reason`` says ``service: timeout after
  20 ms``, counted in ``routeiq_service_fallbacks_total{reason}``.
* the service's refusals (nothing routable, a bad override, a policy's 403) are this
  engine's own errors, mapped by the strategy as before.
"""

from __future__ import annotations

import logging
from typing import Any

from routeiq.data.prompts import PromptError, opening_text, request_text
from routeiq.decision.decision import FALLBACK, Decision
from routeiq.decision.rules import cheapest
from routeiq.service.auth import read_token
from routeiq.service.client import ServiceClient, ServiceRefusal, ServiceUnavailable
from routeiq.service.wire import decision_from_dict, identity_body
from routeiq.serving.engine import DecisionEngine, NoCandidatesError
from routeiq.serving.guards import GuardRefusal, exclusions
from routeiq.serving.logged_prompt import logged_prompt
from routeiq.serving.overrides import OverrideError
from routeiq.serving.registry import RouterRegistry
from routeiq.serving.request import RouteRequest
from routeiq.serving.settings import RouteIQSettings

log = logging.getLogger(__name__)


class ServiceDown(NoCandidatesError):
    """``on_failure: error`` and the service did not decide (LiteLLM answers 503)."""


class RemoteRefusal(GuardRefusal):
    """A guard in the service refused the request; keeps the service's status."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class RemoteEngine(DecisionEngine):
    """A :class:`DecisionEngine` whose learned-rule decisions are made by the service."""

    def __init__(
        self,
        settings: RouteIQSettings,
        registry: RouterRegistry,
        *,
        client: ServiceClient | None = None,
        **kwargs: Any,
    ) -> None:
        if settings.service is None:
            raise ValueError("RemoteEngine needs routeiq_settings.service")
        self.service = settings.service
        # Read before anything starts: a missing token fails at start-up, not per request.
        self.client = client or ServiceClient(
            self.service, read_token(self.service.token_env, self.service.token_file)
        )
        super().__init__(settings, registry, **kwargs)
        self._fallback_counter = None if self.metrics is None else self.metrics.service_fallbacks

    async def decide(self, request: RouteRequest) -> Decision:
        body = self._body(request)
        if body is None:
            return await super().decide(request)
        started = self.clock()
        try:
            data = await self.client.route(body, _trace_headers(request.parent_span))
        except ServiceRefusal as exc:
            raise _local_error(exc) from None
        except ServiceUnavailable as exc:
            return await self._fallback(request, exc)
        decision = decision_from_dict(data)
        self._record(decision, request, self.clock() - started)
        return decision

    def close(self) -> None:
        super().close()
        self.client.close()

    def _body(self, request: RouteRequest) -> dict[str, Any] | None:
        """What the service needs; None when this request is decided here."""
        group = self.group(request.group)
        if request.pinned or group.mode != "route" or group.name in self.unrouted:
            return None
        if not request.candidates:
            return None
        try:
            text = request_text(request.messages, request.input)
        except PromptError:
            return None  # the fallback rule, here: no model needed
        if len(text) > self.settings.max_prompt_chars:
            return None
        blocked = self.guards.blocked(request, request.candidates)  # GuardRefusal: raised
        return {
            "group": request.group,
            "candidates": [
                {
                    "name": c.name,
                    "model": c.model,
                    "cost": c.cost,
                    "weight": c.weight,
                    "cached_cost": c.cached_cost,
                }
                for c in request.candidates
            ],
            "text": text[-self.settings.featurize_chars :],  # all the engine featurizes
            "opening": _tail(opening_text(request.messages), self.settings.featurize_chars),
            "override": request.override,
            "failed": dict(request.failed),
            "excluded": blocked,
            "context": {
                "user": request.user,
                "tags": list(request.tags),
                "identity": identity_body(request.identity),
                "attempt": request.attempt,
                "request_id": request.request_id,
                "stream": request.stream,
                "input_tokens": request.input_tokens,
                "operation": request.operation,
                "fields": request.routing_context(),
            },
        }

    async def _fallback(self, request: RouteRequest, exc: ServiceUnavailable) -> Decision:
        reason = f"service: {exc}"
        if self._fallback_counter is not None:
            self._fallback_counter.labels(exc.reason).inc()
        on_failure = self.service.on_failure
        if on_failure == "error":
            raise ServiceDown(f"routing service did not decide ({exc}); on_failure: error")
        if on_failure == "local":
            decision = await super().decide(request)
            own = decision.fallback_reason
            return decision.with_context(fallback_reason=f"{reason}; {own}" if own else reason)
        started = self.clock()
        cands = list(request.candidates)
        names = [c.name for c in cands]
        blocked = self.guards.blocked(request, cands)
        avail, _ = exclusions(names, request.failed, blocked)
        if not any(avail):
            group = request.group
            raise NoCandidatesError(f"every deployment of model group {group!r} is excluded")
        decision = cheapest(
            names,
            [c.model for c in cands],
            [c.cost for c in cands],
            outcome=FALLBACK,
            fallback_reason=reason,
            available=avail,
        ).with_context(
            id=f"{self._id_prefix}{next(self._ids):016x}",
            group=request.group,
            attempt=request.attempt,
        )
        self._record(decision, request, self.clock() - started)
        return decision

    def _record(self, decision: Decision, request: RouteRequest, seconds: float) -> None:
        """What the local engine does after a decision: metrics, feedback context, log."""
        if self.metrics is not None:
            self.metrics.observe_decision(decision, seconds)
        if self.settings.shared_state is None:  # else the service's context is in Redis
            self.learning.remember(decision, request.identity, None)
        if self.decision_log is not None:
            group = self.group(request.group)
            prompt, features = logged_prompt(self.settings, self.registry, group, request, None)
            self.decision_log.add_decision(decision.to_record(prompt), features=features)


def _local_error(exc: ServiceRefusal) -> Exception:
    if exc.status == 409:
        return NoCandidatesError(str(exc))
    if exc.status == 400:
        return OverrideError(str(exc))
    return RemoteRefusal(str(exc), exc.status)


def _trace_headers(parent: Any) -> dict[str, str]:
    """W3C ``traceparent`` of the caller's span (LiteLLM's, else the current one)."""
    try:
        from opentelemetry import propagate, trace
    except ImportError:
        return {}
    span = parent if isinstance(parent, trace.Span) else trace.get_current_span()
    if not span.get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def _tail(text: str | None, chars: int) -> str | None:
    return None if text is None else text[-chars:]
