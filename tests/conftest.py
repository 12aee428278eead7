"""Shared fixtures: the shared data folder, and the `gpu` marker's skip logic."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SET5 = SHARED / "data" / "eval" / "Set5"
SET14 = SHARED / "data" / "eval" / "Set14"
LARGE = SHARED / "data" / "large"


@functools.lru_cache(maxsize=1)
def gpu_unavailable_reason() -> str | None:
    """None when an NVIDIA GPU and TensorRT are usable here, else why not."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except ImportError:
        return "cuda-python is not installed (no GPU stack)"
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        return f"no CUDA device ({err})"
    try:
        import tensorrt  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return "tensorrt is not installed"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = None
    for item in items:
        if "gpu" in item.keywords:
            reason = reason or gpu_unavailable_reason()
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"gpu test: {reason}"))


@pytest.fixture(scope="session")
def set5_dir() -> Path:
    if not SET5.is_dir():
        pytest.fail(f"shared evaluation data missing at {SET5}")
    return SET5
