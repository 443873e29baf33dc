"""Signed router artifacts: model-signing bundles over the artifact, verified on load."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from routeiq.artifacts import ArtifactError, artifact_digest, read_artifact, write_artifact
from routeiq.cli.main import app
from routeiq.router import LearnedRouter
from routeiq.security.signing import (
    SIGNATURE,
    SignatureError,
    SigningSettings,
    publish_signed,
    sign_artifact,
    verify_artifact,
    write_keypair,
)
from routeiq.serving.registry import load_router, load_routers
from routeiq.serving.settings import RouteIQConfigError
from routeiq.serving.settings_file import parse_settings

runner = CliRunner()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    where = tmp_path_factory.mktemp("keys")
    return {name: write_keypair(where / name) for name in ("a", "b")}


@pytest.fixture
def signed(artifact: Path, keys: dict, tmp_path: Path) -> Path:
    """A copy of the demo artifact signed with key a."""
    path = tmp_path / "router"
    shutil.copytree(artifact, path)
    sign_artifact(path, keys["a"][0])
    return path


def required(*pubs: Path) -> SigningSettings:
    return SigningSettings(public_keys=pubs, require_signature=True)


def test_good_signature_loads(signed: Path, artifact: Path, keys: dict) -> None:
    router = load_router(signed, required(keys["a"][1]))
    assert router.digest == artifact_digest(artifact)
    assert verify_artifact(signed, required(keys["a"][1])) is True
    # Any pinned key may have signed it.
    assert load_router(signed, required(keys["b"][1], keys["a"][1])).digest == router.digest
    # The signature sits outside the SHA-256 manifest: plain loading tolerates it.
    assert LearnedRouter.load(signed).digest == router.digest
    assert SIGNATURE not in json.loads((signed / "manifest.json").read_text())["files"]


def test_edited_file_refused(signed: Path, keys: dict) -> None:
    meta = signed / "metadata.json"
    meta.write_bytes(meta.read_bytes().replace(b'"lambda": 20.0', b'"lambda": 90.0'))
    with pytest.raises(SignatureError, match=r"files altered since signing: metadata\.json$"):
        load_router(signed, required(keys["a"][1]))


def test_consistent_rewrite_with_stolen_signature_refused(
    signed: Path, keys: dict, tmp_path: Path
) -> None:
    # Whoever can write the directory can rewrite files and manifest consistently: the
    # SHA-256 manifest then passes, the signature does not.
    art = read_artifact(signed)
    forged = tmp_path / "forged"
    write_artifact(forged, {**art.metadata, "lambda": 90.0}, art.arrays)
    shutil.copy(signed / SIGNATURE, forged / SIGNATURE)
    read_artifact(forged)  # integrity alone is satisfied
    with pytest.raises(
        SignatureError, match=r"altered since signing: manifest\.json, metadata\.json"
    ):
        load_router(forged, required(keys["a"][1]))


def test_extra_file_refused(signed: Path, keys: dict) -> None:
    (signed / "notes.txt").write_text("hello")
    with pytest.raises(SignatureError, match=r"router: files not covered by the signature: notes"):
        load_router(signed, required(keys["a"][1]))
    # Without keys the SHA-256 manifest refuses it too: an extra file never loads.
    with pytest.raises(ArtifactError, match=r"notes\.txt: file not listed in manifest\.json"):
        load_router(signed)


def test_wrong_key_refused(signed: Path, keys: dict) -> None:
    with pytest.raises(SignatureError, match=r"model\.sig: not signed by any pinned key \(tried"):
        load_router(signed, required(keys["b"][1]))


def test_unsigned_refused_when_required(
    artifact: Path, keys: dict, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(SignatureError, match=r"unsigned \(no model\.sig\), but signing\.require"):
        load_router(artifact, required(keys["a"][1]))
    # Not required: loads on the manifest alone, with a warning.
    with caplog.at_level(logging.WARNING, logger="routeiq.security.signing"):
        relaxed = SigningSettings(public_keys=(keys["a"][1],))
        assert load_router(artifact, relaxed).digest == artifact_digest(artifact)
    assert "is not signed" in caplog.text


def test_garbled_signature_and_bad_keys(signed: Path, keys: dict, tmp_path: Path) -> None:
    (signed / SIGNATURE).write_text("{not json")
    with pytest.raises(SignatureError, match=r"model\.sig: malformed signature"):
        load_router(signed, required(keys["a"][1]))
    with pytest.raises(SignatureError, match=r"missing\.pub: pinned public key .* not readable"):
        load_router(signed, required(tmp_path / "missing.pub"))
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ed = tmp_path / "ed.pem"
    ed.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(
        SignatureError, match=r"ed\.pem: .* is not supported; model-signing needs an ECDSA key"
    ):
        sign_artifact(signed, ed)


def test_settings_and_load_routers(signed: Path, keys: dict, tmp_path: Path) -> None:
    with pytest.raises(RouteIQConfigError, match="require_signature: true needs at least one"):
        parse_settings({"signing": {"require_signature": True}})
    shutil.copy(keys["b"][1], tmp_path / "b.pub")
    settings = parse_settings(
        {"router": str(signed), "signing": {"public_keys": ["b.pub"], "require_signature": True}},
        base_dir=tmp_path,
    )
    assert settings.signing.public_keys == (tmp_path / "b.pub",)
    with pytest.raises(RouteIQConfigError, match=r"failed to load or verify: .*not signed by any"):
        load_routers(settings)


def test_publish_signed_swaps_in_a_signed_version(signed: Path, keys: dict, tmp_path: Path) -> None:
    dest = tmp_path / "live"
    publish_signed(signed, dest, keys["b"][0])
    assert load_router(dest, required(keys["b"][1])).digest == artifact_digest(signed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live", "router"]  # no leftovers


def test_cli_keygen_sign_verify(artifact: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "keys" / "router"
    assert runner.invoke(app, ["keygen", str(prefix)]).exit_code == 0
    assert (prefix.with_suffix(".pem").stat().st_mode & 0o777) == 0o600
    again = runner.invoke(app, ["keygen", str(prefix)])
    assert again.exit_code == 2 and "already exists" in again.output
    path = tmp_path / "router"
    shutil.copytree(artifact, path)
    pub, pem = str(prefix.with_suffix(".pub")), str(prefix.with_suffix(".pem"))
    unsigned = runner.invoke(app, ["verify", str(path), "--public-key", pub])
    assert unsigned.exit_code == 2 and "unsigned" in unsigned.output
    signed = runner.invoke(app, ["sign", str(path), "--key", pem])
    assert signed.exit_code == 0, signed.output
    ok = runner.invoke(app, ["verify", str(path), "--public-key", pub])
    assert ok.exit_code == 0 and artifact_digest(path) in ok.output
    (path / "extra.bin").write_bytes(b"x")
    bad = runner.invoke(app, ["verify", str(path), "--public-key", pub])
    assert bad.exit_code == 2 and "not covered by the signature: extra.bin" in bad.output


def test_sign_refuses_what_the_manifest_refuses(signed: Path, keys: dict, tmp_path: Path) -> None:
    (signed / "notes.txt").write_text("hello")
    with pytest.raises(ArtifactError, match=r"notes\.txt: file not listed in manifest\.json"):
        sign_artifact(signed, keys["a"][0])
    (signed / "notes.txt").unlink()
    other = tmp_path / "not-an-artifact"
    other.mkdir()
    (other / "data.csv").write_text("a,b\n")
    with pytest.raises(ArtifactError, match=r"refusing to replace .*not a routeiq artifact"):
        publish_signed(signed, other, keys["a"][0])
    assert (other / "data.csv").exists()
