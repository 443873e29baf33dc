"""``routeiq serve``: the routing service (FastAPI + uvicorn) on the proxy's settings."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from routeiq.cli.common import console, user_errors

# Keep-alive longer than the client's (15 s): the client, not the server, retires connections.
_UVICORN: dict[str, Any] = {"access_log": False, "timeout_keep_alive": 75}


def serve_command(
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Proxy config (or settings) YAML with routeiq_settings."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8080,
    workers: Annotated[int, typer.Option("--workers", min=1, max=256)] = 1,
    token_env: Annotated[
        str, typer.Option("--token-env", help="Environment variable holding the bearer token.")
    ] = "ROUTEIQ_SERVICE_TOKEN",
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="File holding the bearer token.")
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1024, help="Larger bodies get 413.")
    ] = 1 << 20,
    log_level: Annotated[str, typer.Option("--log-level")] = "warning",
    write_openapi: Annotated[
        Path | None,
        typer.Option("--write-openapi", help="Write the OpenAPI document to this file and exit."),
    ] = None,
) -> None:
    """Serve routing decisions over HTTP: POST /v1/route, /v1/feedback; /healthz, /readyz,
    /metrics. Every replica is interchangeable when routeiq_settings.shared_state is set."""
    from routeiq.service.app import openapi_document

    if write_openapi is not None:
        text = json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
        write_openapi.write_text(text, encoding="utf-8")
        console.print(f"wrote {write_openapi}")
        return
    import uvicorn

    from routeiq.service.auth import read_token
    from routeiq.service.runtime import (
        MULTIPROC_ENV,
        OPTIONS_ENV,
        ServiceOptions,
        build_app,
        load_service_settings,
    )
    from routeiq.serving.registry import load_routers

    with user_errors():
        if config is None:
            raise ValueError("give --config FILE (the proxy config with routeiq_settings)")
        options = ServiceOptions(
            config=str(config.resolve()),
            token_env=token_env,
            token_file=str(token_file.resolve()) if token_file else None,
            max_body_bytes=max_body_bytes,
        )
        read_token(token_env, token_file)  # fail here, with one line, not in every worker
        if workers == 1:
            app = build_app(options)
        else:
            load_routers(load_service_settings(config))  # verify once before forking
            os.environ[OPTIONS_ENV] = options.to_env()
            if not os.environ.get(MULTIPROC_ENV):  # every worker's metrics on /metrics
                os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="routeiq-metrics-")
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level=log_level, **_UVICORN)
    else:
        uvicorn.run(
            "routeiq.service.runtime:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            **_UVICORN,
        )
