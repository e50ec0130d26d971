"""Shared fixtures: where the third-party test data lies, the default model assets, and markers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """`../shared` beside the checkout; the env var CPM_SHARED overrides it."""
    return Path(os.environ.get("CPM_SHARED", REPO.parent / "shared")).resolve()


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    import torch

    run_slow = config.getoption("--run-slow") or "slow" in (config.getoption("-m") or "")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --run-slow"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    data = shared_dir() / "data"
    if not data.is_dir():
        pytest.skip(f"shared data not found at {data} (set CPM_SHARED to the folder that holds data/)")
    return data


@pytest.fixture(scope="session")
def corpus_path(shared_data) -> Path:
    path = shared_data / "corpus" / "arxiv_llm_mini.jsonl"
    if not path.exists():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture(scope="session")
def bfcl_dir(shared_data) -> Path:
    return shared_data / "bfcl"


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    from engine.assets import ASSETS

    path = ASSETS["smollm2-135m"].locate()
    if path is None:
        pytest.skip("smollm2-135m not installed (make test installs it)")
    return path


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    from engine.assets import ASSETS

    path = ASSETS["minilm"].locate()
    if path is None:
        pytest.skip("minilm not installed (make test installs it)")
    return path
