"""Hot reload: new artifact versions are verified in a thread, then swapped in atomically.

.. code-block:: yaml

    routeiq_settings:
      router: ./router
      hot_reload: {enabled: true, interval_s: 5}

Every ``interval_s`` a background thread reads each served artifact's ``manifest.json`` (and
``model.sig``) and hashes them: a few KB, no parsing. When the manifest's SHA-256 differs
from the digest of the router serving that path, the new version is loaded and verified off
the request path: every file digest, the signature (``signing`` settings), then the same
checks as at start-up against the model groups served (pinned ``router_digest``, models the
deployments map to, calibration of targets; a version under which a routed group would fall
back to the shuffle rule is refused). Only then :meth:`RouterRegistry.swap` replaces the
router: the next decision uses it and carries its digest (``x-routeiq-router`` header, span
and log), while decisions already running finish on the router they took. A version that
fails is refused, logged once and counted; the old router keeps serving, and the same version
is not retried until its files change.

Why polling and not SIGHUP: under ``litellm --num_workers N`` uvicorn's supervisor owns the
signals and restarts workers on SIGHUP, and a signal reaches one process, not every worker.
Each worker polls on its own instead; they converge within ``interval_s`` of each other.
Publish versions atomically (``routeiq train --out``, ``LearnedRouter.save`` and
``routeiq sign --publish`` build the directory beside the target and rename it in), so a
poll never sees half a version; if it does (a non-atomic copy), verification fails, and the
finished version, whose files differ, is loaded at the next poll.

Results go to ``routeiq_router_reloads_total{result="swapped"|"refused"}``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from routeiq.router import LearnedRouter
    from routeiq.serving.engine import DecisionEngine
    from routeiq.serving.registry import RouterRegistry
    from routeiq.telemetry.metrics import RouteIQMetrics

log = logging.getLogger(__name__)

_MANIFEST, _SIGNATURE = "manifest.json", "model.sig"
_MAX_FINGERPRINT_BYTES = 16 * 2**20  # the largest manifest read_artifact accepts


class HotReloadSettings(BaseModel):
    """``routeiq_settings.hot_reload``: watch the served artifact paths for new versions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=False, description="poll artifact paths for new versions")
    interval_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=5.0, description="seconds between two polls of every artifact path"
    )


class ReloadRefused(Exception):
    """A new artifact version does not fit what is being served (the reason says why)."""


@dataclass(frozen=True)
class ReloadResult:
    """What one poll did for one path: ``result`` is ``swapped``, ``refused`` or
    ``unchanged`` (the path went back to the served version while it was being read)."""

    path: Path
    result: str
    old: str
    new: str
    reason: str | None = None


Check = Callable[["RouterRegistry"], Collection[str]]


class RouterReloader:
    """Polls the registry's artifact paths and swaps verified new versions in.

    ``load(path)`` loads and verifies one artifact (raises on any problem); ``check(registry)``
    validates a candidate registry against the served model groups and returns the groups the
    shuffle rule would serve (raises to refuse); ``unrouted()`` are those served by shuffle
    now. :meth:`poll` does one round synchronously (tests call it; the thread loops on it).
    """

    def __init__(
        self,
        registry: RouterRegistry,
        load: Callable[[Path], LearnedRouter],
        *,
        check: Check | None = None,
        unrouted: Callable[[], Collection[str]] = frozenset,
        interval_s: float = 5.0,
        metrics: RouteIQMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.load = load
        self.check = check
        self.unrouted = unrouted
        self.interval_s = interval_s
        self.metrics = metrics
        self._refused: dict[Path, tuple[str, str]] = {}  # path -> fingerprint refused
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_engine(cls, engine: DecisionEngine, check: Check | None = None) -> RouterReloader:
        """A reloader for the engine's registry under its settings (signing, interval)."""
        from functools import partial

        from routeiq.serving.registry import load_router

        return cls(
            engine.registry,
            partial(load_router, signing=engine.settings.signing),
            check=check,
            unrouted=lambda: engine.unrouted,
            interval_s=engine.settings.hot_reload.interval_s,
            metrics=engine.metrics,
        )

    def poll(self) -> list[ReloadResult]:
        """Check every served path once; load, verify and swap in the new versions."""
        results = []
        for path, current in sorted(self.registry.paths().items(), key=lambda kv: str(kv[0])):
            seen = fingerprint(path)
            if seen is None or seen[0] == current.digest:
                self._refused.pop(path, None)
                continue
            if self._refused.get(path) == seen:
                continue  # refused already; retried once its files change
            results.append(self._reload(path, current, seen))
        return results

    def _reload(self, path: Path, current: LearnedRouter, seen: tuple[str, str]) -> ReloadResult:
        try:
            router = self.load(path)
            if router.digest == current.digest:  # back to the served version meanwhile
                return ReloadResult(path, "unchanged", current.digest, router.digest)
            self._validate(path, router)
        except Exception as exc:
            # Remember the fingerprint read before loading: if the version changed while it
            # was being read, its fingerprint differs and the next poll tries it.
            self._refused[path] = seen
            reason = " ".join(str(exc).split()) or type(exc).__name__
            log.warning(
                "RouteIQ: refused new router version at %s (still serving %s): %s",
                path,
                current.digest[:12],
                reason,
            )
            self._count("refused")
            return ReloadResult(path, "refused", current.digest, seen[0], reason)
        self.registry.swap(path, router)
        self._refused.pop(path, None)
        log.info(
            "RouteIQ: router %s reloaded: %s -> %s", path, current.digest[:12], router.digest[:12]
        )
        self._count("swapped")
        return ReloadResult(path, "swapped", current.digest, router.digest)

    def _validate(self, path: Path, router: LearnedRouter) -> None:
        if self.check is None:
            return
        unrouted = set(self.check(self.registry.with_router(path, router)))
        lost = sorted(unrouted - set(self.unrouted()))
        if lost:
            raise ReloadRefused(
                f"model groups {lost} map to no model this version knows "
                f"(it knows {list(router.models_)}); they would lose learned routing"
            )

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.router_reloads.labels(result).inc()

    def start(self) -> None:
        """Poll every ``interval_s`` in a daemon thread until :meth:`close`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="routeiq-reload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # never let the watcher die: the next round tries again
                log.exception("RouteIQ: router reload poll failed")

    @property
    def running(self) -> bool:
        """Whether the polling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float = 2.0) -> None:
        """Stop polling (a load in progress finishes within ``timeout`` or is abandoned)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)


def fingerprint(path: Path) -> tuple[str, str] | None:
    """SHA-256 of the artifact's manifest and of its signature ("" when unsigned); None
    while the manifest cannot be read (a writer is swapping the directory)."""
    try:
        with open(path / _MANIFEST, "rb") as fh:
            manifest = fh.read(_MAX_FINGERPRINT_BYTES + 1)
    except OSError:
        return None
    try:
        signature = (path / _SIGNATURE).read_bytes()
    except FileNotFoundError:
        signature = b""
    except OSError:
        return None
    sig = hashlib.sha256(signature).hexdigest() if signature else ""
    return hashlib.sha256(manifest).hexdigest(), sig


def watch_routers(engine: DecisionEngine, check: Check | None = None) -> RouterReloader:
    """Start hot reload for ``engine`` (stopped by ``engine.close()``); see the module doc."""
    reloader = RouterReloader.for_engine(engine, check)
    engine.registry.watch(reloader)
    return reloader
