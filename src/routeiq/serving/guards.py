"""Guards: what may remove candidates before a decision, and what watches the outcomes.

    class NoMondays:
        def exclude(self, request, candidates):
            return {c.name: "closed on Mondays" for c in candidates if c.model == "gpt-4o"}

    engine = DecisionEngine(settings, registry, guards=[NoMondays()])

A :class:`CandidateFilter` runs on every decision (pinned ones too) before the rule and
returns the candidates that may not serve the request, each with a reason. Unlike the retry
rule (a deployment that failed earlier in the request is avoided only while another is
left), an exclusion is hard: the rule never picks it, and when every candidate is excluded
the engine raises :class:`routeiq.serving.engine.NoCandidatesError` naming the reasons
(LiteLLM's own "no deployments available", so the group's fallbacks apply). A filter that
must refuse the request with its own error (a policy's 403) raises a :class:`GuardRefusal`;
any other exception is logged and the filter is skipped for that decision (fail open: a
request that LiteLLM would serve never fails because a guard broke), unless the guard sets
``fail_closed = True`` (policies): then the request is refused (403).

An :class:`OutcomeObserver` receives every attempt's result that the engine joins
(:meth:`routeiq.serving.engine.DecisionEngine.record_outcome`): circuit breakers count
failures there. Filters and observers run on the event loop: they must not block (no
network; shared state is synced in the background). Guards with a ``close()`` are closed
with the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from routeiq.decision.decision import Decision
    from routeiq.router import Candidate
    from routeiq.serving.request import RouteRequest
    from routeiq.serving.settings import RouteIQSettings
    from routeiq.telemetry.metrics import RouteIQMetrics

log = logging.getLogger(__name__)


class GuardRefusal(Exception):
    """A guard refuses the whole request (front ends map ``status_code`` to their error)."""

    status_code = 403


@dataclass(frozen=True)
class Outcome:
    """One attempt's result, as the engine joined it with its decision."""

    decision_id: str
    group: str
    deployment: str
    model: str | None
    status: str  # "success" or "failure"
    latency_ms: float | None = None
    error_type: str | None = None  # the exception class name LiteLLM reported


@runtime_checkable
class CandidateFilter(Protocol):
    def exclude(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Mapping[str, str]:
        """Candidate name -> why it may not serve ``request`` (empty: all may)."""
        ...


@runtime_checkable
class OutcomeObserver(Protocol):
    def observe(self, outcome: Outcome) -> None:
        """One attempt's result (never raise: errors are logged and dropped)."""
        ...


class Guards:
    """The engine's guards: filters apply before each decision, observers see outcomes."""

    def __init__(self, guards: Sequence[object] = ()) -> None:
        self.all = list(guards)
        self.filters = [g for g in self.all if isinstance(g, CandidateFilter)]
        self.observers = [g for g in self.all if isinstance(g, OutcomeObserver)]

    def blocked(self, request: RouteRequest, candidates: Sequence[Candidate]) -> dict[str, str]:
        """Hard exclusions: candidate name -> the first filter's reason."""
        blocked: dict[str, str] = {}
        for guard in self.filters:
            try:
                found = guard.exclude(request, candidates)
            except GuardRefusal:
                raise
            except Exception as exc:
                name = type(guard).__name__
                if getattr(guard, "fail_closed", False):  # e.g. policies: no check, no entry
                    log.exception("RouteIQ: %s failed; request refused", name)
                    raise GuardRefusal(f"RouteIQ: {name} could not check this request") from exc
                # Fail open: a broken guard must not fail a request LiteLLM would serve.
                log.exception("RouteIQ: %s failed; not applied", name)
                continue
            for name, reason in found.items():
                blocked.setdefault(name, reason)
        return blocked

    def observe(self, outcome: Outcome) -> None:
        for observer in self.observers:
            try:
                observer.observe(outcome)
            except Exception:
                log.exception("RouteIQ: %s failed on an outcome", type(observer).__name__)

    def close(self) -> None:
        for guard in self.all:
            close = getattr(guard, "close", None)
            if callable(close):
                close()


def exclusions(
    names: Sequence[str], failed: Mapping[str, str], blocked: Mapping[str, str]
) -> tuple[list[bool], dict[str, str]]:
    """Availability per candidate and why the others are out: guard exclusions always;
    deployments that failed earlier in the request while another candidate is left."""
    hard = {n: blocked[n] for n in names if n in blocked}
    soft = {n: failed[n] for n in names if n in failed and n not in hard}
    if len(hard) + len(soft) == len(names):
        soft = {}  # nothing else left: a retry may go back to a failed deployment
    why = {**hard, **soft}
    return [n not in why for n in names], why


def excluded_fields(
    decision: Decision, why: Mapping[str, str], blocked: Mapping[str, str]
) -> dict[str, Any]:
    """Decision fields naming the excluded candidates (rows and the rule's suffix)."""
    rows = tuple(
        row if row.available else replace(row, excluded=why[row.name])
        for row in decision.candidates
    )
    guarded = [n for n in why if n in blocked]
    retried = [n for n in why if n not in blocked]
    rule = decision.rule
    if guarded:
        rule += f"; excluded {', '.join(guarded)}"
    if retried:
        rule += f"; retry: excluded {', '.join(retried)}"
    return {"candidates": rows, "rule": rule}


def build_guards(settings: RouteIQSettings, metrics: RouteIQMetrics | None = None) -> list[object]:
    """The guards ``settings`` configure, in the order they apply."""
    guards: list[object] = []
    if settings.policies is not None:  # Cedar policies: parsed and validated here, once
        from routeiq.security.policy import PolicyEngine, PolicyGuard

        guards.append(PolicyGuard(PolicyEngine.from_settings(settings.policies, metrics=metrics)))
    if settings.breakers.enabled:  # circuit breakers per deployment (routeiq.resilience)
        from routeiq.resilience.breakers import CircuitBreakers

        guards.append(
            CircuitBreakers.from_settings(settings.breakers, settings.shared_state, metrics)
        )
    return guards
