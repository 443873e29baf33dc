"""Loaded routers by artifact path, swappable atomically while requests are being decided."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from routeiq.router import LearnedRouter
from routeiq.serving.settings import ResolvedGroup, RouteIQConfigError, RouteIQSettings


def load_routers(settings: RouteIQSettings) -> dict[Path, LearnedRouter]:
    """Load (and verify) every artifact the settings name, once per path."""
    routers: dict[Path, LearnedRouter] = {}
    for path in sorted(settings.router_paths()):
        if not path.exists():
            raise RouteIQConfigError(f"router artifact not found: {path}")
        try:
            routers[path] = LearnedRouter.load(path)
        except Exception as exc:  # ArtifactError, a bad format, a missing component...
            raise RouteIQConfigError(
                f"router artifact {path} failed to load or verify: {exc}"
            ) from exc
    return routers


class RouterRegistry:
    """Routers by artifact path, plus an optional ``default`` for groups that name none.

    Readers take a reference to the current mapping and never see a half-updated one:
    :meth:`swap` builds a new mapping and replaces the old in one assignment.
    """

    def __init__(
        self,
        routers: Mapping[Path, LearnedRouter] | None = None,
        default: LearnedRouter | None = None,
    ) -> None:
        self._routers: Mapping[Path | None, LearnedRouter] = self._build(routers or {}, default)
        self._lock = threading.Lock()

    @staticmethod
    def _build(
        routers: Mapping[Path, LearnedRouter], default: LearnedRouter | None
    ) -> dict[Path | None, LearnedRouter]:
        table: dict[Path | None, LearnedRouter] = {p: r for p, r in routers.items()}
        if default is not None:
            table[None] = default
        return table

    def get(self, path: Path | None) -> LearnedRouter | None:
        """The router loaded from ``path`` (None: the default router)."""
        return self._routers.get(path)

    def for_group(self, group: ResolvedGroup) -> LearnedRouter:
        router = self._routers.get(group.router)
        if router is None:
            raise RouteIQConfigError(
                f"model group {group.name!r} is in mode 'route' but no router artifact is "
                f"loaded for it (routeiq_settings.router or groups.{group.name}.router)"
            )
        return router

    def swap(self, path: Path | None, router: LearnedRouter) -> None:
        """Serve ``router`` for ``path`` from the next decision on (None: the default)."""
        with self._lock:
            table = dict(self._routers)
            table[path] = router
            self._routers = table

    def paths(self) -> dict[Path, LearnedRouter]:
        return {p: r for p, r in self._routers.items() if p is not None}

    def all(self) -> list[LearnedRouter]:
        return list(self._routers.values())
