"""An online quality model: a hierarchical Bayesian linear correction of a prior prediction.

    >>> m = OnlineQuality(n_models=2, n_features=3)
    >>> z = np.array([[1.0, 0.5, 0.1], [1.0, 0.7, 0.1]])  # one row per candidate model
    >>> m.predict(z, prior=np.array([0.5, 0.7]))
    array([0.5, 0.7])
    >>> bool(m.partial_fit(1, z[1], residual=-0.7).predict(z, np.array([0.5, 0.7]))[1] < 0.7)
    True

For model ``m`` with request features ``z_m`` (see :func:`online_features`) the quality is
``prior_m + (u + v_m) . z_m``: ``u`` is a correction shared by every model (what feedback
says about all of them, e.g. "this traffic is harder than the prior thinks"), ``v_m`` the
model's own. A priori ``u ~ N(0, diag(1/pooled))`` and ``v_m ~ N(0, diag(1/precision))``
(one precision per feature, so the intercept and the prior's slope can move faster than the
context part), and observations have Gaussian noise of variance ``noise``. The posterior mean
starts at zero, so a warm start serves exactly the prior until feedback says otherwise.

Empirical Bayes sets the prior's strength: ``scales`` are candidate multipliers of the
per-model precision, and every ``adapt_every`` observations (or 10% more data, however
they arrive: one by one, merged or loaded) the one with the highest evidence (marginal
likelihood of the residuals, :meth:`~OnlineQuality.evidence`) is used. A prior that
feedback confirms (the offline router in distribution) stays strong; one that feedback
contradicts (a new task) gives way within a few hundred observations. With ``groups`` each
group of features gets its own scale (every combination is scored): the router puts the
calibration part (intercept, slope on the prior) and the context part in separate groups,
because a new task mostly moves each model's level, and one shared scale can only let that
move by also loosening the many context coefficients, whose extra freedom the evidence
penalises (so it waited for much more feedback).

Pooling matters when the prior is off for every model at once (a new task, a cold start): the
models that were not tried inherit the shared correction instead of keeping a stale, too
optimistic prior that greedy choice would then chase one model at a time.

The state is additive sufficient statistics (``sum z z^T``, ``sum z r``, counts per model), so
updates from many workers merge by addition and order does not matter; the joint posterior is
solved from them exactly (block elimination of the shared part: ``M`` small solves).

Written here on numpy: scikit-learn's ``BayesianRidge`` has no partial fit nor mergeable state.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Self

import numpy as np

STATE_KEYS = ("gram", "moment", "count")


def _as_precision(value: float | np.ndarray, n_features: int, name: str) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (n_features,)).copy()
    if not (np.isfinite(arr).all() and (arr > 0).all()):
        raise ValueError(f"{name} must be finite and > 0")
    return arr


class OnlineQuality:
    """Posterior of each model's quality correction, updated one observation at a time.

    ``precision`` (per model) and ``pooled`` (shared; ``None``: no shared part) are prior
    precisions of the coefficients, a number or one per feature. ``groups`` (one integer per
    feature; default: one group) gives each group its own empirical-Bayes scale.
    """

    def __init__(
        self,
        n_models: int,
        n_features: int,
        *,
        precision: float | np.ndarray = 1.0,
        pooled: float | np.ndarray | None = None,
        noise: float = 0.1,
        scales: Sequence[float] = (1.0,),
        adapt_every: int = 25,
        groups: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        if n_models < 1 or n_features < 1:
            raise ValueError("n_models and n_features must be >= 1")
        if not noise > 0:
            raise ValueError("noise must be > 0")
        self.n_models, self.n_features, self.noise = n_models, n_features, float(noise)
        d = n_features
        # Ridge terms: prior precision x noise variance (the posterior mean solves G + ridge).
        self.base_ridge_ = _as_precision(precision, d, "precision") * self.noise
        self.scales = tuple(float(v) for v in scales)
        if not self.scales or min(self.scales) <= 0:
            raise ValueError("scales must be a non-empty sequence of numbers > 0")
        self.adapt_every = int(adapt_every)
        # Empirical Bayes groups: each group of features gets its own multiplier (scale_).
        g = np.zeros(d, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
        if g.shape != (d,) or g.min() < 0:
            raise ValueError(f"groups must be {d} non-negative integers")
        _, self.groups_ = np.unique(g, return_inverse=True)
        self.n_groups = int(self.groups_.max()) + 1
        # Every combination of one scale per group (the first: every group at scales[0]).
        self.candidates_ = list(itertools.product(self.scales, repeat=self.n_groups))
        self.scale_ = self.candidates_[0]
        self.ridge_ = self._scaled(self.scale_)
        self._adapted_at = 0.0
        self.pooled_ridge_ = (
            None if pooled is None else _as_precision(pooled, d, "pooled precision") * self.noise
        )
        self.gram_ = np.zeros((n_models, d, d))
        self.moment_ = np.zeros((n_models, d))
        self.count_ = np.zeros(n_models)
        # Cached per model: A^-1 = (G + ridge)^-1, and its share of the shared-part system.
        self._inv = np.broadcast_to(np.diag(1.0 / self.ridge_), (n_models, d, d)).copy()
        self._schur = np.zeros((n_models, d, d))  # G - G A^-1 G
        self._rhs = np.zeros((n_models, d))  # b - G A^-1 b
        self.shared_ = np.zeros(d)
        self.coef_ = np.zeros((n_models, d))

    # -- state ------------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """Sufficient statistics: arrays that merge across workers by addition."""
        return {"gram": self.gram_, "moment": self.moment_, "count": self.count_}

    def delta(self, model: int, z: np.ndarray, residual: float) -> dict[str, np.ndarray]:
        """The additive change one observation makes to :meth:`state` (not applied)."""
        d = {k: np.zeros_like(v) for k, v in self.state().items()}
        d["gram"][model] = np.outer(z, z)
        d["moment"][model] = z * residual
        d["count"][model] = 1.0
        return d

    def partial_fit(self, model: int, z: np.ndarray, residual: float) -> Self:
        """Add one observation: ``residual`` = observed quality - prior, for ``model``."""
        z = np.asarray(z, dtype=np.float64).reshape(-1)
        if z.shape != (self.n_features,):
            raise ValueError(f"z has shape {z.shape}, expected ({self.n_features},)")
        self.gram_[model] += np.outer(z, z)
        self.moment_[model] += z * residual
        self.count_[model] += 1.0
        if not self._adapt():
            self._refresh(np.array([model]))
        return self

    def merge(self, delta: Mapping[str, np.ndarray]) -> None:
        """Add statistics (one observation, or a batch from other workers)."""
        arrays = self._checked(delta, "delta")
        self.gram_ = self.gram_ + arrays["gram"]
        self.moment_ = self.moment_ + arrays["moment"]
        self.count_ = self.count_ + arrays["count"]
        if not self._adapt():
            self._refresh(np.flatnonzero(arrays["count"] != 0))

    def load(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the statistics (a snapshot from the shared store or an artifact)."""
        arrays = self._checked(state, "state")
        self.gram_, self.moment_, self.count_ = (arrays[k].copy() for k in STATE_KEYS)
        # The prior strength is a function of the loaded totals alone (every worker that loads
        # the same shared state predicts the same, whatever its own update history), and too
        # few observations keep the first scale: evidence from a handful is noise.
        if float(self.count_.sum()) >= self.adapt_every:
            self._adapted_at = -np.inf
            if self._adapt():
                return
        else:
            self._adapted_at = 0.0
            self.scale_ = self.candidates_[0]
            self.ridge_ = self._scaled(self.scale_)
        self._refresh(np.arange(self.n_models))

    def _checked(self, state: Mapping[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
        out = {}
        for key, ref in self.state().items():
            if key not in state:
                raise ValueError(f"online {what} has no {key!r} array")
            arr = np.asarray(state[key], dtype=np.float64)
            if arr.shape != ref.shape:
                raise ValueError(
                    f"online {what} {key!r} has shape {arr.shape}, expected {ref.shape}"
                )
            if not np.isfinite(arr).all():
                raise ValueError(f"online {what} {key!r} has non-finite values")
            out[key] = arr
        return out

    # -- posterior --------------------------------------------------------------------------

    def _refresh(self, models: np.ndarray) -> None:
        """Re-solve after the statistics of ``models`` changed (others' caches stay valid)."""
        if models.size:
            g, b = self.gram_[models], self.moment_[models]
            inv = np.linalg.inv(g + np.diag(self.ridge_))
            inv = (inv + inv.transpose(0, 2, 1)) / 2  # keep it exactly symmetric
            self._inv[models] = inv
            g_inv = g @ inv
            self._schur[models] = g - g_inv @ g
            self._rhs[models] = b - (g_inv @ b[..., None])[..., 0]
        if self.pooled_ridge_ is not None:
            # Joint posterior mean of (u, v_1..v_M), eliminating each v_m:
            # (pooled + sum_m (G_m - G_m A_m^-1 G_m)) u = sum_m (b_m - G_m A_m^-1 b_m).
            system = np.diag(self.pooled_ridge_) + self._schur.sum(axis=0)
            self.shared_ = np.linalg.solve(system, self._rhs.sum(axis=0))
        resid = self.moment_ - self.gram_ @ self.shared_
        self.coef_ = self.shared_ + (self._inv @ resid[..., None])[..., 0]

    def _scaled(self, scale: tuple[float, ...]) -> np.ndarray:
        return self.base_ridge_ * np.asarray(scale)[self.groups_]

    def _adapt(self) -> bool:
        """Every ``adapt_every`` observations (or 10% more data), set the prior strength to
        the scale with the highest evidence (empirical Bayes); True when it re-solved all."""
        total = float(self.count_.sum())
        # Evidence moves slowly once there is a lot of it: re-choose every 10% of the data.
        every = max(self.adapt_every, 0.1 * self._adapted_at)
        if len(self.scales) < 2 or abs(total - self._adapted_at) < every:
            return False
        self._adapted_at = total
        scores = [self.evidence(self._scaled(c)) for c in self.candidates_]
        self.scale_ = self.candidates_[int(np.argmax(scores))]
        self.ridge_ = self._scaled(self.scale_)
        self._refresh(np.arange(self.n_models))
        return True

    def evidence(self, ridge: np.ndarray) -> float:
        """Log marginal likelihood of the residuals under per-model ``ridge`` (up to terms
        that do not depend on it): ``log|R| - log|G + R| + b'(G + R)^-1 b / noise``, halved,
        over the joint (shared + per-model) system."""
        a = self.gram_ + np.diag(ridge)
        inv = np.linalg.inv(a)
        b = self.moment_
        inv_b = (inv @ b[..., None])[..., 0]
        logdet = float(np.linalg.slogdet(a)[1].sum()) - self.n_models * float(np.log(ridge).sum())
        quad = float((b * inv_b).sum())
        if self.pooled_ridge_ is not None:
            g_inv = self.gram_ @ inv
            system = np.diag(self.pooled_ridge_) + (self.gram_ - g_inv @ self.gram_).sum(axis=0)
            rhs = (b - (g_inv @ b[..., None])[..., 0]).sum(axis=0)
            logdet += float(np.linalg.slogdet(system)[1] - np.log(self.pooled_ridge_).sum())
            quad += float(rhs @ np.linalg.solve(system, rhs))
        return 0.5 * (quad / self.noise - logdet)

    def predict(self, z: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """Quality per candidate: ``prior[i] + coef_[i] . z[i]`` (rows in model order)."""
        return prior + np.einsum("ij,ij->i", self.coef_, z)

    def predict_models(self, z: np.ndarray, prior: np.ndarray, models: np.ndarray) -> np.ndarray:
        """Like :meth:`predict` for rows of the given model indices."""
        return prior + np.einsum("ij,ij->i", self.coef_[models], z)

    def spread(self, z: np.ndarray) -> np.ndarray:
        """Posterior sd of each model's own correction ``v_m . z_m`` (given the shared part):
        how much feedback on that model could still change its ranking against the others."""
        var = (np.matmul(z[:, None, :], self._inv)[:, 0, :] * z).sum(axis=1) * self.noise
        return np.sqrt(np.maximum(var, 0.0))

    def narrowed(self, z: np.ndarray) -> np.ndarray:
        """How much feedback has narrowed each model's correction: prior sd - posterior sd
        (>= 0; exactly 0 for a model without feedback)."""
        prior = np.sqrt((z * z) @ (self.noise / self.ridge_))
        # Exactly 0 without feedback (float rounding must not tilt a warm start).
        return np.where(self.count_ > 0, np.maximum(prior - self.spread(z), 0.0), 0.0)


def projection(n_inputs: int, n_outputs: int, seed: int = 0) -> np.ndarray:
    """A fixed random projection (``n_inputs x n_outputs``, unit-variance outputs for unit
    inputs), so any featurizer's vector becomes a few online features."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_inputs, n_outputs)) / np.sqrt(max(n_inputs, 1) / n_outputs)


def online_features(prior: np.ndarray, context: np.ndarray) -> np.ndarray:
    """Features per candidate model for one request: ``[1, prior_m, context]`` rows.

    ``prior`` is the quality each candidate starts from, ``context`` the request's few
    context features (:class:`~routeiq.online.router.OnlineRouter` maps ``x`` to them).
    """
    z = np.empty((prior.shape[0], 2 + context.shape[0]))
    z[:, 0] = 1.0
    z[:, 1] = prior
    z[:, 2:] = context
    return z
