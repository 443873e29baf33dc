"""The router shipped inside the package: what a model group in ``route`` mode uses when
``routeiq_settings`` names no ``router``.

    from routeiq.default_router import default_router_path
    from routeiq.router import LearnedRouter

    router = LearnedRouter.load(default_router_path())   # verified like any other artifact

It is a small lexical + logistic router trained on the public RouterBench subset over three
price tiers (a premium, a mid and a small model), so any deployment list maps onto it by price:
the unknown-model rule (:mod:`routeiq.decision.unknown`) gives each deployment the tier nearest
its price. It is a starting point for learning from your own traffic (``online:``), not an end:
see ``docs/default-router.md``. Rebuild it with ``python -m routeiq.default_router.build``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

ARTIFACT_DIR = "artifact"

# The value of ``router:`` that names this artifact explicitly (omitting ``router`` does too).
DEFAULT_NAME = "default"


class DefaultRouterError(RuntimeError):
    """The packaged default router is not available as a directory on disk."""


def default_router_path() -> Path:
    """Absolute path of the packaged default router artifact (a directory)."""
    root = files(__name__) / ARTIFACT_DIR
    path = Path(str(root))
    if not path.is_dir():
        # Zip imports and stripped installs have no directory to verify file by file.
        raise DefaultRouterError(
            f"the default router artifact is missing at {path}: reinstall routeiq-router, or "
            "set routeiq_settings.router to an artifact directory (routeiq train --out DIR)"
        )
    return path.resolve()


def is_default_router(path: Path | None) -> bool:
    """Whether ``path`` is the packaged default router."""
    if path is None:
        return False
    try:
        return Path(path).resolve() == default_router_path()
    except DefaultRouterError:
        return False


__all__ = [
    "ARTIFACT_DIR",
    "DEFAULT_NAME",
    "DefaultRouterError",
    "default_router_path",
    "is_default_router",
]
