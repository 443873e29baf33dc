"""httpx clients for RouteIQ's own outbound calls that connect only to checked addresses.

>>> from routeiq.security.ssrf_http import pinned_client
>>> with pinned_client(SSRFSettings(), follow_redirects=True) as client:  # doctest: +SKIP
...     client.get("https://hooks.example.com/routeiq")

Every request (and so every redirect hop: httpx sends each one through the transport) is
checked with :func:`~routeiq.security.ssrf.check_url`, and the TCP connection is opened to
the addresses that check returned, never to a second resolution of the name: a DNS answer
that changes between the check and the connect (DNS rebinding) cannot move the connection.
The connection pool, the Host header, TLS SNI and certificate verification all keep the
original host name (the pin is applied below them, in httpcore's network backend). A
refused URL raises :class:`~routeiq.security.ssrf.UnsafeURLError` from the request call.

Proxies from the environment (``HTTP_PROXY``...) are not used: the check is about where the
connection goes.
"""

from __future__ import annotations

import threading
import typing
from collections import OrderedDict
from collections.abc import Callable

import httpcore
import httpx

from routeiq.security.ssrf import Resolver, acheck_url, check_url
from routeiq.security.ssrf_errors import IPAddress
from routeiq.security.ssrf_settings import SSRFSettings

# A checked address and the URL's port -> where to open the TCP connection. Default: the
# address itself; tests map a "public" address to a local server, an egress sidecar could
# map every address to itself.
Dial = Callable[[IPAddress, int], tuple[str, int]]

_MAX_PINS = 4096
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
_DEFAULT_PORTS = {b"http": 80, b"https": 443}


class _Pins:
    """(host, port) -> the addresses its latest check allowed (bounded, thread-safe)."""

    def __init__(self) -> None:
        self._pins: OrderedDict[tuple[str, int], tuple[IPAddress, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def set(self, url: httpx.URL, addresses: tuple[IPAddress, ...]) -> None:
        key = _key(url.raw_host.decode("ascii"), url.port or _DEFAULT_PORTS[url.raw_scheme])
        with self._lock:
            self._pins[key] = addresses
            self._pins.move_to_end(key)
            while len(self._pins) > _MAX_PINS:
                self._pins.popitem(last=False)

    def targets(self, host: str, port: int, dial: Dial | None) -> list[tuple[str, int]]:
        with self._lock:
            addresses = self._pins.get(_key(host, port), ())
        if not addresses:
            # Only a request that went through the check reaches the pool: refuse the rest.
            raise httpcore.ConnectError(f"SSRF guard: {host}:{port} was not checked")
        return [dial(ip, port) if dial else (ip.compressed, port) for ip in addresses]


def _key(host: str, port: int) -> tuple[str, int]:
    return host.lower().strip("[]"), port


class _PinnedBackend(httpcore.NetworkBackend):
    def __init__(self, pins: _Pins, dial: Dial | None) -> None:
        self._pins, self._dial, self._inner = pins, dial, httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        last: Exception | None = None
        for target, target_port in self._pins.targets(host, port, self._dial):
            try:  # every checked address in order (A and AAAA), like happy eyeballs' fallback
                return self._inner.connect_tcp(
                    target, target_port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    def connect_unix_socket(self, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        raise httpcore.ConnectError("SSRF guard: unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncPinnedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, pins: _Pins, dial: Dial | None) -> None:
        self._pins, self._dial, self._inner = pins, dial, httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        last: Exception | None = None
        for target, target_port in self._pins.targets(host, port, self._dial):
            try:
                return await self._inner.connect_tcp(
                    target, target_port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        raise httpcore.ConnectError("SSRF guard: unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _pool_kwargs(
    verify: typing.Any, http2: bool, limits: httpx.Limits, retries: int
) -> dict[str, typing.Any]:
    return {
        "ssl_context": httpx.create_ssl_context(verify=verify),
        "max_connections": limits.max_connections,
        "max_keepalive_connections": limits.max_keepalive_connections,
        "keepalive_expiry": limits.keepalive_expiry,
        "http1": True,
        "http2": http2,
        "retries": retries,
    }


class PinnedTransport(httpx.HTTPTransport):
    """An ``httpx`` transport that checks each request and connects to the checked address."""

    def __init__(
        self,
        settings: SSRFSettings,
        *,
        resolver: Resolver | None = None,
        dial: Dial | None = None,
        verify: typing.Any = True,
        http2: bool = False,
        limits: httpx.Limits = _LIMITS,
        retries: int = 0,
    ) -> None:
        super().__init__(verify=verify, http2=http2, limits=limits, trust_env=False)
        self.settings, self.resolver, self._pins = settings, resolver, _Pins()
        # httpx has no public hook for the network backend: the pool is rebuilt with ours.
        self._pool = httpcore.ConnectionPool(  # type: ignore[assignment]
            network_backend=_PinnedBackend(self._pins, dial),
            **_pool_kwargs(verify, http2, limits, retries),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        checked = check_url(str(request.url), self.settings, self.resolver)
        self._pins.set(request.url, checked.addresses)
        return super().handle_request(request)


class AsyncPinnedTransport(httpx.AsyncHTTPTransport):
    """:class:`PinnedTransport` for ``httpx.AsyncClient`` (the check runs in a thread)."""

    def __init__(
        self,
        settings: SSRFSettings,
        *,
        resolver: Resolver | None = None,
        dial: Dial | None = None,
        verify: typing.Any = True,
        http2: bool = False,
        limits: httpx.Limits = _LIMITS,
        retries: int = 0,
    ) -> None:
        super().__init__(verify=verify, http2=http2, limits=limits, trust_env=False)
        self.settings, self.resolver, self._pins = settings, resolver, _Pins()
        self._pool = httpcore.AsyncConnectionPool(  # type: ignore[assignment]
            network_backend=_AsyncPinnedBackend(self._pins, dial),
            **_pool_kwargs(verify, http2, limits, retries),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        checked = await acheck_url(str(request.url), self.settings, self.resolver)
        self._pins.set(request.url, checked.addresses)
        return await super().handle_async_request(request)


_TRANSPORT_KEYS = ("transport", "mounts", "proxy", "app")


def pinned_client(
    settings: SSRFSettings,
    *,
    resolver: Resolver | None = None,
    dial: Dial | None = None,
    verify: typing.Any = True,
    **client_kwargs: typing.Any,
) -> httpx.Client:
    """An ``httpx.Client`` sending every request and redirect through :class:`PinnedTransport`."""
    _no_transport(client_kwargs)
    transport = PinnedTransport(settings, resolver=resolver, dial=dial, verify=verify)
    return httpx.Client(transport=transport, trust_env=False, **client_kwargs)


def pinned_async_client(
    settings: SSRFSettings,
    *,
    resolver: Resolver | None = None,
    dial: Dial | None = None,
    verify: typing.Any = True,
    **client_kwargs: typing.Any,
) -> httpx.AsyncClient:
    """:func:`pinned_client` for asyncio."""
    _no_transport(client_kwargs)
    transport = AsyncPinnedTransport(settings, resolver=resolver, dial=dial, verify=verify)
    return httpx.AsyncClient(transport=transport, trust_env=False, **client_kwargs)


def _no_transport(kwargs: dict[str, typing.Any]) -> None:
    bad = sorted(k for k in _TRANSPORT_KEYS if k in kwargs)
    if bad:
        raise ValueError(f"pinned clients choose their own transport; drop {', '.join(bad)}")
