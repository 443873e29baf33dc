"""Cost-aware choice: ``utility = predicted quality - lambda * cost`` (cost in USD per request).

``lambda`` is the willingness to pay: quality points given up per dollar saved. ``lambda = 0``
picks the best predicted quality, ``lambda = inf`` the cheapest candidate. Ties go to the
cheaper candidate, then to the lower index, so every choice is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Utilities closer than this (relative to the best one) count as tied: q - lam*c computed in
# floating point can differ in the last bits for choices that are equal on paper.
TIE_RTOL = 1e-12

DEFAULT_RULE = "max predicted quality - lambda*cost"
CHEAPEST_RULE = "cheapest (lambda=inf): min cost, ties -> higher predicted quality"


def check_lambda(lam: Any) -> float:
    """``lam`` as a float; ``ValueError`` unless it is >= 0 (finite, or ``inf`` = cheapest)."""
    if isinstance(lam, bool) or not isinstance(lam, int | float | np.integer | np.floating):
        raise ValueError(f"lambda must be a number >= 0, got {lam!r} ({type(lam).__name__})")
    value = float(lam)
    if math.isnan(value) or value < 0:
        raise ValueError(
            f"lambda must be finite and >= 0 (or inf to always pick the cheapest), got {value!r}"
        )
    return value


def _as_matrix(name: str, values: Any) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, m) array, got shape {arr.shape}")
    return arr


def _check_finite(name: str, arr: np.ndarray, avail: np.ndarray) -> None:
    bad = avail & ~np.isfinite(arr)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite (NaN/inf) value(s) at available "
            f"candidates, first at row {row}, column {col}: {arr[row, col]!r}"
        )


def _validate(quality: Any, cost: Any, available: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q, c = _as_matrix("quality", quality), _as_matrix("cost", cost)
    if c.shape != q.shape:
        raise ValueError(f"cost has shape {c.shape}, quality has shape {q.shape}")
    if q.shape[1] == 0:
        raise ValueError("no candidate models (m = 0)")
    if available is None:
        avail = np.ones(q.shape, dtype=bool)
    else:
        avail = np.asarray(available)
        if avail.dtype != np.bool_:
            raise ValueError(f"available must be a boolean mask, got dtype {avail.dtype}")
        if avail.shape != q.shape:
            raise ValueError(f"available has shape {avail.shape}, quality has shape {q.shape}")
    empty = ~avail.any(axis=1)
    if empty.any():
        raise ValueError(
            f"{int(empty.sum())} row(s) have no available candidate, "
            f"first row {int(empty.argmax())}"
        )
    _check_finite("quality", q, avail)
    _check_finite("cost", c, avail)
    return q, c, avail


def _choose(q: np.ndarray, c: np.ndarray, lam: float, avail: np.ndarray) -> np.ndarray:
    """The choice on already validated inputs (the calibration sweep calls this directly)."""
    # Unavailable entries may hold NaN/inf; neutralise them so the arithmetic stays quiet.
    q = np.where(avail, q, 0.0)
    c = np.where(avail, c, 0.0)
    if math.isinf(lam):
        cmin = np.where(avail, c, np.inf).min(axis=1, keepdims=True)
        tied = avail & (c == cmin)
        qmax = np.where(tied, q, -np.inf).max(axis=1, keepdims=True)
        pick = tied & (q == qmax)
    else:
        u = np.where(avail, q - lam * c, -np.inf)
        best = u.max(axis=1, keepdims=True)
        tied = avail & (u >= best - TIE_RTOL * np.maximum(1.0, np.abs(best)))
        cmin = np.where(tied, c, np.inf).min(axis=1, keepdims=True)
        pick = tied & (c == cmin)
    return pick.argmax(axis=1)  # first True = lowest index among the tied


def choose_indices(quality: Any, cost: Any, lam: float, available: Any = None) -> np.ndarray:
    """Index of the chosen model per row, for evaluation sweeps.

    ``quality`` and ``cost`` are (n, m); ``available`` an optional (n, m) boolean mask (values
    at unavailable entries may be NaN). Returns (n,) int64. Ties: cheaper, then lower index;
    with ``lam = inf``: cheapest, ties to higher quality, then lower index.
    """
    lam = check_lambda(lam)
    q, c, avail = _validate(quality, cost, available)
    return _choose(q, c, lam, avail)


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class CandidateRow:
    """One candidate as the decision saw it."""

    name: str
    model: str
    predicted_quality: float | None
    cost: float | None
    utility: float | None  # None when lambda is inf (the rule is then lexicographic) or no data
    available: bool = True
    mapped_from: str | None = None  # known model whose prediction stood in (unknown-model rule)
    mapping_rule: str | None = None  # "alias" | "price_prior" | "mean" when mapped_from is set

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "predicted_quality": _num(self.predicted_quality),
            "cost": _num(self.cost),
            "utility": _num(self.utility),
            "available": self.available,
            "mapped_from": self.mapped_from,
            "mapping_rule": self.mapping_rule,
        }


@dataclass(frozen=True)
class Decision:
    """Which candidate was chosen, and why (JSON-able via :meth:`to_dict`)."""

    chosen: str
    model: str
    lam: float
    rule: str
    candidates: tuple[CandidateRow, ...] = ()
    fallback_reason: str | None = None

    @property
    def chosen_row(self) -> CandidateRow | None:
        return next((row for row in self.candidates if row.name == self.chosen), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types. ``lambda`` is the string ``"inf"`` for the cheapest rule."""
        return {
            "chosen": self.chosen,
            "model": self.model,
            "lambda": self.lam if math.isfinite(self.lam) else "inf",
            "rule": self.rule,
            "fallback_reason": self.fallback_reason,
            "candidates": [row.to_dict() for row in self.candidates],
        }

    def _table_rows(self) -> list[list[str]]:
        def fmt(value: float | None, spec: str) -> str:
            return "-" if value is None else format(value, spec)

        rows = []
        for row in self.candidates:
            mark = "*" if row.name == self.chosen else ("x" if not row.available else "")
            mapped = f"{row.mapping_rule}: {row.mapped_from}" if row.mapped_from else ""
            rows.append(
                [
                    mark,
                    row.name,
                    row.model,
                    fmt(row.predicted_quality, ".4f"),
                    fmt(row.cost, ".3g"),
                    fmt(row.utility, ".4f"),
                    mapped,
                ]
            )
        return rows

    _HEADER = ("", "candidate", "model", "quality", "cost $", "utility", "mapped from")

    def __str__(self) -> str:
        head = f"chosen {self.chosen} ({self.model}); lambda={self.lam:g}; rule: {self.rule}"
        if self.fallback_reason:
            head += f"; fallback: {self.fallback_reason}"
        rows = [list(self._HEADER), *self._table_rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._HEADER))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        ]
        return "\n".join([head, *lines])

    def __rich__(self) -> Any:
        from rich.table import Table  # lazy: rich is only needed when printing

        table = Table(
            title=f"chosen {self.chosen} ({self.model})",
            caption=f"lambda={self.lam:g}; {self.rule}"
            + (f"; fallback: {self.fallback_reason}" if self.fallback_reason else ""),
        )
        for col in self._HEADER:
            table.add_column(col)
        for row in self._table_rows():
            table.add_row(*row)
        return table


def decide(
    names: Sequence[str],
    models: Sequence[str],
    quality: Any,
    cost: Any,
    lam: float,
    rule: str | None = None,
    *,
    available: Any = None,
    mapped_from: Sequence[str | None] | None = None,
    mapping_rules: Sequence[str | None] | None = None,
) -> Decision:
    """Choose one of ``m`` candidates for a single request.

    ``quality`` and ``cost`` are (m,) (cost in USD for this request); ``available`` an optional
    (m,) boolean mask; ``mapped_from``/``mapping_rules`` come from
    :func:`routeiq.decision.unknown.resolve_candidates`. ``rule`` is the text shown in the
    explanation (default: the plain lambda rule).
    """
    lam = check_lambda(lam)
    names, models = [str(n) for n in names], [str(m) for m in models]
    m = len(names)
    if m == 0:
        raise ValueError("no candidates to choose from")
    if len(models) != m:
        raise ValueError(f"{m} candidate names but {len(models)} models")
    if len(set(names)) != m:
        raise ValueError(f"candidate names must be unique, got {names}")
    q = np.asarray(quality, dtype=np.float64).reshape(-1)
    c = np.asarray(cost, dtype=np.float64).reshape(-1)
    if q.shape != (m,) or c.shape != (m,):
        raise ValueError(f"quality {q.shape} and cost {c.shape} must both have shape ({m},)")
    avail = None if available is None else np.asarray(available).reshape(1, -1)
    mapped = list(mapped_from) if mapped_from is not None else [None] * m
    how = list(mapping_rules) if mapping_rules is not None else [None] * m
    if len(mapped) != m or len(how) != m:
        raise ValueError(f"mapped_from and mapping_rules must have {m} entries")
    try:
        q2, c2, avail2 = _validate(q[None, :], c[None, :], avail)
    except ValueError as exc:
        raise ValueError(f"cannot decide among {names}: {exc}") from None
    idx = int(_choose(q2, c2, lam, avail2)[0])
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
                available=bool(avail2[0, j]),
                mapped_from=mapped[j],
                mapping_rule=how[j] if mapped[j] else None,
            )
        )
    if rule is None:
        rule = CHEAPEST_RULE if math.isinf(lam) else DEFAULT_RULE
    return Decision(
        chosen=names[idx], model=models[idx], lam=lam, rule=rule, candidates=tuple(rows)
    )


def fallback_decision(
    name: str,
    model: str,
    reason: str,
    lam: float = 0.0,
    candidates: Sequence[CandidateRow] = (),
) -> Decision:
    """A decision made without the router (e.g. the router failed): records why."""
    if not reason:
        raise ValueError("a fallback decision needs a reason")
    return Decision(
        chosen=name,
        model=model,
        lam=check_lambda(lam),
        rule="fallback",
        candidates=tuple(candidates),
        fallback_reason=reason,
    )
