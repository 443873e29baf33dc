"""Reading the old RouteIQ gateway's files for ``routeiq migrate``: its YAML config and a
``.env`` file of its environment variables. Every problem is one :class:`MigrationError`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


class MigrationError(ValueError):
    """The old config cannot be read (missing, not YAML, not a mapping)."""


def read_old_config(path: str | Path) -> dict[str, Any]:
    """The old gateway's YAML config as a mapping; :class:`MigrationError` otherwise."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MigrationError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrationError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise MigrationError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise MigrationError(f"{path}: expected a YAML mapping, got {type(data).__name__}")
    return data


_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def read_env_file(path: str | Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``export``, quotes and ``#`` comments allowed) of a ``.env`` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MigrationError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrationError(f"{path}: cannot read: {exc}") from None
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise MigrationError(f"{path}:{number}: expected KEY=VALUE, got {line.strip()!r}")
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        env[key] = value
    return env
