"""Request context as routing signal: fields, the context model, the router, records, engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import prometheus_client
import pytest

from routeiq.data.dataset import DataError, RoutingDataset
from routeiq.data.records import load_records, write_records
from routeiq.evaluation.runner import TASK_LOOKUP, run_evaluation
from routeiq.features import make_featurizer
from routeiq.features.context import (
    ContextError,
    check_fields,
    client_context,
    context_keys,
    field_values,
    gateway_context,
    system_hash,
)
from routeiq.quality import make_quality_model
from routeiq.quality.context import ContextModel
from routeiq.router import Candidate, LearnedRouter
from routeiq.serving import (
    DecisionEngine,
    DecisionLog,
    RouteIQSettings,
    RouteRequest,
    RouterRegistry,
)
from routeiq.serving.feedback import Identity
from routeiq.telemetry.metrics import RouteIQMetrics

MODELS = ["coder", "chatter"]
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
]


def tasky_data(n: int = 400, seed: int = 0) -> RoutingDataset:
    """Two teams whose best model differs; the text says nothing about the team."""
    rng = np.random.default_rng(seed)
    prompts = [" ".join(rng.choice(WORDS, 8)) + f" #{i}" for i in range(n)]
    teams = rng.choice(["t-code", "t-chat"], n)
    p_good = np.where(teams[:, None] == "t-code", [0.9, 0.3], [0.3, 0.9])
    quality = (rng.random((n, 2)) < p_good).astype(float)
    cost = np.tile([0.002, 0.002], (n, 1))
    splits = ["train"] * (n * 3 // 4) + ["test"] * (n - n * 3 // 4)
    return RoutingDataset(
        prompts=prompts,
        models=list(MODELS),
        quality=quality,
        cost=cost,
        splits=splits,
        contexts=[{"team": str(t)} for t in teams],
    )


# -- fields -------------------------------------------------------------------------------


def test_fields_values_and_keys():
    assert check_fields("task, team") == ("task", "team")
    assert check_fields(["tags", "tags"]) == ("tags",)
    with pytest.raises(ContextError, match="Team"):
        check_fields(["Team"])
    assert field_values(None) == () and field_values(" a ") == ("a",)
    assert field_values(["x", "y", ""]) == ("x", "y")
    with pytest.raises(ContextError):
        field_values({"nested": 1})
    keys = context_keys({"team": "t-1", "tags": ["a", "b"]}, ("team", "tags", "user"))
    assert len(keys) == 3 and all(len(k) == 16 for k in keys)
    assert "t-1" not in "".join(keys)  # values enter only as hashes
    # the same value under another field is another key
    assert context_keys({"team": "x"}, ("team",)) != context_keys({"user": "x"}, ("user",))


def test_gateway_context_and_client_fields():
    messages = [
        {"role": "system", "content": "You are the billing bot."},
        {"role": "user", "content": "hi"},
    ]
    ctx = gateway_context(
        tags=("support", 3), team="t-1", key="hashed", user="u-9", messages=messages, extra=None
    )
    assert ctx == {
        "tags": ["support"],
        "team": "t-1",
        "key": "hashed",
        "user": "u-9",
        "system": system_hash(messages),
    }
    assert system_hash([{"role": "user", "content": "hi"}]) is None
    assert system_hash(messages) != system_hash([{"role": "system", "content": "Other bot"}])
    # A gateway field always comes from the verified request, never from the client.
    extra = client_context({"task": "math", "team": "spoofed", "Bad Name": "x", "n": {"a": 1}})
    assert extra == {"task": "math"}
    assert gateway_context(team="t-1", extra={"task": "math"}) == {"task": "math", "team": "t-1"}
    assert client_context("not a mapping") == {}


# -- the context model ----------------------------------------------------------------------


def test_context_model_blends_known_values_and_leaves_unknown_ones_alone():
    rng = np.random.default_rng(1)
    n = 600
    teams = rng.choice(["a", "b"], n)
    truth = np.where(teams[:, None] == "a", [0.9, 0.2], [0.2, 0.9])
    Y = (rng.random((n, 2)) < truth).astype(float)
    P = np.full((n, 2), 0.55) + rng.normal(0, 0.05, (n, 2))  # text: noise around the mean
    model = ContextModel(["team"]).fit([{"team": t} for t in teams], Y, P)
    assert 0.0 <= model.text_weight_ < 0.3  # the noise gets little weight
    row = np.array([0.5, 0.5])
    a = model.apply_one(row, {"team": "a"})
    assert a[0] > 0.75 and a[1] < 0.35
    assert np.array_equal(model.apply_one(row, {"team": "new-team"}), row)
    assert np.array_equal(model.apply_one(row, None), row)
    assert model.known({"team": "a", "tags": ["x"]}) == ["team"]
    batch = model.apply(np.vstack([row, row]), [{"team": "b"}, {}])
    assert batch[0, 1] > 0.75 and np.array_equal(batch[1], row)


def test_context_model_rare_values_get_no_column_and_bad_input_is_refused():
    contexts = [{"team": "big"}] * 30 + [{"team": "rare"}] * 2
    Y = np.ones((32, 2))
    model = ContextModel(["team"], min_count=5).fit(contexts, Y, Y * 0.5)
    assert model.known({"team": "rare"}) == [] and model.known({"team": "big"}) == ["team"]
    with pytest.raises(ValueError, match="must match"):
        model.fit(contexts, Y, Y[:3])
    with pytest.raises(ValueError, match="at least one"):
        ContextModel([])
    with pytest.raises(ContextError):
        ContextModel(["no spaces allowed"])


# -- the router ---------------------------------------------------------------------------


def test_router_with_context_routes_by_team_and_round_trips(tmp_path):
    data = tasky_data()
    train, test = data.split("train"), data.split("test")
    text_only = LearnedRouter(make_featurizer("lexical"), make_quality_model("knn")).fit(train)
    with_ctx = text_only.with_context(ContextModel(["team"]), train)
    contexts = test.context_rows()
    best = test.quality.argmax(axis=1)
    both_good = test.quality.min(axis=1) == test.quality.max(axis=1)

    def accuracy(P: np.ndarray) -> float:
        return float((P.argmax(axis=1) == best)[~both_good].mean())

    assert accuracy(with_ctx.predict_quality(test.prompts, contexts)) > 0.7
    assert accuracy(text_only.predict_quality(test.prompts, contexts)) < 0.65
    d_code = with_ctx.route(test.prompts[0], context={"team": "t-code"})
    d_chat = with_ctx.route(test.prompts[0], context={"team": "t-chat"})
    assert (d_code.chosen, d_chat.chosen) == ("coder", "chatter")
    assert d_code.rule is not None and d_code.rule.endswith("; context: team")
    assert "context" not in (with_ctx.route(test.prompts[0], context={"team": "t-new"}).rule or "")
    # A team never seen in training gets exactly the text-only prediction.
    new = with_ctx.score(test.prompts[0], [Candidate(m, m) for m in MODELS], {"team": "t-new"})
    plain = text_only.score(test.prompts[0], [Candidate(m, m) for m in MODELS])
    assert np.array_equal(new.quality, plain.quality)

    with_ctx.save(tmp_path / "r")
    loaded = LearnedRouter.load(tmp_path / "r")
    assert loaded.context is not None and loaded.context.fields == ["team"]
    assert np.allclose(
        loaded.predict_quality(test.prompts, contexts),
        with_ctx.predict_quality(test.prompts, contexts),
        atol=1e-6,
    )
    stored = "".join(p.read_text(errors="replace") for p in (tmp_path / "r").iterdir())
    assert "t-code" not in stored and "t-chat" not in stored  # hashes only
    with pytest.raises(DataError, match="trained on"):
        text_only.with_context(ContextModel(["team"]), test)


def test_fit_with_context_calibrates_on_blended_out_of_fold_predictions():
    train = tasky_data().split("train")
    text = LearnedRouter(make_featurizer("lexical"), make_quality_model("knn")).fit(train)
    ctx = LearnedRouter(
        make_featurizer("lexical"), make_quality_model("knn"), context=ContextModel(["team"])
    ).fit(train)
    Y = train.quality

    def oof_error(router: LearnedRouter) -> float:
        return float(np.mean((router.calibration_["predicted_quality"] - Y) ** 2))

    # Bernoulli noise alone is 0.15 here; text-only predictions sit near the mean (0.24).
    assert oof_error(text) > 0.2 and oof_error(ctx) < oof_error(text) - 0.04
    assert ctx.context is not None and 0.0 <= ctx.context.text_weight_ <= 1.0


# -- records and evaluation -----------------------------------------------------------------


def test_records_carry_context_and_system_hash(tmp_path):
    path = tmp_path / "r.jsonl"
    chat = [{"role": "system", "content": "billing bot"}, {"role": "user", "content": "refund?"}]
    write_records(
        path,
        [
            {"id": "1", "prompt": "hi", "context": {"team": "t", "tags": ["a"]}},
            {"id": "2", "prompt": chat, "outcomes": {"m": {"quality": 1.0}}},
        ],
    )
    ds = load_records(path)
    assert ds.contexts[0] == {"team": "t", "tags": ["a"]}
    assert ds.contexts[1] == {"system": system_hash(chat)}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "1", "prompt": "hi", "context": {"Team": "t"}}) + "\n")
    with pytest.raises(DataError, match="context"):
        load_records(bad)


def test_dataset_task_column_is_the_task_field():
    ds = RoutingDataset(
        prompts=["a", "b"],
        models=["m"],
        quality=[[1.0], [0.0]],
        cost=[[1.0], [1.0]],
        tasks=["math", "code"],
        contexts=[{"team": "x"}, {"task": "own"}],
    )
    assert ds.context_rows() == [{"team": "x", "task": "math"}, {"task": "own"}]
    assert ds.subset([1]).contexts == [{"task": "own"}]


def test_eval_reports_rows_with_context_and_the_lookup_difference():
    data = tasky_data()
    data = RoutingDataset(**{**vars(data), "tasks": [c["team"] for c in data.contexts]})
    summary = run_evaluation(
        data, routers=["constant"], context=["task"], target="quality>=1.0", n_boot=20
    )
    rows = {r["router"]: r for r in summary["rows"]}
    assert {"constant", "constant + context", TASK_LOOKUP} <= set(rows)
    diff, lo, hi = rows["constant + context"]["aiq_vs_task_lookup"]
    assert lo <= diff <= hi
    # text-only constant ignores the team; with context it is as good as the lookup
    assert rows["constant + context"]["aiq"] > rows["constant"]["aiq"] + 0.05
    assert summary["context"] == ["task"]


# -- the engine -----------------------------------------------------------------------------


async def test_engine_routes_on_the_verified_team_and_logs_the_context(tmp_path):
    train = tasky_data().split("train")
    learned = LearnedRouter(
        make_featurizer("lexical"), make_quality_model("knn"), context=ContextModel(["team"])
    ).fit(train)
    artifact = tmp_path / "router"
    learned.save(artifact)
    log = tmp_path / "log.jsonl"
    metrics = RouteIQMetrics(prometheus_client.CollectorRegistry())
    engine = DecisionEngine(
        RouteIQSettings.model_validate({"router": str(artifact), "lambda": 0.0}),
        RouterRegistry({artifact: LearnedRouter.load(artifact)}),
        decision_log=DecisionLog(log, metrics=metrics),
        metrics=metrics,
    )
    cands = [Candidate(m, m, cost=0.002) for m in MODELS]
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": train.prompts[0]}]
    chosen = {}
    for team in ("t-code", "t-chat"):
        request = RouteRequest(
            group="chat",
            candidates=cands,
            messages=messages,
            identity=Identity(team_id=team, key_hash="kh"),
            tags=("web",),
            # a client's own field passes; the engine's request context never takes 'team'
            # from here (the front end filters it: client_context)
            context={"task": "support"},
        )
        decision = await engine.decide(request)
        chosen[team] = decision.chosen
        assert decision.rule is not None and decision.rule.endswith("; context: team")
    engine.close()
    assert chosen == {"t-code": "coder", "t-chat": "chatter"}
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["context"]["team"] for r in records] == ["t-code", "t-chat"]
    assert records[0]["context"] == {
        "task": "support",
        "tags": ["web"],
        "team": "t-code",
        "key": "kh",
        "system": system_hash(messages),
    }


def test_service_wire_passes_context_fields():
    from routeiq.service.wire import RouteBody, to_route_request

    body = RouteBody.model_validate(
        {
            "group": "chat",
            "candidates": [{"name": "a", "model": "m"}],
            "text": "hi",
            "context": {"fields": {"task": "math", "system": "abc"}, "tags": ["x"]},
        }
    )
    request = to_route_request(body, output_tokens=10)
    assert request.routing_context() == {"task": "math", "system": "abc", "tags": ["x"]}
    with pytest.raises(ValueError, match="identifier"):
        RouteBody.model_validate(
            {
                "group": "chat",
                "candidates": [{"name": "a", "model": "m"}],
                "context": {"fields": {"Bad": "x"}},
            }
        )


def test_cli_train_and_route_with_context(tmp_path: Path):
    from typer.testing import CliRunner

    from routeiq.cli.main import app
    from routeiq.data.records import dataset_to_records

    data = tasky_data().split("train")
    path = tmp_path / "d.jsonl"
    write_records(path, dataset_to_records(data))
    runner = CliRunner()
    out = tmp_path / "router"
    res = runner.invoke(
        app,
        ["train", "--out", str(out), "--data", str(path), "--router", "knn", "--context", "team"],
    )
    assert res.exit_code == 0, res.output
    chosen = []
    for team in ("t-code", "t-chat"):
        res = runner.invoke(
            app,
            ["route", data.prompts[0], "--router", str(out), "--context", f"team={team}", "--json"],
        )
        assert res.exit_code == 0, res.output
        chosen.append(json.loads(res.output)["chosen"])
    assert chosen == ["coder", "chatter"]
    res = runner.invoke(app, ["route", "hi", "--router", str(out), "--context", "team"])
    assert res.exit_code == 2 and "field=value" in res.output
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "x"), "--context", "Bad Field"])
    assert res.exit_code == 2 and "identifier" in res.output


# -- imputation: a field read from the text when the request lacks it ------------------------


@pytest.mark.parametrize("n_tasks", [2, 3])
def test_imputed_field_comes_from_the_text_and_a_given_value_wins(n_tasks, tmp_path):
    rng = np.random.default_rng(3)
    n = 600
    task = rng.integers(0, n_tasks, n)
    X = rng.normal(0, 0.3, (n, 4))
    X[np.arange(n), task] += 2.0  # the text features say the task
    best = np.array([[0.9, 0.2, 0.5], [0.2, 0.9, 0.5], [0.5, 0.5, 0.9]])[:n_tasks, :n_tasks]
    Y = (rng.random((n, n_tasks)) < best[task]).astype(float)
    P = np.full_like(Y, 0.5)  # a text model that learned nothing
    contexts = [{"task": f"t{t}"} for t in task]
    model = ContextModel(["task"], impute=["task"]).fit(contexts, Y, P, X)
    assert model.impute_fields_ == ["task"] and model.impute_weight_ < 0.5
    oof_pick = model.oof_predictions.argmax(axis=1)
    assert (oof_pick == task).mean() > 0.9  # out of fold, from the text alone
    x0 = np.zeros(4)
    x0[1] = 2.0  # reads as task t1 (an all-0.5 row would pick 0 on a tie)
    row = np.full(n_tasks, 0.5)
    assert model.apply_one(row, None, x0).argmax() == 1  # read from the text
    assert model.describe(None) == "context: task (from the text)"
    assert model.describe({"task": "t0"}) == "context: task"
    assert model.apply_one(row, {"task": "t0"}, x0).argmax() == 0  # the request says it
    assert np.array_equal(model.apply_one(row, None, None), row)  # no features: text only
    # round trip through the artifact state (arrays + JSON scalars)
    scalars, arrays = model.get_state()
    json.dumps(scalars)
    loaded = ContextModel.from_state(model.get_params(), scalars, arrays)
    assert np.allclose(loaded.apply_one(row, None, x0), model.apply_one(row, None, x0), atol=1e-5)
    with pytest.raises(ValueError, match="features"):
        ContextModel(["task"], impute=["task"]).fit(contexts, Y, P)
    with pytest.raises(ValueError, match="among the fields"):
        ContextModel(["task"], impute=["team"])


def test_cli_train_learns_a_task_prior_when_the_data_names_tasks(tmp_path: Path):
    from typer.testing import CliRunner

    from routeiq.cli.main import app
    from routeiq.data.records import dataset_to_records

    data = tasky_data().split("train")
    data = RoutingDataset(**{**vars(data), "tasks": [c["team"] for c in data.contexts]})
    path = tmp_path / "d.jsonl"
    write_records(path, dataset_to_records(data))
    runner = CliRunner()
    base = ["train", "--data", str(path), "--router", "constant"]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "auto")])
    assert res.exit_code == 0 and "context task" in res.output, res.output
    auto = LearnedRouter.load(tmp_path / "auto")
    assert auto.context is not None and auto.context.impute == ["task"]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "none"), "--context", "none"])
    assert res.exit_code == 0, res.output
    assert LearnedRouter.load(tmp_path / "none").context is None


def test_blend_weight_is_chosen_for_aiq_on_full_labels_and_by_least_squares_otherwise():
    from routeiq.quality.context import WEIGHTS

    rng = np.random.default_rng(5)
    n = 500
    teams = rng.choice(["a", "b"], n)
    Y = (rng.random((n, 2)) < np.where(teams[:, None] == "a", [0.9, 0.3], [0.3, 0.9])) * 1.0
    P = Y * 0.3 + rng.random((n, 2)) * 0.7  # some signal, mostly noise
    cost = np.tile([0.001, 0.002], (n, 1))
    contexts = [{"team": t} for t in teams]
    by_aiq = ContextModel(["team"]).fit(contexts, Y, P, cost=cost)
    by_lsq = ContextModel(["team"]).fit(contexts, Y, P)
    assert by_aiq.text_weight_ in WEIGHTS
    assert by_lsq.text_weight_ not in WEIGHTS  # a least-squares fit, not a grid point
    logged = Y.copy()
    logged[np.arange(n), rng.integers(0, 2, n)] = np.nan  # one model observed per row
    partial_fit = ContextModel(["team"]).fit(contexts, logged, P, cost=cost)
    assert partial_fit.text_weight_ not in WEIGHTS  # no AIQ without full labels
