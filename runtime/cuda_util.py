"""The few CUDA runtime calls the TensorRT backend needs, behind one small class.

Memory, streams and copies go through cuda-python (``cuda.bindings.runtime``, the
package NVIDIA's TensorRT samples use); pycuda is an optional alternative when
cuda-python is missing but pycuda is installed. Both are imported lazily, inside
functions, so this module imports anywhere. Without a usable GPU,
:func:`cuda_unavailable_reason` gives a one-line reason (cuda-python reports
``cudaErrorInsufficientDriver`` on a machine without a driver).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import IRNError

__all__ = [
    "GpuInfo",
    "CudaRuntime",
    "cuda_bindings_installed",
    "cuda_unavailable_reason",
    "load_cuda_runtime",
]


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "major.minor"
    total_memory: int  # bytes
    #: cudaDriverGetVersion (1000 * major + 10 * minor; 0 unknown): plugin kernels are
    #: compiled to the newest PTX this driver loads, so it belongs in their engines' keys.
    driver_version: int = 0


def _import_cudart() -> Any | None:
    """cuda-python's runtime module (new layout first, then the pre-12.6 one), or None."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]

        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # type: ignore[import-not-found,attr-defined]

        return cudart
    except ImportError:
        return None


def _import_pycuda() -> Any | None:
    try:
        import pycuda.driver as drv  # type: ignore[import-not-found]

        return drv
    except ImportError:
        return None


def _err_text(cudart: Any, err: Any) -> str:
    try:
        _, name = cudart.cudaGetErrorName(err)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - only for the message
        return str(err)


def _check(cudart: Any, result: Any, what: str) -> Any:
    """Unpack cuda-python's ``(err, *values)`` tuples; raise IRNError on an error code."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if int(err) != 0:
        raise IRNError(f"CUDA {what} failed: {_err_text(cudart, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def cuda_bindings_installed() -> bool:
    """Whether cuda-python or pycuda imports (says nothing about a device)."""
    return _import_cudart() is not None or _import_pycuda() is not None


def cuda_unavailable_reason(device: int = 0) -> str | None:
    """None when a CUDA device ``device`` is usable from Python here, else a one-line reason."""
    cudart = _import_cudart()
    if cudart is not None:
        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0:
            return f"no usable CUDA driver/device ({_err_text(cudart, err)})"
        if count <= device:
            return f"CUDA device {device} not found ({count} device(s))"
        return None
    drv = _import_pycuda()
    if drv is None:
        return "neither cuda-python nor pycuda is installed (pip install 'irn-trt[gpu]')"
    try:
        drv.init()
        count = drv.Device.count()
    except Exception as exc:  # noqa: BLE001 - pycuda raises its own error types
        return f"no usable CUDA driver/device (pycuda: {exc})"
    if count <= device:
        return f"CUDA device {device} not found ({count} device(s))"
    return None


class CudaRuntime:
    """Device memory, pinned host memory, streams and async copies on one device.

    cuda-python, or pycuda when cuda-python is missing. :meth:`close` (idempotent; also
    the end of a ``with`` block) frees whatever is still allocated through this object
    and releases pycuda's context; cuda-python uses the device's primary context, which
    the CUDA runtime keeps for the process (other libraries share it: never reset it).
    """

    def __init__(self, device: int = 0) -> None:
        reason = cuda_unavailable_reason(device)
        if reason:
            raise IRNError(reason)
        self.device = device
        self._cudart = _import_cudart()
        self._drv = None if self._cudart is not None else _import_pycuda()
        self._ctx = None
        self._pycuda_allocs: dict[int, Any] = {}
        self._device_ptrs: set[int] = set()
        self._host: dict[int, Any] = {}  # pinned buffer address -> cudart pointer / pycuda array
        self._streams: list[Any] = []
        if self._cudart is not None:
            _check(self._cudart, self._cudart.cudaSetDevice(device), "cudaSetDevice")
        else:
            # TensorRT uses the runtime API, i.e. the device's primary context: share it.
            ctx = self._drv.Device(device).retain_primary_context()
            ctx.push()
            self._ctx = ctx

    def __enter__(self) -> CudaRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def api(self) -> str:
        return "cuda-python" if self._cudart is not None else "pycuda"

    @property
    def allocations(self) -> int:
        """Device buffers, pinned host buffers and streams still held (0 after :meth:`close`)."""
        return len(self._device_ptrs) + len(self._host) + len(self._streams)

    def info(self) -> GpuInfo:
        if self._cudart is not None:
            prop = _check(
                self._cudart,
                self._cudart.cudaGetDeviceProperties(self.device),
                "cudaGetDeviceProperties",
            )
            name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
            err, driver = self._cudart.cudaDriverGetVersion()
            return GpuInfo(
                name.rstrip("\x00"),
                f"{prop.major}.{prop.minor}",
                int(prop.totalGlobalMem),
                int(driver) if int(err) == 0 else 0,
            )
        dev = self._drv.Device(self.device)
        major, minor = dev.compute_capability()
        driver = int(self._drv.get_driver_version())  # pycuda: cuDriverGetVersion
        return GpuInfo(dev.name(), f"{major}.{minor}", int(dev.total_memory()), driver)

    def malloc(self, nbytes: int) -> int:
        nbytes = max(int(nbytes), 1)
        if self._cudart is not None:
            ptr = int(_check(self._cudart, self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
        else:
            alloc = self._drv.mem_alloc(nbytes)
            ptr = int(alloc)
            self._pycuda_allocs[ptr] = alloc
        self._device_ptrs.add(ptr)
        return ptr

    def free(self, ptr: int) -> None:
        self._device_ptrs.discard(ptr)
        if self._cudart is not None:
            _check(self._cudart, self._cudart.cudaFree(ptr), "cudaFree")
        else:
            self._pycuda_allocs.pop(ptr).free()

    def malloc_host(self, nbytes: int) -> np.ndarray:
        """A pinned (page-locked) host buffer of ``nbytes`` as a uint8 array.

        Copies from pageable memory are staged by the driver and do not overlap; pinned
        buffers make ``cudaMemcpyAsync`` truly asynchronous. Freed by :meth:`free_host`.
        """
        nbytes = max(int(nbytes), 1)
        if self._cudart is not None:
            ptr = int(_check(self._cudart, self._cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
            buf = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), (nbytes,))
            self._host[buf.ctypes.data] = ptr
        else:
            buf = self._drv.pagelocked_empty((nbytes,), np.uint8)
            self._host[buf.ctypes.data] = buf
        return buf

    def free_host(self, buf: np.ndarray | int) -> None:
        """Free a buffer of :meth:`malloc_host` (the array or its address; unknown: no-op)."""
        held = self._host.pop(buf if isinstance(buf, int) else buf.ctypes.data, None)
        if held is None:
            return
        if self._cudart is not None:
            _check(self._cudart, self._cudart.cudaFreeHost(held), "cudaFreeHost")
        else:
            held.base.free()  # the PagelockedHostAllocation behind the array

    def create_stream(self) -> Any:
        if self._cudart is not None:
            stream = _check(self._cudart, self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        else:
            stream = self._drv.Stream()
        self._streams.append(stream)
        return stream

    def stream_handle(self, stream: Any) -> int:
        """The raw ``cudaStream_t`` as an int (what ``execute_async_v3`` takes)."""
        return int(stream) if self._cudart is not None else int(stream.handle)

    def destroy_stream(self, stream: Any) -> None:
        self._streams = [s for s in self._streams if s is not stream]
        if self._cudart is not None:
            _check(self._cudart, self._cudart.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def synchronize(self, stream: Any) -> None:
        if self._cudart is not None:
            _check(
                self._cudart, self._cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize"
            )
        else:
            stream.synchronize()

    def copy_to_device(self, dst: int, host: np.ndarray, stream: Any) -> None:
        host = np.ascontiguousarray(host)
        if self._cudart is not None:
            kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            result = self._cudart.cudaMemcpyAsync(dst, host.ctypes.data, host.nbytes, kind, stream)
            _check(self._cudart, result, "cudaMemcpyAsync (host to device)")
        else:
            self._drv.memcpy_htod_async(dst, host, stream)

    def copy_to_host(self, host: np.ndarray, src: int, stream: Any) -> None:
        if not host.flags.c_contiguous:
            raise IRNError("internal: host output buffer must be contiguous")
        if self._cudart is not None:
            kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            result = self._cudart.cudaMemcpyAsync(host.ctypes.data, src, host.nbytes, kind, stream)
            _check(self._cudart, result, "cudaMemcpyAsync (device to host)")
        else:
            self._drv.memcpy_dtoh_async(host, src, stream)

    def close(self) -> None:
        """Free what is still held, then release pycuda's context (idempotent).

        Every release is tried even if one fails; the first failure is raised at the end.
        """
        errors: list[Exception] = []

        def attempt(fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - keep releasing, report the first
                errors.append(exc)

        for stream in list(self._streams):
            attempt(self.destroy_stream, stream)
        self._streams.clear()
        for ptr in list(self._device_ptrs):
            attempt(self.free, ptr)
        self._device_ptrs.clear()
        self._pycuda_allocs.clear()
        for addr in list(self._host):
            attempt(self.free_host, addr)
        self._host.clear()
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            # pop() takes it off this thread's stack; detach() drops our retain of the
            # primary context (without it the context outlives us until process exit).
            attempt(ctx.pop)
            attempt(ctx.detach)
        if errors:
            raise errors[0]


def load_cuda_runtime(device: int = 0) -> CudaRuntime:
    """A :class:`CudaRuntime` for ``device``; IRNError with the reason when there is none."""
    return CudaRuntime(device)
