"""A spend target for a drifting request mix: lambda re-fitted from the recent decisions.

    budget = BudgetController(target=0.8, lam=20.0)       # USD per 1,000 requests
    lam = budget.lam()                                    # per request
    budget.observe(quality, cost, spent=cost[chosen])     # per decision (predicted q, c)

For every decision the controller records what each lambda of a fixed log-spaced grid would
have spent on it (the counterfactual greedy choice over the candidates' predicted quality and
cost), so it knows the whole spend curve of the recent traffic, however the mix drifts. It
then picks the lambda whose recent spend meets the target, corrected by

* the realised / predicted spend ratio (exploration, and cost estimates that run low),
* pacing: ``pacing`` of what the last ``horizon`` buckets over- (or under-) spent is repaid
  in the next bucket, so any ``horizon`` consecutive buckets stay near the target however
  noisy single buckets are; and
* ``lambda x exp(lam_gain x relative overspend)``: the curve mixes the router's past states
  (an online learner moves), so where its choices flip at a sharp lambda the curve misplaces
  the flip; the realised overspend corrects lambda directly.

Time is bucketed by an injectable ``clock``: wall time by default, so buckets line up across
workers and replicas; the simulator passes the request counter (no wall time there). The
state is one small record per bucket, a float array ``[count, spent, predicted, spend at
lambda_1..L]`` (``L = 218``), keyed by the bucket number:
records from many workers merge by elementwise addition (Redis ``HINCRBYFLOAT`` on a hash
per bucket, with a TTL of ``horizon`` buckets), and every worker derives the same lambda from
the same totals. Lambda is re-fitted once per bucket, so a request pays one lookup.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

import numpy as np

from routeiq.decision.choice import check_lambda

# Fixed record layout: the grid is part of the state's meaning, so every worker uses this one.
LAMBDAS = np.concatenate([[0.0], np.logspace(-2, 7, 217)])
COUNT, SPENT, PREDICTED, CURVE = 0, 1, 2, 3


class BudgetController:
    """Lambda that keeps the spend per 1,000 requests at ``target`` (USD).

    ``bucket`` is the clock interval that one record covers and ``horizon`` how many recent
    buckets the fit uses; ``lam`` is used until ``min_requests`` decisions are recorded.
    Defaults measured on a drifting RouterBench/LLMRouter mix (``routeiq simulate
    --scenario budget``); ``pacing`` 1 or ``lam_gain`` 3 oscillate.
    """

    def __init__(
        self,
        target: float,
        *,
        lam: float = 0.0,
        clock: Callable[[], float] = time.time,
        bucket: float = 60.0,
        horizon: int = 10,
        min_requests: int = 100,
        pacing: float = 0.3,
        max_pacing: float = 0.5,
        lam_gain: float = 1.0,
    ) -> None:
        if not (math.isfinite(target) and target > 0):
            raise ValueError(f"budget target must be > 0 USD per 1,000 requests, got {target}")
        if not (bucket > 0 and horizon >= 1 and 0 <= pacing <= 1 and 0 <= max_pacing < 1):
            raise ValueError("need bucket > 0, horizon >= 1, 0 <= pacing <= 1, max_pacing < 1")
        self.target = float(target)
        self.lam0 = check_lambda(lam)
        self.clock = clock
        self.bucket = float(bucket)
        self.horizon = int(horizon)
        self.min_requests = int(min_requests)
        self.pacing = float(pacing)
        self.max_pacing = float(max_pacing)
        self.lam_gain = float(lam_gain)
        self.records: dict[str, np.ndarray] = {}
        self._lam = self.lam0
        self._fitted_in: int | None = None

    # -- per request -------------------------------------------------------------------------

    def lam(self) -> float:
        """The lambda to decide with now (re-fitted when the clock enters a new bucket)."""
        now = self._bucket_now()
        if now != self._fitted_in:
            self._fitted_in = now
            self._lam = self.fit(now)
        return self._lam

    def observe(self, quality: np.ndarray, cost: np.ndarray, spent: float | None = None) -> None:
        """Record one decision: the candidates' predicted quality and cost (what the rule
        saw) and what it actually spent (default: the predicted cost of the greedy choice at
        the current lambda; pass the chosen candidate's cost when exploration may differ)."""
        self.merge({str(self._bucket_now()): self.record(quality, cost, spent, self._lam)})

    @staticmethod
    def record(
        quality: np.ndarray, cost: np.ndarray, spent: float | None, lam: float
    ) -> np.ndarray:
        """One decision's additive record (see the module docstring for the layout)."""
        q = np.asarray(quality, dtype=np.float64).reshape(-1)
        c = np.asarray(cost, dtype=np.float64).reshape(-1)
        ok = np.isfinite(q) & np.isfinite(c)
        out = np.zeros(CURVE + LAMBDAS.size)
        if not ok.any():
            return out
        q, c = q[ok], c[ok]
        utility = q[None, :] - LAMBDAS[:, None] * c[None, :]
        out[CURVE:] = c[np.argmax(utility, axis=1)]
        greedy = float(c[np.argmax(q - lam * c)])
        out[COUNT] = 1.0
        out[PREDICTED] = greedy
        out[SPENT] = greedy if spent is None or not math.isfinite(spent) else float(spent)
        return out

    # -- shared state ------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """Per-bucket records (bucket number -> array), additive across workers."""
        return self.records

    def merge(self, delta: Mapping[str, np.ndarray]) -> None:
        """Add records (one decision, or other workers' pushes); drops expired buckets."""
        width = CURVE + LAMBDAS.size
        for key, arr in delta.items():
            add = np.asarray(arr, dtype=np.float64)
            if add.shape != (width,):
                raise ValueError(f"budget record {key!r} has shape {add.shape}, want ({width},)")
            if key in self.records:
                self.records[key] = self.records[key] + add
            else:
                self.records[key] = add.copy()
        self._expire()

    def load(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the records (the merged totals from the shared store)."""
        self.records = {}
        self.merge(state)
        self._fitted_in = None  # re-fit on the next request

    def _expire(self) -> None:
        oldest = self._bucket_now() - self.horizon
        for key in [k for k in self.records if int(k) < oldest]:
            del self.records[key]

    # -- the fit -----------------------------------------------------------------------------

    def _bucket_now(self) -> int:
        return math.floor(self.clock() / self.bucket)

    def fit(self, now: int | None = None) -> float:
        """Lambda meeting the target on the last ``horizon`` complete buckets."""
        now = self._bucket_now() if now is None else now
        done = [v for k, v in self.records.items() if now - self.horizon <= int(k) < now]
        if not done:
            return self.lam0
        total = np.sum(done, axis=0)
        n = total[COUNT]
        if n < self.min_requests:
            return self.lam0
        per_request = self.target / 1000.0
        # Realised / predicted: exploration and cost estimates move the spend off the curve.
        ratio = total[SPENT] / total[PREDICTED] if total[PREDICTED] > 0 else 1.0
        ratio = float(np.clip(ratio, 0.5, 2.0))
        # Pacing: repay ``pacing`` of the window's over- (or under-) spend in the next bucket,
        # so every run of ``horizon`` buckets stays near the target despite noisy buckets.
        per_bucket = n / len(done)
        debt = (total[SPENT] - per_request * n) / per_bucket / per_request
        shift = float(np.clip(self.pacing * debt, -self.max_pacing, self.max_pacing))
        curve = total[CURVE:] / n * ratio
        lam = _solve(curve, per_request * (1.0 - shift))
        # The curve mixes the router's past states: when its choices flip at a sharp lambda
        # (a learner that shifts a whole task at once), the curve misplaces the flip.
        over = total[SPENT] / n / per_request - 1.0
        return lam * math.exp(float(np.clip(self.lam_gain * over, -1.0, 1.0)))


def _solve(curve: np.ndarray, aim: float) -> float:
    """The smallest grid lambda whose spend is <= ``aim``, log-interpolated with the one
    before it (spend falls as lambda grows)."""
    # Enforce monotonicity: ties and float noise can make the raw curve wiggle.
    spend = np.minimum.accumulate(curve)
    below = np.flatnonzero(spend <= aim)
    if below.size == 0:
        return float(LAMBDAS[-1])  # even the cheapest choices overspend: go as cheap as we can
    k = int(below[0])
    if k == 0:
        return 0.0
    hi, lo = spend[k - 1], spend[k]
    l0, l1 = LAMBDAS[k - 1], LAMBDAS[k]
    if l0 <= 0 or hi <= lo:
        return float(l1)
    frac = (hi - aim) / (hi - lo)
    return float(math.exp(math.log(l0) + frac * (math.log(l1) - math.log(l0))))
