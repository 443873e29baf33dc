"""One deployment's circuit breaker: CLOSED -> OPEN -> HALF_OPEN -> CLOSED (or OPEN again).

.. code-block:: python

    b = CircuitBreaker("gpt-4o-eu", BreakerSettings(enabled=True, minimum_calls=5))
    for _ in range(5):
        b.record(failed=True)
    b.check()  # 'circuit open (failure rate 100% over 5 calls; retry in 30.0 s)'

CLOSED counts calls in a sliding window (the last N calls, or the last T seconds in 1-s
buckets). Once the window holds ``minimum_calls``, a failure rate >= ``failure_rate`` or a
slow-call rate >= ``slow_call_rate`` opens the breaker. OPEN refuses every call for the open
time (``open_s``, times ``open_multiplier`` per consecutive trip, capped at ``max_open_s``;
the streak is forgotten after ``max_open_s`` closed). Then HALF_OPEN lets ``half_open_probes``
calls through at once (further calls are refused while they are in flight); the breaker
closes when that many probes have succeeded and opens again on the first failed or slow one.
A probe slot with no outcome after ``probe_timeout_s`` is given back (the decision chose
another deployment, or the outcome was lost). Every transition clears the window.

Thread-safe: the request path and a shared-state sync thread may call it concurrently.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from routeiq.resilience.breaker_settings import BreakerSettings, WindowSettings


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Counts(NamedTuple):
    """Calls in a window, and how many of them failed or were slow."""

    calls: int = 0
    failures: int = 0
    slow: int = 0

    def __add__(self, other: object) -> Counts:  # type: ignore[override]  # not concatenation
        assert isinstance(other, Counts)
        return Counts(
            self.calls + other.calls, self.failures + other.failures, self.slow + other.slow
        )


@dataclass(frozen=True)
class Transition:
    """A state change: ``reason`` says why (the trip's rates, "probes succeeded", ...)."""

    deployment: str
    old: State
    new: State
    reason: str
    open_s: float | None = None  # how long it stays open (transitions to OPEN)
    trips: int = 0  # consecutive trips so far
    remote: bool = False  # adopted from another worker


class CountWindow:
    """The last ``size`` calls."""

    def __init__(self, size: int) -> None:
        self._calls: deque[tuple[bool, bool]] = deque(maxlen=size)
        self._failures = self._slow = 0

    def add(self, now: float, failed: bool, slow: bool) -> None:
        if len(self._calls) == self._calls.maxlen:
            old_failed, old_slow = self._calls[0]
            self._failures -= old_failed
            self._slow -= old_slow
        self._calls.append((failed, slow))
        self._failures += failed
        self._slow += slow

    def counts(self, now: float) -> Counts:
        return Counts(len(self._calls), self._failures, self._slow)

    def clear(self) -> None:
        self._calls.clear()
        self._failures = self._slow = 0


class TimeWindow:
    """Calls of the last ``seconds`` seconds, in whole-second buckets (bounded memory)."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self._buckets: deque[list[int]] = deque()  # [second, calls, failures, slow]

    def _prune(self, now: float) -> None:
        oldest = int(now) - self.seconds + 1
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()

    def add(self, now: float, failed: bool, slow: bool) -> None:
        second = int(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        bucket[2] += failed
        bucket[3] += slow
        self._prune(now)

    def counts(self, now: float) -> Counts:
        self._prune(now)
        return Counts(
            sum(b[1] for b in self._buckets),
            sum(b[2] for b in self._buckets),
            sum(b[3] for b in self._buckets),
        )

    def clear(self) -> None:
        self._buckets.clear()


def make_window(settings: WindowSettings) -> CountWindow | TimeWindow:
    if settings.type == "count":
        return CountWindow(settings.size)
    return TimeWindow(settings.seconds)


class CircuitBreaker:
    """The breaker of one deployment; ``clock`` is monotonic seconds (inject it in tests)."""

    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.clock = clock
        self.on_transition = on_transition
        self.window = make_window(settings.window)
        self.remote = Counts()  # other workers' windows (shared breakers)
        self._state = State.CLOSED
        self._until = 0.0
        self._trips = 0
        self._closed_at = clock()
        self._reason = ""
        self._probes: deque[float] = deque()  # reservation times of probes in flight
        self._successes = 0
        # Re-entrant: a transition callback may read this breaker back.
        self._lock = threading.RLock()

    # -- reading -----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        with self._lock:
            self._advance(self.clock())
            return self._state

    @property
    def trips(self) -> int:
        return self._trips

    def counts(self) -> Counts:
        """This worker's window (what a shared breaker pushes)."""
        with self._lock:
            return self.window.counts(self.clock())

    def open_remaining(self) -> float:
        """Seconds until an open breaker turns half-open (0 when not open)."""
        with self._lock:
            self._advance(self.clock())
            return max(0.0, self._until - self.clock()) if self._state is State.OPEN else 0.0

    @property
    def reason(self) -> str:
        return self._reason

    # -- the request path --------------------------------------------------------------------

    def check(self) -> str | None:
        """None when a call may go to this deployment (a half-open probe slot is taken),
        else why not."""
        with self._lock:
            now = self.clock()
            self._advance(now)
            if self._state is State.CLOSED:
                return None
            if self._state is State.OPEN:
                return f"circuit open ({self._reason}; retry in {self._until - now:.1f} s)"
            timeout = self.settings.probe_timeout_s
            while self._probes and now - self._probes[0] >= timeout:
                self._probes.popleft()
            if len(self._probes) < self.settings.half_open_probes:
                self._probes.append(now)
                return None
            return f"circuit half-open ({len(self._probes)} probe(s) in flight)"

    def record(self, *, failed: bool, slow: bool = False) -> None:
        """One call's result (calls the caller caused to fail are not recorded at all)."""
        with self._lock:
            now = self.clock()
            self._advance(now)
            if self._state is State.OPEN:
                return  # started before the trip: says nothing new
            if self._state is State.HALF_OPEN:
                if self._probes:
                    self._probes.popleft()
                if failed or slow:
                    self._trip(now, "probe failed" if failed else "probe was slow")
                    return
                self._successes += 1
                if self._successes >= self.settings.half_open_probes:
                    self._close(now, f"{self._successes} probe(s) succeeded")
                return
            self.window.add(now, failed, slow)
            self._evaluate(now)

    def release(self) -> None:
        """A call ended without saying anything about the deployment (the caller's error):
        give its half-open probe slot back."""
        with self._lock:
            if self._state is State.HALF_OPEN and self._probes:
                self._probes.popleft()

    # -- shared state ------------------------------------------------------------------------

    def merge_remote(self, remote: Counts) -> None:
        """Other workers' windows, added to this one's when rates are computed."""
        with self._lock:
            self.remote = remote
            now = self.clock()
            self._advance(now)
            if self._state is State.CLOSED:
                self._evaluate(now)

    def open_from_remote(self, remaining_s: float, trips: int, reason: str) -> bool:
        """Another worker opened this breaker for ``remaining_s`` more seconds: open here
        too (True when this changed the state)."""
        with self._lock:
            now = self.clock()
            self._advance(now)
            if remaining_s <= 0:
                return False
            until = now + remaining_s
            if self._state is State.OPEN and self._until >= until - 1e-3:
                return False
            old = self._state
            self._state, self._until, self._reason = State.OPEN, until, reason
            self._trips = max(self._trips, trips)
            self._reset_counts()
            if old is not State.OPEN:
                self._emit(old, State.OPEN, reason, remaining_s, remote=True)
            return True

    # -- transitions (under the lock) --------------------------------------------------------

    def _advance(self, now: float) -> None:
        if self._state is State.OPEN and now >= self._until:
            self._state = State.HALF_OPEN
            self._probes.clear()
            self._successes = 0
            self._emit(State.OPEN, State.HALF_OPEN, "open time elapsed")

    def _evaluate(self, now: float) -> None:
        c = self.window.counts(now) + self.remote
        if c.calls < self.settings.minimum_calls:
            return
        s = self.settings
        if c.failures / c.calls >= s.failure_rate:
            self._trip(now, f"failure rate {c.failures / c.calls:.0%} over {c.calls} calls")
        elif s.slow_call_ms is not None and c.slow / c.calls >= s.slow_call_rate:
            rate = c.slow / c.calls
            self._trip(
                now, f"slow-call rate {rate:.0%} over {c.calls} calls > {s.slow_call_ms:g} ms"
            )

    def _trip(self, now: float, reason: str) -> None:
        s = self.settings
        if self._state is State.CLOSED and now - self._closed_at >= s.max_open_s:
            self._trips = 0  # a quiet period closed: the streak is over
        self._trips += 1
        open_s = min(s.open_s * s.open_multiplier ** (self._trips - 1), s.max_open_s)
        old = self._state
        self._state, self._until, self._reason = State.OPEN, now + open_s, reason
        self._reset_counts()
        self._emit(old, State.OPEN, reason, open_s)

    def _close(self, now: float, reason: str) -> None:
        self._state, self._closed_at, self._reason = State.CLOSED, now, ""
        self._reset_counts()
        self._emit(State.HALF_OPEN, State.CLOSED, reason)

    def _reset_counts(self) -> None:
        self.window.clear()
        self.remote = Counts()
        self._probes.clear()
        self._successes = 0

    def _emit(
        self,
        old: State,
        new: State,
        reason: str,
        open_s: float | None = None,
        remote: bool = False,
    ) -> None:
        if self.on_transition is not None:
            t = Transition(self.name, old, new, reason, open_s, self._trips, remote)
            self.on_transition(t)
