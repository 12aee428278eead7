"""Ahead-of-time compilation of the plugin kernels to PTX (no GPU needed).

TensorRT's ``@trtp.aot_impl`` wants a kernel name, its PTX and launch
parameters; :func:`compile_kernel` produces the first two (plus the warp count
and shared memory the launch needs) for one :class:`KernelSpec`. With
``arch=None`` it targets the GPU of this machine (engine build time); with an
explicit ``arch`` (80, 90, ...) it cross-compiles, which is how CI checks that
every kernel compiles for Ampere and Hopper without a device.

Triton always gets an explicit ``GPUTarget``: with ``target=None`` it would ask
its CUDA driver module, which compiles a C stub with gcc on first use (a C
compiler on every engine-building machine). For the local GPU the target comes
from the device's compute capability, and the PTX ISA version from the driver:
Triton 3.9 writes PTX 8.8 for sm_80..89 (its ptxas is CUDA 12.9) and 9.4 for
sm_90+ (CUDA 13.4), which an older driver cannot JIT when TensorRT loads the
engine. :func:`choose_ptx_version` lowers it to what the driver accepts, or
refuses in one line when the GPU's architecture needs newer PTX than that.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from irn_trt.runtime.errors import IRNError

__all__ = [
    "KernelSpec",
    "CompiledKernel",
    "compile_kernel",
    "haar_down_spec",
    "haar_up_spec",
    "pack_rgb8_spec",
    "unpack_rgb8_spec",
    "gaussian_z_spec",
    "all_kernel_specs",
    "gpu_target",
    "ptx_isa_for_cuda",
    "choose_ptx_version",
    "local_device",
]

# Triton pointer/scalar type names for the storage types the plugins accept.
_FLOAT_PTR = {"float32": "*fp32", "float16": "*fp16"}


@dataclass(frozen=True)
class KernelSpec:
    """One specialisation of a kernel: which function, argument types and constants."""

    kernel: str  # attribute name in irn_trt.plugins.kernels
    signature: dict[str, str]  # argument name -> Triton type ("*fp32", "i32", "constexpr")
    constexprs: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        consts = ",".join(f"{k}={v}" for k, v in sorted(self.constexprs.items()))
        types = ",".join(t for t in self.signature.values() if t != "constexpr")
        return f"{self.kernel}[{types}|{consts}]"


@dataclass(frozen=True)
class CompiledKernel:
    """What ``aot_impl`` returns to TensorRT, plus what its launch parameters need."""

    name: str  # the PTX entry point
    ptx: str
    num_warps: int
    shared: int  # bytes of shared memory per block
    target: str  # e.g. "sm_80", from the PTX ".target" line
    scratch_bytes: int  # global + profile scratch Triton wants (must be 0, see compile_kernel)

    @property
    def threads(self) -> int:
        return self.num_warps * 32


def _float_ptr(dtype: str) -> str:
    try:
        return _FLOAT_PTR[dtype]
    except KeyError:
        raise ValueError(f"unsupported float type {dtype!r}; one of {sorted(_FLOAT_PTR)}") from None


def _with_constexprs(args: dict[str, str], consts: dict[str, Any]) -> dict[str, str]:
    return {**args, **dict.fromkeys(consts, "constexpr")}


def haar_down_spec(levels: int, dtype: str = "float32") -> KernelSpec:
    from .geometry import HaarGeometry

    consts = HaarGeometry(levels).constexprs()
    ptr = _float_ptr(dtype)
    args = {"x_ptr": ptr, "N": "i32", "C": "i32", "H": "i32", "W": "i32", "y_ptr": ptr}
    return KernelSpec("haar_down_kernel", _with_constexprs(args, consts), consts)


def haar_up_spec(levels: int, dtype: str = "float32") -> KernelSpec:
    from .geometry import HaarGeometry

    consts = HaarGeometry(levels).constexprs()
    ptr = _float_ptr(dtype)
    args = {"y_ptr": ptr, "N": "i32", "C": "i32", "h": "i32", "w": "i32", "x_ptr": ptr}
    return KernelSpec("haar_up_kernel", _with_constexprs(args, consts), consts)


def pack_rgb8_spec(dtype: str = "float32") -> KernelSpec:
    from .geometry import ELEMENTWISE_BLOCK

    consts = {"BLOCK": ELEMENTWISE_BLOCK}
    # float32 byte values out: plugin tensors cannot be UINT8 (see trt_plugins)
    args = {"x_ptr": _float_ptr(dtype), "C": "i32", "HW": "i32", "total": "i32", "out_ptr": "*fp32"}
    return KernelSpec("pack_rgb8_kernel", _with_constexprs(args, consts), consts)


def unpack_rgb8_spec(dtype: str = "float32") -> KernelSpec:
    from .geometry import ELEMENTWISE_BLOCK

    consts = {"BLOCK": ELEMENTWISE_BLOCK}
    args = {"u_ptr": "*fp32", "C": "i32", "HW": "i32", "total": "i32", "x_ptr": _float_ptr(dtype)}
    return KernelSpec("unpack_rgb8_kernel", _with_constexprs(args, consts), consts)


def gaussian_z_spec(seed: int, scale: float, dtype: str = "float32") -> KernelSpec:
    from .geometry import ELEMENTWISE_BLOCK

    if not 0 <= seed < 2**31:
        raise ValueError(f"seed must be in [0, 2^31), got {seed}")
    consts = {"SEED": int(seed), "SCALE": float(scale), "BLOCK": ELEMENTWISE_BLOCK}
    ptr = _float_ptr(dtype)
    args = {"like_ptr": ptr, "total": "i32", "z_ptr": ptr}
    return KernelSpec("gaussian_z_kernel", _with_constexprs(args, consts), consts)


def all_kernel_specs() -> list[KernelSpec]:
    """Every specialisation an IRN engine can need (x2..x8, FP32 and FP16 storage)."""
    from .geometry import MAX_HAAR_LEVELS

    specs: list[KernelSpec] = []
    for dtype in _FLOAT_PTR:
        for levels in range(1, MAX_HAAR_LEVELS + 1):
            specs += [haar_down_spec(levels, dtype), haar_up_spec(levels, dtype)]
        specs += [pack_rgb8_spec(dtype), unpack_rgb8_spec(dtype)]
        specs.append(gaussian_z_spec(0, 1.0, dtype))
    return specs


# Oldest PTX ISA (10*major + minor) that LLVM accepts for each target Triton 3.9 emits
# (it uses the arch-specific "a" targets from sm_90 on): the Proc table of LLVM's
# NVPTX.td, checked against Triton's bundled LLVM, whose error names the minimum.
_MIN_PTX_FOR_ARCH = {
    75: 63, 80: 70, 86: 71, 87: 74, 88: 90, 89: 78, 90: 80,
    100: 86, 101: 86, 103: 88, 110: 90, 120: 87, 121: 88,
}  # fmt: skip


def gpu_target(major: int, minor: int) -> Any:
    """Triton's ``GPUTarget`` for a CUDA device of compute capability ``major.minor``."""
    from triton.backends.compiler import GPUTarget

    if major < 1 or not 0 <= minor <= 9:
        raise IRNError(f"invalid compute capability {major}.{minor}")
    return GPUTarget("cuda", 10 * major + minor, 32)  # NVIDIA warps are 32 threads


def _version_text(isa: int) -> str:
    return f"{isa // 10}.{isa % 10}"


def ptx_isa_for_cuda(cuda_version: int) -> int:
    """Newest PTX ISA (88 = 8.8) of a CUDA version as ``cudaDriverGetVersion`` gives it
    (12090 = 12.9). PTX ISA release history: CUDA 11.x -> 7.x, 12.0-12.5 -> 8.0-8.5,
    12.6 -> 8.5 (no new ISA), 12.7 -> 8.6, 12.8 -> 8.7, 12.9 -> 8.8, 13.x -> 9.x."""
    major, minor = cuda_version // 1000, (cuda_version % 1000) // 10
    if major >= 13:
        return 90 + 10 * (major - 13) + minor
    if major == 12:
        return 80 + minor - (1 if minor >= 6 else 0)
    if major == 11:
        return 70 + minor
    if major == 10:
        return 63 + minor
    raise IRNError(f"CUDA driver version {major}.{minor} is too old for Triton's kernels")


def choose_ptx_version(arch: int, driver_cuda: int, triton_ptx: int | None = None) -> int:
    """The PTX ISA to compile ``sm_<arch>`` kernels with, for a driver of CUDA ``driver_cuda``.

    The newest the driver can JIT, capped at ``triton_ptx`` (what Triton would write by
    itself, i.e. what its ptxas knows). Raises a one-line IRNError when the driver is too
    old for the architecture's minimum (unknown architectures need ``triton_ptx``).
    """
    driver_ptx = ptx_isa_for_cuda(driver_cuda)
    need = _MIN_PTX_FOR_ARCH.get(arch, triton_ptx or driver_ptx)
    driver = f"{driver_cuda // 1000}.{(driver_cuda % 1000) // 10}"
    if driver_ptx < need:
        raise IRNError(
            f"the NVIDIA driver supports CUDA {driver} (PTX ISA up to {_version_text(driver_ptx)}) "
            f"but sm_{arch} plugin kernels need PTX ISA {_version_text(need)}: "
            "update the driver or build without --plugins"
        )
    if triton_ptx is not None and triton_ptx < need:
        raise IRNError(
            f"this Triton writes PTX ISA up to {_version_text(triton_ptx)} but sm_{arch} "
            f"needs {_version_text(need)}: update triton"
        )
    return driver_ptx if triton_ptx is None else min(driver_ptx, triton_ptx)


def _triton_default_ptx(arch: int) -> int | None:
    """The PTX ISA Triton writes for ``sm_<arch>`` when not told (from its bundled ptxas)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        release = str(get_ptxas(arch).version)  # e.g. "12.9"
        major, minor = (int(p) for p in release.split(".")[:2])
    except Exception:  # noqa: BLE001 - a Triton internal; without it the driver decides alone
        return None
    return ptx_isa_for_cuda(1000 * major + 10 * minor)


@functools.cache
def local_device(device: int = 0) -> tuple[int, int, int]:
    """(major, minor, driver CUDA version) of this machine's GPU ``device``, via cuda-python."""
    from irn_trt.runtime.cuda_util import _import_cudart

    cudart = _import_cudart()
    if cudart is None:
        raise IRNError("compiling plugin kernels for this GPU needs cuda-python (irn-trt[gpu])")
    err, driver = cudart.cudaDriverGetVersion()
    if int(err) != 0 or not driver:
        raise IRNError(f"cannot read the CUDA driver version ({err})")
    err, prop = cudart.cudaGetDeviceProperties(device)
    if int(err) != 0:
        raise IRNError(f"cannot read CUDA device {device}'s properties ({err})")
    return int(prop.major), int(prop.minor), int(driver)


def compile_kernel(
    spec: KernelSpec, arch: int | None = None, num_warps: int = 4, ptx_version: int | None = None
) -> CompiledKernel:
    """Compile ``spec`` to PTX for ``sm_<arch>`` (``None``: this machine's GPU).

    ``ptx_version`` (88 = PTX ISA 8.8) defaults to what this machine's driver
    accepts (:func:`choose_ptx_version`) for its GPU, and to Triton's own default
    when cross-compiling for an explicit ``arch``.

    FMA contraction is disabled: the kernels are specified (and tested) as
    separately rounded multiplies and adds, and ``pack``'s rounding relies on it.
    """
    import triton
    from triton.compiler import ASTSource

    from . import kernels

    if arch is None:
        major, minor, driver = local_device()
        target = gpu_target(major, minor)
        if ptx_version is None:
            ptx_version = choose_ptx_version(target.arch, driver, _triton_default_ptx(target.arch))
    else:
        target = gpu_target(arch // 10, arch % 10)
    need = _MIN_PTX_FOR_ARCH.get(target.arch, 0)
    if ptx_version is not None and ptx_version < need:
        # checked here: LLVM aborts the whole process on a PTX version below the target's
        raise IRNError(
            f"sm_{target.arch} needs PTX ISA {_version_text(need)} or newer, "
            f"not {_version_text(ptx_version)}"
        )
    fn = getattr(kernels, spec.kernel)
    src = ASTSource(fn=fn, signature=spec.signature, constexprs=spec.constexprs)
    options: dict[str, Any] = {"num_warps": num_warps, "enable_fp_fusion": False}
    if ptx_version is not None:
        options["ptx_version"] = ptx_version
    compiled = triton.compile(src, target=target, options=options)
    ptx = compiled.asm["ptx"]
    if isinstance(ptx, bytes):
        ptx = ptx.decode()
    target_line = next((ln for ln in ptx.splitlines() if ln.startswith(".target")), ".target ?")
    md = compiled.metadata
    scratch = int(getattr(md, "global_scratch_size", 0)) + int(
        getattr(md, "profile_scratch_size", 0)
    )
    if scratch:
        # Triton appends scratch-buffer pointers to every kernel's parameters; TensorRT
        # launches with only the plugin's own arguments, so those buffers never exist.
        raise RuntimeError(f"{spec.label()} needs {scratch} bytes of Triton scratch memory")
    return CompiledKernel(
        name=compiled.metadata.name,
        ptx=ptx,
        num_warps=int(compiled.metadata.num_warps),
        shared=int(compiled.metadata.shared),
        target=target_line.split()[1].rstrip(","),
        scratch_bytes=scratch,
    )
