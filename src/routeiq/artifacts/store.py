"""Router artifacts: a directory of JSON and ``.npz`` files checked against a SHA-256 manifest.

Layout of an artifact directory::

    metadata.json     the caller's metadata (router type, params, models, featurizer,
                      lambda/target, training-data digest, library version), strict JSON
    <component>.npz   one per component (e.g. featurizer.npz, quality_model.npz): plain .npy
                      members, written deterministically (fixed zip timestamps, sorted names)
    <name>            optional raw files the caller adds (e.g. tokenizer.json)
    manifest.json     {"format": "routeiq-artifact", "format_version": 1,
                       "files": {name: {"sha256": hex, "size": bytes}},   # every other file
                       "components": {component: {"file": name,
                                                  "arrays": {array: {"dtype", "shape"}}}},
                       "blobs": [raw file names]}

No pickle anywhere: object arrays are refused when writing and arrays are loaded with
``allow_pickle=False``. :func:`~routeiq.artifacts.read.read_artifact` checks the manifest, the
file set and every digest before parsing anything else. The manifest gives integrity, not
authenticity: whoever
can rewrite the files can rewrite the manifest too, so pin :func:`artifact_digest` (the
SHA-256 of manifest.json, which covers every file) via ``expected_digest``, or sign the
directory, when the artifact comes from elsewhere.

Writes are atomic: the new artifact is built and fsynced in a sibling temp directory, then
swapped in (:mod:`routeiq.artifacts.atomic`); the next write to the same path removes the
leftovers of crashed writers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from routeiq.artifacts.atomic import (
    clean_leftovers,
    commit,
    fsync_dir,
    temp_sibling,
)

FORMAT = "routeiq-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
METADATA = "metadata.json"

_MAX_MANIFEST_BYTES = 16 * 2**20
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps keep identical state byte-identical


class ArtifactError(Exception):
    """An artifact is missing, incomplete, altered, or of an unsupported format."""


@dataclass(frozen=True, eq=False)
class Artifact:
    """A verified artifact read from disk."""

    path: Path
    metadata: dict[str, Any]
    arrays: dict[str, dict[str, np.ndarray]]  # component -> array name -> array
    files: dict[str, bytes]  # raw files added with ``write_artifact(files=...)``
    digest: str  # SHA-256 of manifest.json


def write_artifact(
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any],
    arrays: Mapping[str, Mapping[str, Any]],
    files: Mapping[str, bytes] | None = None,
    *,
    compress: bool = False,
) -> str:
    """Write an artifact directory atomically, replacing an existing artifact at ``path``.

    ``arrays`` maps component -> {array name -> numpy array}; each component becomes
    ``<component>.npz``. ``files`` adds raw files by name. Returns the artifact digest.
    Refuses to replace anything at ``path`` that is not an artifact (or an empty directory).
    """
    dest = Path(path)
    meta_bytes = _metadata_bytes(metadata)
    comps = _check_components(arrays)
    blobs = _check_blobs(files or {}, {f"{c}.npz" for c in comps})
    if dest.name in ("", ".", ".."):
        raise ValueError(f"artifact path must name a directory, got {str(path)!r}")
    dest = dest.parent.resolve() / dest.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dest):
        _check_replaceable(dest)

    tmp, token = temp_sibling(dest)
    tmp.mkdir()
    try:
        entries: dict[str, dict[str, Any]] = {}
        _write_file(tmp / METADATA, meta_bytes)
        components: dict[str, Any] = {}
        for comp, arrs in comps.items():
            name = f"{comp}.npz"
            _write_npz(tmp / name, arrs, compress)
            components[comp] = {
                "file": name,
                "arrays": {
                    k: {"dtype": a.dtype.str, "shape": list(a.shape)}
                    for k, a in sorted(arrs.items())
                },
            }
        for name, data in blobs.items():
            _write_file(tmp / name, data)
        for name in sorted(os.listdir(tmp)):
            entries[name] = {
                "sha256": _sha256_file(tmp / name),
                "size": (tmp / name).stat().st_size,
            }
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "files": entries,
            "components": components,
            "blobs": sorted(blobs),
        }
        manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        _write_file(tmp / MANIFEST, manifest_bytes)
        fsync_dir(tmp)
        commit(tmp, dest, token)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    clean_leftovers(dest)
    return hashlib.sha256(manifest_bytes).hexdigest()


def _metadata_bytes(metadata: Mapping[str, Any]) -> bytes:
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")

    def plain(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(f"{type(value).__name__} is not JSON-serialisable")

    try:
        text = json.dumps(dict(metadata), indent=2, sort_keys=True, allow_nan=False, default=plain)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be strict JSON (no NaN/inf, no objects): {exc}") from None
    return (text + "\n").encode()


def _check_components(arrays: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    if not isinstance(arrays, Mapping):
        raise ValueError("arrays must map component name -> {array name -> array}")
    out: dict[str, dict[str, np.ndarray]] = {}
    for comp, arrs in arrays.items():
        if (
            not isinstance(comp, str)
            or not _NAME_RE.match(comp)
            or f"{comp}.npz" in (METADATA, MANIFEST)
        ):
            raise ValueError(f"invalid component name {comp!r} (letters, digits, '_', '.', '-')")
        if not isinstance(arrs, Mapping):
            raise ValueError(f"component {comp!r} must map array name -> array")
        checked = {}
        for key, value in arrs.items():
            if not isinstance(key, str) or not _NAME_RE.match(key):
                raise ValueError(f"invalid array name {key!r} in component {comp!r}")
            arr = np.asarray(value)
            if arr.dtype.hasobject:
                raise ValueError(
                    f"array {comp}/{key} has dtype {arr.dtype}: object arrays "
                    "would need pickle; store JSON-able values in metadata"
                )
            checked[key] = arr
        out[comp] = checked
    return out


def _check_blobs(files: Mapping[str, bytes], taken: set[str]) -> dict[str, bytes]:
    out = {}
    for name, data in files.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"invalid file name {name!r} (letters, digits, '_', '.', '-')")
        if name in (METADATA, MANIFEST) or name in taken:
            raise ValueError(f"file name {name!r} clashes with a reserved or component file")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ValueError(f"file {name!r} must be bytes, got {type(data).__name__}")
        out[name] = bytes(data)
    return out


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray], compress: bool) -> None:
    """An ``np.load``-compatible .npz with fixed timestamps (np.savez stamps the clock)."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with open(path, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=method, allowZip64=True) as zf:
            for key in sorted(arrays):
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
                info.compress_type = method
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as out:
                    np.lib.format.write_array(out, arrays[key], allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def _check_replaceable(dest: Path) -> None:
    st = os.lstat(dest)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ArtifactError(f"refusing to replace {dest}: it is not a directory")
    if not (dest / MANIFEST).is_file() and any(os.scandir(dest)):
        raise ArtifactError(
            f"refusing to replace {dest}: it is not a routeiq artifact "
            f"(no {MANIFEST}) and not empty"
        )


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()
