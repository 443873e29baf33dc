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

Each process keeps its own file descriptor opened with ``O_APPEND`` and writes each line with
one ``os.write``: lines from several workers sharing the file do not interleave in practice
(POSIX guarantees this only for pipes, not regular files).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from routeiq.data.records import RouteRecord

log = logging.getLogger(__name__)


class DecisionLog:
    """Joins decisions with outcomes and appends records to ``path``.

    ``clock`` (seconds, monotonic) is injectable for tests of the expiry rule.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        pending_ttl_s: float = 600.0,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.pending_ttl_s = pending_ttl_s
        self.max_pending = max_pending
        self.clock = clock
        self._pending: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._fd: int | None = None
        self._fd_pid: int | None = None
        self._lock = threading.Lock()

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
        """Write every pending decision (without outcome) and close the file."""
        with self._lock:
            rest = [rec for _, rec in self._pending.values()]
            self._pending.clear()
        self._write(rest)
        with self._lock:
            if self._fd is not None and self._fd_pid == os.getpid():
                os.close(self._fd)
            self._fd = None

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
            lines.append((model.model_dump_json(by_alias=True, exclude_none=True) + "\n").encode())
        with self._lock:
            fd = self._file()
            for data in lines:
                view = memoryview(data)
                while view:  # a short write is rare (signal, full disk): finish the line
                    view = view[os.write(fd, view) :]

    def _file(self) -> int:
        # One descriptor per process: a forked worker must not share its parent's.
        if self._fd is None or self._fd_pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._fd_pid = os.getpid()
        return self._fd


def _nonneg_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v >= 0 and v == v and v != float("inf") else None
