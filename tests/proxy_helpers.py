"""Running real LiteLLM proxy processes in tests: start, wait, call, read metrics, stop.

Imported as ``from proxy_helpers import ...`` (pytest puts tests/ on sys.path). Proxies bind
127.0.0.1 only, run in their own process group and are always stopped.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
LITELLM = Path(sys.executable).with_name("litellm")
START_TIMEOUT_S = 240


def require_litellm_proxy() -> None:
    """Skip the calling test module unless ``litellm[proxy]`` is installed (found without
    importing it: the proxy server module takes seconds to import)."""
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    if (
        spec is None
        or spec.origin is None
        or not (Path(spec.origin).parent / "proxy" / "proxy_server.py").exists()
        or importlib.util.find_spec("fastapi") is None
    ):
        pytest.skip("litellm[proxy] is not installed", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proxy_env(master_key: str, metrics_dir: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["LITELLM_MASTER_KEY"] = master_key
    if metrics_dir is not None:  # every worker's metrics, readable after the proxy exits
        metrics_dir.mkdir(parents=True, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    # The proxy imports routeiq like any pip-installed package; make the source tree importable
    # even when the package is not installed into this venv.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env


def start_proxy(config: Path, workers: int, out: Path, env: dict[str, str], port: int) -> Any:
    cmd = [
        str(LITELLM),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        str(workers),
        "--timeout_worker_healthcheck",
        "120",
    ]
    with out.open("wb") as sink:
        return subprocess.Popen(
            cmd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=config.parent,
            start_new_session=True,
        )


def wait_ready(proc: Any, out: Path, workers: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while out.read_text(errors="replace").count("Application startup complete") < workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"proxy did not start with {workers} workers:\n{out.read_text()[-4000:]}")
        time.sleep(0.5)


def stop(proc: Any, timeout: float = 30) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def log_lines(log: Path, at_least: int, timeout: float = 30) -> list[dict]:
    """The decision log's lines once there are at least ``at_least`` of them."""
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= at_least:
            return [json.loads(line) for line in lines]
        time.sleep(0.1)
    pytest.fail(f"decision log has {len(lines)} lines, expected at least {at_least}")


def counter_total(metrics_dir: Path, name: str, **labels: str) -> float:
    """A counter summed over every worker (multiprocess files), optionally label-filtered."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    return sum(
        s.value
        for family in registry.collect()
        if family.name == name
        for s in family.samples
        if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items())
    )
