"""The SSRF guard's result types: :class:`UnsafeURLError` (refused) and :class:`CheckedURL`."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Every reason a URL can be refused for (UnsafeURLError.reason).
REASONS = frozenset(
    {
        "malformed",  # not a URL we can parse the same way every HTTP client does
        "scheme",  # not http or https
        "empty-host",
        "port",  # not 80, 443 or an allowed port
        "unresolvable",  # no address (DNS failure, timeout, empty answer)
        "metadata",  # a cloud metadata endpoint (by name or address); never allowed
        "loopback",
        "private",  # RFC 1918, site-local
        "unique-local",  # fc00::/7
        "link-local",
        "cgnat",  # 100.64.0.0/10 shared address space
        "unspecified",  # 0.0.0.0/8, ::
        "multicast",
        "broadcast",
        "reserved",  # 240.0.0.0/4
        "denied",  # an operator's deny_cidrs
        "not-global",  # any other address that is not globally routable
    }
)


class UnsafeURLError(ValueError):
    """A URL the SSRF guard refuses; ``reason`` is one of :data:`REASONS`.

    >>> str(UnsafeURLError("loopback", "http://127.1/", "127.0.0.1 is a loopback address"))
    'refused http://127.1/: 127.0.0.1 is a loopback address (loopback)'
    """

    def __init__(self, reason: str, url: str, detail: str) -> None:
        assert reason in REASONS, reason
        super().__init__(f"refused {url}: {detail} ({reason})")
        self.reason, self.url, self.detail = reason, url, detail


@dataclass(frozen=True)
class CheckedURL:
    """A URL that passed the guard, with the addresses it was checked for.

    Connect to one of ``addresses`` (never resolve ``host`` again: DNS rebinding), sending
    ``host`` as the Host header and TLS server name.
    """

    url: str
    scheme: str
    host: str  # normalised: lower-case ASCII (IDNA), no trailing dot; an IP in canonical form
    port: int
    addresses: tuple[IPAddress, ...]
    allowed_by: str  # "global", "allow_cidrs" or "allow_hosts"
