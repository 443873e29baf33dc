"""A consecutive-failure breaker for one service URL (client side).

    breaker = Breaker(failures=3, reset_s=2.0, clock=time.monotonic)
    if breaker.allow(): ...; breaker.record(ok)

Closed: every call goes through. ``failures`` failures in a row open it: calls are refused
at once (the caller falls back without waiting for a timeout) until ``reset_s`` passed; then
one trial call goes through (half-open): success closes it, failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"


class Breaker:
    def __init__(
        self,
        failures: int = 3,
        reset_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures, self.reset_s, self.clock = failures, reset_s, clock
        self._count = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        return HALF_OPEN if self.clock() - self._opened_at >= self.reset_s else OPEN

    def allow(self) -> bool:
        """Whether a call may go now (half-open: only the first caller, until it reports)."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._trial:
            self._trial = True
            return True
        return False

    def record(self, ok: bool) -> None:
        """The result of an allowed call."""
        self._trial = False
        if ok:
            self._count, self._opened_at = 0, None
            return
        self._count += 1
        if self._opened_at is not None or self._count >= self.failures:
            self._opened_at = self.clock()  # (re)open: a failed trial waits reset_s again
