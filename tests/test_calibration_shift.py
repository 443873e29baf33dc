"""Robust target calibration: a lambda fitted on one mix of tasks must hold on another."""

from __future__ import annotations

import numpy as np
import pytest

from routeiq.data.dataset import RoutingDataset
from routeiq.decision import BudgetTarget, QualityTarget, best_single, calibrate_lambda, choose
from routeiq.decision.calibrate import DEFAULT_CONFIDENCE
from routeiq.features import make_featurizer
from routeiq.quality import make_quality_model
from routeiq.router import LearnedRouter

N_TASKS, ROWS = 12, 200


def _tasks(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per task: the strong model A's accuracy and the cheap model B's (B fails a quarter)."""
    p_strong = rng.uniform(0.6, 0.9, N_TASKS)
    gap = rng.choice([0.0, 0.0, 0.0, 0.5], N_TASKS)
    return p_strong, p_strong - gap


def _sample(rng: np.random.Generator, p: tuple[np.ndarray, np.ndarray], task: np.ndarray):
    """Rows of the given tasks: predictions that cannot tell the tasks apart (the global
    means plus noise), A at cost 1 and B at cost 0.1, 0/1 true quality."""
    n = task.size
    true = np.column_stack([rng.random(n) < p[0][task], rng.random(n) < p[1][task]]).astype(float)
    pred = np.column_stack([np.full(n, 0.8), 0.7 + rng.normal(0, 0.1, n)])
    return pred, np.tile([1.0, 0.1], (n, 1)), true


def _on_new_mixes(lam: float, p, fraction: float, n_mixes: int = 200) -> tuple[float, float]:
    """Share of new traffic mixes (tasks drawn with replacement, fresh rows) on which ``lam``
    meets ``fraction`` x the best single model's quality, and the mean cost fraction."""
    hits, costs = [], []
    for s in range(n_mixes):
        rng = np.random.default_rng(100 + s)
        task = np.repeat(rng.choice(N_TASKS, N_TASKS), ROWS)
        P, C, Q = _sample(rng, p, task)
        chosen, rows, best = choose(P, C, lam)[0], np.arange(task.size), best_single(Q, C)
        hits.append(Q[rows, chosen].mean() >= fraction * Q[:, best].mean())
        costs.append(C[rows, chosen].mean() / C[:, best].mean())
    return float(np.mean(hits)), float(np.mean(costs))


def test_mean_calibration_misses_shifted_mixes_robust_one_meets_them():
    rng = np.random.default_rng(3)
    p = _tasks(rng)
    groups = np.repeat(np.arange(N_TASKS), ROWS)
    pred, cost, true = _sample(rng, p, groups)
    target = QualityTarget(0.95)

    mean = calibrate_lambda(target, pred, cost, true, groups=groups, confidence=None)
    robust = calibrate_lambda(target, pred, cost, true, groups=groups, confidence=0.9)
    assert mean.met and robust.met
    assert robust.lam < mean.lam  # pays for the margin with a smaller lambda
    assert robust.metrics["n_groups"] == N_TASKS and robust.metrics["confidence"] == 0.9
    assert robust.metrics["quality_ratio_lower"] >= 0.95 - 1e-9
    assert "resampled mixes of 12 groups" in robust.explanation

    mean_hits, _ = _on_new_mixes(mean.lam, p, 0.95)
    robust_hits, robust_cost = _on_new_mixes(robust.lam, p, 0.95)
    assert mean_hits <= 0.6  # met on average: missed on about half of the new mixes
    assert robust_hits >= 0.8  # held with high probability
    assert robust_cost < 0.99  # and still cheaper than the best single model

    # Resampling rows only (no task labels) sees less of the task-mix risk: a thinner margin.
    rows_only = calibrate_lambda(target, pred, cost, true, confidence=0.9)
    assert rows_only.metrics["n_groups"] == 1000  # 2,400 rows pooled into 1,000 blocks
    assert robust.lam < rows_only.lam < mean.lam


def test_confidence_none_is_the_mean_calibration_and_seeded_runs_repeat():
    rng = np.random.default_rng(5)
    p = _tasks(rng)
    groups = np.repeat(np.arange(N_TASKS), ROWS)
    pred, cost, true = _sample(rng, p, groups)
    target = QualityTarget(0.9)
    plain = calibrate_lambda(target, pred, cost, true)
    none = calibrate_lambda(target, pred, cost, true, groups=groups, confidence=None)
    assert plain.lam == none.lam and plain.metrics == none.metrics
    assert plain.metrics["confidence"] is None and "n_groups" not in plain.metrics
    names = np.array([f"task-{g:02d}" for g in groups], dtype=object)  # any labels
    a = calibrate_lambda(target, pred, cost, true, groups=names, confidence=0.9)
    b = calibrate_lambda(target, pred, cost, true, groups=groups, confidence=0.9)
    assert a.lam == b.lam and a.metrics == b.metrics
    other_seed = calibrate_lambda(target, pred, cost, true, groups=groups, confidence=0.9, seed=1)
    assert other_seed.metrics["n_bootstrap"] == 1000


def test_robust_budget_stays_under_the_ceiling_on_resampled_mixes():
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(N_TASKS), ROWS)
    pred, cost, true = _sample(rng, _tasks(rng), groups)
    cost = cost * np.repeat(rng.uniform(0.5, 2.0, N_TASKS), ROWS)[:, None]  # pricier tasks
    target = BudgetTarget(500.0)  # $0.5 per request
    mean = calibrate_lambda(target, pred, cost, true, groups=groups)
    robust = calibrate_lambda(target, pred, cost, true, groups=groups, confidence=0.9)
    assert mean.met and robust.met and robust.lam >= mean.lam
    assert robust.metrics["cost_upper"] <= 0.5 + 1e-12
    assert robust.metrics["cost_per_request"] <= mean.metrics["cost_per_request"]


@pytest.mark.parametrize("bad", [1.0, 0.3, -0.9, float("nan"), True, "0.9"])
def test_confidence_is_validated(bad):
    pred, cost, true = _sample(
        np.random.default_rng(0), _tasks(np.random.default_rng(0)), np.zeros(30, int)
    )
    with pytest.raises(ValueError, match="confidence must"):
        calibrate_lambda(QualityTarget(1.0), pred, cost, true, confidence=bad)


def test_groups_and_bootstrap_size_are_validated():
    pred, cost, true = _sample(
        np.random.default_rng(0), _tasks(np.random.default_rng(0)), np.zeros(30, int)
    )
    with pytest.raises(ValueError, match="groups must be a 1-D array of 30"):
        calibrate_lambda(QualityTarget(1.0), pred, cost, true, groups=[0, 1], confidence=0.9)
    with pytest.raises(ValueError, match="NaN"):
        calibrate_lambda(
            QualityTarget(1.0), pred, cost, true, groups=np.full(30, np.nan), confidence=0.9
        )
    with pytest.raises(ValueError, match="n_bootstrap must be an integer >= 20"):
        calibrate_lambda(QualityTarget(1.0), pred, cost, true, confidence=0.9, n_bootstrap=5)


def _dataset(n_per_task: int = 40) -> RoutingDataset:
    topics = ["python code", "algebra equation", "history essay", "chemistry reaction"]
    rng = np.random.default_rng(0)
    prompts, tasks, quality = [], [], []
    for t, topic in enumerate(topics):
        for i in range(n_per_task):
            prompts.append(f"{topic} question number {i} about {topic} {rng.integers(1000)}")
            tasks.append(topic.split()[0])
            strong = float(rng.random() < 0.9)
            quality.append([strong, float(rng.random() < (0.85 if t % 2 else 0.4))])
    cost = np.tile([1e-3, 1e-4], (len(prompts), 1))
    return RoutingDataset(prompts, ["strong", "cheap"], np.array(quality), cost, tasks=tasks)


def test_router_calibrates_on_task_groups_and_loads_artifacts_without_them(tmp_path):
    data = _dataset()
    router = LearnedRouter(make_featurizer("lexical"), make_quality_model("knn"), cv_folds=3)
    router.fit(data)
    assert sorted(set(router.calibration_["group"].tolist())) == [0, 1, 2, 3]
    cal = router.calibrate("quality>=0.9")
    assert cal.metrics["confidence"] == DEFAULT_CONFIDENCE and cal.metrics["n_groups"] == 4
    assert router.is_calibrated("quality>=0.9")
    assert not router.is_calibrated("quality>=0.9", confidence=None)
    mean = router.calibrate("quality>=0.9", confidence=None)
    assert mean.metrics["confidence"] is None and "n_groups" not in mean.metrics
    with pytest.raises(ValueError, match="confidence must"):
        router.calibrate("quality>=0.9", confidence=1.5)

    # The task groups travel with the artifact.
    router.save(tmp_path / "new")
    reloaded = LearnedRouter.load(tmp_path / "new")
    np.testing.assert_array_equal(reloaded.calibration_["group"], router.calibration_["group"])
    assert reloaded.calibrate("quality>=0.9").lam == cal.lam

    # An artifact written before robust calibration has no "group": rows are resampled.
    del router.calibration_["group"]
    router.save(tmp_path / "old")
    loaded = LearnedRouter.load(tmp_path / "old")
    assert "group" not in loaded.calibration_
    old = loaded.calibrate("quality>=0.9")
    assert old.metrics["n_groups"] == len(data) and old.metrics["confidence"] == DEFAULT_CONFIDENCE

    # A router trained on data without task names has no groups either.
    untasked = RoutingDataset(data.prompts, data.models, data.quality, data.cost)
    plain = LearnedRouter(make_featurizer("lexical"), make_quality_model("knn"), cv_folds=3)
    assert "group" not in plain.fit(untasked).calibration_
