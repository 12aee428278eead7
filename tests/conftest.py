"""Shared fixtures: the shared data folder, and the `gpu` marker's skip logic."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pytest
from irn_trt.runtime.manifest import ModelManifest, load_manifest

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


# --- runtime tests: a real exported random-weight IRN x4 (session-scoped) ----------------


@dataclass(frozen=True)
class ExportedModel:
    """A model directory made by the exporter, and the checkpoint it came from."""

    path: Path
    checkpoint: Path
    manifest: ModelManifest


@pytest.fixture(scope="session")
def tmp_model_dir(tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    """Random-weight IRN x4 exported at FP32 + FP16 (uint8 I/O, z = 0) to a temp dir.

    The weights are perturbed less than the exporter's default (std 0.005 instead
    of 0.02: Set5-crop round trip ~19 dB instead of ~11 dB), so small numeric
    differences between backends and precisions weigh more in PSNR.
    """
    from irn_trt.export.api import export_model
    from irn_trt.export.random_init import random_model
    from irn_trt.train.checkpoint import checkpoint_sha256, save_checkpoint

    root = tmp_path_factory.mktemp("irn_x4_random")
    model = random_model("irn_x4", seed=0, std=0.005)
    ckpt = save_checkpoint(model, root / "checkpoint")
    export_model(model, root / "model", checkpoint_sha256=checkpoint_sha256(ckpt))
    return ExportedModel(root / "model", ckpt, load_manifest(root / "model"))


@pytest.fixture
def one_torch_thread():
    """Training tests run on one thread: two fighting other work on 2 cores are far slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny folder of crops of shared training photos (written to tmp, never the repo)."""
    from train_support import tiny_train_folder

    return tiny_train_folder(tmp_path_factory.mktemp("train") / "crops")


@pytest.fixture(scope="module")
def images(train_dir: Path) -> list:
    """The tiny training folder decoded to uint8 arrays."""
    from train_support import load_images

    return load_images(train_dir)
