"""SSRF guard: may RouteIQ (or LiteLLM, for a deployment) connect to this URL?

>>> from routeiq.security.ssrf import SSRFSettings, check_url
>>> check_url("http://10.0.0.5:8000/v1", SSRFSettings(allow_cidrs=["10.0.0.0/24"],
...           allow_ports=[8000])).addresses
(IPv4Address('10.0.0.5'),)
>>> check_url("http://0x7f.1/", SSRFSettings())
Traceback (most recent call last):
...
routeiq.security.ssrf_errors.UnsafeURLError: refused http://0x7f.1/: 127.0.0.1 is a loopback ...

Rules (in the spirit of Stripe's Smokescreen): http(s) only, on ports 80, 443 and
``allow_ports``; the host is normalised (:mod:`routeiq.security.ssrf_host`), resolved once,
and EVERY address it resolves to (A and AAAA) must be globally routable unicast
(:mod:`routeiq.security.ssrf_rules`, IPv4 embedded in IPv6 unwrapped), unless it is in
``allow_cidrs`` or the name is in ``allow_hosts``. Cloud metadata endpoints are refused
whatever the allow-lists say; ``deny_cidrs`` win over ``allow_cidrs``.

The check's result carries the addresses it checked: connect to those
(:mod:`routeiq.security.ssrf_http` does), never to a second resolution of the name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Callable, Sequence

from routeiq.security.ssrf_errors import CheckedURL, IPAddress, UnsafeURLError
from routeiq.security.ssrf_host import parse_url
from routeiq.security.ssrf_rules import address_problem, is_metadata, name_problem
from routeiq.security.ssrf_settings import IPNetwork, SSRFSettings

__all__ = [
    "CheckedURL",
    "Resolver",
    "SSRFSettings",
    "SystemResolver",
    "UnsafeURLError",
    "acheck_url",
    "check_url",
]

# (host, port) -> addresses; raise OSError (or return nothing) when the name does not resolve.
Resolver = Callable[[str, int], Sequence[str | IPAddress]]


class SystemResolver:
    """``getaddrinfo`` (A and AAAA), bounded by a timeout.

    >>> SystemResolver(timeout_s=2.0)("localhost", 80)  # doctest: +SKIP
    [IPv4Address('127.0.0.1'), IPv6Address('::1')]
    """

    def __init__(self, timeout_s: float = 2.0) -> None:
        self.timeout_s = timeout_s

    def __call__(self, host: str, port: int) -> list[IPAddress]:
        result: list[IPAddress] = []
        error: list[BaseException] = []

        def run() -> None:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                for family, _, _, _, sockaddr in infos:
                    if family in (socket.AF_INET, socket.AF_INET6):
                        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
                        if ip not in result:
                            result.append(ip)
            except (OSError, UnicodeError, ValueError) as exc:
                error.append(exc)

        # getaddrinfo has no timeout of its own: wait for it in a daemon thread.
        thread = threading.Thread(target=run, name="routeiq-ssrf-resolve", daemon=True)
        thread.start()
        thread.join(self.timeout_s)
        if thread.is_alive():
            raise TimeoutError(f"DNS resolution took longer than {self.timeout_s:g} s")
        if error:
            raise error[0]
        return result


def check_url(url: str, settings: SSRFSettings, resolver: Resolver | None = None) -> CheckedURL:
    """Check ``url``; the addresses to connect to, or :class:`UnsafeURLError` with the reason.

    ``resolver`` resolves host names (default: :class:`SystemResolver`); IP literals need none.
    Runs even when ``settings.enabled`` is false (that flag is for the LiteLLM integration).
    """
    parsed = parse_url(url)
    shown = url if len(url) <= 200 else url[:200] + "..."
    if parsed.port not in settings.ports:
        allowed = ", ".join(str(p) for p in sorted(settings.ports))
        raise UnsafeURLError(
            "port",
            shown,
            f"port {parsed.port} is not allowed (allowed: {allowed}; ssrf.allow_ports)",
        )
    if isinstance(parsed.host, str):
        host = parsed.host
        problem = name_problem(host)
        if problem is not None and (problem[0] == "metadata" or not settings.host_allowed(host)):
            raise UnsafeURLError(problem[0], shown, problem[1])
        addresses = _resolve(host, parsed.port, settings, resolver, shown)
        by_name = settings.host_allowed(host)
    else:
        host, addresses, by_name = parsed.host.compressed, (parsed.host,), False
    allowed_by = "global"  # the rule that let the last non-global address through
    for ip in addresses:
        if is_metadata(ip):
            raise UnsafeURLError(
                "metadata", shown, _via(f"{ip} is a cloud metadata endpoint", host, ip)
            )
        problem = address_problem(ip, settings.deny_cidrs)
        if problem is None:
            continue
        if problem[0] != "denied" and by_name:
            allowed_by = "allow_hosts"
        elif problem[0] != "denied" and _in(ip, settings.allow_cidrs):
            allowed_by = "allow_cidrs"
        else:
            raise UnsafeURLError(problem[0], shown, _via(problem[1], host, ip))
    return CheckedURL(
        url=url,
        scheme=parsed.scheme,
        host=host,
        port=parsed.port,
        addresses=addresses,
        allowed_by=allowed_by,
    )


async def acheck_url(
    url: str, settings: SSRFSettings, resolver: Resolver | None = None
) -> CheckedURL:
    """:func:`check_url` off the event loop (DNS resolution blocks)."""
    return await asyncio.to_thread(check_url, url, settings, resolver)


def _in(ip: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


def _via(detail: str, host: str, ip: IPAddress) -> str:
    return detail if host == ip.compressed else f"{host} resolves to {detail}"


def _resolve(
    host: str, port: int, settings: SSRFSettings, resolver: Resolver | None, shown: str
) -> tuple[IPAddress, ...]:
    resolve = resolver if resolver is not None else SystemResolver(settings.resolve_timeout_s)
    try:
        answers = resolve(host, port)
    except (OSError, UnicodeError, ValueError) as exc:  # TimeoutError is an OSError
        raise UnsafeURLError("unresolvable", shown, f"{host} does not resolve: {exc}") from None
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            ip = ipaddress.ip_address(answer)
        except ValueError:
            raise UnsafeURLError(
                "unresolvable", shown, f"{host}: the resolver answered {answer!r}, not an address"
            ) from None
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise UnsafeURLError("unresolvable", shown, f"{host} resolves to no address")
    return tuple(addresses)
