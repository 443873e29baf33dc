"""The rules that make a :class:`~routeiq.decision.decision.Decision` for one request.

* :func:`decide`: the learned rule, max ``predicted quality - lambda * cost`` (the kernel in
  :mod:`routeiq.decision.choice`);
* :func:`cheapest`: the lowest known cost (unknown costs last, ties to the first candidate),
  used for ``mode: cheapest`` and as the fallback when the learned rule cannot run;
* :func:`shuffle`: random in proportion to candidate weights (LiteLLM's ``simple-shuffle``),
  with the chosen candidate's real probability as its propensity;
* :func:`pinned`: the caller named the candidate.

Candidates that are not available (``available=False``: for example a deployment that already
failed in this request) stay in the decision with probability 0 and the reason.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from routeiq.decision.choice import check_lambda, choose_one
from routeiq.decision.decision import CHEAPEST, PINNED, SHUFFLE, CandidateRow, Decision, num
from routeiq.decision.exploration import Exploration, sample

DEFAULT_RULE = "max predicted quality - lambda*cost"
CHEAPEST_RULE = "cheapest (lambda=inf): min cost, ties -> higher predicted quality"
LOWEST_COST_RULE = "lowest known cost (unknown last, ties -> first)"
SHUFFLE_RULE = "random, in proportion to deployment weights"


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
    exploration: Exploration | None = None,
    u: float = 0.0,
) -> Decision:
    """The learned rule for one request over ``m`` candidates.

    ``quality`` and ``cost`` are (m,) (cost in USD for this request); ``available`` an
    optional mask with ``excluded`` reasons; ``mapped_from``/``mapping_rules`` come from
    :func:`routeiq.decision.unknown.resolve_candidates`. With ``exploration`` enabled the
    greedy choice becomes a policy (:mod:`routeiq.decision.exploration`) and the uniform
    draw ``u`` picks from it.
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
    utils: list[float | None] = [
        float(q[j] - lam * c[j])
        if not math.isinf(lam) and math.isfinite(q[j]) and math.isfinite(c[j])
        else None
        for j in range(m)
    ]
    greedy = idx
    probs = [1.0 if j == idx else 0.0 for j in range(m)]
    explored = exploration is not None and exploration.enabled
    if explored:
        u_arr = [math.nan if v is None else v for v in utils]
        p = exploration.probabilities(u_arr, c, idx, avail)  # type: ignore[union-attr]
        idx = sample(p, u)
        probs = [float(v) for v in p]
    rows = []
    for j in range(m):
        rows.append(
            CandidateRow(
                name=names[j],
                model=models[j],
                predicted_quality=num(float(q[j])),
                cost=num(float(c[j])),
                utility=utils[j],
                probability=probs[j],
                available=avail[j],
                excluded=None if avail[j] else why[j],
                mapped_from=mapped[j],
                mapping_rule=how[j] if mapped[j] else None,
            )
        )
    if rule is None:
        rule = CHEAPEST_RULE if math.isinf(lam) else DEFAULT_RULE
    if explored:
        rule = f"{rule}; {exploration.describe()}"  # type: ignore[union-attr]
    return Decision(
        chosen=names[idx],
        model=models[idx],
        lam=lam,
        rule=rule,
        candidates=tuple(rows),
        greedy=names[greedy] if explored else None,
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
            cost=num(costs[j]),
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
    row = CandidateRow(name=name, model=model, cost=num(cost), probability=1.0)
    return Decision(
        chosen=name,
        model=model,
        lam=None,
        rule="pinned by the caller",
        candidates=(row,),
        outcome=PINNED,
    )
