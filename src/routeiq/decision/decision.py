"""One routing decision, from the decision rule to the log: :class:`Decision`.

Every front end (``LearnedRouter.route``, the LiteLLM strategy, the CLI) returns this type;
span attributes, metrics labels, response headers and the JSONL record are views of it.
Three rules make one:

* :func:`decide`: the learned rule, max ``predicted quality - lambda * cost``
  (:mod:`routeiq.decision.choice`);
* :func:`cheapest`: the lowest known cost (unknown costs last, ties to the first candidate),
  used for ``mode: cheapest`` and as the fallback when the learned rule cannot run;
* :func:`shuffle`: random in proportion to candidate weights (LiteLLM's ``simple-shuffle``),
  with the chosen candidate's real probability as its propensity.

Candidates that are not available (``available=False``: for example a deployment that already
failed in this request) stay in the decision with probability 0 and the reason.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from routeiq.decision.choice import check_lambda, choose_one

DEFAULT_RULE = "max predicted quality - lambda*cost"
CHEAPEST_RULE = "cheapest (lambda=inf): min cost, ties -> higher predicted quality"
LOWEST_COST_RULE = "lowest known cost (unknown last, ties -> first)"
SHUFFLE_RULE = "random, in proportion to deployment weights"

# What produced a decision (the ``outcome`` label of metrics, spans and headers).
ROUTED, FALLBACK, PINNED, CHEAPEST, SHUFFLE = "routed", "fallback", "pinned", "cheapest", "shuffle"


def _num(value: float | None) -> float | None:
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
    mapping_rule: str | None = None  # "alias" | "price_prior" | "mean" when mapped_from is set

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "predicted_quality": _num(self.predicted_quality),
            "cost": _num(self.cost),
            "utility": _num(self.utility),
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
                "predicted_quality": _num(row.predicted_quality),
                "cost": _num(row.cost),
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


def _check_names(names: Sequence[str], models: Sequence[str]) -> tuple[list[str], list[str]]:
    names, models = [str(n) for n in names], [str(m) for m in models]
    if not names:
        raise ValueError("no candidates to choose from")
    if len(models) != len(names):
        raise ValueError(f"{len(names)} candidate names but {len(models)} models")
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names must be unique, got {names}")
    return names, models


def _mask(available: Sequence[bool] | None, m: int) -> list[bool]:
    avail = [True] * m if available is None else [bool(a) for a in available]
    if len(avail) != m:
        raise ValueError(f"available must have {m} entries, got {len(avail)}")
    if not any(avail):
        raise ValueError("no available candidate")
    return avail


def decide(
    names: Sequence[str],
    models: Sequence[str],
    quality: Any,
    cost: Any,
    lam: float,
    rule: str | None = None,
    *,
    available: Sequence[bool] | None = None,
    excluded: Sequence[str | None] | None = None,
    mapped_from: Sequence[str | None] | None = None,
    mapping_rules: Sequence[str | None] | None = None,
) -> Decision:
    """The learned rule for one request over ``m`` candidates.

    ``quality`` and ``cost`` are (m,) (cost in USD for this request); ``available`` an
    optional mask with ``excluded`` reasons; ``mapped_from``/``mapping_rules`` come from
    :func:`routeiq.decision.unknown.resolve_candidates`.
    """
    lam = check_lambda(lam)
    names, models = _check_names(names, models)
    m = len(names)
    q = np.asarray(quality, dtype=np.float64).reshape(-1)
    c = np.asarray(cost, dtype=np.float64).reshape(-1)
    if q.shape != (m,) or c.shape != (m,):
        raise ValueError(f"quality {q.shape} and cost {c.shape} must both have shape ({m},)")
    avail = _mask(available, m)
    why = list(excluded) if excluded is not None else [None] * m
    mapped = list(mapped_from) if mapped_from is not None else [None] * m
    how = list(mapping_rules) if mapping_rules is not None else [None] * m
    if not len(why) == len(mapped) == len(how) == m:
        raise ValueError(f"excluded, mapped_from and mapping_rules must have {m} entries")
    try:
        idx = choose_one(q, c, lam, np.array(avail))
    except ValueError as exc:
        raise ValueError(f"cannot decide among {names}: {exc}") from None
    rows = []
    for j in range(m):
        util = None
        if not math.isinf(lam) and math.isfinite(q[j]) and math.isfinite(c[j]):
            util = float(q[j] - lam * c[j])
        rows.append(
            CandidateRow(
                name=names[j],
                model=models[j],
                predicted_quality=_num(float(q[j])),
                cost=_num(float(c[j])),
                utility=util,
                probability=1.0 if j == idx else 0.0,
                available=avail[j],
                excluded=None if avail[j] else why[j],
                mapped_from=mapped[j],
                mapping_rule=how[j] if mapped[j] else None,
            )
        )
    if rule is None:
        rule = CHEAPEST_RULE if math.isinf(lam) else DEFAULT_RULE
    return Decision(
        chosen=names[idx], model=models[idx], lam=lam, rule=rule, candidates=tuple(rows)
    )


def _plain_rows(
    names: list[str],
    models: list[str],
    costs: Sequence[float | None],
    probabilities: Sequence[float],
    avail: list[bool],
    excluded: Sequence[str | None] | None,
) -> tuple[CandidateRow, ...]:
    why = list(excluded) if excluded is not None else [None] * len(names)
    return tuple(
        CandidateRow(
            name=names[j],
            model=models[j],
            cost=_num(costs[j]),
            probability=float(probabilities[j]),
            available=avail[j],
            excluded=None if avail[j] else why[j],
        )
        for j in range(len(names))
    )


def cheapest(
    names: Sequence[str],
    models: Sequence[str],
    costs: Sequence[float | None],
    *,
    outcome: str = CHEAPEST,
    fallback_reason: str | None = None,
    lam: float | None = None,
    available: Sequence[bool] | None = None,
    excluded: Sequence[str | None] | None = None,
) -> Decision:
    """The lowest known cost among the available candidates (unknown costs last, ties to the
    first): ``mode: cheapest``, and the fallback when the learned rule cannot run."""
    names, models = _check_names(names, models)
    avail = _mask(available, len(names))
    known = [c is not None and math.isfinite(c) for c in costs]
    order = sorted(
        (j for j in range(len(names)) if avail[j]),
        key=lambda j: (not known[j], costs[j] if known[j] else 0.0, j),
    )
    j = order[0]
    probs = [1.0 if k == j else 0.0 for k in range(len(names))]
    return Decision(
        chosen=names[j],
        model=models[j],
        lam=lam,
        rule=LOWEST_COST_RULE,
        candidates=_plain_rows(names, models, costs, probs, avail, excluded),
        outcome=outcome,
        fallback_reason=fallback_reason,
    )


def shuffle(
    names: Sequence[str],
    models: Sequence[str],
    costs: Sequence[float | None],
    rng: random.Random,
    *,
    weights: Sequence[float] | None = None,
    available: Sequence[bool] | None = None,
    excluded: Sequence[str | None] | None = None,
    outcome: str = SHUFFLE,
    fallback_reason: str | None = None,
) -> Decision:
    """Random among the available candidates in proportion to ``weights`` (default equal)."""
    names, models = _check_names(names, models)
    m = len(names)
    avail = _mask(available, m)
    w = [1.0] * m if weights is None else [float(x) for x in weights]
    if len(w) != m or any(not math.isfinite(x) or x < 0 for x in w):
        raise ValueError(f"weights must be {m} finite numbers >= 0, got {weights}")
    w = [x if a else 0.0 for x, a in zip(w, avail, strict=True)]
    total = sum(w)
    if total <= 0:  # every available weight is 0: equal chances
        w, total = [1.0 if a else 0.0 for a in avail], float(sum(avail))
    probs = [x / total for x in w]
    j = rng.choices(range(m), weights=probs)[0]
    return Decision(
        chosen=names[j],
        model=models[j],
        lam=None,
        rule=SHUFFLE_RULE,
        candidates=_plain_rows(names, models, costs, probs, avail, excluded),
        outcome=outcome,
        fallback_reason=fallback_reason,
    )


def pinned(name: str, model: str, cost: float | None = None) -> Decision:
    """The caller named one deployment: no choice was made."""
    row = CandidateRow(name=name, model=model, cost=_num(cost), probability=1.0)
    return Decision(
        chosen=name,
        model=model,
        lam=None,
        rule="pinned by the caller",
        candidates=(row,),
        outcome=PINNED,
    )
