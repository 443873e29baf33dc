"""What every ``routeiq`` command shares: consoles, error handling, data and log readers."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

# Wide enough for the evaluation table when output is piped (rich assumes 80 columns then).
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

ROUTERBENCH = "routerbench/routerbench_0shot_arc_mbpp_winogrande.csv"


def default_dataset() -> Path:
    """The shared RouterBench subset: ``$ROUTEIQ_DATASETS`` or ``../shared/datasets``."""
    return Path(os.environ.get("ROUTEIQ_DATASETS", "../shared/datasets")) / ROUTERBENCH


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected failures (bad files, bad prompts, bad artifacts) into one clear line."""
    from routeiq.artifacts import ArtifactError
    from routeiq.data.dataset import DataError
    from routeiq.data.prompts import PromptError

    try:
        yield
    except (
        DataError,
        PromptError,
        ArtifactError,
        ValueError,
        FileNotFoundError,
        RuntimeError,
    ) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None


DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Dataset: RouterBench CSV, LLMRouter CSV, RouteIQ JSONL records, or a decision-log "
        "stream redis://HOST:PORT/DB?stream=NAME. Default: the shared RouterBench subset.",
    ),
]
PricesOpt = Annotated[
    Path | None,
    typer.Option(
        "--prices",
        help="LLMRouter-style price JSON: prices LLMRouter CSVs (default: "
        "llm_candidates.json beside it) and JSONL outcomes logged without a cost.",
    ),
]
LogOpt = Annotated[
    str,
    typer.Option(
        "--log",
        help="Decision log: JSONL records (with quality feedback merged in) or "
        "redis://HOST:PORT/DB?stream=NAME.",
    ),
]
FeatOpt = Annotated[str, typer.Option("--featurizer", help="lexical | minilm")]


def _is_stream(source: str | None) -> bool:
    return source is not None and source.startswith(("redis://", "rediss://"))


def read_log(log: str) -> list[Any]:
    """Decision-log records from a JSONL file or a ``redis://`` stream."""
    if _is_stream(log):
        from routeiq.integrations.redis_stream import read_stream

        return list(read_stream(log))
    from routeiq.data.records import read_records

    return read_records(Path(log))


def _load(data: str | None, prices: Path | None) -> Any:
    from routeiq.data.loaders import load_dataset

    if _is_stream(data):
        from routeiq.data.records import records_to_dataset
        from routeiq.integrations.redis_stream import read_stream

        return records_to_dataset(read_stream(data))  # type: ignore[arg-type]
    return load_dataset(Path(data) if data else default_dataset(), prices=prices)
