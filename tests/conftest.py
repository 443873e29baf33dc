"""Shared fixtures. Tests that need ../shared/datasets skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

# One BLAS thread: on a shared 2-core machine multi-threaded BLAS makes small matmuls slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# LiteLLM reads the price map it ships instead of trying to fetch one (no network here).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest

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
