"""Decision records in a Redis stream: the optional sink of the decision log, and reading back.

Set ``decision_log`` to a URL instead of a file path::

    decision_log: redis://localhost:6379/0?stream=routeiq:decisions&maxlen=1000000

The URL and its options: :mod:`routeiq.integrations.redis_url`.

Each stream entry holds one record in its ``record`` field: exactly the JSON line the file
sink writes (a :class:`routeiq.data.records.RouteRecord`), so :func:`read_stream` parses
entries without conversion. Delivery is at least once: a batch that failed part-way is sent
again, and duplicate entries carry the same id, so they merge.

:meth:`RedisStreamSink.write` never waits for Redis: it appends to a bounded buffer and wakes
a background thread that runs its own event loop with ``redis.asyncio``. The client then never
depends on the caller's event loop, which may be the proxy's, the short-lived ``asyncio.run``
loop of a sync ``Router.completion`` call, or none at all (``close`` at exit). While Redis is
unreachable the thread retries with exponential backoff; it logs one warning per outage and
one line when writes succeed again.

This module imports neither litellm nor (until used) redis: ``routeiq train --data redis://...``
reads a stream without loading the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from routeiq.data.dataset import DataError
from routeiq.data.records import RouteRecord, merge_records
from routeiq.integrations.redis_url import RedisStreamConfig, client_options

log = logging.getLogger(__name__)

RECORD_FIELD = "record"


@dataclass
class _Worker:
    """One background thread with its event loop (one per sink and process)."""

    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    thread: threading.Thread | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False

    def signal(self, *, stop: bool = False) -> None:
        try:
            if stop:
                self.loop.call_soon_threadsafe(self.stop.set)
            self.loop.call_soon_threadsafe(self.wake.set)
        except RuntimeError:  # the loop already closed: nothing left to wake
            pass


class RedisStreamSink:
    """Appends serialized records to a Redis stream (``XADD``), never blocking the caller.

    At most ``config.buffer`` records wait in memory (plus one batch of up to ``batch_size``
    in flight); beyond that the oldest are dropped, counted in :attr:`dropped` and reported
    to ``on_drop(n)`` (e.g. a Prometheus counter's ``inc``). ``retry_s`` is the first retry
    delay after a failed write, doubled per failure up to ``max_retry_s``.
    """

    def __init__(
        self,
        config: RedisStreamConfig,
        *,
        on_drop: Callable[[int], Any] | None = None,
        batch_size: int = 500,
        retry_s: float = 0.5,
        max_retry_s: float = 30.0,
        close_timeout_s: float = 5.0,
    ) -> None:
        self.config = config
        self.on_drop = on_drop
        self.batch_size = batch_size
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.close_timeout_s = close_timeout_s
        self.written = 0
        self.dropped = 0
        self.failed_attempts = 0
        self._buffer: deque[str] = deque(maxlen=config.buffer)
        self._in_flight = 0
        self._down = False
        self._dropped_before_outage = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._worker: _Worker | None = None
        self._pid: int | None = None

    # -- the RecordSink interface --------------------------------------------------------------

    def write(self, lines: Sequence[str]) -> None:
        """Queue serialized records (one JSON object each) for the background writer."""
        if not lines:
            return
        with self._lock:
            worker = self._ensure_worker()
            over = max(0, len(self._buffer) + len(lines) - self.config.buffer)
            self._buffer.extend(lines)  # a bounded deque drops the oldest
            self.dropped += over
        worker.signal()
        if over:
            self._report_drops(over)

    def close(self, timeout: float | None = None) -> None:
        """Write what is buffered (waiting at most ``timeout`` s) and stop the writer thread.

        Records still unwritten when Redis is down are dropped and counted. A later
        :meth:`write` starts a new writer.
        """
        with self._lock:
            worker = self._worker if self._pid == os.getpid() else None
            self._worker = None
            if worker is None:
                return
            worker.closing = True
        worker.signal(stop=True)
        if worker.thread is None:
            return
        worker.thread.join(self.close_timeout_s if timeout is None else timeout)
        if worker.thread.is_alive():
            log.warning(
                "RouteIQ decision log: Redis writer for %s did not finish in time; "
                "%d records may be lost",
                self.config.display,
                self.buffered(),
            )

    # -- inspection ----------------------------------------------------------------------------

    def buffered(self) -> int:
        """Records waiting to be written (in flight included)."""
        with self._lock:
            return len(self._buffer) + self._in_flight

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every buffered record is written; False on timeout (e.g. Redis down).

        Blocks the calling thread: not for use on an event loop.
        """
        with self._idle:
            return self._idle.wait_for(lambda: not self._buffer and not self._in_flight, timeout)

    # -- the writer thread ---------------------------------------------------------------------

    def _ensure_worker(self) -> _Worker:
        # Called with self._lock held.
        pid = os.getpid()
        if self._pid != pid:
            # A forked child: the parent's thread and buffered records are not ours.
            self._buffer.clear()
            self._in_flight = 0
            self._worker = None
            self._pid = pid
        worker = self._worker
        if worker is None or worker.thread is None or not worker.thread.is_alive():
            worker = _Worker()
            # Daemon: an unreachable Redis must not hold up interpreter exit.
            worker.thread = threading.Thread(
                target=self._serve, args=(worker,), name="routeiq-redis-log", daemon=True
            )
            self._worker = worker
            worker.thread.start()
        return worker

    def _serve(self, worker: _Worker) -> None:
        asyncio.set_event_loop(worker.loop)
        try:
            worker.loop.run_until_complete(self._run(worker))
        except Exception:
            log.exception("RouteIQ decision log: the Redis writer stopped")
        finally:
            worker.loop.close()

    async def _run(self, worker: _Worker) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.config.url, **client_options())
        delay = self.retry_s
        try:
            while True:
                batch = self._take()
                if not batch:
                    if worker.closing:
                        return
                    await worker.wake.wait()
                    worker.wake.clear()
                    continue
                try:
                    await self._send(client, batch)
                except Exception as exc:  # connection refused, timeout, NOAUTH, WRONGTYPE...
                    self._put_back(batch)
                    self._outage(exc)
                    if worker.closing:
                        self._give_up()
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(worker.stop.wait(), delay)
                    delay = min(delay * 2, self.max_retry_s)
                else:
                    self._sent(len(batch))
                    delay = self.retry_s
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _send(self, client: Any, batch: list[str]) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for line in batch:
                pipe.xadd(
                    self.config.stream,
                    {RECORD_FIELD: line},
                    maxlen=self.config.maxlen,
                    approximate=True,
                )
            await pipe.execute()

    def _take(self) -> list[str]:
        with self._lock:
            n = min(self.batch_size, len(self._buffer))
            batch = [self._buffer.popleft() for _ in range(n)]
            self._in_flight = n
            if not n:
                self._idle.notify_all()
            return batch

    def _put_back(self, batch: list[str]) -> None:
        # The failed batch is older than anything buffered since: it goes first, and the
        # oldest records beyond the bound are dropped.
        with self._lock:
            merged = [*batch, *self._buffer]
            keep = merged[-self.config.buffer :]
            over = len(merged) - len(keep)
            self._buffer.clear()
            self._buffer.extend(keep)
            self._in_flight = 0
            self.dropped += over
            self.failed_attempts += 1
        if over:
            self._report_drops(over)

    def _sent(self, n: int) -> None:
        with self._lock:
            self._in_flight = 0
            self.written += n
            was_down, self._down = self._down, False
            lost = self.dropped - self._dropped_before_outage
            if not self._buffer:
                self._idle.notify_all()
        if was_down:
            log.warning(
                "RouteIQ decision log: writing to Redis %s again; %d records were dropped "
                "during the outage",
                self.config.display,
                lost,
            )

    def _outage(self, exc: Exception) -> None:
        with self._lock:
            if self._down:
                return
            self._down = True
            self._dropped_before_outage = self.dropped
        log.warning(
            "RouteIQ decision log: cannot write to Redis %s (%s); routing goes on, up to "
            "%d records wait in memory and the oldest are dropped beyond that",
            self.config.display,
            _reason(exc),
            self.config.buffer,
        )

    def _give_up(self) -> None:
        with self._lock:
            n = len(self._buffer)
            self._buffer.clear()
            self.dropped += n
            self._idle.notify_all()
        if n:
            log.warning(
                "RouteIQ decision log: %d records not written to Redis %s at close",
                n,
                self.config.display,
            )
            self._report_drops(n)

    def _report_drops(self, n: int) -> None:
        if self.on_drop is not None:
            try:
                self.on_drop(n)
            except Exception:
                log.exception("RouteIQ decision log: on_drop failed")


def _reason(exc: Exception) -> str:
    """The error without the command: redis-py quotes a failed pipeline command, i.e. the
    record and its prompt, which must not end up in logs."""
    message = str(exc)
    if "XADD" in message:
        _, sep, tail = message.partition("of pipeline caused error: ")
        message = tail if sep and "XADD" not in tail else "(details omitted: they quote a record)"
    return f"{type(exc).__name__}: {message[:300]}"


def read_stream(
    url: str | RedisStreamConfig, *, page_size: int = 1000, timeout_s: float = 10.0
) -> list[RouteRecord]:
    """Every record in the stream, oldest first, lines with the same id merged.

    ``url`` is the same URL as ``decision_log`` (``stream`` names the stream; ``maxlen`` and
    ``buffer`` are ignored). Blocking (the synchronous client): for offline use such as
    ``routeiq train``, not on an event loop. Raises :class:`DataError` for a missing stream,
    an unreachable server or an entry that is not a valid record.
    """
    config = url if isinstance(url, RedisStreamConfig) else RedisStreamConfig.from_url(url)
    import redis

    source = config.display
    client: Any = redis.Redis.from_url(  # responses typed loosely: bytes fields
        config.url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    parsed: list[RouteRecord] = []
    try:
        if not client.exists(config.stream):
            raise DataError(f"no stream named {config.stream!r}", source=source)
        start = "-"
        while True:
            entries = client.xrange(config.stream, min=start, max="+", count=page_size)
            for entry_id, fields in entries:
                where = f"stream entry {entry_id.decode()}"
                raw = fields.get(RECORD_FIELD.encode())
                if raw is None:
                    raise DataError(
                        f"{where} has no {RECORD_FIELD!r} field", source=source, field=RECORD_FIELD
                    )
                try:
                    parsed.append(RouteRecord.model_validate_json(raw))
                except ValidationError as exc:
                    err = exc.errors()[0]
                    loc = ".".join(str(p) for p in err["loc"]) or None
                    raise DataError(f"{where}: {err['msg']}", source=source, field=loc) from None
            if len(entries) < page_size:
                break
            start = "(" + entries[-1][0].decode()  # exclusive start (Redis >= 6.2)
    except redis.RedisError as exc:
        raise DataError(
            f"cannot read the stream: {type(exc).__name__}: {exc}", source=source
        ) from None
    finally:
        client.close()
    return merge_records(parsed)
