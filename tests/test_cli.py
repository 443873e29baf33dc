"""The routeiq CLI: train, route, eval, and clear errors (exit 2, no traceback)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from routeiq.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def small_csv(routerbench_csv, tmp_path_factory):
    """A 400-row RouterBench slice (300 train / 100 test) in the original format."""
    path = tmp_path_factory.mktemp("data") / "rb_small.csv"
    with open(routerbench_csv, newline="") as src, open(path, "w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        counts = {"train": 0, "test": 0}
        for row in reader:
            limit = 300 if row["split"] == "train" else 100
            if counts[row["split"]] < limit:
                counts[row["split"]] += 1
                writer.writerow(row)
    return path


@pytest.fixture(scope="module")
def artifact(small_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "router"
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(small_csv),
            "--out",
            str(out),
            "--router",
            "logistic",
            "--target",
            "quality>=0.95",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_route_explains(artifact):
    result = runner.invoke(
        app, ["route", "Write a python function to reverse a list.", "--router", str(artifact)]
    )
    assert result.exit_code == 0, result.output
    assert "chosen:" in result.output and "gpt-4-1106-preview" in result.output


def test_route_json_and_messages(artifact):
    messages = json.dumps(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "Which gas do plants absorb?"},
        ]
    )
    result = runner.invoke(
        app, ["route", messages, "--router", str(artifact), "--json", "--lambda", "0"]
    )
    assert result.exit_code == 0, result.output
    decision = json.loads(result.output)
    assert decision["chosen"] in {c["name"] for c in decision["candidates"]}


@pytest.mark.parametrize("prompt", ["", "   ", '[{"role": "user", "content": []}]', "[oops"])
def test_bad_prompts_exit_2(artifact, prompt):
    result = runner.invoke(app, ["route", prompt, "--router", str(artifact)])
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output


def test_tampered_artifact_refused(artifact, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in artifact.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    meta = copy / "metadata.json"
    meta.write_text(meta.read_text().replace('"lambda"', '"lambda" ', 1))
    result = runner.invoke(app, ["route", "hello", "--router", str(copy)])
    assert result.exit_code == 2
    assert "metadata.json" in result.output


def test_missing_and_malformed_data(tmp_path):
    result = runner.invoke(
        app, ["train", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "nope.csv" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "sample_id,eval_name,split,prompt,m1,m1|total_cost\n"
        "a,t,train,hello,0.5,0.001\nb,t,train,world,yes,0.001\n"
    )
    result = runner.invoke(app, ["train", "--data", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "line 3" in result.output and "m1" in result.output
    assert not (tmp_path / "o").exists()


def test_unknown_router_name(small_csv, tmp_path):
    result = runner.invoke(
        app,
        ["train", "--data", str(small_csv), "--out", str(tmp_path / "o"), "--router", "telepathy"],
    )
    assert result.exit_code == 2 and "telepathy" in result.output


def test_eval_writes_json_and_png(small_csv, tmp_path):
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        [
            "eval",
            "--data",
            str(small_csv),
            "--routers",
            "constant,logistic,cluster",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    names = [r["router"] for r in report["rows"]]
    assert names[:3] == ["constant", "logistic", "cluster"]
    assert all(0 < r["aiq"] <= 1 for r in report["rows"][:3])
    assert "APGR" in result.output and "CPT80" in result.output
    assert "task lookup (baseline)" not in names  # this slice holds one task only


def test_eval_shows_the_task_lookup_baseline(routerbench_csv, tmp_path):
    out = tmp_path / "eval"
    args = ["eval", "--data", str(routerbench_csv), "--routers", "constant", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = {r["router"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    # Three tasks of very different difficulty: their train means beat a constant.
    lookup = rows["task lookup (baseline)"]["aiq"]
    assert lookup > rows["constant"]["aiq"] + 0.01
    assert lookup > rows["random mixture (single-model hull)"]["aiq"] + 0.01


def test_route_reads_megabyte_prompt_from_stdin(artifact):
    huge = "Which gas do plants absorb? " * 40_000  # ~1.1 MB, over the OS argument limit
    result = runner.invoke(app, ["route", "-", "--router", str(artifact)], input=huge)
    assert result.exit_code == 0, result.output
    assert "chosen:" in result.output


def test_unknown_candidate_model_is_mapped_not_fatal(artifact):
    result = runner.invoke(
        app,
        [
            "route",
            "Sort a list in python.",
            "--router",
            str(artifact),
            "--candidates",
            "gpt-4-1106-preview,brand-new-model",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = {c["name"]: c for c in json.loads(result.output)["candidates"]}
    assert rows["brand-new-model"]["mapped_from"] is not None
    assert rows["gpt-4-1106-preview"]["mapped_from"] is None


def test_train_says_whether_the_target_was_met(small_csv, tmp_path, monkeypatch):
    from routeiq.router import LearnedRouter

    out = tmp_path / "r"
    args = ["train", "--data", str(small_csv), "--out", str(out), "--router", "logistic"]
    result = runner.invoke(app, [*args, "--target", "quality>=1.5"])  # unreachable
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "target NOT reachable" in text and "closest reachable target: quality>=" in text
    closest = text.split("closest reachable target: ")[1].split()[0]
    assert 0.5 < float(closest.removeprefix("quality>=")) < 1.5
    # The artifact keeps whether the target was met: loading and routing do not recalibrate.
    learned = LearnedRouter.load(out)
    assert learned.target_met_ is False
    monkeypatch.setattr(learned, "calibrate", lambda *_: pytest.fail("recalibrated"))
    assert learned.tradeoff()[1].endswith("(target not met)")


def test_eval_names_an_unpriced_model(tmp_path):
    path = tmp_path / "log.jsonl"
    lines = []
    for i in range(40):
        outcomes = {
            "gpt-4o-mini": {"quality": float(i % 2)},  # priced by LiteLLM's map
            "my-private-model": {"quality": 1.0},  # no price anywhere
        }
        split = "train" if i < 30 else "test"
        lines.append(
            {"id": f"r{i}", "prompt": f"question {i}", "split": split, "outcomes": outcomes}
        )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = runner.invoke(app, ["eval", "--data", str(path), "--routers", "constant"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "my-private-model" in text and "--prices" in text and "gpt-4o-mini," not in text


def test_eval_on_another_test_file_or_a_random_split(tmp_path):
    def write(name: str, rows: range, split: str | None) -> Path:
        path = tmp_path / name
        lines = []
        for i in rows:
            text = ("Write a python function number " if i % 2 else "Say hello to friend ") + str(i)
            line: dict = {"id": f"r{i}", "prompt": text, "task": "code" if i % 2 else "chat"}
            line["outcomes"] = {
                "small": {"quality": 0.0 if i % 2 else 1.0, "cost": 0.001},
                "big": {"quality": 1.0, "cost": 0.01},
            }
            if split:
                line["split"] = split
            lines.append(line)
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        return path

    train, test = write("train.jsonl", range(60), None), write("test.jsonl", range(60, 90), None)
    for extra in (["--test", str(test)], ["--test-fraction", "0.3", "--split-seed", "1"]):
        out = tmp_path / f"out{len(extra)}{extra[-1][-3:]}"
        args = ["eval", "--data", str(train), "--routers", "constant,knn", "--out", str(out)]
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        expected = 30 if extra[0] == "--test" else None
        assert report["n_test"] == expected or 10 <= report["n_test"] <= 26, report["n_test"]
    bad = runner.invoke(app, ["eval", "--data", str(train), "--test-fraction", "1.5"])
    assert bad.exit_code == 2 and "test fraction" in bad.output
