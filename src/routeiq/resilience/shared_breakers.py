"""Circuit breakers shared by every worker and replica through Redis (``breakers.shared``).

.. code-block:: python

    breakers = CircuitBreakers(BreakerSettings(enabled=True, shared=True),
                               shared=SharedStateSettings(url="redis://127.0.0.1:6379/0"))

Each deployment has one hash, ``PREFIX:breaker:DEPLOYMENT`` (one key per command: Redis
Cluster safe), with a field per worker, ``w:WORKER`` = that worker's window counts
(``calls failures slow wall_time``), and ``open`` = the latest trip (JSON: wall-clock end,
trip count, reason, event id). Every ``sync_interval_s`` a background thread pushes this
worker's counts and trips and pulls the hash back: other workers' fresh counts are added to
the local window when rates are computed (so the fleet's calls open a breaker, not only this
worker's), and a trip seen for the first time opens the local breaker until the same end.
Each worker probes a half-open breaker itself.

Nothing here runs on the request path: the guard queues trips, the thread talks to Redis.
When Redis is unreachable, every worker's breakers go on locally, a warning is logged once
(and once more when Redis is back) and no request fails.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from routeiq.online.store import SharedStateSettings
from routeiq.resilience.breaker import CircuitBreaker, Counts, Transition
from routeiq.resilience.breaker_settings import BreakerSettings

log = logging.getLogger(__name__)

STALE_AFTER_INTERVALS = 8  # a worker that has not pushed for this many rounds is gone


class SharedBreakers:
    """Pushes local windows and trips to Redis and merges the other workers' back."""

    def __init__(
        self,
        shared: SharedStateSettings,
        settings: BreakerSettings,
        *,
        source: Callable[[], Mapping[str, CircuitBreaker]],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        client: Any = None,
        worker_id: str | None = None,
    ) -> None:
        self.shared = shared
        self.settings = settings
        self.source = source
        self.clock = clock
        self.wall = wall
        self.worker = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.healthy = True
        self.rounds = 0
        self._client = client
        self._events: deque[tuple[str, str]] = deque(maxlen=10_000)  # (deployment, json)
        self._seen: dict[str, str] = {}  # deployment -> last adopted event id
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        # Keys outlive the longest open time, then expire when nobody pushes any more.
        longest = max(settings.for_group(g).max_open_s for g in ["", *settings.groups])
        self._ttl = int(max(longest, 60.0) * 2)

    def key(self, deployment: str) -> str:
        return f"{self.shared.prefix}:breaker:{deployment}"

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.shared.connect()
        return self._client

    # -- the request path (no network) --------------------------------------------------------

    def opened(self, t: Transition) -> None:
        """A local trip: queued for the next push."""
        self._seq += 1
        event = {
            "until": self.wall() + (t.open_s or 0.0),
            "trips": t.trips,
            "reason": t.reason,
            "id": f"{self.worker}:{self._seq}",
        }
        self._events.append((t.deployment, json.dumps(event)))

    def ensure_running(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._thread_lock:
            if self._stop.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            # Daemon: an unreachable Redis must not hold up interpreter exit.
            self._thread = threading.Thread(
                target=self._run, name="routeiq-breaker-sync", daemon=True
            )
            self._thread.start()

    # -- the sync thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.settings.sync_interval_s):
            self.sync()

    def sync(self) -> bool:
        """One round: push counts and trips, pull the others'. False when Redis failed."""
        breakers = dict(self.source())
        events = [self._events.popleft() for _ in range(len(self._events))]
        if not breakers and not events:
            return True
        now = self.wall()
        names = sorted(set(breakers) | {d for d, _ in events})
        try:
            pipe = self.client.pipeline(transaction=False)
            for deployment, text in events:
                pipe.hset(self.key(deployment), "open", text)
            for name in names:
                key = self.key(name)
                if name in breakers:
                    c = breakers[name].counts()
                    pipe.hset(key, f"w:{self.worker}", f"{c.calls} {c.failures} {c.slow} {now}")
                pipe.expire(key, self._ttl)
                pipe.hgetall(key)
            replies = pipe.execute()
        except Exception as exc:
            self._events.extendleft(reversed(events))  # pushed when Redis is back
            self._failed(exc)
            return False
        if not self.healthy:
            log.warning("RouteIQ breakers: Redis reachable again; breakers shared again")
        self.healthy = True
        self.rounds += 1
        hashes = [r for r in replies if isinstance(r, dict)]
        for name, raw in zip(names, hashes, strict=True):
            if name in breakers:
                self._merge(name, breakers[name], raw, now)
        return True

    def _merge(
        self, name: str, breaker: CircuitBreaker, raw: Mapping[Any, Any], now: float
    ) -> None:
        stale = max(2.0, STALE_AFTER_INTERVALS * self.settings.sync_interval_s)
        remote = Counts()
        event: dict[str, Any] | None = None
        for field, value in raw.items():
            f, v = _text(field), _text(value)
            if f == "open":
                try:
                    event = json.loads(v)
                except ValueError:
                    continue
            elif f.startswith("w:") and f != f"w:{self.worker}":
                parts = v.split()
                if len(parts) == 4 and now - float(parts[3]) <= stale:
                    remote = remote + Counts(int(parts[0]), int(parts[1]), int(parts[2]))
        if event is not None:
            self._adopt(name, breaker, event, now)
        breaker.merge_remote(remote)

    def _adopt(
        self, name: str, breaker: CircuitBreaker, event: Mapping[str, Any], now: float
    ) -> None:
        ident = str(event.get("id", ""))
        if not ident or ident == self._seen.get(name) or ident.startswith(f"{self.worker}:"):
            return
        self._seen[name] = ident
        remaining = float(event.get("until", 0.0)) - now
        breaker.open_from_remote(remaining, int(event.get("trips", 1)), str(event.get("reason")))

    def _failed(self, exc: Exception) -> None:
        if self.healthy:
            log.warning(
                "RouteIQ breakers: Redis unreachable (%s: %s); breakers continue per worker "
                "until it is back",
                type(exc).__name__,
                exc,
            )
        self.healthy = False

    def close(self) -> None:
        """Stop the thread after one last round (queued trips)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.sync()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
