"""``routeiq eval``: train routers on a train split, evaluate them on the test split, and
print the table (AIQ, APGR/CPT, the calibrated target, the difference to the task lookup)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table

from routeiq.cli.common import (
    DataOpt,
    FeatOpt,
    PricesOpt,
    _load,
    console,
    default_dataset,
    user_errors,
)
from routeiq.features.context import check_fields

ContextOpt = Annotated[
    str,
    typer.Option(
        "--context",
        help="Comma-separated request-context fields to also evaluate with, e.g. 'task': each "
        "router gets a row reading them and one trained on them but tested on text alone.",
    ),
]


def evaluate_command(
    data: DataOpt = None,
    prices: PricesOpt = None,
    featurizer: FeatOpt = "lexical",
    routers: Annotated[
        str, typer.Option("--routers", help="Comma-separated quality models, or 'all'.")
    ] = "all",
    target: Annotated[
        str, typer.Option("--target", help="Calibrated target also reported per router.")
    ] = "quality>=1.0",
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder for report.json and frontier.png.")
    ] = None,
    test: Annotated[
        str | None,
        typer.Option("--test", help="Test on this file (train on all of --data)."),
    ] = None,
    test_fraction: Annotated[
        float,
        typer.Option(help="Without a split column: the share of prompts held out for test."),
    ] = 0.2,
    split_seed: Annotated[
        int, typer.Option(help="Without a split column: seed of the random split.")
    ] = 0,
    context: ContextOpt = "",
) -> None:
    """Train every router on the train split, evaluate on the (deduplicated) test split.

    The data's ``split`` column says which rows are which; ``--test FILE`` tests on another
    file instead; data without splits is split at random (``--test-fraction``, ``--split-seed``).
    """
    from routeiq.evaluation.runner import ALL_ROUTERS, run_evaluation

    with user_errors():
        dataset = _load(data, prices)
        if test is not None:
            dataset = dataset.joined(_load(test, prices))
        elif not dataset.splits:
            dataset = dataset.with_random_split(test_fraction, split_seed)
        names = ALL_ROUTERS if routers == "all" else [r.strip() for r in routers.split(",")]
        out = out or Path("results") / Path(data or default_dataset()).stem
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("training routers", total=len(names))

            def step(name: str) -> None:
                progress.update(task, description=f"training {name}", completed=names.index(name))

            report = run_evaluation(
                dataset,
                featurizer=featurizer,
                routers=names,
                target=target,
                out_dir=out,
                on_step=step,
                context=check_fields(context),
            )
    _print_report(report)
    console.print(f"wrote [bold]{out / 'report.json'}[/] and [bold]{out / 'frontier.png'}[/]")


def _print_report(report: dict[str, Any]) -> None:
    table = Table(title=report["title"])
    for col in (
        "router",
        "AIQ",
        "log-AIQ",
        "best quality",
        "its $/query",
        "$ to match best",
        "APGR",
        "CPT50",
        "CPT80",
        "target quality",
        "target $ frac",
        "vs task lookup",
        "fit s",
    ):
        table.add_column(col, justify="right" if col != "router" else "left")
    fmt: Callable[[Any, str], str] = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for row in report["rows"]:
        table.add_row(
            row["router"],
            fmt(row.get("aiq"), ".4f"),
            fmt(row.get("log_aiq"), ".4f"),
            fmt(row.get("best_quality"), ".4f"),
            fmt(row.get("best_quality_cost"), ".6f"),
            fmt(row.get("cost_to_match_best_fraction"), ".3f"),
            fmt(row.get("apgr"), ".3f"),
            fmt(row.get("cpt50"), ".3f"),
            fmt(row.get("cpt80"), ".3f"),
            fmt(row.get("target_quality"), ".4f"),
            fmt(row.get("target_cost_fraction"), ".3f"),
            _interval(row.get("aiq_vs_task_lookup")),
            fmt(row.get("fit_seconds"), ".1f"),
        )
    console.print(table)
    console.print(report["note"])
    if any(row.get("aiq_vs_task_lookup") for row in report["rows"]):
        console.print("vs task lookup: AIQ difference [95% paired bootstrap interval]")


def _interval(diff: Any) -> str:
    if not diff:
        return "-"
    point, lo, hi = diff
    return f"{point:+.4f} [{lo:+.4f}, {hi:+.4f}]"
