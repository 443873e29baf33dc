"""RouteIQ's settings: one pydantic model, validated at start-up with clear errors.

The same settings drive every front end (the LiteLLM SDK strategy, the proxy, the routing
service). On the proxy they live in a top-level ``routeiq_settings:`` section of its
``config.yaml`` (see :mod:`routeiq.integrations.litellm.config`). Example::

    router: ./router            # default artifact for every model group
    lambda: 20.0                # quality points given up per USD saved (or `target:`)
    decision_log: ./decisions.jsonl
    groups:
      chat:                     # a model_name in model_list
        target: "quality>=0.95"
        allow_client_overrides: true
      embed:
        mode: cheapest

Every model group is decided by RouteIQ: a group not listed under ``groups`` uses the
top-level values. ``mode`` is ``route`` (the learned router), ``cheapest`` (lowest estimated
cost) or ``shuffle`` (random in proportion to deployment weights, LiteLLM's ``simple-shuffle``,
logged with its real probability, e.g. to collect unbiased training data). A group in
``route`` mode none of whose deployments maps to a model the router knows (an embeddings
group, say) is served by the ``shuffle`` rule with one start-up warning listing such groups;
``strict: true`` refuses to start instead.

Every setting, with its type, default and description, is in ``docs/settings.md``, generated
from these models (``routeiq settings-reference``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from routeiq.decision.exploration import Exploration
from routeiq.experiments.assignment import ExperimentSettings
from routeiq.integrations.redis_url import RedisStreamConfig, is_url
from routeiq.online.budget_holds import BudgetHoldSettings
from routeiq.online.router import OnlineSettings
from routeiq.online.store import SharedStateSettings
from routeiq.resilience.breaker_settings import BreakerSettings
from routeiq.resilience.drain import DrainSettings
from routeiq.resilience.shedding import SheddingSettings
from routeiq.security.policy_settings import PolicySettings
from routeiq.security.signing import SigningSettings
from routeiq.security.ssrf_settings import SSRFSettings
from routeiq.service.settings import ServiceClientSettings
from routeiq.serving.feedback import FeedbackSettings
from routeiq.serving.reload import HotReloadSettings
from routeiq.serving.sticky import StickySettings

SETTINGS_KEY = "routeiq_settings"

Mode = Literal["route", "cheapest", "shuffle"]
# An artifact directory, or a name: "default" (the packaged router), "none" (no router).
RouterSetting = Literal["default", "none"] | Path


class RouteIQConfigError(ValueError):
    """Invalid RouteIQ settings; the message says which setting and why."""


class _Strict(BaseModel):
    # Typos must fail at start-up, not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _effective_router(value: Path | str | None) -> Path | None:
    """The artifact a ``router`` setting names: unset or ``default`` is the packaged default
    router (None if the install lacks it: validation then says so), ``none`` is none."""
    if isinstance(value, Path):
        return value
    if value == "none":
        return None
    from routeiq.default_router import DefaultRouterError, default_router_path

    try:
        return default_router_path()
    except DefaultRouterError:
        return None


def _check_target(value: str | None) -> str | None:
    if value is None:
        return None
    from routeiq.decision.targets import parse_target

    parse_target(value)  # ValueError names the accepted forms
    return value


class GroupSettings(_Strict):
    """Per model group; any field left unset inherits the top-level value."""

    mode: Mode | None = Field(default=None, description="this group's mode (unset: top level)")
    router: RouterSetting | None = Field(
        default=None,
        description="this group's router artifact directory, 'default' or 'none'",
    )
    router_digest: str | None = Field(
        default=None, description="pin of this group's artifact (sha256 of its manifest)"
    )
    lam: float | None = Field(
        default=None, ge=0, alias="lambda", description="this group's quality/cost knob"
    )
    target: str | None = Field(
        default=None, description='this group\'s calibrated target, e.g. "quality>=0.95"'
    )
    allow_client_overrides: bool | None = Field(
        default=None, description="let clients override the decision for this group"
    )
    estimated_output_tokens: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="output tokens assumed when pricing this group's requests"
    )
    exploration: Exploration | None = Field(
        default=None, description="this group's exploration (replaces the top-level one)"
    )
    online: OnlineSettings | None = Field(
        default=None, description="this group's online learning (replaces the top-level one)"
    )
    experiment: ExperimentSettings | None = Field(
        default=None, description="an A/B experiment between variants of this group"
    )
    hold_budget: BudgetHoldSettings | None = Field(
        default=None, description="hold this group's budget<= target online (unset: top level)"
    )

    @field_validator("target")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        return _check_target(value)

    @field_validator("experiment")
    @classmethod
    def _variant_exploration(cls, value: ExperimentSettings | None) -> ExperimentSettings | None:
        for v in value.variants if value is not None else ():
            if v.exploration is not None:
                try:
                    Exploration.model_validate(v.exploration)
                except ValidationError as exc:
                    msg = exc.errors()[0]["msg"]
                    raise ValueError(f"variant {v.name!r}: exploration: {msg}") from None
        return value

    @model_validator(mode="after")
    def _one_tradeoff(self) -> GroupSettings:
        if self.lam is not None and self.target is not None:
            raise ValueError("set either 'lambda' or 'target', not both")
        return self


class RouteIQSettings(_Strict):
    """Top-level settings (defaults for every group) plus per-group overrides."""

    mode: Mode = Field(
        default="route",
        description="route: the learned router; cheapest: lowest estimated cost; shuffle: "
        "random by deployment weight (LiteLLM's simple-shuffle), logged with its probability",
    )
    router: RouterSetting | None = Field(
        default=None,
        description="router artifact directory; omitted or 'default': the packaged default "
        "router; 'none': no router",
    )
    router_digest: str | None = Field(
        default=None, description="expected artifact digest (sha256 of its manifest); pins it"
    )
    lam: float | None = Field(
        default=None,
        ge=0,
        alias="lambda",
        description="quality points given up per USD saved (neither this nor target: the "
        "artifact's own)",
    )
    target: str | None = Field(
        default=None,
        description='calibrated target: "quality>=X", "budget<=Y" ($ per 1,000 requests) or '
        '"expensive<=Z" (share of calls to the most expensive model)',
    )
    allow_client_overrides: bool = Field(
        default=False,
        description='let clients send metadata.routeiq: "cheapest", "best", a lambda or a target',
    )
    estimated_output_tokens: Annotated[int, Field(ge=0)] = Field(
        default=256, description="output tokens assumed when pricing a request"
    )
    # Safe exploration of the learned rule (off: deterministic); see decision/exploration.py.
    exploration: Exploration = Field(
        default_factory=Exploration,
        description="safe exploration with logged propensities (off: deterministic)",
    )
    # Learning from feedback while serving (off: the artifact as trained); see routeiq.online.
    online: OnlineSettings = Field(
        default_factory=OnlineSettings,
        description="learning from feedback while serving (off: the artifact as trained)",
    )
    feedback: FeedbackSettings = Field(
        default_factory=FeedbackSettings, description="the feedback endpoint and its memory"
    )
    sticky: StickySettings = Field(
        default_factory=StickySettings,
        description="a follow-up turn stays on the candidate its conversation's opening turn "
        "chose unless another is better by more than a margin (prompt cache, voice)",
    )
    hold_budget: BudgetHoldSettings = Field(
        default_factory=BudgetHoldSettings,
        description="hold budget<= targets while the request mix drifts: lambda re-fitted from "
        "the recent decisions of every worker (shared through shared_state); off",
    )
    # Redis shared by every worker and replica: feedback contexts and online state.
    shared_state: SharedStateSettings | None = Field(
        default=None,
        description="Redis shared by every worker and replica (feedback contexts, online state)",
    )
    service: ServiceClientSettings | None = Field(
        default=None,
        description="decide through the routing service at these URLs (routeiq.service); "
        "none: in process",
    )
    # Proxy load shedding (off unless a limit is set) and SIGTERM drain; see docs/resilience.md.
    shedding: SheddingSettings = Field(
        default_factory=SheddingSettings,
        description="503 for requests over an in-flight limit (off unless a limit is set)",
    )
    drain: DrainSettings = Field(
        default_factory=DrainSettings, description="drain a worker's requests on SIGTERM"
    )
    breakers: BreakerSettings = Field(
        default_factory=BreakerSettings,
        description="circuit breakers per deployment (routeiq.resilience.breakers); off",
    )
    groups: dict[str, GroupSettings] = Field(
        default_factory=dict, description="per model group overrides, by model_name"
    )
    aliases: dict[str, str] = Field(
        default_factory=dict, description="deployment model name -> model the router knows"
    )
    strict: bool = Field(
        default=False,
        description="refuse to start when a routed group has no deployment the router knows",
    )
    decision_timeout_ms: Annotated[float, Field(gt=0)] = Field(
        default=250.0,
        description="slower decisions are served by the fallback rule (cheapest healthy)",
    )
    threads: Annotated[int, Field(ge=1, le=64)] = Field(
        default=2, description="scoring threads per worker"
    )
    # "thread": featurize + score in a pool of `threads` threads, bounded by
    # decision_timeout_ms (never blocks the event loop). "inline": on the event loop, no
    # timeout: it saves the hop back to a busy loop (tens of ms under load, see
    # bench/proxy_throughput.py). "auto": inline for routers whose featurizer is known to be
    # sub-millisecond and bounded (lexical), threads otherwise (MiniLM).
    scoring: Literal["auto", "thread", "inline"] = Field(
        default="auto",
        description="where featurize + score runs: thread pool, event loop, or auto (inline "
        "for sub-millisecond featurizers)",
    )
    max_prompt_chars: Annotated[int, Field(ge=1)] = Field(
        default=400_000,
        description="longer routing texts are not featurized (served by the fallback rule)",
    )
    featurize_chars: Annotated[int, Field(ge=1)] = Field(
        default=8_000, description="only this many trailing characters are featurized"
    )
    # A file path, or a redis:// URL parsed (and checked) into a RedisStreamConfig.
    decision_log: Path | RedisStreamConfig | None = Field(
        default=None,
        description="JSONL file path, or redis://host:port/db?stream=NAME&maxlen=N (none: off)",
    )
    log_prompt: Literal["text", "features", "none"] = Field(
        default="text",
        description="what the decision log keeps of each request: the routing text, its "
        "feature vector (routeiq train --featurizer-from trains on it), or nothing; a request "
        "under LiteLLM's turn_off_message_logging never has its text logged",
    )
    pending_ttl_s: Annotated[float, Field(gt=0)] = Field(
        default=600.0, description="a decision whose outcome never arrives is written after this"
    )
    max_pending: Annotated[int, Field(ge=1)] = Field(
        default=100_000, description="decisions awaiting their outcome, at most (oldest written)"
    )
    max_queued_records: Annotated[int, Field(ge=1)] = Field(
        default=100_000, description="records queued for the log writer; beyond: dropped, counted"
    )
    response_headers: bool = Field(
        default=True, description="x-routeiq-* headers on proxy responses"
    )
    policies: PolicySettings | None = Field(
        default=None,
        description="Cedar policy file (and schema) checked on every request; none: allow all",
    )
    signing: SigningSettings = Field(
        default_factory=SigningSettings,
        description="public keys trusted to sign router artifacts (routeiq.security.signing)",
    )
    hot_reload: HotReloadSettings = Field(
        default_factory=HotReloadSettings,
        description="load new artifact versions while serving (routeiq.serving.reload)",
    )
    ssrf: SSRFSettings = Field(
        default_factory=SSRFSettings,
        description="SSRF guard on deployment and client URLs (routeiq.security.ssrf); off",
    )

    @field_validator("target")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        return _check_target(value)

    @field_validator("decision_log", mode="before")
    @classmethod
    def _decision_log(cls, value: Any) -> Any:
        return RedisStreamConfig.from_url(value) if is_url(value) else value

    @model_validator(mode="after")
    def _one_tradeoff(self) -> RouteIQSettings:
        if self.lam is not None and self.target is not None:
            raise ValueError("set either 'lambda' or 'target', not both")
        return self

    def group(self, name: str) -> ResolvedGroup:
        """Effective settings of one model group (group values over top-level ones)."""
        g = self.groups.get(name) or GroupSettings()
        pick = lambda field: (  # noqa: E731
            getattr(g, field) if getattr(g, field) is not None else getattr(self, field)
        )
        # A group that sets its own lambda/target replaces both top-level trade-off values.
        own_tradeoff = g.lam is not None or g.target is not None
        return ResolvedGroup(
            name=name,
            mode=pick("mode"),
            router=_effective_router(pick("router")),
            router_digest=(
                g.router_digest if g.router is not None or g.router_digest else self.router_digest
            ),
            lam=g.lam if own_tradeoff else self.lam,
            target=g.target if own_tradeoff else self.target,
            allow_client_overrides=pick("allow_client_overrides"),
            estimated_output_tokens=pick("estimated_output_tokens"),
            exploration=pick("exploration"),
            online=pick("online"),
            experiment=g.experiment,
            hold_budget=pick("hold_budget"),
        )

    def router_paths(self) -> set[Path]:
        """Every artifact some group may route with."""
        top = _effective_router(self.router)
        paths = {top} if top is not None and self.mode == "route" else set()
        for name in self.groups:
            g = self.group(name)
            if g.mode == "route" and g.router is not None:
                paths.add(g.router)
            for v in g.experiment.variants if g.experiment is not None else ():
                if v.router is not None:
                    paths.add(v.router)
        return paths


class ResolvedGroup(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    mode: Mode
    router: Path | None
    router_digest: str | None
    lam: float | None
    target: str | None
    allow_client_overrides: bool
    estimated_output_tokens: int
    exploration: Exploration
    online: OnlineSettings
    experiment: ExperimentSettings | None = None
    hold_budget: BudgetHoldSettings = Field(default_factory=BudgetHoldSettings)
    variant: str | None = None  # the experiment arm these settings are for

    def for_variant(self, name: str) -> ResolvedGroup:
        """These settings with an experiment variant's changes applied."""
        assert self.experiment is not None
        v = self.experiment.variant(name)
        update: dict[str, Any] = {"variant": name}
        if v.router is not None:
            update.update(router=v.router, router_digest=None)  # the pin is the group's
        if v.lam is not None or v.target is not None:
            update.update(lam=v.lam, target=v.target)
        if v.exploration is not None:
            update["exploration"] = Exploration.model_validate(v.exploration)
        if v.mode is not None:
            update["mode"] = v.mode
        return self.model_copy(update=update)
