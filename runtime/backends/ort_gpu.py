"""The ``ort-trt`` and ``ort-cuda`` backends: ONNX Runtime with its NVIDIA GPU providers.

``ort-trt`` runs the graph through ONNX Runtime's TensorrtExecutionProvider (with the
CUDA provider behind it for any node TensorRT does not take); ``ort-cuda`` through the
CUDAExecutionProvider alone. Both need the ``onnxruntime-gpu`` build. ONNX Runtime
silently falls back to the CPU when a GPU provider fails to initialise, so after
creating a session we check which provider it really uses and refuse a fallback.
Provider options are built by pure functions (tested on the CPU); the names are ONNX
Runtime's documented ones (``trt_profile_min_shapes`` = ``name:1x4x4x3,...`` etc.).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..cuda_util import cuda_bindings_installed, cuda_unavailable_reason
from ..engine_cache import EngineCache, default_cache_dir, stderr_warning
from ..errors import IRNError
from ..manifest import GraphInfo, ModelManifest
from ..trt_plan import ProfileShapes, profile_for_hr_tile
from .base import Backend, BackendOptions

__all__ = [
    "TRT_PROVIDER",
    "CUDA_PROVIDER",
    "ort_profile_shapes",
    "tensorrt_provider_options",
    "cuda_provider_options",
    "ort_gpu_unavailable_reason",
    "OrtTensorRTBackend",
    "OrtCudaBackend",
]

TRT_PROVIDER = "TensorrtExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"

Warn = Callable[[str], None]


def ort_profile_shapes(profiles: Sequence[ProfileShapes], which: str) -> str:
    """``name:1x512x512x3,other:...`` for ``which`` in min/opt/max (ONNX Runtime's syntax)."""
    if which not in ("min", "opt", "max"):
        raise ValueError(which)
    return ",".join(
        f"{p.name}:" + "x".join(str(d) for d in getattr(p, which))
        for p in sorted(profiles, key=lambda p: p.name)
    )


def _flag(value: bool) -> str:
    return "True" if value else "False"


def tensorrt_provider_options(
    profiles: Sequence[ProfileShapes],
    cache_dir: Path,
    device_id: int = 0,
    workspace_bytes: int = 4 << 30,
    opt_level: int = 3,
) -> dict[str, str]:
    """TensorrtExecutionProvider options: explicit profile, engine + timing caches.

    ``trt_fp16_enable`` stays off: precision comes from the graph's own types (the FP16
    graph is already FP16), as in our strongly typed ``trt`` backend.
    """
    return {
        "device_id": str(device_id),
        "trt_max_workspace_size": str(int(workspace_bytes)),
        "trt_builder_optimization_level": str(int(opt_level)),
        "trt_fp16_enable": _flag(False),
        "trt_engine_cache_enable": _flag(True),
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": _flag(True),
        "trt_timing_cache_path": str(cache_dir),
        "trt_profile_min_shapes": ort_profile_shapes(profiles, "min"),
        "trt_profile_opt_shapes": ort_profile_shapes(profiles, "opt"),
        "trt_profile_max_shapes": ort_profile_shapes(profiles, "max"),
    }


def cuda_provider_options(device_id: int = 0, gpu_mem_limit: int | None = None) -> dict[str, str]:
    """CUDAExecutionProvider options: exhaustive cuDNN conv search (fixed tile shapes repay it)."""
    opts = {
        "device_id": str(device_id),
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "arena_extend_strategy": "kSameAsRequested",
    }
    if gpu_mem_limit is not None:
        opts["gpu_mem_limit"] = str(int(gpu_mem_limit))
    return opts


def _preload_gpu_libraries(ort: Any, provider: str) -> None:
    """Load the CUDA / cuDNN (and TensorRT) libraries that pip wheels put in site-packages.

    ORT's provider libraries have no RUNPATH to the ``nvidia-*`` wheels, so since
    ORT 1.21 ``onnxruntime.preload_dlls()`` loads them (microsoft/onnxruntime#23744);
    importing ``tensorrt`` loads ``libnvinfer`` from ``tensorrt_libs`` for the
    TensorRT provider. Both are best effort: system-wide libraries work without them.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        with contextlib.suppress(Exception):
            preload()
    if provider == "TensorrtExecutionProvider":
        with contextlib.suppress(ImportError):
            import tensorrt  # noqa: F401


def ort_gpu_unavailable_reason(
    provider: str, available: Sequence[str] | None = None, device: int = 0
) -> str | None:
    """Why ONNX Runtime cannot use ``provider`` here (None: it looks usable).

    ``available`` defaults to ``onnxruntime.get_available_providers()``. When
    cuda-python or pycuda is installed the device is checked too; otherwise that check
    happens when the session is created (see :meth:`_OrtGpuBackend._load`).
    """
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    if provider not in available:
        return f"onnxruntime has no {provider} (needs the onnxruntime-gpu build)"
    if cuda_bindings_installed():
        return cuda_unavailable_reason(device)
    return None


class _OrtGpuBackend(Backend):
    """Shared logic: build the provider list, create the session, refuse a CPU fallback."""

    provider: ClassVar[str]
    benefits_from_batch: ClassVar[bool] = True

    def __init__(
        self,
        model_dir: str | Path,
        manifest: ModelManifest,
        graph: GraphInfo,
        options: BackendOptions | None = None,
        device: int | None = None,
        warn: Warn = stderr_warning,
    ) -> None:
        super().__init__(model_dir, manifest, graph, options)
        self.device = self.options.device if device is None else device
        self.warn = warn
        # options.tile_hw is the HR tile, as the tiler passes it.
        self.profiles = profile_for_hr_tile(
            graph, manifest, self.options.tile_hw, self.options.max_batch
        )
        self._session: Any = None
        self._output: str = graph.outputs[0].name

    @classmethod
    def probe(cls) -> str | None:
        return ort_gpu_unavailable_reason(cls.provider)

    @abc.abstractmethod
    def providers(self) -> list[tuple[str, dict[str, str]]]:
        """The ONNX Runtime execution providers with their options, in priority order."""

    def _load(self) -> None:
        import onnxruntime as ort

        _preload_gpu_libraries(ort, self.provider)
        reason = ort_gpu_unavailable_reason(self.provider, device=self.device)
        if reason:
            raise IRNError(f"backend {self.name} unavailable: {reason}")
        so = ort.SessionOptions()
        so.log_severity_level = 0 if self.options.verbose else 3
        try:
            session = ort.InferenceSession(
                str(self.graph_path), sess_options=so, providers=self.providers()
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises several undocumented types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise IRNError(f"backend {self.name}: cannot create the session ({first})") from None
        active = session.get_providers()
        if not active or active[0] != self.provider:
            raise IRNError(
                f"backend {self.name}: onnxruntime fell back to {active} "
                f"({self.provider} failed to initialise; is a GPU visible?)"
            )
        self._session = session

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run([self._output], feeds)[0]

    def _run_all(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self._session.run([t.name for t in self.graph.outputs], feeds))

    def _close(self) -> None:
        self._session = None  # ONNX Runtime releases the providers' GPU memory with it


class OrtTensorRTBackend(_OrtGpuBackend):
    """ONNX Runtime + TensorrtExecutionProvider (engines cached by ONNX Runtime)."""

    name: ClassVar[str] = "ort-trt"
    provider: ClassVar[str] = TRT_PROVIDER

    @property
    def engine_cache_root(self) -> Path:
        return self.options.cache_dir or default_cache_dir()

    @property
    def ort_cache_dir(self) -> Path:
        return self.engine_cache_root / "ort-trt"

    def providers(self) -> list[tuple[str, dict[str, str]]]:
        # The trt backend's cache root first, with its marker: creating only the ort-trt
        # folder below it left the root unmarked, and trt then warned on every engine.
        EngineCache(self.engine_cache_root, warn=self.warn).ensure_root()
        cache = EngineCache(self.ort_cache_dir, warn=self.warn)
        cache.ensure_root()
        # ONNX Runtime deserializes its own cached engines from this folder: say so if
        # the folder is not ours before it does.
        for problem in cache.trust_problems():
            self.warn(f"{problem}; onnxruntime will load engines from it")
        trt_opts = tensorrt_provider_options(
            self.profiles,
            self.ort_cache_dir,
            self.device,
            workspace_bytes=self.options.workspace_bytes,
            opt_level=self.options.opt_level,
        )
        return [(TRT_PROVIDER, trt_opts), (CUDA_PROVIDER, cuda_provider_options(self.device))]


class OrtCudaBackend(_OrtGpuBackend):
    """ONNX Runtime + CUDAExecutionProvider."""

    name: ClassVar[str] = "ort-cuda"
    provider: ClassVar[str] = CUDA_PROVIDER

    def providers(self) -> list[tuple[str, dict[str, str]]]:
        return [(CUDA_PROVIDER, cuda_provider_options(self.device))]
