"""The replay simulator and ``routeiq simulate``: curves that can only come out one way."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from routeiq.cli.simulate import simulate_app
from routeiq.evaluation.simulate import (
    Budget,
    Stream,
    drift_rows,
    gain_recovered,
    simulate,
    summarize,
)

runner = CliRunner()


def _random_stream(n: int = 150, m: int = 3, seed: int = 0) -> Stream:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 12))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    quality = (rng.random((n, m)) < np.linspace(0.4, 0.8, m)).astype(float)
    cost = rng.uniform(0.5, 1.5, (n, m)) * np.logspace(-4, -2, m)
    predicted = np.clip(quality * 0.3 + rng.random((n, m)) * 0.7, 0, 1)
    return Stream(
        x=x,
        predicted=predicted,
        quality=quality,
        cost=cost,
        models=[f"m{j}" for j in range(m)],
        references={"noisy": np.clip(quality + rng.normal(0, 0.5, (n, m)), 0, 1)},
        tasks=["a" if i % 3 else "b" for i in range(n)],
    )


def test_the_oracle_is_at_least_every_policy_in_every_window():
    stream = _random_stream()
    out = simulate(
        stream,
        lam=20.0,
        requests=600,
        window=200,
        seed=1,
        budget=Budget(target=2.0, lam=20.0, bucket=50, horizon=4),
    )
    assert {"offline", "online", "online-cold", "budget", "online-budget", "noisy"} <= set(out)
    for name, curves in out.items():
        assert curves["reward"].shape == (3,)
        assert (out["oracle"]["reward"] >= curves["reward"] - 1e-12).all(), name


def _toy_where_offline_is_wrong(n: int = 200, seed: int = 0) -> Stream:
    """Model a is right when the first feature is positive, b otherwise; the offline router
    believes a is always a bit better (within the exploration margin, so b gets tried), so
    it is right only half of the time."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)) * 0.3
    x[:, 0] = np.where(np.arange(n) % 2, 1.0, -1.0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    a = (x[:, 0] > 0).astype(float)
    return Stream(
        x=x,
        predicted=np.tile([0.53, 0.5], (n, 1)),
        quality=np.c_[a, 1 - a],
        cost=np.full((n, 2), 1e-4),
        models=["a", "b"],
    )


def test_the_online_learner_beats_a_wrong_offline_router():
    out = simulate(_toy_where_offline_is_wrong(), lam=0.0, requests=2000, window=500, cold=False)
    assert out["offline"]["reward"].mean() == pytest.approx(0.5, abs=0.05)
    assert out["online"]["reward"][-1] > 0.9  # learned the feature's sign
    assert (out["online"]["reward"][1:] > out["offline"]["reward"][1:] + 0.2).all()


def test_the_budget_policy_holds_the_target_while_a_fixed_lambda_overspends():
    rng = np.random.default_rng(2)
    n = 400
    tasks = np.where(np.arange(n) % 4 == 0, "pricey", "plain")
    gap = rng.uniform(0, 0.2, n)
    quality = np.c_[np.full(n, 0.5), 0.5 + gap]
    cost = np.c_[np.full(n, 1e-4), np.where(tasks == "pricey", 3e-3, 1e-3)]
    stream = Stream(
        x=np.eye(n, 4), predicted=quality, quality=quality, cost=cost, models=["c", "e"]
    )
    stream = Stream(**{**stream.__dict__, "tasks": list(tasks)})
    rows = drift_rows(stream.tasks, "pricey", 6000, seed=0)
    pick = np.argmax(quality - 30.0 * cost, axis=1)
    spent = cost[np.arange(n), pick]
    target = 1000 * (0.1 * spent[tasks == "pricey"].mean() + 0.9 * spent[tasks == "plain"].mean())
    plan = Budget(target=target, lam=30.0)
    out = simulate(
        stream, lam=30.0, window=1000, requests=6000, rows=rows, budget=plan, warm=False, cold=False
    )
    spend = out["budget"]["cost"] * 1000
    assert np.abs(spend[1:] / target - 1).max() < 0.08  # binary picks: noisy windows
    assert out["offline"]["cost"][-1] * 1000 > 1.2 * target
    assert out["budget"]["lambda"][-1] > 30.0  # a pricier mix: a higher lambda
    hindsight = out["fixed-hindsight"]["cost"].mean() * 1000
    assert hindsight <= target * 1.001


def test_drift_rows_raise_the_share_of_a_task():
    tasks = ["x"] * 50 + ["y"] * 150
    rows = drift_rows(tasks, "x", 8000, seed=3)
    share = (np.asarray(tasks)[rows] == "x").reshape(4, -1).mean(axis=1)
    assert share[0] == pytest.approx(0.1625, abs=0.03)
    assert share[-1] == pytest.approx(0.5375, abs=0.03)
    with pytest.raises(ValueError, match="some rows"):
        drift_rows(tasks, "z", 10, seed=0)


def test_streams_and_runs_reject_bad_input():
    stream = _random_stream(30)
    with pytest.raises(ValueError, match="requests >= window"):
        simulate(stream, lam=1.0, requests=100, window=200)
    bad = stream.quality.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="every model's quality"):
        Stream(
            x=stream.x,
            predicted=stream.predicted,
            quality=bad,
            cost=stream.cost,
            models=stream.models,
        )
    with pytest.raises(ValueError, match="shape"):
        Stream(
            x=stream.x,
            predicted=stream.predicted[:, :2],
            quality=stream.quality,
            cost=stream.cost,
            models=stream.models,
        )


def test_summaries_and_gain_recovered():
    runs = [
        {
            "p": {
                m: np.array([1.0, 2.0]) * (k + 1)
                for m in ("reward", "quality", "cost", "explored", "lambda")
            }
        }
        for k in range(2)
    ]
    curves = summarize(runs)
    assert curves["p"]["reward"] == {"mean": [1.5, 3.0], "sd": [0.5, 1.0]}
    curves = {
        "online": {"reward": {"mean": [0.55, 0.6]}},
        "offline": {"reward": {"mean": [0.6, 0.6]}},
        "best-fixed": {"reward": {"mean": [0.5, 0.5]}},
    }
    assert gain_recovered(curves, "online", "offline") == pytest.approx([0.5, 1.0])
    assert np.isnan(gain_recovered(curves, "best-fixed", "best-fixed")).all()


# -- the CLI on a slice of the shared RouterBench data ----------------------------------------


@pytest.fixture(scope="module")
def slice_csv(routerbench_csv, tmp_path_factory):
    """120 rows per task of the shared RouterBench file (written to a temp dir)."""
    path = tmp_path_factory.mktemp("sim") / "rb_slice.csv"
    with open(routerbench_csv, newline="") as src, open(path, "w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        counts: dict[str, int] = {}
        for row in reader:
            task = row["eval_name"]
            if counts.get(task, 0) < 120 and all(row[m] != "" for m in reader.fieldnames[:3]):
                counts[task] = counts.get(task, 0) + 1
                writer.writerow(row)
    return path


def _invoke(*args: str):
    return runner.invoke(simulate_app, list(args))


COMMON = ("--quality-model", "knn", "--requests", "900", "--window", "300", "--seeds", "1")


@pytest.mark.slow
def test_cli_warm_writes_json_png_and_a_table(slice_csv, tmp_path):
    out = tmp_path / "warm"
    result = _invoke("--data", str(slice_csv), *COMMON, "--lambda", "20", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "online" in result.output and "best-fixed" in result.output
    report = json.loads((out / "simulate.json").read_text())
    assert report["config"]["scenario"] == "warm" and report["config"]["lambda"] == 20.0
    assert set(report["curves"]) >= {"offline", "online", "oracle", "best-fixed"}
    assert len(report["curves"]["online"]["reward"]["mean"]) == 3
    assert "worst_window_after_500" in report["summary"]
    assert (out / "simulate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_cli_shift_streams_the_other_task_against_an_in_distribution_router(slice_csv, tmp_path):
    out = tmp_path / "shift"
    result = _invoke(
        "--data",
        str(slice_csv),
        *COMMON,
        "--scenario",
        "shift",
        "--train-tasks",
        "arc-challenge,winogrande",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "simulate.json").read_text())
    assert report["config"]["stream_tasks"] == ["mbpp"]
    assert report["config"]["streamed_rows"] == 120
    assert "in-distribution" in report["curves"]
    assert "shift_gap_recovered" in report["summary"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--scenario", "shift", "--train-tasks", "arc,mbpp"), "unknown task"),
        (("--scenario", "shift"), "needs --train-tasks"),
        (("--train-tasks", "mbpp"), "--scenario shift only"),
        (("--requests", "100", "--window", "300"), "at least --window"),
        (("--scenario", "sideways"), "--scenario must be"),
        (("--lambda", "1", "--target", "quality>=1.0"), "not both"),
    ],
)
def test_cli_refuses_bad_input_with_one_clear_line(slice_csv, args, message):
    result = _invoke("--data", str(slice_csv), "--quality-model", "knn", *args)
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.slow
def test_cli_refuses_data_without_every_outcome(slice_csv, tmp_path):
    path = tmp_path / "holes.csv"
    with open(slice_csv, newline="") as src, open(path, "w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        cost_col = next(f for f in reader.fieldnames if f.endswith("|total_cost"))
        for k, row in enumerate(reader):
            if k == 5:
                row[cost_col] = ""
            writer.writerow(row)
    result = _invoke("--data", str(path), *COMMON)
    assert result.exit_code == 2
    assert "every model's quality and cost" in result.output
