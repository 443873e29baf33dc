"""Shared fixtures. Tests that need ../shared/datasets skip with a reason when it is absent."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# One BLAS thread: on a shared 2-core machine multi-threaded BLAS makes small matmuls slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# LiteLLM reads the price map it ships instead of trying to fetch one (no network here).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import prometheus_client
import pytest

import routeiq
from routeiq.router import LearnedRouter
from routeiq.serving import DecisionEngine, DecisionLog, RouteIQSettings, RouterRegistry
from routeiq.telemetry.metrics import RouteIQMetrics

REPO = Path(__file__).resolve().parents[1]


def datasets_dir() -> Path:
    return Path(os.environ.get("ROUTEIQ_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def routerbench_csv() -> Path:
    path = datasets_dir() / "routerbench" / "routerbench_0shot_arc_mbpp_winogrande.csv"
    if not path.exists():
        pytest.skip(f"RouterBench data not found at {path} (set ROUTEIQ_DATASETS)")
    return path


@pytest.fixture(scope="session")
def llmrouter_files() -> tuple[Path, Path]:
    base = datasets_dir() / "llmrouter"
    csv, prices = base / "llmrouter_dc_scores.csv", base / "llm_candidates.json"
    if not csv.exists() or not prices.exists():
        pytest.skip(f"LLMRouter data not found under {base} (set ROUTEIQ_DATASETS)")
    return csv, prices


@pytest.fixture(scope="session")
def demo_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo router artifact, built once per session (read-only: copy it to modify it)."""
    from routeiq.integrations.litellm.demo import build_demo_router

    path = tmp_path_factory.mktemp("routeiq-demo") / "router"
    build_demo_router(path)
    return path


@pytest.fixture(scope="session")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo router artifact (models gpt-4o, gpt-4o-mini), built without LiteLLM: the
    ``demo_artifact`` fixture imports ``routeiq.integrations.litellm.demo``, whose package
    imports LiteLLM (~6 s), so this one loads ``demo.py`` by file path."""
    source = Path(routeiq.__file__).parent / "integrations" / "litellm" / "demo.py"
    spec = importlib.util.spec_from_file_location("_routeiq_demo_without_litellm", source)
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    path = tmp_path_factory.mktemp("routeiq-serving") / "router"
    demo.build_demo_router(path)
    return path


@pytest.fixture(scope="session")
def router(artifact: Path) -> LearnedRouter:
    return LearnedRouter.load(artifact)


@pytest.fixture
def metrics() -> RouteIQMetrics:
    return RouteIQMetrics(prometheus_client.CollectorRegistry())


@pytest.fixture
def make_engine(
    artifact: Path, router: LearnedRouter, metrics: RouteIQMetrics, tmp_path: Path
) -> Iterator[Callable[..., DecisionEngine]]:
    """``make_engine(settings_overrides, router=..., log=False, **engine_kwargs)``."""
    engines: list[DecisionEngine] = []

    def make(
        settings: dict[str, Any] | None = None,
        *,
        router: LearnedRouter = router,
        log: bool | DecisionLog = False,
        **kwargs: Any,
    ) -> DecisionEngine:
        data = {"router": str(artifact), "lambda": 20.0, **(settings or {})}
        decision_log = log
        if log is True:
            decision_log = DecisionLog(tmp_path / "decisions.jsonl", metrics=metrics)
        engine = DecisionEngine(
            RouteIQSettings.model_validate(data),
            RouterRegistry({artifact: router}),
            decision_log=decision_log or None,
            metrics=metrics,
            **kwargs,
        )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()
