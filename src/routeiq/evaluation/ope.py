"""Off-policy evaluation: what a new policy would have achieved on logged decisions.

    >>> result = estimate(rewards, actions, propensities, target_probs, reward_model)
    >>> result.estimates["dr"].value, result.estimates["dr"].low, result.ess

Inputs are per logged decision ``i`` over ``m`` candidate actions: the observed reward
``r_i`` of the action ``a_i`` the logging policy took with probability ``p_i`` (its logged
``propensity``), the new policy's probabilities ``pi_i`` (n, m) and, for the direct-method
and doubly robust estimators, a reward model ``q_i`` (n, m). With weights
``w_i = pi_i[a_i] / p_i``:

* ``ips``:   mean(w r) (unbiased when every action pi takes had p > 0);
* ``snips``: sum(w r) / sum(w) (self-normalised: bounded by the reward range, less variance);
* ``dm``:    mean(sum_a pi q) (the reward model alone: biased when the model is);
* ``dr``:    dm + mean(w (r - q[a])) (unbiased if either the propensities or q are right).

Intervals are percentile bootstrap intervals over decisions (seeded). ``ess`` is the effective
sample size ``(sum w)^2 / sum w^2``. ``unsupported`` is the share of the new policy's
probability on actions the logging policy could not take (logged probability 0): there no
estimator has data, and the result says so.

Written on numpy: the reference library (Open Bandit Pipeline) does not install on this
Python; the tests check the same properties its own tests do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

ESTIMATORS = ("ips", "snips", "dm", "dr")


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class OPEResult:
    """Estimates of the new policy's mean reward, with diagnostics."""

    estimates: dict[str, Estimate]
    n: int
    ess: float
    unsupported: float
    max_weight: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "ess": self.ess,
            "unsupported": self.unsupported,
            "max_weight": self.max_weight,
            "warnings": list(self.warnings),
            **{
                name: {"value": e.value, "low": e.low, "high": e.high}
                for name, e in self.estimates.items()
            },
        }


def _inputs(
    rewards: Any, actions: Any, propensities: Any, target: Any, reward_model: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    a = np.asarray(actions)
    p = np.asarray(propensities, dtype=np.float64).reshape(-1)
    pi = np.asarray(target, dtype=np.float64)
    n = r.size
    if n == 0:
        raise ValueError("no logged decisions to evaluate")
    if pi.ndim != 2 or pi.shape[0] != n:
        raise ValueError(f"target probabilities must be (n, m) with n={n}, got {pi.shape}")
    if a.shape != (n,) or a.dtype.kind not in "iu" or (a < 0).any() or (a >= pi.shape[1]).any():
        raise ValueError(f"actions must be {n} integer indices into the {pi.shape[1]} actions")
    if p.shape != (n,) or not np.all((p > 0) & (p <= 1)):
        raise ValueError("propensities must be in (0, 1], one per decision")
    if not np.isfinite(r).all():
        raise ValueError("rewards must be finite")
    if not np.all(np.isfinite(pi) & (pi >= 0)) or not np.allclose(pi.sum(axis=1), 1.0):
        raise ValueError("each row of target probabilities must be >= 0 and sum to 1")
    q = None
    if reward_model is not None:
        q = np.asarray(reward_model, dtype=np.float64)
        if q.shape != pi.shape or not np.isfinite(q).all():
            raise ValueError(f"reward_model must be finite with shape {pi.shape}")
    return r, a.astype(np.intp), p, pi, q


def _point(
    r: np.ndarray, w: np.ndarray, dm_rows: np.ndarray | None, q_logged: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Each estimator along the last axis (works for (n,) and (B, n) resamples)."""
    weighted = (w * r).sum(axis=-1)
    total = w.sum(axis=-1)
    out = {"ips": weighted / r.shape[-1]}
    with np.errstate(invalid="ignore", divide="ignore"):
        out["snips"] = np.where(total > 0, weighted / total, np.nan)
    if dm_rows is not None and q_logged is not None:
        out["dm"] = dm_rows.mean(axis=-1)
        out["dr"] = (dm_rows + w * (r - q_logged)).mean(axis=-1)
    return out


def estimate(
    rewards: Any,
    actions: Any,
    propensities: Any,
    target: Any,
    reward_model: Any = None,
    *,
    logged_probs: Any = None,
    n_bootstrap: int = 500,
    alpha: float = 0.05,
    seed: int = 0,
) -> OPEResult:
    """IPS, SNIPS and (with ``reward_model``) DM and DR estimates with bootstrap intervals.

    ``logged_probs`` (n, m), the logging policy's probability of every action, enables the
    support check; without it only the taken action's ``propensities`` are known.
    """
    r, a, p, pi, q = _inputs(rewards, actions, propensities, target, reward_model)
    n = r.size
    rows = np.arange(n)
    w = pi[rows, a] / p
    dm_rows = None if q is None else (pi * q).sum(axis=1)
    q_logged = None if q is None else q[rows, a]
    point = _point(r, w, dm_rows, q_logged)

    rng = np.random.default_rng(seed)
    boots: dict[str, list[np.ndarray]] = {k: [] for k in point}
    step = max(1, 2_000_000 // n)  # bounds the (B, n) index block at ~16 MB
    for start in range(0, n_bootstrap, step):
        idx = rng.integers(0, n, size=(min(step, n_bootstrap - start), n))
        sample = _point(
            r[idx],
            w[idx],
            None if dm_rows is None else dm_rows[idx],
            None if q_logged is None else q_logged[idx],
        )
        for k, v in sample.items():
            boots[k].append(v)
    estimates = {}
    for k in ESTIMATORS:
        if k not in point:
            continue
        values = np.concatenate(boots[k]) if boots[k] else np.array([point[k]])
        values = values[np.isfinite(values)]
        low, high = (
            np.quantile(values, [alpha / 2, 1 - alpha / 2]) if values.size else (np.nan, np.nan)
        )
        estimates[k] = Estimate(float(point[k]), float(low), float(high))

    square = float(np.square(w).sum())
    ess = float(w.sum() ** 2 / square) if square > 0 else 0.0
    unsupported = 0.0
    if logged_probs is not None:
        lp = np.asarray(logged_probs, dtype=np.float64)
        if lp.shape != pi.shape:
            raise ValueError(f"logged_probs must have shape {pi.shape}, got {lp.shape}")
        unsupported = float((pi * (lp <= 0)).sum(axis=1).mean())
    warnings = []
    if unsupported > 0:
        warnings.append(
            f"no support: {unsupported:.1%} of the new policy's probability is on actions the "
            "logging policy never took; IPS/SNIPS/DR ignore that part and DM extrapolates. "
            "Log with exploration on (routeiq_settings.exploration) to cover it."
        )
    if ess < 0.1 * n:
        warnings.append(
            f"effective sample size {ess:.0f} of {n}: the new policy rarely agrees with the "
            "logged one; intervals are wide and IPS is unreliable."
        )
    return OPEResult(estimates, n, ess, unsupported, float(w.max()), warnings)
