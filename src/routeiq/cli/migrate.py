"""Configuration commands: ``routeiq migrate OLD_CONFIG.yaml [--env-file .env]`` (the LiteLLM
config equivalent to an old RouteIQ gateway config) and ``routeiq settings-reference``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from routeiq.cli.common import err_console


def migrate_command(
    config: Annotated[Path, typer.Argument(help="The old RouteIQ gateway config.yaml.")],
    env_file: Annotated[
        Path | None,
        typer.Option("--env-file", help="The old gateway's .env (LLMROUTER_* variables)."),
    ] = None,
    router: Annotated[
        str, typer.Option("--router", help="Artifact path to write as routeiq_settings.router.")
    ] = "./router",
) -> None:
    """Print the LiteLLM config fragment equivalent to an old RouteIQ gateway config.

    What cannot be carried over is listed as YAML comments at the top (and counted on
    stderr); see docs/migration.md for the full table.
    """
    from routeiq.migrate import migrate
    from routeiq.migrate_files import MigrationError, read_env_file, read_old_config

    try:
        old = read_old_config(config)
        env = read_env_file(env_file) if env_file is not None else {}
    except MigrationError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    result = migrate(old, env, router=router)
    typer.echo(result.to_yaml(source=config.name), nl=False)
    carried = len(result.notes) - len(result.dropped)
    err_console.print(
        f"routeiq migrate: {carried} old settings carried over, {len(result.dropped)} not "
        "(listed in the comments at the top)"
    )


def settings_reference_command(
    out: Annotated[
        Path | None, typer.Option("--out", help="File to write (default: print to stdout).")
    ] = None,
) -> None:
    """Print (or write) the reference of every RouteIQ setting, generated from the models."""
    from routeiq.serving.reference import render, write

    if out is None:
        typer.echo(render(), nl=False)
        return
    err_console.print(f"wrote {write(out)}")
