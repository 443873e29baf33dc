"""Signed router artifacts: OpenSSF ``model-signing`` with ECDSA keys, verified on load.

.. code-block:: python

    write_keypair(Path("keys/router"))                 # keys/router.pem + keys/router.pub
    sign_artifact(Path("router"), Path("keys/router.pem"))  # writes router/model.sig
    verify_artifact(Path("router"), SigningSettings(public_keys=[Path("keys/router.pub")]))

The signature is a Sigstore bundle (``model.sig`` inside the artifact directory) over every
other file in the directory: ``manifest.json`` and each file it lists. It lives outside the
SHA-256 manifest (the manifest check is unchanged; :func:`routeiq.artifacts.read_artifact`
tolerates exactly this one unlisted file). Keys are ECDSA P-256/384/521 PEM files
(``model-signing`` refuses Ed25519 and RSA).

Verification (:func:`verified_snapshot`) copies the directory's regular files into a private
temporary directory, verifies the signature there and loads from there, so the bytes verified
are the bytes loaded even if a writer swaps the directory meanwhile. The rules:

* keys pinned and ``model.sig`` present: it must verify with one pinned key, and the signed
  file set must equal the directory's (an extra, missing or edited file is refused);
* ``require_signature: true``: an artifact without ``model.sig`` is refused too;
* keys pinned, no signature, not required: loaded (integrity only), with a warning;
* no keys pinned: ``model.sig`` is ignored (nothing to verify against).

Any file besides ``manifest.json``, the files it lists and ``model.sig`` is refused in every
case (by the manifest check), so only files named in the signed manifest are ever loaded.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from routeiq.artifacts.atomic import clean_leftovers, commit, fsync_dir, temp_sibling
from routeiq.artifacts.read import SIGNATURE, read_artifact
from routeiq.artifacts.store import MANIFEST, ArtifactError, _check_replaceable

log = logging.getLogger(__name__)

__all__ = [
    "SIGNATURE",
    "SignatureError",
    "SigningSettings",
    "publish_signed",
    "sign_artifact",
    "verified_snapshot",
    "verify_artifact",
    "write_keypair",
]


class SignatureError(ArtifactError):
    """An artifact's signature is missing (when required), malformed, or does not verify."""


class SigningSettings(BaseModel):
    """``routeiq_settings.signing``: which keys may sign the router artifacts served.

    Example: ``signing: {public_keys: [./keys/router.pub], require_signature: true}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    public_keys: tuple[Path, ...] = Field(
        default=(),
        description="PEM public keys (ECDSA P-256/384/521) trusted to sign artifacts; relative "
        "paths resolve against the proxy config's folder",
    )
    require_signature: bool = Field(
        default=False,
        description="refuse artifacts without a valid signature by one of public_keys",
    )

    @model_validator(mode="after")
    def _keys_for_required(self) -> SigningSettings:
        if self.require_signature and not self.public_keys:
            raise ValueError("require_signature: true needs at least one entry in public_keys")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.public_keys)

    def relative_to(self, base: Path) -> SigningSettings:
        """These settings with relative key paths resolved against ``base``."""
        keys = tuple(k if k.is_absolute() else base / k for k in self.public_keys)
        return self.model_copy(update={"public_keys": keys})


def write_keypair(out: Path) -> tuple[Path, Path]:
    """Write a new ECDSA P-256 key pair: ``OUT.pem`` (private, mode 0600) and ``OUT.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private, public = out.with_name(out.name + ".pem"), out.with_name(out.name + ".pub")
    for path in (private, public):
        if path.exists():
            raise FileExistsError(f"{path}: already exists (refusing to overwrite a key)")
    out.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def sign_artifact(path: Path, key: Path, *, password: str | None = None) -> Path:
    """Sign the artifact directory ``path`` with the private key ``key``; returns the
    signature path. The signature replaces any earlier one atomically. An artifact that does
    not pass its own SHA-256 manifest check (an extra or altered file) is not signed."""
    from model_signing import hashing, signing

    _check_artifact_dir(path)
    read_artifact(path)  # never vouch for files the manifest does not
    _check_ec_key(key, private=True, password=password)
    # Written beside the directory, then renamed in: readers never see a partial signature.
    tmp = path.parent / f".{path.name}.{SIGNATURE}.tmp-{os.getpid()}"
    hashed = hashing.Config().set_ignored_paths(paths=[SIGNATURE])
    try:
        config = signing.Config().use_elliptic_key_signer(private_key=key, password=password)
        config.set_hashing_config(hashed).sign(path, tmp)
        os.replace(tmp, path / SIGNATURE)
    except (ValueError, TypeError) as exc:  # an unsupported curve
        raise SignatureError(f"{key}: cannot sign with this key: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path)
    return path / SIGNATURE


def publish_signed(source: Path, dest: Path, key: Path) -> Path:
    """Copy the artifact ``source`` beside ``dest``, sign the copy, then swap it in at ``dest``
    atomically: a watcher of ``dest`` never sees an unsigned or half-written version."""
    _check_artifact_dir(source)
    dest = dest.parent.resolve() / dest.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dest):
        _check_replaceable(dest)  # never replace a directory that is not an artifact
    tmp, token = temp_sibling(dest)
    try:
        shutil.copytree(source, tmp, symlinks=True)
        (tmp / SIGNATURE).unlink(missing_ok=True)
        sign_artifact(tmp, key)
        fsync_dir(tmp)
        commit(tmp, dest, token)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    clean_leftovers(dest)
    return dest


def verify_artifact(path: Path, settings: SigningSettings) -> bool:
    """Check ``path``'s signature per ``settings``; True when a signature verified."""
    with verified_snapshot(path, settings) as (_, signed):
        return signed


@contextmanager
def verified_snapshot(path: Path, settings: SigningSettings) -> Iterator[tuple[Path, bool]]:
    """A private copy of the artifact at ``path`` whose signature (if any) verified, and
    whether it was signed. Raises :class:`SignatureError` with one clear line."""
    _check_artifact_dir(path)
    with tempfile.TemporaryDirectory(prefix="routeiq-verify-") as scratch:
        snap = Path(scratch) / "artifact"
        _snapshot(path, snap)
        signed = (snap / SIGNATURE).exists()
        if settings.enabled and signed:
            _verify_with_any_key(path, snap, settings.public_keys)
        elif settings.require_signature:
            raise SignatureError(
                f"{path}: unsigned (no {SIGNATURE}), but signing.require_signature is true"
            )
        elif settings.enabled:
            log.warning("RouteIQ: %s is not signed; loaded on its SHA-256 manifest only", path)
        yield snap, signed and settings.enabled


def _check_artifact_dir(path: Path) -> None:
    if not path.is_dir():
        raise ArtifactError(f"{path}: artifact directory not found")
    if not (path / MANIFEST).is_file():
        raise ArtifactError(f"{path / MANIFEST}: missing (not a routeiq artifact?)")


def _check_ec_key(key: Path, *, private: bool, password: str | None = None) -> None:
    """An ECDSA PEM key, or one clear line (model-signing fails on others with tracebacks)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    what = "private key" if private else "pinned public key (signing.public_keys)"
    try:
        data = key.read_bytes()
    except OSError as exc:
        raise SignatureError(f"{key}: {what} not readable: {exc.strerror or exc}") from None
    try:
        loaded: object = (
            serialization.load_pem_private_key(data, password.encode() if password else None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{key}: not a PEM {what}: {exc}") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        raise SignatureError(
            f"{key}: {type(loaded).__name__.lstrip('_')} is not supported; model-signing needs "
            "an ECDSA key (P-256, P-384 or P-521): create one with 'routeiq keygen'"
        )


def _snapshot(src: Path, dst: Path) -> None:
    """Copy the regular files of ``src`` (anything else is refused: the manifest check would
    refuse it too, and a symlink could point anywhere)."""
    dst.mkdir(mode=0o700)
    for entry in os.scandir(src):
        st = entry.stat(follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise SignatureError(f"{src / entry.name}: not a regular file")
        with open(entry.path, "rb") as fh:
            (dst / entry.name).write_bytes(fh.read())


def _verify_with_any_key(path: Path, snap: Path, keys: tuple[Path, ...]) -> None:
    from cryptography.exceptions import InvalidSignature
    from model_signing import verifying

    for key in keys:
        _check_ec_key(key, private=False)
        try:
            verifier = verifying.Config().use_elliptic_key_verifier(public_key=key)
        except (ValueError, TypeError) as exc:  # an unsupported curve
            raise SignatureError(f"{key}: cannot verify with this key: {exc}") from None
        try:
            verifier.verify(snap, snap / SIGNATURE)
            return
        except InvalidSignature:
            continue  # made by another key (a bundle without a key hint)
        except ValueError as exc:
            if str(exc).startswith("Key mismatch"):
                continue
            if str(exc).startswith("Signature mismatch"):
                raise SignatureError(f"{path}: {_mismatch(str(exc))}") from None
            raise SignatureError(f"{path / SIGNATURE}: malformed signature: {exc}") from None
        except Exception as exc:  # a garbled bundle: JSON, protobuf or base64 errors
            raise SignatureError(
                f"{path / SIGNATURE}: malformed signature: {type(exc).__name__}: {exc}"[:300]
            ) from None
    tried = ", ".join(str(k) for k in keys)
    raise SignatureError(f"{path / SIGNATURE}: not signed by any pinned key (tried {tried})")


# The library's diff is str() of a list: quotes inside may come backslash-escaped.
_EXTRA = re.compile(r"Extra files found in model \\?'[^']*\\?': ([^\"'\]\\]+)")
_MISSING = re.compile(r"Missing files in model \\?'[^']*\\?': ([^\"'\]\\]+)")
_EDITED = re.compile(r"Hash mismatch for \\?'([^'\\]+)")


def _mismatch(message: str) -> str:
    """``model-signing``'s diff (digest reprs included) as one short line."""
    parts = []
    for pattern, what in (
        (_EXTRA, "files not covered by the signature"),
        (_MISSING, "signed files missing"),
        (_EDITED, "files altered since signing"),
    ):
        found = [name.strip() for m in pattern.findall(message) for name in m.split(",")]
        if found:
            parts.append(f"{what}: {', '.join(found)}")
    return "; ".join(parts) or message[:300]
