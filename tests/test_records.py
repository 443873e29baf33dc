"""The JSONL record format: parsing, merging by id, writing, and dataset round trips."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from routeiq.data import (
    DataError,
    RouteRecord,
    RoutingDataset,
    dataset_to_records,
    load_dataset,
    load_llmrouter,
    load_records,
    load_routerbench,
    read_records,
    write_records,
)

REQUEST = {
    "id": "req-1",
    "prompt": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "What is 17 * 23?"},
    ],
    "task": "math",
    "outcomes": {"mini": {"cost": 0.0001, "latency_ms": 410.0, "status": "ok"}},
    "decision": {
        "candidates": [
            {"model": "mini", "deployment": "mini-eu", "predicted_quality": 0.8, "cost": 0.0001},
            {"model": "big", "predicted_quality": 0.9, "cost": 0.002, "probability": 0.1},
        ],
        "chosen": "mini",
        "propensity": 0.9,
        "lambda": 50.0,
        "router": "knn",
    },
}


def _jsonl(path: Path, *lines: dict | str) -> Path:
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def test_feedback_merges_into_request(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "log.jsonl",
        REQUEST,
        {"id": "req-2", "prompt": "hello", "outcomes": {"big": {"quality": 0.5}}},
        "",
        {"id": "req-1", "outcomes": {"mini": {"quality": 1.0}, "big": {"quality": 0.0}}},
        {"id": "req-1", "outcomes": {"mini": {"quality": 0.5}}, "split": "train"},
    )
    records = read_records(path)
    assert [r.id for r in records] == ["req-1", "req-2"]
    first = records[0]
    mini = first.outcomes["mini"]
    # Feedback adds quality and the later line overrides it; earlier fields stay.
    assert (mini.quality, mini.cost, mini.latency_ms, mini.status) == (0.5, 0.0001, 410.0, "ok")
    assert first.split == "train" and first.task == "math"
    assert first.decision is not None
    assert first.decision.propensity == 0.9 and first.decision.lam == 50.0
    assert first.decision.candidates[0].deployment == "mini-eu"

    ds = load_records(path)
    assert ds.models == ["mini", "big"]
    assert ds.prompts == ["What is 17 * 23?", "hello"]
    np.testing.assert_array_equal(ds.quality, [[0.5, 0.0], [np.nan, 0.5]])
    np.testing.assert_array_equal(ds.cost, [[0.0001, np.nan], [np.nan, np.nan]])
    assert ds.tasks == ["math", ""] and ds.splits == ["train", ""]


def test_unlabelled_records_stay_and_feedback_without_request_is_skipped(
    tmp_path: Path, caplog
) -> None:
    path = _jsonl(
        tmp_path / "log.jsonl",
        {"id": "a", "prompt": "labelled", "outcomes": {"m": {"quality": 1.0}}},
        {"id": "b", "prompt": "no feedback yet", "outcomes": {"m": {"cost": 0.01}}},
        {"id": "orphan", "outcomes": {"m": {"quality": 1.0}}},
    )
    with caplog.at_level(logging.WARNING, logger="routeiq.data.records"):
        ds = load_dataset(path)
    assert "skipped 1 records without a prompt" in caplog.text
    assert ds.ids == ["a", "b"]
    assert ds.labelled().ids == ["a"]


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('{"id": "x", "prompt": "p"', None, "invalid JSON"),
        ("[1, 2]", None, "should be an object"),
        ('{"prompt": "p"}', "id", "Field required"),
        ('{"id": ""}', "id", "at least 1 character"),
        ('{"id": "x", "outcomes": {"m": {"quality": 1.5}}}', "outcomes.m.quality", "less than"),
        ('{"id": "x", "outcomes": {"m": {"quality": "good"}}}', "outcomes.m.quality", "number"),
        ('{"id": "x", "outcomes": {"m": {"cost": -1}}}', "outcomes.m.cost", "greater than"),
        ('{"id": "x", "outcomes": {"m": {"qualty": 1}}}', "outcomes.m.qualty", "Extra inputs"),
        (
            '{"id": "x", "decision": {"chosen": "m", "propensity": 0}}',
            "decision.propensity",
            "greater than 0",
        ),
        ('{"id": "x", "prompt": "  "}', "prompt", "empty"),
        ('{"id": "x", "prompt": [{"role": "system", "content": "s"}]}', "prompt", "no user"),
    ],
)
def test_malformed_lines_name_file_line_field(
    tmp_path: Path, line: str, field: str | None, message: str
) -> None:
    path = _jsonl(tmp_path / "bad.jsonl", {"id": "ok", "prompt": "fine"}, line)
    with pytest.raises(DataError, match=message) as info:
        read_records(path)
    assert (info.value.source, info.value.line, info.value.field) == (str(path), 2, field)


def test_missing_record_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_records(tmp_path / "absent.jsonl")


def test_write_records_appends_one_line_per_record(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    assert write_records(path, [RouteRecord.model_validate(REQUEST)]) == 1
    assert write_records(path, [{"id": "req-1", "outcomes": {"mini": {"quality": 1.0}}}]) == 1
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["decision"]["lambda"] == 50.0  # written by alias
    assert "null" not in lines[1]  # unset fields are left out, so merging keeps earlier ones
    (record,) = read_records(path)
    assert record.outcomes["mini"].quality == 1.0 and record.outcomes["mini"].cost == 0.0001
    with pytest.raises(DataError, match="propensity"):
        write_records(path, [{"id": "z", "decision": {"chosen": "m", "propensity": 2}}])
    assert len(path.read_text().splitlines()) == 2  # nothing written for an invalid batch


def test_concurrent_writers_do_not_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"

    def writer(w: int) -> None:
        for k in range(50):
            record = {"id": f"{w}-{k}", "prompt": f"{w} " * 2000, "outcomes": {"m": {"cost": k}}}
            write_records(path, [record])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(writer, range(4)))
    records = read_records(path)
    assert len(records) == 200
    assert all(r.prompt == f"{r.id.split('-')[0]} " * 2000 for r in records)


def _assert_same(a: RoutingDataset, b: RoutingDataset) -> None:
    assert (a.models, a.prompts, a.ids, a.tasks, a.splits) == (
        b.models,
        b.prompts,
        b.ids,
        b.tasks,
        b.splits,
    )
    np.testing.assert_array_equal(a.quality, b.quality)
    np.testing.assert_array_equal(a.cost, b.cost)
    assert a.digest() == b.digest()


def test_round_trip_synthetic_with_gaps(tmp_path: Path) -> None:
    ds = RoutingDataset(
        prompts=["p0", "p1", "p2"],
        models=["a", "b"],
        quality=[[1.0, np.nan], [np.nan, np.nan], [0.25, 0.0]],
        cost=[[0.1, 0.2], [np.nan, np.nan], [np.nan, 1e-7]],
        ids=["x", "y", "z"],
        tasks=["t", "t", "u"],
        splits=["train", "test", "test"],
    )
    records = dataset_to_records(ds)
    assert records[1].outcomes == {}
    write_records(tmp_path / "ds.jsonl", records)
    _assert_same(load_records(tmp_path / "ds.jsonl"), ds)


def test_round_trip_benchmarks(tmp_path: Path, routerbench_csv, llmrouter_files) -> None:
    for k, ds in enumerate([load_routerbench(routerbench_csv), load_llmrouter(*llmrouter_files)]):
        part = ds.subset(np.arange(0, len(ds), 7))
        path = tmp_path / f"bench{k}.jsonl"
        write_records(path, dataset_to_records(part))
        _assert_same(load_records(path), part)


def test_scores_of_several_metrics_merge_line_by_line():
    from routeiq.data.records import RouteRecord, merge_records

    lines = [
        {"id": "r", "prompt": "hi", "outcomes": {"m": {"status": "success"}}},
        {"id": "r", "outcomes": {"m": {"scores": {"helpfulness": 0.5}}}},
        {"id": "r", "outcomes": {"m": {"scores": {"tone": 1.0}, "quality": 0.0}}},
    ]
    (merged,) = merge_records(RouteRecord.model_validate(x) for x in lines)
    outcome = merged.outcomes["m"]
    assert outcome.scores == {"helpfulness": 0.5, "tone": 1.0}
    assert (outcome.quality, outcome.status) == (0.0, "success")
