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
from routeiq.features.context import client_context
from routeiq.integrations.litellm.deployments import DeploymentTable
from routeiq.integrations.litellm.request_fields import (
    CONTEXT_KEY,
    CURRENT_KEY,
    DECISIONS_KEY,
    conversation_tokens,
    message_logging_off,
    own_decisions,
    refusal_error,
    request_metadata,
    request_tags,
    verified_identity,
)
from routeiq.serving.engine import DecisionEngine, NoCandidatesError
from routeiq.serving.guards import GuardRefusal
from routeiq.serving.overrides import OVERRIDE_KEY, OverrideError
from routeiq.serving.request import RouteRequest
from routeiq.serving.settings import ResolvedGroup


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
        cached = conversation_tokens(messages, tokens)
        by_name: dict[str, Any] = {}
        candidates, upstream = [], {}
        for dep in deps:
            cand, up = self.table.candidate(
                dep, known, tokens, settings.estimated_output_tokens, cached
            )
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
            tags=request_tags(metadata.get("tags")),
            stream=request_kwargs.get("stream") is True,
            input_tokens=tokens,
            redact=message_logging_off(request_kwargs, metadata),
            context=client_context(metadata.get(CONTEXT_KEY)),
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
