"""Decision logs for off-policy evaluation: simulate one from full-information data, or score
a new policy on one (gateway logs included).

    records = simulate_log(dataset, logging_router, lam=20, exploration=Exploration(...))
    report = evaluate_log(records, new_router, lam=20)
    report["utility"].estimates["dr"]

:func:`policy` runs the serving rule (:func:`routeiq.decision.rules.decide`, exploration and
its reproducible draw included) over a batch of logged requests, so an estimate is about the
policy the gateway would run, not a re-implementation of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from routeiq.data.dataset import RoutingDataset
from routeiq.data.prompts import prompt_text
from routeiq.data.records import RouteRecord, record_context
from routeiq.decision.decision import Decision
from routeiq.decision.exploration import Exploration
from routeiq.decision.rules import decide
from routeiq.decision.unknown import resolve_candidates
from routeiq.evaluation.ope import OPEResult, estimate
from routeiq.router import LearnedRouter


@dataclass(frozen=True)
class LoggedRequest:
    """What the new policy sees of one logged decision."""

    id: str
    text: str
    models: Sequence[str]  # the candidates' models, in logged order
    costs: Sequence[float | None]  # the candidates' cost for this request (USD)
    context: Mapping[str, Any] | None = None  # the request's context fields


def policy(
    router: LearnedRouter,
    requests: Sequence[LoggedRequest],
    *,
    lam: float | None = None,
    target: str | None = None,
    exploration: Exploration | None = None,
) -> list[Decision]:
    """The decision ``router`` makes for each request (quality predicted in one batch)."""
    lam_, rule = router.tradeoff(lam, target)
    quality = router.predict_quality([r.text for r in requests], [r.context for r in requests])
    cost = router.predict_cost([r.text for r in requests])
    explore = exploration if exploration is not None else Exploration()
    out = []
    for i, req in enumerate(requests):
        resolved = resolve_candidates(
            list(req.models),
            router.models_,
            quality[i],
            cost[i],
            candidate_costs=list(req.costs),
            aliases=router.aliases,
        )
        names = [str(j) for j in range(len(req.models))]
        out.append(
            decide(
                names,
                list(req.models),
                resolved.quality,
                resolved.cost,
                lam_,
                rule,
                mapped_from=resolved.mapped_from,
                mapping_rules=resolved.mapping_rules,
                exploration=explore,
                u=explore.draw(req.id, router.digest),
            ).with_context(id=req.id, router=router.digest)
        )
    return out


def simulate_log(
    dataset: RoutingDataset,
    router: LearnedRouter,
    *,
    lam: float | None = None,
    target: str | None = None,
    exploration: Exploration | None = None,
) -> list[dict[str, Any]]:
    """Decision records (the JSONL format) as the gateway would log them on ``dataset``:
    each row's decision, with only the chosen model's outcome revealed."""
    idx = range(len(dataset))
    contexts = dataset.context_rows()
    requests = [
        LoggedRequest(
            dataset.ids[i],
            dataset.prompts[i],
            dataset.models,
            [None if math.isnan(c) else float(c) for c in dataset.cost[i]],
            contexts[i],
        )
        for i in idx
    ]
    records = []
    for i, d in zip(
        idx, policy(router, requests, lam=lam, target=target, exploration=exploration), strict=True
    ):
        j = dataset.models.index(d.model)
        record = d.to_record(dataset.prompts[i])
        record["outcomes"] = {
            d.model: {"quality": float(dataset.quality[i, j]), "cost": float(dataset.cost[i, j])}
        }
        if contexts[i]:
            record["context"] = contexts[i]
        records.append(record)
    return records


def _chosen_index(decision: Any) -> int | None:
    """Index of the chosen candidate: by deployment when logged, else by model."""
    cands = decision.candidates
    if decision.deployment is not None:
        for j, c in enumerate(cands):
            if c.deployment == decision.deployment:
                return j
    return next((j for j, c in enumerate(cands) if c.model == decision.chosen), None)


def _logged(records: Sequence[RouteRecord]) -> tuple[list[tuple[RouteRecord, int]], dict[str, int]]:
    """Records usable for OPE with their chosen index, and counts of why others are not."""
    usable = []
    skipped = {"no prompt": 0, "no decision": 0, "no quality feedback": 0, "fallback/pinned": 0}
    for rec in records:
        dec = rec.decision
        if rec.prompt is None:
            skipped["no prompt"] += 1
        elif dec is None or (j := _chosen_index(dec)) is None:
            skipped["no decision"] += 1
        elif dec.outcome in ("fallback", "pinned"):
            # Not a choice among candidates the new policy could make. Shuffle and cheapest
            # decisions stay: their propensities are exact (shuffle logs are ideal for OPE).
            skipped["fallback/pinned"] += 1
        elif (o := rec.outcomes.get(dec.chosen)) is None or o.quality is None:
            skipped["no quality feedback"] += 1
        else:
            usable.append((rec, j))
    return usable, skipped


def recalibrate(
    predicted: np.ndarray, names: np.ndarray, actions: np.ndarray, rewards: np.ndarray
) -> np.ndarray:
    """The reward model for DM/DR: the router's predicted quality, refitted per model on the
    log (``reward ~ a + b * predicted`` over the rows where that model was chosen; a mean
    shift with few rows). A router trained elsewhere is biased on this traffic; the log says
    by how much, and DR's correction only fixes the part the logging policy explored.

    ``predicted`` and ``names`` (the candidates' models, "" for padding) are (n, m)."""
    out = predicted.copy()
    rows = np.arange(len(actions))
    chosen = names[rows, actions]
    for model in np.unique(chosen):
        mine = chosen == model
        x, y = predicted[rows[mine], actions[mine]], rewards[mine]
        if x.size >= 30 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
        elif x.size >= 5:
            slope, intercept = 1.0, float(np.mean(y - x))
        else:
            continue
        cells = names == model
        out[cells] = intercept + slope * predicted[cells]
    return np.clip(out, float(rewards.min()), float(rewards.max()))


def evaluate_log(
    records: Sequence[RouteRecord | dict[str, Any]],
    router: LearnedRouter,
    *,
    lam: float | None = None,
    target: str | None = None,
    exploration: Exploration | None = None,
    n_bootstrap: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """OPE of ``router`` (with ``lam``/``target``/``exploration``) on logged decisions:
    ``{"quality": OPEResult, "cost": OPEResult, "utility": OPEResult, "lambda": float,
    "n": int, "skipped": {reason: count}}``. Rewards: the chosen model's quality feedback
    and cost; DM/DR use the new router's predicted quality and the logged candidate costs."""
    parsed = [r if isinstance(r, RouteRecord) else RouteRecord.model_validate(r) for r in records]
    usable, skipped = _logged(parsed)
    if not usable:
        raise ValueError(f"no logged decision has a prompt and quality feedback: {skipped}")
    lam_, _ = router.tradeoff(lam, target)
    m = max(len(r.decision.candidates) for r, _ in usable)  # type: ignore[union-attr]
    n = len(usable)
    logged_p, target_p = np.zeros((n, m)), np.zeros((n, m))
    q_model, c_model = np.zeros((n, m)), np.zeros((n, m))
    names = np.full((n, m), "", dtype=object)
    actions, props = np.zeros(n, dtype=np.intp), np.zeros(n)
    quality, cost = np.zeros(n), np.zeros(n)
    requests = []
    for i, (rec, chosen) in enumerate(usable):
        dec = rec.decision
        assert dec is not None and rec.prompt is not None
        cands = dec.candidates
        models, costs = [c.model for c in cands], [c.cost for c in cands]
        names[i, : len(cands)] = models
        text = prompt_text(rec.prompt)
        requests.append(LoggedRequest(rec.id, text, models, costs, record_context(rec)))
        actions[i], props[i] = chosen, dec.propensity
        logged_p[i, : len(cands)] = [
            c.probability if c.probability is not None else float(j == chosen)
            for j, c in enumerate(cands)
        ]
        outcome = rec.outcomes[dec.chosen]
        quality[i] = float(outcome.quality or 0.0)
        cost[i] = outcome.cost if outcome.cost is not None else (cands[chosen].cost or 0.0)
    for i, d in enumerate(
        policy(router, requests, lam=lam, target=target, exploration=exploration)
    ):
        for j, row in enumerate(d.candidates):
            target_p[i, j] = row.probability
            q_model[i, j] = row.predicted_quality if row.predicted_quality is not None else 0.0
            c_model[i, j] = row.cost if row.cost is not None else cost[i]
    q_model = recalibrate(q_model, names, actions, quality)
    common: dict[str, Any] = {"logged_probs": logged_p, "n_bootstrap": n_bootstrap, "seed": seed}
    finite = lam_ if math.isfinite(lam_) else 0.0
    results: dict[str, OPEResult] = {
        "quality": estimate(quality, actions, props, target_p, q_model, **common),
        "cost": estimate(cost, actions, props, target_p, c_model, **common),
        "utility": estimate(
            quality - finite * cost, actions, props, target_p, q_model - finite * c_model, **common
        ),
    }
    return {**results, "lambda": lam_, "n": n, "skipped": skipped}
