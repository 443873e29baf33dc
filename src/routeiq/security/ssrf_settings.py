"""``ssrf:`` in ``routeiq_settings``: which outbound URLs RouteIQ lets through.

.. code-block:: yaml

    routeiq_settings:
      ssrf:
        enabled: true
        allow_cidrs: [10.0.0.0/24]     # a private vLLM on 10.0.0.5
        allow_hosts: [vllm.internal]   # or by name (``*.svc.cluster.local`` matches subdomains)
        allow_ports: [8000]            # besides 80 and 443
        allow_client_base_url: false   # per-request api_base/base_url from clients

Off by default (``enabled: false``): a config without an ``ssrf:`` section behaves exactly
as before. See :mod:`routeiq.security.ssrf` and ``docs/ssrf.md``.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Port = Annotated[int, Field(ge=1, le=65535)]

DEFAULT_PORTS = frozenset({80, 443})


class SSRFSettings(BaseModel):
    """Outbound URL policy: globally routable addresses on ports 80/443, plus what is allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=False,
        description="check every deployment api_base at start-up and on reload, and refuse "
        "per-request api_base/base_url (off: no checks, stock LiteLLM behaviour)",
    )
    allow_cidrs: tuple[IPNetwork, ...] = Field(
        default=(),
        description="address ranges allowed although not globally routable (private model "
        "servers); cloud metadata endpoints stay refused",
    )
    allow_hosts: tuple[str, ...] = Field(
        default=(),
        description="host names allowed whatever they resolve to (except metadata endpoints); "
        "'*.example.internal' matches every subdomain",
    )
    allow_ports: tuple[Port, ...] = Field(
        default=(), description="ports allowed besides 80 and 443"
    )
    deny_cidrs: tuple[IPNetwork, ...] = Field(
        default=(),
        description="extra ranges to refuse even when globally routable (wins over allow_cidrs)",
    )
    allow_client_base_url: bool = Field(
        default=False,
        description="let clients send api_base/base_url per request (each is then checked like "
        "a deployment's); false: such requests get a 403",
    )
    resolve_timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="DNS resolution timeout per check"
    )

    @field_validator("allow_cidrs", "deny_cidrs", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            return value
        out = []
        for item in value:
            try:
                # strict=False: "10.0.0.5/24" means its network, as operators tend to write it.
                out.append(ipaddress.ip_network(str(item), strict=False))
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an address range (CIDR): {exc}") from None
        return tuple(out)

    @field_validator("allow_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            return value
        from routeiq.security.ssrf_host import normalise_name

        out = []
        for item in value:
            text = str(item).strip()
            wildcard = text.startswith("*.")
            name = normalise_name(text[2:] if wildcard else text)
            if name is None:
                raise ValueError(f"{item!r} is not a host name (or '*.domain')")
            out.append(f"*.{name}" if wildcard else name)
        return tuple(out)

    @property
    def ports(self) -> frozenset[int]:
        """Every allowed port."""
        return DEFAULT_PORTS | frozenset(self.allow_ports)

    def host_allowed(self, host: str) -> bool:
        """Whether a normalised host name is on the allow-list (exact or ``*.`` suffix)."""
        for pattern in self.allow_hosts:
            if pattern.startswith("*."):
                if host.endswith(pattern[1:]):
                    return True
            elif host == pattern:
                return True
        return False
