"""Load shedding: a limit on requests in flight, beyond which new ones are refused at once.

.. code-block:: python

    limiter = InFlightLimiter(SheddingSettings(max_in_flight=64, per_team=16))
    lease = limiter.admit_task(team="t1", key="sk-...")  # raises Shed (-> 503) when full

A lease is held by the asyncio task that serves the request and released when that task ends:
after the last chunk of a streaming response, on an error, or when the client goes away and
the task is cancelled (uvicorn and hypercorn run each HTTP request in its own task). Nothing
waits for a slot: over the limit the answer is an immediate :class:`Shed` carrying the
``Retry-After`` to send. The counts are this process's (one worker); see ``docs/resilience.md``
for what that means with ``--num_workers N``.
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ShedReason = Literal["worker", "team", "key", "draining"]


class SheddingSettings(BaseModel):
    """``shedding:`` in ``routeiq_settings``; off unless a limit is set.

    ``{max_in_flight: 64, per_team: 16, retry_after_s: 1}``
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_in_flight: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="requests in flight per worker beyond which new ones get 503 (none: no limit)",
    )
    per_team: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="requests in flight per team (the verified caller's team_id) per worker",
    )
    per_key: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="requests in flight per API key (the verified key) per worker"
    )
    retry_after_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=1.0, description="Retry-After sent with a 503 (rounded up to whole seconds)"
    )

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in (self.max_in_flight, self.per_team, self.per_key))


class SheddingError(Exception):
    """Base of the load-shedding errors."""


class Shed(SheddingError):
    """The request is refused now; retry after :attr:`retry_after_s` (HTTP 503)."""

    def __init__(self, reason: ShedReason, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.reason: ShedReason = reason
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        """The response headers a 503 for this refusal carries."""
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


@dataclass
class Lease:
    """One admitted request's slots; :meth:`release` is idempotent."""

    limiter: InFlightLimiter
    team: str | None
    key: str | None
    released: bool = field(default=False)

    def release(self) -> None:
        self.limiter._release(self)


class InFlightLimiter:
    """Counts admitted requests (per worker, per team, per key) and refuses beyond the limits.

    ``metrics`` is a :class:`routeiq.telemetry.metrics.RouteIQMetrics` (or None): its ``shed``
    counter and ``in_flight`` gauge are kept up to date. Used from one event loop; a lock still
    guards the counts, since a release may come from a task's done-callback.
    """

    def __init__(self, settings: SheddingSettings, metrics: Any = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self._lock = threading.Lock()
        self._total = 0
        self._teams: dict[str, int] = {}
        self._keys: dict[str, int] = {}
        self._closed_reason: str | None = None
        self._tasks: dict[asyncio.Task[Any], Lease] = {}

    # -- state ---------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests admitted and not finished yet, in this worker."""
        return self._total

    def team_in_flight(self, team: str) -> int:
        return self._teams.get(team, 0)

    def close(self, reason: str = "the server is shutting down") -> None:
        """Refuse every new request from now on (drain); admitted ones keep their slots."""
        self._closed_reason = reason

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    # -- admission -----------------------------------------------------------------------------

    def acquire(self, team: str | None = None, key: str | None = None) -> Lease:
        """Take a slot for one request or raise :class:`Shed`; release the lease when done."""
        s = self.settings
        with self._lock:
            refusal = self._refusal(team, key)
            if refusal is None:
                self._total += 1
                if team is not None:
                    self._teams[team] = self._teams.get(team, 0) + 1
                if key is not None:
                    self._keys[key] = self._keys.get(key, 0) + 1
        if refusal is not None:
            if self.metrics is not None:
                self.metrics.shed.labels(refusal[0]).inc()
            raise Shed(refusal[0], refusal[1], s.retry_after_s)
        if self.metrics is not None:
            self.metrics.in_flight.inc()
        return Lease(self, team, key)

    def admit_task(
        self,
        team: str | None = None,
        key: str | None = None,
        task: asyncio.Task[Any] | None = None,
    ) -> Lease:
        """:meth:`acquire` for the request served by ``task`` (default: the current task),
        released when the task ends. A second call from the same task returns its lease."""
        if task is None:
            try:
                task = asyncio.current_task()
            except RuntimeError:  # no running loop in this thread
                task = None
        if task is None:
            raise SheddingError("admit_task needs a running asyncio task (call it from a request)")
        held = self._tasks.get(task)
        if held is not None and not held.released:
            return held
        lease = self.acquire(team, key)
        self._tasks[task] = lease
        task.add_done_callback(self._task_done)
        return lease

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        lease = self._tasks.pop(task, None)
        if lease is not None:
            lease.release()

    def _refusal(self, team: str | None, key: str | None) -> tuple[ShedReason, str] | None:
        s = self.settings
        if self._closed_reason is not None:
            return "draining", f"not accepting new requests: {self._closed_reason}"
        if s.max_in_flight is not None and self._total >= s.max_in_flight:
            return "worker", f"server overloaded: {self._total} requests in flight on this worker"
        if team is not None and s.per_team is not None and self._teams.get(team, 0) >= s.per_team:
            return "team", f"too many requests in flight for team {team!r} (limit {s.per_team})"
        if key is not None and s.per_key is not None and self._keys.get(key, 0) >= s.per_key:
            # Never echo the key itself.
            return "key", f"too many requests in flight for this API key (limit {s.per_key})"
        return None

    def _release(self, lease: Lease) -> None:
        with self._lock:
            if lease.released:
                return
            lease.released = True
            self._total -= 1
            _decrement(self._teams, lease.team)
            _decrement(self._keys, lease.key)
        if self.metrics is not None:
            self.metrics.in_flight.dec()


def _decrement(counts: dict[str, int], name: str | None) -> None:
    if name is None:
        return
    left = counts.get(name, 0) - 1
    if left > 0:
        counts[name] = left
    else:
        counts.pop(name, None)  # bounded: only names with requests in flight are kept


__all__ = ["InFlightLimiter", "Lease", "Shed", "ShedReason", "SheddingError", "SheddingSettings"]
