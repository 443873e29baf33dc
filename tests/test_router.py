"""LearnedRouter: fit, route with explanations, targets, unknown models, artifacts."""

from __future__ import annotations

import numpy as np
import pytest

from routeiq.artifacts import ArtifactError
from routeiq.data.loaders import load_routerbench
from routeiq.data.prompts import PromptError
from routeiq.features import make_featurizer
from routeiq.quality import make_quality_model
from routeiq.router import Candidate, LearnedRouter

CODE = "Write a python function to find the longest common subsequence of two strings."


@pytest.fixture(scope="module")
def bench(routerbench_csv):
    data = load_routerbench(routerbench_csv)
    train = data.split("train")
    rng = np.random.default_rng(0)
    return train.subset(rng.choice(len(train), 500, replace=False)), data.split("test")


@pytest.fixture(scope="module")
def fitted(bench):
    train, _ = bench
    return LearnedRouter(
        make_featurizer("lexical"), make_quality_model("logistic"), cv_folds=3
    ).fit(train)


def test_route_explains_every_candidate(fitted):
    decision = fitted.route(CODE)
    assert decision.chosen in fitted.models_
    assert {row.name for row in decision.candidates} == set(fitted.models_)
    best = max(decision.candidates, key=lambda r: r.utility)
    assert decision.chosen == best.name
    assert decision.to_dict()["chosen"] == decision.chosen


def test_lambda_moves_choice_from_quality_to_cost(fitted):
    quality_first = fitted.route(CODE, lam=0.0)
    cheapest = fitted.route(CODE, lam=float("inf"))
    rows = {r.name: r for r in cheapest.candidates}
    assert rows[cheapest.chosen].cost == min(r.cost for r in cheapest.candidates)
    q_rows = {r.name: r for r in quality_first.candidates}
    assert q_rows[quality_first.chosen].predicted_quality == max(
        r.predicted_quality for r in quality_first.candidates
    )


def test_predictions_differ_by_prompt(fitted, bench):
    _, test = bench
    P = fitted.predict_quality(test.prompts[:200])
    assert P.shape == (200, len(fitted.models_))
    assert np.ptp(P, axis=0).max() > 0.1  # content matters, not a constant per model


def test_subset_and_unknown_candidates(fitted):
    cands = [Candidate("a", "gpt-4-1106-preview"), Candidate("b", "brand-new-model", cost=1e-5)]
    decision = fitted.route(CODE, cands)
    rows = {r.name: r for r in decision.candidates}
    assert rows["a"].mapped_from is None
    assert rows["b"].mapped_from is not None  # price prior to a known model
    assert decision.chosen in {"a", "b"}


def test_calibrated_target_meets_quality_on_train_folds(fitted):
    cal = fitted.calibrate("quality>=0.95")
    assert cal.lam >= 0
    assert cal.metrics["quality"] >= 0.95 * cal.metrics["best_single_quality"] - 1e-9
    decision = fitted.route(CODE, target="quality>=0.95")
    assert "calibrated" in decision.rule


def test_bad_prompts_are_clear_errors(fitted):
    with pytest.raises(PromptError):
        fitted.route("   ")
    with pytest.raises(PromptError):
        fitted.route([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])
    huge = "x " * 500_000  # 1 MB: only the tail is featurized
    assert fitted.route(huge).chosen in fitted.models_


def test_artifact_round_trip_and_tamper(fitted, bench, tmp_path):
    _, test = bench
    digest = fitted.save(tmp_path / "r")
    loaded = LearnedRouter.load(tmp_path / "r")
    assert loaded.digest == digest
    np.testing.assert_allclose(
        loaded.predict_quality(test.prompts[:50]), fitted.predict_quality(test.prompts[:50])
    )
    assert loaded.route(CODE).chosen == fitted.route(CODE).chosen
    npz = next((tmp_path / "r").glob("*.npz"))
    raw = bytearray(npz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    npz.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError):
        LearnedRouter.load(tmp_path / "r")


def test_lambda_is_validated_and_inf_survives_an_artifact(bench, tmp_path):
    with pytest.raises(ValueError):
        LearnedRouter(make_featurizer("lexical"), make_quality_model("constant"), lam=-1.0)
    train, _ = bench
    cheapest = LearnedRouter(
        make_featurizer("lexical"), make_quality_model("constant"), lam=float("inf"), cv_folds=2
    ).fit(train.subset(range(200)))
    cheapest.save(tmp_path / "inf")
    loaded = LearnedRouter.load(tmp_path / "inf")
    assert loaded.lam == float("inf")
    decision = loaded.route(CODE)
    assert decision.chosen == min(decision.candidates, key=lambda r: r.cost).name


def test_calibration_cache_is_bounded(fitted, monkeypatch):
    monkeypatch.setattr("routeiq.router.MAX_CACHED_TARGETS", 3)
    for pct in range(80, 90):
        fitted.calibrate(f"quality>={pct}%")
    assert len(fitted._calibrations) == 3
