"""``routeiq keygen``, ``routeiq sign`` and ``routeiq verify``: signed router artifacts.

.. code-block:: bash

    routeiq keygen keys/router                      # keys/router.pem (0600) + keys/router.pub
    routeiq sign ./router --key keys/router.pem     # writes ./router/model.sig
    routeiq sign ./staging --key keys/router.pem --publish ./router   # sign a copy, swap it in
    routeiq verify ./router --public-key keys/router.pub

Registered on the main app by :mod:`routeiq.cli.main` (:func:`register`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from routeiq.cli.common import console, err_console, user_errors


def keygen(
    out: Annotated[
        Path, typer.Argument(help="Key path prefix: writes OUT.pem (private) and OUT.pub.")
    ],
) -> None:
    """Write a new ECDSA P-256 key pair for signing router artifacts."""
    from routeiq.security.signing import write_keypair

    try:
        private, public = write_keypair(out)
    except FileExistsError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    console.print(f"private key {private} (keep secret), public key {public} (pin it)")


def sign(
    artifact: Annotated[Path, typer.Argument(help="Router artifact directory to sign.")],
    key: Annotated[Path, typer.Option("--key", help="ECDSA private key (PEM).")],
    publish: Annotated[
        Path | None,
        typer.Option(
            "--publish",
            help="Sign a copy and swap it in at this path atomically (for hot reload), "
            "instead of signing ARTIFACT in place.",
        ),
    ] = None,
) -> None:
    """Sign a router artifact with model-signing (writes model.sig into the directory)."""
    from routeiq.artifacts import artifact_digest
    from routeiq.security.signing import SIGNATURE, publish_signed, sign_artifact

    with user_errors():
        if publish is not None:
            where = publish_signed(artifact, publish, key)
        else:
            where = sign_artifact(artifact, key).parent
        digest = artifact_digest(where)
    console.print(f"signed {where} (digest {digest}) -> {where / SIGNATURE}")


def verify(
    artifact: Annotated[Path, typer.Argument(help="Router artifact directory to verify.")],
    public_key: Annotated[
        list[Path], typer.Option("--public-key", help="Trusted public key (PEM); repeatable.")
    ],
) -> None:
    """Verify an artifact's signature and digests, as the server does on load."""
    from routeiq.artifacts import ArtifactError, read_artifact
    from routeiq.security.signing import SigningSettings, verified_snapshot

    settings = SigningSettings(public_keys=tuple(public_key), require_signature=True)
    with user_errors(), verified_snapshot(artifact, settings) as (snapshot, _):
        try:
            digest = read_artifact(snapshot).digest
        except ArtifactError as exc:  # name the directory given, not the private copy
            raise ArtifactError(str(exc).replace(str(snapshot), str(artifact))) from None
    console.print(f"ok: {artifact} is signed by a trusted key (digest {digest})")


def register(app: typer.Typer) -> None:
    """Add the commands to ``app``."""
    app.command("keygen")(keygen)
    app.command("sign")(sign)
    app.command("verify")(verify)
