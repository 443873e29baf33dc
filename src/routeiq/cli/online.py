"""``routeiq online``: the shared online state in Redis (list, export a snapshot)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from routeiq.cli.common import console, user_errors

if TYPE_CHECKING:
    from routeiq.online.store import SharedStateSettings

online_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

RedisOpt = Annotated[str, typer.Option("--redis", help="routeiq_settings.shared_state.url")]
PrefixOpt = Annotated[str, typer.Option("--prefix", help="shared_state.prefix")]
ClusterOpt = Annotated[bool, typer.Option("--cluster", help="The URL names a Redis Cluster node.")]


@online_app.callback()
def online() -> None:
    """The online routers' shared state (Redis)."""


def _shared(redis: str, prefix: str, cluster: bool) -> SharedStateSettings:
    from routeiq.online.store import SharedStateSettings

    return SharedStateSettings(url=redis, prefix=prefix, cluster=cluster, socket_timeout_s=5.0)


@online_app.command("list")
def list_states(
    redis: RedisOpt, prefix: PrefixOpt = "routeiq", cluster: ClusterOpt = False
) -> None:
    """Print the keys (group:artifact-digest) of the online states in Redis."""
    from routeiq.online.snapshot import online_keys

    with user_errors():
        for key in online_keys(_shared(redis, prefix, cluster)):
            console.print(key, highlight=False)


@online_app.command("export")
def export(
    key: Annotated[str, typer.Argument(help="group:artifact-digest (see `routeiq online list`)")],
    out: Annotated[Path, typer.Option("--out", help="Snapshot artifact directory to write.")],
    redis: RedisOpt,
    prefix: PrefixOpt = "routeiq",
    cluster: ClusterOpt = False,
    router: Annotated[
        Path | None, typer.Option("--router", help="The artifact it corrects (names the models).")
    ] = None,
) -> None:
    """Write one online state as a verified snapshot artifact."""
    from routeiq.online.snapshot import export_snapshot
    from routeiq.router import LearnedRouter

    with user_errors():
        models = list(LearnedRouter.load(router).models_) if router is not None else None
        digest = export_snapshot(_shared(redis, prefix, cluster), key, out, models=models)
    console.print(f"wrote [bold]{out}[/] (online state {key}, digest {digest[:12]})")
