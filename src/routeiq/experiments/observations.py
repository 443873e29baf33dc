"""Decision-log records as per-arm observations, in log order.

How records become the report's observations (one record is one attempt; see
:mod:`routeiq.serving.decision_log`):

* **requests**: decisions with ``attempt == 1`` (retries and fallback hops are later attempts
  of the same request, logged as decisions of their own).
* **errors**: a request fails when its *last* attempt fails; a status other than
  ``success``/``ok`` is a failure. Attempts of a request share no id in the log, but every
  retry follows exactly one failed attempt, so ``failed requests = failed attempts -
  retries``, per arm and at every point of the log (a retry record counts -1 failure and
  -1 known outcome for its predecessor, plus its own status). A fallback hop into a group
  outside the filter (or outside the experiment) is not seen, so such a request counts as
  failed.
* **cost, latency**: of the successful attempt, the one that answered the request (the
  gateway logs no cost for failed attempts; latency excludes time spent on them).
* **quality**: feedback on any attempt (it arrives for the answering one, whose id the
  response header carries).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from routeiq.data.records import Outcome, RouteRecord
from routeiq.experiments.assignment import split_label
from routeiq.experiments.sequential import ArmStats

OK_STATUSES = frozenset({"success", "ok"})
VALUES = ("cost", "latency_ms", "quality")


@dataclass(frozen=True)
class Observations:
    """The analysed records as columns, in log order (NaN: not observed)."""

    arm: np.ndarray  # variant index
    request: np.ndarray  # attempt == 1
    failed_delta: np.ndarray  # +1 failed attempt, -1 retry (its predecessor was not final)
    known_delta: np.ndarray  # +1 final status now known, -1 retry
    values: dict[str, np.ndarray]  # cost, latency_ms, quality


def select(
    records: Sequence[RouteRecord], experiment: str | None, group: str | None
) -> tuple[list[tuple[str, RouteRecord]], int, int, str | None]:
    """(variant, record) pairs of one experiment and group, the ignored counts, the name."""
    labelled, without = [], 0
    for rec in records:
        if rec.decision is None or not rec.decision.variant:
            without += 1
            continue
        labelled.append((*split_label(rec.decision.variant), rec.decision.group, rec))
    if not labelled:
        raise ValueError(
            f"no decision in the log has a variant ({without} records without one): "
            "is an experiment configured?"
        )
    found = sorted({e or "" for e, _, _, _ in labelled})
    if experiment is None and len(found) > 1:
        listed = ", ".join(e or "(unnamed)" for e in found)
        raise ValueError(
            f"the log holds several experiments ({listed}); pick one with --experiment"
        )
    if experiment is None:
        experiment = found[0] or None
    elif experiment not in found:
        listed = ", ".join(e or "(unnamed)" for e in found)
        raise ValueError(f"no records of experiment {experiment!r} (experiments: {listed})")
    kept = [
        (v, rec)
        for e, v, g, rec in labelled
        if (e or None) == experiment and (group is None or g == group)
    ]
    if not kept:
        raise ValueError(f"no records with a variant in group {group!r}")
    return kept, without, len(labelled) - len(kept), experiment


def outcome(rec: RouteRecord) -> Outcome | None:
    assert rec.decision is not None
    found = rec.outcomes.get(rec.decision.chosen)
    if found is None and len(rec.outcomes) == 1:  # logged under another key (a deployment)
        found = next(iter(rec.outcomes.values()))
    return found


def observations(kept: list[tuple[str, RouteRecord]], names: list[str]) -> Observations:
    index = {name: i for i, name in enumerate(names)}
    n = len(kept)
    arm = np.empty(n, dtype=np.intp)
    request = np.zeros(n, dtype=bool)
    failed = np.zeros(n, dtype=np.int64)
    known = np.zeros(n, dtype=np.int64)
    values = {k: np.full(n, np.nan) for k in VALUES}
    for i, (variant, rec) in enumerate(kept):
        assert rec.decision is not None
        arm[i] = index[variant]
        retry = (rec.decision.attempt or 1) > 1
        request[i] = not retry
        out = outcome(rec)
        status = out.status if out is not None else None
        ok = status is not None and status.lower() in OK_STATUSES
        failed[i] = (status is not None and not ok) - retry
        known[i] = (status is not None) - retry
        if out is not None:
            if ok and out.cost is not None:
                values["cost"][i] = out.cost
            if ok and out.latency_ms is not None:
                values["latency_ms"][i] = out.latency_ms
            if out.quality is not None:
                values["quality"][i] = out.quality
    return Observations(arm, request, failed, known, values)


def look_positions(request: np.ndarray, every: int) -> np.ndarray:
    """Record indices of the looks: each ``every``-th request, and the end of the log."""
    count = np.cumsum(request)
    at = np.flatnonzero(request & (count % every == 0))
    if at.size == 0 or at[-1] != request.size - 1:
        at = np.append(at, request.size - 1)
    return at


def arm_stats(rows: Observations, mask: np.ndarray, at: np.ndarray) -> dict[str, list[ArmStats]]:
    """Cumulative statistics of one arm at each look, per metric."""
    out: dict[str, list[ArmStats]] = {}
    errors = np.cumsum(np.where(mask, rows.failed_delta, 0))[at]
    known = np.maximum(np.cumsum(np.where(mask, rows.known_delta, 0))[at], 0)
    errors = np.clip(errors, 0, known)  # log order may put a retry before its failed attempt
    out["error_rate"] = [
        ArmStats.bernoulli(int(k), int(e)) for k, e in zip(known, errors, strict=True)
    ]
    for name, x in rows.values.items():
        valid = mask & ~np.isnan(x)
        # Shifted sums: the variance of latencies in ms from raw sums of squares loses digits.
        shift = float(x[valid][0]) if valid.any() else 0.0
        y = np.where(valid, x - shift, 0.0)
        n = np.cumsum(valid)[at]
        s1, s2 = np.cumsum(y)[at], np.cumsum(y * y)[at]
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = s1 / n
            var = np.maximum(s2 - s1 * mean, 0.0) / (n - 1)
        out[name] = [
            ArmStats(int(k), float(m) + shift, float(v) if k > 1 else 0.0)
            for k, m, v in zip(n, mean, var, strict=True)
        ]
    return out
