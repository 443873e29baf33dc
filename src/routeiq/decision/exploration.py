"""Safe exploration: the learned rule as a policy with a probability for every candidate.

    >>> policy = Exploration(mode="epsilon", epsilon=0.1, margin=0.05)
    >>> policy.probabilities(utility=[0.80, 0.78, 0.50], cost=[1e-3, 2e-4, 1e-5], greedy=0)
    array([0.9, 0.1, 0. ])

Only candidates whose predicted utility is within ``margin`` (quality points) of the greedy
choice and whose cost is at most ``max_cost_ratio`` times the greedy cost are *eligible*;
at most ``epsilon`` of the probability mass leaves the greedy choice, spread over the other
eligible candidates uniformly (``epsilon``) or by a softmax of utility (``softmax``, with
``temperature`` in quality points). ``mode: off`` is today's deterministic rule. The logged
``propensity`` is the chosen candidate's probability, > 0 for everything the policy could
pick, so logged decisions can evaluate other policies off-line
(:mod:`routeiq.evaluation.ope`).

The draw is a function of ``(seed, decision id, router digest)`` (SHA-256), so a replay of
the same decision picks the same candidate, in any process.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

ExplorationMode = Literal["off", "epsilon", "softmax"]


class Exploration(BaseModel):
    """Exploration settings (a value object: validated once, shared by every decision)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: ExplorationMode = Field(
        default="off", description="off (deterministic), epsilon-greedy or softmax"
    )
    epsilon: float = Field(default=0.05, ge=0, le=0.5, description="share of traffic exploring")
    margin: float = Field(
        default=0.05, ge=0, description="explore only within this utility of the best"
    )
    max_cost_ratio: float = Field(
        default=2.0, ge=1, description="an exploring pick costs <= this x the greedy pick"
    )
    temperature: float = Field(default=0.02, gt=0, description="softmax temperature")
    seed: int = Field(default=0, description="seed of the per-decision random draw")

    @property
    def enabled(self) -> bool:
        return self.mode != "off" and self.epsilon > 0

    def describe(self) -> str:
        if not self.enabled:
            return "greedy"
        return (
            f"explore {self.mode} epsilon={self.epsilon:g} margin={self.margin:g} "
            f"max_cost_ratio={self.max_cost_ratio:g}"
        )

    def draw(self, decision_id: str, router: str | None) -> float:
        """This policy's uniform draw for one decision (0.0, unused, when off)."""
        return draw(self.seed, decision_id, router) if self.enabled else 0.0

    def probabilities(
        self, utility: Any, cost: Any, greedy: int, available: Any = None
    ) -> np.ndarray:
        """Selection probability per candidate (sums to 1; the greedy one gets >= 1-eps).

        ``utility`` and ``cost`` are (m,) with NaN where unknown; ``greedy`` is the kernel's
        choice (:func:`routeiq.decision.choice.choose_one`).
        """
        u = np.asarray(utility, dtype=np.float64).reshape(-1)
        c = np.asarray(cost, dtype=np.float64).reshape(-1)
        m = u.size
        probs = np.zeros(m)
        probs[greedy] = 1.0
        if not self.enabled or m < 2:
            return probs
        ok = np.ones(m, dtype=bool) if available is None else np.asarray(available, dtype=bool)
        with np.errstate(invalid="ignore"):
            eligible = ok & np.isfinite(u) & np.isfinite(c) & (u >= u[greedy] - self.margin)
            if math.isfinite(c[greedy]):
                eligible &= c <= c[greedy] * self.max_cost_ratio + 1e-15
        eligible[greedy] = False
        if not eligible.any():
            return probs
        if self.mode == "epsilon":
            share = eligible / eligible.sum()
        else:
            z = np.where(eligible, (u - u[greedy]) / self.temperature, -np.inf)
            w = np.exp(z - z[eligible].max())
            share = w / w.sum()
        probs = self.epsilon * share
        probs[greedy] = 1.0 - self.epsilon
        return probs


def draw(seed: int, decision_id: str, router: str | None) -> float:
    """A uniform number in [0, 1) fixed by (seed, decision id, router digest)."""
    key = f"{seed}\x00{decision_id}\x00{router or ''}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0**64


def sample(probabilities: Sequence[float] | np.ndarray, u: float) -> int:
    """Index picked by the uniform draw ``u`` (inverse CDF; only candidates with p > 0)."""
    p = np.asarray(probabilities, dtype=np.float64)
    cdf = np.cumsum(p)
    idx = int(np.sum(cdf <= u * cdf[-1]))  # a comparison, not searchsorted: keeps the GIL
    idx = min(idx, p.size - 1)
    while p[idx] <= 0:  # float rounding at the top of the CDF
        idx -= 1
    return idx
