"""RouteIQ's JSONL record format: one line per routed request or benchmark prompt.

Each line is a JSON object (a :class:`RouteRecord`)::

    {"id": "req-42", "prompt": [{"role": "user", "content": "What is 17 * 23?"}],
     "task": "math", "split": "train", "context": {"team": "t-7", "tags": ["support"]},
     "outcomes": {"gpt-4o-mini": {"quality": 1.0, "cost": 0.00012, "latency_ms": 410.0,
                                  "status": "ok"}},
     "decision": {"candidates": [{"model": "gpt-4o-mini", "deployment": "mini-eu",
                                  "predicted_quality": 0.81, "cost": 0.00012, "probability": 0.9},
                                 {"model": "gpt-4o", "predicted_quality": 0.9, "cost": 0.002,
                                  "probability": 0.1}],
                  "chosen": "gpt-4o-mini", "propensity": 0.9, "lambda": 50.0, "router": "knn"}}

(shown wrapped; in a file it is one line). Only ``id`` is required. ``prompt`` is a string or
OpenAI chat messages; the routing text is its last user turn. ``outcomes`` maps a model name to
what was observed: ``quality`` in [0, 1], ``cost`` in USD, ``latency_ms``, ``status``; null or
absent means not observed. ``decision`` is what the router did: the candidates it scored, the
model it chose (a key of ``outcomes``), and the probability of that choice (``propensity``, for
off-policy evaluation); the gateway also logs the chosen ``deployment``, the ``rule``,
``outcome`` and ``fallback_reason``, the model ``group``, the ``attempt`` (2+ for retries and
fallback hops) and any client ``override`` (see :meth:`routeiq.decision.Decision.to_record`).

Lines with the same ``id`` merge in file order: later lines set top-level fields and add or
override outcome fields, so feedback can arrive later as
``{"id": "req-42", "outcomes": {"gpt-4o-mini": {"quality": 0.0}}}``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from routeiq.data._io import open_text
from routeiq.data.dataset import DataError, RoutingDataset
from routeiq.data.prompts import Prompt, prompt_text
from routeiq.features.context import check_fields, system_hash

log = logging.getLogger(__name__)

NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Unit = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
_Value = Annotated[str, Field(max_length=256)]
ContextValue = _Value | Annotated[list[_Value], Field(max_length=64)]


class _Strict(BaseModel):
    # Unknown keys are errors: a typo such as "qualty" must not silently drop feedback.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Outcome(_Strict):
    quality: Unit | None = None
    cost: NonNeg | None = None
    latency_ms: NonNeg | None = None
    status: str | None = None
    error_type: str | None = None
    scores: dict[str, Unit] | None = None  # feedback under other metric names than quality


class RecordCandidate(_Strict):
    model: str
    deployment: str | None = None
    predicted_quality: float | None = None
    cost: NonNeg | None = None
    probability: Unit | None = None
    excluded: str | None = None  # why it could not be chosen (e.g. failed earlier)


class RecordDecision(_Strict):
    """What the router did. Fields after ``router`` were added with the serving engine; logs
    written before it lack them and still load (every one is optional)."""

    candidates: list[RecordCandidate] = Field(default_factory=list)
    chosen: str
    propensity: Annotated[float, Field(gt=0, le=1)]
    lam: NonNeg | None = Field(default=None, alias="lambda")
    router: str | None = None
    deployment: str | None = None  # the chosen candidate (several may share one model)
    cheapest: bool | None = None  # true: lambda was inf (JSON has no inf)
    rule: str | None = None
    outcome: str | None = None  # routed | fallback | pinned | cheapest | shuffle
    fallback_reason: str | None = None
    group: str | None = None
    attempt: Annotated[int, Field(ge=1)] | None = None  # 2+: a retry or fallback hop
    override: str | None = None
    variant: str | None = None  # experiment arm
    greedy: str | None = None  # candidate the greedy rule would have picked (exploration)


class RecordFeatures(_Strict):
    """The routing text's feature vector, logged instead of the text (``log_prompt:
    features``): ``featurizer`` is the digest of the featurizer that made it."""

    featurizer: Annotated[str, Field(min_length=1)]
    values: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(min_length=1)
    tokens: Annotated[int, Field(ge=0)] | None = None  # estimated input tokens (cost model)


class RouteRecord(_Strict):
    id: Annotated[str, Field(min_length=1)]
    prompt: Prompt | None = None
    features: RecordFeatures | None = None
    task: str | None = None
    split: str | None = None
    # Request context (routeiq.features.context): the gateway's tags, team, key alias, key
    # hash, end user and system-prompt hash; any other field a data set names.
    context: dict[str, ContextValue] | None = None
    outcomes: dict[str, Outcome] = Field(default_factory=dict)
    decision: RecordDecision | None = None

    @field_validator("context")
    @classmethod
    def _context_fields(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_fields(value)  # ContextError is a ValueError: reported on "context"
        return value

    @field_validator("prompt")
    @classmethod
    def _routable(cls, value: Prompt | None) -> Prompt | None:
        if value is not None:
            prompt_text(value)  # PromptError is a ValueError: pydantic reports it on "prompt"
        return value

    def merged(self, later: RouteRecord) -> RouteRecord:
        """This record updated by a later line with the same id."""
        update = {k: getattr(later, k) for k in later.model_fields_set - {"id", "outcomes"}}
        outcomes = dict(self.outcomes)
        for model, new in later.outcomes.items():
            old = outcomes.get(model)
            if old is None:
                outcomes[model] = new
                continue
            fields = {k: getattr(new, k) for k in new.model_fields_set}
            if old.scores and new.scores:  # scores per metric arrive one line at a time
                fields["scores"] = {**old.scores, **new.scores}
            outcomes[model] = old.model_copy(update=fields)
        return self.model_copy(update={**update, "outcomes": outcomes})


def merge_records(records: Iterable[RouteRecord]) -> list[RouteRecord]:
    """One record per id, in order of first appearance, later records merged in."""
    by_id: dict[str, RouteRecord] = {}
    for rec in records:
        old = by_id.get(rec.id)
        by_id[rec.id] = old.merged(rec) if old else rec
    return list(by_id.values())


def read_records(path: str | Path) -> list[RouteRecord]:
    """Parse a JSONL record file and merge lines by id. Blank lines are ignored."""
    source = str(path)
    parsed = []
    with open_text(path) as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):  # noqa: B007 (lineno is used after the loop)
                if line.strip():
                    parsed.append(RouteRecord.model_validate_json(line))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or None
            msg = f"invalid JSON: {err['msg']}" if err["type"] == "json_invalid" else err["msg"]
            raise DataError(msg, source=source, line=lineno, field=where) from None
        except UnicodeDecodeError as exc:
            raise DataError(f"not UTF-8 after line {lineno}: {exc.reason}", source=source) from None
    return merge_records(parsed)


def records_to_dataset(records: Iterable[RouteRecord]) -> RoutingDataset:
    """Build a dataset; models are the union of outcome models (NaN where not observed).

    Records without a prompt or logged features (feedback whose request line is missing) are
    skipped with a warning. Records without any quality stay: ``RoutingDataset.labelled()``
    drops them. Logged features (all from one featurizer) become ``features``; such a row's
    prompt is a placeholder naming its id.
    """
    merged = merge_records(records)
    rows = [r for r in merged if r.prompt is not None or r.features is not None]
    if len(rows) < len(merged):
        log.warning("skipped %d records without a prompt", len(merged) - len(rows))
    models = list(dict.fromkeys(m for r in rows for m in r.outcomes))
    col = {m: j for j, m in enumerate(models)}
    quality = np.full((len(rows), len(models)), np.nan)
    cost = np.full_like(quality, np.nan)
    for i, r in enumerate(rows):
        for m, o in r.outcomes.items():
            if o.quality is not None:
                quality[i, col[m]] = o.quality
            if o.cost is not None:
                cost[i, col[m]] = o.cost
    tasks = [r.task or "" for r in rows] if any(r.task for r in rows) else []
    splits = [r.split or "" for r in rows] if any(r.split for r in rows) else []
    contexts = [record_context(r) for r in rows]
    return RoutingDataset(
        prompts=[
            prompt_text(r.prompt) if r.prompt is not None else f"<features of {r.id}>" for r in rows
        ],
        models=models,
        quality=quality,
        cost=cost,
        ids=[r.id for r in rows],
        tasks=tasks,
        splits=splits,
        contexts=contexts if any(contexts) else [],
        **_logged_features(rows),
    )


def record_context(record: RouteRecord) -> dict[str, Any]:
    """A record's context, with the hash of its chat prompt's system turns as ``system``."""
    ctx: dict[str, Any] = dict(record.context or {})
    if "system" not in ctx:
        system = system_hash(record.prompt)
        if system is not None:
            ctx["system"] = system
    return ctx


def _logged_features(rows: list[RouteRecord]) -> dict[str, Any]:
    logged = [r.features for r in rows if r.features is not None]
    if not logged:
        return {}
    digests = {f.featurizer for f in logged}
    widths = {len(f.values) for f in logged}
    if len(digests) > 1 or len(widths) > 1:
        raise DataError(
            f"logged features come from {len(digests)} featurizers ({len(widths)} widths): "
            "train on the records of one router's featurizer at a time"
        )
    X = np.full((len(rows), widths.pop()), np.nan, dtype=np.float32)
    tokens = np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        if r.features is not None:
            X[i] = r.features.values
            if r.features.tokens is not None:
                tokens[i] = r.features.tokens
    return {"features": X, "featurizer": digests.pop(), "tokens": tokens}


def load_records(path: str | Path) -> RoutingDataset:
    """Read a JSONL record file as a dataset (see :func:`read_records` for the raw records)."""
    return records_to_dataset(read_records(path))


def dataset_to_records(ds: RoutingDataset) -> list[RouteRecord]:
    """Export a dataset (e.g. a benchmark) in the record format; NaN pairs are left out."""
    out = []
    for i in range(len(ds)):
        outcomes = {}
        for j, model in enumerate(ds.models):
            q, c = float(ds.quality[i, j]), float(ds.cost[i, j])
            if not (math.isnan(q) and math.isnan(c)):
                outcomes[model] = Outcome(
                    quality=None if math.isnan(q) else q, cost=None if math.isnan(c) else c
                )
        out.append(
            RouteRecord(
                id=ds.ids[i],
                prompt=ds.prompts[i],
                task=(ds.tasks[i] or None) if ds.tasks else None,
                split=(ds.splits[i] or None) if ds.splits else None,
                context=(ds.contexts[i] or None) if ds.contexts else None,
                outcomes=outcomes,
            )
        )
    return out


def write_records(path: str | Path, records: Iterable[RouteRecord | Mapping[str, Any]]) -> int:
    """Append records as JSON lines; returns the number written.

    The file is opened with O_APPEND and each line goes out in one ``os.write``, so lines
    from concurrent writers do not interleave in practice (POSIX does not strictly promise
    this for regular files). Mappings are validated as :class:`RouteRecord` first.
    """
    lines = []
    for rec in records:
        if not isinstance(rec, RouteRecord):
            try:
                rec = RouteRecord.model_validate(rec)
            except ValidationError as exc:
                raise DataError(str(exc), source=str(path)) from None
        lines.append((rec.model_dump_json(by_alias=True, exclude_none=True) + "\n").encode())
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for data in lines:
            view = memoryview(data)
            while view:  # a short write is rare (signal, full disk): finish the line
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return len(lines)
