"""``breakers:`` in ``routeiq_settings``: circuit breakers per deployment (off by default).

.. code-block:: yaml

    breakers:
      enabled: true
      window: {type: count, size: 20}    # or {type: time, seconds: 60}
      minimum_calls: 5
      failure_rate: 0.5
      open_s: 30

See :mod:`routeiq.resilience.breaker` for the state machine and ``docs/breakers.md``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# Errors the caller caused: the deployment answered correctly, so they say nothing about its
# health. AuthenticationError and PermissionDeniedError are not here on purpose: through a
# gateway the provider credentials are the deployment's, so a 401/403 means that deployment is
# misconfigured and will fail every request (see docs/breakers.md).
CLIENT_ERRORS = (
    "BadRequestError",
    "ContextWindowExceededError",
    "ContentPolicyViolationError",
    "UnprocessableEntityError",
    "UnsupportedParamsError",
    "InvalidRequestError",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowSettings(_Strict):
    """The sliding window rates are computed over: ``{type: count, size: 20}`` (the last 20
    calls) or ``{type: time, seconds: 60}`` (calls of the last 60 s, in 1-s buckets)."""

    type: Literal["count", "time"] = Field(
        default="count", description="count: the last `size` calls; time: the last `seconds`"
    )
    size: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=20, description="calls in a count window"
    )
    seconds: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=60, description="length of a time window, in whole seconds"
    )


class BreakerGroupSettings(_Strict):
    """``breakers.groups.<name>``: any value set here replaces the top-level one."""

    enabled: bool | None = Field(default=None, description="false: no breakers in this group")
    window: WindowSettings | None = Field(default=None, description="the sliding window")
    minimum_calls: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="calls before rates count"
    )
    failure_rate: Annotated[float, Field(gt=0, le=1)] | None = Field(
        default=None, description="failure share that opens"
    )
    slow_call_ms: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="slow-call threshold in ms"
    )
    slow_call_rate: Annotated[float, Field(gt=0, le=1)] | None = Field(
        default=None, description="slow share that opens"
    )
    open_s: Annotated[float, Field(gt=0, le=86_400)] | None = Field(
        default=None, description="first open time"
    )
    open_multiplier: Annotated[float, Field(ge=1)] | None = Field(
        default=None, description="growth per consecutive trip"
    )
    max_open_s: Annotated[float, Field(gt=0, le=86_400)] | None = Field(
        default=None, description="cap on the open time"
    )
    half_open_probes: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        default=None, description="concurrent half-open probes"
    )
    probe_timeout_s: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="probe slot timeout"
    )
    ignore_errors: tuple[str, ...] | None = Field(
        default=None, description="exception class names not counted"
    )


class BreakerSettings(_Strict):
    """One breaker per deployment; every group uses these values unless ``groups`` says
    otherwise: ``groups: {embed: {enabled: false}, chat: {minimum_calls: 20}}``."""

    enabled: bool = Field(default=False, description="turn circuit breakers on")
    window: WindowSettings = Field(
        default_factory=WindowSettings, description="the sliding window of recent calls"
    )
    minimum_calls: Annotated[int, Field(ge=1)] = Field(
        default=5, description="calls in the window before its rates can open the breaker"
    )
    failure_rate: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.5, description="failure share of the window (0-1] at which the breaker opens"
    )
    slow_call_ms: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="a successful call slower than this counts as slow (none: off)"
    )
    slow_call_rate: Annotated[float, Field(gt=0, le=1)] = Field(
        default=1.0, description="slow share of the window (0-1] at which the breaker opens"
    )
    open_s: Annotated[float, Field(gt=0, le=86_400)] = Field(
        default=30.0, description="how long the breaker stays open after its first trip"
    )
    open_multiplier: Annotated[float, Field(ge=1)] = Field(
        default=1.0, description="open time grows by this factor on each consecutive trip"
    )
    max_open_s: Annotated[float, Field(gt=0, le=86_400)] = Field(
        default=300.0, description="cap on the grown open time"
    )
    half_open_probes: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=1, description="probe calls let through at once when half-open; all must succeed"
    )
    probe_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=60.0,
        description="a probe slot with no outcome after this long is given back (the call "
        "went elsewhere or was lost)",
    )
    ignore_errors: tuple[str, ...] = Field(
        default=CLIENT_ERRORS,
        description="LiteLLM exception class names that are not the deployment's fault",
    )
    shared: bool = Field(
        default=False,
        description="share breakers across workers and replicas through shared_state (Redis)",
    )
    sync_interval_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=0.25, description="how often shared breakers push and pull their state"
    )

    groups: dict[str, BreakerGroupSettings] = Field(
        default_factory=dict,
        description="per model group: values replacing the top-level ones (enabled: false "
        "turns breakers off for that group)",
    )

    @model_validator(mode="after")
    def _cap(self) -> BreakerSettings:
        if self.max_open_s < self.open_s:
            raise ValueError(f"max_open_s ({self.max_open_s:g}) < open_s ({self.open_s:g})")
        for name in self.groups:
            try:
                self.for_group(name)
            except ValueError as exc:
                raise ValueError(f"groups.{name}: {exc}") from None
        return self

    def for_group(self, group: str) -> BreakerSettings:
        """The settings of one model group (its overrides over the top-level values)."""
        override = self.groups.get(group)
        if override is None:
            return self
        data = self.model_dump(exclude={"groups"})
        data.update(override.model_dump(exclude_none=True))
        try:
            return BreakerSettings.model_validate(data)
        except ValidationError as exc:
            msgs = (e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise ValueError("; ".join(msgs)) from None
