"""Quality models: contract (shapes, range, state round trip, NaN labels) and learning checks.

Data: small seeded slices of the shared RouterBench and LLMRouter files, read with the csv
module and featurised with scikit-learn TF-IDF + LSA, so these tests do not depend on the
project's own loaders and featurizers.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from routeiq.estimator import NotFittedError
from routeiq.quality import (
    QualityModel,
    make_quality_model,
    quality_model_class,
    quality_model_names,
)
from routeiq.quality._util import fit_platt, sigmoid
from routeiq.quality.ranking import bradley_terry, pair_wins
from routeiq.quality.selection import (
    kfold,
    masked_brier,
    routing_regret,
    select_params,
)

N_TRAIN, N_TEST = 600, 300
ALL = quality_model_names()
# Families that must beat the per-model mean on held-out RouterBench rows (the task is
# highly predictive of correctness there, so any model that reads the prompt should).
LEARNED = ["knn", "logistic", "svm", "mlp", "mf", "sw_ranking", "cluster", "ensemble"]


@dataclass
class Split:
    Xtr: np.ndarray
    Ytr: np.ndarray
    Xte: np.ndarray
    Yte: np.ndarray
    models: list[str]


def _slice(texts, Y, splits, seed=0) -> Split:
    splits = np.asarray(splits)
    rng = np.random.default_rng(seed)
    tr = rng.choice(np.flatnonzero(splits == "train"), N_TRAIN, replace=False)
    te = rng.choice(np.flatnonzero(splits == "test"), N_TEST, replace=False)
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    A = vec.fit_transform([texts[i] for i in tr])
    svd = TruncatedSVD(48, random_state=0).fit(A)

    def feats(idx):
        return normalize(svd.transform(vec.transform([texts[i] for i in idx]))).astype(np.float32)

    return Split(feats(tr), Y[tr], feats(te), Y[te], [])


@pytest.fixture(scope="module")
def rb(routerbench_csv: Path) -> Split:
    csv.field_size_limit(sys.maxsize)
    with open(routerbench_csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    models = [
        c
        for c in rows[0]
        if c not in ("sample_id", "eval_name", "split", "prompt")
        and "|" not in c
        and c != "oracle_model_to_route_to"
    ]
    rows = [r for r in rows if all(r[m] != "" for m in models)]  # 14 rows lack labels
    texts = [ast.literal_eval(r["prompt"])[-1][-1500:] for r in rows]  # tail: skip few-shot
    Y = np.array([[float(r[m]) for m in models] for r in rows])
    split = _slice(texts, Y, [r["split"] for r in rows])
    split.models = models
    return split


@pytest.fixture(scope="module")
def lr(llmrouter_files: tuple[Path, Path]) -> Split:
    csv.field_size_limit(sys.maxsize)
    with open(llmrouter_files[0], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    cols = [c for c in rows[0] if c.startswith("score:")]
    Y = np.array([[float(r[c]) for c in cols] for r in rows])
    split = _slice([r["query"][-1500:] for r in rows], Y, [r["split"] for r in rows])
    split.models = [c[len("score:") :] for c in cols]
    return split


@pytest.fixture(scope="module")
def fitted(rb: Split, lr: Split):
    """Lazily fitted models, shared by the tests of this module: (name, dataset) -> model."""
    cache: dict[tuple[str, str], QualityModel] = {}
    data = {"rb": rb, "lr": lr}

    def get(name: str, ds: str) -> QualityModel:
        if (name, ds) not in cache:
            d = data[ds]
            cache[name, ds] = make_quality_model(name).fit(d.Xtr, d.Ytr)
        return cache[name, ds]

    return get


def _roundtrip(model: QualityModel) -> QualityModel:
    """Through the artifact format: JSON params + JSON scalars + npz arrays (no pickle)."""
    scalars, arrays = model.get_state()
    params = json.loads(json.dumps(model.get_params()))
    scalars = json.loads(json.dumps(scalars))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return quality_model_class(model.name).from_state(params, scalars, arrays)


def _choice_quality(Y: np.ndarray, P: np.ndarray) -> float:
    return float(Y[np.arange(len(Y)), P.argmax(axis=1)].mean())


# -- contract, every family ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("ds", ["rb", "lr"])
@pytest.mark.parametrize("name", ALL)
def test_fit_predict_shape_range_and_roundtrip(fitted, rb, lr, name, ds):
    d = {"rb": rb, "lr": lr}[ds]
    model = fitted(name, ds)
    P = model.predict(d.Xte)
    assert P.shape == d.Yte.shape and P.dtype == np.float64
    assert np.all(np.isfinite(P)) and P.min() >= 0.0 and P.max() <= 1.0
    assert not np.allclose(P, P[0]) or name in ("constant", "elo")  # query-independent ones
    np.testing.assert_array_equal(_roundtrip(model).predict(d.Xte), P)
    # one row at a time gives the same answer as a batch (serving path)
    np.testing.assert_allclose(model.predict(d.Xte[3:4]), P[3:4], rtol=1e-6, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_nan_masked_labels(rb, name):
    """70% of labels hidden at random and one model never observed: still fits, finite output."""
    Y = rb.Ytr.copy()
    Y[np.random.default_rng(1).random(Y.shape) < 0.7] = np.nan
    Y[:, 2] = np.nan
    model = make_quality_model(name).fit(rb.Xtr, Y)
    P = model.predict(rb.Xte)
    assert P.shape == rb.Yte.shape
    assert np.all(np.isfinite(P)) and P.min() >= 0.0 and P.max() <= 1.0
    np.testing.assert_array_equal(_roundtrip(model).predict(rb.Xte), P)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_one_observed_model_per_row(lr, name):
    """Logged traffic: one model observed per prompt (no pairs at all)."""
    rng = np.random.default_rng(2)
    Y = np.full(lr.Ytr.shape, np.nan)
    pick = rng.integers(0, Y.shape[1], len(Y))
    Y[np.arange(len(Y)), pick] = lr.Ytr[np.arange(len(Y)), pick]
    P = make_quality_model(name).fit(lr.Xtr, Y).predict(lr.Xte)
    assert np.all(np.isfinite(P)) and P.min() >= 0.0 and P.max() <= 1.0


# -- learning checks -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", LEARNED)
def test_learned_beats_constant_brier_on_routerbench(fitted, rb, name):
    base = masked_brier(rb.Yte, fitted("constant", "rb").predict(rb.Xte))
    brier = masked_brier(rb.Yte, fitted(name, "rb").predict(rb.Xte))
    assert brier < base - 0.003, (name, brier, base)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["knn", "logistic", "mlp", "mf", "cluster", "ensemble"])
def test_learned_beats_constant_brier_on_llmrouter(fitted, lr, name):
    base = masked_brier(lr.Yte, fitted("constant", "lr").predict(lr.Xte))
    brier = masked_brier(lr.Yte, fitted(name, "lr").predict(lr.Xte))
    assert brier < base - 0.01, (name, brier, base)


@pytest.mark.slow
@pytest.mark.parametrize("ds", ["rb", "lr"])
@pytest.mark.parametrize("name", ["routerdc", "elo", "constant", "knn", "cluster"])
def test_routes_better_than_random_at_lambda_zero(fitted, rb, lr, name, ds):
    d = {"rb": rb, "lr": lr}[ds]
    random_q = _choice_quality(d.Yte, fitted("random", ds).predict(d.Xte))
    q = _choice_quality(d.Yte, fitted(name, ds).predict(d.Xte))
    assert q > random_q + 0.05, (name, q, random_q)


@pytest.mark.slow
def test_constant_and_elo_pick_the_best_single_model(fitted, rb):
    best = int(np.nanargmax(np.nanmean(rb.Ytr, axis=0)))
    assert fitted("constant", "rb").predict(rb.Xte[:1]).argmax() == best
    np.testing.assert_allclose(fitted("constant", "rb").mean_, rb.Ytr.mean(axis=0))
    assert fitted("elo", "rb").predict(rb.Xte[:1]).argmax() == best


# -- units without the datasets --------------------------------------------------------------


def _toy(n=240, m=3, seed=0):
    """Two clusters; model 0 is right on cluster A, model 1 on cluster B, model 2 always 0.5."""
    rng = np.random.default_rng(seed)
    side = rng.integers(0, 2, n)
    X = rng.normal(0, 0.3, (n, 4)) + np.where(side[:, None] == 1, 2.0, -2.0) * np.eye(4)[0]
    Y = np.column_stack([(side == 0) * 1.0, (side == 1) * 1.0, np.full(n, 0.5)])
    return X.astype(np.float32), Y, side


@pytest.mark.parametrize(
    "name", ["knn", "logistic", "svm", "mlp", "mf", "cluster", "sw_ranking", "routerdc"]
)
def test_toy_problem_routes_each_cluster_to_its_model(name):
    X, Y, side = _toy()
    model = make_quality_model(name).fit(X[:160], Y[:160])
    choice = model.predict(X[160:]).argmax(axis=1)
    assert np.mean(choice == side[160:]) > 0.95


def test_fractional_labels_learned_as_soft_targets():
    X, Y, _ = _toy()
    P = make_quality_model("logistic").fit(X, Y).predict(X)
    assert abs(P[:, 2].mean() - 0.5) < 0.05  # model 2 scores 0.5 everywhere


def test_registry_errors_list_known_names():
    with pytest.raises(ValueError, match="known: constant, random, knn"):
        make_quality_model("nope")
    with pytest.raises(TypeError, match="valid: k, k_grid"):
        make_quality_model("knn", kk=3)
    assert set(ALL) >= {
        "constant",
        "random",
        "knn",
        "logistic",
        "svm",
        "mlp",
        "mf",
        "elo",
        "sw_ranking",
        "routerdc",
        "cluster",
        "ensemble",
    }
    for name in ALL:
        assert quality_model_class(name).name == name


def test_input_validation_and_not_fitted():
    X, Y, _ = _toy()
    model = make_quality_model("logistic")
    with pytest.raises(NotFittedError):
        model.predict(X)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.fit(X, Y * 2)
    with pytest.raises(ValueError, match="no observed"):
        model.fit(X, np.full(Y.shape, np.nan))
    with pytest.raises(ValueError, match="shape"):
        model.fit(X, Y[:10])
    model.fit(X, Y)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :2])


def test_random_is_deterministic_per_row_and_seed():
    X, Y, _ = _toy()
    a = make_quality_model("random", seed=1).fit(X, Y)
    P = a.predict(X[:50])
    np.testing.assert_array_equal(P, a.predict(X[:50]))
    np.testing.assert_array_equal(P[7], a.predict(X[7:8])[0])
    assert not np.allclose(P, make_quality_model("random", seed=2).fit(X, Y).predict(X[:50]))
    counts = np.bincount(a.predict(X).argmax(axis=1), minlength=3)
    assert counts.min() > 40  # roughly uniform over 3 models on 240 rows


def test_kfold_partitions_rows():
    folds = kfold(10, 3, seed=0)
    assert len(folds) == 3
    val = np.concatenate([va for _, va in folds])
    assert sorted(val.tolist()) == list(range(10))
    for tr, va in folds:
        assert not set(tr) & set(va) and len(tr) + len(va) == 10
    assert [v.tolist() for _, v in kfold(10, 3, 0)] == [v.tolist() for _, v in folds]


def test_masked_scores():
    Y = np.array([[1.0, np.nan], [0.0, 1.0]])
    P = np.array([[0.5, 0.9], [0.5, 0.5]])
    assert masked_brier(Y, P) == pytest.approx((0.25 + 0.25 + 0.25) / 3)
    np.testing.assert_allclose(masked_brier(Y, P, axis=0), [0.25, 0.25])
    # row 0 has one observed model (no regret); row 1 picks model 0 (tie -> first): regret 1
    assert routing_regret(Y, P) == pytest.approx(1.0)


def test_select_params_prefers_the_better_setting():
    X, Y, _ = _toy()
    sel = select_params(
        lambda **p: make_quality_model("knn", weights="uniform", **p),
        [{"k": 150}, {"k": 5}],
        X,
        Y,
        n_splits=3,
        seed=0,
    )
    assert sel.best == {"k": 5} and sel.scores[1] < sel.scores[0]


def test_bradley_terry_recovers_ratings():
    true = np.array([1.0, 0.0, -1.0])
    P = sigmoid(true[:, None] - true[None, :])
    W = 1000.0 * P * (1 - np.eye(3))
    r = bradley_terry(W[None], np.zeros(3), 1e-3)[0]
    np.testing.assert_allclose(r - r.mean(), true, atol=0.01)


def test_pair_wins_counts_disagreements_only():
    Y = np.array([[1.0, 0.0, np.nan], [1.0, 1.0, 0.0]])
    W = pair_wins(Y, ~np.isnan(Y))
    assert W[0, 0, 1] == 1 and W[0, 1, 0] == 0 and W[0, :, 2].sum() == 0
    assert W[1, 0, 1] == 0 and W[1, 0, 2] == 1 and W[1, 1, 2] == 1


def test_fit_platt_recovers_parameters():
    rng = np.random.default_rng(0)
    f = rng.normal(size=20000)
    y = (rng.random(20000) < sigmoid(2.0 * f - 0.5)).astype(float)
    a, b = fit_platt(f, y, l2=0.0)
    assert a == pytest.approx(2.0, abs=0.1) and b == pytest.approx(-0.5, abs=0.05)


def test_ensemble_state_holds_members_under_prefixes():
    X, Y, _ = _toy()
    model = make_quality_model(
        "ensemble", members=[{"name": "knn", "params": {"k": 5}}, {"name": "constant"}]
    ).fit(X, Y)
    scalars, arrays = model.get_state()
    assert "member0__X_" in arrays and "member1__mean_" in arrays
    assert scalars["member0__k_"] == 5
    assert model.weights_[0] > model.weights_[1]
    np.testing.assert_array_equal(_roundtrip(model).predict(X), model.predict(X))
