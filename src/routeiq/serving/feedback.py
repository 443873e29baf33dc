"""Feedback on served decisions: who may rate one, what a score is, and what it changes.

    engine.feedback("4242-ab12...", 1.0)                       # SDK: a trusted caller
    engine.feedback(decision_id, "down", identity=caller)      # proxy: the verified caller

A score is a number in [0, 1], or thumbs ``up``/``down`` (``True``/``False``) mapped to 1/0,
optionally under a metric name (default ``quality``: the one that enters the reward). Each
decision takes one score per metric; a second is a :class:`DuplicateFeedback`. Through the
proxy, only the key that made the request, an admin of its team, or a proxy admin (the master
key) may rate it: feedback steers routing, so poisoning it is an attack. What is kept of a
decision until feedback arrives (:class:`DecisionContext`) lives in the context store
(:mod:`routeiq.online.store`) for ``feedback.ttl_s``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_METRIC = "quality"
_METRIC = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_THUMBS = {"up": 1.0, "down": 0.0, "thumbs_up": 1.0, "thumbs_down": 0.0}


class FeedbackSettings(BaseModel):
    """``feedback:`` in ``routeiq_settings``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="accept feedback on served decisions")
    # How long a decision can still be rated (late feedback joins up to then).
    ttl_s: float = Field(default=172_800.0, gt=0, description="how long a decision can be rated")
    max_contexts: int = Field(default=200_000, ge=1, description="kept in memory per worker")
    # Implicit signals: an attempt that failed counts as this quality (None: not a reward).
    error_quality: float | None = Field(
        default=None, ge=0, le=1, description="quality a failed attempt counts as (none: no reward)"
    )


class FeedbackError(ValueError):
    """Feedback refused; ``status`` is the HTTP status the proxy answers with."""

    status = 400


class InvalidFeedback(FeedbackError):
    status = 422


class UnknownDecision(FeedbackError):
    status = 404


class DuplicateFeedback(FeedbackError):
    status = 409


class FeedbackForbidden(FeedbackError):
    status = 403


class StoreUnavailable(FeedbackError):
    """The decision is not in this worker and the shared store cannot be reached."""

    status = 503


@dataclass(frozen=True)
class Identity:
    """A verified caller (from LiteLLM's auth, never from headers the client sets)."""

    key_hash: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    role: str | None = None  # LiteLLM user role: proxy_admin, org_admin, internal_user...
    team_admin: bool = False
    key_alias: str | None = None  # policies (routeiq.security.policy) may name keys by alias
    org_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "proxy_admin"


@dataclass(frozen=True)
class DecisionContext:
    """What rating a decision needs, kept from the decision until ``ttl_s``."""

    group: str
    deployment: str
    model: str  # the candidate's model (the decision-log outcome key)
    key_hash: str | None = None
    team_id: str | None = None
    online_model: int | None = None  # index in the online router, when it learns from this
    prior: float | None = None
    z: tuple[float, ...] | None = None
    online_key: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> DecisionContext:
        data = json.loads(text)
        if data.get("z") is not None:
            data["z"] = tuple(data["z"])
        return cls(**data)


def parse_score(value: Any) -> float:
    """A score in [0, 1] from a number, a bool or ``up``/``down``."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, str):
        key = value.strip().lower()
        if key in _THUMBS:
            return _THUMBS[key]
        try:
            value = float(key)
        except ValueError:
            raise InvalidFeedback(
                f"score {value!r} is not a number in [0, 1] nor 'up'/'down'"
            ) from None
    if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise InvalidFeedback(f"score must be a number in [0, 1] (or 'up'/'down'), got {value!r}")
    return float(value)


def check_metric(metric: str | None) -> str:
    name = DEFAULT_METRIC if metric is None else metric
    if not isinstance(name, str) or not _METRIC.match(name):
        raise InvalidFeedback(
            f"metric {metric!r} must be 1-64 characters: a letter, then letters, digits, _ . -"
        )
    return name


def authorize(identity: Identity | None, context: DecisionContext, decision_id: str) -> None:
    """Raise :class:`FeedbackForbidden` unless ``identity`` may rate the decision.

    ``None`` is an in-process caller (the SDK): trusted. A decision made without a key (no
    proxy auth) can be rated by any authenticated caller.
    """
    if identity is None or identity.is_admin or context.key_hash is None:
        return
    if identity.key_hash is not None and identity.key_hash == context.key_hash:
        return
    if identity.team_admin and identity.team_id is not None and identity.team_id == context.team_id:
        return
    raise FeedbackForbidden(
        f"decision {decision_id!r} was made for another key: only that key, an admin of its "
        "team or a proxy admin may rate it"
    )
