"""The deny effect on the LiteLLM proxy: refuse a request before routing, as a 403.

    deny_by_policy(engine, identity_from_auth(user_api_key_dict), data, call_type)

Called from the proxy callback's ``async_pre_call_hook`` with the identity LiteLLM's auth
verified. A denied request raises LiteLLM's ``ProxyException`` (which the proxy returns
as is): status 403, ``{"error": {"message": "RouteIQ: denied by policy forbid-x ...", "type":
"permission_error", "param": null, "code": "403"}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from routeiq.security.policy import PolicyDenied, PolicyEngine, PolicyGuard, action_for_call_type
from routeiq.serving.feedback import Identity


def policy_engine_of(decision_engine: Any) -> PolicyEngine | None:
    """The policy engine a decision engine's guards use (None: no policies configured)."""
    guards = getattr(getattr(decision_engine, "guards", None), "all", ())
    return next((g.engine for g in guards if isinstance(g, PolicyGuard)), None)


def _metadata(data: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("metadata", "litellm_metadata"):
        value = data.get(key)
        if isinstance(value, Mapping):
            return value
    return {}


def _tags(data: Mapping[str, Any]) -> list[str]:
    tags = _metadata(data).get("tags") or data.get("tags")
    if not isinstance(tags, list | tuple):
        return []
    return [str(t) for t in tags[:64] if isinstance(t, str | int)]


def request_context(engine: PolicyEngine, data: Mapping[str, Any]) -> dict[str, Any]:
    """The policy context of a proxy request body (tags, estimated tokens, stream, time)."""
    from routeiq.data.prices import estimate_request_tokens

    tokens = estimate_request_tokens(data.get("messages"), data.get("input"))
    return engine.context(_tags(data), tokens, data.get("stream") is True)


def deny_by_policy(
    decision_engine: Any, identity: Identity, data: Mapping[str, Any], call_type: Any
) -> None:
    """Raise LiteLLM's 403 ``ProxyException`` when the policies deny this request."""
    engine = policy_engine_of(decision_engine)
    model = data.get("model")
    if engine is None or not isinstance(model, str):
        return
    action = action_for_call_type(call_type)
    try:
        engine.check_request(identity, action, model, request_context(engine, data))
    except PolicyDenied as exc:
        from litellm.proxy._types import ProxyException

        raise ProxyException(
            message=str(exc), type="permission_error", param=None, code=403
        ) from None
