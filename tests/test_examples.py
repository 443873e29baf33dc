"""The configs in examples/ stay valid: each is checked as the proxy would load it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", ["proxy", "learning_loop"])
def test_example_proxy_config_passes_the_check(name, demo_artifact, tmp_path, capsys):
    from routeiq.integrations.litellm.proxy import check

    shutil.copy(EXAMPLES / name / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(demo_artifact, tmp_path / "router")
    assert check(str(tmp_path / "config.yaml")) == 0, capsys.readouterr().err
    assert '"chat"' in capsys.readouterr().out
