"""Settings as an operator writes them: a ``routeiq_settings`` mapping from a config file,
validated into :class:`RouteIQSettings` with every problem in one message, relative paths
resolved against the config's folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from routeiq.experiments.assignment import ExperimentSettings
from routeiq.serving.settings import SETTINGS_KEY, RouteIQConfigError, RouteIQSettings


def _format_error(exc: ValidationError, where: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "function-after")
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}{'.' + loc if loc else ''}: {msg}")
    return "\n".join(lines)


def parse_settings(
    data: Mapping[str, Any] | None, *, base_dir: Path | None = None, where: str = SETTINGS_KEY
) -> RouteIQSettings:
    """Validate a settings mapping; relative paths resolve against ``base_dir``."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RouteIQConfigError(
            f"{where} must be a mapping of settings, got {type(data).__name__}"
        )
    try:
        settings = RouteIQSettings.model_validate(dict(data))
    except ValidationError as exc:
        details = _format_error(exc, where)
        raise RouteIQConfigError(f"invalid RouteIQ settings:\n{details}") from None
    if base_dir is not None:
        settings = _resolve_paths(settings, base_dir)
    return settings


def _resolve_paths(settings: RouteIQSettings, base: Path) -> RouteIQSettings:
    def fix(p: Path | str | None) -> Path | None:
        # "default" and "none" (router) are names, not paths.
        return None if not isinstance(p, Path) or p.is_absolute() else (base / p)

    log_target = settings.decision_log
    if isinstance(log_target, Path):
        log_target = fix(log_target) or log_target

    def fix_experiment(e: ExperimentSettings | None) -> ExperimentSettings | None:
        if e is None:
            return None
        variants = [v.model_copy(update={"router": fix(v.router) or v.router}) for v in e.variants]
        return e.model_copy(update={"variants": variants})

    groups = {
        name: g.model_copy(
            update={"router": fix(g.router) or g.router, "experiment": fix_experiment(g.experiment)}
        )
        for name, g in settings.groups.items()
    }
    return settings.model_copy(
        update={
            "router": fix(settings.router) or settings.router,
            "decision_log": log_target,
            "policies": settings.policies.resolved(base) if settings.policies else None,
            "groups": groups,
            "signing": settings.signing.relative_to(base),
        }
    )
