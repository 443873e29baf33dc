"""Snapshots of the shared online state as verified artifacts (backup, audit, migration).

    keys = online_keys(shared)                       # "chat:5c4ad7935979aa01", ...
    export_snapshot(shared, keys[0], "snapshots/chat")
    state, meta = load_snapshot("snapshots/chat")    # {"gram", "moment", "count"} arrays
    OnlineRouter(models, n_inputs, settings).load(state)

A snapshot is an ordinary artifact directory (``metadata.json``, ``state.npz``, a SHA-256
manifest; never pickle), written atomically and verified before loading. The online state is
the sum of every worker's updates (:mod:`routeiq.online.store`), so a snapshot is exact up to
updates not yet pushed (at most one sync interval).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from routeiq.artifacts import ArtifactError, read_artifact, write_artifact
from routeiq.online.model import STATE_KEYS
from routeiq.online.store import SharedStateSettings

SNAPSHOT_FORMAT = "routeiq-online-snapshot/1"


class SnapshotError(ValueError):
    """No such online state, or a snapshot that does not verify or parse."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _redis(shared: SharedStateSettings, call: Any) -> Any:
    try:
        return call()
    except Exception as exc:  # redis-py's errors: one line for the operator
        raise SnapshotError(f"Redis at {shared.url.split('@')[-1]}: {exc}") from None


def online_keys(shared: SharedStateSettings, client: Any = None) -> list[str]:
    """The online states in Redis (``group:artifact-digest`` keys), sorted."""
    client = client if client is not None else shared.connect()
    prefix = f"{shared.prefix}:online:"
    found = _redis(shared, lambda: list(client.scan_iter(match=f"{prefix}*")))
    return sorted(_text(k)[len(prefix) :] for k in found)


def export_snapshot(
    shared: SharedStateSettings,
    key: str,
    out: str | os.PathLike[str],
    *,
    client: Any = None,
    models: list[str] | None = None,
) -> str:
    """Write the online state ``key`` as an artifact at ``out``; returns its digest."""
    client = client if client is not None else shared.connect()
    fields = _redis(shared, lambda: client.hgetall(f"{shared.prefix}:online:{key}"))
    raw = {_text(k): _text(v) for k, v in fields.items()}
    if "shape" not in raw:
        known = ", ".join(online_keys(shared, client)) or "none"
        raise SnapshotError(f"no online state {key!r} in Redis (known: {known})")
    shapes = json.loads(raw["shape"])
    if set(shapes) != set(STATE_KEYS):
        raise SnapshotError(f"online state {key!r} has arrays {sorted(shapes)}")
    state = {k: np.zeros(shapes[k], dtype=np.float64) for k in STATE_KEYS}
    flat = {k: v.reshape(-1) for k, v in state.items()}
    for field, value in raw.items():
        name, _, index = field.partition(":")
        if name in flat and index.isdigit() and int(index) < flat[name].size:
            flat[name][int(index)] = float(value)
    n_models = shapes["count"][0]
    if models is not None and len(models) != n_models:
        raise SnapshotError(f"{len(models)} model names for a state of {n_models} models")
    metadata = {
        "format": SNAPSHOT_FORMAT,
        "key": key,
        "version": raw.get("version"),
        "models": models,
        "observations": float(state["count"].sum()),
    }
    return write_artifact(out, metadata, {"state": state})


def load_snapshot(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The verified state arrays and metadata of a snapshot written by :func:`export_snapshot`."""
    try:
        artifact = read_artifact(Path(path))
    except ArtifactError as exc:
        raise SnapshotError(str(exc)) from None
    meta = dict(artifact.metadata)
    if meta.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(f"{path}: not an online snapshot (format {meta.get('format')!r})")
    arrays = artifact.arrays.get("state", {})
    missing = [k for k in STATE_KEYS if k not in arrays]
    if missing:
        raise SnapshotError(f"{path}: snapshot lacks {missing}")
    return {k: np.asarray(arrays[k], dtype=np.float64) for k in STATE_KEYS}, meta
