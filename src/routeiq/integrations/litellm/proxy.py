"""LiteLLM proxy integration: two lines of config.

.. code-block:: yaml

    litellm_settings:
      callbacks: [routeiq.integrations.litellm.proxy.routeiq_callback]
    routeiq_settings:
      router: ./router          # plus any other setting, see routeiq.integrations.litellm.config

When LiteLLM loads its config it imports this module and reads ``routeiq_callback``. That
attribute is built on access (module ``__getattr__``; the module keeps no state): it reads the
``routeiq_settings`` section of the proxy config, validates it, loads and verifies every
router artifact and checks the settings against the config's ``model_list``. Any problem
refuses start-up there, inside LiteLLM's config loading: in the ``litellm`` command each
worker prints one line, ``RouteIQ: refusing to start: <reason>``, and exits with status 3
(uvicorn's start-up failure: with ``--num_workers N`` its supervisor then stops, but exits 0);
elsewhere :class:`RouteIQConfigError` is raised. Check configs before deploying with
``python -m routeiq.integrations.litellm.proxy CONFIG``, which exits 1 with the same message.

The returned callback then installs the strategy on ``litellm.proxy.proxy_server.llm_router``
in every worker: a task waits for the router to exist (it is created after the callbacks
are imported), and ``async_pre_call_hook`` re-checks on each request, re-installing if the
router was replaced (config reload) or the strategy removed (``update_settings``).

At SIGTERM every worker writes its pending decision records at once and logs the rest
write-through (:func:`flush_at_shutdown`), so a rolling restart loses no record. With
``drain`` (on by default) it first drains: readiness (``GET /routeiq/ready``) fails, new
requests get 503, in-flight ones finish; ``shedding`` limits requests in flight. See
:mod:`routeiq.integrations.litellm.lifecycle` and ``docs/resilience.md``.

Metrics go to ``prometheus_client.REGISTRY``, the registry LiteLLM's ``/metrics`` endpoint
serves (with ``PROMETHEUS_MULTIPROC_DIR`` set, every worker's values are aggregated).
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from routeiq.integrations.litellm.callbacks import RouteIQCallback
from routeiq.integrations.litellm.config import settings_from_proxy_config
from routeiq.integrations.litellm.installer import (
    attach,
    build_engine,
    is_attached,
    model_list_of,
    validate,
)
from routeiq.integrations.litellm.request_fields import IDENTITY_KEY, request_metadata
from routeiq.integrations.litellm.strategy import RouteIQRoutingStrategy
from routeiq.security.policy import PolicyEngine
from routeiq.security.policy_proxy import deny_by_policy
from routeiq.security.ssrf_litellm import refuse_client_urls
from routeiq.serving.decision_log import DecisionLog
from routeiq.serving.engine import DecisionEngine
from routeiq.serving.feedback import Identity
from routeiq.serving.registry import RouterRegistry, load_routers
from routeiq.serving.settings import RouteIQConfigError
from routeiq.telemetry.metrics import RouteIQMetrics

log = logging.getLogger(__name__)

CALLBACK_NAME = "routeiq_callback"
_ROUTER_WAIT_S = 300.0
_ROUTER_POLL_S = 0.05


def find_proxy_config() -> Path:
    """Path of the config file the running proxy loaded."""
    candidates: list[Any] = []
    proxy_server = sys.modules.get("litellm.proxy.proxy_server")
    if proxy_server is not None:
        candidates.append(getattr(proxy_server, "user_config_file_path", None))
    candidates += [os.environ.get("CONFIG_FILE_PATH"), os.environ.get("WORKER_CONFIG")]
    for value in candidates:
        if isinstance(value, str) and value and os.path.isfile(value):
            return Path(value).resolve()
    raise RouteIQConfigError(
        "RouteIQ could not find the proxy config file (start the proxy with --config "
        "config.yaml); its 'routeiq_settings:' section holds RouteIQ's settings"
    )


def read_proxy_config(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RouteIQConfigError(f"cannot read proxy config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise RouteIQConfigError(f"proxy config {path} is not a mapping")
    return data


class RouteIQProxyCallback(RouteIQCallback):
    """The proxy's RouteIQ callback: installs the strategy in this worker and keeps it there."""

    def __init__(self, engine: DecisionEngine) -> None:
        # One owner token for every strategy this callback installs in this worker.
        super().__init__(
            uuid.uuid4().hex[:16], engine, response_headers=engine.settings.response_headers
        )
        self.strategy: RouteIQRoutingStrategy | None = None
        self.install_error: str | None = None
        self._install_task: asyncio.Task | None = None
        self.lifecycle: Any = None  # load shedding + SIGTERM drain (lifecycle.py)

    @classmethod
    def from_proxy_config(cls, path: Path | None = None) -> RouteIQProxyCallback:
        """Read, validate and load everything; raises RouteIQConfigError with the reason."""
        path = path if path is not None else find_proxy_config()
        config = read_proxy_config(path)
        settings = settings_from_proxy_config(config, path)
        registry = RouterRegistry(load_routers(settings))
        from prometheus_client import REGISTRY

        engine = build_engine(
            settings, config.get("model_list") or [], registry, metrics=_metrics_for(REGISTRY)
        )
        callback = cls(engine)
        if engine.decision_log is not None:
            flush_at_shutdown(engine.decision_log)
        callback.start()
        from routeiq.integrations.litellm.feedback_endpoint import register_feedback_endpoint

        register_feedback_endpoint(callback)  # POST /routeiq/feedback on this worker's proxy app
        from routeiq.integrations.litellm.lifecycle import attach_lifecycle

        # After flush_at_shutdown: its SIGTERM handler runs once the drain hands the signal on.
        callback.lifecycle = attach_lifecycle(engine)  # GET /routeiq/ready, shedding, drain
        return callback

    def start(self) -> None:
        """Schedule installation once the proxy's router exists (needs a running loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the first request installs (async_pre_call_hook)
        self._install_task = loop.create_task(self._install_when_ready())

    async def _install_when_ready(self) -> None:
        waited = 0.0
        while waited < _ROUTER_WAIT_S:
            if await self.ensure_installed():
                return
            await asyncio.sleep(_ROUTER_POLL_S)
            waited += _ROUTER_POLL_S
        log.error("RouteIQ: the LiteLLM proxy router did not appear within %.0f s", waited)

    async def ensure_installed(self) -> bool:
        """Install on the live proxy router if needed; False while there is no router yet."""
        proxy_server = sys.modules.get("litellm.proxy.proxy_server")
        router = getattr(proxy_server, "llm_router", None)
        if router is None or self.engine is None:
            return False
        current = self.strategy
        if current is not None and current.router is router and is_attached(router, current):
            return True
        if current is None or current.router is not router:
            try:
                # Off the event loop: with the SSRF guard on, validation resolves host names.
                unrouted = await asyncio.to_thread(
                    validate,  # warned already when the config was loaded
                    self.engine.settings,
                    model_list_of(router),
                    self.engine.registry,
                    warn=False,
                )
            except RouteIQConfigError as exc:
                self.install_error = str(exc)
                log.error("RouteIQ: not installed, requests are refused: %s", exc)
                return True  # stop waiting; requests get the error
            self.engine.unrouted = frozenset(unrouted)
            current = RouteIQRoutingStrategy(router, self.engine, token=self.owner)
        attach(router, current)
        self.strategy, self.install_error = current, None
        log.info("RouteIQ: installed on the LiteLLM router in worker %d", os.getpid())
        return True

    async def async_post_call_response_headers_hook(
        self,
        data: dict,
        user_api_key_dict: Any,
        response: Any,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, object] | None = None,
    ) -> dict[str, str] | None:
        # Redefined here on purpose: LiteLLM only calls this hook on classes that define it
        # in their own __dict__ (an inherited one is skipped).
        return await super().async_post_call_response_headers_hook(
            data, user_api_key_dict, response, request_headers, litellm_call_info
        )

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any
    ) -> dict | None:
        if self.lifecycle is not None:  # first: a shed request costs nothing more
            self.lifecycle.admit(user_api_key_dict)
        await self.ensure_installed()
        if self.install_error is not None:
            from fastapi import HTTPException

            raise HTTPException(status_code=503, detail=f"RouteIQ: {self.install_error}")
        # The verified caller (LiteLLM's auth: virtual key, custom_auth or master key), for
        # feedback authorization; overwrites anything a client put under this key.
        request_metadata(data)[IDENTITY_KEY] = identity_entry(user_api_key_dict, self.owner)
        # Cedar policies on that identity: a denied request is a 403 before any routing.
        deny_by_policy(self.engine, identity_from_auth(user_api_key_dict), data, call_type)
        # A client-sent api_base/base_url: 403 unless ssrf.allow_client_base_url, then checked.
        if self.engine is not None:
            await refuse_client_urls(data, self.engine.settings.ssrf)
        return data


def identity_from_auth(auth: Any) -> Identity:
    """The fields of LiteLLM's verified ``UserAPIKeyAuth`` that feedback authorization uses."""
    role = getattr(auth, "user_role", None)
    member = getattr(auth, "team_member", None)
    return Identity(
        key_hash=getattr(auth, "api_key", None) or getattr(auth, "token", None),
        team_id=getattr(auth, "team_id", None),
        user_id=getattr(auth, "user_id", None),
        role=getattr(role, "value", role),
        team_admin=getattr(member, "role", None) == "admin",
        key_alias=getattr(auth, "key_alias", None),
        org_id=getattr(auth, "org_id", None),
    )


def identity_entry(auth: Any, owner: str) -> dict[str, Any]:
    """:func:`identity_from_auth` as a request-metadata entry tagged with the owner token."""
    return {"owner": owner, **dataclasses.asdict(identity_from_auth(auth))}


def flush_at_shutdown(log_: DecisionLog) -> None:
    """Lose no decision record when the worker stops.

    At SIGTERM uvicorn finishes in-flight requests and then ends the worker by re-raising the
    signal: ``atexit``, FastAPI shutdown handlers and LiteLLM's shutdown event reach nothing
    of ours (measured on 1.108.7, 1 and 2 workers). So RouteIQ chains its own SIGTERM handler
    in front of uvicorn's: it writes every pending decision at once and switches the log to
    write-through (:meth:`DecisionLog.drain`), then hands the signal on unchanged. Other exits
    (a worker recycled after ``--max_requests_before_restart``) run ``atexit``: the log is
    closed there.
    """
    atexit.register(log_.close)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        try:
            log_.drain()
        except Exception:  # never stand between the worker and its shutdown
            log.exception("RouteIQ: could not drain the decision log at SIGTERM")
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


def _metrics_for(registry: Any) -> RouteIQMetrics | None:
    try:
        return RouteIQMetrics(registry)
    except ValueError:
        # Already registered in this process (a second callback instance): reuse nothing,
        # count nothing twice.
        log.warning("RouteIQ metrics already registered in this process; not registering again")
        return None


def __getattr__(name: str) -> Any:
    # LiteLLM resolves "routeiq.integrations.litellm.proxy.routeiq_callback" with getattr.
    if name == CALLBACK_NAME:
        try:
            return RouteIQProxyCallback.from_proxy_config()
        except RouteIQConfigError as exc:
            if not _in_litellm_cli():
                raise
            # One line per worker instead of a several-hundred-line start-up traceback.
            # Status 3 is uvicorn's start-up failure: its supervisor then stops instead of
            # restarting the worker (the parent still exits 0: use the check command).
            print(f"RouteIQ: refusing to start: {exc}", file=sys.stderr, flush=True)
            os._exit(3)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _in_litellm_cli() -> bool:
    """Whether this process is the ``litellm`` proxy command (or one of its workers, which
    inherit its ``argv``), where a refused config may end the process."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return argv0.name == "litellm" or argv0.parent.name == "litellm"


def check(config_path: str) -> int:
    """Validate a proxy config's RouteIQ part without starting the proxy: 0 ok, 1 error."""
    try:
        path = Path(config_path).resolve()
        config = read_proxy_config(path)
        settings = settings_from_proxy_config(config, path)
        registry = RouterRegistry(load_routers(settings))
        unrouted = validate(settings, config.get("model_list") or [], registry)
        if settings.policies is not None:  # parse and validate the Cedar files (with lines)
            PolicyEngine.from_settings(settings.policies)
    except RouteIQConfigError as exc:
        print(f"RouteIQ config error: {exc}", file=sys.stderr)
        return 1
    groups = sorted({str(d.get("model_name")) for d in config.get("model_list") or []})
    summary = {
        "config": str(path),
        "groups": groups,
        "shuffled_groups": unrouted,
        "routers": {str(p): r.digest for p, r in registry.paths().items()},
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(
            "usage: python -m routeiq.integrations.litellm.proxy PROXY_CONFIG.yaml", file=sys.stderr
        )
        raise SystemExit(2)
    raise SystemExit(check(sys.argv[1]))
