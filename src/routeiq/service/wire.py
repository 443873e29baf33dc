"""What travels between a gateway and the service: request bodies and the decision.

A route request names the model group, its healthy candidates (name, model, and a cost or
per-token prices), the routing text (or chat messages, or a text input) and the request's
context; the answer is :meth:`routeiq.decision.decision.Decision.to_dict`, read back by
:func:`decision_from_dict`. Bodies are validated strictly: an unknown or malformed field is a
422 naming it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from routeiq.data.records import ContextValue
from routeiq.decision.decision import CandidateRow, Decision
from routeiq.features.context import check_fields
from routeiq.router import Candidate
from routeiq.serving.feedback import Identity
from routeiq.serving.request import RouteRequest

Name = Annotated[str, Field(min_length=1, max_length=512)]
Cost = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CandidateBody(_Body):
    """One healthy deployment: ``cost`` in USD for this request, or per-token prices."""

    name: Name = Field(description="what the decision returns (a deployment id)")
    model: Name = Field(description="the model the router knows it as")
    cost: Cost | None = Field(default=None, description="USD for this request")
    input_cost_per_token: Cost | None = None
    output_cost_per_token: Cost | None = None
    weight: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    cached_cost: Cost | None = Field(
        default=None, description="USD if the conversation stays here (its prompt cache)"
    )


class IdentityBody(_Body):
    """The caller the gateway verified (feedback authorization, policies)."""

    key_hash: str | None = Field(default=None, max_length=256)
    team_id: str | None = Field(default=None, max_length=256)
    user_id: str | None = Field(default=None, max_length=256)
    role: str | None = Field(default=None, max_length=64)
    team_admin: bool = False
    key_alias: str | None = Field(default=None, max_length=256)
    org_id: str | None = Field(default=None, max_length=256)


class ContextBody(_Body):
    """The request around the decision."""

    user: str | None = Field(default=None, max_length=512, description="end user (experiments)")
    tags: Annotated[list[Annotated[str, Field(max_length=256)]], Field(max_length=64)] = []
    identity: IdentityBody | None = None
    attempt: Annotated[int, Field(ge=1, le=1000)] = 1
    request_id: str | None = Field(default=None, max_length=256)
    stream: bool | None = None
    input_tokens: Annotated[int, Field(ge=0)] | None = None
    operation: str | None = Field(default=None, max_length=64)
    fields: Annotated[dict[str, ContextValue], Field(max_length=64)] = Field(
        default_factory=dict,
        description="routing context: field -> string or strings (task, system, ...)",
    )

    @field_validator("fields")
    @classmethod
    def _field_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_fields(value)
        return value


class RouteBody(_Body):
    """``POST /v1/route``."""

    group: Name = Field(description="the model group")
    candidates: Annotated[list[CandidateBody], Field(min_length=1, max_length=1024)]
    text: str | None = Field(default=None, description="the routing text (wins over messages)")
    opening: str | None = Field(
        default=None,
        description="with text: the conversation's opening user turn (sticky conversations)",
    )
    messages: list[dict[str, Any]] | None = None
    input: str | list[str] | None = None
    override: Any = Field(default=None, description="client trade-off override, if allowed")
    failed: dict[str, str] = Field(
        default_factory=dict, description="candidates that failed earlier in this request"
    )
    excluded: dict[str, str] = Field(
        default_factory=dict, description="hard exclusions by the gateway's own guards"
    )
    context: ContextBody = Field(default_factory=ContextBody)

    @model_validator(mode="after")
    def _unique_names(self) -> RouteBody:
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise ValueError("candidates: names must be unique")
        return self


class FeedbackBody(_Body):
    """``POST /v1/feedback``: a score in [0, 1] or ``up``/``down``."""

    decision_id: Name
    score: float | bool | str
    metric: str | None = Field(default=None, max_length=64)
    identity: IdentityBody | None = None


@dataclass(frozen=True)
class ServiceRouteRequest(RouteRequest):
    """A :class:`RouteRequest` with the gateway's hard exclusions (see :class:`Excluded`)."""

    excluded: Mapping[str, str] = field(default_factory=dict)


class Excluded:
    """The gateway's guard exclusions, applied as a candidate filter in the service (the
    gateway sees the outcomes its breakers count; the service does not)."""

    def exclude(self, request: RouteRequest, candidates: Any) -> Mapping[str, str]:
        return dict(getattr(request, "excluded", None) or {})


def identity_of(body: IdentityBody | None) -> Identity | None:
    return None if body is None else Identity(**body.model_dump())


def identity_body(identity: Identity | None) -> dict[str, Any] | None:
    if identity is None:
        return None
    return {k: v for k, v in vars(identity).items() if v not in (None, False)}


def to_route_request(body: RouteBody, output_tokens: int, parent_span: Any = None) -> RouteRequest:
    """The engine's request; per-token prices become a cost at ``output_tokens`` out."""
    ctx = body.context
    tokens = ctx.input_tokens or 0
    cands = []
    for c in body.candidates:
        cost = c.cost
        if cost is None and c.input_cost_per_token is not None:
            cost = tokens * c.input_cost_per_token + output_tokens * (c.output_cost_per_token or 0)
        cands.append(
            Candidate(c.name, c.model, cost=cost, weight=c.weight, cached_cost=c.cached_cost)
        )
    messages = body.messages
    if body.text is not None:
        messages = [{"role": "user", "content": body.text}]
        if body.opening is not None:  # a follow-up turn: the engine's sticky rule sees it
            messages.insert(0, {"role": "user", "content": body.opening})
    return ServiceRouteRequest(
        group=body.group,
        candidates=cands,
        messages=messages,
        input=body.input if messages is None else None,
        override=body.override,
        failed=body.failed,
        attempt=ctx.attempt,
        operation=ctx.operation,
        parent_span=parent_span,
        identity=identity_of(ctx.identity),
        user=ctx.user,
        request_id=ctx.request_id,
        tags=tuple(ctx.tags),
        stream=ctx.stream,
        input_tokens=ctx.input_tokens,
        excluded=body.excluded,
        context=ctx.fields,
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def decision_from_dict(data: Mapping[str, Any]) -> Decision:
    """The inverse of :meth:`Decision.to_dict` (``lambda: "inf"`` is the cheapest rule)."""
    lam = data.get("lambda")
    rows = tuple(
        CandidateRow(
            name=str(r["name"]),
            model=str(r["model"]),
            predicted_quality=_float(r.get("predicted_quality")),
            cost=_float(r.get("cost")),
            utility=_float(r.get("utility")),
            probability=float(r.get("probability") or 0.0),
            available=bool(r.get("available", True)),
            excluded=r.get("excluded"),
            mapped_from=r.get("mapped_from"),
            mapping_rule=r.get("mapping_rule"),
        )
        for r in data.get("candidates") or ()
    )
    return Decision(
        chosen=str(data["chosen"]),
        model=str(data["model"]),
        lam=math.inf if lam == "inf" else _float(lam),
        rule=str(data.get("rule") or ""),
        candidates=rows,
        outcome=str(data.get("outcome") or "routed"),
        fallback_reason=data.get("fallback_reason"),
        id=data.get("id"),
        group=data.get("group"),
        router=data.get("router"),
        attempt=int(data.get("attempt") or 1),
        override=data.get("override"),
        variant=data.get("variant"),
        greedy=data.get("greedy"),
    )
