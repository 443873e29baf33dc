"""Prompt text, prices and benchmark loaders (real data slices and malformed files)."""

from __future__ import annotations

import csv
import importlib.util
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from routeiq.data import (
    DEFAULT_OUTPUT_TOKENS,
    DataError,
    PriceTable,
    PromptError,
    estimate_tokens,
    litellm_price,
    load_dataset,
    load_llmrouter,
    load_routerbench,
    prompt_text,
)

# --- prompt_text ---------------------------------------------------------------------------


def test_prompt_text_string_is_returned_unchanged() -> None:
    assert prompt_text("  What is 2+2?\n") == "  What is 2+2?\n"


def test_prompt_text_uses_last_user_turn_and_text_parts_only() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "answer"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,xx"}},
                {"type": "text", "text": "this image"},
            ],
        },
        {"role": "assistant", "content": None},
    ]
    assert prompt_text(messages) == "describe\nthis image"


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("", "empty"),
        (" \n\t", "empty"),
        ([], "empty message list"),
        ([{"role": "system", "content": "x"}, {"role": "assistant", "content": "y"}], "no user"),
        ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], "no text"),
        ([{"role": "user", "content": [{"type": "text", "text": "  "}]}], "empty"),
        ([{"role": "user", "content": [{"type": "text", "text": None}]}], "no string 'text'"),
        ([{"role": "user", "content": 42}], "content must be"),
        ([{"role": "user", "content": None}], "content must be"),
        ([{"role": "user", "content": ["raw string part"]}], "part 0 must be a dict"),
        (["just a string"], "message 0 must be a dict"),
        (None, "got NoneType"),
        (42, "got int"),
        ({"role": "user", "content": "hi"}, "got dict"),
    ],
)
def test_prompt_text_rejects_unroutable_prompts(prompt: object, message: str) -> None:
    with pytest.raises(PromptError, match=message) as info:
        prompt_text(prompt)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_prompt_text_handles_a_megabyte_prompt() -> None:
    big = "word " * 200_000 + "?"
    assert prompt_text(big) is big
    parts = [{"type": "text", "text": "x" * 1000} for _ in range(1000)]
    text = prompt_text([{"role": "user", "content": parts}])
    assert len(text) == 1000 * 1000 + 999


# --- prices ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "tokens"), [("", 1), ("a", 1), ("abcd", 1), ("abcde", 2)])
def test_estimate_tokens_is_ceil_chars_over_four(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_price_table_from_llmrouter_json(llmrouter_files: tuple[Path, Path]) -> None:
    table = PriceTable.from_llmrouter_json(llmrouter_files[1])
    assert table.lookup("qwen2.5-7b-instruct") == pytest.approx((0.2e-6, 0.2e-6))
    assert table.lookup("no-such-model") is None
    assert table.cost("gemma-2-9b-it", 1000, 500) == pytest.approx(1500 * 0.1e-6)
    assert table.cost("no-such-model", 1, 1) is None
    with pytest.raises(TypeError):
        table.prices["new"] = (0.0, 0.0)  # type: ignore[index]


def test_price_table_rejects_negative_prices() -> None:
    with pytest.raises(DataError, match="'m'"):
        PriceTable({"m": (-1.0, 0.0)})


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ('{"m": {"input_price": 1.0}}', None, "m.output_price"),
        ('{"m": {"input_price": "cheap", "output_price": 1}}', None, "m.input_price"),
        ('{"m": {"input_price": -1, "output_price": 1}}', None, "m.input_price"),
        ('{\n"m": {"input_price": 1,\n}', 3, None),
        ("[1, 2]", None, None),
    ],
)
def test_price_json_errors_name_the_place(
    tmp_path: Path, text: str, line: int | None, field: str | None
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        PriceTable.from_llmrouter_json(path)
    assert (info.value.source, info.value.line, info.value.field) == (str(path), line, field)


def test_price_json_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        PriceTable.from_llmrouter_json(tmp_path / "absent.json")


@pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="litellm not installed")
def test_litellm_price_handles_provider_prefixes() -> None:
    price = litellm_price("gpt-4o")
    assert price is not None and price[0] > 0 and price[1] > price[0]
    assert litellm_price("openai/gpt-4o") == price
    assert litellm_price("nobody/no-such-model-xyz") is None
    assert PriceTable(litellm_fallback=True).lookup("openai/gpt-4o") == price
    assert PriceTable().lookup("gpt-4o") is None


# --- real benchmarks -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def routerbench(routerbench_csv: Path):
    return load_routerbench(routerbench_csv)


@pytest.fixture(scope="module")
def llmrouter(llmrouter_files: tuple[Path, Path]):
    return load_llmrouter(*llmrouter_files)


def test_routerbench_shape_and_skipped_rows(routerbench_csv: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="routeiq.data.loaders"):
        ds = load_routerbench(routerbench_csv)
    # 14 sample ids are split over two rows each with complementary empty labels: 28 rows go.
    assert "skipped 28 rows with empty labels" in caplog.text
    assert len(ds) == 3178 - 28
    assert len(ds.models) == 11 and "gpt-4-1106-preview" in ds.models
    assert set(ds.tasks) == {"arc-challenge", "winogrande", "mbpp"}
    assert len(set(ds.ids)) == len(ds) and ds.ids[0] == "arc-challenge.test.1"
    assert not np.isnan(ds.quality).any() and not np.isnan(ds.cost).any()
    assert set(np.unique(ds.quality)) == {0.0, 1.0}
    # The routing text is the last element of the list literal, not the literal itself.
    assert not ds.prompts[0].startswith("[") and ds.prompts[0].rstrip().endswith("Answer:")


def test_routerbench_reproduces_reference_numbers(routerbench) -> None:
    test = routerbench.split("test")
    assert len(test) == 945 and len(routerbench.split("train")) == 2225 - 20
    j = test.models.index("gpt-4-1106-preview")
    # README: 0.874 at $0.00503 over all 953 test rows (empty labels counted as wrong);
    # with the 8 incomplete rows dropped it is 831/945.
    assert test.quality[:, j].mean() == pytest.approx(831 / 945)
    assert test.cost[:, j].mean() == pytest.approx(0.005003, rel=1e-3)
    cheapest = test.models.index("mistralai/mistral-7b-chat")
    assert test.cost[:, cheapest].mean() == pytest.approx(0.000082, rel=0.05)
    assert test.quality.max(axis=1).mean() == pytest.approx(0.974, abs=0.005)


def test_llmrouter_shape_costs_and_references(llmrouter, llmrouter_files) -> None:
    ds = llmrouter
    assert len(ds) == 6108 and len(ds.models) == 9 and len(set(ds.tasks)) == 14
    table = PriceTable.from_llmrouter_json(llmrouter_files[1])
    for i in (0, 100, 6000):
        for j, m in enumerate(ds.models):
            tokens = math.ceil(len(ds.prompts[i]) / 4) + DEFAULT_OUTPUT_TOKENS
            assert ds.cost[i, j] == pytest.approx(tokens * table.lookup(m)[0])
    test = ds.split("test")
    assert len(test) == 500
    assert test.quality.mean(axis=0).max() == pytest.approx(0.563, abs=5e-4)
    assert test.quality.max(axis=1).mean() == pytest.approx(0.743, abs=5e-4)


def test_llmrouter_output_tokens_parameter(llmrouter_files) -> None:
    short = load_llmrouter(*llmrouter_files, output_tokens=0)
    full = load_llmrouter(*llmrouter_files)
    assert (short.cost < full.cost).all()


def test_llmrouter_test_split_after_dedup_against_train(llmrouter) -> None:
    test = llmrouter.split("test")
    unseen = test.without_prompts_in(llmrouter.split("train"))
    assert len(unseen) == 381


def test_load_dataset_detects_formats(routerbench_csv, llmrouter_files, routerbench) -> None:
    assert load_dataset(routerbench_csv).digest() == routerbench.digest()
    ds = load_dataset(llmrouter_files[0])  # prices default to llm_candidates.json alongside
    assert len(ds.models) == 9 and not np.isnan(ds.cost).any()


def test_load_dataset_llmrouter_needs_prices(tmp_path: Path, llmrouter_files) -> None:
    csv_copy = tmp_path / "scores.csv"
    shutil.copy(llmrouter_files[0], csv_copy)
    with pytest.raises(DataError, match="needs prices"):
        load_dataset(csv_copy)
    assert len(load_dataset(csv_copy, prices=llmrouter_files[1])) == 6108


# --- malformed input -------------------------------------------------------------------------

RB_HEADER = ["sample_id", "eval_name", "split", "prompt", "a", "b", "a|total_cost", "b|total_cost"]


def _write_csv(path: Path, rows: list[list[str]], header: list[str] = RB_HEADER) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def _rb_row(sid: str = "t.1", prompt: str = "['q1', 'q2']", a="1.0", b="0.0", ca="0.1") -> list:
    return [sid, "task", "test", prompt, a, b, ca, "0.2"]


def test_small_routerbench_file(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "rb.csv", [_rb_row(), _rb_row("t.2", "plain text", b=""), _rb_row("t.3", ca="")]
    )
    ds = load_dataset(path)
    assert ds.prompts == ["q2", "q2"] and ds.ids == ["t.1", "t.3"] and ds.models == ["a", "b"]
    assert np.isnan(ds.cost[1, 0]) and ds.cost[1, 1] == 0.2


@pytest.mark.parametrize(
    ("row", "line", "field", "message"),
    [
        (_rb_row(a="abc"), 3, "a", "expected a number in"),
        (_rb_row(b="1.5"), 3, "b", "in \\[0, 1\\]"),
        (_rb_row(b="nan"), 3, "b", "in \\[0, 1\\]"),
        (_rb_row(ca="-0.01"), 3, "a|total_cost", ">= 0"),
        (_rb_row(prompt="['unterminated"), 3, "prompt", "list literal"),
        (_rb_row(prompt="[1, 2]"), 3, "prompt", "list literal"),
        (_rb_row(prompt="['  ']"), 3, "prompt", "empty"),
        (_rb_row(sid="t.0"), 3, "id", "duplicate id"),
        (_rb_row()[:5], 3, None, "expected 8 fields, got 5"),
    ],
)
def test_routerbench_errors_name_file_line_field(
    tmp_path: Path, row: list, line: int, field: str | None, message: str
) -> None:
    path = _write_csv(tmp_path / "rb.csv", [_rb_row("t.0"), row])
    with pytest.raises(DataError, match=message) as info:
        load_routerbench(path)
    assert (info.value.source, info.value.line, info.value.field) == (str(path), line, field)
    assert str(path) in str(info.value) and f"line {line}" in str(info.value)


@pytest.mark.parametrize(
    ("header", "field"),
    [
        (["sample_id", "prompt", "b", "a|total_cost", "b|total_cost"], "a"),
        (["sample_id", "a", "a|total_cost"], "prompt"),
    ],
)
def test_routerbench_missing_columns(tmp_path: Path, header: list[str], field: str) -> None:
    path = _write_csv(tmp_path / "rb.csv", [["x"] * len(header)], header)
    with pytest.raises(DataError, match="missing column") as info:
        load_routerbench(path)
    assert info.value.field == field and info.value.line == 1


def test_llmrouter_errors(tmp_path: Path) -> None:
    prices = tmp_path / "llm_candidates.json"
    prices.write_text('{"a": {"input_price": 1, "output_price": 2}}')
    header = ["split", "query", "task_name", "score:a", "score:b"]
    path = _write_csv(tmp_path / "s.csv", [["test", "q", "t", "0.5", "0.7"]], header)
    with pytest.raises(DataError, match="no price for model 'b'") as info:
        load_dataset(path)
    assert info.value.source == str(prices) and info.value.field == "b"

    header = ["split", "query", "task_name", "score:a"]
    path = _write_csv(
        tmp_path / "s.csv", [["test", "q", "t", "0.5"], ["test", "q", "t", "2"]], header
    )
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert (info.value.line, info.value.field) == (3, "score:a")

    path = _write_csv(tmp_path / "s.csv", [["test", "t", "0.5"]], ["split", "task_name", "score:a"])
    with pytest.raises(DataError, match="missing column") as info:
        load_dataset(path)
    assert info.value.field == "query"

    ok = _write_csv(tmp_path / "s.csv", [["test", "q?", "t", "0.5"]], header)
    ds = load_dataset(ok)
    assert ds.cost[0, 0] == pytest.approx(1e-6 + DEFAULT_OUTPUT_TOKENS * 2e-6)


def test_load_dataset_rejects_unknown_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as info:
        load_dataset(tmp_path / "absent.csv")
    assert info.value.source == str(tmp_path / "absent.csv")
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match=r"unknown format '\.parquet'"):
        load_dataset(tmp_path / "data.parquet")
    with pytest.raises(DataError, match="unrecognised CSV"):
        load_dataset(_write_csv(tmp_path / "x.csv", [["1", "2"]], ["prompt", "label"]))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty file"):
        load_dataset(tmp_path / "empty.csv")
    (tmp_path / "latin.csv").write_bytes(b"prompt,a,a|total_cost\n\xe9t\xe9,1,0\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_dataset(tmp_path / "latin.csv")


def test_jsonl_missing_costs_are_estimated_from_prices(tmp_path):
    pytest.importorskip("litellm", reason="LiteLLM's price map is the price source here")
    path = tmp_path / "log.jsonl"
    path.write_text(
        '{"id": "a", "prompt": "' + "word " * 400 + '", '
        '"outcomes": {"gpt-4o": {"quality": 1.0}, "my-local-model": {"quality": 0.0}}}\n'
        '{"id": "b", "prompt": "hi", "outcomes": {"gpt-4o": {"quality": 0.0, "cost": 0.5}}}\n'
    )
    data = load_dataset(path)
    j = data.models.index("gpt-4o")
    assert data.cost[1, j] == 0.5  # a logged cost is kept as is
    assert 0 < data.cost[0, j] < 0.1  # estimated from LiteLLM's price map and token counts
    assert np.isnan(data.cost[0, data.models.index("my-local-model")])  # no price: unknown
