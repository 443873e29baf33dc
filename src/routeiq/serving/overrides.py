"""Per-request trade-off: the group's lambda or target, or a client override where allowed.

A client may send ``metadata.routeiq`` = ``"cheapest"``, ``"best"`` (lambda 0),
``{"lambda": 5.0}`` or ``{"target": "quality>=0.9"}``. It applies only where the group sets
``allow_client_overrides: true``; elsewhere it is ignored and the decision says so
(``override: ignored``). A malformed override where allowed is an :class:`OverrideError`
(HTTP 400 on the proxy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from routeiq.decision.choice import check_lambda
from routeiq.decision.targets import parse_target
from routeiq.serving.settings import ResolvedGroup

OVERRIDE_KEY = "routeiq"  # request metadata key a client uses for overrides
_FORMS = 'Use "cheapest", "best", {"lambda": <number >= 0>} or {"target": "quality>=0.9"}'


class OverrideError(ValueError):
    """A client override that is allowed but malformed."""


@dataclass(frozen=True)
class Tradeoff:
    """lambda or target for one request (both None: the router's own), and the override
    status (None: no override sent; "ignored"; or the kind applied)."""

    lam: float | None
    target: str | None
    override: str | None = None


def resolve_tradeoff(group: ResolvedGroup, override: Any) -> Tradeoff:
    """The trade-off of one request in ``group`` given the client's ``override`` (or None)."""
    if override is None:
        return Tradeoff(group.lam, group.target)
    if not group.allow_client_overrides:
        return Tradeoff(group.lam, group.target, "ignored")

    def bad(why: str) -> OverrideError:
        return OverrideError(
            f"invalid metadata.routeiq override for model group {group.name!r}: {why}. {_FORMS}"
        )

    if override == "cheapest":
        return Tradeoff(math.inf, None, "cheapest")
    if override == "best":
        return Tradeoff(0.0, None, "best")
    if not isinstance(override, Mapping) or len(override) != 1:
        raise bad(f"got {override!r}"[:300])
    key, value = next(iter(override.items()))
    if key == "lambda":
        try:
            return Tradeoff(check_lambda(value), None, "lambda")
        except ValueError as exc:
            raise bad(str(exc)) from None
    if key == "target":
        try:
            parse_target(value)
        except ValueError as exc:
            raise bad(str(exc)) from None
        return Tradeoff(None, value, "target")
    raise bad(f"unknown key {key!r}"[:300])
