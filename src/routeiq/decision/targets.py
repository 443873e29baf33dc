"""Operator targets: what a calibrated lambda must achieve.

``quality>=X`` (:class:`QualityTarget`: at least X of the best single model's true quality),
``budget<=Y`` (:class:`BudgetTarget`: at most $Y per 1,000 requests) and ``expensive<=Z``
(:class:`ExpensiveShareTarget`: at most Z of calls to the most expensive model), parsed from
text by :func:`parse_target`. :mod:`routeiq.decision.calibrate` fits lambda to them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class QualityTarget:
    """At least ``fraction`` of the best single model's (true) quality, e.g. 1.0 or 0.95."""

    fraction: float
    kind = "quality"

    def __post_init__(self) -> None:
        f = finite_number("QualityTarget.fraction", self.fraction)
        if not 0 < f <= 2:
            raise ValueError(
                f"QualityTarget.fraction must be in (0, 2], got {f} "
                "(1.0 = match the best single model, 0.95 = 95% of it)"
            )
        object.__setattr__(self, "fraction", f)

    def __str__(self) -> str:
        return f"quality>={self.fraction:g}"

    def describe(self) -> str:
        return f"at least {self.fraction:.0%} of the best single model's quality"

    def rule(self, lam: float) -> str:
        return (
            f"target: {self.fraction * 100:g}% of best single model quality, "
            f"calibrated lambda={lam:.6g}"
        )


@dataclass(frozen=True)
class BudgetTarget:
    """At most ``usd_per_1k`` dollars per 1,000 requests on average."""

    usd_per_1k: float
    kind = "budget"

    def __post_init__(self) -> None:
        v = finite_number("BudgetTarget.usd_per_1k", self.usd_per_1k)
        if v < 0:
            raise ValueError(f"BudgetTarget.usd_per_1k must be >= 0, got {v}")
        object.__setattr__(self, "usd_per_1k", v)

    def __str__(self) -> str:
        return f"budget<={self.usd_per_1k:g}"

    def describe(self) -> str:
        return f"at most ${self.usd_per_1k:g} per 1k requests"

    def rule(self, lam: float) -> str:
        return f"target: at most ${self.usd_per_1k:g} per 1k requests, calibrated lambda={lam:.6g}"


@dataclass(frozen=True)
class ExpensiveShareTarget:
    """At most ``max_share`` (0-1) of calls to the most expensive model."""

    max_share: float
    kind = "expensive"

    def __post_init__(self) -> None:
        v = finite_number("ExpensiveShareTarget.max_share", self.max_share)
        if not 0 <= v <= 1:
            raise ValueError(f"ExpensiveShareTarget.max_share must be in [0, 1], got {v}")
        object.__setattr__(self, "max_share", v)

    def __str__(self) -> str:
        return f"expensive<={self.max_share:g}"

    def describe(self) -> str:
        return f"at most {self.max_share:.0%} of calls to the most expensive model"

    def rule(self, lam: float) -> str:
        return (
            f"target: at most {self.max_share * 100:g}% of calls to the most expensive "
            f"model, calibrated lambda={lam:.6g}"
        )


Target = QualityTarget | BudgetTarget | ExpensiveShareTarget


def finite_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


_TARGET_RE = re.compile(
    r"^\s*(?P<kind>[a-z_]+)\s*(?P<op><=|>=|=<|=>|<|>|=)?\s*(?P<dollar>\$)?\s*"
    r"(?P<num>[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(?P<pct>%)?\s*$",
    re.IGNORECASE,
)
_FORMS = '"quality>=0.95" (or 95%), "budget<=0.5" (USD per 1k requests), "expensive<=0.2"'


def parse_target(text: str) -> Target:
    """Parse ``quality>=X``, ``budget<=Y`` or ``expensive<=Z`` (``%`` allowed on X and Z)."""
    if not isinstance(text, str):
        raise ValueError(f"target must be a string like {_FORMS}, got {text!r}")
    match = _TARGET_RE.match(text)
    if not match:
        raise ValueError(f"cannot parse target {text!r}; expected one of {_FORMS}")
    kind, op = match["kind"].lower(), match["op"]
    value = float(match["num"])
    want = {"quality": ">=", "budget": "<=", "expensive": "<="}.get(kind)
    if want is None:
        raise ValueError(f"unknown target {kind!r} in {text!r}; expected one of {_FORMS}")
    if op is None or op.replace("=<", "<=").replace("=>", ">=") != want:
        raise ValueError(
            f"target {text!r}: use {kind}{want}VALUE (a {kind} target is "
            f"{'a floor' if want == '>=' else 'a ceiling'})"
        )
    if match["dollar"] and kind != "budget":
        raise ValueError(f"target {text!r}: '$' only applies to budget")
    if match["pct"]:
        if kind == "budget":
            raise ValueError(f"target {text!r}: budget is in USD per 1k requests, not a percent")
        value /= 100.0
    if kind == "quality":
        return QualityTarget(value)
    if kind == "budget":
        return BudgetTarget(value)
    return ExpensiveShareTarget(value)
