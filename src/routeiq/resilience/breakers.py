"""Circuit breakers per deployment, as a RouteIQ guard (a candidate filter + outcome observer).

.. code-block:: python

    breakers = CircuitBreakers(BreakerSettings(enabled=True, minimum_calls=5))
    engine = DecisionEngine(settings, registry, guards=[breakers])

An open breaker removes its deployment from the candidates before the decision, so the rule
picks the next-best healthy deployment; the decision's candidate row says why
(``circuit open (failure rate 100% over 10 calls; retry in 28.0 s)``). When every candidate
of a group is open the engine raises :class:`routeiq.serving.engine.NoCandidatesError`, which
the LiteLLM strategy turns into ``ServiceUnavailableError``: the group's fallbacks apply, else
the client gets LiteLLM's own error.

Outcomes (:class:`routeiq.serving.guards.Outcome`, one per attempt) feed the breakers: a
success (slow when its latency exceeds ``slow_call_ms``) or a failure, except the exception
classes in ``ignore_errors`` (the caller's fault: a bad request, a too-long context), which
count as nothing. State is this process's unless ``shared: true`` (then see
:mod:`routeiq.resilience.shared_breakers`). Each state change is logged and counted in
``routeiq_breaker_transitions_total``; ``routeiq_breaker_state`` holds the state per
deployment (0 closed, 1 half-open, 2 open).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from routeiq.resilience.breaker import CircuitBreaker, State, Transition
from routeiq.resilience.breaker_settings import BreakerSettings
from routeiq.serving.settings import RouteIQConfigError

if TYPE_CHECKING:
    from routeiq.online.store import SharedStateSettings
    from routeiq.resilience.shared_breakers import SharedBreakers
    from routeiq.router import Candidate
    from routeiq.serving.guards import Outcome
    from routeiq.serving.request import RouteRequest
    from routeiq.telemetry.metrics import RouteIQMetrics

log = logging.getLogger(__name__)

STATE_VALUE = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


class BreakerConfigError(RouteIQConfigError):
    """Breaker settings that cannot work (the message says which and why)."""


class CircuitBreakers:
    """One :class:`CircuitBreaker` per deployment (created on first sight), as a guard."""

    def __init__(
        self,
        settings: BreakerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: RouteIQMetrics | None = None,
        shared: SharedStateSettings | None = None,
        redis_client: object = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self._groups = {name: settings.for_group(name) for name in settings.groups}
        self._ignore = {
            name: frozenset(s.ignore_errors) for name, s in [("", settings), *self._groups.items()]
        }
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()
        self.sync: SharedBreakers | None = None
        if settings.shared:
            if shared is None:
                raise BreakerConfigError(
                    "breakers.shared needs routeiq_settings.shared_state (a Redis url)"
                )
            from routeiq.resilience.shared_breakers import SharedBreakers

            self.sync = SharedBreakers(
                shared, settings, source=self.snapshot, clock=clock, client=redis_client
            )

    @classmethod
    def from_settings(
        cls,
        settings: BreakerSettings,
        shared: SharedStateSettings | None = None,
        metrics: RouteIQMetrics | None = None,
    ) -> CircuitBreakers:
        """The guard ``routeiq_settings.breakers`` configures (``shared`` is
        ``routeiq_settings.shared_state``, needed with ``breakers.shared: true``)."""
        return cls(settings, metrics=metrics, shared=shared)

    # -- the breakers ------------------------------------------------------------------------

    def group_settings(self, group: str) -> BreakerSettings:
        """The breaker settings of a model group (``breakers.groups`` over the top level)."""
        return self._groups.get(group, self.settings)

    def breaker(self, deployment: str, group: str = "") -> CircuitBreaker:
        """The breaker of ``deployment`` (a deployment id, in model group ``group``), created
        closed on first use."""
        found = self._breakers.get(deployment)
        if found is not None:
            return found
        with self._lock:
            found = self._breakers.get(deployment)
            if found is None:
                found = CircuitBreaker(
                    deployment,
                    self.group_settings(group),
                    clock=self.clock,
                    on_transition=self._changed,
                )
                self._breakers[deployment] = found
                if self.metrics is not None:
                    self.metrics.observe_breaker_state(deployment, 0)
            return found

    def snapshot(self) -> dict[str, CircuitBreaker]:
        """Every breaker so far, by deployment."""
        with self._lock:
            return dict(self._breakers)

    def states(self) -> dict[str, State]:
        return {name: b.state for name, b in self.snapshot().items()}

    # -- the guard ---------------------------------------------------------------------------

    def exclude(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Mapping[str, str]:
        """Deployments whose breaker refuses calls now, with why (takes half-open probe slots
        for the others)."""
        if not self.group_settings(request.group).enabled:
            return {}
        if self.sync is not None:
            self.sync.ensure_running()
        out: dict[str, str] = {}
        for c in candidates:
            reason = self.breaker(c.name, request.group).check()
            if reason is not None:
                out[c.name] = reason
        return out

    def observe(self, outcome: Outcome) -> None:
        """One attempt's result: counted, unless the caller caused it (``ignore_errors``)."""
        settings = self.group_settings(outcome.group)
        if not settings.enabled:
            return
        breaker = self.breaker(outcome.deployment, outcome.group)
        failed = outcome.status != "success"
        if failed and outcome.error_type in self._ignore.get(outcome.group, self._ignore[""]):
            breaker.release()
            return
        limit = breaker.settings.slow_call_ms
        latency = outcome.latency_ms
        slow = limit is not None and latency is not None and latency > limit
        breaker.record(failed=failed, slow=slow)

    def _changed(self, t: Transition) -> None:
        # Runs under the breaker's lock on the request path: log, count, queue; no network.
        where = " (opened by another worker)" if t.remote else ""
        if t.new is State.OPEN:
            log.warning(
                "RouteIQ breaker %s: %s -> open for %.1f s (%s; trip %d)%s",
                t.deployment,
                t.old.value,
                t.open_s or 0.0,
                t.reason,
                t.trips,
                where,
            )
        else:
            log.warning(
                "RouteIQ breaker %s: %s -> %s (%s)",
                t.deployment,
                t.old.value,
                t.new.value,
                t.reason,
            )
        if self.metrics is not None:
            self.metrics.observe_breaker_transition(t.deployment, t.new.value, STATE_VALUE[t.new])
        if self.sync is not None and t.new is State.OPEN and not t.remote:
            self.sync.opened(t)

    def close(self) -> None:
        """Stop sharing (one last push)."""
        if self.sync is not None:
            self.sync.close()
