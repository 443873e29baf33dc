"""The online router: a learned router's quality predictions, corrected from feedback.

    online = OnlineRouter(models=learned.models_, n_inputs=learned.featurizer.n_features_out)
    quality, ctx = online.adjust(x, learned_quality, known_cost)   # per request
    delta = online.learn(j, *ctx.row(j), observed=1.0)             # per feedback on model j

``warm_start: true`` (the default) starts from the artifact's predictions: until feedback
arrives the online router decides exactly as the offline one. ``warm_start: false`` ignores
the artifact's quality model and starts from a price prior (pricier models assumed somewhat
better; see :func:`price_prior`), keeping only its featurizer and cost model; it then learns
everything from feedback, so it uses the ``cold_*`` settings (weaker prior, optimism).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from routeiq.online.model import OnlineQuality, online_features, projection


class OnlineSettings(BaseModel):
    """Online learning settings (per model group; off by default).

    The correction of model ``m``'s quality is linear in ``z_m = [1, prior_m, context]``:
    the first two coefficients recalibrate the prior per model, the ``features`` context
    numbers (from the router's feature vector) learn where it is wrong. Each coefficient has a
    Gaussian prior (precisions below; the larger, the more feedback it takes to move) on a
    per-model part plus a part shared by all models; ``noise`` is the variance of one observed
    quality. Defaults are the best measured with ``routeiq simulate`` (docs: online learning).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=False, description="learn from feedback while serving")
    warm_start: bool = Field(
        default=True, description="start from the artifact's predictions (false: a price prior)"
    )
    features: int = Field(default=32, ge=1, le=128, description="context features (warm)")
    feature_map: Literal["leading", "projection"] = Field(
        default="leading",
        description="leading: the first `features` inputs (the lexical featurizer's LSA "
        "components, ordered by variance); projection: a fixed random projection "
        "(featurizers whose components have no order)",
    )
    prior_precision: float = Field(default=1000.0, gt=0, description="context coefficients")
    calibration_precision: float = Field(
        default=1000.0, gt=0, description="per-model intercept and slope on the prior"
    )
    pooled_precision: float | None = Field(
        default=10.0, gt=0, description="the part shared by all models (None: no sharing)"
    )
    noise: float = Field(default=0.25, gt=0, description="variance of one observed quality")
    adapt: tuple[float, ...] = Field(
        default=(1.0, 0.3, 0.1, 0.03, 0.01, 0.003),
        description="empirical Bayes: candidate multipliers of the per-model precisions; the "
        "one with the highest evidence is used (start: the first). A prior that feedback "
        "confirms stays strong; one that feedback contradicts (a shift) gives way",
    )
    adapt_every: int = Field(default=25, ge=1, description="observations between re-choices")
    adapt_split: bool = Field(
        default=False,
        description="empirical Bayes picks one multiplier for the calibration part (intercept, "
        "slope on the prior) and another for the context part (false: one for both). A new "
        "task mostly moves each model's level, which then gives way without loosening the "
        "context coefficients; measured (docs: online learning): faster recovery where one "
        "task's levels moved, a little more exploration cost in distribution",
    )
    optimism: float = Field(
        default=0.5,
        ge=0,
        description="quality -= this many times (prior sd - posterior sd) of the model's own "
        "correction: an upper confidence bound relative to the prior, so models with little "
        "feedback get tried while uncertain; 0 before any feedback; deterministic, so logged "
        "propensities stay exact (cold start: quality += cold_optimism posterior sds)",
    )
    cold_features: int = Field(default=16, ge=1, le=128, description="warm_start: false")
    cold_prior_precision: float = Field(default=10.0, gt=0, description="warm_start: false")
    cold_calibration_precision: float = Field(default=10.0, gt=0, description="warm_start: false")
    cold_optimism: float = Field(default=1.0, ge=0, description="warm_start: false")
    seed: int = Field(default=0, description="seed of the random projection")
    # Shared state: every worker pushes its updates and pulls the merged state this often.
    sync_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="seconds between pushes/pulls of shared state"
    )


def price_prior(known_cost: np.ndarray, *, centre: float = 0.6, spread: float = 0.1) -> np.ndarray:
    """Cold-start quality per model: ``centre + spread * z-score of log cost`` in [0, 1].

    Unknown costs get ``centre``. A weak prior on purpose: feedback overrides it within a few
    hundred observations per model.
    """
    c = np.asarray(known_cost, dtype=np.float64)
    logs = np.log(np.maximum(np.where(np.isfinite(c), c, np.nan), 1e-12))
    ok = np.isfinite(logs)
    out = np.full(c.shape, centre)
    if ok.sum() >= 2:
        dev = logs[ok] - logs[ok].mean()
        sd = math.sqrt(float(dev @ dev) / dev.size)  # not np.std: this runs per request
        if sd > 0:
            out[ok] = centre + spread * dev / sd
    return np.clip(out, 0.0, 1.0)


@dataclass(frozen=True)
class OnlineContext:
    """What feedback on one decision needs: the prior and the features per known model."""

    prior: np.ndarray  # (M,) the quality the correction is added to
    z: np.ndarray  # (M, d) online features

    def row(self, model: int) -> tuple[float, list[float]]:
        """(prior, z) of one model, JSON-able for the feedback store."""
        return float(self.prior[model]), self.z[model].tolist()


class OnlineRouter:
    """Hierarchical Bayesian linear corrections of a learned router's predicted quality."""

    def __init__(
        self, models: Sequence[str], n_inputs: int, settings: OnlineSettings | None = None
    ) -> None:
        self.settings = s = settings or OnlineSettings(enabled=True)
        self.models = [str(m) for m in models]
        self.index = {m: i for i, m in enumerate(self.models)}
        self.n_inputs = int(n_inputs)
        cold = not s.warm_start
        k = s.cold_features if cold else s.features
        if s.feature_map == "leading":
            k = min(k, self.n_inputs)  # fewer inputs than features: use them all
            self.proj: np.ndarray | None = None
        else:
            self.proj = projection(self.n_inputs, k, s.seed)
        self.k = k
        d = 2 + k
        precision = np.full(d, s.cold_prior_precision if cold else s.prior_precision)
        precision[:2] = s.cold_calibration_precision if cold else s.calibration_precision
        self.optimism = s.cold_optimism if cold else s.optimism
        self.quality = OnlineQuality(
            len(self.models),
            d,
            precision=precision,
            pooled=s.pooled_precision,
            noise=s.noise,
            scales=s.adapt,
            adapt_every=s.adapt_every,
            groups=[0, 0] + [1] * k if s.adapt_split else None,
        )

    @property
    def n_features(self) -> int:
        return self.quality.n_features

    def prior(self, learned_quality: np.ndarray, known_cost: np.ndarray) -> np.ndarray:
        if self.settings.warm_start:
            return np.asarray(learned_quality, dtype=np.float64)
        return price_prior(known_cost)

    def context(self, x: np.ndarray) -> np.ndarray:
        """The request's context features (from the router's feature vector ``x``)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.shape[0] != self.n_inputs:
            raise ValueError(f"x has {x.shape[0]} features, expected {self.n_inputs}")
        return x[: self.k] if self.proj is None else x @ self.proj

    def adjust(
        self, x: np.ndarray, learned_quality: np.ndarray, known_cost: np.ndarray
    ) -> tuple[np.ndarray, OnlineContext]:
        """Corrected quality per known model for one request's feature vector ``x``.

        With ``optimism`` the quality is an upper confidence bound (relative to the prior):
        deterministic, so the decision's exploration probabilities (and propensity) stay exact.
        """
        prior = self.prior(learned_quality, known_cost)
        z = online_features(prior, self.context(x))
        # Observed qualities are in [0, 1]: a linear correction fitted on little feedback
        # can overshoot, and a prediction outside the range is no better for ranking.
        quality = np.clip(self.quality.predict(z, prior), 0.0, 1.0)
        if self.optimism > 0 and self.settings.warm_start:
            # UCB relative to the prior: a model's index drops as feedback narrows it, so
            # before any feedback it is exactly the prior (a warm start is the offline router).
            quality = quality - self.optimism * self.quality.narrowed(z)
        elif self.optimism > 0:
            # Cold: the plain upper bound. Its prior sd grows with the price prior (the slope
            # term), a tilt toward pricier models that a cold start measured better with.
            quality = quality + self.optimism * self.quality.spread(z)
        return np.clip(quality, 0.0, 1.0), OnlineContext(prior, z)

    def learn(
        self, model: int, prior: float, z: Sequence[float], observed: float
    ) -> dict[str, np.ndarray]:
        """One observation of ``model``'s quality on a request with features ``z``: applied
        here, and returned as the additive delta to share with other workers."""
        if not 0 <= model < len(self.models):
            raise ValueError(f"model index {model} out of range")
        if not (math.isfinite(observed) and math.isfinite(prior)):
            raise ValueError("observed quality and prior must be finite")
        zz = np.asarray(z, dtype=np.float64)
        if zz.shape != (self.n_features,) or not np.isfinite(zz).all():
            raise ValueError(f"z must be {self.n_features} finite numbers")
        delta = self.quality.delta(model, zz, observed - prior)
        self.quality.partial_fit(model, zz, observed - prior)
        return delta

    def state(self) -> dict[str, np.ndarray]:
        """The learned state as additive arrays (see :mod:`routeiq.online.store`)."""
        return self.quality.state()

    def merge(self, delta: Mapping[str, np.ndarray]) -> None:
        self.quality.merge(delta)

    def load(self, state: Mapping[str, np.ndarray]) -> None:
        self.quality.load(state)
