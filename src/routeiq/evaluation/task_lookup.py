"""The task-lookup baseline: each model's mean train quality and cost per task.

    P, C_hat = task_lookup(train.tasks, train.quality, train.cost, test.tasks)

The router a spreadsheet gives when the traffic names its task: per-task means shrunk toward
the global mean (``(n_t * mean_t + k * global) / (n_t + k)``, ``k`` chosen by K-fold on
train), the global mean for a task train never saw. A text router that cannot match it is
throwing away signal the text carries; evaluation tables show it next to every router.
Evaluation only: serving has no task column.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SHRINKAGE = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0)


def _means(codes: np.ndarray, values: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group column sums and counts (NaNs skipped per column)."""
    ok = ~np.isnan(values)
    sums = np.zeros((n_groups, values.shape[1]))
    counts = np.zeros((n_groups, values.shape[1]))
    np.add.at(sums, codes, np.where(ok, values, 0.0))
    np.add.at(counts, codes, ok.astype(np.float64))
    return sums, counts


def _shrunk(codes: np.ndarray, values: np.ndarray, n_groups: int, k: float) -> np.ndarray:
    sums, counts = _means(codes, values, n_groups)
    glob = np.nanmean(values, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = (sums + k * glob) / (counts + k)
    return np.where(counts + k > 0, table, glob)


def choose_shrinkage(
    codes: np.ndarray, quality: np.ndarray, n_groups: int, folds: int = 5, seed: int = 0
) -> float:
    """The shrinkage strength with the least K-fold squared error of predicted quality."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(codes)) % folds
    errors = []
    for k in SHRINKAGE:
        sse = 0.0
        for f in range(folds):
            fit, held = fold != f, fold == f
            table = _shrunk(codes[fit], quality[fit], n_groups, k)
            diff = table[codes[held]] - quality[held]
            sse += float(np.nansum(diff * diff))
        errors.append(sse)
    return SHRINKAGE[int(np.argmin(errors))]


def task_lookup(
    train_tasks: Sequence[str],
    train_quality: np.ndarray,
    train_cost: np.ndarray,
    test_tasks: Sequence[str],
    *,
    shrinkage: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted quality and cost (test rows x models) from per-task train means."""
    Q = np.asarray(train_quality, dtype=np.float64)
    C = np.asarray(train_cost, dtype=np.float64)
    if len(train_tasks) != Q.shape[0] or Q.shape != C.shape:
        raise ValueError("train_tasks, train_quality and train_cost must have matching rows")
    names = sorted(set(train_tasks))
    index = {t: i for i, t in enumerate(names)}
    codes = np.array([index[t] for t in train_tasks], dtype=np.int64)
    unseen = len(names)  # an extra, empty group: its shrunk mean is the global mean
    k = choose_shrinkage(codes, Q, unseen + 1) if shrinkage is None else float(shrinkage)
    q_table = _shrunk(codes, Q, unseen + 1, max(k, 1e-9))
    c_table = _shrunk(codes, C, unseen + 1, 1e-9)  # costs are per-task facts: no shrinkage
    test_codes = np.array([index.get(t, unseen) for t in test_tasks], dtype=np.int64)
    return q_table[test_codes], c_table[test_codes]
