"""Experiment settings and sticky, deterministic assignment of units to variants.

    >>> exp = Experiment(ExperimentSettings.model_validate({
    ...     "name": "router-v2", "salt": "2024-06-router-v2", "unit": "user",
    ...     "variants": [{"name": "control", "weight": 90, "control": True, "mode": "shuffle"},
    ...                  {"name": "learned", "weight": 10, "router": "./router-v2"}]}))
    >>> exp.assign("alice")
    'control'

**Buckets.** A unit value (the request's user, team or key, or for ``unit: request`` the id
of the request's *first* decision, so retries stay in the request's arm) is hashed to one
of ``BUCKETS`` = 10,000 buckets by :func:`bucket`: SHA-256 of the UTF-8 bytes of the salt, one
0x00 byte, and the UTF-8 bytes of the unit value; the first 8 bytes of the digest read as a
big-endian unsigned integer, modulo 10,000. The same salt and unit give the same bucket in
every process and version; a new salt reshuffles everything (a new experiment).

**Layout.** The buckets are cut into ``slots`` equal regions (slot ``j`` is buckets
``[j * 10000 // slots, (j + 1) * 10000 // slots)``). Each non-control variant owns one slot
(``slot``, default: its position among the non-control variants) and takes
``round(weight * 100)`` buckets from the start of it; every other bucket is control's.
Changing a variant's weight therefore only grows or shrinks its own region at its far end:

* raising a variant's weight (taken from control) moves units only from control to it;
* lowering it moves units only from it to control;
* adding a variant in a free slot (weight taken from control) moves only control units.

Limits, validated: at most ``slots`` non-control variants, each at most one slot
(``100 / slots`` percent: 50% with the default 2 slots); weights resolve to whole buckets
(0.01%). Changing ``slots``, ``salt`` or a variant's ``slot`` re-buckets units: fix them for the
experiment's lifetime. Retire a variant by setting its weight to 0 (or keep the other
variants' ``slot`` explicit when removing it).

**Missing unit.** A request without the unit's identity (no end user, say) is served by
control and counted in :attr:`Experiment.missing`; it cannot be sticky, and all such
requests land in control, so the serving side should keep them out of the analysed arm
if they are a different population (log them without a variant).

Logged variants are labelled ``<experiment>/<variant>`` (:meth:`Experiment.label`), so one
log can hold several experiments; :func:`split_label` reads a label back.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BUCKETS = 10_000
MAX_SLOTS = 100  # 1% per variant at most: finer slots leave too few buckets to be useful
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"  # no "/" (label separator) and no whitespace

Unit = Literal["user", "team", "key", "request"]
Mode = Literal["route", "cheapest", "shuffle"]
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=_NAME)]


class _Strict(BaseModel):
    # A typo in an experiment must fail at start-up, not silently run another experiment.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class VariantSettings(_Strict):
    """One arm: its share of units and what it changes (unset: the group's own settings)."""

    name: Name = Field(description="variant name (in metrics, logs and the report)")
    weight: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] = Field(
        description="percent of units"
    )
    control: bool = Field(default=False, description="the baseline; exactly one variant")
    slot: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="bucket region (default: position among non-control)"
    )
    router: Path | None = Field(default=None, description="this variant's router artifact")
    lam: Annotated[float, Field(ge=0)] | None = Field(
        default=None, alias="lambda", description="this variant's lambda (or inf)"
    )
    target: str | None = Field(default=None, description="this variant's calibrated target")
    exploration: dict[str, Any] | None = Field(
        default=None, description="this variant's exploration settings"
    )
    mode: Mode | None = Field(default=None, description="this variant's mode")

    @field_validator("target")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        if value is not None:
            from routeiq.decision.targets import parse_target

            parse_target(value)  # ValueError names the accepted forms
        return value

    @model_validator(mode="after")
    def _one_tradeoff(self) -> VariantSettings:
        if self.lam is not None and self.target is not None:
            raise ValueError(f"variant {self.name!r}: set either 'lambda' or 'target', not both")
        if self.control and self.slot is not None:
            raise ValueError(f"variant {self.name!r}: control gets the free buckets, no slot")
        return self


class ExperimentSettings(_Strict):
    """An experiment: who is bucketed (``unit``), how (``salt``), and its variants."""

    name: Name = Field(description="experiment name (in metrics, logs and the report)")
    salt: Annotated[str, Field(min_length=1)] = Field(
        description="bucketing salt; a new salt reshuffles every unit"
    )
    unit: Unit = Field(default="user", description="who is bucketed: user, team, key or request")
    slots: Annotated[int, Field(ge=1, le=MAX_SLOTS)] = Field(
        default=2, description="bucket regions; each non-control variant gets at most one"
    )
    variants: Annotated[list[VariantSettings], Field(min_length=2)] = Field(
        description="the arms, one with control: true; weights sum to 100"
    )

    @model_validator(mode="after")
    def _layout(self) -> ExperimentSettings:
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(dupes)}")
        controls = [v.name for v in self.variants if v.control]
        if len(controls) != 1:
            found = ", ".join(controls) or "none"
            raise ValueError(f"exactly one variant must have control: true (found: {found})")
        total = sum(v.weight for v in self.variants)
        if abs(total - 100.0) > 1e-9:
            parts = " + ".join(f"{v.name} {v.weight:g}" for v in self.variants)
            raise ValueError(f"variant weights must sum to 100, got {total:.10g} ({parts})")
        others = [v for v in self.variants if not v.control]
        if len(others) > self.slots:
            raise ValueError(
                f"{len(others)} non-control variants but slots is {self.slots}; raise "
                "'slots' (each variant may then take at most 100/slots percent)"
            )
        taken: dict[int, str] = {}
        for v, slot in zip(others, self.variant_slots().values(), strict=True):
            if slot >= self.slots:
                raise ValueError(f"variant {v.name!r}: slot {slot} >= slots ({self.slots})")
            if slot in taken:
                raise ValueError(f"variants {taken[slot]!r} and {v.name!r} share slot {slot}")
            taken[slot] = v.name
            room = _slot_range(slot, self.slots)
            if _size(v.weight) > room[1] - room[0]:
                raise ValueError(
                    f"variant {v.name!r}: weight {v.weight:g}% exceeds its slot "
                    f"({100 / self.slots:g}% with {self.slots} slots); raise 'slots' to "
                    "allow more variants, or lower 'slots' to allow larger ones"
                )
        return self

    @property
    def control(self) -> VariantSettings:
        return next(v for v in self.variants if v.control)

    def variant(self, name: str) -> VariantSettings:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def variant_slots(self) -> dict[str, int]:
        """Slot of each non-control variant (explicit, or its position among them)."""
        others = [v for v in self.variants if not v.control]
        return {v.name: v.slot if v.slot is not None else i for i, v in enumerate(others)}


def bucket(salt: str, unit_value: str) -> int:
    """``int(sha256(utf8(salt) + b"\\x00" + utf8(unit))[:8], big-endian) % 10000``."""
    digest = hashlib.sha256(salt.encode() + b"\x00" + unit_value.encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def split_label(label: str) -> tuple[str | None, str]:
    """``"exp/variant"`` -> ``("exp", "variant")``; a bare ``"variant"`` -> ``(None, ...)``."""
    experiment, sep, variant = label.rpartition("/")
    return (experiment, variant) if sep else (None, label)


class Experiment:
    """Assigns unit values to variants (see the module docstring for the layout)."""

    def __init__(self, settings: ExperimentSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.control = settings.control.name
        table = [self.control] * BUCKETS
        slots = settings.variant_slots()
        for v in settings.variants:
            if not v.control:
                start, _ = _slot_range(slots[v.name], settings.slots)
                table[start : start + _size(v.weight)] = [v.name] * _size(v.weight)
        self._table = tuple(table)
        self._missing = 0
        self._lock = threading.Lock()

    @property
    def missing(self) -> int:
        """Requests assigned to control because their unit value was missing."""
        return self._missing

    def assign(self, unit_value: str | None) -> str:
        """The variant of a unit (control when ``unit_value`` is None or empty)."""
        if not unit_value:
            with self._lock:
                self._missing += 1
            return self.control
        return self._table[bucket(self.settings.salt, unit_value)]

    def label(self, variant: str) -> str:
        """What the decision log records as the variant: ``<experiment>/<variant>``."""
        return f"{self.name}/{variant}"

    def ranges(self) -> dict[str, list[tuple[int, int]]]:
        """Each variant's buckets as half-open ``[start, end)`` ranges, in bucket order."""
        out: dict[str, list[tuple[int, int]]] = {v.name: [] for v in self.settings.variants}
        start = 0
        for i in range(1, BUCKETS + 1):
            if i == BUCKETS or self._table[i] != self._table[start]:
                out[self._table[start]].append((start, i))
                start = i
        return out

    def __repr__(self) -> str:
        shares = ", ".join(f"{v.name}={v.weight:g}%" for v in self.settings.variants)
        return f"Experiment({self.name!r}, unit={self.settings.unit}, {shares})"


def _slot_range(slot: int, slots: int) -> tuple[int, int]:
    return slot * BUCKETS // slots, (slot + 1) * BUCKETS // slots


def _size(weight: float) -> int:
    return round(weight * BUCKETS / 100)
