"""The gateway's client of the routing service: pooled, hard-timed, breaker per URL.

    client = ServiceClient(settings.service, token)
    data = await client.route(body, headers)      # Decision.to_dict() of the service
    # ServiceUnavailable (timeout, connection, 5xx, every breaker open): fall back
    # ServiceRefusal (409/400/403/429: the service decided to refuse): the caller's error

One ``aiohttp`` session per event loop with keep-alive connections (loopback p50 ~0.3 ms;
``bench/remote_decision.py``). URLs are tried round-robin; a URL whose breaker is open is
skipped; a fast failure (connection refused) moves on to the next URL within the same
``timeout_ms`` budget, which bounds the whole call.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Mapping
from typing import Any

from routeiq.service import codec
from routeiq.service.breaker import Breaker
from routeiq.service.settings import ServiceClientSettings


class ServiceUnavailable(Exception):
    """No decision from the service; ``reason`` is short and label-safe (``timeout``...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class ServiceRefusal(Exception):
    """The service answered with a refusal (a decision, not a failure)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


class ServiceClient:
    """Calls ``POST /v1/route`` on the configured URLs."""

    def __init__(
        self,
        settings: ServiceClientSettings,
        token: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.timeout_s = settings.timeout_ms / 1000.0
        self._auth = f"Bearer {token}"
        self.breakers = {
            url: Breaker(settings.breaker.failures, settings.breaker.reset_s, clock)
            for url in settings.urls
        }
        self._next = itertools.cycle(range(len(settings.urls)))
        self._session: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:  # never the token
        return f"ServiceClient(urls={self.settings.urls!r})"

    async def route(
        self, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """The service's decision (a dict); raises :class:`ServiceUnavailable` or
        :class:`ServiceRefusal`."""
        payload = codec.dumps_route_body(body)
        sent = {"authorization": self._auth, "content-type": "application/json", **(headers or {})}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        start = next(self._next)
        urls = self.settings.urls
        last: ServiceUnavailable | None = None
        tried = 0
        for k in range(len(urls)):
            url = urls[(start + k) % len(urls)]
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            breaker = self.breakers[url]
            if not breaker.allow():
                continue
            tried += 1
            try:
                result = await self._post(url + "/v1/route", payload, sent, remaining)
            except ServiceUnavailable as exc:
                breaker.record(False)
                last = exc
                if exc.reason == "timeout":
                    break  # the budget is spent
                continue
            except ServiceRefusal:
                breaker.record(True)
                raise
            breaker.record(True)
            return result
        if last is not None:
            raise last
        if tried == 0:
            raise ServiceUnavailable("breaker open", "every service URL's breaker is open")
        ms = self.settings.timeout_ms
        raise ServiceUnavailable("timeout", f"timeout after {ms:g} ms")

    async def _post(
        self, url: str, payload: bytes, headers: Mapping[str, str], timeout: float
    ) -> dict[str, Any]:
        import aiohttp

        session = await self._session_for_loop()
        try:
            async with asyncio.timeout(timeout):
                async with session.post(url, data=payload, headers=headers) as resp:
                    status = resp.status
                    raw = await resp.read()
        except TimeoutError:
            ms = self.settings.timeout_ms
            raise ServiceUnavailable("timeout", f"timeout after {ms:g} ms") from None
        except (aiohttp.ClientError, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}"[:200]
            raise ServiceUnavailable("connection", f"connection error: {detail}") from None
        try:
            data = codec.loads(raw)
        except ValueError:
            raise ServiceUnavailable("error", f"HTTP {status}: not JSON") from None
        if status == 200 and isinstance(data, dict) and "chosen" in data:
            return data
        err = data.get("error") if isinstance(data, dict) else None
        if status in (400, 403, 409, 429) and isinstance(err, dict):
            raise ServiceRefusal(status, str(err.get("type")), str(err.get("message")))
        # 401 (wrong token), 413, 422 (a schema mismatch), 5xx: the service cannot decide
        # this request; the gateway still can.
        raise ServiceUnavailable("error", f"HTTP {status}: {str(err or data)[:200]}")

    async def _session_for_loop(self) -> Any:
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            # A session belongs to one loop (LiteLLM's sync path runs a private loop per call).
            connector = aiohttp.TCPConnector(
                limit=self.settings.max_connections,
                # Below the server's keep-alive (``routeiq serve``: 75 s): a connection the
                # server already closed would cost a decision its remote answer.
                keepalive_timeout=15,
                ttl_dns_cache=60,
            )
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def close(self) -> None:
        """Close the pooled session from sync code (best effort: its loop may be gone)."""
        session, loop = self._session, self._loop
        self._session = None
        if session is None or session.closed or loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(session.close())
        elif not loop.is_running():
            loop.run_until_complete(session.close())
        else:
            asyncio.run_coroutine_threadsafe(session.close(), loop)
