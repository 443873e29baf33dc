"""The router shipped in the package: it verifies, settings resolve to it, unseen deployments map
onto its price tiers, its build is deterministic and the wheel carries it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from routeiq.artifacts import ArtifactError, artifact_digest, read_artifact
from routeiq.default_router import default_router_path, is_default_router
from routeiq.default_router.build import (
    TIERS,
    build_default_router,
    evaluate_default_router,
    tier_dataset,
    training_rows,
)
from routeiq.router import Candidate, LearnedRouter
from routeiq.serving import RouteIQSettings, RouterRegistry
from routeiq.serving.settings_file import parse_settings

REPO = Path(__file__).resolve().parents[1]
CODE = "Write a python function to check whether the given number is a perfect square or not."
CHAT = "Hi! How are you today?"


@pytest.fixture(scope="module")
def default() -> LearnedRouter:
    return LearnedRouter.load(default_router_path())


# ------------------------------------------------------------------------ the packaged artifact


def test_the_packaged_artifact_verifies_and_is_small(default: LearnedRouter) -> None:
    path = default_router_path()
    assert path.is_dir() and path.is_absolute()
    art = read_artifact(path, expected_digest=artifact_digest(path))
    assert default.digest == art.digest == artifact_digest(path)
    assert default.models_ == list(TIERS)
    assert default.target is not None and str(default.target) == "quality>=0.95"
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 1_000_000, f"the default router grew to {size} bytes"
    # Nothing but the artifact in its directory (an extra file would fail verification).
    manifest = json.loads((path / "manifest.json").read_text())
    assert {f.name for f in path.iterdir()} == {*manifest["files"], "manifest.json"}


def test_an_altered_copy_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "router"
    shutil.copytree(default_router_path(), copy)
    with (copy / "featurizer.npz").open("r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ArtifactError, match=r"featurizer.npz: altered"):
        LearnedRouter.load(copy)
    assert not is_default_router(copy)


def test_unseen_deployments_map_onto_the_tiers_by_price(default: LearnedRouter) -> None:
    tokens = 30
    cands = [
        Candidate("premium", "openai/gpt-4o", tokens * 2.5e-6 + 256 * 1e-5),
        Candidate("mid", "anthropic/claude-3-5-haiku", tokens * 8e-7 + 256 * 4e-6),
        Candidate("local", "hosted_vllm/llama-3-8b", 0.0),
        Candidate("unpriced", "hosted_vllm/mystery-13b"),
    ]
    for prompt in (CODE, CHAT):
        decision = default.route(prompt, cands)
        rows = {c["name"]: c for c in decision.to_dict()["candidates"]}
        assert rows["premium"]["mapped_from"] == "gpt-4-1106-preview"
        assert rows["mid"]["mapped_from"] == "gpt-3.5-turbo-1106"
        assert rows["local"]["mapped_from"] == "mistralai/mistral-7b-chat"
        assert {rows[n]["mapping_rule"] for n in ("premium", "mid", "local")} == {"price_prior"}
        # No price at all: the mean of the tiers at their mean cost (never cheap by accident).
        assert rows["unpriced"]["mapping_rule"] == "mean"
        assert decision.chosen in rows


# -------------------------------------------------------------------------------- settings


def test_omitted_router_means_the_packaged_default() -> None:
    settings = RouteIQSettings.model_validate({"lambda": 20})
    assert settings.group("chat").router == default_router_path()
    assert settings.router_paths() == {default_router_path()}
    named = parse_settings({"router": "default"}, base_dir=Path("/somewhere"))
    assert named.group("chat").router == default_router_path()


def test_router_none_an_explicit_path_and_other_modes(tmp_path: Path) -> None:
    none = parse_settings({"router": "none"}, base_dir=tmp_path)
    assert none.group("chat").router is None
    assert none.router_paths() == set()
    explicit = parse_settings({"router": "./mine"}, base_dir=tmp_path)
    assert explicit.group("chat").router == tmp_path / "mine"
    assert explicit.router_paths() == {tmp_path / "mine"}
    assert RouteIQSettings.model_validate({"mode": "cheapest"}).router_paths() == set()
    mixed = parse_settings(
        {
            "router": "none",
            "groups": {"a": {"router": "default"}, "b": {"router": "./b"}, "c": {}},
        },
        base_dir=tmp_path,
    )
    assert mixed.group("a").router == default_router_path()
    assert mixed.group("b").router == tmp_path / "b"
    assert mixed.group("c").router is None
    assert mixed.router_paths() == {default_router_path(), tmp_path / "b"}


def test_a_default_given_to_the_registry_stands_in_for_the_packaged_one(
    default: LearnedRouter, router: LearnedRouter
) -> None:
    group = RouteIQSettings().group("chat")
    assert RouterRegistry({default_router_path(): default}).for_group(group) is default
    assert RouterRegistry({default_router_path(): default}, router).for_group(group) is router


# ----------------------------------------------------------------------------- the build


def test_the_build_is_deterministic(routerbench_csv: Path, tmp_path: Path) -> None:
    one = build_default_router(routerbench_csv, tmp_path / "one", max_train_rows=300)
    two = build_default_router(routerbench_csv, tmp_path / "two", max_train_rows=300)
    other = build_default_router(routerbench_csv, tmp_path / "seed1", seed=1, max_train_rows=300)
    assert one.digest == two.digest == artifact_digest(tmp_path / "one")
    assert (tmp_path / "one" / "featurizer.npz").read_bytes() == (
        tmp_path / "two" / "featurizer.npz"
    ).read_bytes()
    assert other.digest != one.digest
    assert one.n_train == 300


def test_the_packaged_artifact_was_built_from_the_shared_train_split(
    routerbench_csv: Path, default: LearnedRouter
) -> None:
    from routeiq.data import load_dataset

    train = training_rows(tier_dataset(load_dataset(routerbench_csv)))
    assert default.training_digest_ == train.digest()


def test_evaluation_on_the_held_out_split(routerbench_csv: Path) -> None:
    ev = evaluate_default_router(routerbench_csv, default_router_path())
    assert ev["best_single"] == "gpt-4-1106-preview"
    assert ev["n_test"] > 900
    # The calibrated target (95% of the best single model's quality) at a fraction of its cost.
    assert ev["quality"] >= 0.9 * ev["best_single_quality"]
    assert ev["cost_fraction"] < 1.0
    assert sum(ev["shares"].values()) == pytest.approx(1.0)


def test_bad_build_input_is_refused(routerbench_csv: Path, tmp_path: Path) -> None:
    from routeiq.data import load_dataset
    from routeiq.data.dataset import DataError

    data = load_dataset(routerbench_csv)
    with pytest.raises(DataError, match="no column for"):
        tier_dataset(data, ("gpt-9",))
    with pytest.raises(ValueError, match="at least 50"):
        build_default_router(routerbench_csv, tmp_path / "x", max_train_rows=3)


# ----------------------------------------------------------------------------- the wheel


@pytest.mark.slow
def test_the_wheel_contains_the_artifact(tmp_path: Path) -> None:
    pytest.importorskip("build", reason="the 'build' package is not installed")
    # Build from a copy: setuptools writes build/ and *.egg-info beside pyproject.toml.
    src = tmp_path / "src-tree"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "README.md", src)
    shutil.copytree(
        REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    out = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("routeiq_router-*.whl")
    packaged = default_router_path()
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for f in packaged.iterdir():
            member = f"routeiq/default_router/artifact/{f.name}"
            assert member in names
            assert zf.read(member) == f.read_bytes()
        zf.extractall(tmp_path / "installed", [n for n in names if "default_router/artifact" in n])
    unpacked = tmp_path / "installed" / "routeiq" / "default_router" / "artifact"
    assert artifact_digest(unpacked) == artifact_digest(packaged)
    LearnedRouter.load(unpacked)  # verifies from the wheel's bytes
