"""``routeiq simulate``: learning curves of online routing, replayed on full-information data.

Mounted by :mod:`routeiq.cli.main` as ``app.add_typer(simulate_app, name="simulate")``; the
callback is the command, so ``routeiq simulate --data FILE ...`` runs it directly.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from routeiq.cli.common import DataOpt, FeatOpt, PricesOpt, _load, console, user_errors
from routeiq.evaluation.scenarios import (
    SCENARIOS,
    build_stream,
    check_full_information,
    costliest_task,
    plan_scenario,
    run_seed,
    starting_spend,
)

LABELS = {
    ("shift", "offline"): "offline (trained on other tasks)",
    ("shift", "online"): "online (warm from it)",
    ("budget", "offline"): "offline, fixed lambda",
    ("budget", "online"): "online, fixed lambda",
}

simulate_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _tasks_arg(value: str | None) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()] if value else []


@simulate_app.callback(invoke_without_command=True)
def simulate(
    data: DataOpt = None,
    prices: PricesOpt = None,
    requests: Annotated[
        int | None,
        typer.Option("--requests", min=1, help="Requests per run (default 5000; budget 10000)."),
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Runs (stream orders).")] = 5,
    window: Annotated[
        int | None,
        typer.Option("--window", min=1, help="Requests per point (default 500; budget 1000)."),
    ] = None,
    lam: Annotated[
        float | None, typer.Option("--lambda", help="Quality/cost knob (default 20).")
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Calibrated target instead of --lambda.")
    ] = None,
    quality_model: Annotated[
        str, typer.Option("--quality-model", help="Offline quality model.")
    ] = "ensemble",
    featurizer: FeatOpt = "lexical",
    epsilon: Annotated[
        float, typer.Option("--epsilon", min=0, max=0.5, help="Exploring share.")
    ] = 0.05,
    margin: Annotated[
        float, typer.Option("--margin", min=0, help="Explore within this utility of the best.")
    ] = 0.05,
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            help="warm: start from the offline router; cold: price prior only; shift: start "
            "from a router trained on --train-tasks, stream the others; budget: a drifting "
            "mix with a spend target.",
        ),
    ] = "warm",
    train_tasks: Annotated[
        str | None, typer.Option("--train-tasks", help="shift: comma-separated tasks to train on.")
    ] = None,
    stream_tasks: Annotated[
        str | None,
        typer.Option("--stream-tasks", help="shift: tasks to stream (default: all the others)."),
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option(
            "--budget",
            help="budget: USD per 1,000 requests (default: what --lambda spends on the "
            "starting mix).",
        ),
    ] = None,
    expensive_task: Annotated[
        str | None,
        typer.Option(
            "--expensive-task",
            help="budget: the task whose share rises 10% -> 60% (default: the costliest).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for simulate.json and simulate.png."),
    ] = None,
) -> None:
    """Replay a dataset as traffic: offline vs online routers, per window of requests."""
    from routeiq.decision.exploration import Exploration
    from routeiq.evaluation import simulate as sim
    from routeiq.evaluation.runner import build_router
    from routeiq.online.router import OnlineSettings

    with user_errors():
        if lam is not None and target is not None:
            raise ValueError("give --lambda or --target, not both")
        if scenario not in SCENARIOS:
            raise ValueError(f"--scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
        if scenario != "shift" and (train_tasks or stream_tasks):
            raise ValueError("--train-tasks and --stream-tasks apply to --scenario shift only")
        if scenario != "budget" and (budget is not None or expensive_task):
            raise ValueError("--budget and --expensive-task apply to --scenario budget only")
        n_requests = requests or (10_000 if scenario == "budget" else 5000)
        width = window or (1000 if scenario == "budget" else 500)
        if budget is not None and not budget > 0:
            raise ValueError(f"--budget must be > 0 USD per 1,000 requests, got {budget}")
        if lam is None and target is None:
            lam = 20.0  # where routing matters on both shared datasets (the README tables)
        if n_requests < width:
            raise ValueError(f"--requests ({n_requests}) must be at least --window ({width})")
        explore = Exploration(mode="epsilon", epsilon=epsilon, margin=margin)
        settings = OnlineSettings(enabled=True)
        # Validate names before the (slow) data loading and training.
        build_router(featurizer, quality_model, lam=lam or 0.0, target=target)
        dataset = _load(data, prices).labelled()
        check_full_information(dataset)
        plan = plan_scenario(
            dataset,
            scenario,
            train_tasks=_tasks_arg(train_tasks),
            stream_tasks=_tasks_arg(stream_tasks),
            expensive_task=expensive_task,
        )
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            steps = len(plan.trainings) + seeds
            bar = progress.add_task("preparing", total=steps)

            def step(text: str) -> None:
                progress.update(bar, description=text)

            def done() -> None:
                progress.advance(bar)

            stream, lam_used = build_stream(
                dataset,
                plan,
                lambda: build_router(featurizer, quality_model, lam=lam or 0.0, target=target),
                on_step=step,
                on_done=done,
            )
            budget_plan = None
            if scenario == "budget":
                if plan.expensive_task is None:
                    plan = replace(plan, expensive_task=costliest_task(stream, lam_used))
                assert plan.expensive_task is not None
                target_spend = budget or starting_spend(stream, lam_used, plan.expensive_task)
                budget_plan = sim.Budget(target=target_spend, lam=lam_used)
            runs = []
            for seed in range(seeds):
                step(f"simulating {scenario}: seed {seed + 1}/{seeds}, {n_requests} requests")
                runs.append(
                    run_seed(
                        stream,
                        scenario,
                        seed,
                        lam=lam_used,
                        requests=n_requests,
                        window=width,
                        exploration=explore,
                        online=settings,
                        budget=budget_plan,
                        expensive_task=plan.expensive_task,
                    )
                )
                done()
        curves = sim.summarize(runs)
        summary = sim.scenario_summary(scenario, curves, runs, width, budget_plan)
        config: dict[str, Any] = {
            "data": str(data) if data else "default",
            "rows": len(dataset),
            "streamed_rows": int(stream.quality.shape[0]),
            "models": list(stream.models),
            "scenario": scenario,
            "requests": n_requests,
            "window": width,
            "seeds": seeds,
            "lambda": lam_used,
            "target": target,
            "quality_model": quality_model,
            "featurizer": featurizer,
            "exploration": explore.model_dump(),
            "online": settings.model_dump(),
            **plan.describe(),
        }
        if budget_plan is not None:
            config["budget_per_1000"] = budget_plan.target
        report = {"config": config, "summary": summary, "curves": curves}
        out_dir = out or Path("results") / f"simulate-{scenario}"
        write_report(out_dir, report)
    _print(report)
    console.print(
        f"wrote [bold]{out_dir / 'simulate.json'}[/] and [bold]{out_dir / 'simulate.png'}[/]"
    )


def write_report(out_dir: Path, report: dict[str, Any]) -> None:
    """``simulate.json`` (strict JSON) and ``simulate.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".simulate.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(_finite(report), indent=1, allow_nan=False, default=_jsonable))
    os.replace(tmp, out_dir / "simulate.json")
    plot_curves(report, out_dir / "simulate.png")


def _finite(value: Any) -> Any:
    """NaN/inf -> None (strict JSON): an undefined ratio, e.g. no gain to recover."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-able: {value!r}")


def plot_curves(report: dict[str, Any], path: Path) -> None:
    """Mean reward per window per policy with a +-1 sd band (spend too for budget runs)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    from matplotlib.figure import Figure

    cfg, curves = report["config"], report["curves"]
    panels = [("reward", f"mean reward (quality - {cfg['lambda']:.3g} x cost)")]
    if cfg["scenario"] == "budget":
        panels = [("cost", "spend per 1,000 requests (USD)"), ("quality", "mean quality")]
    fig = Figure(figsize=(7.5 * len(panels), 4.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    width = cfg["window"]
    for ax, (metric, label) in zip(axes, panels, strict=True):
        scale = 1000.0 if metric == "cost" else 1.0
        for name, policy in curves.items():
            if name == "oracle" or (name == "best-fixed" and cfg["scenario"] == "budget"):
                continue  # far off the rest: they would flatten every other curve
            mean = np.asarray(policy[metric]["mean"]) * scale
            sd = np.asarray(policy[metric]["sd"]) * scale
            x = (np.arange(mean.size) + 1) * width
            ax.plot(x, mean, marker="o", ms=3, label=LABELS.get((cfg["scenario"], name), name))
            ax.fill_between(x, mean - sd, mean + sd, alpha=0.15)
        if metric == "cost" and cfg.get("budget_per_1000"):
            b = cfg["budget_per_1000"]
            ax.axhline(b, color="k", lw=0.8, ls="--", label="budget")
            ax.axhspan(0.95 * b, 1.05 * b, color="k", alpha=0.06)
        ax.set_xlabel("requests")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"routeiq simulate --scenario {cfg['scenario']}: {cfg['quality_model']}, "
        f"{cfg['seeds']} seeds x {cfg['requests']} requests (band: +-1 sd)",
        fontsize=10,
    )
    with open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)


def _print(report: dict[str, Any]) -> None:
    cfg, curves, summary = report["config"], report["curves"], report["summary"]
    metric = "cost" if cfg["scenario"] == "budget" else "reward"
    scale = 1000.0 if metric == "cost" else 1.0
    unit = "spend per 1,000 requests" if metric == "cost" else "mean reward"
    table = Table(
        title=f"{cfg['scenario']}: {unit} per {cfg['window']} requests, mean over "
        f"{cfg['seeds']} seeds (lambda={cfg['lambda']:.4g}, {cfg['streamed_rows']} rows)"
    )
    table.add_column("policy")
    n = len(next(iter(curves.values()))[metric]["mean"])
    for k in range(n):
        table.add_column(f"{(k + 1) * cfg['window']}", justify="right")
    table.add_column("all", justify="right")
    for name, policy in curves.items():
        values = np.asarray(policy[metric]["mean"]) * scale
        table.add_row(name, *(f"{v:.4f}" for v in values), f"{values.mean():.4f}")
    console.print(table)
    for line in summary.get("lines", []):
        console.print(line)
