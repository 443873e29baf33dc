"""Decision log: each routing decision joined with its outcome, appended as JSONL records.

Records use the core format (:mod:`routeiq.data.records`), so ``routeiq train`` reads the log
directly. One line per decision (i.e. per attempt: a retry or a fallback hop is a new
decision)::

    {"id": "<worker pid>-<random hex>", "prompt": "<routing text>",
     "outcomes": {"<model>": {"cost": 1.3e-05, "latency_ms": 412.0, "status": "success"}},
     "decision": {"candidates": [{"model": ..., "deployment": ..., "predicted_quality": ...,
                                  "cost": ..., "probability": ...}],
                  "chosen": "<model>", "propensity": 1.0, "lambda": 20.0,
                  "router": "<artifact digest>"}}

``chosen`` and the ``outcomes`` key are the model name the router saw for the deployment
(several deployments of one model share it; ``deployment`` tells them apart). ``quality`` stays
unset until feedback arrives as a later line with the same id (the decision id is sent back in
the ``x-routeiq-decision-id`` response header). A decision whose outcome never arrives (the
client went away, the process is restarted) is written without outcomes after
``pending_ttl_s``, or at :meth:`DecisionLog.close`.

Records go to a sink (:class:`RecordSink`). The default, :class:`JsonlFileSink`, appends JSON
lines to a file: each process keeps its own file descriptor opened with ``O_APPEND`` and writes
each line with one ``os.write``, so lines from several workers sharing the file do not
interleave in practice (POSIX guarantees this only for pipes, not regular files). A
``redis://`` URL selects :class:`routeiq.integrations.redis_stream.RedisStreamSink` instead:
the same records, one per stream entry, written off the request path.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from routeiq.data.records import RouteRecord
from routeiq.integrations.redis_stream import RedisStreamConfig, RedisStreamSink, is_url

if TYPE_CHECKING:
    from routeiq.telemetry.metrics import RouteIQMetrics

log = logging.getLogger(__name__)


class RecordSink(Protocol):
    """Where finished records go: each line is one serialized :class:`RouteRecord`."""

    def write(self, lines: Sequence[str]) -> None: ...

    def close(self) -> None: ...


class JsonlFileSink:
    """Appends each record as one JSON line to ``path`` (created with its folder if needed)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._fd_pid: int | None = None
        self._lock = threading.Lock()

    def write(self, lines: Sequence[str]) -> None:
        with self._lock:
            fd = self._file()
            for line in lines:
                view = memoryview((line + "\n").encode())
                while view:  # a short write is rare (signal, full disk): finish the line
                    view = view[os.write(fd, view) :]

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._fd_pid == os.getpid():
                os.close(self._fd)
            self._fd = None

    def _file(self) -> int:
        # One descriptor per process: a forked worker must not share its parent's.
        if self._fd is None or self._fd_pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._fd_pid = os.getpid()
        return self._fd


LogTarget = str | Path | RedisStreamConfig | RecordSink


def open_sink(target: LogTarget, *, metrics: RouteIQMetrics | None = None) -> RecordSink:
    """A sink for a file path, a ``redis://`` URL or config, or ``target`` itself if a sink.

    With ``metrics``, records a Redis sink drops count in ``decision_log_dropped{sink="redis"}``.
    """
    if isinstance(target, str) and is_url(target):
        target = RedisStreamConfig.from_url(target)
    if isinstance(target, RedisStreamConfig):
        on_drop = None if metrics is None else metrics.decision_log_dropped.labels("redis").inc
        return RedisStreamSink(target, on_drop=on_drop)
    if isinstance(target, str | Path):
        return JsonlFileSink(target)
    return target


class DecisionLog:
    """Joins decisions with outcomes and hands finished records to a sink.

    ``target`` is a file path (JSONL), a ``redis://`` URL or :class:`RedisStreamConfig`, or
    any :class:`RecordSink`. ``clock`` (seconds, monotonic) is injectable for tests of the
    expiry rule.
    """

    def __init__(
        self,
        target: LogTarget,
        *,
        pending_ttl_s: float = 600.0,
        max_pending: int = 100_000,
        metrics: RouteIQMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = open_sink(target, metrics=metrics)
        self.pending_ttl_s = pending_ttl_s
        self.max_pending = max_pending
        self.clock = clock
        self._pending: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def path(self) -> Path | None:
        """The JSONL file, when the sink is a file."""
        return self.sink.path if isinstance(self.sink, JsonlFileSink) else None

    # -- decisions and outcomes ----------------------------------------------------------------

    def add_decision(self, record: dict[str, Any]) -> None:
        """Keep a decision record (``id``, ``prompt``, ``decision``) until its outcome arrives."""
        with self._lock:
            self._pending[record["id"]] = (self.clock(), record)
            expired = self._pop_expired()
        self._write(expired)

    def add_outcome(
        self,
        decision_id: str,
        *,
        cost: float | None,
        latency_ms: float | None,
        status: str,
        served_model: str | None = None,
    ) -> bool:
        """Join an outcome with its pending decision and write the record.

        Returns False when the decision is unknown here (already written or expired): the
        outcome is then written alone as a partial line with the same id, so it still merges.
        """
        with self._lock:
            entry = self._pending.pop(decision_id, None)
        outcome = {
            "cost": _nonneg_or_none(cost),
            "latency_ms": _nonneg_or_none(latency_ms),
            "status": status,
        }
        if entry is None:
            if served_model:
                self._write([{"id": decision_id, "outcomes": {served_model: outcome}}])
            return False
        record = entry[1]
        model = served_model or record["decision"]["chosen"]
        self._write([{**record, "outcomes": {model: outcome}}])
        return True

    def flush_expired(self) -> int:
        with self._lock:
            expired = self._pop_expired()
        self._write(expired)
        return len(expired)

    def is_pending(self, decision_id: str) -> bool:
        return decision_id in self._pending

    def pending(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        """Write every pending decision (without outcome) and close the sink."""
        with self._lock:
            rest = [rec for _, rec in self._pending.values()]
            self._pending.clear()
        self._write(rest)
        self.sink.close()

    # -- internals -----------------------------------------------------------------------------

    def _pop_expired(self) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        while self._pending:
            born, record = next(iter(self._pending.values()))
            if now - born < self.pending_ttl_s and len(self._pending) <= self.max_pending:
                break
            self._pending.popitem(last=False)
            out.append(record)
        return out

    def _write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        lines = []
        for rec in records:
            try:
                model = RouteRecord.model_validate(rec)
            except ValueError:
                log.exception("RouteIQ: dropping an invalid decision record %s", rec.get("id"))
                continue
            lines.append(model.model_dump_json(by_alias=True, exclude_none=True))
        if lines:
            self.sink.write(lines)


def _nonneg_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v >= 0 and v == v and v != float("inf") else None
