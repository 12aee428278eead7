"""Build and run small TensorRT engines from plugin or native ONNX graphs (GPU only).

A thin layer over the runtime's builder (``runtime/trt_builder.py``) and CUDA
helpers (``runtime/cuda_util.py``) for the plugin checks and the benchmark:
one static shape per input, outputs read back by name. TensorRT logs through the
runtime's one process-wide logger (stderr); :class:`EngineRunner` releases its context,
engine, buffers and CUDA context in :meth:`EngineRunner.close` (or a ``with`` block),
also when its construction fails half-way.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from irn_trt.runtime.cuda_util import CudaRuntime
from irn_trt.runtime.engine_cache import stderr_warning
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.trt_builder import BuildSpec, build_engine, import_tensorrt, make_logger
from irn_trt.runtime.trt_plan import ProfileShapes

from . import prepare_tensorrt_for
from .onnx_rewrite import plugin_ops

__all__ = ["build_plan", "EngineRunner"]


def build_plan(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> bytes:
    """Serialized engine for ``model`` at exactly ``shapes``; registers its plugins first."""
    prepare_tensorrt_for(plugin_ops(model))
    with tempfile.TemporaryDirectory(prefix="irn-plugin-") as tmp:
        path = Path(tmp) / "graph.onnx"
        onnx.save(model, path)
        profiles = tuple(ProfileShapes(n, s, s, s) for n, s in shapes.items())
        spec = BuildSpec(onnx_path=path, profiles=profiles, workspace_bytes=1 << 30)
        return build_engine(spec, warn=stderr_warning)  # stdout stays for results


class EngineRunner:
    """Deserializes a plan once, then runs it on NumPy inputs (or times it)."""

    def __init__(self, plan: bytes, plugins: tuple[str, ...] = ()) -> None:
        prepare_tensorrt_for(plugins)
        trt = import_tensorrt()
        self._trt = trt
        self._buffers: dict[str, int] = {}
        self._context = self._engine = self._runtime = self._stream = None
        self._cuda: CudaRuntime | None = CudaRuntime(0)
        try:
            self._runtime = trt.Runtime(make_logger(trt))
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise IRNError("TensorRT could not deserialize the plugin test engine")
            # createExecutionContext returns nullptr (None) when it cannot allocate.
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise IRNError(
                    "TensorRT could not create an execution context for the plugin test engine "
                    "(out of GPU memory?)"
                )
            self._stream = self._cuda.create_stream()
            n = self._engine.num_io_tensors
            self._names = [self._engine.get_tensor_name(i) for i in range(n)]
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> EngineRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _is_input(self, name: str) -> bool:
        return self._engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT

    def _prepare(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name in self._names:
            if self._is_input(name):
                self._context.set_input_shape(name, tuple(feeds[name].shape))
        outputs: dict[str, np.ndarray] = {}
        for name in self._names:
            if self._is_input(name):
                arr = np.ascontiguousarray(feeds[name])
            else:
                shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
                dtype = np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))
                arr = outputs[name] = np.empty(shape, dtype)
            if name not in self._buffers:
                self._buffers[name] = self._cuda.malloc(arr.nbytes)
                if not self._context.set_tensor_address(name, self._buffers[name]):
                    raise IRNError(f"TensorRT rejected the buffer address of tensor {name}")
            if self._is_input(name):
                self._cuda.copy_to_device(self._buffers[name], arr, self._stream)
        return outputs

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._cuda.stream_handle(self._stream)):
            raise IRNError("TensorRT execution failed")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._prepare(feeds)
        self._execute()
        for name, arr in outputs.items():
            self._cuda.copy_to_host(arr, self._buffers[name], self._stream)
        self._cuda.synchronize(self._stream)
        return outputs

    def time(self, feeds: dict[str, np.ndarray], iterations: int = 50, warmup: int = 5) -> float:
        """Median seconds per execution (device work only, inputs already on the GPU)."""
        self._prepare(feeds)
        for _ in range(warmup):
            self._execute()
        self._cuda.synchronize(self._stream)
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            self._execute()
            self._cuda.synchronize(self._stream)
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    def close(self) -> None:
        """Release the context, engine and runtime (reverse order), then all CUDA memory
        and the CUDA context; idempotent."""
        self._context = self._engine = self._runtime = None
        cuda, self._cuda = self._cuda, None
        self._buffers.clear()
        self._stream = None
        if cuda is not None:
            cuda.close()  # frees the buffers and the stream it handed out
