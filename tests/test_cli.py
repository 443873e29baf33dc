"""The routeiq CLI: train, route, eval, and clear errors (exit 2, no traceback)."""

from __future__ import annotations

import csv
import json

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
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
