"""What RouteIQ reads from, and keeps in, a LiteLLM request: its metadata entries (this
strategy's decisions, the verified caller), LiteLLM's message-logging switches, the tokens a
follow-up turn has in the prompt cache, and guard refusals as LiteLLM's exceptions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import litellm

from routeiq.data.prices import estimate_tokens
from routeiq.data.prompts import PromptError, opening_text, request_text
from routeiq.serving.feedback import Identity
from routeiq.serving.guards import GuardRefusal

DECISIONS_KEY = "routeiq_decisions"  # metadata: every decision of the request, in order
CURRENT_KEY = "routeiq_decision_id"  # metadata: the attempt now in flight
IDENTITY_KEY = "routeiq_identity"  # metadata: the verified caller, set by the proxy callback
CONTEXT_KEY = "routeiq_context"  # metadata: a client's own context fields (e.g. task)


def request_metadata(request_kwargs: dict) -> dict:
    for key in ("metadata", "litellm_metadata"):
        value = request_kwargs.get(key)
        if isinstance(value, dict):
            return value
    request_kwargs["metadata"] = {}
    return request_kwargs["metadata"]


_REDACTION_HEADERS = ("x-litellm-enable-message-redaction", "litellm-enable-message-redaction")


def message_logging_off(request_kwargs: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
    """Whether LiteLLM's message logging is off for this request: the global
    ``turn_off_message_logging``, the request's own, or a redaction header. Stricter than
    LiteLLM: a request can turn it on, never off (the decision log keeps no text then)."""
    if getattr(litellm, "turn_off_message_logging", False) is True:
        return True
    own = request_kwargs.get("turn_off_message_logging")
    if own is True or (isinstance(own, str) and own.strip().lower() in ("true", "1", "yes")):
        return True
    headers = metadata.get("headers")
    if isinstance(headers, Mapping):
        lowered = {str(k).lower(): v for k, v in headers.items()}
        return any(
            str(lowered.get(h, "")).lower() in ("true", "1", "yes") for h in _REDACTION_HEADERS
        )
    return False


def conversation_tokens(messages: Any, tokens: int) -> int:
    """Input tokens before a follow-up turn's last user message (what a provider's prompt
    cache holds when the conversation stays put); 0 for an opening turn."""
    if opening_text(messages) is None:
        return 0
    try:
        return max(tokens - estimate_tokens(request_text(messages)), 0)
    except PromptError:
        return 0


def request_tags(value: Any) -> tuple[str, ...]:
    """LiteLLM ``metadata.tags`` as strings (at most 64)."""
    if not isinstance(value, list | tuple):
        return ()
    return tuple(str(t) for t in value[:64] if isinstance(t, str | int))


def verified_identity(metadata: Mapping[str, Any] | None, owner: str) -> Identity | None:
    """The caller identity the proxy callback stored from LiteLLM's auth (a client-sent
    entry lacks the owner token and is ignored); None outside the proxy."""
    entry = (metadata or {}).get(IDENTITY_KEY)
    if not isinstance(entry, Mapping) or entry.get("owner") != owner:
        return None
    return Identity(
        key_hash=entry.get("key_hash"),
        team_id=entry.get("team_id"),
        user_id=entry.get("user_id"),
        role=entry.get("role"),
        team_admin=entry.get("team_admin") is True,
        key_alias=entry.get("key_alias"),
        org_id=entry.get("org_id"),
    )


def refusal_error(exc: GuardRefusal, model: str) -> Exception:
    """A guard's refusal as the LiteLLM exception of its status, which the proxy answers with
    (403: ``PermissionDeniedError``; 429: ``RateLimitError``; else ``ServiceUnavailableError``)."""
    import httpx

    status = exc.status_code
    response = httpx.Response(status, request=httpx.Request("POST", "http://routeiq.invalid"))
    kind = {403: litellm.PermissionDeniedError, 429: litellm.RateLimitError}.get(status)
    if kind is None:
        return litellm.ServiceUnavailableError(message=str(exc), model=model, llm_provider="")
    return kind(message=str(exc), model=model, llm_provider="routeiq", response=response)


def own_decisions(metadata: Mapping[str, Any] | None, owner: str) -> list[dict[str, Any]]:
    """This strategy's decision summaries in a request's metadata, oldest first (entries a
    client could have sent in its own metadata lack the owner token and are ignored)."""
    entries = (metadata or {}).get(DECISIONS_KEY)
    if not isinstance(entries, list):
        return []
    return [d for d in entries if isinstance(d, dict) and d.get("owner") == owner]
