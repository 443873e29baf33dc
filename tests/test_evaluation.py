"""Evaluation metrics: hand-computed tiny cases, brute-force cross-checks, a RouterBench slice."""

from __future__ import annotations

import csv
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from routeiq.decision.choice import choose, lambda_grid, switch_points
from routeiq.evaluation import (
    Curve,
    aiq,
    evaluate,
    evaluate_router,
    oracle_point,
    plot_frontier,
    plot_report,
    report_curve,
    single_models,
    sweep,
    two_model_curve,
    upper_frontier,
)
from routeiq.evaluation.metrics import cost_range

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Two models, four rows: weak costs 1, strong costs 3 on every row.
Q2 = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])  # columns: weak, strong
C2 = np.array([[1.0, 3.0]] * 4)


# ----------------------------------------------------------------------------- frontier, AIQ


def test_frontier_drops_dominated_points_and_stays_flat_after_the_best():
    cost = [1, 2, 2, 3, 4, 2.5]
    quality = [0.5, 0.6, 0.55, 0.9, 0.8, 0.6]
    f = upper_frontier(cost, quality)
    # (2, .6) lies below the chord (1, .5)-(3, .9); (4, .8) is past the best point.
    np.testing.assert_allclose(f.cost, [1, 3])
    np.testing.assert_allclose(f.quality, [0.5, 0.9])
    assert math.isnan(float(f(0.5)))  # nothing reachable below the cheapest point
    assert float(f(2)) == pytest.approx(0.7)  # mixture of the two vertices
    assert float(f(10)) == pytest.approx(0.9)  # flat to the right
    assert f.cost_to_reach(0.7) == pytest.approx(2.0)
    assert f.cost_to_reach(0.4) == pytest.approx(1.0)
    assert f.cost_to_reach(0.95) is None
    # Area over [1, 4]: trapezoid on [1, 3] plus flat 0.9 on [3, 4].
    assert aiq(f, (1, 4)) == pytest.approx((0.7 * 2 + 0.9) / 3)
    assert aiq(Curve(cost, quality), (1, 4)) == pytest.approx((0.7 * 2 + 0.9) / 3)


def test_log_cost_aiq_interpolates_in_log_cost():
    curve = Curve(cost=[1, 10, 100], quality=[0.5, 0.6, 0.9])
    # Linear cost: (10, .6) is above the chord; log cost: it is below (0, .5)-(2, .9).
    assert upper_frontier(curve.cost, curve.quality).cost.tolist() == [1, 10, 100]
    assert upper_frontier(curve.cost, curve.quality, log_cost=True).cost.tolist() == [1, 100]
    assert aiq(curve, (1, 100)) == pytest.approx((0.55 * 9 + 0.75 * 90) / 99)
    assert aiq(curve, (1, 100), log_cost=True) == pytest.approx(0.7)


def test_aiq_counts_unreachable_cheap_costs_as_zero():
    point = Curve(cost=[2.0], quality=[0.8])
    assert aiq(point, (1, 3)) == pytest.approx(0.8 * 1 / 2)
    assert aiq(point, (1, 3), log_cost=True) == pytest.approx(0.8 * math.log(1.5) / math.log(3))
    assert aiq(point, (3, 4)) == pytest.approx(0.8)
    assert aiq(point, (2, 2)) == pytest.approx(0.8)  # degenerate range: F(hi)
    assert aiq(point, (1, 1)) == 0.0
    assert aiq(point, (0, 3), log_cost=True) is None  # log10(0) undefined


def test_aiq_clips_points_cheaper_than_the_range():
    curve = Curve(cost=[0.5, 1.5], quality=[0.4, 0.9])
    # Clipped to (1, .4), (1.5, .9) over [1, 2]: trapezoid on [1, 1.5] + flat on [1.5, 2].
    assert aiq(curve, (1, 2)) == pytest.approx(0.65 * 0.5 + 0.9 * 0.5)
    # The unclipped frontier still passes through the mixture value at 1.
    assert float(curve.frontier()(1.0)) == pytest.approx(0.65)


def test_aiq_rejects_a_frontier_of_the_other_kind_and_bad_ranges():
    f = upper_frontier([1, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="log_cost"):
        aiq(f, (1, 2), log_cost=True)
    with pytest.raises(ValueError, match="range"):
        f.aiq(2, 1)


# ----------------------------------------------------------------------------- sweep


def test_perfect_router_on_two_models_by_hand():
    report = evaluate(Q2, C2, {"perfect": (Q2, C2)}, models=["weak", "strong"])
    r = report.routers["perfect"]
    # Decisions change only at lambda = 0.5 (rows 1 and 2 drop to weak): grid [0, inf].
    np.testing.assert_allclose(r.curve.lambdas, [0, np.inf])
    np.testing.assert_allclose(r.curve.cost, [2.0, 1.0])
    np.testing.assert_allclose(r.curve.quality, [1.0, 0.5])
    np.testing.assert_allclose(r.curve.shares, [[0.5, 0.5], [1.0, 0.0]])
    assert r.aiq == pytest.approx((0.75 * 1 + 1.0 * 1) / 2)
    log3 = math.log10(3)
    assert r.log_aiq == pytest.approx((0.75 * math.log10(2) + math.log10(1.5)) / log3)
    assert r.best_quality == 1.0 and r.best_quality_cost == 2.0
    assert r.cost_to_match_best == pytest.approx(1.5 / 3)  # 0.75 reached at cost 1.5
    assert r.apgr == pytest.approx(1.375)
    assert r.cpt50 == pytest.approx(0.125)
    assert r.cpt80 == pytest.approx(0.2)
    assert report.pair == ("strong", "weak")
    assert report.oracle == (2.0, 1.0)
    mix = report.baselines["random_mixture"]
    assert mix.aiq == pytest.approx(0.625) and mix.log_aiq == pytest.approx(0.625)
    assert mix.cost_to_match_best == 1.0
    assert (mix.apgr, mix.cpt50, mix.cpt80) == pytest.approx((0.5, 0.5, 0.8))


def test_router_that_never_matches_the_best_model_reports_none():
    r = evaluate_router("inverted", -Q2, C2, Q2, C2)
    assert r.cost_to_match_best is None
    assert r.best_quality < 0.75


def test_ties_go_to_the_cheaper_model():
    P = np.array([[0.5, 0.5, 0.5], [0.2, 0.7, 0.7], [0.4, 0.4, 0.1]])
    C_hat = np.array([[3.0, 1.0, 2.0], [1.0, 1.0, 2.0], [1.0, 1.0, 0.5]])
    got = choose(P, C_hat, [0.0, np.inf])
    assert got[0].tolist() == [1, 1, 0]  # equal quality: cheaper; equal both: lower index
    assert got[1].tolist() == [1, 1, 2]  # cheapest; equal cost: higher predicted quality


def _brute_choice(P, C_hat, lam):
    out = []
    for p, c in zip(P, C_hat, strict=True):
        if math.isinf(lam):
            keys = [(-c[j], p[j], -j) for j in range(len(p))]
        else:
            keys = [(p[j] - lam * c[j], -c[j], -j) for j in range(len(p))]
        out.append(max(range(len(p)), key=keys.__getitem__))
    return out


def test_choose_matches_a_python_loop():
    rng = np.random.default_rng(3)
    P, C_hat = rng.random((40, 5)), rng.random((40, 5))
    P[:, 3] = P[:, 1]  # some exact quality ties
    lams = [0.0, 0.01, 0.3, 1.0, 7.0, np.inf]
    got = choose(P, C_hat, lams)
    for k, lam in enumerate(lams):
        assert got[k].tolist() == _brute_choice(P, C_hat, lam)


def test_default_grid_is_exact_when_decisions_change_rarely():
    rng = np.random.default_rng(5)
    P, C_hat = rng.random((25, 4)), rng.lognormal(-7, 1, (25, 4))
    grid = lambda_grid(P, C_hat)
    assert grid[0] == 0 and np.isinf(grid[-1]) and np.all(np.diff(grid) > 0)
    exact = {tuple(row) for row in choose(P, C_hat, grid)}
    assert len(exact) == grid.size  # one distinct decision set per lambda
    sw = switch_points(P, C_hat)
    dense = np.concatenate([[0.0], np.geomspace(sw.min() / 10, sw.max() * 10, 40_000), [np.inf]])
    assert {tuple(row) for row in choose(P, C_hat, dense)} <= exact


def test_default_grid_is_bounded_and_sweep_is_consistent():
    rng = np.random.default_rng(7)
    n, m = 1000, 11
    Q = (rng.random((n, m)) < np.linspace(0.5, 0.9, m)).astype(float)
    C = rng.lognormal(-8, 1, (n, m)) * np.linspace(1, 50, m)
    P = 0.5 * Q + 0.5 * rng.random((n, m))
    C_hat = C * rng.lognormal(0, 0.2, (n, m))
    curve = sweep(P, C_hat, Q, C)
    assert 100 < curve.lambdas.size <= 200
    np.testing.assert_allclose(curve.shares.sum(axis=1), 1.0)
    # Each point agrees with a direct recomputation of the decisions at its lambda.
    for k in (0, curve.lambdas.size // 2, curve.lambdas.size - 1):
        ch = choose(P, C_hat, [curve.lambdas[k]])[0]
        assert curve.quality[k] == pytest.approx(Q[np.arange(n), ch].mean())
        assert curve.cost[k] == pytest.approx(C[np.arange(n), ch].mean())
        np.testing.assert_allclose(curve.shares[k], np.bincount(ch, minlength=m) / n)
    assert curve.cost[0] > curve.cost[-1]  # lambda = 0 spends more than lambda = inf


def test_inputs_are_validated():
    Q = Q2.copy()
    Q[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sweep(Q2, C2, Q, C2)
    with pytest.raises(ValueError, match="shape"):
        sweep(Q2[:, :1], C2, Q2, C2)
    with pytest.raises(ValueError, match="negative"):
        sweep(Q2, C2, Q2, -C2)
    with pytest.raises(ValueError, match="lambdas"):
        sweep(Q2, C2, Q2, C2, lambdas=[-1.0])
    with pytest.raises(ValueError, match="unknown model"):
        evaluate(Q2, C2, {}, models=["a", "b"], pair=("a", "c"))


# ----------------------------------------------------------------------------- two models


def test_apgr_and_cpt_by_hand():
    qw, qs = Q2[:, 0], Q2[:, 1]
    perfect = two_model_curve(qs - qw, qs, qw)
    # Tied top rows (1, 2) switch together: shares 0, .5, .75, 1; PGR 0, 2, 2, 1.
    np.testing.assert_allclose(perfect.share, [0, 0.5, 0.75, 1])
    np.testing.assert_allclose(perfect.pgr(), [0, 2, 2, 1])
    assert perfect.apgr() == pytest.approx(1.375)
    assert perfect.cpt(0.5) == pytest.approx(0.125)
    inverted = two_model_curve(qw - qs, qs, qw)
    np.testing.assert_allclose(inverted.pgr(), [0, -1, -1, 1])
    assert inverted.apgr() == pytest.approx(-0.375)
    assert inverted.cpt(0.5) == pytest.approx(0.875)
    assert inverted.cpt(0.8) == pytest.approx(0.95)
    constant = two_model_curve(np.zeros(4), qs, qw)  # a constant score is the random router
    assert constant.apgr() == pytest.approx(0.5)
    assert constant.cpt(0.8) == pytest.approx(0.8)
    assert two_model_curve(np.zeros(4), qs, qs).apgr() is None  # no gap to recover


def test_random_scores_average_half_and_the_true_gap_is_the_best_order():
    rng = np.random.default_rng(11)
    qs = (rng.random(200) < 0.8).astype(float)
    qw = (rng.random(200) < 0.55).astype(float)
    scores = [np.random.default_rng(seed).random(200) for seed in range(300)]
    values = [two_model_curve(s, qs, qw).apgr() for s in scores]
    assert np.mean(values) == pytest.approx(0.5, abs=0.02)
    best = two_model_curve(qs - qw, qs, qw).apgr()
    assert best > 1.0 and best >= max(values)


def test_true_gap_score_maximises_apgr_over_all_orders():
    qs = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 1.0])  # strong: 4/6
    qw = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 0.0])  # weak: 2/6, wins row 2
    best = two_model_curve(qs - qw, qs, qw).apgr()
    apgrs = [
        two_model_curve(-np.array(perm, dtype=float), qs, qw).apgr()
        for perm in itertools.permutations(range(6))
    ]
    assert best == pytest.approx(max(apgrs))


# ----------------------------------------------------------------------------- reports, plots


def _plain_json(x) -> bool:
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in x.items())
    if isinstance(x, list):
        return all(_plain_json(v) for v in x)
    return x is None or type(x) in (str, int, float, bool)


def test_report_to_dict_is_strict_json():
    report = evaluate(Q2, C2, {"perfect": (Q2, C2), "flat": (np.zeros((4, 2)), C2)})
    d = report.to_dict()
    assert _plain_json(d)
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["routers"]["perfect"]["curve"]["lambda"] == [0.0, None]  # inf -> null
    assert back["routers"]["perfect"]["apgr"] == pytest.approx(1.375)
    assert "curve" not in report.to_dict(include_curves=False)["routers"]["flat"]


def test_plot_writes_a_png_atomically(tmp_path: Path):
    report = evaluate(Q2, C2, {"perfect": (Q2, C2)}, models=["org/weak", "strong"])
    out = plot_report(report, tmp_path / "plots" / "frontier.png", title="tiny")
    assert Path(out).read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["frontier.png"]
    # A free model cannot sit on a log axis: falls back to a linear one.
    out2 = plot_frontier({}, {"free": (0.0, 0.5), "paid": (1.0, 0.7)}, tmp_path / "lin.png", "t")
    assert Path(out2).read_bytes()[:8] == PNG_MAGIC


def test_plotting_does_not_touch_pyplot(tmp_path: Path):
    code = (
        "import sys, numpy as np\n"
        "from routeiq.evaluation import plot_frontier, Curve\n"
        "assert 'matplotlib' not in sys.modules, 'import should stay light'\n"
        f"plot_frontier({{'r': Curve([1, 2], [0.5, 0.7])}}, {{'a': (1, 0.5)}}, "
        f"{str(tmp_path / 'p.png')!r}, 't')\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------- RouterBench


def _routerbench_test_split(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        models = [c for c in fields if f"{c}|total_cost" in fields]
        rows = [r for r in reader if r["split"] == "test" and all(r[m] != "" for m in models)]
    Q = np.array([[float(r[m]) for m in models] for r in rows])
    C = np.array([[float(r[f"{m}|total_cost"]) for m in models] for r in rows])
    return models, Q, C


@pytest.mark.slow
def test_routerbench_baselines(routerbench_csv: Path, tmp_path: Path):
    models, Q, C = _routerbench_test_split(routerbench_csv)
    n, m = Q.shape
    assert m == 11 and n > 900
    rng = np.random.default_rng(0)
    informative = 0.6 * Q + 0.4 * rng.random((n, m))
    # No information: every row gets each model's mean quality and mean cost.
    flat_q = np.broadcast_to(Q.mean(axis=0), (n, m))
    flat_c = np.broadcast_to(C.mean(axis=0), (n, m))
    report = evaluate(
        Q,
        C,
        {"informative": (informative, C), "no_information": (flat_q, flat_c)},
        models=models,
        pair=("gpt-4-1106-preview", "mistralai/mixtral-8x7b-chat"),
    )
    singles = single_models(Q, C)
    cheapest_q = float(singles.quality[np.argmin(singles.cost)])
    best_q = float(singles.quality.max())
    assert report.best_single == "gpt-4-1106-preview"
    mix, oracle = report.baselines["random_mixture"], report.baselines["oracle"]
    for value in (mix.aiq, mix.log_aiq):
        assert cheapest_q < value < best_q
    oracle_cost, oracle_q = oracle_point(Q, C)
    assert oracle_q > best_q and oracle_cost < float(singles.cost.max())
    assert oracle.best_quality == pytest.approx(oracle_q)
    for r in [mix, *report.routers.values()]:
        assert oracle.aiq > r.aiq and oracle.log_aiq > r.log_aiq
        assert oracle.apgr >= r.apgr
    # Without per-row information the sweep walks the single models' hull: same AIQ.
    assert report.routers["no_information"].aiq == pytest.approx(mix.aiq)
    assert report.routers["informative"].aiq > mix.aiq
    assert report.routers["informative"].cost_to_match_best < 1.0
    out = plot_report(report, tmp_path / "routerbench.png")
    assert Path(out).read_bytes()[:8] == PNG_MAGIC


def test_report_curve_accepts_precomputed_curves():
    r = report_curve("two points", Curve(cost=[1, 3], quality=[0.5, 0.75]), Q2, C2)
    assert r.aiq == pytest.approx(0.625)
    assert r.apgr is None  # no score given


def test_aiq_defined_when_cheapest_point_is_an_ulp_above_range():
    # The router's cheapest operating point equals the cheapest single model's cost up to
    # rounding (the same mean summed in another order): AIQ must still be a number.
    lo, hi = 3.352808398950131e-05, 3.0e-4
    cost = np.array([np.nextafter(lo, 1.0), 1e-4, hi])
    quality = np.array([0.52, 0.58, 0.60])
    value = aiq(Curve(cost, quality), (lo, hi))
    assert value is not None and 0.52 < value < 0.60


def test_aiq_when_every_model_costs_the_same():
    # lo == hi; a router's mean cost is the same per-row costs summed in another order, a few
    # ulps above: AIQ is the router's quality, not 0 (it was 0 for every router).
    rng = np.random.default_rng(0)
    Q = rng.random((1000, 3))
    C = np.full((1000, 3), 0.1) + rng.random((1000, 1)) * 0.01
    lo, hi = cost_range(Q, C)
    assert lo == hi
    pick = rng.integers(0, 3, 1000)
    q, c = Q[np.arange(1000), pick].mean(), C[np.arange(1000), pick].mean()
    assert aiq(Curve(np.array([c]), np.array([q])), (lo, hi)) == pytest.approx(q)
    # Well above the range (not rounding): unreachable, 0.
    assert aiq(upper_frontier([hi * 1.01], [q]), (lo, hi)) == 0.0


def test_every_router_gets_its_own_colour():
    from routeiq.evaluation.frontier import _colors

    for n in (3, 10, 13, 20):
        assert len(set(_colors(n))) == n


def test_paired_aiq_difference_matches_the_report_and_brackets_it():
    from routeiq.evaluation.paired import aiq_difference
    from routeiq.evaluation.report import evaluate

    rng = np.random.default_rng(0)
    n, m = 400, 4
    Q = (rng.random((n, m)) < np.linspace(0.4, 0.9, m)).astype(float)
    C = np.tile(np.linspace(0.001, 0.01, m), (n, 1)) * rng.uniform(0.5, 1.5, (n, 1))
    informed, noise = Q * 0.4 + rng.random((n, m)) * 0.6, rng.random((n, m))
    report = evaluate(Q, C, {"a": (informed, C), "b": (noise, C)}).to_dict()["routers"]
    diff, lo, hi = aiq_difference(Q, C, (informed, C), (noise, C), n_boot=50)
    assert diff == pytest.approx(report["a"]["aiq"] - report["b"]["aiq"], abs=1e-12)
    assert 0 < lo <= diff <= hi  # the informed router is better, and the interval says so
    same = aiq_difference(Q, C, (noise, C), (noise, C), n_boot=20)
    assert same == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        aiq_difference(Q, C, (noise, C), (noise, C), n_boot=5)
