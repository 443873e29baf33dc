"""``POST /routeiq/feedback`` on the stock LiteLLM proxy, behind the proxy's own auth.

The RouteIQ proxy callback registers this route on ``litellm.proxy.proxy_server.app`` in every
worker (:func:`register_feedback_endpoint`). The caller is authenticated by LiteLLM's own
FastAPI dependency (``litellm.proxy.auth.user_api_key_auth.user_api_key_auth``, the one its
``/chat/completions`` uses): virtual keys, ``custom_auth``, JWT or the master key, whatever the
operator configured. The verified caller
(:func:`~routeiq.integrations.litellm.proxy.identity_from_auth`) may rate its own key's
decisions; an admin of the key's team or a proxy admin may rate any of theirs
(:func:`routeiq.serving.feedback.authorize`).

Request (JSON)::

    {"decision_id": "4242-9f...", "score": 0.8, "metric": "quality"}

``decision_id`` is the ``x-routeiq-decision-id`` response header; ``score`` is a number in
[0, 1], ``true``/``false`` or ``"up"``/``"down"``; ``metric`` is optional (default
``quality``, the one that enters the reward and online learning; other names are recorded
under ``scores``). A batch is a JSON list of such objects, or ``{"items": [...]}``, at most
:data:`MAX_ITEMS` items; any body is at most :data:`MAX_BODY_BYTES` and needs a
``Content-Length`` (411 otherwise).

Responses:

* one item: ``200 {"status": "accepted", "decision_id", "metric", "score", "model",
  "learned"}``, or the error's status with LiteLLM's error body
  ``{"error": {"message", "type", "param", "code"}}``: 422 invalid score, metric or field
  (``type`` ``invalid_request_error``), 404 unknown or expired decision
  (``not_found_error``), 403 another key's decision (``permission_error``), 409 already rated
  for this metric (``conflict_error``), 503 when the decision is not in this worker and the
  shared state (Redis) is unreachable (``service_unavailable_error``: retry later);
* a batch: ``200 {"accepted": N, "rejected": M, "results": [{"index", "decision_id",
  "status", "result" | "error"}, ...]}`` whenever the body itself is valid, one result per
  item in order, each with the status a single request would have had (items not reached
  within :data:`BATCH_BUDGET_S` get 503);
* malformed bodies: 400 (not JSON), 411 (no ``Content-Length``), 413 (too large or too many
  items), 422 (wrong shape: says which field). The body is bounded and parsed *before*
  LiteLLM's auth reads it (so these come before authentication), and handed to LiteLLM's
  auth through its parsed-body cache (``safe_set_request_parsed_body``; a JSON list as
  ``{}``: LiteLLM 1.108.7's auth fails with a 500 on a list body). Authentication failures
  are LiteLLM's own answer, the same as on its chat routes (401; on 1.108.7 without
  ``prisma`` installed its error handler turns them into 500s, chat routes included).

With ``shared_state`` a decision reaches Redis within ``online.sync_interval_s``; feedback for
another worker's decision that arrives sooner is retried once after that interval before it
is answered 404.

**Registration and its limits.** The route is added with FastAPI's ``app.add_api_route`` once
per app (a second callback in the same worker, e.g. after a config reload, re-points the
existing route at itself) and moved to the front of ``app.router.routes`` (the public route
list), so no route registered earlier can shadow it: in LiteLLM 1.108.7 the app has Mounts
(``/ui``, ``/swagger``, ``/_next``, ...), ``/lens/{path:path}``, lazily included feature routers
(appended on first use under their own prefixes) and operator pass-through endpoints
(``general_settings.pass_through_endpoints``, ``{path}/{subpath:path}`` with
``include_subpath``). A pass-through endpoint configured at exactly ``/routeiq/feedback``
would be placed ahead of it by LiteLLM and win. LiteLLM's code is not modified.

**Authorization by LiteLLM.** LiteLLM's route RBAC still applies to this route: the master
key and proxy admins pass; ``custom_auth`` callers pass (unless
``general_settings.custom_auth_run_common_checks`` is set); other virtual keys are refused by
LiteLLM ("Only proxy admin can be used to ...") unless the route is allowed for them:
``metadata: {allowed_passthrough_routes: ["/routeiq/feedback"]}`` on the key or its team, or
the key's ``allowed_routes`` listing it (with ``llm_api_routes`` to keep LLM calls).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from routeiq.integrations.litellm.feedback_body import (
    MAX_BODY_BYTES,
    MAX_ITEMS,
    Payload,
    Refused,
    error_body,
    read_payload,
)
from routeiq.serving.feedback import (
    DuplicateFeedback,
    FeedbackError,
    FeedbackForbidden,
    Identity,
    InvalidFeedback,
    UnknownDecision,
)

log = logging.getLogger(__name__)

PATH = "/routeiq/feedback"
BATCH_BUDGET_S = 10.0  # a batch stops rating after this long; the rest get 503
_MARK = "__routeiq_feedback_target__"

_PARAMS: dict[type[FeedbackError], str] = {
    UnknownDecision: "decision_id",
    FeedbackForbidden: "decision_id",
    DuplicateFeedback: "decision_id",
}


@dataclass
class _Target:
    """What the route rates with: the latest RouteIQ proxy callback of this worker."""

    callback: Any
    identity_of: Callable[[Any], Identity]


def register_feedback_endpoint(callback: Any, app: Any = None, auth: Any = None) -> bool:
    """Add ``POST /routeiq/feedback`` to the proxy app (default: the running proxy's).

    Once per app: if the route exists it is re-pointed at ``callback``. False when there is no
    proxy app (the SDK, or ``check``) or the route was there already. ``auth`` is the FastAPI
    dependency that authenticates the caller (default: LiteLLM's ``user_api_key_auth``).
    """
    from routeiq.integrations.litellm.proxy import identity_from_auth

    if app is None:
        proxy_server = sys.modules.get("litellm.proxy.proxy_server")
        app = getattr(proxy_server, "app", None)
        if app is None:
            return False
    routes = app.router.routes
    for route in routes:
        target = getattr(getattr(route, "endpoint", None), _MARK, None)
        if isinstance(target, _Target):
            target.callback = callback
            return False
    if auth is None:
        from litellm.proxy.auth.user_api_key_auth import user_api_key_auth as auth

    target = _Target(callback, identity_from_auth)
    shadowing = _matching_routes(routes)
    endpoint = _make_endpoint(target, auth)
    app.add_api_route(
        PATH,
        endpoint,
        methods=["POST"],
        name="routeiq_feedback",
        tags=["RouteIQ"],
        summary="Rate a RouteIQ routing decision",
    )
    route = next(r for r in reversed(routes) if getattr(r, "endpoint", None) is endpoint)
    routes.remove(route)
    routes.insert(0, route)  # ahead of anything that also matches (catch-all routes)
    if shadowing:
        log.warning(
            "RouteIQ: POST %s placed ahead of routes that also match it: %s",
            PATH,
            ", ".join(shadowing),
        )
    log.info("RouteIQ: feedback endpoint POST %s registered in worker %d", PATH, os.getpid())
    return True


def _matching_routes(routes: list[Any]) -> list[str]:
    """Existing routes that would serve ``POST /routeiq/feedback`` (Starlette's matcher)."""
    from starlette.routing import Match

    scope = {"type": "http", "method": "POST", "path": PATH, "root_path": "", "headers": []}
    found = []
    for route in routes:
        try:
            match, _ = route.matches(scope)
        except Exception:  # an exotic route type: it cannot be judged, so not reported
            continue
        if match == Match.FULL:
            found.append(str(getattr(route, "path", route)))
    return found


def _make_endpoint(target: _Target, auth_dependency: Any) -> Any:
    async def routeiq_feedback(
        request: Request,
        # Order matters: the body is bounded and parsed before LiteLLM's auth reads it.
        payload: Payload = Depends(read_payload),  # noqa: B008
        auth: Any = Depends(auth_dependency),  # noqa: B008
    ) -> Any:
        try:
            engine = _engine_of(target.callback)
            identity = target.identity_of(auth)
            if not payload.batch:
                problem = payload.problems.get(0)
                status, body = (
                    (problem.status, error_body(problem.status, problem.message, problem.param))
                    if problem is not None
                    else await _rate_one(engine, payload.items[0], identity)
                )
                if status == 200:
                    return JSONResponse({"status": "accepted", **body})
                return JSONResponse({"error": body}, status_code=status)
            return JSONResponse(await _rate_batch(engine, payload, identity))
        except Refused as exc:
            return JSONResponse(
                {"error": error_body(exc.status, exc.message, exc.param)}, status_code=exc.status
            )

    setattr(routeiq_feedback, _MARK, target)
    return routeiq_feedback


def _engine_of(callback: Any) -> Any:
    engine = getattr(callback, "engine", None)
    if engine is None:
        raise Refused(503, "RouteIQ is not running in this worker")
    install_error = getattr(callback, "install_error", None)
    if install_error:
        raise Refused(503, f"RouteIQ: {install_error}")
    if not engine.settings.feedback.enabled:
        raise Refused(404, "RouteIQ feedback is disabled (routeiq_settings.feedback.enabled)")
    return engine


def _shared_store(engine: Any) -> Any:
    """The engine's Redis-backed store, or None when contexts are this worker's only."""
    store = getattr(getattr(engine, "learning", None), "store", None)
    return store if hasattr(store, "sync_interval_s") else None


def _rate(
    engine: Any, item: tuple[str, Any, str | None], identity: Identity
) -> tuple[int, dict[str, Any]]:
    """Rate one item (blocking): (200, result) or (status, error body)."""
    decision_id, score, metric = item
    try:
        return 200, engine.feedback(decision_id, score, metric=metric, identity=identity)
    except FeedbackError as exc:
        store = _shared_store(engine)
        if isinstance(exc, UnknownDecision) and store is not None and not store.healthy:
            return 503, error_body(
                503,
                f"decision {decision_id!r} is not known to this worker and the shared state "
                "(Redis) is unreachable; retry later",
                "decision_id",
            )
        param = _PARAMS.get(type(exc)) or _invalid_param(exc)
        return exc.status, error_body(exc.status, str(exc), param)
    except (OSError, TimeoutError) as exc:  # redis-py's errors derive from neither: see below
        log.warning("RouteIQ feedback: %s: %s", type(exc).__name__, exc)
        return 503, error_body(503, f"feedback could not be recorded now ({type(exc).__name__})")
    except Exception as exc:
        if type(exc).__module__.startswith("redis"):
            log.warning("RouteIQ feedback: Redis error %s: %s", type(exc).__name__, exc)
            return 503, error_body(
                503, f"feedback could not be recorded now (Redis: {type(exc).__name__})"
            )
        log.exception("RouteIQ feedback failed for decision %r", decision_id)
        return 500, error_body(500, f"RouteIQ feedback failed ({type(exc).__name__}); see logs")


def _invalid_param(exc: FeedbackError) -> str | None:
    if isinstance(exc, InvalidFeedback):
        return "metric" if str(exc).startswith("metric") else "score"
    return None


def _retry_wait(engine: Any) -> float | None:
    """How long to wait before retrying an unknown decision: it may not be shared yet."""
    return engine.learning.share_wait()


async def _rate_one(
    engine: Any, item: tuple[str, Any, str | None], identity: Identity
) -> tuple[int, dict[str, Any]]:
    status, body = await asyncio.to_thread(_rate, engine, item, identity)
    if status == 404 and body.get("param") == "decision_id":
        wait = _retry_wait(engine)
        if wait is not None:
            await asyncio.sleep(wait)
            status, body = await asyncio.to_thread(_rate, engine, item, identity)
    return status, body


async def _rate_batch(engine: Any, payload: Payload, identity: Identity) -> dict[str, Any]:
    deadline = time.monotonic() + BATCH_BUDGET_S
    results: dict[int, tuple[int, dict[str, Any]]] = {
        i: (p.status, error_body(p.status, p.message, p.param)) for i, p in payload.problems.items()
    }
    todo = [i for i in range(len(payload.items)) if i not in results]

    def run(indices: list[int]) -> None:
        for i in indices:
            if time.monotonic() > deadline:
                results[i] = (
                    503,
                    error_body(503, f"not rated: the batch ran over {BATCH_BUDGET_S:g} s; resend"),
                )
            else:
                results[i] = _rate(engine, payload.items[i], identity)

    await asyncio.to_thread(run, todo)
    unknown = [i for i in todo if results[i][0] == 404]
    wait = _retry_wait(engine) if unknown else None
    if wait is not None and time.monotonic() + wait < deadline:
        await asyncio.sleep(wait)
        await asyncio.to_thread(run, unknown)
    out = []
    for i, item in enumerate(payload.items):
        status, body = results[i]
        entry: dict[str, Any] = {
            "index": i,
            "decision_id": item[0] if i not in payload.problems else None,
            "status": status,
        }
        entry["result" if status == 200 else "error"] = body
        out.append(entry)
    accepted = sum(1 for e in out if e["status"] == 200)
    return {"accepted": accepted, "rejected": len(out) - accepted, "results": out}


__all__ = ["MAX_BODY_BYTES", "MAX_ITEMS", "PATH", "error_body", "register_feedback_endpoint"]
