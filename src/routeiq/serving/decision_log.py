"""Decision log: every decision joined with its outcome, written off the request path.

Records use the core format (:mod:`routeiq.data.records`), so ``routeiq train`` reads the log
directly. One record per decision, i.e. per attempt: a retry or a fallback hop is a decision
of its own, joined with its own outcome::

    {"id": "<worker pid>-<random hex>", "prompt": "<routing text>",
     "outcomes": {"<model>": {"cost": 1.3e-05, "latency_ms": 412.0, "status": "success"}},
     "decision": {"candidates": [...], "chosen": "<model>", "deployment": "<id>",
                  "propensity": 1.0, "lambda": 20.0, "router": "<artifact digest>",
                  "outcome": "routed", "attempt": 1, ...}}

``quality`` stays unset until feedback arrives as a later line with the same id (the decision
id is sent back in the ``x-routeiq-decision-id`` response header). A decision whose outcome
never arrives (the client went away) is written without outcomes after ``pending_ttl_s``, or
at :meth:`DecisionLog.close` (the proxy calls it at shutdown); an outcome that arrives after
that is written as a partial line with the same id, which merges on reading.

The request path only touches dictionaries: :meth:`~DecisionLog.add_decision` and
:meth:`~DecisionLog.add_outcome` park or hand over a record in O(1). A writer thread
serialises and writes. Its queue is bounded (``max_queued``): records beyond it
are dropped and counted in ``routeiq_decision_log_dropped_total{sink="queue"}``, never
blocking a request.

Sinks: :class:`JsonlFileSink` appends JSON lines to a file (one descriptor per process opened
with ``O_APPEND``, one ``os.write`` per batch, so workers sharing a file do not interleave in
practice); a ``redis://`` URL selects :class:`routeiq.integrations.redis_stream.RedisStreamSink`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from routeiq.integrations.redis_stream import RedisStreamSink
from routeiq.integrations.redis_url import RedisStreamConfig, is_url

if TYPE_CHECKING:
    from routeiq.telemetry.metrics import RouteIQMetrics

log = logging.getLogger(__name__)

_BATCH = 256  # records that wake the writer early; also the most per sink write
_COMPACT = (",", ":")


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
        self._lock = threading.RLock()  # see DecisionLog._lock: writes may come from a handler

    def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        with self._lock:
            fd = self._file()
            view = memoryview("".join(line + "\n" for line in lines).encode())
            while view:  # a short write is rare (signal, full disk): finish the batch
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
    """A sink for a file path, a ``redis://`` URL or config, or ``target`` itself if a sink."""
    if isinstance(target, str) and is_url(target):
        target = RedisStreamConfig.from_url(target)
    if isinstance(target, RedisStreamConfig):
        on_drop = None if metrics is None else metrics.decision_log_dropped.labels("redis").inc
        return RedisStreamSink(target, on_drop=on_drop)
    if isinstance(target, str | Path):
        return JsonlFileSink(target)
    return target


def outcome_fields(
    *,
    status: str,
    cost: float | None = None,
    latency_ms: float | None = None,
    error_type: str | None = None,
) -> dict[str, Any]:
    """An outcome entry as the record format wants it (bad numbers become unknown)."""
    out: dict[str, Any] = {
        "status": status,
        "cost": _nonneg(cost),
        "latency_ms": _nonneg(latency_ms),
    }
    if error_type:
        out["error_type"] = error_type[:200]
    return out


class DecisionLog:
    """Joins decisions with outcomes and hands finished records to a writer thread.

    ``target`` is a file path (JSONL), a ``redis://`` URL or :class:`RedisStreamConfig`, or
    any :class:`RecordSink`. ``clock`` (seconds, monotonic) is injectable for tests of the
    expiry rule. The writer wakes every ``flush_interval_s`` (or once ``_BATCH`` records
    wait), not per record: each wake-up of a thread costs the event loop a GIL hand-over,
    measured as doubled context switches per request in a busy proxy.
    """

    def __init__(
        self,
        target: LogTarget,
        *,
        pending_ttl_s: float = 600.0,
        max_pending: int = 100_000,
        max_queued: int = 100_000,
        metrics: RouteIQMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        flush_interval_s: float = 0.2,
    ) -> None:
        self.sink = open_sink(target, metrics=metrics)
        self.pending_ttl_s = pending_ttl_s
        self.max_pending = max_pending
        self.clock = clock
        self.flush_interval_s = flush_interval_s
        self.dropped = 0
        self._on_drop = None if metrics is None else metrics.decision_log_dropped.labels("queue")
        self._pending: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        # Re-entrant: drain() runs from a signal handler, which may interrupt this very thread
        # while it holds the lock.
        self._lock = threading.RLock()
        self.max_queued = max_queued
        self._queue: deque[dict[str, Any]] = deque()  # appends and pops are atomic
        self._wake = threading.Event()
        self._stop = False
        self._writing = 0  # records taken off the queue and not yet written
        self._writer: threading.Thread | None = None
        self._writer_pid: int | None = None
        self._closed = False
        self._draining = False

    @property
    def path(self) -> Path | None:
        """The JSONL file, when the sink is a file."""
        return self.sink.path if isinstance(self.sink, JsonlFileSink) else None

    # -- the request path --------------------------------------------------------------------

    def add_decision(
        self, record: dict[str, Any], *, features: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        """Keep a decision record (``id``, ``prompt``, ``decision``) until its outcome arrives.

        ``features`` makes the record's ``features`` field when it is written (in the writer
        thread: featurizing stays off the request path, and only the vector is stored)."""
        if features is not None:
            record[_FEATURES] = features
        if self._draining:  # shutting down: nothing may wait in memory
            self._write([record])
            return
        with self._lock:
            self._pending[record["id"]] = (self.clock(), record)
            overflow = len(self._pending) > self.max_pending
            oldest = self._pending.popitem(last=False)[1][1] if overflow else None
        if oldest is not None:
            self._enqueue(oldest)
        self._ensure_writer()

    def add_outcome(
        self, decision_id: str, outcome: dict[str, Any], model: str | None = None
    ) -> bool:
        """Join ``outcome`` (see :func:`outcome_fields`) with its pending decision.

        Returns False when the decision is no longer pending (written at expiry or shutdown):
        the outcome is then written alone with the same id (and ``model``), so it still merges.
        """
        with self._lock:
            entry = self._pending.pop(decision_id, None)
        if entry is None:
            if model:
                partial = {"id": decision_id, "outcomes": {model: outcome}}
                if self._draining:
                    self._write([partial])
                else:
                    self._enqueue(partial)
            return False
        record = entry[1]
        key = model or record["decision"]["chosen"]
        self._enqueue({**record, "outcomes": {key: outcome}})
        return True

    def is_pending(self, decision_id: str) -> bool:
        return decision_id in self._pending

    def pending(self) -> int:
        return len(self._pending)

    # -- flushing ------------------------------------------------------------------------------

    def flush_expired(self) -> int:
        """Hand decisions older than ``pending_ttl_s`` to the writer, without outcome."""
        now = self.clock()
        expired = []
        with self._lock:
            while self._pending:
                born, record = next(iter(self._pending.values()))
                if now - born < self.pending_ttl_s:
                    break
                self._pending.popitem(last=False)
                expired.append(record)
        for record in expired:
            self._enqueue(record)
        return len(expired)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record handed over so far is written; False on timeout."""
        self._ensure_writer()
        self._wake.set()
        deadline = time.monotonic() + timeout
        while self._queue or self._writing:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def drain(self) -> None:
        """Shutdown has begun (SIGTERM): write every pending decision and queued record now,
        on the calling thread, and from now on write each decision at once and each outcome
        as a partial line with the decision's id (they merge on reading).

        The process may be ended at any moment after this (uvicorn re-raises SIGTERM once
        its in-flight requests finish), so nothing may wait in memory. Idempotent.
        """
        if self._draining or self._closed:
            return
        self._draining = True
        with self._lock:
            rest = [record for _, record in self._pending.values()]
            self._pending.clear()
        self._drain_inline()
        self._write(rest)

    def close(self, timeout: float = 10.0) -> None:
        """Write every pending decision (without outcome), drain the writer, close the sink.

        Waits at most ``timeout`` seconds for the writer thread; what it has not taken by then
        is written on the calling thread. Idempotent. Decisions and outcomes that arrive later
        are written through at once (as after :meth:`drain`), never parked.
        """
        if self._closed:
            return
        self._closed = True
        self._draining = True  # from now on nothing waits in memory
        writer = self._writer
        if writer is not None and writer.is_alive() and self._writer_pid == os.getpid():
            self._stop = True
            self._wake.set()
            writer.join(timeout)  # a stuck writer: what it has not taken is written below
        with self._lock:
            rest = [record for _, record in self._pending.values()]
            self._pending.clear()
        self._drain_inline()
        self._write(rest)
        self.sink.close()

    # -- the writer ------------------------------------------------------------------------

    def _enqueue(self, record: dict[str, Any]) -> None:
        if len(self._queue) >= self.max_queued:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop.inc()
            log.warning("RouteIQ: decision log queue full; dropped record %s", record.get("id"))
            return
        self._queue.append(record)
        if len(self._queue) >= _BATCH:
            self._wake.set()

    def _ensure_writer(self) -> None:
        if self._writer_pid == os.getpid() and self._writer is not None:
            return
        with self._lock:
            if self._writer_pid == os.getpid() and self._writer is not None:
                return
            self._writer = threading.Thread(
                target=self._run, name="routeiq-decision-log", daemon=True
            )
            self._writer_pid = os.getpid()
            self._writer.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self.flush_expired()
            self._drain_inline()
            if self._stop:
                return

    def _drain_inline(self) -> None:
        """Write everything queued, in batches (the writer thread, or shutdown paths)."""
        while self._queue:
            batch: list[dict[str, Any]] = []
            while self._queue and len(batch) < _BATCH:
                try:
                    batch.append(self._queue.popleft())
                except IndexError:  # another drainer took the last one
                    break
            self._writing += len(batch)
            try:
                self._write(batch)
            finally:
                self._writing -= len(batch)

    def _write(self, records: list[dict[str, Any]]) -> None:
        lines = []
        for rec in records:
            rec = _with_features(rec)
            # Records are built by Decision.to_record and outcome_fields, in the record format
            # (tests read every kind back with RouteRecord); plain json is ~10x cheaper than a
            # pydantic round trip per record. NaN/inf cannot occur: both builders drop them.
            try:
                lines.append(json.dumps(_without_none(rec), allow_nan=False, separators=_COMPACT))
            except (TypeError, ValueError):
                log.exception("RouteIQ: dropping an unserialisable record %s", rec.get("id"))
        if not lines:
            return
        try:
            self.sink.write(lines)
        except Exception:  # a full disk must not kill the writer: count and carry on
            self.dropped += len(lines)
            if self._on_drop is not None:
                self._on_drop.inc(len(lines))
            log.exception("RouteIQ: decision log sink failed; dropped %d records", len(lines))


_FEATURES = "__features"  # a record's pending features maker (never written)


def _with_features(rec: dict[str, Any]) -> dict[str, Any]:
    make = rec.get(_FEATURES)
    if make is None:
        return rec
    rec = {k: v for k, v in rec.items() if k != _FEATURES}
    try:
        rec["features"] = make()
    except Exception:  # the record is still written, without its features
        log.exception("RouteIQ: could not featurize decision %s for the log", rec.get("id"))
    return rec


def _without_none(value: Any) -> Any:
    """``exclude_none`` for plain dicts (lists keep their items)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value]
    return value


def _nonneg(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v >= 0 else None
