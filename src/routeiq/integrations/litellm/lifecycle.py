"""Load shedding and graceful drain on the stock LiteLLM proxy, through the RouteIQ callback.

.. code-block:: yaml

    routeiq_settings:
      shedding: {max_in_flight: 64, per_team: 16, retry_after_s: 1}
      drain: {deadline_s: 25, readiness_grace_s: 2}

No LiteLLM code is modified and no middleware is added: LiteLLM imports the callback inside
its lifespan start-up, after Starlette has built the app's middleware stack (``add_middleware``
raises then). What the proxy callback uses instead, in every worker:

* **admission** in ``async_pre_call_hook`` (LiteLLM's documented hook; raising
  ``HTTPException`` returns that status): after LiteLLM's auth, so the verified team and key
  are known. Over a limit, or while draining: 503 with ``Retry-After`` at once. The slot is
  held by the request's asyncio task and released when it ends (after a stream's last chunk,
  on errors and on client disconnects). Only requests that reach the hook are counted or shed
  (chat, completions, embeddings, responses, ...); health, readiness, metrics, the admin
  API and ``/routeiq/feedback`` never are.
* **readiness** at ``GET /routeiq/ready`` (200 serving, 503 draining; no auth, for load
  balancers), registered on ``litellm.proxy.proxy_server.app`` like the feedback route. When
  LiteLLM has its graceful-shutdown manager (1.108.7 here and 1.110.x), the drain also sets
  its flag, so LiteLLM's own ``/health/readiness`` (and ``/health/liveliness``) fail too.
* **SIGTERM**: a handler chained in front of uvicorn's (and LiteLLM's). It starts the drain
  and keeps the listener open: readiness fails, new requests get 503, in-flight requests run
  to completion up to ``drain.deadline_s``, then ``engine.close()`` flushes the decision log
  and the online state, and only then is the signal handed on to uvicorn, which closes the
  listener and stops the worker as it always does.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from routeiq.resilience.drain import Drain, DrainReport, DrainSettings
from routeiq.resilience.shedding import InFlightLimiter, Shed, SheddingSettings

log = logging.getLogger(__name__)

READY_PATH = "/routeiq/ready"
_MARK = "__routeiq_ready_target__"
_LITELLM_SHUTDOWN = "litellm.proxy.shutdown.graceful_shutdown_manager"


class ProxyLifecycle:
    """One worker's limiter and drain, and how the proxy reaches them.

    ``prepare`` runs (in a thread) when the drain starts, ``flush`` when it ends; both must
    not raise into the drain (errors are logged).
    """

    def __init__(
        self,
        shedding: SheddingSettings,
        drain: DrainSettings,
        *,
        metrics: Any = None,
        prepare: Callable[[], None] | None = None,
        flush: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limiter = InFlightLimiter(shedding, metrics)
        self.drain = Drain(drain, clock=clock)
        self.prepare = prepare
        self.flush = flush if flush is not None else (lambda: None)
        self.report: DrainReport | None = None
        self.drain.on_begin(lambda: self.limiter.close("this worker is shutting down (drain)"))
        self.drain.on_begin(_flag_litellm_shutdown)
        self._task: asyncio.Task[DrainReport] | None = None

    @classmethod
    def for_engine(cls, engine: Any) -> ProxyLifecycle:
        """Built from the engine's settings; the drain flushes with ``engine.close()``."""
        settings = engine.settings
        log_ = engine.decision_log
        return cls(
            settings.shedding,
            settings.drain,
            metrics=engine.metrics,
            prepare=log_.drain if log_ is not None else None,
            flush=engine.close,
        )

    # -- the request path ----------------------------------------------------------------------

    def admit(self, auth: Any) -> None:
        """Admit the current request (call from ``async_pre_call_hook``) or raise a 503."""
        limits = self.limiter.settings
        team = getattr(auth, "team_id", None) if limits.per_team is not None else None
        key = None
        if limits.per_key is not None:  # hashed per request only when keys are limited
            raw_key = getattr(auth, "api_key", None) or getattr(auth, "token", None)
            # Only a digest is kept in memory; it never appears in messages or metrics.
            key = hashlib.sha256(raw_key.encode()).hexdigest()[:24] if raw_key else None
        try:
            self.limiter.admit_task(team=team, key=key)
        except Shed as exc:
            from fastapi import HTTPException

            raise HTTPException(
                status_code=503, detail=f"RouteIQ: {exc}", headers=exc.headers
            ) from None

    # -- SIGTERM -------------------------------------------------------------------------------

    def install_sigterm(self) -> bool:
        """Chain the drain in front of the current SIGTERM handler; needs the main thread and
        a running loop (the proxy's start-up). False when it cannot be installed."""
        if not self.drain.settings.enabled:
            return False
        if threading.current_thread() is not threading.main_thread():
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: Any) -> None:
            # A supervisor forwarding the signal (or a process-group kill) sends it again:
            # the drain that runs already covers it.
            if not self.drain.begin():
                return
            log.warning(
                "RouteIQ: SIGTERM in worker %d: draining %d request(s), up to %.1f s",
                os.getpid(),
                self.limiter.in_flight,
                self.drain.settings.deadline_s,
            )
            loop.call_soon_threadsafe(self._start_drain, previous, signum)

        signal.signal(signal.SIGTERM, on_sigterm)
        return True

    def _start_drain(self, previous: Any, signum: int) -> None:
        self._task = asyncio.get_running_loop().create_task(self.drain_then_hand_over(previous))

    async def drain_then_hand_over(self, previous: Any = None) -> DrainReport:
        """Drain, flush, then pass SIGTERM to ``previous`` (uvicorn's handler)."""
        self.drain.begin()
        if self.prepare is not None:
            try:
                await asyncio.to_thread(self.prepare)
            except Exception:
                log.exception("RouteIQ drain: preparing the decision log failed")
        self.report = report = await self.drain.run(lambda: self.limiter.in_flight, self.flush)
        log.warning(
            "RouteIQ: worker %d drained in %.2f s (%d left in flight, flushed: %s); stopping",
            os.getpid(),
            report.waited_s,
            report.left_in_flight,
            report.flushed,
        )
        _hand_over(previous, signal.SIGTERM)
        return report


def _hand_over(previous: Any, signum: int) -> None:
    if callable(previous):
        previous(signum, None)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


def _flag_litellm_shutdown() -> None:
    """Make LiteLLM's own readiness probe fail too, when this LiteLLM has the flag."""
    module = sys.modules.get(_LITELLM_SHUTDOWN)
    manager = getattr(module, "GracefulShutdownManager", None)
    start = getattr(manager, "start_shutdown", None)
    if callable(start):
        start()


def register_readiness_endpoint(lifecycle: ProxyLifecycle, app: Any = None) -> bool:
    """Add ``GET /routeiq/ready`` to the proxy app (default: the running proxy's).

    Once per app: if it exists it is re-pointed at ``lifecycle``. False when there is no app
    or the route was there already.
    """
    if app is None:
        app = getattr(sys.modules.get("litellm.proxy.proxy_server"), "app", None)
        if app is None:
            return False
    for route in app.router.routes:
        target = getattr(getattr(route, "endpoint", None), _MARK, None)
        if isinstance(target, list):
            target[0] = lifecycle
            return False
    from fastapi.responses import JSONResponse

    target = [lifecycle]

    async def routeiq_ready() -> Any:
        current: ProxyLifecycle = target[0]
        if current.drain.ready:
            return JSONResponse({"status": "ready", "in_flight": current.limiter.in_flight})
        return JSONResponse(
            {"status": current.drain.state, "in_flight": current.limiter.in_flight},
            status_code=503,
        )

    setattr(routeiq_ready, _MARK, target)
    app.add_api_route(
        READY_PATH,
        routeiq_ready,
        methods=["GET"],
        name="routeiq_ready",
        tags=["RouteIQ"],
        summary="RouteIQ readiness: 503 once this worker drains",
    )
    routes = app.router.routes
    route = next(r for r in reversed(routes) if getattr(r, "endpoint", None) is routeiq_ready)
    routes.remove(route)
    routes.insert(0, route)  # ahead of catch-all routes (see feedback_endpoint)
    return True


def attach_lifecycle(engine: Any) -> ProxyLifecycle:
    """Build the worker's lifecycle, register readiness and chain the SIGTERM drain."""
    lifecycle = ProxyLifecycle.for_engine(engine)
    register_readiness_endpoint(lifecycle)
    if lifecycle.install_sigterm():
        log.info("RouteIQ: SIGTERM drain installed in worker %d", os.getpid())
    return lifecycle


__all__ = ["READY_PATH", "ProxyLifecycle", "attach_lifecycle", "register_readiness_endpoint"]
