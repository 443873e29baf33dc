"""LiteLLM callback: joins each attempt's outcome with its decision, and adds ``x-routeiq-*``
response headers.

Outcomes come from ``kwargs["standard_logging_object"]`` of LiteLLM's success and failure
events (one per attempt): ``model_id`` (the deployment that served), ``response_cost``
(USD), ``response_time`` (seconds), ``status`` and ``error_information``. The decision they
belong to is the one whose id the strategy put in the attempt's metadata
(``routeiq_decision_id``, in ``kwargs["litellm_params"]["metadata"]``); when that does not
match the deployment that served, the oldest unjoined decision for that deployment. The
joined decision summary is marked with its status, so a retry knows the deployment failed.

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

from routeiq.integrations.litellm.request_fields import CURRENT_KEY, DECISIONS_KEY, own_decisions
from routeiq.serving.engine import DecisionEngine

log = logging.getLogger(__name__)


def _metadata_with(kwargs: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    for place in (kwargs.get("litellm_params") or {}, kwargs):
        for name in ("metadata", "litellm_metadata"):
            meta = place.get(name)
            if isinstance(meta, Mapping) and meta.get(key) is not None:
                return meta
    return None


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
        "x-routeiq-propensity": decision.get("propensity"),  # set when exploration is on
        "x-routeiq-variant": decision.get("variant"),  # set in an A/B experiment
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
    """Outcome join + response headers for the decisions of one strategy (``owner``)."""

    def __init__(
        self, owner: str, engine: DecisionEngine | None, response_headers: bool = True
    ) -> None:
        super().__init__()
        # ``owner`` is the strategy's token: each callback handles only its own strategy's
        # decisions. Being a plain string attribute it also keeps LiteLLM's callback
        # de-duplication (by class and primitive attributes) from dropping a second instance.
        self.owner = owner
        self.engine = engine
        self.response_headers = response_headers

    async def async_log_success_event(
        self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._outcome(kwargs, default_status="success")

    async def async_log_failure_event(
        self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._outcome(kwargs, default_status="failure")

    async def async_post_call_failure_deployment_hook(
        self,
        request_data: Mapping[str, object],
        exception: Exception,
        call_type: Any,
        fallback_depth: int | None = None,
    ) -> None:
        # The proxy reports only a request's first failed attempt to the failure event;
        # this hook runs for every failed attempt (retries and fallback hops included).
        try:
            info = request_data.get("model_info")
            served = info.get("id") if isinstance(info, Mapping) else None
            if served is None:
                return
            self._join(
                request_data,
                str(served),
                status="failure",
                error=type(exception).__name__,
                cost=None,
                latency_ms=None,
            )
        except Exception:
            log.exception("RouteIQ: could not record a failed attempt")

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
        mine = own_decisions(_metadata_with(data, DECISIONS_KEY), self.owner)
        if not mine:
            return None
        # Pick the latest decision for the deployment that actually answered.
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
            status = str(slo.get("status") or default_status)
            info = slo.get("error_information") or {}
            error = info.get("error_class") if isinstance(info, Mapping) else None
            response_time = slo.get("response_time")
            self._join(
                kwargs,
                str(served),
                status=status,
                error=str(error) if error else None,
                cost=slo.get("response_cost") if status == "success" else None,
                latency_ms=None if response_time is None else float(response_time) * 1e3,
            )
        except Exception:
            log.exception("RouteIQ: could not record an outcome")

    def _join(
        self,
        data: Mapping[str, Any],
        served: str,
        *,
        status: str,
        error: str | None,
        cost: Any,
        latency_ms: float | None,
    ) -> None:
        """Join one attempt's result with its decision, once."""
        meta = _metadata_with(data, DECISIONS_KEY)
        mine = own_decisions(meta, self.owner)
        if not mine:
            return
        current = (meta or {}).get(CURRENT_KEY)
        entry = next(
            (d for d in mine if d.get("id") == current and d.get("deployment") == served), None
        ) or next((d for d in mine if d.get("deployment") == served and "status" not in d), None)
        if entry is None or "status" in entry:
            return  # already joined (an attempt may be reported by two hooks)
        entry["status"] = status  # a retry of this request now knows it failed
        if error:
            entry["error"] = error[:100]
        if self.engine is not None:
            self.engine.record_outcome(
                str(entry["id"]),
                group=str(entry.get("group") or ""),
                deployment=served,
                model=entry.get("model"),
                status=status,
                cost=cost,
                latency_ms=latency_ms,
                error_type=error,
            )
