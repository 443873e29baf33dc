"""Graceful drain: fail readiness, refuse new requests, let in-flight ones finish, flush.

.. code-block:: python

    drain = Drain(DrainSettings(deadline_s=25, readiness_grace_s=2))
    drain.begin()                      # at SIGTERM: drain.ready is False from now on
    report = await drain.run(in_flight=lambda: limiter.in_flight, flush=engine.close)

:meth:`Drain.run` waits ``readiness_grace_s`` (a load balancer polling the readiness endpoint
sees it fail and stops sending), then until nothing is in flight or ``deadline_s`` after
:meth:`begin`, then calls ``flush`` in a thread (file and network writes stay off the event
loop). What refuses the new requests meanwhile is the caller's (the shedding limiter, closed
at :meth:`begin` through ``on_begin``). The signal wiring for the LiteLLM proxy is in
:mod:`routeiq.integrations.litellm.lifecycle`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

State = Literal["serving", "draining", "drained"]


class DrainSettings(BaseModel):
    """``drain:`` in ``routeiq_settings``: ``{deadline_s: 25, readiness_grace_s: 2}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True, description="drain on SIGTERM (false: hand SIGTERM to the server at once)"
    )
    deadline_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        default=25.0,
        description="longest wait for in-flight requests after SIGTERM, grace included "
        "(keep it below the orchestrator's kill timeout, e.g. terminationGracePeriodSeconds)",
    )
    readiness_grace_s: Annotated[float, Field(ge=0, le=600)] = Field(
        default=0.0,
        description="time readiness fails (and new requests get 503) before the server may "
        "close its listener: the load balancer's probe period x failure threshold",
    )
    flush_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        default=10.0, description="longest wait for the flush (decision log, online state)"
    )

    @model_validator(mode="after")
    def _grace_within_deadline(self) -> DrainSettings:
        if self.readiness_grace_s > self.deadline_s:
            raise ValueError("readiness_grace_s must not exceed deadline_s")
        return self


@dataclass(frozen=True)
class DrainReport:
    """What a drain did: requests still in flight at the end (0: all finished), timings."""

    left_in_flight: int
    waited_s: float
    flushed: bool
    flush_error: str | None = None


class Drain:
    """The drain state of one worker: ``serving`` -> ``draining`` -> ``drained``.

    ``clock`` and ``sleep`` are injectable (tests); ``on_begin`` callbacks run inside
    :meth:`begin`, which may be called from a signal handler: they must only set flags.
    """

    def __init__(
        self,
        settings: DrainSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        poll_s: float = 0.05,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.poll_s = poll_s
        self.state: State = "serving"
        self.started_at: float | None = None
        self._on_begin: list[Callable[[], None]] = []

    @property
    def ready(self) -> bool:
        """True while serving: what the readiness endpoint reports."""
        return self.state == "serving"

    def on_begin(self, callback: Callable[[], None]) -> None:
        self._on_begin.append(callback)

    def begin(self) -> bool:
        """Start draining (readiness fails now); False if it had begun already."""
        if self.state != "serving":
            return False
        self.state = "draining"
        self.started_at = self.clock()
        for callback in self._on_begin:
            try:
                callback()
            except Exception:  # one failing hook must not stop the drain
                log.exception("RouteIQ drain: an on_begin callback failed")
        return True

    def remaining_s(self) -> float:
        """Seconds left before the deadline (the full deadline before :meth:`begin`)."""
        if self.started_at is None:
            return self.settings.deadline_s
        return max(0.0, self.settings.deadline_s - (self.clock() - self.started_at))

    async def run(self, in_flight: Callable[[], int], flush: Callable[[], None]) -> DrainReport:
        """Grace, wait for in-flight requests (up to the deadline), flush; begins if needed."""
        self.begin()
        assert self.started_at is not None
        grace_end = self.started_at + self.settings.readiness_grace_s
        while self.clock() < grace_end:
            await self.sleep(min(self.poll_s, grace_end - self.clock()))
        while in_flight() > 0 and self.remaining_s() > 0:
            await self.sleep(min(self.poll_s, self.remaining_s()))
        left = in_flight()
        waited = self.clock() - self.started_at
        if left:
            log.warning(
                "RouteIQ drain: deadline %.1f s reached with %d request(s) in flight",
                self.settings.deadline_s,
                left,
            )
        flushed, error = await self._flush(flush)
        self.state = "drained"
        return DrainReport(left, waited, flushed, error)

    async def _flush(self, flush: Callable[[], None]) -> tuple[bool, str | None]:
        try:
            await asyncio.wait_for(asyncio.to_thread(flush), self.settings.flush_timeout_s)
        except TimeoutError:
            log.error("RouteIQ drain: flush took over %.1f s", self.settings.flush_timeout_s)
            return False, "timeout"
        except Exception as exc:  # the worker must still stop
            log.exception("RouteIQ drain: flush failed")
            return False, f"{type(exc).__name__}: {exc}"
        return True, None


__all__ = ["Drain", "DrainReport", "DrainSettings", "State"]
