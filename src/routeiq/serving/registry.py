"""Loaded routers by artifact path, swappable atomically while requests are being decided."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from routeiq.artifacts import ArtifactError
from routeiq.default_router import is_default_router
from routeiq.router import LearnedRouter
from routeiq.security.signing import SigningSettings, verified_snapshot
from routeiq.serving.settings import ResolvedGroup, RouteIQConfigError, RouteIQSettings


class _Watcher(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...


def load_router(path: Path, signing: SigningSettings | None = None) -> LearnedRouter:
    """Load one artifact after verifying its digests and, with keys pinned in ``signing``,
    its signature. Raises :class:`~routeiq.artifacts.ArtifactError` (``SignatureError``)."""
    if signing is None or not signing.enabled:
        return LearnedRouter.load(path)
    with verified_snapshot(path, signing) as (snapshot, _):
        try:
            return LearnedRouter.load(snapshot)
        except ArtifactError as exc:  # name the real directory, not the private copy
            raise ArtifactError(str(exc).replace(str(snapshot), str(path))) from None


def load_routers(settings: RouteIQSettings) -> dict[Path, LearnedRouter]:
    """Load (and verify) every artifact the settings name, once per path."""
    routers: dict[Path, LearnedRouter] = {}
    for path in sorted(settings.router_paths()):
        if not path.exists():
            raise RouteIQConfigError(f"router artifact not found: {path}")
        try:
            routers[path] = load_router(path, settings.signing)
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
        self._watcher: _Watcher | None = None

    @staticmethod
    def _build(
        routers: Mapping[Path, LearnedRouter], default: LearnedRouter | None
    ) -> dict[Path | None, LearnedRouter]:
        table: dict[Path | None, LearnedRouter] = {p: r for p, r in routers.items()}
        if default is not None:
            table[None] = default
        return table

    def get(self, path: Path | None) -> LearnedRouter | None:
        """The router loaded from ``path`` (None: the default router). A ``default`` given
        here also stands in for the packaged default router (``routeiq.default_router``)."""
        table = self._routers
        if None in table and path is not None and is_default_router(path):
            return table[None]
        return table.get(path)

    def for_group(self, group: ResolvedGroup) -> LearnedRouter:
        router = self.get(group.router)
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

    def with_router(self, path: Path | None, router: LearnedRouter) -> RouterRegistry:
        """A copy serving ``router`` for ``path`` (to validate a new version before a swap)."""
        copy = RouterRegistry()
        copy._routers = {**self._routers, path: router}
        return copy

    def watch(self, watcher: _Watcher) -> None:
        """Start ``watcher`` (a :class:`routeiq.serving.reload.RouterReloader`); :meth:`close`
        stops it."""
        with self._lock:
            if self._watcher is not None:
                raise RuntimeError("this registry is already watched")
            self._watcher = watcher
        watcher.start()

    @property
    def watcher(self) -> _Watcher | None:
        """The watcher started by :meth:`watch`, if any."""
        return self._watcher

    def close(self) -> None:
        """Stop the watcher, if any (the routers keep serving)."""
        with self._lock:
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()

    def paths(self) -> dict[Path, LearnedRouter]:
        return {p: r for p, r in self._routers.items() if p is not None}

    def all(self) -> list[LearnedRouter]:
        return list(self._routers.values())
