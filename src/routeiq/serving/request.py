"""``RouteRequest``: one decision to make, as every front end hands it to the engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from routeiq.features.context import gateway_context
from routeiq.router import Candidate
from routeiq.serving.feedback import Identity


@dataclass(frozen=True)
class RouteRequest:
    """One decision to make. ``failed`` maps candidates that failed earlier in this request
    to the reason; ``upstream`` maps candidates to the provider model they call (spans)."""

    group: str
    candidates: Sequence[Candidate]
    messages: Any = None
    input: Any = None
    override: Any = None
    failed: Mapping[str, str] = field(default_factory=dict)
    attempt: int = 1
    pinned: bool = False
    operation: str | None = None
    upstream: Mapping[str, str] = field(default_factory=dict)
    parent_span: Any = None
    identity: Identity | None = None  # the verified caller (feedback authorization)
    user: str | None = None  # the end user (experiment unit)
    request_id: str | None = None  # the first decision id of the request (retries)
    tags: tuple[str, ...] = ()  # the request's tags (LiteLLM ``metadata.tags``)
    stream: bool | None = None
    input_tokens: int | None = None  # estimated, of the whole request
    redact: bool = False  # the caller asked that no message text be logged (LiteLLM's
    # turn_off_message_logging): the decision log keeps at most the features
    # Context fields besides the gateway's own (routeiq.features.context), already filtered
    # by the front end: a client may set ``task``, never ``team``.
    context: Mapping[str, Any] = field(default_factory=dict)

    def routing_context(self) -> dict[str, Any]:
        """The request's context: its tags, verified team, key alias and key hash, end user
        and system-prompt hash, over :attr:`context`."""
        ident = self.identity
        return gateway_context(
            tags=self.tags,
            team=ident.team_id if ident else None,
            key_alias=ident.key_alias if ident else None,
            key=ident.key_hash if ident else None,
            user=self.user,
            messages=self.messages,
            extra=self.context,
        )
