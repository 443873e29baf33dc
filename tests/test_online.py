"""Online learning: the posterior is the closed-form one, merges are exact, the warm start is
the offline router, and the budget controller holds a spend target on an injected clock."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from routeiq.online.budget import COUNT, LAMBDAS, BudgetController
from routeiq.online.model import OnlineQuality
from routeiq.online.router import OnlineRouter, OnlineSettings, price_prior

M, D = 3, 4


def _observations(n: int = 40, seed: int = 0) -> list[tuple[int, np.ndarray, float]]:
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(M)), rng.standard_normal(D), float(rng.normal())) for _ in range(n)]


def _stacked_fit(obs, precision, pooled, noise):
    """The joint ridge fit on an explicit design: shared block, then one block per model."""
    rows, y = [], []
    for m, z, r in obs:
        row = np.zeros(D * (M + 1))
        row[:D] = z
        row[D * (m + 1) : D * (m + 2)] = z
        rows.append(row)
        y.append(r)
    X, y = np.array(rows), np.array(y)
    ridge = np.diag(np.r_[pooled, np.tile(precision, M)]) * noise
    w = np.linalg.solve(X.T @ X + ridge, X.T @ y)
    return X, y, w[:D][None, :] + w[D:].reshape(M, D)


def test_posterior_mean_is_the_closed_form_ridge_fit():
    obs = _observations()
    precision, noise = np.array([1.0, 2.0, 3.0, 4.0]), 0.3
    alone = OnlineQuality(M, D, precision=precision, noise=noise)
    for m, z, r in obs:
        alone.partial_fit(m, z, r)
    for m in range(M):
        Z = np.array([z for k, z, _ in obs if k == m])
        y = np.array([r for k, _, r in obs if k == m])
        expect = np.linalg.solve(Z.T @ Z + np.diag(precision * noise), Z.T @ y)
        np.testing.assert_allclose(alone.coef_[m], expect, rtol=1e-10, atol=1e-12)
    pooled = np.full(D, 0.5)
    shared = OnlineQuality(M, D, precision=precision, pooled=pooled, noise=noise)
    for m, z, r in obs:
        shared.partial_fit(m, z, r)
    _, _, coef = _stacked_fit(obs, precision, pooled, noise)
    np.testing.assert_allclose(shared.coef_, coef, rtol=1e-9, atol=1e-12)


def test_evidence_is_the_gaussian_marginal_likelihood_up_to_a_constant():
    obs = _observations()
    precision, pooled, noise = np.array([1.0, 2.0, 3.0, 4.0]), np.full(D, 0.5), 0.3
    q = OnlineQuality(M, D, precision=precision, pooled=pooled, noise=noise)
    for m, z, r in obs:
        q.partial_fit(m, z, r)

    def direct(scale: float) -> float:
        X, y, _ = _stacked_fit(obs, precision, pooled, noise)
        prior = np.diag(1.0 / (np.r_[pooled, np.tile(precision * scale, M)]))
        cov = X @ prior @ X.T + noise * np.eye(len(y))
        return -0.5 * (np.linalg.slogdet(cov)[1] + y @ np.linalg.solve(cov, y))

    got = q.evidence(precision * noise) - q.evidence(precision * noise * 0.1)
    assert got == pytest.approx(direct(1.0) - direct(0.1), rel=1e-9)


@pytest.mark.parametrize("scales", [(1.0,), (1.0, 0.1, 0.01)])
def test_merged_worker_deltas_equal_one_learner_fed_everything_in_any_order(scales):
    obs = _observations(60)

    def make():
        return OnlineQuality(M, D, precision=3.0, pooled=1.0, noise=0.25, scales=scales)

    one = make()
    for m, z, r in obs:
        one.partial_fit(m, z, r)
    workers = [make(), make()]
    deltas: list[dict[str, np.ndarray]] = [{}, {}]
    for k, (m, z, r) in enumerate(obs):
        d = workers[k % 2].delta(m, z, r)
        workers[k % 2].merge(d)
        deltas[k % 2] = {key: deltas[k % 2].get(key, 0) + v for key, v in d.items()}
    for order in ([0, 1], [1, 0]):
        merged = make()
        for w in order:
            merged.merge(deltas[w])
        for key, value in one.state().items():
            np.testing.assert_allclose(merged.state()[key], value, rtol=1e-12, atol=1e-12)
        # Same totals -> same posterior (load re-chooses the prior strength from the state).
        same = make()
        same.load(one.state())
        merged.load(merged.state())
        np.testing.assert_allclose(merged.coef_, same.coef_, rtol=1e-9, atol=1e-12)
        assert merged.scale_ == same.scale_
    # A learner with its own update history agrees too once it loads the same totals.
    one.load(one.state())
    np.testing.assert_allclose(one.coef_, same.coef_, rtol=1e-9, atol=1e-12)
    assert one.scale_ == same.scale_
    if scales == (1.0,):  # no empirical Bayes: the posterior is path-independent outright
        np.testing.assert_allclose(merged.coef_, one.coef_, rtol=1e-9, atol=1e-12)


def test_grouped_scales_loosen_only_the_part_feedback_contradicts_and_merge_exactly():
    # Every model's level is off by +0.4 (a new task); the context part explains nothing.
    rng = np.random.default_rng(5)
    obs = []
    for _ in range(300):
        m, z = int(rng.integers(M)), np.r_[1.0, rng.random(), rng.standard_normal(D - 2)]
        obs.append((m, z, 0.4 + 0.5 * float(rng.standard_normal())))
    scales, groups = (1.0, 0.1, 0.01), [0, 0, 1, 1]

    def make(split: bool = True) -> OnlineQuality:
        return OnlineQuality(
            M, D, precision=100.0, pooled=None, noise=0.25, scales=scales,
            groups=groups if split else None,
        )  # fmt: skip

    split, joint = make(), make(split=False)
    assert split.scale_ == (1.0, 1.0) and len(split.candidates_) == 9
    for m, z, r in obs:
        split.partial_fit(m, z, r)
        joint.partial_fit(m, z, r)
    low_cal, low_ctx = split.scale_
    assert low_cal < low_ctx  # the level gives way, the context stays shrunk
    # The chosen pair has the highest evidence of all nine; one scale alone can do no better.
    best = split.evidence(split.ridge_)
    assert all(best >= split.evidence(split._scaled(c)) for c in split.candidates_)
    assert best >= joint.evidence(joint.ridge_) - 1e-9
    # Merged halves load to the same posterior and scales.
    halves = [make(), make()]
    for k, (m, z, r) in enumerate(obs):
        halves[k % 2].partial_fit(m, z, r)
    merged = make()
    for h in halves:
        merged.merge(h.state())
    merged.load(merged.state())
    same = make()
    same.load(split.state())
    assert merged.scale_ == same.scale_
    np.testing.assert_allclose(merged.coef_, same.coef_, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="groups"):
        OnlineQuality(M, D, groups=[0, 1])
    with pytest.raises(ValueError, match="groups"):
        OnlineQuality(M, D, groups=[0, -1, 0, 0])


def test_load_rejects_wrong_shapes_missing_keys_and_non_finite_values():
    q = OnlineQuality(M, D)
    good = {k: np.zeros_like(v) for k, v in q.state().items()}
    with pytest.raises(ValueError, match="shape"):
        q.load({**good, "gram": np.zeros((M, D, D + 1))})
    with pytest.raises(ValueError, match="no 'moment'"):
        q.load({"gram": good["gram"], "count": good["count"]})
    with pytest.raises(ValueError, match="non-finite"):
        q.load({**good, "count": np.full(M, np.nan)})
    with pytest.raises(ValueError, match="shape"):
        q.merge({**good, "count": np.zeros(M + 1)})
    q.load(good)  # the right shapes load


def _router(warm: bool = True, **kw) -> OnlineRouter:
    settings = OnlineSettings(enabled=True, warm_start=warm, **kw)
    return OnlineRouter(["a", "b", "c"], 40, settings)


def test_warm_start_without_feedback_is_exactly_the_offline_prediction():
    rng = np.random.default_rng(1)
    online = _router()
    for _ in range(20):
        learned = rng.random(3)
        quality, ctx = online.adjust(rng.standard_normal(40), learned, rng.random(3) * 1e-3)
        assert np.array_equal(quality, learned)
        prior, z = ctx.row(1)
        assert prior == learned[1] and len(z) == online.n_features


def test_adapt_split_gives_calibration_and_context_their_own_scale():
    split, joint = _router(adapt_split=True), _router()
    assert split.quality.n_groups == 2 and joint.quality.n_groups == 1
    np.testing.assert_array_equal(split.quality.groups_, [0, 0] + [1] * (split.n_features - 2))
    # The state's layout does not depend on it: shared state written either way loads.
    for key, value in joint.state().items():
        assert split.state()[key].shape == value.shape
    split.load(joint.state())


def test_learning_moves_a_models_quality_toward_what_was_observed():
    rng = np.random.default_rng(2)
    online = _router(optimism=0.0)  # the posterior mean alone
    x = rng.standard_normal(40)
    x /= np.linalg.norm(x)  # like the lexical featurizer's rows
    learned, cost = np.array([0.5, 0.6, 0.7]), np.full(3, 1e-4)
    before, ctx = online.adjust(x, learned, cost)
    for _ in range(100):
        online.learn(2, *ctx.row(2), observed=0.0)
    after, _ = online.adjust(x, learned, cost)
    assert after[2] < before[2] - 0.2  # pulled toward 0.0
    for _ in range(100):
        online.learn(0, *ctx.row(0), observed=1.0)
    assert online.adjust(x, learned, cost)[0][0] > before[0] + 0.2


def test_a_context_stored_as_json_trains_another_process_the_same():
    rng = np.random.default_rng(3)
    here, there = _router(), _router()
    x, learned, cost = rng.standard_normal(40), rng.random(3), rng.random(3) * 1e-3
    _, ctx = here.adjust(x, learned, cost)
    prior, z = json.loads(json.dumps(ctx.row(1)))
    delta = there.learn(1, prior, z, observed=1.0)
    here.merge(delta)
    for key, value in there.state().items():
        np.testing.assert_array_equal(here.state()[key], value)
    np.testing.assert_allclose(here.adjust(x, learned, cost)[0], there.adjust(x, learned, cost)[0])


def test_cold_start_ignores_the_trained_model_and_starts_from_the_price_prior():
    rng = np.random.default_rng(4)
    cold = _router(warm=False, cold_optimism=0.0)
    x, cost = rng.standard_normal(40), np.array([1e-5, 1e-4, 1e-3])
    a, _ = cold.adjust(x, rng.random(3), cost)
    b, _ = cold.adjust(x, rng.random(3), cost)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, price_prior(cost))
    assert a[2] > a[1] > a[0]  # pricier assumed better, a little


def test_learn_and_adjust_reject_bad_input():
    online = _router()
    _, ctx = online.adjust(np.zeros(40), np.full(3, 0.5), np.full(3, 1e-4))
    with pytest.raises(ValueError, match="out of range"):
        online.learn(3, *ctx.row(0), observed=1.0)
    with pytest.raises(ValueError, match="finite"):
        online.learn(0, *ctx.row(0), observed=math.nan)
    with pytest.raises(ValueError, match="z must be"):
        online.learn(0, 0.5, [1.0, 2.0], observed=1.0)
    with pytest.raises(ValueError, match="features"):
        online.adjust(np.zeros(7), np.full(3, 0.5), np.full(3, 1e-4))


# -- the budget controller -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _requests(rng: np.random.Generator, n: int, expensive: float):
    """Two candidates: a cheap one and a better one costing ``expensive`` USD."""
    for _ in range(n):
        gap = rng.uniform(0.0, 0.2)
        yield np.array([0.5, 0.5 + gap]), np.array([1e-4, expensive])


def _run(control: BudgetController, clock: Clock, rng, n: int, expensive: float) -> float:
    spent = 0.0
    for quality, cost in _requests(rng, n, expensive):
        lam = control.lam()
        j = int(np.argmax(quality - lam * cost))
        control.observe(quality, cost, spent=float(cost[j]))
        spent += cost[j]
        clock.now += 1.0
    return 1000.0 * spent / n


def test_budget_controller_holds_the_target_as_prices_drift():
    rng, clock = np.random.default_rng(5), Clock()
    control = BudgetController(0.5, lam=0.0, clock=clock, bucket=100, horizon=10)
    assert control.lam() == 0.0  # no data yet: the starting lambda
    _run(control, clock, rng, 2000, expensive=1e-3)  # settle
    assert _run(control, clock, rng, 3000, expensive=1e-3) == pytest.approx(0.5, rel=0.05)
    # Analytic: spend 1e-4 + P(gap > lam*dc)*dc = 5e-4 with gap ~ U(0, 0.2).
    assert control.lam() == pytest.approx(0.2 * (1 - 4 / 9) / 9e-4, rel=0.1)
    _run(control, clock, rng, 2000, expensive=2e-3)  # the better model's price doubles
    assert _run(control, clock, rng, 3000, expensive=2e-3) == pytest.approx(0.5, rel=0.05)
    assert control.lam() == pytest.approx(0.2 * (1 - 4 / 19) / 1.9e-3, rel=0.1)


def test_budget_records_merge_across_workers_and_expire():
    rng = np.random.default_rng(6)
    clock = Clock()
    one, a, b = (BudgetController(0.5, clock=clock, bucket=100, horizon=3) for _ in range(3))
    for t, (quality, cost) in enumerate(_requests(rng, 500, 1e-3)):
        clock.now = float(t)
        record = {str(t // 100): BudgetController.record(quality, cost, None, 0.0)}
        one.merge(record)
        (a if t % 2 else b).merge(record)
    merged = BudgetController(0.5, clock=clock, bucket=100, horizon=3)
    merged.load({k: a.state().get(k, 0) + b.state().get(k, 0) for k in a.state()})
    assert set(merged.state()) == set(one.state()) == {"1", "2", "3", "4"}  # 0 expired
    assert merged.fit() == one.fit()
    assert sum(r[COUNT] for r in one.state().values()) == 400
    with pytest.raises(ValueError, match="shape"):
        one.merge({"9": np.zeros(LAMBDAS.size)})
    with pytest.raises(ValueError, match="target"):
        BudgetController(0.0)
