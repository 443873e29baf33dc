"""The task-lookup baseline: per-task means, shrinkage chosen on train, unseen tasks."""

from __future__ import annotations

import numpy as np
import pytest

from routeiq.evaluation.task_lookup import SHRINKAGE, choose_shrinkage, task_lookup


def test_per_task_means_and_the_global_mean_for_unseen_tasks():
    tasks = ["a", "a", "b", "b"]
    Q = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, np.nan]])
    C = np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0], [3.0, 4.0]])
    P, C_hat = task_lookup(tasks, Q, C, ["b", "a", "new"], shrinkage=0.0)
    np.testing.assert_allclose(P, [[0.0, 1.0], [1.0, 0.0], [0.5, 1 / 3]], atol=1e-8)  # NaN skipped
    np.testing.assert_allclose(C_hat, [[3.0, 4.0], [1.0, 2.0], [2.0, 3.0]])
    # Shrinkage pulls a task's mean toward the global one by k pseudo-rows.
    P, _ = task_lookup(tasks, Q, C, ["a"], shrinkage=2.0)
    np.testing.assert_allclose(P[0, 0], (2 * 1.0 + 2 * 0.5) / 4)


def test_shrinkage_is_chosen_by_cross_validation():
    rng = np.random.default_rng(0)
    # Real task effects: little shrinkage wins.
    codes = rng.integers(0, 3, 3000)
    Q = (rng.random((3000, 2)) < np.array([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])[codes]) * 1.0
    assert choose_shrinkage(codes, Q, 4) <= 3.0
    # Many tiny tasks of pure noise: the most shrinkage wins.
    codes = rng.integers(0, 1500, 3000)
    Q = (rng.random((3000, 2)) < 0.5) * 1.0
    assert choose_shrinkage(codes, Q, 1501) == SHRINKAGE[-1]


def test_mismatched_rows_are_an_error():
    with pytest.raises(ValueError, match="matching rows"):
        task_lookup(["a"], np.zeros((2, 2)), np.zeros((2, 2)), ["a"])
