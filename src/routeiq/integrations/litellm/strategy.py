"""``RouteIQRoutingStrategy``: LiteLLM's custom routing strategy, backed by the serving engine.

Installed per ``Router`` instance (``register_plugin`` on LiteLLM 1.110+, else
``set_custom_routing_strategy``); nothing is patched and nothing is kept at module level.
For every call (every model group, fallback hops and retries included) it:

1. asks LiteLLM for the healthy deployments (``router.select(..., kind="healthy")`` on
   1.110+, ``router.async_get_healthy_deployments`` before), so cooldowns, context-window
   checks, tag/team filters and ``async_filter_deployments`` keep working; a dict back means
   the caller pinned one deployment;
2. maps them to candidates (:class:`.deployments.DeploymentTable`);
3. hands them to :class:`routeiq.serving.DecisionEngine` with the deployments that already
   failed in this request, and returns the chosen deployment dict.

The request's decisions are kept in its metadata (``routeiq_decisions``: LiteLLM shares that
list between the retries and fallback hops of one request, on 1.108 and 1.110), and the
current one's id in ``routeiq_decision_id`` (read back by the outcome callback, which LiteLLM
runs before the next attempt is routed). A retry therefore sees which deployments failed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import litellm
from litellm.types.router import CustomRoutingStrategyBase

from routeiq.data.prices import estimate_request_tokens
from routeiq.integrations.litellm.deployments import DeploymentTable
from routeiq.serving.engine import DecisionEngine, NoCandidatesError, RouteRequest
from routeiq.serving.feedback import Identity
from routeiq.serving.guards import GuardRefusal
from routeiq.serving.overrides import OVERRIDE_KEY, OverrideError
from routeiq.serving.settings import ResolvedGroup

DECISIONS_KEY = "routeiq_decisions"  # metadata: every decision of the request, in order
CURRENT_KEY = "routeiq_decision_id"  # metadata: the attempt now in flight
IDENTITY_KEY = "routeiq_identity"  # metadata: the verified caller, set by the proxy callback


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


def _tags(value: Any) -> tuple[str, ...]:
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


class RouteIQRoutingStrategy(CustomRoutingStrategyBase):
    """Chooses among LiteLLM's healthy deployments with the serving engine."""

    def __init__(self, router: Any, engine: DecisionEngine, *, token: str | None = None) -> None:
        self.router = router
        self.engine = engine
        # Tags this strategy's decisions in request metadata, so that only its own callback
        # joins their outcomes when several routers share one process.
        self.token = token or uuid.uuid4().hex[:16]
        self.callback: Any = None  # set by install() when it registers the outcome callback
        self.table = DeploymentTable(engine.settings.aliases)
        # LiteLLM 1.110+ exposes select(kind=...); 1.108 the older healthy-list method.
        self._use_select = callable(getattr(router, "select", None)) and callable(
            getattr(router, "register_plugin", None)
        )

    async def async_get_available_deployment(  # type: ignore[override]  # base says None
        self,
        model: str,
        messages: list[dict[str, Any]] | None = None,
        input: str | list | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict | None = None,
    ) -> dict[str, Any]:
        request_kwargs = {} if request_kwargs is None else request_kwargs
        metadata = request_metadata(request_kwargs)
        parent = metadata.get("litellm_parent_otel_span")
        healthy = await self.healthy(model, request_kwargs, messages, input, specific_deployment)
        pinned = isinstance(healthy, Mapping)
        deps: list[Mapping[str, Any]] = [healthy] if isinstance(healthy, Mapping) else list(healthy)
        group = str(deps[0].get("model_name") or model) if pinned else model
        settings = self.engine.group(group)
        known = self._known_models(settings)
        tokens = estimate_request_tokens(messages, input)
        by_name: dict[str, Any] = {}
        candidates, upstream = [], {}
        for dep in deps:
            cand, up = self.table.candidate(dep, known, tokens, settings.estimated_output_tokens)
            candidates.append(cand)
            upstream[cand.name] = up
            by_name[cand.name] = dep
        history = own_decisions(metadata, self.token)
        failed = {
            d["deployment"]: "retry: failed earlier in this request"
            + (f" ({d['error']})" if d.get("error") else "")
            for d in history
            if d.get("status") != "success"
        }
        request = RouteRequest(
            group=group,
            candidates=candidates,
            messages=messages,
            input=input,
            override=metadata.get(OVERRIDE_KEY),
            failed=failed,
            attempt=len(history) + 1,
            pinned=pinned,
            operation="chat" if messages is not None else None,
            upstream=upstream,
            parent_span=parent,
            identity=verified_identity(metadata, self.token),
            user=request_kwargs.get("user") or metadata.get("user_api_key_end_user_id"),
            request_id=history[0]["id"] if history else None,
            tags=_tags(metadata.get("tags")),
            stream=request_kwargs.get("stream") is True,
            input_tokens=tokens,
            redact=message_logging_off(request_kwargs, metadata),
        )
        try:
            decision = await self.engine.decide(request)
        except NoCandidatesError as exc:
            raise litellm.ServiceUnavailableError(
                message=f"RouteIQ: {exc}", model=model, llm_provider=""
            ) from None
        except OverrideError as exc:
            raise litellm.BadRequestError(
                message=str(exc), model=model, llm_provider="routeiq"
            ) from None
        except GuardRefusal as exc:
            raise refusal_error(exc, model) from None
        summary = {
            "id": decision.id,
            "model": decision.model,
            "deployment": decision.chosen,
            "group": group,
            "router": decision.router,
            "outcome": decision.outcome,
            "fallback_reason": decision.fallback_reason,
            "override": decision.override,
            "variant": decision.variant,
            "propensity": decision.propensity if decision.greedy is not None else None,
            "owner": self.token,
        }
        # LiteLLM may copy the metadata dict between hops; the list object is shared, so
        # every copy sees every decision of the request.
        metadata.setdefault(DECISIONS_KEY, []).append(summary)
        metadata[CURRENT_KEY] = decision.id
        return by_name[decision.chosen]  # the router's own dict: LiteLLM reads it by identity

    def get_available_deployment(  # type: ignore[override]  # base annotates None
        self,
        model: str,
        messages: list[dict[str, Any]] | None = None,
        input: str | list | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict | None = None,
    ) -> dict[str, Any]:
        """Sync entry (``Router.completion``): runs the async path on a private event loop."""

        def run() -> dict[str, Any]:
            return asyncio.run(
                self.async_get_available_deployment(
                    model, messages, input, specific_deployment, request_kwargs
                )
            )

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return run()
        # A sync call made from inside a running loop: that loop's thread must not nest.
        with ThreadPoolExecutor(max_workers=1) as one:
            return one.submit(run).result()

    async def healthy(
        self,
        model: str,
        request_kwargs: dict,
        messages: list[dict[str, Any]] | None = None,
        input: str | list | None = None,
        specific_deployment: bool | None = False,
    ) -> list[dict[str, Any]] | dict[str, Any]:
        """LiteLLM's healthy deployments of ``model`` for this request (a dict: pinned)."""
        parent = request_metadata(request_kwargs).get("litellm_parent_otel_span")
        if self._use_select:
            return await self.router.select(
                model,
                request_kwargs,
                kind="healthy",
                messages=messages,
                input=input,
                specific_deployment=specific_deployment,
                parent_otel_span=parent,
            )
        return await self.router.async_get_healthy_deployments(
            model=model,
            request_kwargs=request_kwargs,
            messages=messages,
            input=input,
            specific_deployment=specific_deployment,
            parent_otel_span=parent,
        )

    def close(self) -> None:
        self.engine.close()

    def _known_models(self, group: ResolvedGroup) -> list[str]:
        if group.mode != "route":
            return []
        learned = self.engine.registry.get(group.router)
        return learned.models_ if learned is not None else []
