"""Stacked ensemble of other quality models."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from typing import Any, Self

import numpy as np

from routeiq.quality._util import Model, check_XY
from routeiq.quality.base import QualityModel
from routeiq.quality.selection import oof_predict

_MEMBER_KEY = re.compile(r"member\d+__")

DEFAULT_MEMBERS: tuple[dict[str, Any], ...] = (
    {"name": "knn"},
    {"name": "logistic"},
    {"name": "cluster"},
)


class EnsembleQuality(Model):
    """Weighted average of member quality models, weights fitted on out-of-fold predictions.

    ``members`` is a list of ``{"name": registry name, "params": {...}}``. Each member is first
    fitted on all rows (running its own hyper-parameter selection); its out-of-fold predictions
    are then computed with those chosen hyper-parameters fixed, and non-negative weights (shared
    by all models, so few parameters) minimise the masked squared error of the weighted sum
    (NNLS, normalised to sum to 1; stacking in the sense of Breiman 1996). ``method="mean"``
    skips the OOF step and averages uniformly. ``method="aiq"`` instead picks the weights on a
    simplex grid (steps of ``1 / aiq_steps``) that maximise the AIQ of routing on the
    out-of-fold predictions with the training costs: squared error rewards fitting
    within-group noise, the cost-quality frontier does not (needs ``cost`` and rows with every
    model observed).

    State: ``weights_`` plus each member's learned attributes stored on this object under the
    prefix ``member{i}__`` (plain arrays and JSON scalars, like any estimator), rebuilt into
    member objects by :meth:`_after_load`.
    """

    name = "ensemble"

    def __init__(
        self,
        members: Sequence[dict[str, Any]] = DEFAULT_MEMBERS,
        method: str = "stack",
        cv: int = 3,
        seed: int = 0,
        aiq_steps: int = 4,
    ) -> None:
        self.members = members
        self.method = method
        self.aiq_steps = aiq_steps
        self.cv = cv
        self.seed = seed

    def _specs(self) -> list[tuple[str, dict[str, Any]]]:
        specs = []
        for spec in self.members:
            if not isinstance(spec, dict) or "name" not in spec:
                raise ValueError(
                    f"ensemble member must be {{'name': ..., 'params': ...}}, got {spec!r}"
                )
            specs.append((str(spec["name"]), dict(spec.get("params") or {})))
        if not specs:
            raise ValueError("ensemble needs at least one member")
        return specs

    def fit(self, X: np.ndarray, Y: np.ndarray, cost: np.ndarray | None = None) -> Self:
        from routeiq.quality import make_quality_model  # registry imports this module

        if self.method not in ("stack", "mean", "aiq"):
            raise ValueError(f"method must be 'stack', 'mean' or 'aiq', got {self.method!r}")
        X, Y, mask = check_XY(X, Y)
        full = _complete_rows(Y, cost) if self.method == "aiq" else None
        members = [
            make_quality_model(name, **params).fit(X, Y, cost) for name, params in self._specs()
        ]
        if self.method == "mean" or len(members) == 1:
            weights = np.full(len(members), 1.0 / len(members))
        else:
            columns, oof = [], []
            for (name, _), member in zip(self._specs(), members, strict=True):
                fixed = member.fixed_params() if isinstance(member, Model) else {}
                P = oof_predict(
                    partial(make_quality_model, name, **fixed),
                    X,
                    Y,
                    cost,
                    n_splits=self.cv,
                    seed=self.seed + 1,
                )
                columns.append(P[mask])
                oof.append(P)
            if full is not None:
                assert cost is not None
                weights = _aiq_weights(oof, Y[full], np.asarray(cost)[full], full, self.aiq_steps)
            else:
                weights = _nnls_weights(columns, Y[mask])
        for key in [k for k in vars(self) if _MEMBER_KEY.match(k)]:  # from an earlier fit
            delattr(self, key)
        for i, member in enumerate(members):
            scalars, arrays = member.get_state()
            for key, value in {**scalars, **arrays}.items():
                setattr(self, f"member{i}__{key}", value)
        self.weights_ = weights
        self._set_shape(X, Y)
        self._members: list[QualityModel] = members
        return self

    def _after_load(self) -> None:
        from routeiq.quality import quality_model_class

        self._members = []
        for i, (name, params) in enumerate(self._specs()):
            prefix = f"member{i}__"
            state = {k[len(prefix) :]: v for k, v in vars(self).items() if k.startswith(prefix)}
            self._members.append(quality_model_class(name).from_state(params, state, {}))

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._check_predict(X)
        out = np.zeros((len(X), self.n_models_))
        for w, member in zip(self.weights_, self._members, strict=True):
            if w > 0:
                out += w * member.predict(X)
        return self._out(out)


def _complete_rows(Y: np.ndarray, cost: np.ndarray | None) -> np.ndarray:
    """Rows with every model's quality and cost known (what an AIQ sweep needs)."""
    if cost is None:
        raise ValueError("method='aiq' needs the training cost matrix (fit(X, Y, cost))")
    cost = np.asarray(cost, dtype=np.float64)
    if cost.shape != Y.shape:
        raise ValueError(f"cost must have shape {Y.shape}, got {cost.shape}")
    full = ~(np.isnan(Y).any(axis=1) | np.isnan(cost).any(axis=1))
    if full.sum() < 2:
        raise ValueError("method='aiq' needs at least 2 rows with every model's quality and cost")
    return full


def _nnls_weights(columns: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls  # training only: serving stays numpy (start-up time)

    weights, _ = nnls(np.stack(columns, axis=1), y)
    total = weights.sum()
    return weights / total if total > 0 else np.full(len(columns), 1 / len(columns))


def _simplex(n: int, steps: int) -> list[tuple[int, ...]]:
    """Every n-tuple of non-negative integers summing to ``steps`` (grid on the simplex)."""
    if n == 1:
        return [(steps,)]
    return [(i, *rest) for i in range(steps, -1, -1) for rest in _simplex(n - 1, steps - i)]


def _aiq_weights(
    oof: list[np.ndarray], Q: np.ndarray, C: np.ndarray, rows: np.ndarray, steps: int
) -> np.ndarray:
    """Simplex-grid weights with the best AIQ of the out-of-fold blend (ties: first found)."""
    from routeiq.evaluation.metrics import aiq, cost_range, sweep

    if steps < 1:
        raise ValueError(f"aiq_steps must be >= 1, got {steps}")
    span = cost_range(Q, C)
    stacked = np.stack([P[rows] for P in oof])
    best, best_w = -np.inf, np.full(len(oof), 1.0 / len(oof))
    for combo in _simplex(len(oof), int(steps)):
        w = np.asarray(combo, dtype=np.float64) / steps
        value = aiq(sweep(np.tensordot(w, stacked, axes=1), C, Q, C), span)
        if value is not None and value > best:
            best, best_w = value, w
    return best_w
