"""LiteLLM callback: joins outcomes with decisions, counts them, and adds ``x-routeiq-*`` headers.

Outcomes come from ``kwargs["standard_logging_object"]`` of LiteLLM's success and failure
events (one per attempt): ``response_cost`` (USD), ``response_time`` (seconds) and ``status``.
The decision they belong to is found through the ``routeiq_decisions`` list the strategy
keeps in the request metadata (one entry per decision: retries and fallback hops add one).

Response headers (proxy, through ``async_post_call_response_headers_hook``):
``x-routeiq-model`` (the model the router chose), ``x-routeiq-deployment``,
``x-routeiq-router`` (artifact digest), ``x-routeiq-decision-id`` (the record id to send
feedback to), ``x-routeiq-outcome`` (routed / fallback / pinned / cheapest / shuffle), and
when relevant ``x-routeiq-fallback-reason`` and ``x-routeiq-override``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from routeiq.integrations.litellm.decision_log import DecisionLog
from routeiq.telemetry.metrics import RouteIQMetrics

log = logging.getLogger(__name__)

DECISIONS_KEY = "routeiq_decisions"  # metadata: every decision of the request, in order


def _metadata_with(kwargs: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    for place in (kwargs, kwargs.get("litellm_params") or {}):
        for name in ("metadata", "litellm_metadata"):
            meta = place.get(name)
            if isinstance(meta, Mapping) and meta.get(key) is not None:
                return meta
    return None


def decisions_of(kwargs: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every decision summary of a request, oldest first."""
    meta = _metadata_with(kwargs, DECISIONS_KEY)
    return list(meta[DECISIONS_KEY]) if meta is not None else []


def decision_headers(decision: Mapping[str, Any]) -> dict[str, str]:
    """``x-routeiq-*`` response headers for a decision summary."""
    headers = {
        "x-routeiq-model": decision.get("model"),
        "x-routeiq-deployment": decision.get("deployment"),
        "x-routeiq-router": decision.get("router"),
        "x-routeiq-decision-id": decision.get("id"),
        "x-routeiq-outcome": decision.get("outcome"),
        "x-routeiq-fallback-reason": decision.get("fallback_reason"),
        "x-routeiq-override": decision.get("override"),
    }
    # Header values must be latin-1 single-line text.
    return {
        k: str(v)
        .replace("\r", " ")
        .replace("\n", " ")
        .encode("latin-1", "replace")
        .decode("latin-1")
        for k, v in headers.items()
        if v is not None
    }


class RouteIQCallback(CustomLogger):
    """Outcome join + outcome metrics + response headers, for one decision log/metrics pair."""

    def __init__(
        self,
        owner: str,
        decision_log: DecisionLog | None = None,
        metrics: RouteIQMetrics | None = None,
        response_headers: bool = True,
    ) -> None:
        super().__init__()
        # ``owner`` is the strategy's token: each callback handles only its own strategy's
        # decisions. Being a plain string attribute it also keeps LiteLLM's callback
        # de-duplication (by class and primitive attributes) from dropping a second instance.
        self.owner = owner
        self.decision_log = decision_log
        self.metrics = metrics
        self.response_headers = response_headers

    async def async_log_success_event(
        self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._outcome(kwargs, default_status="success")

    async def async_log_failure_event(
        self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._outcome(kwargs, default_status="failure")

    async def async_post_call_response_headers_hook(
        self,
        data: dict,
        user_api_key_dict: Any,
        response: Any,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, object] | None = None,
    ) -> dict[str, str] | None:
        if not self.response_headers:
            return None
        mine = [d for d in decisions_of(data) if d.get("owner") == self.owner]
        if not mine:
            return None
        # A fallback hop may run on a copy of the request metadata; the decision list is
        # shared, so pick the latest decision for the deployment that actually answered.
        served = (litellm_call_info or {}).get("model_id") or getattr(
            response, "_hidden_params", {}
        ).get("model_id")
        matching = [d for d in mine if served is not None and d.get("deployment") == str(served)]
        return decision_headers((matching or mine)[-1])

    def _outcome(self, kwargs: Mapping[str, Any], default_status: str) -> None:
        # A logging callback must never break the request path: log and carry on.
        try:
            slo = kwargs.get("standard_logging_object") or {}
            served = slo.get("model_id")
            if served is None:
                return
            served = str(served)
            status = str(slo.get("status") or default_status)
            mine = [d for d in decisions_of(kwargs) if d.get("owner") == self.owner]
            if self.metrics is not None and mine:
                group = str(slo.get("model_group") or "")
                self.metrics.observe_outcome(group, served, status)
            if self.decision_log is None:
                return
            # Callbacks run in the background, possibly after a retry or fallback already
            # added a newer decision: join with the oldest still-open decision for the
            # deployment that actually served this attempt.
            for decision in mine:
                if decision.get("deployment") == served and self.decision_log.is_pending(
                    str(decision["id"])
                ):
                    response_time = slo.get("response_time")
                    self.decision_log.add_outcome(
                        str(decision["id"]),
                        cost=slo.get("response_cost") if status == "success" else None,
                        latency_ms=None if response_time is None else float(response_time) * 1e3,
                        status=status,
                    )
                    return
        except Exception:
            log.exception("RouteIQ: could not record an outcome")
