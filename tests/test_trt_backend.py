"""GPU backends on a machine without a GPU: probes, lazy loading, provider options.

The decisions tested here (why a backend cannot run, which options ONNX Runtime's GPU
providers get, that nothing heavy happens before the first run) are the ones the
``auto`` selection and users see on CPU-only machines.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import irn_trt.runtime.backends as registry
import numpy as np
import pytest
from conftest import gpu_unavailable_reason
from irn_trt.runtime.backends import BackendOptions, ort_gpu
from irn_trt.runtime.backends.ort_gpu import (
    CUDA_PROVIDER,
    TRT_PROVIDER,
    OrtCudaBackend,
    OrtTensorRTBackend,
    cuda_provider_options,
    ort_gpu_unavailable_reason,
    ort_profile_shapes,
    tensorrt_provider_options,
)
from irn_trt.runtime.backends.trt import TensorRTBackend, trt_unavailable_reason
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.manifest import load_manifest
from irn_trt.runtime.trt_plan import profile_for_graph
from trt_toy_models import make_toy_model_dir

NO_GPU = gpu_unavailable_reason() is not None
# The registry (runtime core) names our classes; skip cleanly if it is not in this tree.
needs_registry = pytest.mark.skipif(
    not hasattr(registry, "candidates"), reason="backend registry not present"
)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("toy")
    make_toy_model_dir(root, scale=4, z_channels=5)
    return root, load_manifest(root)


@needs_registry
def test_registry_finds_our_backend_classes() -> None:
    backend_class = registry.backend_class
    assert backend_class("trt") is TensorRTBackend
    assert backend_class("ort-trt") is OrtTensorRTBackend
    assert backend_class("ort-cuda") is OrtCudaBackend


@needs_registry
@pytest.mark.skipif(not NO_GPU, reason="a GPU stack is present")
def test_probes_give_one_line_reasons_without_a_gpu() -> None:
    import onnxruntime as ort

    by_name = {c.name: c for c in registry.candidates(("trt", "ort-trt", "ort-cuda"))}
    # trt needs tensorrt + a CUDA device: one of them is missing here (NO_GPU).
    assert by_name["trt"].cls is None and by_name["trt"].reason
    if importlib.util.find_spec("tensorrt") is None:
        assert by_name["trt"].reason.startswith("tensorrt is not installed")
    available = ort.get_available_providers()
    for name, provider in (("ort-trt", TRT_PROVIDER), ("ort-cuda", CUDA_PROVIDER)):
        if provider not in available:  # the CPU-only onnxruntime build
            assert by_name[name].cls is None
            assert by_name[name].reason == f"onnxruntime has no {provider} " + (
                "(needs the onnxruntime-gpu build)"
            )
    for cand in by_name.values():
        assert cand.reason is None or "\n" not in cand.reason


def test_ort_gpu_probe_decisions(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = ort_gpu_unavailable_reason(TRT_PROVIDER, available=["CPUExecutionProvider"])
    assert reason == f"onnxruntime has no {TRT_PROVIDER} (needs the onnxruntime-gpu build)"
    # Provider present and no CUDA bindings to ask: the check moves to session creation.
    monkeypatch.setattr(ort_gpu, "cuda_bindings_installed", lambda: False)
    assert ort_gpu_unavailable_reason(CUDA_PROVIDER, available=[CUDA_PROVIDER]) is None
    # Provider present and bindings installed: the device decides.
    monkeypatch.setattr(ort_gpu, "cuda_bindings_installed", lambda: True)
    monkeypatch.setattr(ort_gpu, "cuda_unavailable_reason", lambda device=0: "no device 0")
    assert ort_gpu_unavailable_reason(CUDA_PROVIDER, available=[CUDA_PROVIDER]) == "no device 0"


def test_provider_options(toy, tmp_path: Path) -> None:
    _, m = toy
    profiles = profile_for_graph(m.graph("up", "fp16"), m, (128, 128), max_batch=2)
    assert ort_profile_shapes(profiles, "min") == "lr:1x1x1x3,z:1x5x1x1"
    assert ort_profile_shapes(profiles, "max") == "lr:2x128x128x3,z:2x5x128x128"
    opts = tensorrt_provider_options(profiles, tmp_path, device_id=1, workspace_bytes=1 << 30)
    assert opts["device_id"] == "1" and opts["trt_max_workspace_size"] == str(1 << 30)
    assert opts["trt_profile_opt_shapes"] == "lr:2x128x128x3,z:2x5x128x128"
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_engine_cache_path"] == str(
        tmp_path
    )
    assert opts["trt_timing_cache_enable"] == "True"
    assert opts["trt_fp16_enable"] == "False"  # precision comes from the graph's types
    assert all(isinstance(v, str) for v in opts.values())
    assert cuda_provider_options(0)["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert cuda_provider_options(0, gpu_mem_limit=1 << 30)["gpu_mem_limit"] == str(1 << 30)
    with pytest.raises(ValueError):
        ort_profile_shapes(profiles, "median")


def test_ort_trt_provider_list_uses_a_marked_cache(toy, tmp_path: Path) -> None:
    root, m = toy
    warnings: list[str] = []
    opts = BackendOptions(cache_dir=tmp_path / "cache", tile_hw=(64, 64), max_batch=1)
    backend = OrtTensorRTBackend(root, m, m.graph("down", "fp32"), opts, warn=warnings.append)
    providers = backend.providers()
    assert [p for p, _ in providers] == [TRT_PROVIDER, CUDA_PROVIDER]
    assert providers[0][1]["trt_profile_max_shapes"] == "hr:1x64x64x3"
    assert (tmp_path / "cache" / "ort-trt" / "irn-trt-engine-cache.json").is_file()
    assert warnings == []


@pytest.mark.skipif(not NO_GPU, reason="a GPU stack is present")
@pytest.mark.parametrize("cls", [TensorRTBackend, OrtTensorRTBackend, OrtCudaBackend])
def test_backends_are_lazy_and_fail_in_one_line_without_a_gpu(toy, tmp_path: Path, cls) -> None:
    import onnxruntime as ort

    if getattr(cls, "provider", None) in ort.get_available_providers():
        pytest.skip(f"onnxruntime-gpu with {cls.provider} is installed: {cls.name} may run")
    root, m = toy
    opts = BackendOptions(cache_dir=tmp_path / "cache", tile_hw=(64, 64))
    backend = cls(root, m, m.graph("down", "fp16"), opts)  # cheap: nothing is loaded
    assert backend.profiles[0].max == (1, 64, 64, 3)
    up = cls(root, m, m.graph("up", "fp16"), opts)  # tile_hw is the HR tile: LR = HR / scale
    assert [p.max for p in up.profiles] == [(1, 16, 16, 3), (1, 5, 16, 16)]
    with pytest.raises(IRNError, match=f"backend {cls.name} unavailable") as info:
        backend.run({"hr": np.zeros((1, 64, 64, 3), np.uint8)})
    assert "\n" not in str(info.value)
    assert not (tmp_path / "cache").exists()  # refused before any cache or engine work


def test_trt_reason_names_the_missing_piece() -> None:
    reason = trt_unavailable_reason()
    if gpu_unavailable_reason() is None:
        assert reason is None
    else:
        assert reason and "\n" not in reason
        if importlib.util.find_spec("tensorrt") is None:
            assert reason.startswith("tensorrt is not installed")
