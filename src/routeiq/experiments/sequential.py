"""Always-valid sequential tests: the mixture SPRT for a difference in means.

    >>> test = MixtureSPRT(alpha=0.05)
    >>> for look in looks:  # cumulative statistics, as often as you like
    ...     result = test.update(ArmStats(*control), ArmStats(*treatment))
    >>> result.p_value, result.low, result.high, result.rejected

The mSPRT of Johari, Koomen, Pekelis & Walsh (2017), "Always valid inference: continuous
monitoring of A/B tests", in its two-sample normal form. With per-arm sample sizes ``n``,
means ``m`` and variances ``s^2``, the difference ``d = m_t - m_c`` has variance
``V = s_c^2 / n_c + s_t^2 / n_t``; mixing the alternative ``theta ~ N(theta0, tau^2)`` gives
the likelihood ratio against ``H0: theta = theta0``::

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 (d - theta0)^2 / (2 V (V + tau^2)))

(for equal arms ``V = 2 s^2 / n`` and this is the paper's formula). Under ``H0`` it is a
nonnegative martingale, so by Ville's inequality ``P(sup_n Lambda_n >= 1/alpha) <= alpha``:
the p-value ``p_n = min(p_{n-1}, 1 / Lambda_n)`` stays valid however often and whenever one
looks, and stopping at the first ``p_n <= alpha`` keeps the false-positive rate at ``alpha``.
The matching confidence sequence is the set of ``theta0`` not rejected, intersected over
looks: ``|d - theta0| <= sqrt(2 V (V + tau^2) / tau^2 * (log(1/alpha) + log((V + tau^2)/V)/2))``.

Variances are plug-in estimates (the paper's practical choice), so validity is asymptotic;
``min_n`` observations per arm are required before a look counts, and a look where both arms
are constant carries no evidence. Binary metrics (error rate) use the same normal
approximation with ``s^2 ~ p (1 - p)`` (:meth:`ArmStats.bernoulli`).

``tau`` is the mixing standard deviation in units of the metric's pooled standard deviation
(``tau^2 = tau_std^2 * (s_c^2 + s_t^2) / 2``), so one default fits cost in USD and latency in
ms. The boundary is tightest when ``tau^2 ~ 8 V``, i.e. near ``n = 16 / tau_std^2`` per arm:
the default 0.1 (effects of about a tenth of a standard deviation) is tuned for a few thousand
requests per arm, and the boundary changes slowly away from it (within ~10% for 0.25x-6x
that size). Pass ``tau2`` to fix the mixture variance in the metric's own units instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_TAU = 0.1  # mixing sd, in pooled standard deviations of the metric
MIN_N = 30  # observations per arm before a look counts: plug-in variances need a few


@dataclass(frozen=True)
class ArmStats:
    """Cumulative summary of one arm: count, mean and variance of its observations."""

    n: int
    mean: float
    variance: float  # sample variance (ddof=1); p (1 - p) for a Bernoulli metric

    @classmethod
    def of(cls, values: Any) -> ArmStats:
        """From raw observations."""
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        if x.size == 0:
            return cls(0, math.nan, math.nan)
        return cls(int(x.size), float(x.mean()), float(x.var(ddof=1)) if x.size > 1 else 0.0)

    @classmethod
    def bernoulli(cls, n: int, events: int) -> ArmStats:
        """From a count of events (e.g. errors) in ``n`` trials.

        The variance is ``q (1 - q)`` with ``q = (events + 0.5) / (n + 1)``, not the plug-in
        ``p (1 - p)``: with no events yet (a rare error) the plug-in variance is 0 and any
        first difference would look certain.
        """
        if n <= 0:
            return cls(0, math.nan, math.nan)
        q = (events + 0.5) / (n + 1)
        return cls(n, events / n, q * (1.0 - q))


@dataclass(frozen=True)
class SequentialResult:
    """The test after each look (numpy arrays, looks along the last axis)."""

    difference: np.ndarray  # treatment mean - control mean
    p_value: np.ndarray  # always valid: running minimum of 1 / Lambda
    low: np.ndarray  # confidence sequence for the difference (running intersection)
    high: np.ndarray
    alpha: float

    @property
    def rejected(self) -> np.ndarray:
        return self.p_value <= self.alpha


@dataclass(frozen=True)
class Look:
    """The always-valid state after one look (one comparison, scalars)."""

    n_control: int
    n_treatment: int
    difference: float
    p_value: float
    low: float
    high: float
    alpha: float

    @property
    def rejected(self) -> bool:
        return self.p_value <= self.alpha


def msprt(
    n_c: Any,
    mean_c: Any,
    var_c: Any,
    n_t: Any,
    mean_t: Any,
    var_t: Any,
    *,
    alpha: float = 0.05,
    tau: float = DEFAULT_TAU,
    tau2: float | None = None,
    theta0: float = 0.0,
    min_n: int = MIN_N,
) -> SequentialResult:
    """The mSPRT over a sequence of looks, vectorised.

    Every input broadcasts to one shape whose last axis is the looks of one experiment, in
    order (leading axes are independent experiments): cumulative counts, means and variances
    per arm at each look. Looks where an arm has fewer than ``min_n`` observations carry no
    evidence (p-value 1, infinite interval).
    """
    _check(alpha, tau, tau2, min_n)
    arrays = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (n_c, mean_c, var_c, n_t, mean_t, var_t))
    )
    nc, mc, vc, nt, mt, vt = arrays
    d = mt - mc
    ready = (nc >= min_n) & (nt >= min_n) & np.isfinite(d) & (vc >= 0) & (vt >= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(ready, vc / nc + vt / nt, np.nan)
        t2 = np.full_like(v, tau2) if tau2 is not None else tau**2 * (vc + vt) / 2
        s = v + t2
        delta = d - theta0
        log_lr = 0.5 * np.log(v / s) + t2 * delta**2 / (2 * v * s)
        half = np.sqrt(2 * v * s / t2 * (math.log(1 / alpha) + 0.5 * np.log(s / v)))
    # No variance in either arm (constant data so far) is no evidence either way.
    ok = ready & (v > 0) & np.isfinite(half)
    log_lr = np.where(ok, log_lr, 0.0)
    p = np.minimum.accumulate(np.minimum(1.0, np.exp(-log_lr)), axis=-1)
    look_low, look_high = np.where(ok, d - half, -np.inf), np.where(ok, d + half, np.inf)
    low = np.maximum.accumulate(look_low, axis=-1)
    high = np.minimum.accumulate(look_high, axis=-1)
    # An empty intersection (probability <= alpha for a valid sequence; in practice a sign of
    # a drifting metric) would print as low > high: report the latest look's interval then.
    empty = low > high
    low = np.where(empty, look_low, low)
    high = np.where(empty, look_high, high)
    return SequentialResult(difference=d, p_value=p, low=low, high=high, alpha=alpha)


class MixtureSPRT:
    """Always-valid test of ``mean(treatment) - mean(control) == theta0``, look by look.

    Feed :meth:`update` the cumulative :class:`ArmStats` of both arms at each look; it returns
    the running always-valid p-value and confidence sequence (see the module docstring for
    ``tau``, ``tau2`` and ``min_n``). The state is the running minimum p-value and the
    running intersection of intervals; :meth:`reset` starts over. Same results as
    :func:`msprt` over the same looks.
    """

    def __init__(
        self,
        alpha: float = 0.05,
        *,
        tau: float = DEFAULT_TAU,
        tau2: float | None = None,
        theta0: float = 0.0,
        min_n: int = MIN_N,
    ) -> None:
        _check(alpha, tau, tau2, min_n)
        self.alpha = alpha
        self.tau = tau
        self.tau2 = tau2
        self.theta0 = theta0
        self.min_n = min_n
        self.reset()

    def reset(self) -> MixtureSPRT:
        self.n_looks_ = 0
        self.p_value_ = 1.0
        self.low_, self.high_ = -math.inf, math.inf  # the confidence sequence
        self._low, self._high = -math.inf, math.inf  # running intersection (may cross)
        return self

    def update(self, control: ArmStats, treatment: ArmStats) -> Look:
        """Add one look (cumulative statistics, not increments)."""
        one = msprt(
            [control.n],
            [control.mean],
            [control.variance],
            [treatment.n],
            [treatment.mean],
            [treatment.variance],
            alpha=self.alpha,
            tau=self.tau,
            tau2=self.tau2,
            theta0=self.theta0,
            min_n=self.min_n,
        )
        latest = float(one.low[0]), float(one.high[0])
        self.n_looks_ += 1
        self.p_value_ = min(self.p_value_, float(one.p_value[0]))
        self._low, self._high = max(self._low, latest[0]), min(self._high, latest[1])
        if self._low > self._high:  # see msprt: an empty intersection shows the latest look
            self.low_, self.high_ = latest
        else:
            self.low_, self.high_ = self._low, self._high
        return Look(
            n_control=control.n,
            n_treatment=treatment.n,
            difference=float(one.difference[0]),
            p_value=self.p_value_,
            low=self.low_,
            high=self.high_,
            alpha=self.alpha,
        )


def _check(alpha: float, tau: float, tau2: float | None, min_n: int) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a positive number, got {tau}")
    if tau2 is not None and not (math.isfinite(tau2) and tau2 > 0):
        raise ValueError(f"tau2 must be a positive number, got {tau2}")
    if min_n < 2:
        raise ValueError(f"min_n must be at least 2 (a variance needs two points), got {min_n}")
