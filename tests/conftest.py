"""Shared fixtures: the shared data, the one exported x4 model, tiny registry configs, and
the `gpu` marker's skip logic."""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from irn_trt.runtime.manifest import ModelManifest, load_manifest

if TYPE_CHECKING:
    from irn_trt.train.models import IRNConfig

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


def centre_crop(img: np.ndarray, h: int, w: int) -> np.ndarray:
    top, left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return np.ascontiguousarray(img[top : top + h, left : left + w])


@pytest.fixture(scope="session")
def set5_crop_images(set5_dir: Path) -> list[tuple[str, np.ndarray]]:
    """Centre crops of all five Set5 images (64x64 to 96x128: small but real)."""
    from irn_trt.runtime.image_io import list_images, read_rgb

    sizes = [(64, 64), (96, 128), (80, 96), (64, 96), (96, 64)]
    files = list_images(set5_dir)
    assert len(files) == 5
    return [(f.name, centre_crop(read_rgb(f), *hw)) for f, hw in zip(files, sizes, strict=True)]


def tiny_config(name: str) -> IRNConfig:
    """A registry entry's structure (its downsamplers, stage by stage) with one coupling
    block per stage (none where the entry has none) and a narrow dense block: for tests of
    the structure, whose cost should not grow with the full depth. The full configurations'
    parameter counts are checked in test_models.py."""
    from irn_trt.train.models import Stage, get_config

    full = get_config(name)
    stages = tuple(Stage(s.downsampler, min(s.blocks, 1)) for s in full.stages)
    return dataclasses.replace(full, stages=stages, growth=8)


def graph_conv_macs(path: Path, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of every Conv / ConvTranspose in an ONNX graph at one input shape,
    read from the graph itself (OpenVINO propagates the static shapes)."""
    ov = pytest.importorskip("openvino")
    model = ov.Core().read_model(str(path))
    model.reshape({model.inputs[0].any_name: ov.PartialShape(list(input_shape))})
    total = 0
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "Convolution":  # weights (Cout, Cin, kh, kw): per output element
            w = list(op.input(1).get_shape())
            total += math.prod(op.output(0).get_shape()) * math.prod(w[1:])
        elif kind == "ConvolutionBackpropData":  # weights (Cin, Cout, kh, kw): per input
            w = list(op.input(1).get_shape())
            total += math.prod(op.input(0).get_shape()) * math.prod(w[1:])
        else:
            assert "Convolution" not in kind, f"uncounted convolution type {kind}"
    return total


# --- runtime tests: a real exported random-weight IRN x4 (session-scoped) ----------------


@dataclass(frozen=True)
class ExportedModel:
    """A model directory made by the exporter, and the checkpoint it came from."""

    path: Path
    checkpoint: Path
    manifest: ModelManifest


@pytest.fixture(scope="session")
def tmp_model_dir(
    tmp_path_factory: pytest.TempPathFactory, set5_crop_images: list[tuple[str, np.ndarray]]
) -> ExportedModel:
    """Random-weight IRN x4 exported at FP32 + FP16 (uint8 I/O, z = 0) to a temp dir,
    verified against PyTorch on the Set5 crops: the one full-depth x4 export of the suite.

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
    export_model(
        model,
        root / "model",
        checkpoint_sha256=checkpoint_sha256(ckpt),
        verify_images=set5_crop_images,
    )
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


@pytest.fixture(scope="session", autouse=True)
def private_user_cache(tmp_path_factory: pytest.TempPathFactory):
    """Compiled-model and engine caches of the tests go to a temp dir, not ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
        yield


@pytest.fixture
def model_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty model store that is the whole search path: not this checkout's build/
    (a developer's exports there would change what "no exported model" tests see), not
    ~/.local/share."""
    from irn_trt.runtime import model_store as store_module

    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.setenv("IRN_TRT_MODELS", str(store))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg_data"))
    monkeypatch.setattr(store_module, "_checkout_build", lambda: None)
    return store


def export_tiny(name: str, out: Path, seed: int) -> Path:
    """A registry entry at tiny depth (``tiny_config``) with seeded random weights, exported
    FP32-only and verified on one 16x16 noise image: a real model directory in seconds."""
    import numpy as np
    from irn_trt.export.api import ExportOptions, export_model
    from irn_trt.train.models import build_model, randomize_weights

    model = randomize_weights(build_model(tiny_config(name)), seed=seed).eval()
    img = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    options = ExportOptions(precisions=("fp32",))
    export_model(model, out, options=options, verify_images=[("noise", img)])
    return out


def run_cli(*args: str) -> int:
    """``irn-trt-run ARGS --backend ort-cpu --quiet`` in this process; its exit status."""
    from irn_trt.runtime.cli import main as run_main

    return run_main([*args, "--backend", "ort-cpu", "--quiet"])


def _sample_engine_key():  # imports lazily: conftest stays light
    from irn_trt.runtime.engine_cache import EngineKey

    return EngineKey(
        model="irn_x4",
        direction="down",
        precision="fp16",
        graph_sha256="ab" * 32,
        trt_version="10.13.3.9",
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability="9.0",
        profile="hr:1x4x4x3/1x512x512x3/1x512x512x3",
        workspace_bytes=4 << 30,
        opt_level=3,
    )


#: One engine-cache key for the tests of the cache and of the plugin fingerprint.
SAMPLE_ENGINE_KEY = _sample_engine_key()
