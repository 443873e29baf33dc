"""``routeiq`` command line: train, route, ope, feedback (and eval, the experiment and
simulate sub-commands, registered from their own modules)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from routeiq.cli.common import (  # noqa: F401  (re-exported for sub-apps and tests)
    ROUTERBENCH,
    DataOpt,
    FeatOpt,
    LogOpt,
    PricesOpt,
    _is_stream,
    _load,
    console,
    default_dataset,
    err_console,
    read_log,
    user_errors,
)
from routeiq.features.context import check_fields

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Learned, cost-aware routing for LiteLLM.",
)


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="Artifact directory to write.")],
    data: DataOpt = None,
    prices: PricesOpt = None,
    router: Annotated[
        str,
        typer.Option(
            "--router",
            "--quality-model",
            help="Quality model name: a built-in (see README) or an installed extension.",
        ),
    ] = "ensemble",
    featurizer: FeatOpt = "lexical",
    lam: Annotated[float | None, typer.Option("--lambda", help="Fixed quality/cost knob.")] = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--target", help="Calibrated target: quality>=0.95 | budget<=0.5 | expensive<=0.2"
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            "--split", help="Train on this split only (default: 'train' when the data has splits)."
        ),
    ] = None,
    featurizer_from: Annotated[
        Path | None,
        typer.Option(
            "--featurizer-from",
            help="Reuse this artifact's fitted featurizer (needed for a decision log written "
            "with log_prompt: features).",
        ),
    ] = None,
    context: Annotated[
        str,
        typer.Option(
            "--context",
            help="Request-context fields to learn from besides the text (comma-separated; the "
            "gateway fills tags, team, key_alias, key, user, system; a task is also read from "
            "the text when a request names none), 'none', or 'auto': the task when the data "
            "names tasks.",
        ),
    ] = "auto",
) -> None:
    """Train a router and write it as a verified artifact directory."""
    from routeiq.evaluation.runner import build_router, context_model, default_context
    from routeiq.router import LearnedRouter

    with user_errors():
        if lam is not None and target is not None:
            raise ValueError("give --lambda or --target, not both")
        # Build (and so validate) the router before reading any data.
        feat: Any = featurizer
        if featurizer_from is not None:
            feat = LearnedRouter.load(featurizer_from).featurizer
            featurizer = f"{feat.name} from {featurizer_from}"
        fields = () if context in ("auto", "none") else check_fields(context)
        learned = build_router(feat, router, lam=lam or 0.0, target=target, context=fields)
        dataset = _load(data, prices)
        if split or dataset.splits:
            dataset = dataset.split(split or "train")
        if context == "auto":
            learned.context = context_model(default_context(dataset))
        with console.status(f"training {router} on {len(dataset)} prompts"):
            learned.fit(dataset, fit_featurizer=featurizer_from is None)
            digest = learned.save(out)
    ctx = "" if learned.context is None else f", context {','.join(learned.context.fields)}"
    console.print(
        f"wrote [bold]{out}[/] ({router} on {featurizer}{ctx}, {len(dataset)} prompts, "
        f"lambda={learned.lam:.4g}, digest {digest[:12]})"
    )
    if learned.target is not None:
        # On out-of-fold predictions of the training rows: what the target got, met or not.
        console.print(learned.calibrate(learned.target).explanation, highlight=False)


@app.command()
def route(
    prompt: Annotated[
        str,
        typer.Argument(
            help="Prompt text, or a JSON list of chat messages; '-' reads it from stdin "
            "(long prompts exceed the OS argument limit)."
        ),
    ],
    router: Annotated[Path, typer.Option("--router", help="Artifact directory.")],
    lam: Annotated[float | None, typer.Option("--lambda")] = None,
    target: Annotated[str | None, typer.Option("--target")] = None,
    candidates: Annotated[
        str | None,
        typer.Option(
            "--candidates", help="Comma-separated models to choose among (default: all known)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
    context: Annotated[
        list[str] | None,
        typer.Option(
            "--context",
            help="A request-context field as field=value (repeatable), e.g. --context task=math.",
        ),
    ] = None,
) -> None:
    """Route one prompt and explain the decision."""
    from routeiq.router import Candidate, LearnedRouter

    with user_errors():
        if lam is not None and target is not None:
            raise ValueError("give --lambda or --target, not both")
        if prompt == "-":
            prompt = sys.stdin.read()
        message: Any = prompt
        if prompt.lstrip().startswith("["):
            try:
                message = json.loads(prompt)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"prompt looks like JSON messages but does not parse: {exc}"
                ) from None
        learned = LearnedRouter.load(router)
        cands = None
        if candidates:
            cands = [Candidate(name=c.strip(), model=c.strip()) for c in candidates.split(",")]
        ctx = _context_pairs(context or [])
        decision = learned.route(message, cands, lam=lam, target=target, context=ctx)
    if as_json:
        console.print_json(json.dumps(decision.to_dict()))
        return
    console.print(decision)  # Decision renders itself as a rich table
    console.print(f"chosen: [bold]{decision.chosen}[/]")


def _context_pairs(pairs: list[str]) -> dict[str, Any]:
    """``["task=math", "tags=a", "tags=b"]`` -> ``{"task": "math", "tags": ["a", "b"]}``."""
    ctx: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not value:
            raise ValueError(f"--context {pair!r}: expected field=value")
        (name,) = check_fields([name])
        old = ctx.get(name)
        ctx[name] = value if old is None else [*([old] if isinstance(old, str) else old), value]
    return ctx


@app.command()
def ope(
    log: LogOpt,
    router: Annotated[Path, typer.Option("--router", help="Candidate router artifact.")],
    lam: Annotated[float | None, typer.Option("--lambda")] = None,
    target: Annotated[str | None, typer.Option("--target")] = None,
    explore: Annotated[
        str, typer.Option("--explore", help="Exploration of the new policy: off|epsilon|softmax")
    ] = "off",
    epsilon: Annotated[float, typer.Option("--epsilon")] = 0.05,
    margin: Annotated[float, typer.Option("--margin")] = 0.05,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=10)] = 500,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the estimates as JSON.")] = False,
) -> None:
    """Estimate what a router would have achieved on logged traffic (off-policy)."""
    from routeiq.decision.exploration import Exploration
    from routeiq.evaluation.replay import evaluate_log
    from routeiq.router import LearnedRouter

    with user_errors():
        if lam is not None and target is not None:
            raise ValueError("give --lambda or --target, not both")
        policy = Exploration.model_validate({"mode": explore, "epsilon": epsilon, "margin": margin})
        records = read_log(log)
        learned = LearnedRouter.load(router)
        with console.status(f"evaluating {router} on {len(records)} logged decisions"):
            report = evaluate_log(
                records,
                learned,
                lam=lam,
                target=target,
                exploration=policy,
                n_bootstrap=bootstrap,
                seed=seed,
            )
    metrics = ("quality", "cost", "utility")
    if as_json:
        out = {k: report[k].to_dict() for k in metrics}
        out.update(lam=report["lambda"], n=report["n"], skipped=report["skipped"])
        console.print_json(json.dumps(out))
        return
    res = report["quality"]
    table = Table(
        title=f"off-policy estimates for {router} (lambda={report['lambda']:.4g}) on "
        f"{report['n']} logged decisions; 95% bootstrap intervals"
    )
    table.add_column("estimator")
    for k in metrics:
        table.add_column(f"mean {k}", justify="right")
    for name in res.estimates:
        table.add_row(
            name,
            *(
                f"{report[k].estimates[name].value:.4g} [{report[k].estimates[name].low:.4g}, "
                f"{report[k].estimates[name].high:.4g}]"
                for k in metrics
            ),
        )
    console.print(table)
    skipped = ", ".join(f"{v} {k}" for k, v in report["skipped"].items() if v) or "none"
    console.print(
        f"effective sample size {res.ess:.0f} of {res.n}; max weight {res.max_weight:.3g}; "
        f"skipped: {skipped}"
    )
    for warning in res.warnings:
        err_console.print(f"[bold yellow]warning:[/] {warning}")


@app.command()
def feedback(
    file: Annotated[Path, typer.Argument(help="JSONL ratings: decision_id, score, metric.")],
    log: LogOpt,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check only; write nothing.")] = False,
) -> None:
    """Import ratings of served decisions into the decision log (all or nothing)."""
    from routeiq.serving.batch_feedback import plan_import
    from routeiq.serving.decision_log import open_sink

    with user_errors():
        records = read_log(log)
        with file.open(encoding="utf-8") as f:
            plan = plan_import(records, f)
        if plan.errors:
            shown = "\n  ".join(plan.errors[:20])
            more = f"\n  ... and {len(plan.errors) - 20} more" if len(plan.errors) > 20 else ""
            raise ValueError(
                f"{len(plan.errors)} of {len(plan.errors) + len(plan.records)} ratings refused, "
                f"nothing written:\n  {shown}{more}"
            )
        if not dry_run:
            sink = open_sink(log if _is_stream(log) else Path(log))
            sink.write([json.dumps(r, separators=(",", ":")) for r in plan.records])
            sink.close()
    verb = "would join" if dry_run else "joined"
    console.print(f"{verb} {len(plan.records)} ratings with {log}")


def _register_subcommands() -> None:
    from routeiq.cli.experiment import experiment_app
    from routeiq.cli.sign import register as register_signing
    from routeiq.cli.simulate import simulate_app

    register_signing(app)  # keygen, sign, verify
    from routeiq.cli.migrate import migrate_command, settings_reference_command

    app.command("migrate")(migrate_command)
    app.command("settings-reference")(settings_reference_command)
    from routeiq.cli.check_url import check_url_command
    from routeiq.cli.evaluate import evaluate_command

    app.command("eval")(evaluate_command)

    app.command("check-url")(check_url_command)
    from routeiq.cli.serve import serve_command

    app.command("serve")(serve_command)

    from routeiq.cli.online import online_app

    app.add_typer(experiment_app, name="experiment")
    app.add_typer(online_app, name="online")
    app.add_typer(
        simulate_app,
        name="simulate",
        help="Learning curves of online routing, replayed on full-information data.",
    )


_register_subcommands()
