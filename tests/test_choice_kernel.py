"""One choice kernel: calibration, evaluation and serving choose the same model for every row."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from routeiq.decision import (
    QualityTarget,
    best_single,
    calibrate_lambda,
    cheapest_single,
    check_lambda,
    choose,
    decide,
    lambda_grid,
    switch_points,
)
from routeiq.evaluation.metrics import sweep

N, M = 300, 4
NAMES = [f"d{j}" for j in range(M)]
MODELS = [f"model-{j}" for j in range(M)]


def _problem(seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P, C, Q): predicted quality, predicted cost (USD) and true quality, (N, M).

    ``ties=True`` rounds P and draws C from a few values, so equal utilities are common and
    the tie rules (cheaper, then lower index) decide many rows.
    """
    rng = np.random.default_rng(seed)
    P = rng.random((N, M))
    C = 10.0 ** rng.uniform(-5, -2, (N, M))
    if ties:
        P = np.round(P, 1)
        C = rng.choice([1e-4, 5e-4, 1e-3], size=(N, M))
    Q = np.clip(P + rng.normal(0, 0.2, (N, M)), 0, 1)  # noisy, continuous: distinct means
    return P, C, Q


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n_points", [200, 12])
def test_calibration_and_sweep_evaluate_the_same_grid_and_choices(ties, n_points):
    P, C, Q = _problem(seed=1 + ties, ties=ties)
    grid = lambda_grid(P, C, n_points)
    assert grid[0] == 0 and math.isinf(grid[-1]) and grid.size <= n_points

    cal = calibrate_lambda(QualityTarget(0.9), P, C, Q, n_points=n_points)
    np.testing.assert_array_equal(cal.grid, grid)
    assert cal.lam in grid

    curve = sweep(P, C, Q, C, lambdas=grid)  # decide with (P, C), score with (Q, C)
    np.testing.assert_array_equal(curve.lambdas, grid)
    np.testing.assert_allclose(curve.cost, cal.curve["cost"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(curve.quality, cal.curve["quality"], rtol=1e-12, atol=0)
    expensive = int(np.argmax(C.mean(axis=0)))
    np.testing.assert_array_equal(curve.shares[:, expensive], cal.curve["expensive_share"])

    # Both equal the kernel's own choices (true cost distinct from the predicted one, so the
    # comparison pins every row's choice, not only the means).
    chosen = choose(P, C, grid)
    rows = np.arange(N)
    C_true = np.random.default_rng(7).uniform(1e-6, 1e-2, (N, M))
    truth = sweep(P, C, Q, C_true, lambdas=grid)
    np.testing.assert_allclose(truth.cost, C_true[rows, chosen].mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(truth.quality, Q[rows, chosen].mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(cal.curve["predicted_quality"], P[rows, chosen].mean(axis=1))

    # The calibrated point, evaluated alone, is what calibration reported.
    alone = sweep(P, C, Q, C, lambdas=[cal.lam])
    assert alone.quality[0] == pytest.approx(cal.metrics["quality"], rel=1e-12)
    assert alone.cost[0] == pytest.approx(cal.metrics["cost_per_request"], rel=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_choose_matches_the_single_request_serving_rule(ties):
    P, C, _ = _problem(seed=3, ties=ties)
    grid = lambda_grid(P, C)
    # 0, inf, a spread of grid lambdas and exact switch points (utilities tie there).
    switches = np.unique(switch_points(P, C))
    lams = np.unique(
        np.concatenate(
            [
                [0.0, np.inf],
                grid[:: max(1, grid.size // 8)],
                switches[:: max(1, switches.size // 8)],
            ]
        )
    )
    chosen = choose(P, C, lams)
    sample = np.random.default_rng(0).choice(N, size=60, replace=False)
    checked = 0
    for k, lam in enumerate(lams):
        for i in sample:
            d = decide(NAMES, MODELS, P[i], C[i], float(lam))
            assert d.chosen == NAMES[chosen[k, i]], (lam, i, P[i], C[i])
            assert d.model == MODELS[chosen[k, i]]
            assert [row.probability for row in d.candidates].count(1.0) == 1
            checked += 1
    assert checked >= 60 * 3
    # lambda = 0 is the best predicted quality, inf the cheapest predicted cost.
    np.testing.assert_array_equal(P[np.arange(N), chosen[0]], P.max(axis=1))
    np.testing.assert_array_equal(C[np.arange(N), chosen[-1]], C.min(axis=1))


def test_choose_tie_rules_by_hand():
    # Equal utility: cheaper wins; equal utility and cost: lower index wins.
    q = np.array([[0.5, 0.5, 0.5], [0.9, 0.7, 0.7]])
    c = np.array([[2.0, 1.0, 1.0], [0.3, 0.1, 0.1]])
    np.testing.assert_array_equal(choose(q, c, 0.0)[0], [1, 0])
    np.testing.assert_array_equal(choose(q, c, 1.0)[0], [1, 1])  # row 2: 0.6 = 0.6 = 0.6
    np.testing.assert_array_equal(choose(q, c, np.inf)[0], [1, 1])
    # inf: min cost, ties to the higher quality, then the lower index.
    q2 = np.array([[0.1, 0.8, 0.8, 0.9]])
    c2 = np.array([[1.0, 1.0, 1.0, 2.0]])
    assert choose(q2, c2, np.inf)[0, 0] == 1


# --------------------------------------------------------------------------- best/cheapest


def test_best_single_ties_to_lower_cost_then_lower_index():
    q = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])  # every mean 0.5
    c = np.array([[3.0, 2.0, 2.0, 5.0], [3.0, 2.0, 2.0, 5.0]])
    assert best_single(q, c) == 1  # cost 2 twice: the lower index of the two
    c[:, 1] = 2.5
    assert best_single(q, c) == 2
    assert best_single(q, np.ones_like(q)) == 0
    q[0, 3] = 1.0
    assert best_single(q, c) == 3  # a higher mean quality beats any cost


def test_cheapest_single_ties_to_higher_quality_then_lower_index():
    q = np.array([[0.2, 0.9, 0.9, 0.1]])
    c = np.array([[1.0, 1.0, 1.0, 0.5]])
    assert cheapest_single(q, c) == 3
    c[0, 3] = 1.0
    assert cheapest_single(q, c) == 1  # cost tie: quality 0.9 twice, lower index
    q[0, 2] = 0.95
    assert cheapest_single(q, c) == 2


def test_unobserved_models_rank_last_without_warnings():
    nan = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" RuntimeWarning
        # Column 0 never observed: last, even against a model of quality 0.
        q = np.array([[nan, 0.0, 0.0], [nan, 0.0, 0.0]])
        c = np.array([[1e-9, 1.0, 2.0], [1e-9, 1.0, 2.0]])
        assert best_single(q, c) == 1
        # Means are over observed entries: column 0 is 1.0 where observed.
        q = np.array([[1.0, 0.9], [nan, 0.9]])
        assert best_single(q, np.ones_like(q)) == 0
        # Equal quality, unknown cost: the model with a known cost wins the tie.
        q = np.array([[0.5, 0.5], [0.5, 0.5]])
        c = np.array([[nan, 9.0], [nan, 9.0]])
        assert best_single(q, c) == 1
        # cheapest_single: an unknown cost is the dearest; unknown quality loses cost ties.
        assert cheapest_single(q, c) == 1
        c = np.array([[1.0, 1.0], [1.0, 1.0]])
        q = np.array([[nan, 0.0], [nan, 0.0]])
        assert cheapest_single(q, c) == 1
        # Nothing observed at all: deterministic, the first model.
        allnan = np.full((2, 3), nan)
        assert best_single(allnan, allnan) == 0
        assert cheapest_single(allnan, allnan) == 0


# --------------------------------------------------------------------------- lambda checks


@pytest.mark.parametrize(
    "lam", ["1", True, False, None, math.nan, -1.0, -1e-300, -math.inf, [0.0, -1.0]]
)
def test_choose_rejects_non_numbers_nan_and_negative_lambdas(lam):
    q, c = np.array([[0.5, 0.4]]), np.array([[1.0, 0.1]])
    with pytest.raises(ValueError, match="lambda"):
        choose(q, c, lam)
    if not isinstance(lam, list):
        with pytest.raises(ValueError, match="lambda"):
            check_lambda(lam)
        with pytest.raises(ValueError, match="lambda"):
            decide(["a", "b"], ["a", "b"], q[0], c[0], lam)


@pytest.mark.parametrize("lams", [[0.0, None], ["0", "1"], [True, False], []])
def test_choose_rejects_bad_lambda_sequences(lams):
    with pytest.raises(ValueError, match="lambda"):
        choose(np.array([[0.5, 0.4]]), np.array([[1.0, 0.1]]), lams)


def test_choose_accepts_numpy_scalars_ints_and_inf():
    q, c = np.array([[0.5, 0.4]]), np.array([[1.0, 0.1]])
    for lam in (0, np.int64(0), np.float32(0.0)):
        assert choose(q, c, lam)[0, 0] == 0
    for lam in (math.inf, np.float64(np.inf), 10):
        assert choose(q, c, lam)[0, 0] == 1
    assert choose(q, c, [0, 10, math.inf]).shape == (3, 1)
