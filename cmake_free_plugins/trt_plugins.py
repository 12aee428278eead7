"""TensorRT definitions of the ``irn::*`` plugins (``tensorrt.plugin``, no C++, no CMake).

Call :func:`register_plugins` before parsing an ONNX graph that contains
``irn`` nodes (engine build) or before deserializing an engine built from one.
Each plugin has a shape/type descriptor (``@trtp.register``), its supported
types (``@trtp.autotune``) and an ahead-of-time implementation
(``@trtp.aot_impl``) that returns Triton-compiled PTX: the engine then embeds
the kernels and runs without Python (trtexec, C++). Attributes are consumed
at build time (baked into the PTX as constants), as TensorRT does not
serialise them for AOT plugins.

Attributes are declared as one-element NumPy arrays (``IntAttr`` /
``FloatAttr``, i.e. ``numpy.typing.NDArray[...]``) and unwrapped with
:func:`attr_int` / :func:`attr_float`. TensorRT's ONNX parser hands an INT or
FLOAT node attribute over as a one-element INT32 / FLOAT32 plugin field, and
``tensorrt.plugin`` converts a field to a scalar annotation with ``int(data)``
/ ``float(data)``: a TypeError from NumPy 2.4 on (conversion of an array with
ndim > 0 to a scalar, deprecated since 1.25). For array annotations it only
does ``data.astype(dtype)``, which works with every NumPy.

Plugin tensors are never UINT8 (``PluginTensorDesc::type`` does not support
kUINT8; the ONNX parser allows UINT8 only as network input/output), so the
uint8 <-> float ``Cast`` stays a native layer at the graph boundary and
``pack_rgb8`` / ``unpack_rgb8`` do the float-side work (clamp, scale, round,
layout change) with FP32 byte values (0..255) on their uint8 side.

``tensorrt`` and ``triton`` are imported only inside :func:`register_plugins`
and the implementations, so importing this module is free everywhere
(including the torch-free runtime).

No ``from __future__ import annotations`` here: ``tensorrt.plugin`` validates the
decorated functions' annotations as objects (``issubclass(ann, TensorDesc)``,
``typing.get_origin(ann) is tuple``), which string annotations would break.
Its rules: ``register`` annotates every argument and returns ``TensorDesc``;
``autotune`` takes (tensors, attributes, ``outputs``) and returns
``list[AutoTuneCombination]``; ``aot_impl`` takes (tensors, attributes,
``outputs``, ``tactic``) and must declare its return type
``tuple[str | bytes, str | bytes, KernelLaunchParams, SymIntExprs]``.
"""

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "PLUGIN_NAMESPACE",
    "PLUGIN_OPS",
    "IntAttr",
    "FloatAttr",
    "attr_int",
    "attr_float",
    "register_plugins",
    "tensorrt_plugin_api_reason",
]

PLUGIN_NAMESPACE = "irn"
PLUGIN_OPS = ("haar_down", "haar_up", "pack_rgb8", "unpack_rgb8", "gaussian_z")

#: Attribute annotations: the field types the ONNX parser writes for INT / FLOAT attributes.
IntAttr = npt.NDArray[np.int32]
FloatAttr = npt.NDArray[np.float32]


def _one(value: Any, name: str) -> Any:
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"plugin attribute {name} must hold one value, got shape {arr.shape}")
    return arr.reshape(-1)[0]


def attr_int(value: Any, name: str = "attribute") -> int:
    """An INT plugin attribute as a Python int: a one-element array or a scalar."""
    return int(_one(value, name))


def attr_float(value: Any, name: str = "attribute") -> float:
    """A FLOAT plugin attribute as a Python float (its float32 value)."""
    return float(np.float32(_one(value, name)))


def tensorrt_plugin_api_reason() -> str | None:
    """``None`` if ``tensorrt.plugin`` (TensorRT >= 10.9 for AOT) imports here, else why not."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
        import tensorrt.plugin  # type: ignore[import-not-found]  # noqa: F401
    except ImportError as exc:
        return f"tensorrt.plugin is not importable ({exc})"
    from packaging.version import Version

    if Version(trt.__version__) < Version("10.9"):
        return f"TensorRT {trt.__version__} has no AOT Python plugins (10.9 or newer needed)"
    return None


def _dtype_name(trt: Any, dtype: Any) -> str:
    if dtype == trt.float32:
        return "float32"
    if dtype == trt.float16:
        return "float16"
    raise ValueError(f"irn plugins support float32/float16 tensors, got {dtype}")


def _aot_result(trtp: Any, spec: Any, arch: int | None, grid_x: Any, scalars: list) -> tuple:
    """Compile ``spec`` (for ``sm_<arch>``, None: this GPU) and package it for ``aot_impl``."""
    from .aot import compile_kernel

    kernel = compile_kernel(spec, arch)
    launch = trtp.KernelLaunchParams()
    launch.grid_x = grid_x
    launch.block_x = kernel.threads
    launch.shared_mem = kernel.shared
    extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(s) for s in scalars])
    return kernel.name.encode(), kernel.ptx.encode(), launch, extra


@functools.cache
def register_plugins(arch: int | None = None) -> tuple:
    """Register all ``irn::*`` plugins with TensorRT (idempotent); returns their ids.

    ``arch`` pins the PTX target (e.g. 80); None compiles for the GPU the
    engine is built on, with the PTX ISA version its driver accepts. Raises
    ImportError when ``tensorrt.plugin`` is unavailable (check
    :func:`tensorrt_plugin_api_reason` first).
    """
    import tensorrt as trt  # type: ignore[import-not-found]
    import tensorrt.plugin as trtp  # type: ignore[import-not-found]

    from . import aot
    from .geometry import ELEMENTWISE_BLOCK, HaarGeometry

    float_io = "FP32|FP16, FP32|FP16"
    # Annotation types tensorrt.plugin checks (see the module docstring).
    Outputs = tuple[trtp.TensorDesc]
    Combinations = list[trtp.AutoTuneCombination]
    AotResult = tuple[bytes, bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]

    # ---- irn::haar_down / irn::haar_up -------------------------------------------

    @trtp.register("irn::haar_down")
    def haar_down_desc(x: trtp.TensorDesc, levels: IntAttr) -> trtp.TensorDesc:
        geo = HaarGeometry(attr_int(levels, "levels"))
        s = x.shape_expr
        shape = (s[0], s[1] * geo.subbands, s[2] // geo.side, s[3] // geo.side)
        return trtp.from_shape_expr(shape, dtype=x.dtype)

    @trtp.autotune("irn::haar_down")
    def haar_down_tune(x: trtp.TensorDesc, outputs: Outputs) -> Combinations:
        return [trtp.AutoTuneCombination(float_io)]

    @trtp.aot_impl("irn::haar_down")
    def haar_down_aot(
        x: trtp.TensorDesc, levels: IntAttr, outputs: Outputs, tactic: int
    ) -> AotResult:
        geo = HaarGeometry(attr_int(levels, "levels"))
        n, c, hh, ww = (x.shape_expr[i] for i in range(4))
        blocks = outputs[0].shape_expr.numel() // geo.subbands
        spec = aot.haar_down_spec(geo.levels, _dtype_name(trt, x.dtype))
        return _aot_result(trtp, spec, arch, trtp.cdiv(blocks, geo.block_positions), [n, c, hh, ww])

    @trtp.register("irn::haar_up")
    def haar_up_desc(y: trtp.TensorDesc, levels: IntAttr) -> trtp.TensorDesc:
        geo = HaarGeometry(attr_int(levels, "levels"))
        s = y.shape_expr
        shape = (s[0], s[1] // geo.subbands, s[2] * geo.side, s[3] * geo.side)
        return trtp.from_shape_expr(shape, dtype=y.dtype)

    @trtp.autotune("irn::haar_up")
    def haar_up_tune(y: trtp.TensorDesc, outputs: Outputs) -> Combinations:
        return [trtp.AutoTuneCombination(float_io)]

    @trtp.aot_impl("irn::haar_up")
    def haar_up_aot(
        y: trtp.TensorDesc, levels: IntAttr, outputs: Outputs, tactic: int
    ) -> AotResult:
        geo = HaarGeometry(attr_int(levels, "levels"))
        n, kc, h, w = (y.shape_expr[i] for i in range(4))
        c = kc // geo.subbands
        blocks = y.shape_expr.numel() // geo.subbands
        spec = aot.haar_up_spec(geo.levels, _dtype_name(trt, y.dtype))
        return _aot_result(trtp, spec, arch, trtp.cdiv(blocks, geo.block_positions), [n, c, h, w])

    # ---- irn::pack_rgb8 / irn::unpack_rgb8 (float side of the native uint8 Casts) -----

    @trtp.register("irn::pack_rgb8")
    def pack_desc(x: trtp.TensorDesc) -> trtp.TensorDesc:
        s = x.shape_expr
        return trtp.from_shape_expr((s[0], s[2], s[3], s[1]), dtype=trt.float32)

    @trtp.autotune("irn::pack_rgb8")
    def pack_tune(x: trtp.TensorDesc, outputs: Outputs) -> Combinations:
        return [trtp.AutoTuneCombination("FP32, FP32"), trtp.AutoTuneCombination("FP16, FP32")]

    @trtp.aot_impl("irn::pack_rgb8")
    def pack_aot(x: trtp.TensorDesc, outputs: Outputs, tactic: int) -> AotResult:
        s = x.shape_expr
        total = s.numel()
        spec = aot.pack_rgb8_spec(_dtype_name(trt, x.dtype))
        grid = trtp.cdiv(total, ELEMENTWISE_BLOCK)
        return _aot_result(trtp, spec, arch, grid, [s[1], s[2] * s[3], total])

    @trtp.register("irn::unpack_rgb8")
    def unpack_desc(u: trtp.TensorDesc, fp16: IntAttr) -> trtp.TensorDesc:
        s = u.shape_expr
        dtype = trt.float16 if attr_int(fp16, "fp16") else trt.float32
        return trtp.from_shape_expr((s[0], s[3], s[1], s[2]), dtype=dtype)

    @trtp.autotune("irn::unpack_rgb8")
    def unpack_tune(u: trtp.TensorDesc, fp16: IntAttr, outputs: Outputs) -> Combinations:
        return [trtp.AutoTuneCombination("FP32, FP16" if attr_int(fp16) else "FP32, FP32")]

    @trtp.aot_impl("irn::unpack_rgb8")
    def unpack_aot(u: trtp.TensorDesc, fp16: IntAttr, outputs: Outputs, tactic: int) -> AotResult:
        s = u.shape_expr
        total = s.numel()
        spec = aot.unpack_rgb8_spec("float16" if attr_int(fp16, "fp16") else "float32")
        grid = trtp.cdiv(total, ELEMENTWISE_BLOCK)
        return _aot_result(trtp, spec, arch, grid, [s[3], s[1] * s[2], total])

    # ---- irn::gaussian_z -----------------------------------------------------------

    @trtp.register("irn::gaussian_z")
    def gaussian_desc(
        like: trtp.TensorDesc, channels: IntAttr, seed: IntAttr, scale: FloatAttr
    ) -> trtp.TensorDesc:
        s = like.shape_expr
        shape = (s[0], attr_int(channels, "channels"), s[2], s[3])
        return trtp.from_shape_expr(shape, dtype=like.dtype)

    @trtp.autotune("irn::gaussian_z")
    def gaussian_tune(like: trtp.TensorDesc, outputs: Outputs) -> Combinations:
        return [trtp.AutoTuneCombination(float_io)]

    @trtp.aot_impl("irn::gaussian_z")
    def gaussian_aot(
        like: trtp.TensorDesc,
        channels: IntAttr,
        seed: IntAttr,
        scale: FloatAttr,
        outputs: Outputs,
        tactic: int,
    ) -> AotResult:
        total = outputs[0].shape_expr.numel()
        spec = aot.gaussian_z_spec(
            attr_int(seed, "seed"), attr_float(scale, "scale"), _dtype_name(trt, like.dtype)
        )
        grid = trtp.cdiv(total, ELEMENTWISE_BLOCK)
        return _aot_result(trtp, spec, arch, grid, [total])

    return tuple(f"{PLUGIN_NAMESPACE}::{op}" for op in PLUGIN_OPS)
