"""Third-party quality models and featurizers through entry points, end to end.

Uses the installable example distribution in ``tests/extension_pkg`` (``routeiq-example-ext``:
quality model ``centroid``, featurizer ``charhash``), installed by the Makefile's install step.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from routeiq.artifacts import ArtifactError, read_artifact, write_artifact
from routeiq.cli.main import app
from routeiq.data.records import dataset_to_records, write_records
from routeiq.extensions import ExtensionError, Provider, ShadowedExtensionWarning
from routeiq.features import FEATURIZER_REGISTRY, featurizer_class, featurizers
from routeiq.integrations.litellm.demo import demo_dataset
from routeiq.quality import (
    QUALITY_MODEL_REGISTRY,
    KNNQuality,
    make_quality_model,
    quality_model_class,
    quality_models,
)
from routeiq.router import LearnedRouter
from routeiq.serving import DecisionEngine, RouteIQSettings, RouteRequest, RouterRegistry
from routeiq.serving.registry import load_routers
from routeiq.telemetry.metrics import RouteIQMetrics

DIST = "routeiq-example-ext"
try:
    DIST_VERSION = version(DIST)
except PackageNotFoundError:  # pragma: no cover - the Makefile installs it
    pytest.skip(
        f"{DIST} is not installed: pip install -e tests/extension_pkg", allow_module_level=True
    )

CODE = "Write a Python function that merges overlapping intervals, with unit tests."
CHAT = "Hi! How are you doing this weekend? Any fun plans?"
runner = CliRunner()


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset as RouteIQ JSONL records, 80/20 train/test."""
    rows = []
    for i, rec in enumerate(dataset_to_records(demo_dataset())):
        rows.append(
            {**rec.model_dump(exclude_none=True), "split": "test" if i % 5 == 0 else "train"}
        )
    path = tmp_path_factory.mktemp("ext-data") / "demo.jsonl"
    write_records(path, rows)
    return path


@pytest.fixture(scope="module")
def ext_artifact(records: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``routeiq train --quality-model centroid --featurizer charhash``."""
    out = tmp_path_factory.mktemp("ext-router") / "router"
    args = ["train", "--data", str(records), "--out", str(out), "--lambda", "20"]
    result = runner.invoke(app, [*args, "--quality-model", "centroid", "--featurizer", "charhash"])
    assert result.exit_code == 0, result.output
    return out


def rewrite_provider(src: Path, dst: Path, part: str, provider: dict[str, str]) -> Path:
    """A copy of an artifact whose ``part`` records another provider (a valid, signed-off
    artifact written through the store, not a tampered file)."""
    art = read_artifact(src)
    meta = json.loads(json.dumps(art.metadata))
    meta[part]["provider"] = provider
    write_artifact(dst, meta, art.arrays, art.files)
    return dst


# ------------------------------------------------------------------------------ lookup


def test_extensions_are_found_by_name_next_to_builtins():
    assert quality_model_class("centroid").__module__.startswith("routeiq_example_ext")
    assert featurizer_class("charhash").__module__.startswith("routeiq_example_ext")
    assert "centroid" in quality_models() and "knn" in quality_models()
    assert set(featurizers()) >= {"lexical", "minilm", "charhash"}
    assert make_quality_model("centroid", k=3).get_params() == {"k": 3, "shrinkage": 5.0, "seed": 0}
    assert QUALITY_MODEL_REGISTRY.provider("centroid") == Provider(DIST, DIST_VERSION)
    assert QUALITY_MODEL_REGISTRY.provider("knn") is None
    with pytest.raises(ValueError, match=r"unknown quality model 'nope'; known: .*centroid"):
        quality_model_class("nope")
    with pytest.raises(TypeError):
        quality_models()["x"] = KNNQuality  # type: ignore[index]


@pytest.fixture
def rogue_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real (metadata-only) distribution on sys.path registering bad entry points."""
    info = tmp_path / "routeiq_rogue_ext-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: routeiq-rogue-ext\nVersion: 0.1.0\n"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [routeiq.quality_models]
            knn = routeiq_example_ext:CentroidQuality
            notamodel = routeiq_example_ext:CharHashFeaturizer
            misnamed = routeiq_example_ext:CentroidQuality
            broken = routeiq_rogue_missing_module:Thing
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_an_entry_point_cannot_shadow_a_builtin(rogue_dist):
    with pytest.warns(ShadowedExtensionWarning, match="'knn' is a built-in quality model"):
        names = QUALITY_MODEL_REGISTRY.names()
    assert names.count("knn") == 1
    assert quality_model_class("knn") is KNNQuality  # built-ins never read entry points


@pytest.mark.filterwarnings("ignore::routeiq.extensions.ShadowedExtensionWarning")
def test_bad_entry_points_fail_with_a_clear_error(rogue_dist):
    with pytest.raises(ExtensionError, match=r"'notamodel'.*is not a QualityModel subclass"):
        quality_model_class("notamodel")
    with pytest.raises(
        ExtensionError, match="class attribute `name` is 'centroid', not 'misnamed'"
    ):
        quality_model_class("misnamed")
    with pytest.raises(ExtensionError, match=r"'broken'.*failed to import"):
        quality_model_class("broken")
    assert quality_model_class("centroid").name == "centroid"  # the good one still works


# ------------------------------------------------------------------------------ train, eval, load


def test_train_by_name_records_the_provider(ext_artifact):
    meta = read_artifact(ext_artifact).metadata
    want = {"distribution": DIST, "version": DIST_VERSION}
    assert meta["quality_model"]["name"] == "centroid"
    assert meta["quality_model"]["provider"] == want
    assert meta["featurizer"]["name"] == "charhash"
    assert meta["featurizer"]["provider"] == want
    assert meta["cost_model"].get("provider") is None  # built-in parts record none
    # State is npz + JSON only: the arrays came back as arrays.
    assert set(read_artifact(ext_artifact).arrays["quality_model"]) == {
        "centroids_",
        "mean_",
        "table_",
    }
    learned = LearnedRouter.load(ext_artifact)
    assert type(learned.quality_model).__name__ == "CentroidQuality"
    q = learned.predict_quality([CODE, CHAT])
    # Code is solved only by gpt-4o in the demo labels; chit-chat by both.
    assert q[0, 0] - q[0, 1] > q[1, 0] - q[1, 1]


def test_builtin_artifacts_record_no_provider(artifact):
    meta = read_artifact(artifact).metadata
    assert "provider" not in meta["quality_model"] and "provider" not in meta["featurizer"]


def test_eval_by_name(records, tmp_path):
    args = ["eval", "--data", str(records), "--out", str(tmp_path), "--featurizer", "charhash"]
    result = runner.invoke(app, [*args, "--routers", "centroid,constant"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert {r["router"] for r in report["rows"]} >= {"centroid", "constant"}


async def test_the_serving_engine_routes_with_an_extension_artifact(ext_artifact):
    settings = RouteIQSettings.model_validate({"router": str(ext_artifact), "lambda": 20.0})
    engine = DecisionEngine(
        settings,
        RouterRegistry(load_routers(settings)),
        metrics=RouteIQMetrics(__import__("prometheus_client").CollectorRegistry()),
    )
    try:
        from routeiq.router import Candidate

        cands = (Candidate("strong", "gpt-4o", 0.0026), Candidate("cheap", "gpt-4o-mini", 3e-5))
        msgs = [{"role": "user", "content": CHAT}]
        decision = await engine.decide(RouteRequest("chat", cands, messages=msgs))
        assert decision.chosen == "cheap" and decision.fallback_reason is None
    finally:
        engine.close()


# ------------------------------------------------------------------------------ refusals


HIDE_DIST = """
import importlib.machinery as m, sys
class Hidden(m.PathFinder):
    @classmethod
    def find_distributions(cls, *args, **kwargs):
        return (d for d in super().find_distributions(*args, **kwargs)
                if d.metadata["Name"] != "routeiq-example-ext")
sys.meta_path[:] = [Hidden if f is m.PathFinder else f for f in sys.meta_path]
from routeiq.cli.main import app
app(sys.argv[1:])
"""


def test_loading_refuses_when_the_provider_is_not_installed(ext_artifact):
    """A fresh interpreter in which the distribution is not visible (the shared venv keeps it)."""
    proc = subprocess.run(
        [sys.executable, "-c", HIDE_DIST, "route", CODE, "--router", str(ext_artifact)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert f"is provided by package '{DIST}' {DIST_VERSION}, which is not installed" in err
    assert f"pip install '{DIST}>={DIST_VERSION}" in err
    assert "Traceback" not in proc.stderr


def test_loading_refuses_a_missing_provider_recorded_in_the_artifact(ext_artifact, tmp_path):
    gone = {"distribution": "routeiq-gone-ext", "version": "2.3.0"}
    path = rewrite_provider(ext_artifact, tmp_path / "r", "quality_model", gone)
    with pytest.raises(ArtifactError) as info:
        LearnedRouter.load(path)
    assert str(info.value) == (
        f"{path}: quality model 'centroid' is provided by package 'routeiq-gone-ext' 2.3.0, "
        "which is not installed; pip install 'routeiq-gone-ext>=2.3.0,<3'"
    )


def test_loading_refuses_another_major_version(ext_artifact, tmp_path):
    newer = {"distribution": DIST, "version": "7.0.0"}
    path = rewrite_provider(ext_artifact, tmp_path / "r", "featurizer", newer)
    with pytest.raises(
        ArtifactError, match=rf"featurizer 'charhash' .* {DIST_VERSION} is installed"
    ):
        LearnedRouter.load(path)
    # The proxy's loader reports it as a configuration error naming the artifact.
    settings = RouteIQSettings.model_validate({"router": str(path)})
    with pytest.raises(ValueError, match="another major version"):
        load_routers(settings)


def test_loading_refuses_a_provider_that_no_longer_provides_the_name(ext_artifact, tmp_path):
    other = {"distribution": "routeiq-router", "version": version("routeiq-router")}
    path = rewrite_provider(ext_artifact, tmp_path / "r", "quality_model", other)
    with pytest.raises(ArtifactError, match="but package 'routeiq-example-ext' provides it"):
        LearnedRouter.load(path)
    assert FEATURIZER_REGISTRY.provider("charhash") == Provider(DIST, DIST_VERSION)


# ------------------------------------------------------------------------------ the proxy


# The proxy's imports bring the importlib_metadata backport, whose finder joins sys.meta_path
# on import: import it first, then hide the distribution from every finder.
HIDE_DIST_CHECK = """
import runpy, sys
try:
    import importlib_metadata  # noqa: F401
except ImportError:
    pass
class Hide:
    def __init__(self, finder):
        self.finder = finder
    def __getattr__(self, name):
        return getattr(self.finder, name)
    def find_distributions(self, *args, **kwargs):
        return (d for d in self.finder.find_distributions(*args, **kwargs)
                if d.metadata["Name"] != "routeiq-example-ext")
sys.meta_path[:] = [Hide(f) if hasattr(f, "find_distributions") else f for f in sys.meta_path]
sys.argv[0] = "check"
runpy.run_module("routeiq.integrations.litellm.proxy", run_name="__main__")
"""


@pytest.mark.slow
def test_a_real_proxy_routes_with_an_extension_artifact(ext_artifact, tmp_path):
    pytest.importorskip("litellm.proxy.proxy_server", reason="litellm[proxy] is not installed")
    import secrets

    import httpx
    import yaml

    from proxy_helpers import free_port, proxy_env, start_proxy, stop, wait_ready
    from routeiq.artifacts import artifact_digest

    deployments = [
        {
            "model_name": "chat",
            "litellm_params": {"model": model, "api_key": "fake", "mock_response": ident},
            "model_info": {"id": ident},
        }
        for ident, model in (("strong", "gpt-4o"), ("cheap", "gpt-4o-mini"))
    ]
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": deployments,
                "litellm_settings": {
                    "callbacks": ["routeiq.integrations.litellm.proxy.routeiq_callback"]
                },
                "routeiq_settings": {"router": str(ext_artifact), "lambda": 20.0},
            }
        )
    )
    # The config checker loads the artifact as the proxy does; without the package, it
    # refuses with the install line.
    env = proxy_env("sk-unused")
    hidden = subprocess.run(
        [sys.executable, "-c", HIDE_DIST_CHECK, str(config)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert hidden.returncode == 1, hidden.stdout + hidden.stderr
    assert f"pip install '{DIST}>={DIST_VERSION}" in " ".join(hidden.stderr.split())

    key = "sk-" + secrets.token_hex(16)
    out, port = tmp_path / "proxy.log", free_port()
    proc = start_proxy(config, 1, out, proxy_env(key), port)
    try:
        wait_ready(proc, out, 1)
        with httpx.Client(timeout=60) as client:
            reply = client.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "chat", "messages": [{"role": "user", "content": CHAT}]},
            )
    finally:
        stop(proc)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-routeiq-router"] == artifact_digest(ext_artifact)
    assert reply.headers["x-routeiq-outcome"] == "routed"
