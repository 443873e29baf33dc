"""One routing decision, from the decision rule to the log: :class:`Decision`.

Every front end (``LearnedRouter.route``, the LiteLLM strategy, the CLI) returns this type;
span attributes, metrics labels, response headers and the JSONL record are views of it. The
rules that make one are in :mod:`routeiq.decision.rules`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

# What produced a decision (the ``outcome`` label of metrics, spans and headers).
ROUTED, FALLBACK, PINNED, CHEAPEST, SHUFFLE = "routed", "fallback", "pinned", "cheapest", "shuffle"


def num(value: float | None) -> float | None:
    """A JSON-safe float: None for None, NaN and inf."""
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class CandidateRow:
    """One candidate as the decision saw it."""

    name: str  # what the decision returns (a deployment id in the gateway)
    model: str  # the model the router knows it as
    predicted_quality: float | None = None
    cost: float | None = None
    utility: float | None = None  # None when lambda is inf (lexicographic rule) or no data
    probability: float = 0.0  # probability that the rule picks this candidate
    available: bool = True
    excluded: str | None = None  # why an unavailable candidate could not be picked
    mapped_from: str | None = None  # known model whose prediction stood in (unknown model)
    # "prefix" | "alias" | "price_prior" | "mean" when mapped_from is set
    mapping_rule: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "predicted_quality": num(self.predicted_quality),
            "cost": num(self.cost),
            "utility": num(self.utility),
            "probability": self.probability,
            "available": self.available,
            "excluded": self.excluded,
            "mapped_from": self.mapped_from,
            "mapping_rule": self.mapping_rule,
        }


@dataclass(frozen=True)
class Decision:
    """Which candidate was chosen, how, and why (JSON-able via :meth:`to_dict`).

    ``lam`` is None for rules that do not use a trade-off (shuffle, pinned). ``id``,
    ``group``, ``router`` (artifact digest), ``attempt`` (1 = first try of the request, 2+ =
    retries and fallback hops), ``override`` (client override status) and ``variant``
    (experiment arm) are set by the serving engine.
    """

    chosen: str
    model: str
    lam: float | None
    rule: str
    candidates: tuple[CandidateRow, ...] = ()
    outcome: str = ROUTED
    fallback_reason: str | None = None
    id: str | None = None
    group: str | None = None
    router: str | None = None
    attempt: int = 1
    override: str | None = None
    variant: str | None = None
    greedy: str | None = None  # the greedy choice, when an exploring policy decided

    @property
    def explored(self) -> bool:
        """True when an exploring policy picked something other than the greedy choice."""
        return self.greedy is not None and self.greedy != self.chosen

    @property
    def chosen_row(self) -> CandidateRow | None:
        return next((row for row in self.candidates if row.name == self.chosen), None)

    @property
    def propensity(self) -> float:
        """Probability with which the rule picked the chosen candidate (off-policy weights)."""
        row = self.chosen_row
        return row.probability if row is not None and row.probability > 0 else 1.0

    def with_context(self, **fields: Any) -> Decision:
        """A copy with serving fields set (id, group, router, attempt, override, ...)."""
        return replace(self, **fields)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types. ``lambda`` is the string ``"inf"`` for the cheapest rule."""
        lam = self.lam
        return {
            "id": self.id,
            "group": self.group,
            "chosen": self.chosen,
            "model": self.model,
            "lambda": lam if lam is None or math.isfinite(lam) else "inf",
            "rule": self.rule,
            "outcome": self.outcome,
            "fallback_reason": self.fallback_reason,
            "propensity": self.propensity,
            "router": self.router,
            "attempt": self.attempt,
            "override": self.override,
            "variant": self.variant,
            "greedy": self.greedy,
            "candidates": [row.to_dict() for row in self.candidates],
        }

    def to_record(self, prompt: Any = None) -> dict[str, Any]:
        """The decision-log record (:class:`routeiq.data.records.RouteRecord` fields)."""
        lam = self.lam
        rows = []
        for row in self.candidates:
            item: dict[str, Any] = {
                "model": row.model,
                "deployment": row.name,
                "predicted_quality": num(row.predicted_quality),
                "cost": num(row.cost),
                "probability": row.probability,
            }
            if row.excluded:
                item["excluded"] = row.excluded
            rows.append(item)
        decision = {
            "candidates": rows,
            "chosen": self.model,
            "deployment": self.chosen,
            "propensity": self.propensity,
            "lambda": lam if lam is not None and math.isfinite(lam) else None,
            "cheapest": True if lam is not None and math.isinf(lam) else None,
            "router": self.router,
            "rule": self.rule,
            "outcome": self.outcome,
            "fallback_reason": self.fallback_reason,
            "group": self.group,
            "attempt": self.attempt,
            "override": self.override,
            "variant": self.variant,
            "greedy": self.greedy,
        }
        record: dict[str, Any] = {"id": self.id, "decision": decision}
        if prompt is not None:
            record["prompt"] = prompt
        return record

    def _table_rows(self) -> list[list[str]]:
        def fmt(value: float | None, spec: str) -> str:
            return "-" if value is None else format(value, spec)

        rows = []
        for row in self.candidates:
            mark = "*" if row.name == self.chosen else ("x" if not row.available else "")
            note = f"{row.mapping_rule}: {row.mapped_from}" if row.mapped_from else ""
            if row.excluded:
                note = f"{note}; {row.excluded}" if note else row.excluded
            rows.append(
                [
                    mark,
                    row.name,
                    row.model,
                    fmt(row.predicted_quality, ".4f"),
                    fmt(row.cost, ".3g"),
                    fmt(row.utility, ".4f"),
                    note,
                ]
            )
        return rows

    _HEADER = ("", "candidate", "model", "quality", "cost $", "utility", "note")

    def caption(self) -> str:
        lam = "-" if self.lam is None else f"{self.lam:g}"
        text = f"lambda={lam}; {self.rule}"
        return text + (f"; fallback: {self.fallback_reason}" if self.fallback_reason else "")

    def __str__(self) -> str:
        head = f"chosen {self.chosen} ({self.model}); {self.caption()}"
        rows = [list(self._HEADER), *self._table_rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._HEADER))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        ]
        return "\n".join([head, *lines])

    def __rich__(self) -> Any:
        from rich.table import Table  # lazy: rich is only needed when printing

        table = Table(title=f"chosen {self.chosen} ({self.model})", caption=self.caption())
        for col in self._HEADER:
            table.add_column(col)
        for row in self._table_rows():
            table.add_row(*row)
        return table
