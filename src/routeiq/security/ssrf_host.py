"""Split a URL the way HTTP clients do, and normalise its host before it is checked.

>>> parse_url("http://0x7f.1:8000/v1").host
IPv4Address('127.0.0.1')

Anything two parsers could read differently is refused as ``malformed`` rather than guessed:
whitespace or control characters, a backslash, more than one ``@``, a percent-encoded host, a
numeric-looking host that is not a valid IPv4 address (``1.2.3.256``, ``foo.1``). IPv4 in the
shorthand forms ``getaddrinfo`` and browsers accept (``2130706433``, ``0x7f.1``,
``0177.0.0.1``, ``127.1``) is normalised to the address it means, names go through IDNA
(UTS #46: ``ⓛocalhost`` is ``localhost``, fullwidth digits are digits) and lose one trailing
dot.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from routeiq.security.ssrf_errors import IPAddress, UnsafeURLError

SCHEMES = {"http": 80, "https": 443}
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_NUMERIC = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


@dataclass(frozen=True)
class ParsedURL:
    scheme: str
    host: str | IPAddress  # a normalised name, or the address an IP literal means
    port: int


def parse_url(url: str) -> ParsedURL:
    """Scheme, normalised host and port of ``url``; :class:`UnsafeURLError` when unusable."""
    if not isinstance(url, str):
        raise UnsafeURLError("malformed", repr(url), f"not a string ({type(url).__name__})")
    shown = url if len(url) <= 200 else url[:200] + "..."
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise UnsafeURLError("malformed", shown, "no scheme:// (e.g. https://host/)")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise UnsafeURLError("scheme", shown, f"scheme {scheme!r} is not http or https")
    if _BAD_CHARS.search(url):
        raise UnsafeURLError("malformed", shown, "whitespace, control character or backslash")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if authority.count("@") > 1:
        raise UnsafeURLError("malformed", shown, "more than one '@' in the authority")
    hostport = authority.rpartition("@")[2]
    if not hostport:
        raise UnsafeURLError("empty-host", shown, "no host")
    host_text, port = _split_port(hostport, scheme, shown)
    if not host_text:
        raise UnsafeURLError("empty-host", shown, "no host")
    return ParsedURL(scheme, _host(host_text, shown), port)


def _split_port(hostport: str, scheme: str, shown: str) -> tuple[str, int]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise UnsafeURLError("malformed", shown, "unclosed '[' in the host")
        host_text, tail = hostport[: end + 1], hostport[end + 1 :]
        if tail and not tail.startswith(":"):
            raise UnsafeURLError("malformed", shown, "text after ']' in the host")
        port_text = tail[1:] if tail else ""
    else:
        if hostport.count(":") > 1:
            raise UnsafeURLError("malformed", shown, "an IPv6 address must be in [brackets]")
        host_text, _, port_text = hostport.partition(":")
    if not port_text:
        return host_text, SCHEMES[scheme]
    if not port_text.isdigit() or not port_text.isascii() or not 1 <= int(port_text) <= 65535:
        raise UnsafeURLError("malformed", shown, f"invalid port {port_text!r}")
    return host_text, int(port_text)


def _host(text: str, shown: str) -> str | IPAddress:
    if text.startswith("["):
        inner = text[1:-1].replace("%25", "%")  # RFC 6874 zone id: fe80::1%25eth0
        try:
            return ipaddress.IPv6Address(inner)
        except ValueError:
            raise UnsafeURLError("malformed", shown, f"invalid IPv6 address {inner!r}") from None
    if "%" in text:
        raise UnsafeURLError("malformed", shown, "percent-encoded host")
    name = normalise_name(text)
    if name is None:
        raise UnsafeURLError("malformed", shown, f"invalid host name {text!r}")
    try:
        ip = parse_ipv4(name)
    except ValueError as exc:
        raise UnsafeURLError(
            "malformed", shown, f"ambiguous numeric host {text!r}: {exc}"
        ) from None
    return ip if ip is not None else name


def normalise_name(text: str) -> str | None:
    """Lower-case ASCII form of a host name (IDNA, one trailing dot dropped); None if invalid."""
    import idna

    try:
        name = idna.uts46_remap(text, std3_rules=False, transitional=False)
    except (idna.IDNAError, UnicodeError):
        return None
    name = name.removesuffix(".")
    if not name or len(name) > 253:
        return None
    labels = []
    for label in name.split("."):
        if not label.isascii():
            try:
                label = idna.encode(label, uts46=False).decode("ascii")
            except (idna.IDNAError, UnicodeError):
                return None
        if not _LABEL.match(label):
            return None
        labels.append(label)
    return ".".join(labels)


def parse_ipv4(name: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host means in any inet_aton form; None for a name.

    >>> parse_ipv4("2130706433"), parse_ipv4("0177.1")
    (IPv4Address('127.0.0.1'), IPv4Address('127.0.0.1'))

    A host whose last label is a number must be an address (WHATWG URL rule): ``ValueError``
    otherwise.
    """
    parts = name.split(".")
    if not _NUMERIC.match(parts[-1]):
        return None
    if len(parts) > 4:
        raise ValueError("more than 4 parts")
    nums = [_ipv4_part(p) for p in parts]
    if any(n > 255 for n in nums[:-1]) or nums[-1] >= 256 ** (5 - len(nums)):
        raise ValueError("a part is out of range")
    value = nums[-1]
    for i, n in enumerate(nums[:-1]):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _ipv4_part(part: str) -> int:
    if not _NUMERIC.match(part):
        raise ValueError(f"{part!r} is not a number")
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)  # ValueError on 8 or 9
    return int(part)
