"""Ensemble weights chosen by out-of-fold routing AIQ (method="aiq")."""

from __future__ import annotations

import numpy as np
import pytest

from routeiq.quality import make_quality_model
from routeiq.quality.ensemble import _simplex


def _data(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two prompt groups; the cheap model is good on group 0 only (readable from X[:, 0])."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 2, n)
    X = np.c_[group + 0.05 * rng.standard_normal(n), rng.standard_normal((n, 3))]
    strong = rng.random(n) < 0.9
    cheap = rng.random(n) < np.where(group == 0, 0.9, 0.1)
    Y = np.c_[strong, cheap].astype(np.float64)
    cost = np.tile([1.0, 0.01], (n, 1))
    return X, Y, cost


def test_aiq_weights_drop_the_uninformative_member() -> None:
    X, Y, cost = _data()
    members = [{"name": "random"}, {"name": "knn", "params": {"k": 10, "prior": 1.0}}]
    model = make_quality_model("ensemble", members=members, method="aiq").fit(X, Y, cost)
    np.testing.assert_allclose(model.weights_, [0.0, 1.0])
    assert model.predict(X[:1]).shape == (1, 2)


def test_aiq_method_needs_costs() -> None:
    X, Y, _ = _data(60)
    members = [{"name": "constant"}, {"name": "knn"}]
    model = make_quality_model("ensemble", members=members, method="aiq")
    with pytest.raises(ValueError, match="needs the training cost"):
        model.fit(X, Y)


def test_simplex_grid_sums_to_steps() -> None:
    grid = _simplex(3, 4)
    assert len(grid) == 15 and all(sum(g) == 4 for g in grid)
