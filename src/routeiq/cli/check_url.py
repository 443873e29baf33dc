"""``routeiq check-url URL``: would the SSRF guard let RouteIQ (or a deployment) reach it?

    routeiq check-url http://10.0.0.5:8000/v1 --allow-cidr 10.0.0.0/24 --allow-port 8000
    routeiq check-url http://vllm.internal:8000/v1 --config proxy.yaml

Exit 0 and the checked addresses when allowed; exit 1 and the reason when refused; exit 2
for bad options or an unreadable config. ``--config`` takes the ``routeiq_settings.ssrf``
section of a proxy config; the ``--allow-*`` options add to it. Registered by
:mod:`routeiq.cli.main` as ``app.command("check-url")(check_url_command)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from routeiq.cli.common import console, err_console, user_errors


def check_url_command(
    url: Annotated[str, typer.Argument(help="The URL to check, e.g. http://10.0.0.5:8000/v1")],
    allow_cidr: Annotated[
        list[str] | None,
        typer.Option("--allow-cidr", help="Allowed address range (repeatable), e.g. 10.0.0.0/24."),
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option("--allow-host", help="Allowed host name (repeatable); '*.domain' too."),
    ] = None,
    allow_port: Annotated[
        list[int] | None,
        typer.Option("--allow-port", help="Allowed port besides 80 and 443 (repeatable)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Proxy config.yaml whose routeiq_settings.ssrf to use."),
    ] = None,
) -> None:
    """Check a URL against the SSRF guard: exit 0 allowed, 1 refused (with the reason)."""
    from pydantic import ValidationError

    from routeiq.security.ssrf import SSRFSettings, UnsafeURLError
    from routeiq.security.ssrf import check_url as check

    with user_errors():
        base = _settings_from(config) if config is not None else SSRFSettings()
        merged: dict[str, Any] = base.model_dump()
        merged["allow_cidrs"] = [str(n) for n in base.allow_cidrs] + list(allow_cidr or [])
        merged["allow_hosts"] = list(base.allow_hosts) + list(allow_host or [])
        merged["allow_ports"] = list(base.allow_ports) + list(allow_port or [])
        try:
            settings = SSRFSettings.model_validate(merged)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
    try:
        checked = check(url, settings)
    except UnsafeURLError as exc:
        err_console.print(f"[bold red]refused[/] ({exc.reason}): {exc.detail}", highlight=False)
        raise typer.Exit(1) from None
    shown = ", ".join(ip.compressed for ip in checked.addresses)
    console.print(
        f"[bold green]allowed[/] {checked.scheme}://{checked.host}:{checked.port} -> {shown} "
        f"({checked.allowed_by})",
        highlight=False,
    )


def _settings_from(config: Path) -> Any:
    import yaml

    from routeiq.integrations.litellm.config import settings_from_proxy_config

    path = config.resolve()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read proxy config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"proxy config {path} is not a mapping")
    return settings_from_proxy_config(data, path).ssrf
