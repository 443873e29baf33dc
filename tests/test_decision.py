"""Decision policy, lambda calibration and the unknown-model rule."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from routeiq.decision import (
    MEAN_OF_KNOWN,
    BudgetTarget,
    ExpensiveShareTarget,
    QualityTarget,
    calibrate_lambda,
    cheapest,
    choose,
    decide,
    lambda_grid,
    map_model,
    parse_target,
    pinned,
    resolve_candidates,
    shuffle,
)


def choose_indices(q, c, lam, available=None):
    """The kernel at one lambda: the chosen index per row."""
    return choose(q, c, lam, available)[0]


# ------------------------------------------------------------------------------ policy


def test_lam_zero_picks_best_quality_and_inf_picks_cheapest():
    q = np.array([[0.9, 0.5, 0.7], [0.2, 0.8, 0.4]])
    c = np.array([[3.0, 1.0, 2.0], [1.0, 5.0, 0.5]])
    assert choose_indices(q, c, 0.0).tolist() == [0, 1]
    assert choose_indices(q, c, math.inf).tolist() == [1, 2]


def test_intermediate_lambda_trades_quality_for_cost():
    q = np.array([[0.9, 0.5]])
    c = np.array([[1.0, 0.1]])
    # switch point: 0.4 / 0.9
    assert choose_indices(q, c, 0.40)[0] == 0
    assert choose_indices(q, c, 0.50)[0] == 1


def test_ties_go_to_cheaper_then_lower_index():
    q = np.array([[0.8, 0.8, 0.8], [0.5, 0.5, 0.5]])
    c = np.array([[2.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    assert choose_indices(q, c, 0.0).tolist() == [1, 0]
    # utility tie at lam=1: 0.9-1*0.5 == 0.6-1*0.2 (up to float rounding) -> cheaper wins
    q2, c2 = np.array([[0.9, 0.6]]), np.array([[0.5, 0.2]])
    assert choose_indices(q2, c2, 1.0)[0] == 1
    # lam=inf: cost tie -> higher quality, then lower index
    q3, c3 = np.array([[0.3, 0.7, 0.7]]), np.array([[1.0, 1.0, 1.0]])
    assert choose_indices(q3, c3, math.inf)[0] == 1


def test_available_mask_respected_and_nan_allowed_only_where_unavailable():
    q = np.array([[0.9, 0.5, np.nan], [0.9, 0.5, 0.1]])
    c = np.array([[1.0, 0.1, np.nan], [0.1, 1.0, 0.01]])
    avail = np.array([[False, True, False], [False, False, True]])
    assert choose_indices(q, c, 0.0, avail).tolist() == [1, 2]
    assert choose_indices(q, c, math.inf, avail).tolist() == [1, 2]
    with pytest.raises(ValueError, match="quality has 1 non-finite"):
        choose_indices(q, c, 0.0)
    with pytest.raises(ValueError, match="no available candidate"):
        choose_indices(q, c, 0.0, np.zeros_like(avail))


@pytest.mark.parametrize("lam", [-0.1, math.nan, -math.inf, "1", None, True])
def test_invalid_lambda(lam):
    with pytest.raises(ValueError, match="lambda"):
        choose_indices(np.ones((1, 2)), np.ones((1, 2)), lam)
    with pytest.raises(ValueError, match="lambda"):
        decide(["a", "b"], ["m", "n"], [0.5, 0.6], [1.0, 1.0], lam)


def test_nan_inputs_and_shape_errors():
    with pytest.raises(ValueError, match="cost has 1 non-finite"):
        choose_indices(np.ones((2, 2)), np.array([[1.0, np.nan], [1, 1]]), 1.0)
    with pytest.raises(ValueError, match="shape"):
        choose_indices(np.ones((2, 2)), np.ones((2, 3)), 1.0)
    with pytest.raises(ValueError, match="cannot decide"):
        decide(["a", "b"], ["m", "n"], [np.nan, 0.6], [1.0, 1.0], 1.0)
    with pytest.raises(ValueError, match="unique"):
        decide(["a", "a"], ["m", "n"], [0.5, 0.6], [1.0, 1.0], 1.0)


def test_decision_explanation_contents():
    d = decide(
        ["fast", "smart", "alt"],
        ["small", "big", "mystery"],
        [0.6, 0.9, 0.7],
        [0.001, 0.01, 0.002],
        lam=10.0,
        rule="custom rule",
        mapped_from=[None, None, "small"],
        mapping_rules=[None, None, "price_prior"],
    )
    # utilities: 0.59, 0.80, 0.68
    assert (d.chosen, d.model, d.lam, d.rule, d.fallback_reason) == (
        "smart",
        "big",
        10.0,
        "custom rule",
        None,
    )
    rows = {r.name: r for r in d.candidates}
    assert rows["fast"].utility == pytest.approx(0.59)
    assert rows["alt"].mapped_from == "small" and rows["alt"].mapping_rule == "price_prior"
    assert rows["smart"].mapped_from is None
    assert d.chosen_row is rows["smart"]
    data = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert data["chosen"] == "smart" and data["lambda"] == 10.0
    assert [c["name"] for c in data["candidates"]] == ["fast", "smart", "alt"]
    assert data["candidates"][2]["mapped_from"] == "small"
    text = str(d)
    assert "chosen smart (big)" in text and "price_prior: small" in text


def test_decide_default_rules_and_inf_json():
    d = decide(["a", "b"], ["m", "n"], [0.9, 0.5], [1.0, 0.1], 0.0)
    assert d.chosen == "a" and "lambda*cost" in d.rule
    d_inf = decide(["a", "b"], ["m", "n"], [0.9, 0.5], [1.0, 0.1], math.inf)
    assert d_inf.chosen == "b" and "cheapest" in d_inf.rule
    data = json.loads(json.dumps(d_inf.to_dict(), allow_nan=False))
    assert data["lambda"] == "inf" and data["candidates"][0]["utility"] is None


def test_decide_with_unavailable_candidate():
    d = decide(["a", "b"], ["m", "n"], [0.9, 0.5], [1.0, 0.1], 0.0, available=[False, True])
    assert d.chosen == "b"
    assert not d.candidates[0].available and d.candidates[1].available


def test_cheapest_rule_unknown_costs_last_and_exclusions():
    d = cheapest(
        ["a", "b", "c"],
        ["m", "n", "o"],
        [None, 0.2, 0.1],
        outcome="fallback",
        fallback_reason="error: boom",
    )
    assert d.chosen == "c" and d.outcome == "fallback" and d.propensity == 1.0
    assert json.loads(json.dumps(d.to_dict()))["fallback_reason"] == "error: boom"
    d = cheapest(
        ["a", "b", "c"],
        ["m", "n", "o"],
        [None, 0.2, 0.1],
        available=[True, True, False],
        excluded=[None, None, "failed"],
    )
    assert d.chosen == "b" and d.candidates[2].excluded == "failed"
    assert cheapest(["a", "b"], ["m", "n"], [None, None]).chosen == "a"  # ties: first
    with pytest.raises(ValueError, match="no available candidate"):
        cheapest(["a"], ["m"], [0.1], available=[False])


def test_shuffle_rule_logs_real_probabilities():
    import random

    rng = random.Random(7)
    picks = [
        shuffle(["a", "b", "c"], ["m", "n", "o"], [None] * 3, rng, weights=[3, 1, 0]).chosen
        for _ in range(400)
    ]
    assert "c" not in picks and 0.65 < picks.count("a") / 400 < 0.85
    d = shuffle(["a", "b"], ["m", "n"], [None, None], rng, available=[False, True])
    assert d.chosen == "b" and d.propensity == 1.0 and d.candidates[0].probability == 0.0
    d = shuffle(["a", "b"], ["m", "n"], [None, None], random.Random(0))
    assert d.propensity == 0.5 and d.lam is None
    assert pinned("x", "m").outcome == "pinned"


# ------------------------------------------------------------------------------ targets


def test_parse_target():
    assert parse_target("quality>=0.95") == QualityTarget(0.95)
    assert parse_target(" Quality >= 95% ") == QualityTarget(0.95)
    assert parse_target("budget<=0.5") == BudgetTarget(0.5)
    assert parse_target("budget<=$2") == BudgetTarget(2.0)
    assert parse_target("expensive<=20%") == ExpensiveShareTarget(0.2)
    for t in (QualityTarget(1.0), BudgetTarget(0.25), ExpensiveShareTarget(0.1)):
        assert parse_target(str(t)) == t
    for bad, msg in [
        ("quality<=0.9", "floor"),
        ("budget>=1", "ceiling"),
        ("speed<=3", "unknown"),
        ("quality", "cannot parse"),
        ("budget<=5%", "USD"),
        ("expensive<=1.5", r"\[0, 1\]"),
        ("quality>=0", r"\(0, 2\]"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_target(bad)
    with pytest.raises(ValueError):
        BudgetTarget(-1.0)
    with pytest.raises(ValueError):
        QualityTarget(math.nan)


# --------------------------------------------------------------------- synthetic calibration


def _two_model_data(n: int = 40):
    """A (cost 1) always right; B (cost 0.1) right on even rows. Predictions are exact.

    Decisions switch on odd rows at lambda = 1 / 0.9: below it quality 1.0 at mean cost 0.55,
    above it quality 0.5 at cost 0.1.
    """
    true = np.ones((n, 2))
    true[1::2, 1] = 0.0
    cost = np.tile([1.0, 0.1], (n, 1))
    return true.copy(), cost, true


def test_lambda_grid_spans_breakpoints():
    pq, cost, _ = _two_model_data()
    grid = lambda_grid(pq, cost)
    assert grid[0] == 0.0 and np.all(np.diff(grid) > 0)
    assert grid.min() < 1 / 0.9 < grid.max()
    # one model dominating everywhere: lambda cannot matter (0 and the cheapest limit only)
    assert lambda_grid(np.array([[0.9, 0.1]]), np.array([[0.1, 1.0]])).tolist() == [0.0, math.inf]


def test_calibrate_quality_target_known_answer():
    pq, cost, true = _two_model_data()
    cal = calibrate_lambda(QualityTarget(1.0), pq, cost, true, models=["A", "B"])
    assert cal.met
    assert cal.lam < 1 / 0.9  # any larger lambda loses the odd rows
    assert cal.metrics["quality"] == pytest.approx(1.0)
    assert cal.metrics["cost_per_request"] == pytest.approx(0.55)
    assert cal.metrics["best_single_model"] == "A"
    assert cal.metrics["cost_vs_best_single"] == pytest.approx(0.55)
    # the largest feasible grid point: the next grid point is already infeasible
    nxt = cal.grid[np.searchsorted(cal.grid, cal.lam) + 1]
    assert nxt >= 1 / 0.9 - 1e-9
    assert "100% of best single model quality" in cal.rule
    assert json.dumps(cal.to_dict(), allow_nan=False)

    half = calibrate_lambda(QualityTarget(0.5), pq, cost, true)
    assert (
        half.met and half.lam > 1 / 0.9 and half.metrics["cost_per_request"] == pytest.approx(0.1)
    )


def test_calibrate_budget_and_expensive_known_answer():
    pq, cost, true = _two_model_data()
    loose = calibrate_lambda(BudgetTarget(550.0), pq, cost, true)  # $0.55 per request fits
    assert loose.met and loose.lam == 0.0
    tight = calibrate_lambda(BudgetTarget(300.0), pq, cost)  # needs the switch
    assert tight.met and tight.lam >= 1 / 0.9 - 1e-9
    assert tight.metrics["usd_per_1k"] == pytest.approx(100.0)
    # smallest feasible: the previous grid point busts the budget
    prev = tight.grid[np.searchsorted(tight.grid, tight.lam) - 1]
    assert prev < 1 / 0.9

    assert calibrate_lambda(ExpensiveShareTarget(0.6), pq, cost).lam == 0.0
    share = calibrate_lambda(ExpensiveShareTarget(0.4), pq, cost)
    assert share.met and share.metrics["expensive_share"] == 0.0 and share.lam >= 1 / 0.9 - 1e-9


def test_calibrate_unreachable_targets_reported_not_raised():
    pq, cost, true = _two_model_data()
    broke = calibrate_lambda(BudgetTarget(50.0), pq, cost, true)  # cheapest is $100 per 1k
    assert not broke.met
    assert broke.lam == broke.grid[-1] and broke.metrics["usd_per_1k"] == pytest.approx(100.0)
    assert "NOT reachable" in broke.explanation and "not met" in broke.rule

    greedy = calibrate_lambda(QualityTarget(1.5), pq, cost, true)
    assert not greedy.met and greedy.metrics["quality"] == pytest.approx(1.0)
    assert greedy.lam < 1 / 0.9  # best achievable quality, at the cheapest such lambda


def test_calibrate_scans_whole_grid_not_bisect():
    """True quality falls then rises with lambda: the feasible set is not an interval."""
    # A: cost 1, B: cost 0.1. Type-1 rows (pred prefers A slightly, switch at 0.111): A right.
    # Type-2 rows (pred prefers A strongly, switch at 1.0): B right, A wrong.
    pq = np.array([[0.9, 0.8]] * 10 + [[0.9, 0.0]] * 10)
    true = np.array([[1.0, 0.0]] * 10 + [[0.0, 1.0]] * 10)
    cost = np.tile([1.0, 0.1], (20, 1))
    cal = calibrate_lambda(QualityTarget(1.0), pq, cost, true)
    # quality 0.5 below 0.111, 0.0 between, 0.5 above 1.0; best single 0.5 (tie -> cheaper B)
    assert cal.met and cal.lam > 1.0
    assert cal.metrics["quality"] == pytest.approx(0.5)
    assert cal.metrics["cost_per_request"] == pytest.approx(0.1)
    assert np.any(cal.curve["quality"] < 0.5)  # the dip a bisection would stop at


def test_calibrate_input_errors_and_dropped_rows():
    pq, cost, true = _two_model_data()
    with pytest.raises(ValueError, match="needs true_quality"):
        calibrate_lambda(QualityTarget(1.0), pq, cost)
    with pytest.raises(ValueError, match="target must be"):
        calibrate_lambda("quality>=1", pq, cost, true)
    with pytest.raises(ValueError, match="non-finite"):
        bad = pq.copy()
        bad[0, 0] = np.nan
        calibrate_lambda(BudgetTarget(1.0), bad, cost)
    partial = true.copy()
    partial[:4, 1] = np.nan
    cal = calibrate_lambda(QualityTarget(1.0), pq, cost, partial)
    assert cal.metrics["n_dropped"] == 4 and cal.metrics["n_rows"] == len(pq) - 4
    # budget targets keep every row; quality is reported over the labelled chosen pairs
    logged = np.full_like(true, np.nan)
    logged[::2, 0] = 1.0  # only A observed, on even rows
    cal = calibrate_lambda(BudgetTarget(550.0), pq, cost, logged)
    assert cal.metrics["n_rows"] == len(pq) and cal.lam == 0.0
    assert cal.metrics["quality"] is None  # lam=0 picks B on even rows: nothing labelled
    assert cal.metrics["best_single_model"] == 0 and cal.metrics["best_single_quality"] == 1.0
    with pytest.raises(ValueError, match="no calibration rows"):
        calibrate_lambda(QualityTarget(1.0), pq, cost, logged)


# ------------------------------------------------------------------- RouterBench calibration


def _load_routerbench(path, split: str = "train", limit: int = 1200):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        models = [c for c in reader.fieldnames if f"{c}|total_cost" in reader.fieldnames]
        quality, cost = [], []
        for row in reader:
            if row["split"] != split or any(row[m] == "" for m in models):
                continue
            quality.append([float(row[m]) for m in models])
            cost.append([float(row[f"{m}|total_cost"]) for m in models])
            if len(quality) == limit:
                break
    return models, np.array(quality), np.array(cost)


@pytest.fixture(scope="module")
def routerbench_slice(routerbench_csv):
    models, true, cost = _load_routerbench(routerbench_csv)
    rng = np.random.default_rng(0)
    # A weak "router": mostly the per-model prior, some signal from the truth, plus noise.
    pred = np.clip(0.3 * true + 0.7 * true.mean(axis=0) + rng.normal(0, 0.1, true.shape), 0, 1)
    return models, pred, cost, true


@pytest.mark.slow
def test_routerbench_quality_target_matches_best_single_for_less(routerbench_slice):
    models, pred, cost, true = routerbench_slice
    cal = calibrate_lambda(QualityTarget(1.0), pred, cost, true, models=models)
    best = int(np.argmax(true.mean(axis=0)))
    assert cal.metrics["best_single_model"] == models[best]
    assert cal.met
    assert cal.metrics["quality"] >= true[:, best].mean()
    assert cal.metrics["cost_per_request"] < cost[:, best].mean()
    # recompute the realised quality independently from the chosen indices
    idx = choose_indices(pred, cost, cal.lam)
    assert true[np.arange(len(idx)), idx].mean() == pytest.approx(cal.metrics["quality"])


@pytest.mark.slow
def test_routerbench_budget_and_expensive_share(routerbench_slice):
    models, pred, cost, true = routerbench_slice
    rows = np.arange(len(pred))
    at_zero = choose_indices(pred, cost, 0.0)
    budget = cost[rows, at_zero].mean() * 1000 / 3  # binding: a third of the lam=0 spend
    cal = calibrate_lambda(BudgetTarget(budget), pred, cost, true)
    idx = choose_indices(pred, cost, cal.lam)
    assert cal.met and cal.lam > 0
    assert cost[rows, idx].mean() * 1000 <= budget * (1 + 1e-9)

    expensive = int(np.argmax(cost.mean(axis=0)))
    share0 = np.mean(at_zero == expensive)
    assert share0 > 0.02
    cal = calibrate_lambda(ExpensiveShareTarget(share0 / 2), pred, cost, true, models=models)
    idx = choose_indices(pred, cost, cal.lam)
    assert cal.met and cal.metrics["expensive_model"] == models[expensive]
    assert np.mean(idx == expensive) <= share0 / 2


@pytest.mark.slow
def test_routerbench_unreachable_quality(routerbench_slice):
    _, pred, cost, true = routerbench_slice
    cal = calibrate_lambda(QualityTarget(1.6), pred, cost, true)
    assert not cal.met and "NOT reachable" in cal.explanation
    assert cal.metrics["quality"] == pytest.approx(np.nanmax(cal.curve["quality"]))


# ------------------------------------------------------------------------- unknown models

KNOWN = ["cheap", "mid", "pricey"]
KNOWN_Q = np.array([0.5, 0.7, 0.9])
KNOWN_C = np.array([0.0001, 0.001, 0.01])


def test_known_model_passes_through():
    mp = map_model("mid", KNOWN, KNOWN_Q, KNOWN_C)
    assert (mp.rule, mp.mapped_from, mp.quality, mp.cost) == ("known", None, 0.7, 0.001)
    assert map_model("mid", KNOWN, KNOWN_Q, KNOWN_C, candidate_cost=0.5).cost == 0.5


def test_provider_prefixes_and_case_name_the_known_model():
    known = ["gpt-4-1106-preview", "mistralai/mixtral-8x7b-chat", "cheap"]
    for name, same in [
        ("openai/gpt-4-1106-preview", "gpt-4-1106-preview"),
        ("GPT-4-1106-Preview", "gpt-4-1106-preview"),
        ("together_ai/mistralai/Mixtral-8x7B-chat", "mistralai/mixtral-8x7b-chat"),
        ("mistralai/mixtral-8x7b-chat", None),  # known as is
    ]:
        mp = map_model(name, known, KNOWN_Q, KNOWN_C, candidate_cost=1.0)
        assert mp.mapped_from == same, name
        assert mp.rule == ("known" if same is None else "prefix")
        assert mp.quality == KNOWN_Q[known.index(same or name)]
    # A name that only shares a suffix segment is not the model.
    assert map_model("openai/chat", known, KNOWN_Q, KNOWN_C).rule == "mean"


def test_alias_wins_over_price():
    mp = map_model(
        "new-deploy",
        KNOWN,
        KNOWN_Q,
        KNOWN_C,
        candidate_cost=0.0001,
        aliases={"new-deploy": "pricey"},
    )
    assert (mp.rule, mp.mapped_from, mp.quality, mp.cost) == ("alias", "pricey", 0.9, 0.0001)
    assert (
        map_model("new-deploy", KNOWN, KNOWN_Q, KNOWN_C, aliases={"new-deploy": "pricey"}).cost
        == 0.01
    )


def test_price_prior_nearest_in_log_space():
    # 0.003 is nearer to 0.001 than to 0.01 in log space (but not in linear space)
    mp = map_model("novel", KNOWN, KNOWN_Q, KNOWN_C, candidate_cost=0.003)
    assert (mp.rule, mp.mapped_from, mp.quality, mp.cost) == ("price_prior", "mid", 0.7, 0.003)
    assert map_model("free", KNOWN, KNOWN_Q, KNOWN_C, candidate_cost=0.0).mapped_from == "cheap"
    # a broken alias falls through to the price prior, with a note
    mp = map_model("novel", KNOWN, KNOWN_Q, KNOWN_C, candidate_cost=0.02, aliases={"novel": "gone"})
    assert mp.rule == "price_prior" and mp.mapped_from == "pricey" and "gone" in mp.note


def test_mean_rule_when_no_cost():
    mp = map_model("novel", KNOWN, KNOWN_Q, KNOWN_C)
    assert mp.rule == "mean" and mp.mapped_from == MEAN_OF_KNOWN
    assert mp.quality == pytest.approx(0.7) and mp.cost == pytest.approx(KNOWN_C.mean())
    no_prices = map_model("novel", KNOWN, KNOWN_Q, None, candidate_cost=0.003)
    assert no_prices.rule == "mean" and no_prices.cost == 0.003
    assert math.isnan(map_model("novel", KNOWN, KNOWN_Q).cost)
    with pytest.raises(ValueError, match="knows no models"):
        map_model("novel", [], [], None)


def test_resolve_candidates_feeds_decide():
    res = resolve_candidates(
        ["mid", "novel", "alias"],
        KNOWN,
        KNOWN_Q,
        KNOWN_C,
        candidate_costs=[None, 0.0002, None],
        aliases={"alias": "pricey"},
    )
    assert res.quality.tolist() == [0.7, 0.5, 0.9]
    assert res.cost.tolist() == [0.001, 0.0002, 0.01]
    assert res.mapped_from == [None, "cheap", "pricey"]
    assert res.mapping_rules == [None, "price_prior", "alias"]
    d = decide(
        ["d1", "d2", "d3"],
        ["mid", "novel", "alias"],
        res.quality,
        res.cost,
        0.0,
        mapped_from=res.mapped_from,
        mapping_rules=res.mapping_rules,
    )
    assert d.chosen == "d3" and d.candidates[2].mapped_from == "pricey"
