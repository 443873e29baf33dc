"""Where decisions wait for feedback and online learners share what they learned.

:class:`LocalStore` keeps both in this process: feedback must reach the worker that made the
decision. :class:`RedisStore` shares them through Redis (or Redis Cluster), so any worker or
replica can take feedback on any decision, and every learner merges every worker's updates
within ``sync_interval_s``:

* a decision's context is one hash per decision (``PREFIX:decision:ID``, field ``ctx``, with
  a TTL); a rating claims field ``rated:METRIC`` with ``HSETNX`` (duplicates are refused
  across workers);
* a learner's state is one hash per learner (``PREFIX:online:KEY``) of additive statistics,
  updated with ``HINCRBYFLOAT`` (updates from any number of workers add up; nothing is lost
  to a race) and read back whole when its ``version`` field moved.

Every command names one key, so the layout works on Redis Cluster. Writes leave the request
path through a queue drained by one thread. When Redis is unreachable, learning and feedback
go on locally (this worker's own decisions and updates), updates are kept and pushed when
Redis is back, a log line and ``routeiq_online_store_errors_total`` say so, and no request
fails.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from routeiq.serving.feedback import DecisionContext

log = logging.getLogger(__name__)

Delta = Mapping[str, np.ndarray]


class Learner(Protocol):
    def state(self) -> dict[str, np.ndarray]: ...

    def load(self, state: Mapping[str, np.ndarray]) -> None: ...


class SharedStateSettings(BaseModel):
    """``shared_state:`` in ``routeiq_settings``: the Redis that workers share."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="redis://host:port/db (rediss:// for TLS)", repr=False)
    cluster: bool = Field(default=False, description="the URL names a Redis Cluster node")
    prefix: str = Field(default="routeiq", min_length=1, description="prefix of every key")
    socket_timeout_s: float = Field(
        default=0.5, gt=0, description="per Redis call; slower: local state until it is back"
    )

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://")):
            raise ValueError("shared_state.url must be redis://host:port/db (rediss:// for TLS)")
        return value

    def connect(self) -> Any:
        """A (lazily connecting) Redis or Redis Cluster client with these timeouts."""
        opts = {
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.socket_timeout_s,
        }
        if self.cluster:
            from redis.cluster import RedisCluster

            return RedisCluster.from_url(self.url, **opts)
        import redis

        return redis.Redis.from_url(self.url, **opts)


class LocalStore:
    """Decision contexts in this process (bounded, expiring); learners stay local."""

    def __init__(
        self,
        *,
        ttl_s: float = 172_800.0,
        max_contexts: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_contexts = max_contexts
        self.clock = clock
        self._contexts: OrderedDict[str, tuple[float, DecisionContext, set[str]]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, decision_id: str, context: DecisionContext) -> None:
        with self._lock:
            self._contexts[decision_id] = (self.clock(), context, set())
            if len(self._contexts) > self.max_contexts:
                self._contexts.popitem(last=False)

    def get(self, decision_id: str) -> DecisionContext | None:
        with self._lock:
            entry = self._contexts.get(decision_id)
            if entry is None:
                return None
            if self.clock() - entry[0] > self.ttl_s:
                del self._contexts[decision_id]
                return None
            return entry[1]

    def claim(self, decision_id: str, metric: str) -> bool:
        """True the first time ``metric`` is rated for a known decision."""
        with self._lock:
            entry = self._contexts.get(decision_id)
            if entry is None or metric in entry[2]:
                return False
            entry[2].add(metric)
            return True

    def register(self, key: str, learner: Learner) -> None:
        """Nothing to share locally: a learner's own updates are its state."""

    def push(self, key: str, delta: Delta) -> None:
        """Nothing to share locally (the learner applied ``delta`` itself)."""

    def close(self) -> None:
        """Nothing to flush."""


class RedisStore(LocalStore):
    """:class:`LocalStore` plus Redis: contexts and learner state shared by every worker."""

    def __init__(
        self,
        settings: SharedStateSettings,
        *,
        ttl_s: float = 172_800.0,
        max_contexts: int = 200_000,
        sync_interval_s: float = 1.0,
        max_queued: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[str], None] | None = None,
        client: Any = None,
    ) -> None:
        super().__init__(ttl_s=ttl_s, max_contexts=max_contexts, clock=clock)
        self.settings = settings
        self.sync_interval_s = sync_interval_s
        self.on_error = on_error
        self.dropped = 0
        self.healthy = True
        self._client = client
        self._queue: deque[tuple[str, str]] = deque(maxlen=max_queued)
        self._learners: dict[str, Learner] = {}
        self._unpushed: dict[str, dict[str, np.ndarray]] = {}
        self._versions: dict[str, str | None] = {}
        self._state_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- keys --------------------------------------------------------------------------------

    def _ctx_key(self, decision_id: str) -> str:
        return f"{self.settings.prefix}:decision:{decision_id}"

    def _state_key(self, key: str) -> str:
        return f"{self.settings.prefix}:online:{key}"

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.settings.connect()
        return self._client

    # -- the request path (never blocks) ------------------------------------------------------

    def put(self, decision_id: str, context: DecisionContext) -> None:
        super().put(decision_id, context)
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1  # the oldest queued context falls off; it stays local
        self._queue.append((decision_id, context.to_json()))
        self._ensure_thread()

    def register(self, key: str, learner: Learner) -> None:
        with self._state_lock:
            self._learners[key] = learner
        self._ensure_thread()

    def push(self, key: str, delta: Delta) -> None:
        with self._state_lock:
            pending = self._unpushed.get(key)
            self._unpushed[key] = (
                {k: np.array(v, dtype=np.float64) for k, v in delta.items()}
                if pending is None
                else {k: pending[k] + v for k, v in delta.items()}
            )

    # -- feedback (blocking: call off the event loop) -----------------------------------------

    def get(self, decision_id: str) -> DecisionContext | None:
        local = super().get(decision_id)
        if local is not None:
            return local
        try:
            text = self.client.hget(self._ctx_key(decision_id), "ctx")
        except Exception as exc:
            self._failed(exc)
            return None
        return None if text is None else DecisionContext.from_json(_text(text))

    def claim(self, decision_id: str, metric: str) -> bool:
        try:
            key = self._ctx_key(decision_id)
            if not self.client.exists(key):  # only local (queued, or Redis was down)
                self.sync()
            if self.client.exists(key):
                return bool(self.client.hsetnx(key, f"rated:{metric}", 1))
        except Exception as exc:
            self._failed(exc)
        return super().claim(decision_id, metric)

    # -- the sync thread ------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive():
            with self._state_lock:
                if self._thread is None or not self._thread.is_alive():
                    # Daemon: an unreachable Redis must not hold up interpreter exit.
                    self._thread = threading.Thread(
                        target=self._run, name="routeiq-online-sync", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.sync_interval_s):
            self.sync()

    def sync(self) -> bool:
        """One round: write queued contexts, push updates, pull merged state. False on error."""
        contexts = [self._queue.popleft() for _ in range(len(self._queue))]
        with self._state_lock:
            unpushed, self._unpushed = self._unpushed, {}
            learners = dict(self._learners)
        try:
            self._write(contexts, unpushed)
            for key, learner in learners.items():
                self._pull(key, learner)
        except Exception as exc:
            self._queue.extendleft(reversed(contexts))
            for key, delta in unpushed.items():
                self.push(key, delta)
            self._failed(exc)
            return False
        if not self.healthy:
            log.warning("RouteIQ online store: Redis reachable again; sharing resumed")
        self.healthy = True
        return True

    def _write(self, contexts: list[tuple[str, str]], unpushed: dict[str, Any]) -> None:
        if not contexts and not unpushed:
            return
        ttl = max(1, int(self.ttl_s))
        pipe = self.client.pipeline(transaction=False)
        for decision_id, text in contexts:
            key = self._ctx_key(decision_id)
            pipe.hset(key, "ctx", text)
            pipe.expire(key, ttl)
        for key, delta in unpushed.items():
            name = self._state_key(key)
            # The arrays' shapes, so a snapshot can be exported without the router.
            shape = json.dumps({k: list(np.shape(v)) for k, v in delta.items()})
            pipe.hsetnx(name, "shape", shape)
            for field, arr in delta.items():
                flat = np.asarray(arr, dtype=np.float64).reshape(-1)
                for i in np.flatnonzero(flat).tolist():
                    pipe.hincrbyfloat(name, f"{field}:{i}", float(flat[i]))
            pipe.hincrby(name, "version", 1)
        pipe.execute()

    def _pull(self, key: str, learner: Learner) -> None:
        name = self._state_key(key)
        version = self.client.hget(name, "version")
        if version is None or version == self._versions.get(key):
            return
        raw = self.client.hgetall(name)
        state = {k: np.zeros_like(v) for k, v in learner.state().items()}
        flat = {k: v.reshape(-1) for k, v in state.items()}
        for field, value in raw.items():
            field = _text(field)
            if field in ("version", "shape"):
                continue
            arr, _, idx = field.partition(":")
            if arr in flat and idx.isdigit() and int(idx) < flat[arr].size:
                flat[arr][int(idx)] = float(value)
        with self._state_lock:
            for k, delta in self._unpushed.get(key, {}).items():
                state[k] = state[k] + delta  # updates since this round's push: still ours
            learner.load(state)
            self._versions[key] = version

    def _failed(self, exc: Exception) -> None:
        if self.healthy:
            log.warning(
                "RouteIQ online store: Redis unreachable (%s: %s); learning and feedback "
                "continue locally until it is back",
                type(exc).__name__,
                exc,
            )
        self.healthy = False
        if self.on_error is not None:
            self.on_error(type(exc).__name__)

    def close(self) -> None:
        """Stop the sync thread after one last round (queued contexts and updates)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.sync()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
