"""Artifact store: round trip, tamper refusal, atomic replace, no pickle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from routeiq.artifacts import (
    FORMAT_VERSION,
    ArtifactError,
    artifact_digest,
    atomic,
    read,
    read_artifact,
    store,
    write_artifact,
)

META = {
    "router": "logistic",
    "params": {"C": 1.0},
    "models": ["a", "b"],
    "lambda": 12.5,
    "target": "quality>=0.95",
    "data_digest": "abc",
    "version": "0.1.0",
}


def _arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "featurizer": {
            "idf_": rng.random(7).astype(np.float32),
            "vocab_": np.array(["alpha", "beta"]),
        },
        "quality_model": {
            "coef_": rng.random((3, 2)),
            "intercept_": np.arange(2),
            "fortran_": np.asfortranarray(rng.random((2, 3))),
        },
    }


@pytest.fixture
def art(tmp_path: Path) -> Path:
    path = tmp_path / "router"
    write_artifact(path, META, _arrays(), files={"tokenizer.json": b'{"v": 1}'})
    return path


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def test_round_trip(art: Path):
    got = read_artifact(art)
    want = _arrays()
    assert got.metadata == META
    assert set(got.arrays) == set(want)
    for comp, arrs in want.items():
        assert set(got.arrays[comp]) == set(arrs)
        for key, arr in arrs.items():
            np.testing.assert_array_equal(got.arrays[comp][key], arr)
            assert got.arrays[comp][key].dtype == arr.dtype
    assert got.files == {"tokenizer.json": b'{"v": 1}'}
    assert got.digest == artifact_digest(art)
    assert sorted(os.listdir(art)) == [
        "featurizer.npz",
        "manifest.json",
        "metadata.json",
        "quality_model.npz",
        "tokenizer.json",
    ]
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert set(manifest["files"]) == set(os.listdir(art)) - {"manifest.json"}
    # the npz files are ordinary numpy archives
    with np.load(art / "featurizer.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["idf_", "vocab_"]


def test_same_state_same_digest(tmp_path: Path):
    d1 = write_artifact(tmp_path / "x", META, _arrays())
    d2 = write_artifact(tmp_path / "y", META, _arrays())
    d3 = write_artifact(tmp_path / "z", META, _arrays(seed=1))
    assert d1 == d2 != d3
    assert (tmp_path / "x" / "featurizer.npz").read_bytes() == (
        tmp_path / "y" / "featurizer.npz"
    ).read_bytes()


def test_rejects_pickle_and_non_json(tmp_path: Path):
    with pytest.raises(ValueError, match="object arrays"):
        write_artifact(tmp_path / "a", META, {"c": {"x_": np.array([{"k": 1}], dtype=object)}})
    with pytest.raises(ValueError, match="strict JSON"):
        write_artifact(tmp_path / "a", {"lam": float("nan")}, {})
    with pytest.raises(ValueError, match="strict JSON"):
        write_artifact(tmp_path / "a", {"obj": object()}, {})
    with pytest.raises(ValueError, match="component name"):
        write_artifact(tmp_path / "a", META, {"../evil": {}})
    with pytest.raises(ValueError, match="clashes"):
        write_artifact(tmp_path / "a", META, {"c": {}}, files={"c.npz": b""})
    assert not (tmp_path / "a").exists() and _siblings(tmp_path / "a") == []


def test_numpy_scalars_in_metadata_are_plain(tmp_path: Path):
    write_artifact(tmp_path / "a", {"n": np.int64(3), "lam": np.float32(0.5)}, {})
    assert read_artifact(tmp_path / "a").metadata == {"n": 3, "lam": 0.5}


def test_pickled_npz_member_refused(tmp_path: Path, art: Path):
    """A consistent manifest cannot smuggle a pickle: arrays load with allow_pickle=False."""
    import io

    buf = io.BytesIO()
    np.savez(buf, idf_=np.array([{"boom": 1}], dtype=object), vocab_=np.array(["a"]))
    _rewrite_consistently(art, "featurizer.npz", buf.getvalue())
    with pytest.raises(ArtifactError, match=r"featurizer\.npz"):
        read_artifact(art)


def _rewrite_consistently(art: Path, name: str, data: bytes) -> None:
    """What an attacker with write access can do: change a file AND its manifest entry."""
    import hashlib

    (art / name).write_bytes(data)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (art / "manifest.json").write_text(json.dumps(manifest))


# ---------------------------------------------------------------------------- tampering


def test_modified_byte_refused(art: Path):
    data = bytearray((art / "quality_model.npz").read_bytes())
    data[-40] ^= 0x01
    (art / "quality_model.npz").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"quality_model\.npz: altered \(SHA-256"):
        read_artifact(art)


def test_truncated_file_refused(art: Path):
    (art / "metadata.json").write_text("{}")
    with pytest.raises(ArtifactError, match=r"metadata\.json: altered \(size"):
        read_artifact(art)


def test_deleted_file_refused(art: Path):
    (art / "tokenizer.json").unlink()
    with pytest.raises(
        ArtifactError, match=r"tokenizer\.json: listed in manifest.json but missing"
    ):
        read_artifact(art)


def test_extra_file_refused(art: Path):
    (art / "evil.npz").write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"evil\.npz: file not listed"):
        read_artifact(art)
    (art / "evil.npz").unlink()
    (art / "subdir").mkdir()
    with pytest.raises(ArtifactError, match="subdir"):
        read_artifact(art)


@pytest.mark.parametrize(
    ("edit", "msg"),
    [
        (lambda m: m["files"]["metadata.json"].update(sha256="0" * 64), "metadata.json: altered"),
        (lambda m: m.update(format_version=FORMAT_VERSION + 1), "unsupported format_version"),
        (lambda m: m.update(format="other"), "format is 'other'"),
        (lambda m: m["files"].pop("tokenizer.json"), "not listed in 'files'"),
        (lambda m: m["files"].update({"../x": m["files"]["metadata.json"]}), "invalid file name"),
        (lambda m: m["components"]["featurizer"]["arrays"].pop("idf_"), "holds arrays"),
        (
            lambda m: m["components"]["featurizer"]["arrays"]["idf_"].update(shape=[8]),
            "manifest says",
        ),
    ],
)
def test_edited_manifest_refused(art: Path, edit, msg):
    manifest = json.loads((art / "manifest.json").read_text())
    edit(manifest)
    (art / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=msg):
        read_artifact(art)


def test_missing_or_garbled_manifest(art: Path, tmp_path: Path):
    raw = (art / "manifest.json").read_bytes()
    (art / "manifest.json").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ArtifactError, match=r"manifest\.json: garbled"):
        read_artifact(art)
    (art / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"manifest\.json: missing"):
        read_artifact(art)
    with pytest.raises(ArtifactError, match="missing"):
        artifact_digest(art)
    with pytest.raises(ArtifactError, match="not found"):
        read_artifact(tmp_path / "nope")


def test_expected_digest_pins_the_artifact(art: Path):
    digest = artifact_digest(art)
    assert read_artifact(art, expected_digest=digest).digest == digest
    # a consistent rewrite passes the manifest check but changes the digest
    _rewrite_consistently(art, "tokenizer.json", b'{"v": 2}')
    assert read_artifact(art).files["tokenizer.json"] == b'{"v": 2}'
    with pytest.raises(ArtifactError, match="does not match the expected"):
        read_artifact(art, expected_digest=digest)


def test_nothing_parsed_before_verification(art: Path, monkeypatch):
    calls = []
    monkeypatch.setattr(read, "_load_npz", lambda *a: calls.append(a) or {})
    (art / "extra").write_bytes(b"")
    with pytest.raises(ArtifactError):
        read_artifact(art)
    assert calls == []


# ----------------------------------------------------------------------- atomic replace


def _fail_on_call(n: int, real):
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        count["n"] += 1
        if count["n"] == n:
            raise OSError("simulated crash mid-write")
        return real(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_replace(art: Path, monkeypatch, exchange: bool):
    if not exchange:
        monkeypatch.setattr(atomic, "_rename_exchange", lambda src, dst: False)
    new_meta = {**META, "lambda": 3.0}
    digest = write_artifact(art, new_meta, _arrays(seed=5))
    got = read_artifact(art)
    assert got.metadata == new_meta and got.digest == digest and got.files == {}
    np.testing.assert_array_equal(
        got.arrays["quality_model"]["coef_"], _arrays(seed=5)["quality_model"]["coef_"]
    )
    assert _siblings(art) == []


@pytest.mark.parametrize("where", ["npz", "blob", "commit"])
def test_failed_write_leaves_old_artifact_intact(art: Path, monkeypatch, where: str):
    before = artifact_digest(art)
    if where == "npz":  # the second component file fails
        monkeypatch.setattr(store, "_write_npz", _fail_on_call(2, store._write_npz))
    elif where == "blob":  # the raw file after the npz files fails
        monkeypatch.setattr(store, "_write_file", _fail_on_call(2, store._write_file))
    else:  # fallback swap: old moved aside, then moving the new one in fails
        monkeypatch.setattr(atomic, "_rename_exchange", lambda src, dst: False)
        real_rename = os.rename

        def rename(src, dst):
            if ".routeiq-tmp-" in str(src):
                raise OSError("simulated crash during swap")
            return real_rename(src, dst)

        monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(OSError, match="simulated"):
        write_artifact(art, {**META, "lambda": 1.0}, _arrays(seed=9), files={"t.json": b"{}"})
    monkeypatch.undo()
    assert artifact_digest(art) == before
    assert read_artifact(art).metadata == META
    assert _siblings(art) == []


@pytest.mark.slow  # starts a subprocess to get a dead pid
def test_crash_leftovers_cleaned_by_next_write(art: Path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)  # that process has exited
    leftover_tmp = art.parent / f".{art.name}.routeiq-tmp-{pid}-abc123"
    leftover_old = art.parent / f".{art.name}.routeiq-old-{pid}-def456"
    alive = art.parent / f".{art.name}.routeiq-tmp-{os.getppid()}-a1b2c3"  # a live writer
    for d in (leftover_tmp, leftover_old, alive):
        d.mkdir()
        (d / "metadata.json").write_text("{}")
    # a crash leaves only these clearly named siblings; the artifact itself still reads
    assert read_artifact(art).metadata == META
    write_artifact(art, META, _arrays())
    assert _siblings(art) == [alive.name]


def test_interrupted_swap_points_to_old_copy(tmp_path: Path):
    """Crash between the two fallback renames: the old artifact survives, and is named."""
    path = tmp_path / "router"
    write_artifact(path, META, _arrays())
    os.rename(path, tmp_path / ".router.routeiq-old-1-abc")
    with pytest.raises(ArtifactError, match=r"previous artifact at .*routeiq-old"):
        read_artifact(path)
    assert read_artifact(tmp_path / ".router.routeiq-old-1-abc").metadata == META


def test_refuses_to_replace_non_artifact(tmp_path: Path):
    victim = tmp_path / "home"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not a routeiq artifact"):
        write_artifact(victim, META, _arrays())
    assert (victim / "precious.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match="not a directory"):
        write_artifact(tmp_path / "file", META, _arrays())
    empty = tmp_path / "empty"
    empty.mkdir()
    write_artifact(empty, META, _arrays())
    assert read_artifact(empty).metadata == META
