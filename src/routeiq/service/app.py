"""The routing service's HTTP app (FastAPI): one :class:`DecisionEngine` behind five paths.

    app = create_app(engine, BearerCheck(token))       # uvicorn.run(app, port=8080)

* ``POST /v1/route``: a :class:`~routeiq.service.wire.RouteBody` -> the decision
  (:meth:`Decision.to_dict`). 409 nothing routable, 400 a malformed override, a guard's own
  status (403, 429) for a refusal.
* ``POST /v1/feedback``: a :class:`~routeiq.service.wire.FeedbackBody` -> what changed; the
  :mod:`routeiq.serving.feedback` errors keep their statuses (404, 409, 403, 422, 503).
* ``GET /healthz`` (alive), ``GET /readyz`` (503 once shutting down): no token.
* ``GET /metrics``: Prometheus text (every worker's, in multiprocess mode).

Every other path needs ``Authorization: Bearer <token>`` (401). Bodies over
``max_body_bytes`` get 413 before they are read whole; a body that does not validate gets
422 naming the field. The caller's W3C ``traceparent`` becomes the decision span's parent.

``POST /v1/route`` is the hot path: it is answered by a plain ASGI handler in front of the
framework (:class:`_ServiceApp`) with the same checks and answers (token, 413, 422, the
errors above), the body validated from the raw bytes and the decision written once as JSON.
FastAPI's middleware stack, routing and response classes cost about as much per decision as
the decision itself (``bench/remote_decision.py``). With FastAPI's own OpenTelemetry
instrumentation on (a configured global tracer or meter provider) the request takes FastAPI's
path instead, so its HTTP span is kept.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from routeiq.service.auth import BearerCheck
from routeiq.service.codec import dumps_decision
from routeiq.service.wire import FeedbackBody, RouteBody, identity_of, to_route_request
from routeiq.serving.engine import DecisionEngine, NoCandidatesError
from routeiq.serving.feedback import FeedbackError
from routeiq.serving.guards import GuardRefusal
from routeiq.serving.overrides import OverrideError

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1 << 20
_OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_ROUTE_PATH = "/v1/route"

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Any]


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Any:
    body = {"error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


class _Guard:
    """ASGI middleware: the bearer token, then the body-size limit (413)."""

    def __init__(self, app: ASGIApp, check: BearerCheck, max_body_bytes: int) -> None:
        self.app, self.check, self.limit = app, check, max_body_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in _OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if not self.check.ok_raw(headers.get(b"authorization")):
            await _unauthorized(scope, receive, send)
            return
        if _declared_too_large(headers.get(b"content-length"), self.limit):
            await _too_large(self.limit, scope, receive, send)
            return
        seen, over = 0, False

        async def limited() -> Any:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # chunked uploads have no content-length
                over = True
                raise _TooLarge
            return message

        async def guarded_send(message: Any) -> None:
            # The framework turns the failed body read into its own 400: answer 413 instead.
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":
                await _too_large(self.limit, scope, receive, send)

        try:
            await self.app(scope, limited, guarded_send)
        except _TooLarge:
            await _too_large(self.limit, scope, receive, send)


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


async def _unauthorized(scope: Scope, receive: Any, send: Any) -> None:
    bearer = {"www-authenticate": "Bearer"}
    await _error(401, "Unauthorized", "missing or wrong bearer token", bearer)(scope, receive, send)


async def _too_large(limit: int, scope: Scope, receive: Any, send: Any) -> None:
    msg = f"request body over the service limit of {limit:,} bytes"
    await _error(413, "RequestTooLarge", msg)(scope, receive, send)


def _declared_too_large(length: bytes | None, limit: int) -> bool:
    return length is not None and (not length.isdigit() or int(length) > limit)


async def _read_body(receive: Any, limit: int) -> bytes:
    """The whole body; _TooLarge past ``limit`` bytes (chunked uploads have no length)."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


RouteAnswer = Callable[[bytes, Any], Awaitable[Response]]


class _ServiceApp(FastAPI):
    """FastAPI, with ``POST /v1/route`` answered in front of the framework (the hot path)."""

    route_fast: ASGIApp | None = None
    _otel_checked_at = -math.inf
    _otel_on = False

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:  # type: ignore[override]
        fast = self.route_fast
        if (
            fast is not None
            and scope["type"] == "http"
            and scope["path"] == _ROUTE_PATH
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and not self._instrumented()
        ):
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _instrumented(self) -> bool:
        """FastAPI's own OpenTelemetry middleware is on (recent FastAPI, a global provider).
        Looked up at most once a second: a few microseconds a request otherwise."""
        now = time.monotonic()
        if now - self._otel_checked_at >= 1.0:
            native = getattr(self, "_native_telemetry", None)
            self._otel_on = native is not None and bool(native.enabled())
            self._otel_checked_at = now
        return self._otel_on


def _route_fast(check: BearerCheck, limit: int, answer: RouteAnswer) -> ASGIApp:
    """``POST /v1/route`` as a plain ASGI app: what _Guard and the endpoint do, in one step."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        auth = length = None
        traced = False
        for name, value in scope["headers"]:  # the last one wins, as with dict(headers)
            if name == b"authorization":
                auth = value
            elif name == b"content-length":
                length = value
            elif name == b"traceparent":
                traced = True
        if not check.ok_raw(auth):
            await _unauthorized(scope, receive, send)
            return
        if _declared_too_large(length, limit):
            await _too_large(limit, scope, receive, send)
            return
        try:
            raw = await _read_body(receive, limit)
        except _TooLarge:
            await _too_large(limit, scope, receive, send)
            return
        except _Disconnected:
            return  # nobody to answer
        carrier = None
        if traced:
            carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        response = await answer(raw, carrier)
        await response(scope, receive, send)

    return app


def create_app(
    engine: DecisionEngine,
    check: BearerCheck,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    metrics_text: Callable[[], bytes] | None = None,
    on_shutdown: Callable[[], None] | None = None,
) -> FastAPI:
    """The service app for ``engine``; ``metrics_text`` renders ``/metrics`` (default: the
    engine's registry); ``on_shutdown`` runs when the server stops (close the engine)."""
    state = {"ready": True}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield
        state["ready"] = False
        if on_shutdown is not None:
            on_shutdown()

    app = _ServiceApp(
        title="RouteIQ routing service",
        version="1",
        summary="Learned, cost-aware routing decisions for LiteLLM gateways",
        lifespan=lifespan,
    )

    async def answer(raw: bytes, carrier: Any) -> Response:
        """The answer to one ``POST /v1/route`` body (``carrier``: the trace headers)."""
        # Validated from the raw bytes (pydantic's JSON parser), not FastAPI's body parameter.
        try:
            body = RouteBody.model_validate_json(raw)
        except ValidationError as exc:
            return _invalid(exc)
        output_tokens = engine.group(body.group).estimated_output_tokens
        routed = to_route_request(body, output_tokens, _parent_span(carrier))
        try:
            decision = await engine.decide(routed)
        except NoCandidatesError as exc:
            return _error(409, "NoCandidatesError", str(exc))
        except OverrideError as exc:
            return _error(400, "OverrideError", str(exc))
        except GuardRefusal as exc:
            return _error(exc.status_code, type(exc).__name__, str(exc))
        return Response(dumps_decision(decision.to_dict()), media_type="application/json")

    @app.post(
        "/v1/route",
        responses={409: {}, 400: {}, 401: {}, 413: {}, 422: {}},
        openapi_extra=_json_body(RouteBody),
    )
    async def route(request: Request) -> Response:
        """Decide among the candidates; the answer is the decision with every candidate's
        predicted quality, cost and utility."""
        # Served by _route_fast; here when FastAPI's own instrumentation is on.
        carrier = request.headers if "traceparent" in request.headers else None
        return await answer(await request.body(), carrier)

    @app.post("/v1/feedback", responses={401: {}, 403: {}, 404: {}, 409: {}, 413: {}, 503: {}})
    async def feedback(body: FeedbackBody) -> Response:
        """Rate a served decision (any replica: with ``shared_state`` the context is in Redis)."""
        try:
            result = await engine.afeedback(
                body.decision_id,
                body.score,
                metric=body.metric,
                identity=identity_of(body.identity),
            )
        except FeedbackError as exc:
            return _error(exc.status, type(exc).__name__, str(exc))
        return JSONResponse(result)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process answers (no token)."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {}})
    async def readyz() -> Response:
        """Ready for traffic; 503 once the server is shutting down (no token)."""
        if not state["ready"]:
            return _error(503, "ShuttingDown", "the service is shutting down")
        return JSONResponse({"status": "ready", "routers": len(engine.registry.all())})

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics (every worker's with ``PROMETHEUS_MULTIPROC_DIR``)."""
        from prometheus_client import CONTENT_TYPE_LATEST

        render = metrics_text or (lambda: _registry_text(engine))
        return Response(render(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(_Guard, check=check, max_body_bytes=max_body_bytes)
    app.route_fast = _route_fast(check, max_body_bytes, answer)
    _document_bearer(app)
    return app


def _document_bearer(app: FastAPI) -> None:
    """The middleware's bearer token in the OpenAPI document (FastAPI sees only routes)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            # Bodies validated in the endpoint (see route) are not in FastAPI's components.
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            route_schema = RouteBody.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(route_schema.pop("$defs", {}))
            schemas[RouteBody.__name__] = route_schema
            spec.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            for path, ops in spec["paths"].items():
                for op in ops.values():
                    if path not in _OPEN_PATHS:
                        op["security"] = [{"bearer": []}]
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def openapi_document() -> dict[str, Any]:
    """The service's OpenAPI document (what ``/openapi.json`` serves; docs/openapi.json)."""
    from typing import cast

    app = create_app(cast(DecisionEngine, None), BearerCheck("unused-unused-unused"))
    return app.openapi()


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _invalid(exc: ValidationError) -> Response:
    """422 in FastAPI's own shape: ``detail`` lists each error with its ``loc``."""
    detail = [
        {"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def _registry_text(engine: DecisionEngine) -> bytes:
    from prometheus_client import generate_latest

    if engine.metrics is None:
        return b""
    return generate_latest(engine.metrics.registry)


def _parent_span(carrier: Any) -> Any:
    """The caller's span from the ``traceparent`` in ``carrier`` (the headers; None: none)."""
    if carrier is None:
        return None
    try:
        from opentelemetry import propagate, trace
    except ImportError:
        return None
    span = trace.get_current_span(propagate.extract(carrier))
    return span if span.get_span_context().is_valid else None
