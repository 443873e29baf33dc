"""Cedar policies on the verified caller: deny requests, filter the deployments they may use.

    engine = PolicyEngine.from_files("policies.cedar", "schema.cedarschema")
    decision = engine.authorize_request(Identity(team_id="t2"), "completion", "chat",
                                        {"tags": [], "input_tokens": 12, "stream": False})
    decision.allowed, decision.reason      # False, "policy: forbid-team-b-chat"

The request Cedar sees:

* **principal** ``Key::"<key hash>"`` (``Key::"anonymous"`` without auth), the *verified*
  identity LiteLLM's auth built (virtual key, ``custom_auth``, JWT), never a header; it is
  ``in`` its ``Team::"<team_id>"``, ``User::"<user_id>"`` and ``Org::"<org_id>"`` (a team is
  in its org), with attributes ``alias`` (the key alias) and ``role`` when set;
* **action** the call type: ``Action::"completion"`` (chat, text completion, responses,
  Anthropic messages), ``Action::"embedding"``, else LiteLLM's call type without its
  ``a`` prefix (``image_generation``, ``transcription``, ...);
* **resource** ``ModelGroup::"<group>"`` when the whole request is checked (the proxy's
  pre-call hook: a deny is a 403 naming the deciding policy), and each candidate
  ``Deployment::"<id>"`` (``in`` its model group; attributes ``model``, the model the router
  knows it as, and ``upstream``, LiteLLM's model string) when the candidates are filtered
  before routing (:class:`PolicyGuard`);
* **context** ``tags`` (Set<String>, client-sent request tags), ``input_tokens`` (Long,
  estimated), ``stream`` (Bool), ``hour`` and ``weekday`` (Long, UTC; Monday is 0) and, per
  candidate when its price is known, ``cost_micro_usd`` (Long: its estimated cost of this
  request in millionths of a USD; Cedar has no floats).

Cedar's default is deny: a request or deployment no ``permit`` matches is refused, and a
``forbid`` always wins. No policy file configured: nothing is checked (everything allowed).
The policy set is parsed once; each caller's entities are parsed once and reused
(a bounded cache), so a decision costs one call into Cedar for all candidates
(``bench/policy_latency.py``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from routeiq.security.policy_settings import PolicySettings
from routeiq.security.policy_source import PolicyConfigError, PolicySource, load_policies
from routeiq.serving.feedback import Identity
from routeiq.serving.guards import GuardRefusal

if TYPE_CHECKING:
    from routeiq.router import Candidate
    from routeiq.serving.request import RouteRequest
    from routeiq.telemetry.metrics import RouteIQMetrics

__all__ = [
    "AllCandidatesDenied",
    "PolicyConfigError",
    "PolicyDecision",
    "PolicyDenied",
    "PolicyEngine",
    "PolicyGuard",
    "PolicySettings",
    "action_for_call_type",
]

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
_CHAT_CALLS = {"completion", "text_completion", "responses", "anthropic_messages", "chat"}
_EMBED_CALLS = {"embedding", "embeddings"}
_MAX_CACHED = 4096
_MAX_LOGGED_ERRORS = 256
_MAX_LONG = 2**63 - 1  # Cedar Long


def action_for_call_type(call_type: Any) -> str:
    """Cedar action id of a LiteLLM call type (``acompletion`` -> ``completion``)."""
    name = str(getattr(call_type, "value", call_type) or "completion").lower()
    for candidate in (name, name[1:] if name.startswith("a") else name):
        if candidate in _CHAT_CALLS:
            return "completion"
        if candidate in _EMBED_CALLS:
            return "embedding"
    if name.startswith("a") and not name.startswith("anthropic"):
        return name[1:]
    return name


class PolicyDenied(GuardRefusal):
    """A policy refused the request (HTTP 403); ``policies`` names the deciding ones."""

    status_code = 403

    def __init__(self, message: str, policies: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.policies = tuple(policies)


class AllCandidatesDenied(PolicyDenied):
    """Policies removed every deployment of the model group for this caller."""


@dataclass(frozen=True)
class PolicyDecision:
    """One Cedar answer: allowed or not, and which policies decided (their ``@id``)."""

    allowed: bool
    policies: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        """``policy: <ids>`` (the determining policies), or the default deny."""
        if self.policies:
            return "policy: " + ", ".join(self.policies)
        return "policy: default deny (no permit matched)"


def _uid(kind: str, ident: str) -> dict[str, str]:
    return {"type": kind, "id": ident}


def principal_of(identity: Identity | None) -> dict[str, str]:
    return _uid("Key", (identity.key_hash if identity else None) or ANONYMOUS)


def principal_entities(identity: Identity | None) -> list[dict[str, Any]]:
    ident = identity or Identity()
    attrs: dict[str, Any] = {}
    if ident.key_alias:
        attrs["alias"] = ident.key_alias
    if ident.role:
        attrs["role"] = ident.role
    org = ident.org_id
    parents, extra = [], []
    if ident.team_id:
        parents.append(_uid("Team", ident.team_id))
        team_parents = [_uid("Org", org)] if org else []
        extra.append({"uid": _uid("Team", ident.team_id), "attrs": {}, "parents": team_parents})
    if ident.user_id:
        parents.append(_uid("User", ident.user_id))
        extra.append({"uid": _uid("User", ident.user_id), "attrs": {}, "parents": []})
    if org:
        parents.append(_uid("Org", org))
        extra.append({"uid": _uid("Org", org), "attrs": {}, "parents": []})
    key = {"uid": principal_of(identity), "attrs": attrs, "parents": parents}
    return [key, *extra]


class PolicyEngine:
    """A parsed Cedar policy set, asked about requests and candidate deployments.

    ``clock`` (epoch seconds) gives the ``hour``/``weekday`` context; ``metrics`` counts
    every answer in ``routeiq_policy_decisions_total{effect}``.
    """

    def __init__(
        self,
        source: PolicySource,
        *,
        metrics: RouteIQMetrics | None = None,
        clock: Callable[[], float] = time.time,
        cache_size: int = _MAX_CACHED,
    ) -> None:
        self.source = source
        self.metrics = metrics
        self.clock = clock
        self._cache_size = cache_size
        self._entities: dict[Any, Any] = {}
        self._logged: set[str] = set()

    @classmethod
    def from_files(
        cls, policy_file: str | Path, schema_file: str | Path | None = None, **kwargs: Any
    ) -> PolicyEngine:
        """Parse (and validate) the files; :class:`PolicyConfigError` names file and line."""
        schema = Path(schema_file) if schema_file is not None else None
        return cls(load_policies(Path(policy_file), schema), **kwargs)

    @classmethod
    def from_settings(cls, settings: PolicySettings, **kwargs: Any) -> PolicyEngine:
        return cls.from_files(settings.file, settings.schema_file, **kwargs)

    # -- asking Cedar ------------------------------------------------------------------------

    def context(
        self,
        tags: Sequence[str] = (),
        input_tokens: int | None = None,
        stream: bool | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The request context policies see (time fields from the engine's clock)."""
        now = time.gmtime(self.clock())
        return {
            "tags": list(tags),
            "input_tokens": int(input_tokens or 0),
            "stream": bool(stream),
            "hour": now.tm_hour,
            "weekday": now.tm_wday,
            **extra,
        }

    def authorize_request(
        self,
        identity: Identity | None,
        action: str,
        group: str,
        context: Mapping[str, Any] | None = None,
    ) -> PolicyDecision:
        """May ``identity`` call ``action`` on model group ``group`` at all?"""
        ctx = {**self.context(), **(context or {})}
        request = self._request(identity, action, _uid("ModelGroup", group), ctx)
        (decision,) = self._evaluate([request], self._entities_for(identity, group, ()))
        self._count("allow" if decision.allowed else "deny")
        return decision

    def check_request(
        self,
        identity: Identity | None,
        action: str,
        group: str,
        context: Mapping[str, Any] | None = None,
    ) -> PolicyDecision:
        """:meth:`authorize_request`, raising :class:`PolicyDenied` when it is denied."""
        decision = self.authorize_request(identity, action, group, context)
        if not decision.allowed:
            raise PolicyDenied(
                f"RouteIQ: denied by {decision.reason} (action {action!r} on model group "
                f"{group!r})",
                decision.policies,
            )
        return decision

    def authorize_candidates(
        self,
        identity: Identity | None,
        action: str,
        group: str,
        candidates: Sequence[Candidate],
        context: Mapping[str, Any] | None = None,
        upstream: Mapping[str, str] | None = None,
    ) -> dict[str, PolicyDecision]:
        """Candidate name -> may ``identity`` use it for this request (one Cedar call)."""
        base = {**self.context(), **(context or {})}
        upstream = upstream or {}
        deployments = tuple((c.name, c.model, upstream.get(c.name, c.model)) for c in candidates)
        requests = []
        for c in candidates:
            ctx = base
            if c.cost is not None and math.isfinite(c.cost):  # else: unknown
                ctx = {**base, "cost_micro_usd": min(round(c.cost * 1e6), _MAX_LONG)}
            requests.append(self._request(identity, action, _uid("Deployment", c.name), ctx))
        entities = self._entities_for(identity, group, deployments)
        decisions = self._evaluate(requests, entities)
        for d in decisions:
            self._count("allow" if d.allowed else "filter")
        return {c.name: d for c, d in zip(candidates, decisions, strict=True)}

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _request(
        identity: Identity | None, action: str, resource: dict[str, str], ctx: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {
            "principal": principal_of(identity),
            "action": _uid("Action", action),
            "resource": resource,
            "context": ctx,
        }

    def _entities_for(
        self, identity: Identity | None, group: str, deployments: tuple[tuple[str, str, str], ...]
    ) -> Any:
        # A caller's entities (and the group's deployments) change rarely: parse them once.
        key = (identity, group, deployments)
        cached = self._entities.get(key)
        if cached is not None:
            return cached
        from cedarpy import Entities

        items = principal_entities(identity)
        items.append({"uid": _uid("ModelGroup", group), "attrs": {}, "parents": []})
        for name, model, upstream in deployments:
            items.append(
                {
                    "uid": _uid("Deployment", name),
                    "attrs": {"model": model, "upstream": upstream},
                    "parents": [_uid("ModelGroup", group)],
                }
            )
        entities = Entities.from_json_str(json.dumps(items))
        if len(self._entities) >= self._cache_size:
            self._entities.clear()  # bounded: identities come from the auth layer, groups
        self._entities[key] = entities  # from clients
        return entities

    def _evaluate(self, requests: list[dict[str, Any]], entities: Any) -> list[PolicyDecision]:
        from cedarpy import is_authorized_batch

        results = is_authorized_batch(requests, self.source.policy_set, entities)
        out = []
        for result in results:
            diag = result.diagnostics
            names = tuple(sorted(self.source.name(p) for p in diag.reasons))
            errors = tuple(diag.errors)
            if errors:
                self._log_errors(errors)
            out.append(PolicyDecision(result.allowed, names, errors))
        return out

    def _log_errors(self, errors: tuple[str, ...]) -> None:
        # Cedar skips a policy whose evaluation fails (a missing attribute, an overflow): say
        # so once per message, since a skipped forbid lets through what it should stop.
        self._count("error")
        for err in errors:
            if err not in self._logged and len(self._logged) < _MAX_LOGGED_ERRORS:
                self._logged.add(err)
                log.warning(
                    "RouteIQ policy %s: evaluation error, policy skipped: %s", self.source.path, err
                )

    def _count(self, effect: str) -> None:
        if self.metrics is not None:
            self.metrics.observe_policy(effect)


def _request_action(request: RouteRequest) -> str:
    # The strategy sees messages for chat-like calls and ``input`` for embeddings.
    if request.messages is None and request.input is not None:
        return "embedding"
    return "completion"


class PolicyGuard:
    """The engine's :class:`~routeiq.serving.guards.CandidateFilter` for Cedar policies.

        engine = DecisionEngine(settings, registry, guards=[PolicyGuard(policies)])

    Each candidate deployment is checked for the request's verified identity; a denied one
    is excluded with the deciding policy as reason (``policy: forbid-team-b-gpt4o`` in the
    decision's candidate rows). When every candidate is denied the request is refused with
    :class:`AllCandidatesDenied` (403); a check that raises refuses it too (fail closed).
    """

    # A policy check that breaks refuses the request rather than letting it through.
    fail_closed = True

    def __init__(self, engine: PolicyEngine) -> None:
        self.engine = engine

    def exclude(self, request: RouteRequest, candidates: Sequence[Candidate]) -> dict[str, str]:
        context = self.engine.context(request.tags, request.input_tokens, request.stream)
        decisions = self.engine.authorize_candidates(
            request.identity,
            _request_action(request),
            request.group,
            candidates,
            context,
            request.upstream,
        )
        denied = {name: d.reason for name, d in decisions.items() if not d.allowed}
        if candidates and len(denied) == len(candidates):
            reasons = "; ".join(f"{name}: {why}" for name, why in denied.items())
            policies = sorted({p for d in decisions.values() for p in d.policies})
            raise AllCandidatesDenied(
                f"RouteIQ: every deployment of model group {request.group!r} was denied "
                f"for this caller ({reasons})",
                policies,
            )
        return denied
