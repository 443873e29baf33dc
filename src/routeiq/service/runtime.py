"""Build the service from a config file: settings, engine, token, metrics; uvicorn factory.

    app = build_app(ServiceOptions(config=Path("config.yaml"), token=token))

``routeiq serve`` passes its options to every uvicorn worker through one environment variable
(:data:`OPTIONS_ENV`, JSON without the token: workers read the token themselves from the same
variable or file), and each worker calls :func:`app_from_env`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from routeiq.service.app import DEFAULT_MAX_BODY_BYTES, create_app
from routeiq.service.auth import DEFAULT_TOKEN_ENV, BearerCheck, read_token
from routeiq.service.wire import Excluded
from routeiq.serving.engine import DecisionEngine
from routeiq.serving.guards import build_guards
from routeiq.serving.registry import RouterRegistry, load_routers
from routeiq.serving.reload import watch_routers
from routeiq.serving.settings import SETTINGS_KEY, RouteIQConfigError, RouteIQSettings
from routeiq.serving.settings_file import parse_settings as _parse
from routeiq.telemetry.metrics import RouteIQMetrics

OPTIONS_ENV = "ROUTEIQ_SERVICE_OPTIONS"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class ServiceOptions:
    """What a worker needs; the token itself is read in each worker, never passed around."""

    config: str
    token_env: str = DEFAULT_TOKEN_ENV
    token_file: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServiceOptions:
        raw = os.environ.get(OPTIONS_ENV)
        if not raw:
            raise RouteIQConfigError(f"{OPTIONS_ENV} is not set (start with 'routeiq serve')")
        return cls(**json.loads(raw))


def load_service_settings(path: Path) -> RouteIQSettings:
    """``routeiq_settings`` of a proxy config (a mapping, or a path to a settings file)."""
    import yaml

    def read(p: Path) -> Any:
        try:
            return yaml.safe_load(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RouteIQConfigError(f"config file not found: {p}") from None
        except (OSError, yaml.YAMLError) as exc:
            raise RouteIQConfigError(f"cannot read config file {p}: {exc}") from None

    data = read(path)
    if not isinstance(data, dict) or SETTINGS_KEY not in data:
        raise RouteIQConfigError(f"{path} has no top-level '{SETTINGS_KEY}:' section")
    section = data[SETTINGS_KEY]
    if isinstance(section, str):  # a path to the settings file, as the proxy allows
        target = Path(os.path.expandvars(section))
        target = target if target.is_absolute() else path.parent / target
        return _parse(read(target), base_dir=target.parent, where=str(target))
    return _parse(section, base_dir=path.parent, where=SETTINGS_KEY)


def build_service_engine(
    settings: RouteIQSettings, *, metrics: RouteIQMetrics | None = None, tracer_provider: Any = None
) -> DecisionEngine:
    """The service's engine. It writes no decision log (the gateway logs each decision with
    its outcome) and applies the gateway's guard exclusions as a filter."""
    settings = settings.model_copy(update={"decision_log": None, "service": None})
    registry = RouterRegistry(load_routers(settings))
    guards = [*build_guards(settings, metrics), Excluded()]
    engine = DecisionEngine(
        settings, registry, metrics=metrics, tracer_provider=tracer_provider, guards=guards
    )
    if settings.hot_reload.enabled:
        # Every replica polls the artifact path: a version published there (verified and, with
        # signing, signature-checked) reaches all of them. No model list here: the gateway's
        # own start-up checks are its own.
        watch_routers(engine)
    return engine


def metrics_text() -> bytes:
    """Every worker's metrics in multiprocess mode, else the default registry's."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess

    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def build_app(options: ServiceOptions, *, tracer_provider: Any = None) -> Any:
    """The app for one worker: settings and artifacts loaded and verified, token read."""
    token_file = Path(options.token_file) if options.token_file else None
    check = BearerCheck(read_token(options.token_env, token_file))
    settings = load_service_settings(Path(options.config))
    from prometheus_client import REGISTRY

    engine = build_service_engine(
        settings, metrics=RouteIQMetrics(REGISTRY), tracer_provider=tracer_provider
    )
    return create_app(
        engine,
        check,
        max_body_bytes=options.max_body_bytes,
        metrics_text=metrics_text,
        on_shutdown=engine.close,
    )


def app_from_env() -> Any:
    """uvicorn's app factory in each worker (``routeiq.service.runtime:app_from_env``)."""
    return build_app(ServiceOptions.from_env())
