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
``allow_pickle=False``. :func:`read_artifact` checks the manifest, the file set and every
digest before parsing anything else. The manifest gives integrity, not authenticity: whoever
can rewrite the files can rewrite the manifest too, so pin :func:`artifact_digest` (the
SHA-256 of manifest.json, which covers every file) via ``expected_digest``, or sign the
directory, when the artifact comes from elsewhere.

Writes are atomic: the new artifact is built and fsynced in a sibling temp directory, then
swapped in (``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere rename the old one aside,
rename the new one in, remove the old one). Leftovers of a crashed writer are sibling
directories named ``.<name>.routeiq-tmp-<pid>-<hex>`` or ``.<name>.routeiq-old-<pid>-<hex>``;
the next write to the same path removes those whose process is gone.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import stat
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "routeiq-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
METADATA = "metadata.json"

_MAX_MANIFEST_BYTES = 16 * 2**20
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps keep identical state byte-identical
_TMP_TAG, _OLD_TAG = "routeiq-tmp", "routeiq-old"


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


# ---------------------------------------------------------------------------------- writing


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

    token = f"{os.getpid()}-{secrets.token_hex(6)}"
    tmp = dest.parent / f".{dest.name}.{_TMP_TAG}-{token}"
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
        _fsync_dir(tmp)
        _commit(tmp, dest, token)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _clean_leftovers(dest)
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


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_replaceable(dest: Path) -> None:
    st = os.lstat(dest)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ArtifactError(f"refusing to replace {dest}: it is not a directory")
    if not (dest / MANIFEST).is_file() and any(os.scandir(dest)):
        raise ArtifactError(
            f"refusing to replace {dest}: it is not a routeiq artifact "
            f"(no {MANIFEST}) and not empty"
        )


def _commit(tmp: Path, dest: Path, token: str) -> None:
    """Put ``tmp`` at ``dest``; at every instant ``dest`` is the old or the new artifact."""
    if not os.path.lexists(dest):
        os.rename(tmp, dest)
    elif _rename_exchange(tmp, dest):
        _fsync_dir(dest.parent)
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old artifact
    else:
        # No atomic swap: a crash between the two renames leaves the old artifact complete
        # under the .routeiq-old name (read_artifact points to it).
        old = dest.parent / f".{dest.name}.{_OLD_TAG}-{token}"
        os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except BaseException:
            os.rename(old, dest)
            raise
        _fsync_dir(dest.parent)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(dest.parent)


def _rename_exchange(src: Path, dst: Path) -> bool:
    """Atomically swap two paths with Linux renameat2; False where unsupported."""
    if sys.platform != "linux":
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def _leftovers(dest: Path) -> list[tuple[Path, int]]:
    pattern = re.compile(rf"^\.{re.escape(dest.name)}\.(?:{_TMP_TAG}|{_OLD_TAG})-(\d+)-[0-9a-f]+$")
    found = []
    if dest.parent.is_dir():
        for entry in os.scandir(dest.parent):
            match = pattern.match(entry.name)
            if match and entry.is_dir(follow_symlinks=False):
                found.append((Path(entry.path), int(match[1])))
    return found


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process on Windows: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_leftovers(dest: Path) -> None:
    """Remove temp/old directories of earlier writers to ``dest`` that are no longer running."""
    for path, pid in _leftovers(dest):
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------- reading


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
        olds = [p for p, _ in _leftovers(root.absolute()) if _OLD_TAG in p.name]
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
        if entry.name != MANIFEST:
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


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()
