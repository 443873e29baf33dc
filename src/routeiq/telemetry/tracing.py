"""OpenTelemetry spans for routing decisions.

One span per decision, named ``route {model_group}``, with GenAI semantic-convention
attributes where they fit (``gen_ai.operation.name``, ``gen_ai.request.model`` = the model
group asked for, ``gen_ai.response.model`` and ``gen_ai.provider.name`` of the chosen
deployment, ``error.type``) and RouteIQ's own under ``routeiq.*``. Prompt text is never
recorded.

The tracer comes from the ``tracer_provider`` passed in, else from the globally configured
provider (the OpenTelemetry API's no-op one unless the application set one up). Without the
``opentelemetry-api`` package, spans are no-ops.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routeiq.decision.decision import Decision

TRACER_NAME = "routeiq"

# Attribute names (GenAI conventions + RouteIQ's prefix), kept in one place.
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_PROVIDER = "gen_ai.provider.name"
ERROR_TYPE = "error.type"


class _NoSpan:
    def is_recording(self) -> bool:
        return False

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attrs: Mapping[str, Any]) -> None:
        pass

    def record_exception(self, exc: BaseException) -> None:
        pass

    def set_status(self, *args: Any, **kwargs: Any) -> None:
        pass


class DecisionTracer:
    """Creates decision spans; cheap to call when tracing is not configured."""

    def __init__(self, tracer_provider: Any = None) -> None:
        self._trace: Any = None
        self._tracer: Any = None
        self._explicit = tracer_provider is not None
        try:
            from opentelemetry import trace
        except ImportError:  # opentelemetry-api is optional
            return
        self._trace = trace
        self._tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)

    def _enabled(self) -> bool:
        if self._tracer is None:
            return False
        if self._explicit:
            return True
        # No SDK configured yet (the API's proxy or no-op provider): a span would record
        # nothing, and entering one costs tens of microseconds on a busy gateway. Checked per
        # call: an application may set its provider after RouteIQ was installed.
        provider = self._trace.get_tracer_provider()
        return not isinstance(
            provider, self._trace.ProxyTracerProvider | self._trace.NoOpTracerProvider
        )

    @contextmanager
    def decision_span(self, model_group: str, parent: Any = None) -> Iterator[Any]:
        """A span around one decision; ``parent`` is an optional parent span (e.g. LiteLLM's)."""
        if not self._enabled():
            yield _NoSpan()
            return
        context = None
        if parent is not None and isinstance(parent, self._trace.Span):
            context = self._trace.set_span_in_context(parent)
        with self._tracer.start_as_current_span(
            f"route {model_group}",
            context=context,
            kind=self._trace.SpanKind.INTERNAL,
            attributes={GEN_AI_REQUEST_MODEL: model_group},
        ) as span:
            yield span


def clean_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Drop None values and make values OTel-legal (primitives or homogeneous sequences)."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        elif isinstance(value, Sequence) and not isinstance(value, str):
            items = list(value)
            if any(v is None for v in items):
                # OTel arrays cannot hold nulls: NaN keeps positions aligned for numbers.
                if all(v is None or isinstance(v, int | float) for v in items):
                    items = [float("nan") if v is None else float(v) for v in items]
                else:
                    items = ["" if v is None else str(v) for v in items]
            value = items
        out[key] = value
    return out


def provider_of(litellm_model: str) -> str | None:
    """``openai/gpt-4o`` -> ``openai``; None without a provider prefix."""
    head, sep, _ = litellm_model.partition("/")
    return head if sep else None


def decision_attributes(
    decision: Decision,
    *,
    seconds: float,
    mode: str | None = None,
    target: str | None = None,
    operation: str | None = None,
    upstream: str | None = None,
) -> dict[str, Any]:
    """Span attributes of a decision (never prompt text); ``upstream`` is the provider model
    the chosen deployment calls (``openai/gpt-4o``)."""
    lam = decision.lam
    chosen = decision.chosen_row
    rows = decision.candidates
    excluded = [row.name for row in rows if row.excluded]
    return clean_attributes(
        {
            GEN_AI_OPERATION: operation,
            GEN_AI_RESPONSE_MODEL: upstream,
            GEN_AI_PROVIDER: provider_of(upstream) if upstream else None,
            "routeiq.decision.id": decision.id,
            "routeiq.decision.outcome": decision.outcome,
            "routeiq.decision.attempt": decision.attempt,
            "routeiq.decision.duration_ms": seconds * 1000.0,
            "routeiq.decision.rule": decision.rule,
            "routeiq.mode": mode,
            "routeiq.router.digest": decision.router,
            "routeiq.lambda": lam if lam is None or math.isfinite(lam) else "inf",
            "routeiq.target": target,
            "routeiq.override": decision.override,
            "routeiq.variant": decision.variant,
            "routeiq.chosen.deployment": decision.chosen,
            "routeiq.chosen.model": decision.model,
            "routeiq.predicted_quality": chosen.predicted_quality if chosen else None,
            "routeiq.cost_usd": chosen.cost if chosen else None,
            "routeiq.propensity": decision.propensity,
            "routeiq.greedy.deployment": decision.greedy,
            "routeiq.fallback_reason": decision.fallback_reason,
            "routeiq.excluded": excluded or None,
            "routeiq.candidates.deployments": [row.name for row in rows],
            "routeiq.candidates.models": [row.model for row in rows],
            "routeiq.candidates.predicted_quality": [row.predicted_quality for row in rows],
            "routeiq.candidates.cost_usd": [row.cost for row in rows],
        }
    )
