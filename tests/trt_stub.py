"""Stand-ins for ``tensorrt`` and cuda-python's runtime, at their import boundary (CPU tests).

Neither library does anything without an NVIDIA GPU, so the TensorRT path's own code
(engine cache, builder calls, logger, deserialization, bindings, pinned copies, close)
runs on the CPU against these: ``sys.modules["tensorrt"]`` is :func:`make_tensorrt`'s
module and ``cuda_util._import_cudart`` returns a :class:`StubCudart`. "Device" memory
is host memory (ctypes buffers), and a "plan" names its ONNX graph, which an "execution
context" runs with ONNX Runtime on the CPU: results are real, so a wrong binding, copy
or shape shows. Only the names our code calls exist, with TensorRT's documented
signatures (``ILogger`` subclassing, name-based I/O, ``execute_async_v3``).
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

PLAN_MAGIC = b"STUB-TRT-PLAN\n"


class StubErr(int):
    """A cuda-python error code (``cudaError_t`` is an IntEnum)."""


_ERR_NAMES = {0: b"cudaSuccess", 1: b"cudaErrorInvalidValue", 2: b"cudaErrorMemoryAllocation"}


class StubCudart:
    """The ``cuda.bindings.runtime`` calls ``cuda_util`` makes, on host memory.

    The method names are cuda-python's own (camelCase), hence the N802 exemptions.
    """

    def __init__(self) -> None:
        self.device: dict[int, Any] = {}  # address -> ctypes buffer
        self.host: dict[int, Any] = {}  # pinned ("page-locked") buffers
        self.streams: set[int] = set()
        self._next_stream = 1000
        self.pageable_copies = 0  # async copies whose host side was not pinned
        self.copies = 0
        self.fail_malloc_after: int | None = None  # cudaMalloc fails once this many exist
        self.cudaMemcpyKind = types.SimpleNamespace(
            cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2
        )

    # -- bookkeeping for tests ------------------------------------------------------------
    def live(self) -> int:
        """Device buffers, pinned buffers and streams not yet released."""
        return len(self.device) + len(self.host) + len(self.streams)

    @staticmethod
    def _inside(table: dict[int, Any], addr: int, nbytes: int) -> bool:
        return any(a <= addr and addr + nbytes <= a + len(b) for a, b in table.items())

    # -- the API ----------------------------------------------------------------------------
    def cudaGetErrorName(self, err: int) -> tuple[StubErr, bytes]:  # noqa: N802
        return StubErr(0), _ERR_NAMES.get(int(err), b"cudaErrorUnknown")

    def cudaDriverGetVersion(self) -> tuple[StubErr, int]:  # noqa: N802
        return StubErr(0), 12090

    def cudaGetDeviceCount(self) -> tuple[StubErr, int]:  # noqa: N802
        return StubErr(0), 1

    def cudaSetDevice(self, device: int) -> tuple[StubErr]:  # noqa: N802
        return (StubErr(0 if device == 0 else 1),)

    def cudaGetDeviceProperties(self, device: int) -> tuple[StubErr, Any]:  # noqa: N802
        prop = types.SimpleNamespace(
            name=b"Stub GPU\x00\x00", major=9, minor=0, totalGlobalMem=80 << 30
        )
        return StubErr(0), prop

    def _alloc(self, table: dict[int, Any], nbytes: int) -> tuple[StubErr, int]:
        buf = ctypes.create_string_buffer(int(nbytes))
        addr = ctypes.addressof(buf)
        table[addr] = buf
        return StubErr(0), addr

    def cudaMalloc(self, nbytes: int) -> tuple[StubErr, int]:  # noqa: N802
        if self.fail_malloc_after is not None and len(self.device) >= self.fail_malloc_after:
            return StubErr(2), 0
        return self._alloc(self.device, nbytes)

    def cudaFree(self, ptr: int) -> tuple[StubErr]:  # noqa: N802
        return (StubErr(0 if self.device.pop(int(ptr), None) is not None else 1),)

    def cudaMallocHost(self, nbytes: int) -> tuple[StubErr, int]:  # noqa: N802
        return self._alloc(self.host, nbytes)

    def cudaFreeHost(self, ptr: int) -> tuple[StubErr]:  # noqa: N802
        return (StubErr(0 if self.host.pop(int(ptr), None) is not None else 1),)

    def cudaStreamCreate(self) -> tuple[StubErr, int]:  # noqa: N802
        self._next_stream += 1
        self.streams.add(self._next_stream)
        return StubErr(0), self._next_stream

    def cudaStreamDestroy(self, stream: int) -> tuple[StubErr]:  # noqa: N802
        ok = int(stream) in self.streams
        self.streams.discard(int(stream))
        return (StubErr(0 if ok else 1),)

    def cudaStreamSynchronize(self, stream: int) -> tuple[StubErr]:  # noqa: N802
        return (StubErr(0 if int(stream) in self.streams else 1),)

    def cudaMemcpyAsync(  # noqa: N802
        self, dst: int, src: int, nbytes: int, kind: int, stream: int
    ) -> tuple[StubErr]:
        dev, host = (dst, src) if kind == 1 else (src, dst)
        if int(stream) not in self.streams or not self._inside(self.device, dev, nbytes):
            return (StubErr(1),)
        if not self._inside(self.host, host, nbytes):
            self.pageable_copies += 1
        self.copies += 1
        ctypes.memmove(dst, src, nbytes)
        return (StubErr(0),)


# -- tensorrt ---------------------------------------------------------------------------------


class DataType(enum.Enum):
    FLOAT = "float32"
    HALF = "float16"
    INT32 = "int32"
    INT64 = "int64"
    UINT8 = "uint8"


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


_ONNX_DTYPES = {1: DataType.FLOAT, 10: DataType.HALF, 6: DataType.INT32, 7: DataType.INT64,
                2: DataType.UINT8}  # fmt: skip


@dataclass
class StubStats:
    """What the stand-in saw: builds, loggers handed to TensorRT objects, contexts."""

    builds: int = 0
    loggers: list[Any] = field(default_factory=list)
    runtimes: int = 0
    fail_context: bool = False  # create_execution_context returns None (as on OOM)
    reject_address: bool = False  # set_tensor_address returns False
    timing_blob_readable: bool = True  # create_timing_cache(blob) returns None if False
    timing_caches_made: list[bytes] = field(default_factory=list)


def make_tensorrt(version: str = "10.13.3.9") -> tuple[types.ModuleType, StubStats]:
    """A module object standing in for ``tensorrt`` (``__spec__`` set: find_spec sees it)."""
    stats = StubStats()
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = version

    class ILogger:
        Severity = Severity
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = list(Severity)

        def __init__(self) -> None:
            pass

    def take_logger(logger: Any) -> None:
        if not isinstance(logger, ILogger):
            raise TypeError("logger must be a tensorrt.ILogger")
        stats.loggers.append(logger)

    class Tensor:
        def __init__(self, name: str, dtype: DataType, shape: tuple[int, ...]) -> None:
            self.name, self.dtype, self.shape = name, dtype, shape

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[Tensor] = []
            self.outputs: list[Tensor] = []
            self.onnx_path: str | None = None

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            take_logger(logger)
            self.network = network
            self.num_errors = 0

        def parse_from_file(self, path: str) -> bool:
            import onnx

            model = onnx.load(path)

            def tensors(values: Any) -> list[Tensor]:
                out = []
                for v in values:
                    t = v.type.tensor_type
                    dims = tuple(
                        d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim
                    )
                    out.append(Tensor(v.name, _ONNX_DTYPES[t.elem_type], dims))
                return out

            self.network.inputs = tensors(model.graph.input)
            self.network.outputs = tensors(model.graph.output)
            self.network.onnx_path = str(path)
            return True

    class TimingCache:
        def __init__(self, blob: bytes) -> None:
            self.blob = bytes(blob)

        def serialize(self) -> bytes:
            return b"timing:" + self.blob[:32]

    class Config:
        def __init__(self) -> None:
            self.workspace = None
            self.builder_optimization_level = 3
            self.profiles: list[Any] = []
            self.timing: TimingCache | None = None

        def set_memory_pool_limit(self, pool: Any, nbytes: int) -> None:
            self.workspace = nbytes

        def add_optimization_profile(self, profile: Any) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, blob: bytes) -> TimingCache | None:
            stats.timing_caches_made.append(bytes(blob))
            if blob and not stats.timing_blob_readable:
                return None  # what createTimingCache's nullptr becomes in Python
            return TimingCache(blob)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.timing = cache
            return True

        def get_timing_cache(self) -> TimingCache | None:
            return self.timing

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, list[list[int]]] = {}

        def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
            self.shapes[name] = [list(lo), list(opt), list(hi)]

    class Builder:
        def __init__(self, logger: Any) -> None:
            take_logger(logger)
            self.logger = logger

        def create_network(self, flags: int) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            stats.builds += 1
            self.logger.log(Severity.INFO, f"building {Path(network.onnx_path or '').name}")
            self.logger.log(Severity.WARNING, "stub builder: this engine runs on ONNX Runtime")
            doc = {
                "onnx": network.onnx_path,
                "inputs": [[t.name, t.dtype.name, t.shape] for t in network.inputs],
                "outputs": [[t.name, t.dtype.name, t.shape] for t in network.outputs],
                "profile": config.profiles[0].shapes,
                "workspace": config.workspace,
                "opt_level": config.builder_optimization_level,
            }
            return PLAN_MAGIC + json.dumps(doc).encode()

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.addresses: dict[str, int] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            if stats.reject_address:
                return False
            self.addresses[name] = int(ptr)
            return True

        def set_input_shape(self, name: str, shape: Any) -> bool:
            lo, _, hi = self.engine.doc["profile"][name]
            shape = tuple(int(d) for d in shape)
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
                return False
            self.shapes[name] = shape
            return True

        def _feeds(self, zeros: bool) -> dict[str, np.ndarray]:
            feeds = {}
            for name, dtype, _ in self.engine.doc["inputs"]:
                dt, shape = np.dtype(DataType[dtype].value), self.shapes[name]
                if zeros:
                    feeds[name] = np.zeros(shape, dt)
                else:
                    n = int(np.prod(shape)) * dt.itemsize
                    raw = ctypes.string_at(self.addresses[name], n)
                    feeds[name] = np.frombuffer(raw, dt).reshape(shape).copy()
            return feeds

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            if name in self.shapes:
                return self.shapes[name]
            out = self.engine.session().run([name], self._feeds(zeros=True))[0]
            return tuple(out.shape)

        def execute_async_v3(self, stream_handle: int) -> bool:
            outs = self.engine.session().run(None, self._feeds(zeros=False))
            for (name, _, _), arr in zip(self.engine.doc["outputs"], outs, strict=True):
                arr = np.ascontiguousarray(arr)
                ctypes.memmove(self.addresses[name], arr.ctypes.data, arr.nbytes)
            return True

    class Engine:
        def __init__(self, doc: dict[str, Any]) -> None:
            self.doc = doc
            self.io = [(n, DataType[d], tuple(s), TensorIOMode.INPUT) for n, d, s in doc["inputs"]]
            self.io += [
                (n, DataType[d], tuple(s), TensorIOMode.OUTPUT) for n, d, s in doc["outputs"]
            ]
            self.device_memory_size_v2 = 1 << 20
            self._session = None

        def session(self) -> Any:
            if self._session is None:
                import onnxruntime as ort

                self._session = ort.InferenceSession(
                    self.doc["onnx"], providers=["CPUExecutionProvider"]
                )
            return self._session

        @property
        def num_io_tensors(self) -> int:
            return len(self.io)

        def _find(self, name: str) -> tuple[Any, ...]:
            return next(t for t in self.io if t[0] == name)

        def get_tensor_name(self, i: int) -> str:
            return self.io[i][0]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return self._find(name)[3]

        def get_tensor_dtype(self, name: str) -> DataType:
            return self._find(name)[1]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self._find(name)[2]

        def create_execution_context(self) -> Context | None:
            return None if stats.fail_context else Context(self)

    class Runtime:
        def __init__(self, logger: Any) -> None:
            take_logger(logger)
            stats.runtimes += 1

        def deserialize_cuda_engine(self, plan: bytes) -> Engine | None:
            plan = bytes(plan)
            if not plan.startswith(PLAN_MAGIC):
                return None
            return Engine(json.loads(plan[len(PLAN_MAGIC) :]))

    def nptype(dtype: DataType) -> type:
        return np.dtype(dtype.value).type

    trt.ILogger = ILogger
    trt.Builder = Builder
    trt.OnnxParser = OnnxParser
    trt.Runtime = Runtime
    trt.DataType = DataType
    trt.TensorIOMode = TensorIOMode
    trt.nptype = nptype
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    return trt, stats


@dataclass
class Stub:
    trt: types.ModuleType
    stats: StubStats
    cudart: StubCudart


def install(monkeypatch: pytest.MonkeyPatch, version: str = "10.13.3.9") -> Stub:
    """Put the stand-ins in place for one test (undone by ``monkeypatch``)."""
    from irn_trt.runtime import cuda_util, trt_builder

    trt, stats = make_tensorrt(version)
    cudart = StubCudart()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(cuda_util, "_import_cudart", lambda: cudart)
    # One logger per process: each test is a fresh "process" for the stand-in module.
    monkeypatch.setattr(trt_builder, "_logger", None)
    return Stub(trt, stats, cudart)
