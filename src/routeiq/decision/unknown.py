"""What the router predicts for a candidate model it was never trained on.

The rule, in order (the first that applies wins):

1. **Provider prefix.** The name with its leading provider segments removed, or in another
   letter case, is a known model (``together_ai/mistralai/mixtral-8x7b-chat``,
   ``openai/GPT-4o`` for ``gpt-4o``): the known model's quality and cost.
2. **Alias.** An explicit alias map (``unknown name -> known model``) set by the operator, e.g.
   a new deployment name for a model the router knows. The alias target's predicted quality
   is used; its cost too, unless the candidate brings its own.
3. **Price prior.** If the candidate's cost for this request is known: the predicted quality of
   the known model whose cost for this request is nearest in log space (models priced alike
   tend to be alike; log space because prices span orders of magnitude). Ties go to the
   earlier known model.
4. **Mean.** Otherwise: the mean predicted quality over the known models. Its cost, unknown,
   is taken as the mean known cost: deliberately not cheap, so an unpriced model is not
   favoured by accident.

An unknown model never raises: it is mapped and the mapping is reported (``mapped_from``)
in the decision's explanation. Only an empty set of known models is an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Free models (cost 0) still need a finite log; far below any real per-request price.
_LOG_FLOOR_USD = 1e-12

MEAN_OF_KNOWN = "<mean of known models>"


@dataclass(frozen=True)
class ModelMapping:
    """How one candidate model got its predicted quality and cost."""

    model: str
    quality: float
    cost: float  # NaN when no cost is known at all
    rule: str  # "known" | "prefix" | "alias" | "price_prior" | "mean"
    mapped_from: str | None  # the known model used, MEAN_OF_KNOWN, or None for a known model
    note: str | None = None  # e.g. an alias pointing to a model the router does not know


@dataclass(frozen=True)
class ResolvedCandidates:
    """Per-candidate quality and cost, aligned with the candidates given."""

    quality: np.ndarray
    cost: np.ndarray
    mappings: tuple[ModelMapping, ...]

    @property
    def mapped_from(self) -> list[str | None]:
        return [m.mapped_from for m in self.mappings]

    @property
    def mapping_rules(self) -> list[str | None]:
        return [m.rule if m.mapped_from else None for m in self.mappings]


def _vector(name: str, values: Any, m: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape != (m,):
        raise ValueError(f"{name} has shape {arr.shape}, expected ({m},) for {m} known models")
    return arr


def map_model(
    model: str,
    known_models: Sequence[str],
    known_quality: Any,
    known_cost: Any = None,
    candidate_cost: float | None = None,
    aliases: Mapping[str, str] | None = None,
) -> ModelMapping:
    """Quality and cost for one candidate ``model`` (see the module docstring for the rule).

    ``known_quality`` (m,) is the router's prediction for this request; ``known_cost`` (m,)
    the known models' cost for this request (NaN = unknown); ``candidate_cost`` the
    candidate's own cost if the caller knows it.
    """
    known = [str(k) for k in known_models]
    m = len(known)
    if m == 0:
        raise ValueError("the router knows no models: cannot map any candidate")
    q = _vector("known_quality", known_quality, m)
    c = np.full(m, np.nan) if known_cost is None else _vector("known_cost", known_cost, m)
    own = None
    if candidate_cost is not None and math.isfinite(float(candidate_cost)):
        own = float(candidate_cost)

    if model in known:
        j = known.index(model)
        return ModelMapping(
            model, float(q[j]), own if own is not None else float(c[j]), "known", None
        )

    same = _unprefixed(model, known)
    if same is not None:
        j = known.index(same)
        return ModelMapping(
            model, float(q[j]), own if own is not None else float(c[j]), "prefix", same
        )

    note = None
    target = (aliases or {}).get(model)
    if target is not None:
        if target in known:
            j = known.index(target)
            return ModelMapping(
                model, float(q[j]), own if own is not None else float(c[j]), "alias", target
            )
        note = f"alias {model!r} -> {target!r} ignored: {target!r} is not a known model"

    priced = np.isfinite(c) & (c >= 0)
    if own is not None and own >= 0 and priced.any():
        logs = np.log(np.maximum(c, _LOG_FLOOR_USD))
        dist = np.where(priced, np.abs(logs - math.log(max(own, _LOG_FLOOR_USD))), np.inf)
        # First minimum (ties to the earlier known model); a list, not np.argmin, which
        # drops the GIL (see routeiq.decision.choice._first_true).
        values = dist.tolist()
        j = values.index(min(values))
        return ModelMapping(model, float(q[j]), own, "price_prior", known[j], note)

    cost = own if own is not None else (float(c[priced].mean()) if priced.any() else math.nan)
    return ModelMapping(model, float(np.mean(q)), cost, "mean", MEAN_OF_KNOWN, note)


def _unprefixed(model: str, known: Sequence[str]) -> str | None:
    """The known model ``model`` names once provider prefixes and letter case are set aside."""
    lowered = {k.lower(): k for k in known}
    parts = model.split("/")
    for k in range(len(parts)):
        name = "/".join(parts[k:])
        if k and name in known:
            return name
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def resolve_candidates(
    models: Sequence[str],
    known_models: Sequence[str],
    known_quality: Any,
    known_cost: Any = None,
    candidate_costs: Sequence[float | None] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> ResolvedCandidates:
    """:func:`map_model` for each candidate; feed the result to :func:`decide`."""
    costs = list(candidate_costs) if candidate_costs is not None else [None] * len(models)
    if len(costs) != len(models):
        raise ValueError(f"{len(models)} candidate models but {len(costs)} candidate costs")
    maps = tuple(
        map_model(str(model), known_models, known_quality, known_cost, cost, aliases)
        for model, cost in zip(models, costs, strict=True)
    )
    return ResolvedCandidates(
        quality=np.array([mp.quality for mp in maps], dtype=np.float64),
        cost=np.array([mp.cost for mp in maps], dtype=np.float64),
        mappings=maps,
    )
