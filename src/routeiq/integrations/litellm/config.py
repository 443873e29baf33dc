"""RouteIQ settings in a LiteLLM proxy config: the ``routeiq_settings:`` section.

LiteLLM ignores top-level keys it does not know, so RouteIQ's settings live in ONE place: a
top-level ``routeiq_settings:`` section of the proxy's own ``config.yaml``, either a mapping
or a path to a YAML file holding that mapping (relative paths are resolved against the
proxy config's directory). The settings themselves: :mod:`routeiq.serving.settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from routeiq.serving.settings import SETTINGS_KEY, RouteIQConfigError, RouteIQSettings
from routeiq.serving.settings_file import parse_settings


def load_settings_file(path: str | Path) -> RouteIQSettings:
    """Settings from a YAML (or JSON) file holding the settings mapping."""
    import yaml  # a LiteLLM proxy dependency; imported lazily for SDK-only users

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RouteIQConfigError(f"RouteIQ settings file not found: {path}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise RouteIQConfigError(f"cannot read RouteIQ settings file {path}: {exc}") from None
    return parse_settings(data, base_dir=path.parent, where=str(path))


def settings_from_proxy_config(config: Mapping[str, Any], config_path: Path) -> RouteIQSettings:
    """The ``routeiq_settings`` section of a proxy config (a mapping or a file path)."""
    section = config.get(SETTINGS_KEY)
    if section is None:
        raise RouteIQConfigError(
            f"{config_path} has no top-level '{SETTINGS_KEY}:' section; RouteIQ needs at "
            f"least '{SETTINGS_KEY}: {{router: <artifact dir>}}' "
            "(see routeiq.integrations.litellm.config)"
        )
    if isinstance(section, str):
        target = Path(os.path.expandvars(section))
        if not target.is_absolute():
            target = config_path.parent / target
        return load_settings_file(target)
    return parse_settings(section, base_dir=config_path.parent, where=SETTINGS_KEY)
