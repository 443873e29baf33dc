"""Reading an artifact: the manifest, the file set and every digest are checked before
anything else is parsed (see :mod:`routeiq.artifacts.store` for the layout).

One file may sit in the directory without being listed in the manifest: the signature
``model.sig`` (:data:`SIGNATURE`), which covers the manifest and so cannot be inside it.
It is not read here; :mod:`routeiq.security.signing` verifies it when keys are pinned.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from routeiq.artifacts.atomic import OLD_TAG, leftovers
from routeiq.artifacts.store import (
    _HEX64_RE,
    _MAX_MANIFEST_BYTES,
    _NAME_RE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    METADATA,
    Artifact,
    ArtifactError,
)

SIGNATURE = "model.sig"  # the model-signing bundle over every other file of the directory


def artifact_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the artifact's manifest.json: a stable id covering every file."""
    manifest = Path(path) / MANIFEST
    try:
        return hashlib.sha256(manifest.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise ArtifactError(f"{manifest}: missing (not a routeiq artifact?)") from None
    except OSError as exc:
        raise ArtifactError(f"{manifest}: cannot read: {exc}") from None


def read_artifact(path: str | os.PathLike[str], *, expected_digest: str | None = None) -> Artifact:
    """Verify and load an artifact. Raises :class:`ArtifactError` naming the faulty file.

    The manifest, the set of files and every file's size and SHA-256 are checked before any
    file is parsed; arrays load with ``allow_pickle=False``. With ``expected_digest``, the
    manifest itself must hash to it (authenticity when the digest is pinned elsewhere).
    """
    root = Path(path)
    if not root.is_dir():
        hint = ""
        olds = [p for p, _ in leftovers(root.absolute()) if OLD_TAG in p.name]
        if olds:
            hint = f"; an interrupted write left the previous artifact at {olds[0]}"
        raise ArtifactError(f"{root}: artifact directory not found{hint}")
    raw = _read_manifest_bytes(root)
    digest = hashlib.sha256(raw).hexdigest()
    if expected_digest is not None and digest != expected_digest.lower():
        raise ArtifactError(
            f"{root / MANIFEST}: digest {digest} does not match the expected {expected_digest}"
        )
    manifest = _parse_manifest(root, raw)
    contents = _verified_contents(root, manifest["files"])

    try:
        metadata = json.loads(contents[METADATA])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{root / METADATA}: not valid JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{root / METADATA}: expected a JSON object")
    arrays = {
        comp: _load_npz(root / info["file"], contents[info["file"]], info["arrays"])
        for comp, info in manifest["components"].items()
    }
    blobs = {name: contents[name] for name in manifest["blobs"]}
    return Artifact(path=root, metadata=metadata, arrays=arrays, files=blobs, digest=digest)


def _read_manifest_bytes(root: Path) -> bytes:
    where = root / MANIFEST
    try:
        st = os.lstat(where)
    except FileNotFoundError:
        raise ArtifactError(f"{where}: missing (not a routeiq artifact, or incomplete)") from None
    if not stat.S_ISREG(st.st_mode):
        raise ArtifactError(f"{where}: not a regular file")
    if st.st_size > _MAX_MANIFEST_BYTES:
        raise ArtifactError(f"{where}: {st.st_size} bytes, larger than any valid manifest")
    return where.read_bytes()


def _parse_manifest(root: Path, raw: bytes) -> dict[str, Any]:
    where = root / MANIFEST

    def bad(msg: str) -> ArtifactError:
        return ArtifactError(f"{where}: {msg}")

    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"garbled (not valid JSON): {exc}") from None
    if not isinstance(manifest, dict):
        raise bad("garbled: expected a JSON object")
    if manifest.get("format") != FORMAT:
        raise bad(f"format is {manifest.get('format')!r}, expected {FORMAT!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version != FORMAT_VERSION:
        raise bad(
            f"unsupported format_version {version!r}; this routeiq reads version "
            f"{FORMAT_VERSION} (upgrade routeiq for newer artifacts)"
        )
    files, comps, blobs = (manifest.get(k) for k in ("files", "components", "blobs"))
    if not isinstance(files, dict) or not isinstance(comps, dict) or not isinstance(blobs, list):
        raise bad("garbled: 'files' and 'components' must be objects, 'blobs' a list")
    for name, entry in files.items():
        if not _NAME_RE.match(name) or name == MANIFEST:
            raise bad(f"invalid file name {name!r}")
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not _HEX64_RE.match(entry["sha256"])
            or not isinstance(entry.get("size"), int)
            or isinstance(entry["size"], bool)
            or entry["size"] < 0
        ):
            raise bad(f"garbled entry for {name!r}: need a sha256 hex digest and a size")
    used = [METADATA]
    for comp, info in comps.items():
        if (
            not isinstance(info, dict)
            or not isinstance(info.get("file"), str)
            or not isinstance(info.get("arrays"), dict)
        ):
            raise bad(f"garbled component {comp!r}")
        for key, spec in info["arrays"].items():
            if (
                not isinstance(spec, dict)
                or not isinstance(spec.get("dtype"), str)
                or not isinstance(spec.get("shape"), list)
            ):
                raise bad(f"garbled array entry {comp}/{key}")
        used.append(info["file"])
    used.extend(blobs)
    for name in used:
        if not isinstance(name, str) or name not in files:
            raise bad(f"refers to {name!r}, which is not listed in 'files'")
    if len(used) != len(set(used)) or set(used) != set(files):
        raise bad("'files' must list metadata.json, each component file and each blob once")
    return manifest


def _verified_contents(root: Path, files: dict[str, dict[str, Any]]) -> dict[str, bytes]:
    present = {}
    for entry in os.scandir(root):
        # The signature sits outside the digest set (unless an old writer listed a blob so
        # named: then it is an ordinary listed file).
        if entry.name != MANIFEST and (entry.name != SIGNATURE or SIGNATURE in files):
            present[entry.name] = entry
    extra = sorted(set(present) - set(files))
    if extra:
        raise ArtifactError(
            f"{root / extra[0]}: file not listed in {MANIFEST} (extra files: {extra})"
        )
    missing = sorted(set(files) - set(present))
    if missing:
        raise ArtifactError(
            f"{root / missing[0]}: listed in {MANIFEST} but missing (missing files: {missing})"
        )
    contents = {}
    for name in sorted(files):
        where, want = root / name, files[name]
        if not present[name].is_file(follow_symlinks=False):
            raise ArtifactError(f"{where}: not a regular file")
        size = present[name].stat(follow_symlinks=False).st_size
        if size != want["size"]:
            raise ArtifactError(f"{where}: altered (size {size}, manifest says {want['size']})")
        data = where.read_bytes()  # read once: the bytes hashed are the bytes parsed
        if hashlib.sha256(data).hexdigest() != want["sha256"]:
            raise ArtifactError(f"{where}: altered (SHA-256 does not match {MANIFEST})")
        contents[name] = data
    return contents


def _load_npz(where: Path, data: bytes, specs: dict[str, Any]) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ArtifactError(f"{where}: not an .npz archive")
        with loaded as npz:
            members = set(npz.files)
            if members != set(specs):
                raise ArtifactError(
                    f"{where}: holds arrays {sorted(members)}, manifest lists {sorted(specs)}"
                )
            arrays = {key: npz[key] for key in sorted(specs)}
    except ArtifactError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{where}: cannot load arrays: {exc}") from None
    for key, arr in arrays.items():
        spec = specs[key]
        if arr.dtype.str != spec["dtype"] or list(arr.shape) != spec["shape"]:
            raise ArtifactError(
                f"{where}: array {key!r} is {arr.dtype.str}{list(arr.shape)}, "
                f"manifest says {spec['dtype']}{spec['shape']}"
            )
    return arrays
