"""Ahead-of-time compilation of the plugin kernels to PTX (no GPU needed).

TensorRT's ``@trtp.aot_impl`` wants a kernel name, its PTX and launch
parameters; :func:`compile_kernel` produces the first two (plus the warp count
and shared memory the launch needs) for one :class:`KernelSpec`. With
``arch=None`` Triton targets the GPU of this machine (engine build time); with
an explicit ``arch`` (80, 90, ...) it cross-compiles, which is how CI checks
that every kernel compiles for Ampere and Hopper without a device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    args = {"x_ptr": _float_ptr(dtype), "C": "i32", "HW": "i32", "total": "i32", "out_ptr": "*u8"}
    return KernelSpec("pack_rgb8_kernel", _with_constexprs(args, consts), consts)


def unpack_rgb8_spec(dtype: str = "float32") -> KernelSpec:
    from .geometry import ELEMENTWISE_BLOCK

    consts = {"BLOCK": ELEMENTWISE_BLOCK}
    args = {"u_ptr": "*u8", "C": "i32", "HW": "i32", "total": "i32", "x_ptr": _float_ptr(dtype)}
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


def compile_kernel(spec: KernelSpec, arch: int | None = None, num_warps: int = 4) -> CompiledKernel:
    """Compile ``spec`` to PTX for ``sm_<arch>`` (``None``: this machine's GPU).

    FMA contraction is disabled: the kernels are specified (and tested) as
    separately rounded multiplies and adds, and ``pack``'s rounding relies on it.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import kernels

    fn = getattr(kernels, spec.kernel)
    src = ASTSource(fn=fn, signature=spec.signature, constexprs=spec.constexprs)
    target = None if arch is None else GPUTarget("cuda", arch, 32)
    compiled = triton.compile(
        src, target=target, options={"num_warps": num_warps, "enable_fp_fusion": False}
    )
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
