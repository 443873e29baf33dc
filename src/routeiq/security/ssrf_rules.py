"""Which addresses and names the SSRF guard refuses, and why.

>>> address_problem(ipaddress.ip_address("::ffff:127.0.0.1"))
('loopback', '127.0.0.1 (embedded in ::ffff:7f00:1) is a loopback address')
>>> address_problem(ipaddress.ip_address("8.8.8.8")) is None
True

Only globally routable unicast passes: ``ipaddress``'s ``is_global`` plus explicit deny
ranges it lets through (multicast, 6to4/NAT64/IPv4-mapped forms of bad IPv4 addresses, the
metadata endpoints some clouds put on public-looking addresses).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from routeiq.security.ssrf_errors import IPAddress
from routeiq.security.ssrf_settings import IPNetwork

# Cloud metadata and host-agent endpoints: refused even inside an allowed range (an operator
# allowing 100.64.0.0/10 for a mesh VPN must not open Alibaba's metadata service).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS VPC DNS
        "169.254.169.123",  # AWS time sync
        "fd00:ec2::254",  # AWS IPv6 metadata
        "fd00:ec2::253",  # AWS IPv6 DNS
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
        "192.0.0.192",  # Oracle Cloud
    )
)
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
        "100-100-100-200.aliyun.com",
    }
)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

# Checked in order; the first range an address falls in names the reason.
_RANGES: tuple[tuple[str, IPNetwork, str], ...] = tuple(
    (reason, ipaddress.ip_network(net), what)
    for reason, net, what in (
        ("unspecified", "0.0.0.0/8", "an unspecified ('this network') address"),
        ("loopback", "127.0.0.0/8", "a loopback address"),
        ("private", "10.0.0.0/8", "a private address"),
        ("private", "172.16.0.0/12", "a private address"),
        ("private", "192.168.0.0/16", "a private address"),
        ("cgnat", "100.64.0.0/10", "a carrier-grade NAT (shared) address"),
        ("link-local", "169.254.0.0/16", "a link-local address"),
        ("multicast", "224.0.0.0/4", "a multicast address"),
        ("broadcast", "255.255.255.255/32", "the broadcast address"),
        ("reserved", "240.0.0.0/4", "a reserved address"),
        ("unspecified", "::/128", "the unspecified address"),
        ("loopback", "::1/128", "a loopback address"),
        ("link-local", "fe80::/10", "a link-local address"),
        ("private", "fec0::/10", "a site-local address"),
        ("unique-local", "fc00::/7", "a unique-local address"),
        ("multicast", "ff00::/8", "a multicast address"),
        ("not-global", "64:ff9b:1::/48", "a local-use NAT64 address"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPAT = ipaddress.IPv6Network("::/96")


def name_problem(host: str) -> tuple[str, str] | None:
    """(reason, detail) when a normalised host name is refused by name."""
    if host in METADATA_NAMES:
        return "metadata", f"{host} is a cloud metadata endpoint"
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return "loopback", f"{host} names the local host"
    return None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _NAT64 or (ip in _COMPAT and int(ip) > 1):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)  # (server, client); the client is de-obfuscated by ipaddress
    return []


def is_metadata(ip: IPAddress) -> bool:
    """Whether ``ip`` (or the IPv4 address it embeds) is a cloud metadata endpoint."""
    if ip in METADATA_ADDRESSES:
        return True
    return isinstance(ip, ipaddress.IPv6Address) and any(
        v4 in METADATA_ADDRESSES for v4 in embedded_ipv4(ip)
    )


def address_problem(ip: IPAddress, deny: Iterable[IPNetwork] = ()) -> tuple[str, str] | None:
    """(reason, detail) when ``ip`` is not a globally routable unicast address; else None."""
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ip.__class__(ip.compressed.split("%")[0])  # a zone id changes nothing here
        for v4 in embedded_ipv4(ip):
            inner = address_problem(v4, deny)
            if inner is not None:
                return inner[0], f"{v4} (embedded in {ip}) {inner[1].partition(' ')[2]}"
        if ip.ipv4_mapped is not None or ip in _NAT64:
            return None  # it reaches exactly the (good) IPv4 address it carries
    if ip in METADATA_ADDRESSES:
        return "metadata", f"{ip} is a cloud metadata endpoint"
    for net in deny:
        if ip.version == net.version and ip in net:
            return "denied", f"{ip} is in the denied range {net}"
    for reason, net, what in _RANGES:
        if ip.version == net.version and ip in net:
            return reason, f"{ip} is {what}"
    if not ip.is_global:
        return "not-global", f"{ip} is not a globally routable address"
    return None
