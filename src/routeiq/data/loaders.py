"""Load routing datasets: RouterBench and LLMRouter CSVs, RouteIQ JSONL records.

Rows with an empty quality label are skipped and counted in a logged warning. Malformed input
raises :class:`DataError` naming the file, line and field.
"""

from __future__ import annotations

import ast
import csv
import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from routeiq.data._io import open_text
from routeiq.data.dataset import DataError, RoutingDataset
from routeiq.data.prices import PriceTable, estimate_tokens
from routeiq.data.prompts import PromptError, prompt_text
from routeiq.data.records import load_records

log = logging.getLogger(__name__)

COST_SUFFIX = "|total_cost"
SCORE_PREFIX = "score:"
DEFAULT_OUTPUT_TOKENS = 256


def load_routerbench(path: str | Path) -> RoutingDataset:
    """RouterBench CSV: column ``M`` is model M's 0/1 correctness, ``M|total_cost`` its USD cost.

    ``prompt`` holds a Python list literal of user turns (the last one is routed on) or plain
    text; ``sample_id``, ``eval_name`` and ``split`` become ids, tasks and splits when present.
    """
    source = str(path)
    header, rows = _read_csv(path)
    col = {name: k for k, name in enumerate(header)}
    models = [h.removesuffix(COST_SUFFIX) for h in header if h.endswith(COST_SUFFIX)]
    if not models:
        raise DataError(f"no '<model>{COST_SUFFIX}' columns", source=source, line=1)
    _require(col, ["prompt", *models], source)
    data = _Rows(source)
    for line, row in rows:
        labels = [_number(row[col[m]], source, line, m, upper=1.0) for m in models]
        costs = [_number(row[col[m + COST_SUFFIX]], source, line, m + COST_SUFFIX) for m in models]
        text = _routerbench_prompt(row[col["prompt"]], source, line)
        ident = row[col["sample_id"]] if "sample_id" in col else f"line{line}"
        if None in labels:
            data.skipped.append(ident)
            continue
        data.add(
            line, ident, text, labels, costs, _opt(row, col, "eval_name"), _opt(row, col, "split")
        )
    return data.dataset(models)


def load_llmrouter(
    csv_path: str | Path,
    prices: str | Path | PriceTable,
    *,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
) -> RoutingDataset:
    """LLMRouter CSV (``query``, ``task_name``, ``split``, ``score:<model>`` in [0, 1]).

    The CSV has no cost, so it is estimated: ``estimate_tokens(query)`` input tokens plus a
    fixed ``output_tokens`` per query (default 256: a short chain-of-thought answer; the tasks
    mix one-letter multiple choice with maths and code), priced by ``prices`` (a PriceTable or
    the path of LLMRouter's ``llm_candidates.json``). Every model must have a price.
    """
    if output_tokens < 0:
        raise ValueError(f"output_tokens must be >= 0, got {output_tokens}")
    source = str(csv_path)
    table = prices if isinstance(prices, PriceTable) else PriceTable.from_llmrouter_json(prices)
    header, rows = _read_csv(csv_path)
    col = {name: k for k, name in enumerate(header)}
    models = [h.removeprefix(SCORE_PREFIX) for h in header if h.startswith(SCORE_PREFIX)]
    if not models:
        raise DataError(f"no '{SCORE_PREFIX}<model>' columns", source=source, line=1)
    _require(col, ["query"], source)
    price_source = None if isinstance(prices, PriceTable) else str(prices)
    for m in models:
        if table.lookup(m) is None:
            raise DataError(f"no price for model {m!r}", source=price_source, field=m)
    data = _Rows(source)
    for line, row in rows:
        labels = [
            _number(row[col[SCORE_PREFIX + m]], source, line, SCORE_PREFIX + m, 1.0) for m in models
        ]
        text = _checked_prompt(row[col["query"]], source, line, "query")
        if None in labels:
            data.skipped.append(f"line{line}")
            continue
        n_in = estimate_tokens(text)
        costs = [table.cost(m, n_in, output_tokens) for m in models]
        ident = f"llmrouter:{line}"
        data.add(
            line, ident, text, labels, costs, _opt(row, col, "task_name"), _opt(row, col, "split")
        )
    return data.dataset(models)


def load_dataset(path: str | Path, prices: str | Path | PriceTable | None = None) -> RoutingDataset:
    """Load any supported format, chosen from the file name and CSV header.

    ``.jsonl``: RouteIQ records; an outcome without a cost is estimated from the prompt's
    tokens and the model's price (``prices``, else LiteLLM's price map; see
    :func:`estimate_missing_costs`). ``.csv`` with ``<model>|total_cost`` columns: RouterBench.
    ``.csv`` with ``score:<model>`` columns: LLMRouter, priced by ``prices`` (default:
    ``llm_candidates.json`` next to the CSV).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found", source=str(p))
    if p.suffix == ".jsonl":
        if isinstance(prices, PriceTable):
            table = prices
        elif prices is not None:
            table = PriceTable.from_llmrouter_json(prices, litellm_fallback=True)
        else:
            table = PriceTable(litellm_fallback=True)
        return estimate_missing_costs(load_records(p), table)
    if p.suffix != ".csv":
        raise DataError(f"unknown format {p.suffix!r}: expected .jsonl or .csv", source=str(p))
    header, _ = _read_csv(p, header_only=True)
    if any(h.endswith(COST_SUFFIX) for h in header):
        return load_routerbench(p)
    if any(h.startswith(SCORE_PREFIX) for h in header):
        if prices is None:
            prices = p.with_name("llm_candidates.json")
            if not prices.is_file():
                raise DataError(
                    "LLMRouter CSV needs prices: pass the llm_candidates.json path", source=str(p)
                )
        return load_llmrouter(p, prices)
    raise DataError(
        f"unrecognised CSV: expected RouterBench '<model>{COST_SUFFIX}' or LLMRouter "
        f"'{SCORE_PREFIX}<model>' columns",
        source=str(p),
        line=1,
    )


def estimate_missing_costs(
    data: RoutingDataset, prices: PriceTable, output_tokens: int = DEFAULT_OUTPUT_TOKENS
) -> RoutingDataset:
    """Fill unknown costs of observed (prompt, model) pairs from token counts and prices.

    Only pairs with an observed quality are filled (those are what training uses); a model
    with no known price keeps NaN, and the router's cost model falls back to observed costs.
    """
    cost = data.cost.copy()
    todo = np.isnan(cost) & ~np.isnan(data.quality)
    filled = False
    for j, model in enumerate(data.models):
        rows = np.flatnonzero(todo[:, j])
        if rows.size == 0 or prices.lookup(model) is None:
            continue
        for i in rows:
            cost[i, j] = prices.cost(model, estimate_tokens(data.prompts[i]), output_tokens)
        filled = True
    return replace(data, cost=cost) if filled else data


class _Rows:
    """Accumulates parsed rows and builds the dataset."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.prompts: list[str] = []
        self.quality: list[list[float]] = []
        self.cost: list[list[float]] = []
        self.ids: list[str] = []
        self.tasks: list[str] = []
        self.splits: list[str] = []
        self.skipped: list[str] = []
        self.seen: dict[str, int] = {}

    def add(
        self,
        line: int,
        ident: str,
        text: str,
        labels: list[float | None],
        costs: list[float | None],
        task: str | None,
        split: str | None,
    ) -> None:
        if ident in self.seen:
            raise DataError(
                f"duplicate id {ident!r} (first on line {self.seen[ident]})",
                source=self.source,
                line=line,
                field="id",
            )
        self.seen[ident] = line
        self.prompts.append(text)
        self.quality.append([math.nan if q is None else q for q in labels])
        self.cost.append([math.nan if c is None else c for c in costs])
        self.ids.append(ident)
        if task is not None:
            self.tasks.append(task)
        if split is not None:
            self.splits.append(split)

    def dataset(self, models: list[str]) -> RoutingDataset:
        if self.skipped:
            log.warning(
                "%s: skipped %d rows with empty labels (%s%s)",
                self.source,
                len(self.skipped),
                ", ".join(self.skipped[:5]),
                ", ..." if len(self.skipped) > 5 else "",
            )
        shape = (len(self.prompts), len(models))
        return RoutingDataset(
            prompts=self.prompts,
            models=models,
            quality=np.array(self.quality, dtype=np.float64).reshape(shape),
            cost=np.array(self.cost, dtype=np.float64).reshape(shape),
            ids=self.ids,
            tasks=self.tasks,
            splits=self.splits,
        )


def _opt(row: list[str], col: dict[str, int], name: str) -> str | None:
    return row[col[name]] if name in col else None


def _read_csv(
    path: str | Path, *, header_only: bool = False
) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(first line number, fields)`` per non-blank row; rows must match the header."""
    source = str(path)
    rows: list[tuple[int, list[str]]] = []
    with open_text(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if not header:
                raise DataError("empty file: no header", source=source, line=1)
            while not header_only:
                start = reader.line_num + 1
                row = next(reader, None)
                if row is None:
                    break
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"expected {len(header)} fields, got {len(row)}", source=source, line=start
                    )
                rows.append((start, row))
        except csv.Error as exc:
            raise DataError(f"bad CSV: {exc}", source=source, line=reader.line_num) from None
        except UnicodeDecodeError as exc:
            raise DataError(
                f"not UTF-8 after line {reader.line_num}: {exc.reason}", source=source
            ) from None
    return header, rows


def _require(col: dict[str, int], names: list[str], source: str) -> None:
    missing = [n for n in names if n not in col]
    if missing:
        raise DataError(f"missing column(s) {missing}", source=source, line=1, field=missing[0])


def _number(text: str, source: str, line: int, field: str, upper: float = math.inf) -> float | None:
    """A float in [0, upper]; None for an empty cell."""
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= upper:  # also rejects nan
        expected = f"in [0, {upper:g}]" if upper < math.inf else ">= 0"
        raise DataError(
            f"expected a number {expected}, got {text!r}", source=source, line=line, field=field
        )
    return value


def _routerbench_prompt(cell: str, source: str, line: int) -> str:
    if cell.lstrip().startswith("["):
        try:
            turns = ast.literal_eval(cell)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            turns = None
        if not (isinstance(turns, list) and turns and all(isinstance(t, str) for t in turns)):
            raise DataError(
                "expected a Python list literal of user-turn strings",
                source=source,
                line=line,
                field="prompt",
            )
        cell = turns[-1]
    return _checked_prompt(cell, source, line, "prompt")


def _checked_prompt(text: str, source: str, line: int, field: str) -> str:
    try:
        return prompt_text(text)
    except PromptError as exc:
        raise DataError(str(exc), source=source, line=line, field=field) from None
