"""Off-policy estimators, checked on simulated logs with a known ground truth."""

from __future__ import annotations

import random

import numpy as np
import pytest

from routeiq.evaluation.ope import estimate
from routeiq.router import Candidate


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def simulate(n: int, m: int = 4, seed: int = 0, temp: float = 0.3):
    """Bernoulli rewards with means mu (n, m); a softmax logging policy; a different target."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.1, 0.9, size=(n, m))
    log_p = softmax(mu / temp + rng.normal(0, 0.5, size=(n, m)))
    actions = np.array([rng.choice(m, p=row) for row in log_p])
    rewards = (rng.random(n) < mu[np.arange(n), actions]).astype(float)
    target = 0.9 * np.eye(m)[mu.argmax(axis=1)] + 0.1 / m  # near-greedy on the truth
    truth = float((target * mu).sum(axis=1).mean())
    return mu, log_p, actions, rewards, target, truth


def test_estimates_are_close_to_the_truth() -> None:
    mu, log_p, a, r, target, truth = simulate(20_000)
    rng = np.random.default_rng(1)
    model = np.clip(mu + rng.normal(0, 0.1, mu.shape), 0, 1)  # an imperfect reward model
    res = estimate(r, a, log_p[np.arange(a.size), a], target, model, logged_probs=log_p)
    for name in ("ips", "snips", "dr"):
        est = res.estimates[name]
        assert abs(est.value - truth) / truth < 0.03, (name, est, truth)
        assert est.low < est.value < est.high
    assert res.unsupported == 0.0 and not res.warnings
    assert 0 < res.ess < a.size
    # The logging policy evaluated on its own log: IPS weights are all 1.
    own = estimate(r, a, log_p[np.arange(a.size), a], log_p)
    assert own.estimates["ips"].value == pytest.approx(r.mean())
    assert own.ess == pytest.approx(a.size)


def test_interval_covers_the_truth_in_most_seeds() -> None:
    covered = 0
    for seed in range(40):
        mu, log_p, a, r, target, truth = simulate(2000, seed=seed)
        res = estimate(r, a, log_p[np.arange(a.size), a], target, mu, n_bootstrap=200, seed=seed)
        est = res.estimates["dr"]
        covered += est.low <= truth <= est.high
    assert covered >= 34  # nominal 95%: 38 of 40; binomial slack


def test_snips_is_bounded_under_extreme_propensities() -> None:
    _, _, a, r, target, _ = simulate(2000, seed=3)
    p = 10.0 ** np.random.default_rng(0).uniform(-6, 0, a.size)  # down to 1e-6
    res = estimate(r, a, p, target)
    assert res.estimates["ips"].value > 1.0  # IPS explodes
    assert 0.0 <= res.estimates["snips"].value <= 1.0
    assert res.max_weight > 1e5 and any("effective sample size" in w for w in res.warnings)


def test_dr_with_an_exact_reward_model_equals_dm() -> None:
    mu, log_p, a, _, target, truth = simulate(3000, seed=4)
    r = mu[np.arange(a.size), a]  # deterministic rewards: mu is exact
    res = estimate(r, a, log_p[np.arange(a.size), a], target, mu)
    assert res.estimates["dr"].value == pytest.approx(res.estimates["dm"].value, abs=1e-12)
    assert res.estimates["dm"].value == pytest.approx(truth)


def test_dr_with_a_zero_reward_model_equals_ips() -> None:
    _, log_p, a, r, target, _ = simulate(3000, seed=5)
    p = log_p[np.arange(a.size), a]
    res = estimate(r, a, p, target, np.zeros_like(target))
    assert res.estimates["dr"].value == pytest.approx(res.estimates["ips"].value, abs=1e-12)
    assert res.estimates["dm"].value == 0.0


def test_missing_support_is_reported() -> None:
    _, log_p, a, r, target, _ = simulate(1000, seed=6)
    log_p = log_p.copy()
    log_p[:, 0] = 0.0  # the logging policy never takes action 0
    log_p /= log_p.sum(axis=1, keepdims=True)
    a = np.array([np.random.default_rng(i).choice(4, p=row) for i, row in enumerate(log_p)])
    res = estimate(r, a, log_p[np.arange(a.size), a], target, logged_probs=log_p)
    assert res.unsupported == pytest.approx(target[:, 0].mean())
    assert any("no support" in w for w in res.warnings)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"propensities": [0.0, 0.5]}, "propensities"),
        ({"actions": [0, 5]}, "actions"),
        ({"actions": [0.0, 1.0]}, "actions"),
        ({"rewards": [np.nan, 1.0]}, "rewards"),
        ({"target": [[0.5, 0.6], [1.0, 0.0]]}, "sum to 1"),
        ({"reward_model": [[0.1, 0.2]]}, "reward_model"),
    ],
)
def test_bad_inputs_get_clear_errors(kwargs, match) -> None:
    args = {
        "rewards": [1.0, 0.0],
        "actions": [0, 1],
        "propensities": [0.5, 0.5],
        "target": [[1.0, 0.0], [0.0, 1.0]],
    }
    with pytest.raises(ValueError, match=match):
        estimate(**{**args, **kwargs})


def test_an_empty_log_is_an_error() -> None:
    with pytest.raises(ValueError, match="no logged decisions"):
        estimate([], np.array([], dtype=int), [], np.zeros((0, 2)))


# ------------------------------------------------------------------------------ logs


@pytest.fixture(scope="module")
def demo():
    from routeiq.features.lexical import LexicalFeaturizer
    from routeiq.integrations.litellm.demo import demo_dataset
    from routeiq.quality.linear import LogisticQuality
    from routeiq.router import LearnedRouter

    data = demo_dataset(seed=2)
    router = LearnedRouter(
        LexicalFeaturizer(n_components=32, min_df=1), LogisticQuality(C=1.0), lam=20.0, cv_folds=3
    ).fit(demo_dataset(seed=0))
    return data, router


def test_simulated_log_estimates_the_new_policy(demo) -> None:
    from routeiq.decision.exploration import Exploration
    from routeiq.evaluation.replay import LoggedRequest, evaluate_log, policy, simulate_log

    data, router = demo
    # Logging: lambda 20 with generous exploration. New policy: always the cheap model
    # (lambda = inf); its truth is known from the full matrix.
    explore = Exploration(mode="epsilon", epsilon=0.3, margin=1.0, max_cost_ratio=1e4, seed=1)
    log = simulate_log(data, router, exploration=explore)
    assert len(log) == len(data)
    assert all(len(r["outcomes"]) == 1 for r in log)  # only the chosen outcome is revealed
    assert {r["decision"]["propensity"] for r in log} <= {0.7, 0.3}
    report = evaluate_log(log, router, lam=float("inf"), n_bootstrap=200)
    truth_q = float(data.quality[:, 1].mean())
    est = report["quality"].estimates
    for name in ("snips", "dr"):
        assert abs(est[name].value - truth_q) < 0.06, (name, est[name], truth_q)
    assert est["dr"].low <= truth_q <= est["dr"].high
    assert report["cost"].estimates["dr"].value == pytest.approx(data.cost[:, 1].mean(), rel=0.05)
    assert report["n"] == len(data) and report["quality"].unsupported == 0.0
    # The same policy on the log of a greedy router has no support where they disagree.
    greedy = simulate_log(data, router)
    blind = evaluate_log(greedy, router, lam=float("inf"), n_bootstrap=50)
    assert blind["quality"].unsupported > 0.2
    assert any("no support" in w for w in blind["quality"].warnings)
    # policy() is the serving rule: same choice as LearnedRouter.route.
    reqs = [
        LoggedRequest(data.ids[i], data.prompts[i], data.models, list(data.cost[i]))
        for i in range(20)
    ]
    for i, d in enumerate(policy(router, reqs)):
        cands = [Candidate(str(j), m, float(data.cost[i, j])) for j, m in enumerate(data.models)]
        assert d.model == router.route(data.prompts[i], cands).model


def test_gateway_log_with_feedback_and_the_cli(demo, tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from routeiq.cli.main import app
    from routeiq.decision.exploration import Exploration
    from routeiq.evaluation.replay import simulate_log

    data, router = demo
    artifact = tmp_path / "router"
    router.save(artifact)
    explore = Exploration(mode="epsilon", epsilon=0.2, margin=1.0, max_cost_ratio=1e4)
    lines = []
    for rec in simulate_log(data, router, exploration=explore):
        # As a gateway writes it: the decision first, feedback later as its own line.
        outcome = rec.pop("outcomes")
        lines.append(rec)
        if int(rec["id"]) % 4:  # a quarter of the decisions never get feedback
            lines.append({"id": rec["id"], "outcomes": outcome})
    path = tmp_path / "decisions.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    result = CliRunner().invoke(
        app,
        [
            "ope",
            "--log",
            str(path),
            "--router",
            str(artifact),
            "--lambda",
            "0",
            "--json",
            "--bootstrap",
            "50",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["n"] == sum(1 for i in data.ids if int(i) % 4)
    assert out["skipped"]["no quality feedback"] == len(data) - out["n"]
    assert 0.5 < out["quality"]["dr"]["value"] <= 1.0  # lambda 0: the strong model, ~0.95
    assert set(out["utility"]) >= {"ips", "snips", "dm", "dr", "ess"}

    table = CliRunner().invoke(app, ["ope", "--log", str(path), "--router", str(artifact)])
    assert table.exit_code == 0 and "effective sample size" in table.output
    bad = CliRunner().invoke(
        app, ["ope", "--log", str(tmp_path / "nope.jsonl"), "--router", str(artifact)]
    )
    assert bad.exit_code == 2 and "error" in bad.output
    wrong = CliRunner().invoke(
        app, ["ope", "--log", str(path), "--router", str(artifact), "--explore", "sometimes"]
    )
    assert wrong.exit_code == 2 and "mode" in wrong.output


async def test_shuffle_traffic_through_the_engine_evaluates_the_router(demo, tmp_path) -> None:
    """The closed loop: a gateway in shuffle mode logs decisions with exact propensities,
    feedback arrives later, and OPE of the learned router matches its true quality."""
    import json

    from routeiq.data.records import read_records
    from routeiq.evaluation.replay import evaluate_log
    from routeiq.serving import (
        DecisionEngine,
        DecisionLog,
        RouteIQSettings,
        RouteRequest,
        RouterRegistry,
    )

    data, router = demo
    path = tmp_path / "decisions.jsonl"
    settings = RouteIQSettings.model_validate({"mode": "shuffle"})
    engine = DecisionEngine(
        settings,
        RouterRegistry({}),
        decision_log=DecisionLog(path),
        rng=random.Random(0),
    )
    feedback, truth = [], []
    for i, prompt in enumerate(data.prompts):
        cands = [Candidate(f"d{j}", m, float(data.cost[i, j])) for j, m in enumerate(data.models)]
        d = await engine.decide(
            RouteRequest("chat", cands, messages=[{"role": "user", "content": prompt}])
        )
        j = data.models.index(d.model)
        feedback.append({"id": d.id, "outcomes": {d.model: {"quality": float(data.quality[i, j])}}})
        best = router.route(prompt, cands)
        truth.append(float(data.quality[i, data.models.index(best.model)]))
    engine.close()
    with path.open("a") as f:
        f.writelines(json.dumps(line) + "\n" for line in feedback)
    records = read_records(path)
    assert len(records) == len(data)
    assert {r.decision.outcome for r in records} == {"shuffle"}
    assert {r.decision.propensity for r in records} == {0.5}
    report = evaluate_log(records, router, n_bootstrap=200)
    est = report["quality"].estimates["dr"]
    assert report["n"] == len(data) and report["quality"].unsupported == 0.0
    assert abs(est.value - np.mean(truth)) < 0.05, (est, np.mean(truth))
    assert est.low <= np.mean(truth) <= est.high
