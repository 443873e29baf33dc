"""``routeiq migrate``: an old RouteIQ gateway config becomes stock LiteLLM + RouteIQ settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from routeiq.cli.main import app
from routeiq.migrate import (
    CALLBACK,
    SAME_FAMILY,
    migrate,
)
from routeiq.migrate_files import MigrationError, read_env_file
from routeiq.quality import quality_model_names
from routeiq.serving.settings import RouteIQSettings

OLD = Path(__file__).parent / "data" / "old_gateway_config.yaml"
OLD_ENV = """\
# the old gateway's .env
LLMROUTER_ALLOW_PICKLE_MODELS=true
LLMROUTER_ENFORCE_SIGNED_MODELS=true
export LLMROUTER_STRATEGY_WEIGHTS='{"llmrouter-knn": 80, "llmrouter-mlp": 20}'
LLMROUTER_EXPERIMENT_ID=knn-vs-mlp
ROUTEIQ_MAX_CONCURRENT_REQUESTS=64   # per process
POLICY_ENGINE_ENABLED=true
POLICY_CONFIG_PATH=/app/config/policies.yaml
LLMROUTER_TELEMETRY_LEVEL=full
"""
runner = CliRunner()


def has(section: str) -> bool:
    return section in RouteIQSettings.model_fields


@pytest.fixture
def migrated(tmp_path: Path) -> tuple[dict[str, Any], str, str]:
    env = tmp_path / ".env"
    env.write_text(OLD_ENV)
    result = runner.invoke(app, ["migrate", str(OLD), "--env-file", str(env)])
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.stdout), result.stdout, result.stderr


def test_migrated_config_passes_the_config_checker(migrated, artifact, tmp_path):
    fragment, _, _ = migrated
    config = {**yaml.safe_load(OLD.read_text()), **fragment}  # keep model_list, general_settings
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    shutil.copytree(artifact, tmp_path / "router")  # stands in for the retrained knn router
    shutil.copytree(artifact, tmp_path / "router-mlp")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.run(
        [sys.executable, "-m", "routeiq.integrations.litellm.proxy", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["groups"] == ["chat"] and summary["shuffled_groups"] == []
    assert set(summary["routers"]) == {str(tmp_path / "router"), str(tmp_path / "router-mlp")}


def test_what_is_carried_over(migrated):
    fragment, _, _ = migrated
    assert fragment["router_settings"] == {"num_retries": 2, "timeout": 600}  # no strategy
    assert fragment["litellm_settings"] == {"drop_params": True, "callbacks": [CALLBACK]}
    settings = fragment["routeiq_settings"]
    assert settings["router"] == "./router"
    if has("hot_reload"):
        assert settings["hot_reload"] == {"enabled": True, "interval_s": 300}
    if has("shedding"):
        assert settings["shedding"] == {"max_in_flight": 64}
    experiment = settings["groups"]["chat"]["experiment"]
    assert experiment["name"] == "knn-vs-mlp"
    assert [(v["name"], v["weight"], v.get("control", False)) for v in experiment["variants"]] == [
        ("knn", 80.0, True),
        ("mlp", 20.0, False),
    ]
    assert experiment["variants"][1]["router"] == "./router-mlp"
    RouteIQSettings.model_validate(settings)


def test_what_is_not_carried_over_is_named(migrated):
    _, text, stderr = migrated
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "routeiq train --router knn --out ./router --data <your data> " in comments
    assert "--prices /app/config/llm_candidates.json" in comments
    assert "routeiq train --router mlp --out ./router-mlp" in comments
    assert "model_path (/app/models/knn_router.pt): old model files (pickle" in comments
    assert "LLMROUTER_ALLOW_PICKLE_MODELS: RouteIQ never unpickles" in comments
    assert "LLMROUTER_ENFORCE_SIGNED_MODELS (true):" in comments
    assert "POLICY_CONFIG_PATH (/app/config/policies.yaml):" in comments
    assert "POLICY_ENGINE_ENABLED (true):" in comments
    assert "LLMROUTER_TELEMETRY_LEVEL: unknown old setting" in comments
    assert "litellm --config config.yaml" in comments
    assert "carried over" in stderr and " not " in stderr


@pytest.mark.parametrize(
    ("strategy", "expect"),
    [
        ("llmrouter-svm", {"router": "./router"}),
        ("llmrouter-elo", {"router": "./router"}),
        ("llmrouter-smallest", {"mode": "cheapest"}),
        ("llmrouter-largest", {"router": "./router", "lambda": 0.0}),
        ("simple-shuffle", {"mode": "shuffle"}),
        ("llmrouter-hybrid", {"router": "./router"}),
    ],
)
def test_each_old_strategy(strategy, expect):
    m = migrate({"router_settings": {"routing_strategy": strategy}})
    assert m.sections["routeiq_settings"] == expect
    if strategy == "llmrouter-hybrid":
        assert "no RouteIQ equivalent; train the default ensemble" in m.dropped[0].why
        assert m.train[0].startswith("routeiq train --router ensemble")
    if strategy == "llmrouter-elo":
        assert m.train[0].startswith("routeiq train --router elo ")


def test_the_env_strategy_overrides_the_config():
    m = migrate(
        {"router_settings": {"routing_strategy": "llmrouter-knn"}},
        {"LLMROUTER_ACTIVE_ROUTING_STRATEGY": "llmrouter-mf"},
    )
    assert m.train[0].startswith("routeiq train --router mf ")
    assert any("overridden" in n.why for n in m.dropped)


def test_old_families_map_to_real_quality_models():
    assert set(SAME_FAMILY.values()) <= set(quality_model_names())


def test_a_value_that_does_not_fit_is_reported_not_emitted():
    m = migrate({}, {"ROUTEIQ_MAX_CONCURRENT_REQUESTS": "lots"})
    assert "shedding" not in m.sections["routeiq_settings"]
    note = next(n for n in m.dropped if "MAX_CONCURRENT" in n.old)
    assert ("does not fit" if has("shedding") else "planned") in note.why


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("router_settings: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "expected a YAML mapping, got list"),
    ],
)
def test_a_bad_config_file_exits_2(tmp_path, content, message):
    path = tmp_path / "old.yaml"
    if content is not None:
        path.write_text(content)
    result = runner.invoke(app, ["migrate", str(path)])
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert result.stdout == ""


def test_a_bad_env_file_exits_2(tmp_path):
    env = tmp_path / ".env"
    env.write_text("LLMROUTER_MODEL_PATH=/x\nthis is not an assignment\n")
    with pytest.raises(MigrationError, match=r"\.env:2: expected KEY=VALUE"):
        read_env_file(env)
    result = runner.invoke(app, ["migrate", str(OLD), "--env-file", str(env)])
    assert result.exit_code == 2 and "expected KEY=VALUE" in result.stderr
