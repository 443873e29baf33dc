"""Batch feedback: join a JSONL file of ratings with a decision log (``routeiq feedback``).

    {"decision_id": "4242-ab12...", "score": 0.8}
    {"decision_id": "4242-ab13...", "score": "down", "metric": "helpfulness"}

Every line is checked before anything is written: the decision must be in the log, the score
in [0, 1] (or up/down), the metric well-formed, and no (decision, metric) rated twice, in the
file or already in the log. The ratings are then appended to the log in one write, as lines
that ``read_records`` merges into their decisions (however late they arrive).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from routeiq.data.records import RouteRecord
from routeiq.serving.feedback import DEFAULT_METRIC, FeedbackError, check_metric, parse_score


@dataclass
class ImportPlan:
    """What an import would append, and why lines were refused (``line: reason``)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _rated(record: RouteRecord, model: str) -> set[str]:
    outcome = record.outcomes.get(model)
    if outcome is None:
        return set()
    done = set(outcome.scores or {})
    if outcome.quality is not None:
        done.add(DEFAULT_METRIC)
    return done


def plan_import(log: Sequence[RouteRecord], lines: Iterable[str]) -> ImportPlan:
    """Validate ratings against the decision log; see the module docstring."""
    by_id = {r.id: r for r in log if r.decision is not None}
    plan = ImportPlan()
    seen: set[tuple[str, str]] = set()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict):
                raise FeedbackError("expected a JSON object")
            extra = sorted(set(item) - {"decision_id", "score", "metric"})
            if extra:
                raise FeedbackError(f"unknown field(s) {', '.join(extra)}")
            decision_id = item.get("decision_id")
            record = by_id.get(decision_id) if isinstance(decision_id, str) else None
            if record is None or record.decision is None:
                raise FeedbackError(f"decision {decision_id!r} is not in the decision log")
            score = parse_score(item.get("score"))
            metric = check_metric(item.get("metric"))
            model = record.decision.chosen
            if (decision_id, metric) in seen or metric in _rated(record, model):
                raise FeedbackError(f"decision {decision_id!r} already has a {metric!r} score")
        except (ValueError, FeedbackError) as exc:  # JSONDecodeError is a ValueError
            plan.errors.append(f"line {lineno}: {exc}")
            continue
        seen.add((record.id, metric))
        outcome = {"quality": score} if metric == DEFAULT_METRIC else {"scores": {metric: score}}
        plan.records.append({"id": record.id, "outcomes": {model: outcome}})
    return plan
