"""The ``trt`` backend: TensorRT engines built from the model directory's ONNX graphs.

Engines come from the engine cache (``runtime/engine_cache.py``) and are built on a
miss (``runtime/trt_builder.py``); memory, the stream and copies go through
``runtime/cuda_util.py`` (cuda-python, or pycuda). Execution uses the name-based
TensorRT 10/11 API: ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``. Device buffers and pinned host staging buffers (for truly
asynchronous copies) are allocated once at the profile's maximum (the tile shape at
``max_batch``), so memory is bounded by the tile, not by the image. ``close`` releases
the context, engine, runtime, buffers, stream and CUDA context, also after a load that
failed half-way. tensorrt and CUDA are imported only when a backend loads.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..cuda_util import CudaRuntime, GpuInfo, cuda_unavailable_reason
from ..engine_cache import (
    EngineCache,
    EngineKey,
    default_cache_dir,
    plugin_fingerprint_for,
    stderr_warning,
)
from ..errors import IRNError
from ..file_hashes import cached_file_sha256
from ..manifest import GraphInfo, ModelManifest
from ..trt_builder import BuildSpec, build_engine, import_tensorrt, make_logger
from ..trt_plan import (
    ProfileShapes,
    TensorSpec,
    allocation_bytes,
    check_engine_io,
    known_accuracy_issues,
    numpy_dtype_for_trt,
    plan_bindings,
    profile_for_hr_tile,
    profile_key,
)
from .base import Backend, BackendOptions

__all__ = [
    "TrtBuildOptions",
    "TensorRTBackend",
    "describe_engine_io",
    "engine_device_memory",
    "engine_key",
    "ensure_engine",
    "trt_unavailable_reason",
]

Warn = Callable[[str], None]


@dataclass(frozen=True)
class TrtBuildOptions:
    """Builder settings that change the engine (and so are part of its cache key)."""

    workspace_bytes: int = 4 << 30
    opt_level: int = 3

    @classmethod
    def of(cls, options: BackendOptions) -> TrtBuildOptions:
        return cls(options.workspace_bytes, options.opt_level)


def _tensorrt_installed() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def trt_unavailable_reason(device: int = 0) -> str | None:
    """Why the ``trt`` backend cannot run here (None: it can). Cheapest checks first."""
    if not _tensorrt_installed():
        return "tensorrt is not installed (pip install 'irn-trt[gpu]')"
    reason = cuda_unavailable_reason(device)
    if reason:
        return reason
    try:
        import_tensorrt()
    except IRNError as exc:
        return str(exc)
    return None


def describe_engine_io(engine: Any) -> tuple[TensorSpec, ...]:
    """The engine's I/O tensors as plain values (name-based API; no binding indices)."""
    specs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        dtype = engine.get_tensor_dtype(name)
        specs.append(
            TensorSpec(
                name=name,
                dtype=numpy_dtype_for_trt(getattr(dtype, "name", str(dtype))).name,
                shape=tuple(int(d) for d in engine.get_tensor_shape(name)),
                is_input=getattr(mode, "name", str(mode)).endswith("INPUT"),
            )
        )
    return tuple(specs)


def engine_device_memory(engine: Any) -> int:
    """Activation memory a context needs: ``device_memory_size_v2`` (10.x+/11), else the old one."""
    if hasattr(engine, "device_memory_size_v2"):
        return int(engine.device_memory_size_v2)
    return int(engine.device_memory_size)


def engine_key(
    manifest: ModelManifest,
    graph: GraphInfo,
    graph_sha256: str,
    trt_version: str,
    gpu: GpuInfo,
    profiles: Sequence[ProfileShapes],
    build: TrtBuildOptions,
) -> EngineKey:
    return EngineKey(
        model=manifest.model,
        direction=graph.direction,
        precision=graph.precision,
        graph_sha256=graph_sha256,
        trt_version=trt_version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        profile=profile_key(profiles),
        workspace_bytes=build.workspace_bytes,
        opt_level=build.opt_level,
        plugin_fingerprint=plugin_fingerprint_for(graph.plugins, gpu.driver_version),
    )


def prepare_plugins(graph: GraphInfo) -> None:
    """Plugin graphs (irn-export --plugins): register the irn::* TensorRT plugins they use
    before TensorRT parses the graph or deserializes its engine (idempotent; no-op if none)."""
    if graph.plugins:
        from irn_trt.plugins import prepare_tensorrt_for

        prepare_tensorrt_for(graph.plugins)


def verified_graph_sha(model_dir: Path, graph: GraphInfo) -> str:
    """The graph file's SHA-256, refusing a file that differs from the manifest's record."""
    path = model_dir / graph.file
    if not path.is_file():
        raise IRNError(f"{path}: graph file missing from the model directory")
    sha = cached_file_sha256(path)  # the Rescaler's check of the same file remembered it
    if graph.sha256 and sha != graph.sha256:
        raise IRNError(f"{path}: contents differ from manifest.json's sha256 (re-export the model)")
    return sha


def ensure_engine(
    model_dir: Path,
    manifest: ModelManifest,
    graph: GraphInfo,
    profiles: Sequence[ProfileShapes],
    gpu: GpuInfo,
    cache: EngineCache,
    build: TrtBuildOptions,
    rebuild: bool = False,
    verbose: bool = False,
) -> tuple[bytes, EngineKey, bool]:
    """(plan, key, built): the cached engine for this graph/GPU/profile, built on a miss."""
    trt = import_tensorrt()
    prepare_plugins(graph)
    sha = verified_graph_sha(model_dir, graph)
    key = engine_key(manifest, graph, sha, trt.__version__, gpu, profiles, build)
    spec = BuildSpec(
        onnx_path=model_dir / graph.file,
        profiles=tuple(profiles),
        workspace_bytes=build.workspace_bytes,
        opt_level=build.opt_level,
        timing_cache=cache.timing_cache_path(trt.__version__, gpu.name, gpu.compute_capability),
        verbose=verbose,
    )
    cache.ensure_root()
    plan, built = cache.get_or_build(key, lambda: build_engine(spec, cache.warn), rebuild=rebuild)
    return plan, key, built


class TensorRTBackend(Backend):
    """Runs one graph as a TensorRT engine on CUDA device ``device``."""

    name: ClassVar[str] = "trt"
    benefits_from_batch: ClassVar[bool] = True

    def __init__(
        self,
        model_dir: str | Path,
        manifest: ModelManifest,
        graph: GraphInfo,
        options: BackendOptions | None = None,
        build: TrtBuildOptions | None = None,
        device: int | None = None,
        warn: Warn = stderr_warning,
    ) -> None:
        super().__init__(model_dir, manifest, graph, options)
        self.build = build or TrtBuildOptions.of(self.options)
        self.device = self.options.device if device is None else device
        self.warn = warn
        # options.tile_hw is the HR tile, as the tiler passes it.
        self.profiles = profile_for_hr_tile(
            graph, manifest, self.options.tile_hw, self.options.max_batch
        )
        self.built = False  # whether _load had to build (False: cache hit)
        self._cuda: CudaRuntime | None = None
        self._buffers: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}  # pinned staging buffers, uint8
        self._stream: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None

    @classmethod
    def probe(cls) -> str | None:
        return trt_unavailable_reason()

    @property
    def cache(self) -> EngineCache:
        return EngineCache(self.options.cache_dir or default_cache_dir(), warn=self.warn)

    def engine_plan(self, gpu: GpuInfo, rebuild: bool = False) -> tuple[bytes, EngineKey, bool]:
        """(plan, key, built) of this backend's engine from the cache, built on a miss."""
        return ensure_engine(
            self.model_dir,
            self.manifest,
            self.graph,
            self.profiles,
            gpu,
            self.cache,
            self.build,
            rebuild=rebuild,
            verbose=self.options.verbose,
        )

    def _load(self) -> None:
        reason = trt_unavailable_reason(self.device)
        if reason:
            raise IRNError(f"backend trt unavailable: {reason}")
        trt = import_tensorrt()
        prepare_plugins(self.graph)  # before ensure_engine parses and we deserialize
        for issue in known_accuracy_issues(trt.__version__):
            self.warn(issue)
        # Each resource goes on self as soon as it exists, so that _close frees it if a
        # later step fails (Backend.load calls _close then).
        self._cuda = CudaRuntime(self.device)
        gpu = self._cuda.info()
        plan, key, self.built = self.engine_plan(gpu, rebuild=False)
        self._runtime = trt.Runtime(make_logger(trt, self.options.verbose))
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None and not self.built:
            # A plan that passed the hash check but will not deserialize (e.g. a driver
            # update): rebuild once rather than fail.
            self.warn(f"cached engine {key.entry_name()} does not deserialize; rebuilding it")
            plan, key, self.built = self.engine_plan(gpu, rebuild=True)
            engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise IRNError(f"TensorRT could not deserialize the engine for {self.graph.file}")
        self.loaded_from_cache = not self.built
        self._engine = engine
        check_engine_io(describe_engine_io(engine), self.graph)
        self._context = engine.create_execution_context()
        if self._context is None:
            raise IRNError("TensorRT could not create an execution context (out of GPU memory?)")
        self._stream = self._cuda.create_stream()
        for name, nbytes in allocation_bytes(
            self.graph, self.manifest.scale, self.profiles
        ).items():
            self._buffers[name] = self._cuda.malloc(nbytes)
            self._host[name] = self._cuda.malloc_host(nbytes)
            if not self._context.set_tensor_address(name, self._buffers[name]):
                raise IRNError(f"TensorRT rejected the buffer address of tensor {name}")

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._run_all(feeds)[0]

    def _run_all(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        assert self._cuda is not None and self._context is not None
        shapes = {name: tuple(arr.shape) for name, arr in feeds.items()}
        bindings = plan_bindings(self.graph, self.manifest.scale, shapes)
        by_name = {p.name: p for p in self.profiles}
        for b in bindings:
            if not b.is_input:
                continue
            arr = feeds[b.name]
            if arr.dtype != np.dtype(b.dtype):
                raise IRNError(f"input {b.name}: dtype {arr.dtype}, the graph wants {b.dtype}")
            profile = by_name[b.name]
            if not profile.covers(b.shape):
                raise IRNError(
                    f"input {b.name} of shape {b.shape} is outside the engine's profile "
                    f"(min {profile.min}, max {profile.max}): tile the image or rebuild with "
                    "a larger irn-build --tile / --batch"
                )
            if not self._context.set_input_shape(b.name, b.shape):
                raise IRNError(f"TensorRT rejected input shape {b.shape} for {b.name}")
            staging = self._host[b.name][: b.nbytes]
            staging[:] = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
            self._cuda.copy_to_device(self._buffers[b.name], staging, self._stream)
        outputs = [b for b in bindings if not b.is_input]
        for b in outputs:
            got = tuple(int(d) for d in self._context.get_tensor_shape(b.name))
            if got != b.shape:
                raise IRNError(f"engine output {b.name} has shape {got}, expected {b.shape}")
        if not self._context.execute_async_v3(self._cuda.stream_handle(self._stream)):
            raise IRNError("TensorRT execution failed (execute_async_v3 returned False)")
        stagings = []
        for out in outputs:  # the manifest's order (plan_bindings follows graph.outputs)
            staging = self._host[out.name][: out.nbytes]
            self._cuda.copy_to_host(staging, self._buffers[out.name], self._stream)
            stagings.append(staging)
        self._cuda.synchronize(self._stream)
        return [
            st.view(np.dtype(out.dtype)).reshape(out.shape).copy()
            for st, out in zip(stagings, outputs, strict=True)
        ]

    @property
    def device_memory_bytes(self) -> int:
        """Activation memory + I/O buffers of the loaded engine (0 before loading)."""
        if self._engine is None:
            return 0
        io = sum(allocation_bytes(self.graph, self.manifest.scale, self.profiles).values())
        return engine_device_memory(self._engine) + io

    def _close(self) -> None:
        """Free everything _load made: TensorRT objects first (context, engine, runtime:
        the reverse of creation), then buffers, the stream and the CUDA context."""
        self._context = None
        self._engine = None
        self._runtime = None
        cuda, self._cuda = self._cuda, None
        buffers, self._buffers = self._buffers, {}
        host, self._host = self._host, {}
        stream, self._stream = self._stream, None
        if cuda is None:
            return
        try:
            for ptr in buffers.values():
                cuda.free(ptr)
            for buf in host.values():
                cuda.free_host(buf)
            if stream is not None:
                cuda.destroy_stream(stream)
        finally:
            cuda.close()  # frees whatever the loop above did not reach

    def describe(self) -> str:
        return f"trt ({self.graph.direction}.{self.graph.precision}, strongly typed engine)"
