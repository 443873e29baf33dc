"""Prometheus metrics for routing decisions, registered in a registry the caller passes in.

Library code never touches prometheus_client's global default registry: pass the registry
your exporter serves (the LiteLLM proxy installer passes ``prometheus_client.REGISTRY``, the
one LiteLLM's ``/metrics`` endpoint serves). Multi-process servers work through
prometheus_client's own ``PROMETHEUS_MULTIPROC_DIR`` mode.

Metrics (prefix ``routeiq_``):

* ``decisions_total{model_group, deployment, outcome}``: ``outcome`` is ``routed`` (the learned
  router chose), ``fallback`` (no routable text, the router too slow or failed: the cheapest
  healthy deployment), ``pinned`` (the caller named a deployment), ``cheapest`` / ``shuffle``
  (group modes). One decision-log record per decision: the two counts agree.
* ``rejections_total{model_group, reason}``: requests refused before a decision
  (``NoCandidatesError``: nothing healthy; ``OverrideError``: a malformed client override).
* ``decision_duration_seconds{model_group}``: wall time of a decision inside the gateway,
  healthy-list lookup and the hop to the scoring thread (queueing, event-loop wake-up) included.
* ``scoring_duration_seconds{model_group}``: featurize + score alone, timed in the thread.
* ``fallbacks_total{model_group, reason}``.
* ``outcomes_total{model_group, deployment, status}``: call results from LiteLLM callbacks.
* ``policy_decisions_total{effect}``: Cedar policy answers (:mod:`routeiq.security.policy`):
  ``allow``, ``deny`` (a request refused), ``filter`` (a candidate deployment removed),
  ``error`` (an evaluation skipped a failing policy).
* ``decision_log_dropped_total{sink}``: decision records lost because the decision log's sink
  could not take them (``sink="queue"``: the writer's queue was full; ``sink="redis"``: Redis
  unreachable and the in-memory buffer full).
* ``shed_total{reason}``: requests refused at once with 503 by load shedding or the drain
  (``reason``: ``worker``, ``team``, ``key``, ``draining``; see :mod:`routeiq.resilience`).
* ``in_flight_requests``: requests admitted by the shedding limiter and not yet finished
  (streams until their last chunk), summed over workers (``livesum``).
* ``router_reloads_total{result}``: hot reloads of a router artifact (``swapped``: a new
  version now serves; ``refused``: it failed verification or validation, the old one serves).
* ``breaker_state{deployment}``: circuit breaker state per deployment (0 closed, 1 half-open,
  2 open; the highest over workers), ``breaker_transitions_total{deployment, state}``: state
  changes by the state entered (:mod:`routeiq.resilience.breakers`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routeiq.decision.decision import Decision

# Decisions take ~0.1-5 ms; the upper buckets catch a stalled router.
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class RouteIQMetrics:
    """The RouteIQ metric family set, bound to one ``CollectorRegistry``.

    ``registry=None`` makes a private registry (metrics are kept, reachable as
    ``.registry``, but exported nowhere).
    """

    def __init__(self, registry: Any = None, namespace: str = "routeiq") -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "decisions",
            "Routing decisions by model group, chosen deployment and outcome",
            ["model_group", "deployment", "outcome"],
            namespace=namespace,
            registry=self.registry,
        )
        self.decision_seconds = Histogram(
            "decision_duration_seconds",
            "Wall time of one routing decision in the gateway",
            ["model_group"],
            namespace=namespace,
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.scoring_seconds = Histogram(
            "scoring_duration_seconds",
            "CPU-side part of a decision: featurize + score, timed inside the scoring thread",
            ["model_group"],
            namespace=namespace,
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.fallbacks = Counter(
            "fallbacks",
            "Decisions made without the learned router, by reason",
            ["model_group", "reason"],
            namespace=namespace,
            registry=self.registry,
        )
        self.explored = Counter(
            "explored",
            "Decisions where the exploring policy picked other than the greedy choice",
            ["model_group"],
            namespace=namespace,
            registry=self.registry,
        )
        self.outcomes = Counter(
            "outcomes",
            "Results of routed calls reported by LiteLLM callbacks",
            ["model_group", "deployment", "status"],
            namespace=namespace,
            registry=self.registry,
        )
        self.rejections = Counter(
            "rejections",
            "Requests refused before a decision, by reason",
            ["model_group", "reason"],
            namespace=namespace,
            registry=self.registry,
        )
        self.decision_log_dropped = Counter(
            "decision_log_dropped",
            "Decision records dropped because the decision log's sink could not take them",
            ["sink"],
            namespace=namespace,
            registry=self.registry,
        )
        self.feedback = Counter(
            "feedback",
            "Feedback ratings received, by result (accepted, unknown, duplicate, forbidden)",
            ["result"],
            namespace=namespace,
            registry=self.registry,
        )
        self.policy_decisions = Counter(
            "policy_decisions",
            "Cedar policy answers: allow, deny (request), filter (candidate), error",
            ["effect"],
            namespace=namespace,
            registry=self.registry,
        )
        self.online_store_errors = Counter(
            "online_store_errors",
            "Failed rounds with the shared online store (Redis); learning continued locally",
            [],
            namespace=namespace,
            registry=self.registry,
        )
        self.router_reloads = Counter(
            "router_reloads",
            "Hot reloads of router artifacts, by result (swapped, refused)",
            ["result"],
            namespace=namespace,
            registry=self.registry,
        )
        self.shed = Counter(
            "shed",
            "Requests refused at once (503) by load shedding or the drain, by reason",
            ["reason"],
            namespace=namespace,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "in_flight_requests",
            "Requests admitted by RouteIQ's shedding limiter and not yet finished",
            [],
            namespace=namespace,
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.breaker_state = Gauge(
            "breaker_state",
            "Circuit breaker state per deployment: 0 closed, 1 half-open, 2 open",
            ["deployment"],
            namespace=namespace,
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.service_fallbacks = Counter(
            "service_fallbacks",
            "Decisions the routing service did not make (timeout, connection, error, "
            "breaker open), decided by on_failure instead",
            ["reason"],
            namespace=namespace,
            registry=self.registry,
        )
        self.breaker_transitions = Counter(
            "breaker_transitions",
            "Circuit breaker state changes, by deployment and the state entered",
            ["deployment", "state"],
            namespace=namespace,
            registry=self.registry,
        )

    def observe_decision(self, decision: Decision, seconds: float) -> None:
        group = decision.group or ""
        self.decisions.labels(group, decision.chosen, decision.outcome).inc()
        self.decision_seconds.labels(group).observe(seconds)
        if decision.fallback_reason:
            self.fallbacks.labels(group, _reason_label(decision.fallback_reason)).inc()
        if decision.explored:
            self.explored.labels(group).inc()

    def observe_rejection(self, model_group: str, reason: str) -> None:
        self.rejections.labels(model_group, reason).inc()

    def observe_outcome(self, model_group: str, deployment: str, status: str) -> None:
        self.outcomes.labels(model_group, deployment, status).inc()

    def observe_policy(self, effect: str) -> None:
        self.policy_decisions.labels(effect).inc()

    def observe_breaker_state(self, deployment: str, value: int) -> None:
        self.breaker_state.labels(deployment).set(value)

    def observe_breaker_transition(self, deployment: str, state: str, value: int) -> None:
        self.breaker_transitions.labels(deployment, state).inc()
        self.breaker_state.labels(deployment).set(value)


def _reason_label(reason: str) -> str:
    # Keep label cardinality bounded: "error: ValueError: ..." -> "error",
    # "no routable text: ..." -> "no routable text".
    return reason.split(":", 1)[0].strip() or "unknown"
