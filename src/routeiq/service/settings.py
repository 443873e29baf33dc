"""``service:`` in ``routeiq_settings``: decide through the routing service.

.. code-block:: yaml

    routeiq_settings:
      router: ./router              # the local artifact: on_failure: local decides with it
      service:
        urls: [http://routeiq-a:8080, http://routeiq-b:8080]
        timeout_ms: 20              # hard bound on one remote decision, connection included
        on_failure: local           # local | cheapest | error (fail closed: a 503)
        token_env: ROUTEIQ_SERVICE_TOKEN

A separate field (not a URL in ``router:``) keeps ``router:`` one meaning, the artifact, which
the local fallback needs anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

OnFailure = Literal["local", "cheapest", "error"]


class ServiceBreakerSettings(BaseModel):
    """``service.breaker``: a consecutive-failure breaker per service URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: int = Field(
        default=3, ge=1, le=1000, description="consecutive failures that open the breaker"
    )
    reset_s: float = Field(
        default=2.0, gt=0, le=3600, description="seconds open before one trial call is let through"
    )


class ServiceClientSettings(BaseModel):
    """Where the routing service runs and what to do when it does not answer in time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    urls: Annotated[list[str], Field(min_length=1, max_length=64)] = Field(
        description="base URLs of service replicas (http[s]://host:port), used round-robin"
    )
    timeout_ms: float = Field(
        default=20.0, gt=0, le=10_000, description="hard timeout of one remote decision"
    )
    on_failure: OnFailure = Field(
        default="local",
        description="on timeout, error or an open breaker: local (the in-process engine), "
        "cheapest (the cheapest healthy deployment) or error (fail closed: 503)",
    )
    token_env: str = Field(
        default="ROUTEIQ_SERVICE_TOKEN",
        min_length=1,
        description="environment variable holding the service's bearer token",
    )
    token_file: Path | None = Field(
        default=None, description="file holding the bearer token (wins over token_env)"
    )
    max_connections: int = Field(
        default=64, ge=1, le=10_000, description="pooled keep-alive connections per worker"
    )
    breaker: ServiceBreakerSettings = Field(
        default_factory=ServiceBreakerSettings, description="client-side breaker per URL"
    )

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        out = []
        for url in value:
            if not url.startswith(("http://", "https://")) or len(url) < 10:
                raise ValueError(f"service URL {url!r} must be http://host:port or https://...")
            out.append(url.rstrip("/"))
        return out
