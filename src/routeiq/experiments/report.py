"""An A/B report from the decision log: per-variant metrics and always-valid differences.

    >>> report = analyze(read_records("decisions.jsonl"), control="control")
    >>> report.comparisons["learned"]["cost"].verdict
    'better'

Records are grouped by ``decision.variant`` (``<experiment>/<variant>`` labels, see
:meth:`routeiq.experiments.Experiment.label`, or bare variant names); records without a
variant are ignored and counted.

Per variant: requests, error rate (share of requests whose last attempt failed), mean cost,
latency p50/p95, mean feedback quality and its coverage (share of requests with a score);
how attempts become requests is in :mod:`routeiq.experiments.observations`. The latency
test compares means (the mSPRT is a test of means).

Each non-control variant is compared with the control by :func:`routeiq.experiments.msprt`
over *looks* every ``look_every`` requests of the log (in log order) and at its end, so
the p-value and confidence sequence are the ones a team watching the experiment all along
would have seen: rerunning the report later only adds looks, and they stay valid. Alpha
applies per comparison; there is no correction across metrics or variants.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from routeiq.data.records import RouteRecord
from routeiq.experiments.observations import (
    Observations,
    arm_stats,
    look_positions,
    observations,
    select,
)
from routeiq.experiments.sequential import DEFAULT_TAU, MIN_N, ArmStats, msprt

BETTER, WORSE, UNDECIDED = "better", "worse", "no difference yet"


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    lower_is_better: bool


METRICS = (
    Metric("error_rate", "error rate", lower_is_better=True),
    Metric("cost", "cost $", lower_is_better=True),
    Metric("latency_ms", "latency ms", lower_is_better=True),
    Metric("quality", "quality", lower_is_better=False),
)


@dataclass(frozen=True)
class VariantSummary:
    name: str
    requests: int
    attempts: int
    completed: int  # requests whose final attempt succeeded
    errors: int  # requests whose final attempt failed
    no_outcome: int  # requests whose final status is unknown (no outcome logged)
    error_rate: float | None
    mean_cost: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    mean_quality: float | None
    quality_coverage: float | None  # share of requests with a quality score

    def to_dict(self) -> dict[str, Any]:
        return {k: _json(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Comparison:
    """One metric, one variant against control: the always-valid test at the last look."""

    metric: str
    control: float | None  # mean in the control arm
    treatment: float | None
    difference: float | None  # treatment - control
    p_value: float
    low: float | None  # confidence sequence for the difference (None: unbounded)
    high: float | None
    verdict: str
    n_control: int
    n_treatment: int
    # Per look, for the plot: requests so far, difference, confidence sequence.
    looks: np.ndarray = field(repr=False, compare=False)
    differences: np.ndarray = field(repr=False, compare=False)
    lows: np.ndarray = field(repr=False, compare=False)
    highs: np.ndarray = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        keys = ("control", "treatment", "difference", "p_value", "low", "high", "verdict")
        out = {k: _json(getattr(self, k)) for k in keys}
        return {**out, "n_control": self.n_control, "n_treatment": self.n_treatment}


@dataclass(frozen=True)
class ExperimentReport:
    experiment: str | None
    control: str
    group: str | None
    alpha: float
    records: int  # records analysed (with a variant, after the filters)
    without_variant: int  # records ignored: no decision or no variant
    filtered: int  # records of other experiments or groups
    looks: int
    variants: dict[str, VariantSummary]
    comparisons: dict[str, dict[str, Comparison]]  # variant -> metric -> comparison

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "control": self.control,
            "group": self.group,
            "alpha": self.alpha,
            "records": self.records,
            "without_variant": self.without_variant,
            "filtered": self.filtered,
            "looks": self.looks,
            "variants": {k: v.to_dict() for k, v in self.variants.items()},
            "comparisons": {
                k: {m: c.to_dict() for m, c in by_metric.items()}
                for k, by_metric in self.comparisons.items()
            },
        }


def analyze(
    records: Sequence[RouteRecord],
    *,
    experiment: str | None = None,
    control: str = "control",
    group: str | None = None,
    alpha: float = 0.05,
    look_every: int = 100,
    tau: float = DEFAULT_TAU,
    min_n: int = MIN_N,
) -> ExperimentReport:
    """Summarise each variant and test each against ``control`` (merged records, log order).

    Raises ValueError when no record has a variant (after the filters), when the log holds
    several experiments and none is chosen, or when the control variant is not in the log.
    """
    if look_every < 1:
        raise ValueError(f"look_every must be at least 1, got {look_every}")
    kept, without, filtered, experiment = select(records, experiment, group)
    names = sorted({v for v, _ in kept}, key=lambda v: (v != control, v))
    if control not in names:
        raise ValueError(
            f"no control variant {control!r} in the log (variants: {', '.join(names)}); "
            "name the control with --control"
        )
    if len(names) < 2:
        raise ValueError(f"only the control variant {control!r} is in the log: nothing to compare")
    rows = observations(kept, names)
    at = look_positions(rows.request, look_every)
    x = np.cumsum(rows.request)[at]
    variants = {name: _summary(name, rows, rows.arm == i) for i, name in enumerate(names)}
    stats = {i: arm_stats(rows, rows.arm == i, at) for i in range(len(names))}
    comparisons = {
        name: {
            m.name: _compare(m, stats[0][m.name], stats[i][m.name], x, alpha, tau, min_n)
            for m in METRICS
        }
        for i, name in enumerate(names)
        if i > 0
    }
    return ExperimentReport(
        experiment=experiment,
        control=control,
        group=group,
        alpha=alpha,
        records=len(kept),
        without_variant=without,
        filtered=filtered,
        looks=len(at),
        variants=variants,
        comparisons=comparisons,
    )


def _compare(
    metric: Metric,
    control: list[ArmStats],
    treatment: list[ArmStats],
    x: np.ndarray,
    alpha: float,
    tau: float,
    min_n: int,
) -> Comparison:
    cols = [
        np.array([getattr(s, f) for s in arm], dtype=np.float64)
        for arm in (control, treatment)
        for f in ("n", "mean", "variance")
    ]
    res = msprt(*cols, alpha=alpha, tau=tau, min_n=min_n)
    last_c, last_t = control[-1], treatment[-1]
    low, high, p = float(res.low[-1]), float(res.high[-1]), float(res.p_value[-1])
    verdict = UNDECIDED
    if p <= alpha:
        # The side of zero the confidence sequence is on (it excludes zero when rejected).
        mid = (low + high) / 2 if math.isfinite(low + high) else float(res.difference[-1])
        verdict = BETTER if (mid < 0) == metric.lower_is_better else WORSE
    return Comparison(
        metric=metric.name,
        control=_num(last_c.mean),
        treatment=_num(last_t.mean),
        difference=_num(last_t.mean - last_c.mean),
        p_value=p,
        low=_num(low),
        high=_num(high),
        verdict=verdict,
        n_control=last_c.n,
        n_treatment=last_t.n,
        looks=x,
        differences=res.difference,
        lows=res.low,
        highs=res.high,
    )


def _summary(name: str, rows: Observations, mask: np.ndarray) -> VariantSummary:
    requests = int(rows.request[mask].sum())
    known = max(int(rows.known_delta[mask].sum()), 0)
    errors = min(max(int(rows.failed_delta[mask].sum()), 0), known)
    cost, latency, quality = (rows.values[k][mask] for k in ("cost", "latency_ms", "quality"))
    latency = latency[~np.isnan(latency)]
    n_quality = int((~np.isnan(quality)).sum())
    p50, p95 = (float(v) for v in np.percentile(latency, [50, 95])) if latency.size else (None,) * 2
    return VariantSummary(
        name=name,
        requests=requests,
        attempts=int(mask.sum()),
        completed=known - errors,
        errors=errors,
        no_outcome=max(requests - known, 0),
        error_rate=errors / known if known else None,
        mean_cost=_mean(cost),
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        mean_quality=_mean(quality),
        quality_coverage=n_quality / requests if requests else None,
    )


def _mean(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else None


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _json(value: Any) -> Any:
    return _num(value) if isinstance(value, float) else value
