"""Conversations that stay put: a follow-up turn keeps the model its conversation opened on.

    sticky: {enabled: true, margin: 0.05}     # routeiq_settings (the default)

Each turn of a chat is routed on its own last user turn, so without this a conversation can
bounce between models: it loses the provider's prompt cache (cached input costs about a tenth
of fresh input) and changes voice mid-thread. With it, a request holding more than one user
turn is first decided as its opening turn would have been (greedy, on the opening turn's
text: no shared state needed, the same on every worker and replica); the conversation then
stays on that candidate unless another one's predicted utility on the current turn beats it
by more than ``margin``. The stay is priced with the candidate's ``cached_cost`` (its
cache-read price for the conversation so far) when known. The decision's rule says
``sticky: stayed on X`` or ``sticky: left X (gain G > margin M)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from routeiq.decision.choice import choose_one


class StickySettings(BaseModel):
    """``sticky:``: keep a conversation on the candidate its opening turn chose."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="follow-up turns stay where they started")
    margin: float = Field(
        default=0.05,
        ge=0,
        description="leave only when another candidate's utility is higher by more than this",
    )


@dataclass(frozen=True)
class Stay:
    """Where the conversation started, the utility it would give up by staying, and why."""

    index: int  # the candidate the opening turn chose
    gain: float  # best utility on this turn minus the stay's (>= 0)
    stays: bool

    def note(self, names: Sequence[str], margin: float) -> str:
        name = names[self.index]
        if self.stays:
            return f"sticky: stayed on {name} (gain {self.gain:.3g} <= margin {margin:g})"
        return f"sticky: left {name} (gain {self.gain:.3g} > margin {margin:g})"


def stay(
    opening_quality: np.ndarray,
    opening_cost: np.ndarray,
    quality: np.ndarray,
    cost: np.ndarray,
    cached_cost: Sequence[float | None],
    lam: float,
    available: Sequence[bool],
    margin: float,
) -> Stay | None:
    """Whether this turn stays on the opening turn's choice (None: it is this turn's best
    anyway, or the opening's choice is not available now)."""
    avail = np.asarray(available, dtype=bool)
    start = choose_one(opening_quality, opening_cost, lam, avail)
    if not avail[start]:
        return None
    cost_here = np.asarray(cost, dtype=np.float64).copy()
    kept = cached_cost[start]
    if kept is not None and np.isfinite(kept):
        cost_here[start] = kept  # staying reads the conversation from the prompt cache
    best = choose_one(quality, cost_here, lam, avail)
    if best == start:
        return None
    if not np.isfinite(lam):  # lambda = inf (cheapest): no utility to compare
        return Stay(start, float("inf"), False)
    utility = np.asarray(quality, dtype=np.float64) - lam * cost_here
    gain = float(utility[best] - utility[start])
    return Stay(start, max(gain, 0.0), gain <= margin)


def stay_inputs(
    st: Stay, names: Sequence[str], cost: np.ndarray, cached_cost: Sequence[float | None]
) -> tuple[list[bool], list[str | None], np.ndarray]:
    """(available, excluded reasons, cost) for the rule when the conversation stays: only the
    opening's candidate, priced with its cached cost."""
    keep = [i == st.index for i in range(len(names))]
    why: list[str | None] = [
        None if k else f"sticky: the conversation stays on {names[st.index]}" for k in keep
    ]
    cost = np.asarray(cost, dtype=np.float64).copy()
    kept = cached_cost[st.index]
    if kept is not None and np.isfinite(kept):
        cost[st.index] = kept
    return keep, why, cost
