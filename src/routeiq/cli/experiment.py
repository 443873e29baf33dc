"""``routeiq experiment``: A/B reports from the decision log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from routeiq.cli.common import LogOpt, console, read_log, user_errors

experiment_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@experiment_app.callback()
def experiments() -> None:
    """A/B experiments between routing variants."""
    # A callback keeps this a command group with one command (``experiment report``), both
    # on its own and under ``routeiq``.


@experiment_app.command()
def report(
    log: LogOpt,
    experiment: Annotated[
        str | None,
        typer.Option("--experiment", help="Experiment to report (needed if the log has several)."),
    ] = None,
    group: Annotated[str | None, typer.Option("--group", help="Only this model group.")] = None,
    control: Annotated[
        str, typer.Option("--control", help="Name of the control variant.")
    ] = "control",
    alpha: Annotated[
        float, typer.Option("--alpha", min=1e-6, max=0.5, help="False-positive rate per test.")
    ] = 0.05,
    look_every: Annotated[
        int, typer.Option("--look-every", min=1, help="Requests between sequential looks.")
    ] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Write the differences to control per look as a PNG."),
    ] = None,
) -> None:
    """Per-variant metrics and always-valid differences to control (mSPRT)."""
    from routeiq.experiments.report import analyze

    with user_errors():
        records = read_log(log)
        result = analyze(
            records,
            experiment=experiment,
            control=control,
            group=group,
            alpha=alpha,
            look_every=look_every,
        )
        if plot is not None:
            from routeiq.experiments.plot import plot_report

            plot_report(result, plot)
    if as_json:
        out = result.to_dict()
        if plot is not None:
            out["plot"] = str(plot)
        console.print_json(json.dumps(out))
        return
    _print(result)
    if plot is not None:
        console.print(f"wrote [bold]{plot}[/]")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


_SPECS = {"error_rate": ".2%", "cost": ".3g", "latency_ms": ".4g", "quality": ".4f"}


def _print(result: Any) -> None:
    name = result.experiment or "experiment"
    where = f" in group {result.group}" if result.group else ""
    table = Table(title=f"{name}{where}: {result.records} decisions")
    for col in (
        "variant",
        "requests",
        "error rate",
        "mean cost $",
        "latency p50 ms",
        "p95 ms",
        "quality",
        "coverage",
    ):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for v in result.variants.values():
        table.add_row(
            v.name + (" (control)" if v.name == result.control else ""),
            str(v.requests),
            _fmt(v.error_rate, ".2%"),
            _fmt(v.mean_cost, ".3g"),
            _fmt(v.latency_p50_ms, ".0f"),
            _fmt(v.latency_p95_ms, ".0f"),
            _fmt(v.mean_quality, ".4f"),
            _fmt(v.quality_coverage, ".0%"),
        )
    console.print(table)

    diffs = Table(
        title=f"difference to {result.control}, {1 - result.alpha:.0%} always-valid confidence "
        f"sequence (mSPRT, {result.looks} looks)"
    )
    for col in ("variant", "metric", "difference", "confidence sequence", "p-value", "verdict"):
        diffs.add_column(col, justify="right" if col in ("difference", "p-value") else "left")
    from routeiq.experiments.report import BETTER, METRICS, WORSE

    colour = {BETTER: "green", WORSE: "red"}
    for variant, by_metric in result.comparisons.items():
        for metric in METRICS:
            c = by_metric[metric.name]
            spec = _SPECS[metric.name]
            verdict = c.verdict
            if verdict in colour:
                verdict = f"[{colour[verdict]}]{verdict}[/]"
            diffs.add_row(
                variant,
                metric.label,
                _fmt(c.difference, "+" + spec),
                f"[{_fmt(c.low, spec)}, {_fmt(c.high, spec)}]",
                f"{c.p_value:.3g}",
                verdict,
            )
    console.print(diffs)
    notes = [f"{result.without_variant} records without a variant ignored"]
    if result.filtered:
        notes.append(f"{result.filtered} of other experiments or groups")
    console.print("; ".join(notes))
