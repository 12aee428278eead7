"""Fallback decisions of the TensorRT path, branch by branch, without tensorrt or a GPU.

The libraries are absent here, so each branch is reached by replacing the one probe
function it depends on (``monkeypatch``) or, for the version/flag logic, by a tiny
stand-in module object carrying only ``__version__`` and the enum it reads. No fake
engine or builder is involved.
"""

from __future__ import annotations

import sys
import types

import pytest
from irn_trt.runtime import cuda_util, trt_builder
from irn_trt.runtime.backends import trt as trt_backend
from irn_trt.runtime.errors import IRNError


def test_trt_probe_checks_tensorrt_then_cuda_then_version(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def cuda_reason(device: int = 0) -> str | None:
        calls.append("cuda")
        return "no usable CUDA driver/device (cudaErrorInsufficientDriver)"

    monkeypatch.setattr(trt_backend, "cuda_unavailable_reason", cuda_reason)
    monkeypatch.setattr(trt_backend, "_tensorrt_installed", lambda: False)
    assert trt_backend.trt_unavailable_reason() == (
        "tensorrt is not installed (pip install 'irn-trt[gpu]')"
    )
    assert calls == []  # the cheapest check decided; CUDA was not even asked
    monkeypatch.setattr(trt_backend, "_tensorrt_installed", lambda: True)
    assert "cudaErrorInsufficientDriver" in trt_backend.trt_unavailable_reason()

    def old_trt():
        raise IRNError("TensorRT 8.6.1 is too old: 10.0 or newer is needed")

    monkeypatch.setattr(trt_backend, "cuda_unavailable_reason", lambda device=0: None)
    monkeypatch.setattr(trt_backend, "import_tensorrt", old_trt)
    assert (
        trt_backend.trt_unavailable_reason() == "TensorRT 8.6.1 is too old: 10.0 or newer is needed"
    )
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: types.SimpleNamespace())
    assert trt_backend.trt_unavailable_reason() is None


def test_import_tensorrt_gates_on_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.1"))
    with pytest.raises(IRNError, match="too old"):
        trt_builder.import_tensorrt()
    assert "too old" in trt_builder.tensorrt_unavailable_reason()
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.13.3.9"))
    assert trt_builder.import_tensorrt().__version__ == "10.13.3.9"
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as if not installed
    assert trt_builder.tensorrt_unavailable_reason() == (
        "tensorrt is not installed (pip install 'irn-trt[gpu]')"
    )


def _trt_module(version: str, strongly_typed: bool = True) -> types.SimpleNamespace:
    flags = types.SimpleNamespace(**({"STRONGLY_TYPED": 1} if strongly_typed else {}))
    return types.SimpleNamespace(__version__=version, NetworkDefinitionCreationFlag=flags)


def test_network_flags_strongly_typed_on_10_and_implicit_on_11() -> None:
    assert trt_builder._network_flags(_trt_module("10.13.3.9")) == 1 << 1
    assert trt_builder._network_flags(_trt_module("11.4.0.106")) == 0  # deprecated flag not passed
    assert trt_builder._network_flags(_trt_module("11.0.0", strongly_typed=False)) == 0
    with pytest.raises(IRNError, match="no strongly typed networks"):
        trt_builder._network_flags(_trt_module("10.0.1", strongly_typed=False))


class _Err(int):
    """A cuda-python error code: an int with a name (``cudaError_t`` is an IntEnum)."""


def _cudart(err: int, count: int) -> types.SimpleNamespace:
    names = {0: b"cudaSuccess", 35: b"cudaErrorInsufficientDriver", 100: b"cudaErrorNoDevice"}
    return types.SimpleNamespace(
        cudaGetDeviceCount=lambda: (_Err(err), count),
        cudaGetErrorName=lambda e: (_Err(0), names[int(e)]),
    )


def test_cuda_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_util, "_import_cudart", lambda: _cudart(35, 0))
    assert cuda_util.cuda_unavailable_reason() == (
        "no usable CUDA driver/device (cudaErrorInsufficientDriver)"
    )
    monkeypatch.setattr(cuda_util, "_import_cudart", lambda: _cudart(0, 1))
    assert cuda_util.cuda_unavailable_reason(0) is None
    assert cuda_util.cuda_unavailable_reason(1) == "CUDA device 1 not found (1 device(s))"
    monkeypatch.setattr(cuda_util, "_import_cudart", lambda: None)
    monkeypatch.setattr(cuda_util, "_import_pycuda", lambda: None)
    assert cuda_util.cuda_unavailable_reason() == (
        "neither cuda-python nor pycuda is installed (pip install 'irn-trt[gpu]')"
    )
    assert not cuda_util.cuda_bindings_installed()
    with pytest.raises(IRNError, match="neither cuda-python nor pycuda"):
        cuda_util.load_cuda_runtime()


def test_cuda_result_unpacking() -> None:
    cudart = _cudart(0, 0)
    assert cuda_util._check(cudart, (_Err(0), 1234), "cudaMalloc") == 1234
    assert cuda_util._check(cudart, (_Err(0),), "cudaFree") is None
    with pytest.raises(IRNError, match="CUDA cudaMalloc failed: cudaErrorNoDevice"):
        cuda_util._check(cudart, (_Err(100), 0), "cudaMalloc")


class _PagelockedAllocation:
    """pycuda's page-locked allocation: an array's ``base`` with ``free()``."""

    def __init__(self, nbytes: int, freed: list[int]) -> None:
        import ctypes

        self._buf = ctypes.create_string_buffer(nbytes)
        self._freed = freed
        self.__array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (ctypes.addressof(self._buf), False),
            "version": 3,
        }

    def free(self) -> None:
        self._freed.append(1)


def _pycuda_driver(calls: list[str]) -> types.SimpleNamespace:
    """The ``pycuda.driver`` calls cuda_util makes, recording context and memory calls."""
    import numpy as np

    class Context:
        def push(self) -> None:
            calls.append("push")

        def pop(self) -> None:  # a static method in pycuda; called on the instance here
            calls.append("pop")

        def detach(self) -> None:
            calls.append("detach")

    class Device:
        def __init__(self, n: int) -> None:
            self.n = n

        @staticmethod
        def count() -> int:
            return 1

        def retain_primary_context(self) -> Context:
            calls.append("retain")
            return Context()

    class Alloc(int):
        def free(self) -> None:
            calls.append("mem_free")

    allocs = iter(range(4096, 1 << 20, 4096))

    def pagelocked_empty(shape: tuple[int, ...], dtype: object) -> np.ndarray:
        return np.asarray(_PagelockedAllocation(shape[0], freed))

    freed: list[int] = []
    calls_ns = types.SimpleNamespace(
        init=lambda: None,
        Device=Device,
        mem_alloc=lambda n: Alloc(next(allocs)),
        pagelocked_empty=pagelocked_empty,
        Stream=lambda: types.SimpleNamespace(handle=7),
        freed_host=freed,
    )
    return calls_ns


def test_pycuda_context_is_popped_and_detached_and_memory_freed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    drv = _pycuda_driver(calls)
    monkeypatch.setattr(cuda_util, "_import_cudart", lambda: None)
    monkeypatch.setattr(cuda_util, "_import_pycuda", lambda: drv)
    with cuda_util.CudaRuntime(0) as cuda:
        assert cuda.api == "pycuda" and calls == ["retain", "push"]
        cuda.malloc(100)
        host = cuda.malloc_host(64)
        host[:] = 3  # writable page-locked memory
        cuda.create_stream()
        assert cuda.allocations == 3
    # Leaving the block freed the buffer and the pinned memory, then gave the context back:
    # pop() takes it off the thread's stack, detach() drops the retain (was missing).
    assert calls == ["retain", "push", "mem_free", "pop", "detach"]
    assert drv.freed_host == [1] and cuda.allocations == 0
    cuda.close()  # idempotent
    assert calls.count("detach") == 1
