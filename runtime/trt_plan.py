"""Pure planning logic for TensorRT engines: no tensorrt, no CUDA, no GPU.

Everything the TensorRT backend and ``irn-build`` decide before touching a GPU
lives here as plain functions over plain values, so it is tested on the CPU:

* dtype mapping between TensorRT ``DataType`` names and NumPy,
* optimization-profile shapes (min/opt/max) from the tile shape and batch,
* I/O binding plans (name, dtype, shape, byte size per tensor for one call),
* allocation sizes (bytes per tensor at the profile's maximum),
* TensorRT version policy (supported range, strongly-typed flag, known issues).

TensorRT objects are described by :class:`TensorSpec` (what an engine says of one
I/O tensor); the thin adapter that reads them from a real engine is in
``backends/trt.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from packaging.version import InvalidVersion, Version

from .errors import IRNError
from .manifest import GraphInfo, ModelManifest, TensorInfo
from .options import DEFAULT_MAX_BATCH  # tiles per call of GPU backends (defined there)

__all__ = [
    "DEFAULT_MAX_BATCH",
    "default_hr_tile",
    "MIN_TRT_VERSION",
    "TRT_TO_NUMPY",
    "numpy_dtype_for_trt",
    "trt_name_for_numpy",
    "TensorSpec",
    "ProfileShapes",
    "Binding",
    "parse_wxh",
    "parse_tile",
    "format_wxh",
    "graph_tile_hw",
    "tensor_shape_at",
    "profile_for_graph",
    "profile_for_hr_tile",
    "profile_key",
    "output_shape",
    "plan_bindings",
    "allocation_bytes",
    "check_engine_io",
    "parse_trt_version",
    "trt_version_problem",
    "strongly_typed_flag_needed",
    "known_accuracy_issues",
]


#: Oldest TensorRT whose API we use (name-based I/O, execute_async_v3, strong typing).
MIN_TRT_VERSION = Version("10.0")

#: TensorRT ``DataType`` member names -> NumPy dtype names (None: no NumPy equivalent).
TRT_TO_NUMPY: Mapping[str, str | None] = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "BOOL": "bool",
    "BF16": None,
    "FP8": None,
    "FP4": None,
    "INT4": None,
    "E8M0": None,
}


def numpy_dtype_for_trt(trt_name: str) -> np.dtype:
    """NumPy dtype for a TensorRT ``DataType`` name (e.g. ``"HALF"`` -> float16)."""
    name = trt_name.rsplit(".", 1)[-1].upper()  # accept "DataType.HALF" too
    if name not in TRT_TO_NUMPY:
        raise IRNError(f"unknown TensorRT data type {trt_name!r}")
    np_name = TRT_TO_NUMPY[name]
    if np_name is None:
        raise IRNError(f"TensorRT data type {name} has no NumPy equivalent (I/O must not use it)")
    return np.dtype(np_name)


def trt_name_for_numpy(dtype: np.dtype | str | type) -> str:
    """TensorRT ``DataType`` name for a NumPy dtype (e.g. uint8 -> ``"UINT8"``)."""
    np_name = np.dtype(dtype).name
    for trt_name, candidate in TRT_TO_NUMPY.items():
        if candidate == np_name:
            return trt_name
    raise IRNError(f"NumPy dtype {np_name} has no TensorRT equivalent")


@dataclass(frozen=True)
class TensorSpec:
    """One engine I/O tensor as TensorRT reports it (-1 marks a dynamic axis)."""

    name: str
    dtype: str  # NumPy dtype name
    shape: tuple[int, ...]
    is_input: bool


@dataclass(frozen=True)
class ProfileShapes:
    """One input's optimization-profile shapes."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def covers(self, shape: Sequence[int]) -> bool:
        if len(shape) != len(self.max):
            return False
        return all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True))


@dataclass(frozen=True)
class Binding:
    """What one call needs for one tensor: the buffer's dtype, shape and size."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    is_input: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def parse_wxh(text: str, what: str = "size") -> tuple[int, int]:
    """``"1024x512"`` -> (1024, 512), width first; ``"512"`` -> (512, 512). Syntax only.

    Every size a user types (``--tile``, ``--size``) is WxH, as image sizes are usually
    given; the caller checks the range (with the manifest's scale in its own words).
    """
    parts = text.strip().lower().replace("*", "x").split("x")
    try:
        if len(parts) not in (1, 2):
            raise ValueError(text)
        values = [int(v) for v in parts]
    except ValueError:
        raise IRNError(
            f"{what} {text!r}: expected WxH (width x height, e.g. 1024x512) or one number"
        ) from None
    return (values[0], values[-1])


def parse_tile(text: str, multiple: int = 1) -> tuple[int, int]:
    """A tile ``"WxH"`` (one number: square) as (H, W); sizes positive multiples of ``multiple``."""
    w, h = parse_wxh(text, "tile")
    if min(w, h) <= 0:
        raise IRNError(f"tile {text!r}: sizes must be positive")
    if w % multiple or h % multiple:
        raise IRNError(f"tile {text!r}: sizes must be multiples of the scale ({multiple})")
    return (h, w)


def format_wxh(hw: tuple[int, int]) -> str:
    """(H, W) as the text a user types: ``"W"`` for a square, else ``"WxH"``."""
    h, w = hw
    return str(w) if w == h else f"{w}x{h}"


def default_hr_tile(manifest: ModelManifest) -> tuple[int, int]:
    """irn-trt-run's default tile in HR pixels (from its halo), shared so engines are reused."""
    from .api import default_tile_lr  # the runtime core's rule; imported late (no cycle)

    edge = default_tile_lr(manifest.halo, manifest.lr_grid) * manifest.scale
    return (edge, edge)


def graph_tile_hw(graph: GraphInfo, scale: int, hr_tile_hw: tuple[int, int]) -> tuple[int, int]:
    """The input tile of ``graph`` for an HR tile: the HR tile for ``down``, HR/scale for ``up``."""
    h, w = hr_tile_hw
    if h % scale or w % scale:
        raise IRNError(f"HR tile {h}x{w} is not a multiple of the scale {scale}")
    return (h, w) if graph.direction == "down" else (h // scale, w // scale)


def _spatial_axes(info: TensorInfo) -> tuple[int, int, int]:
    """(batch, H, W) axis positions of a 4-D tensor from its layout."""
    layout = info.layout.upper()
    if len(info.shape) != 4 or sorted(layout) != sorted("NCHW"):
        raise IRNError(f"tensor {info.name}: unsupported layout {info.layout} / shape {info.shape}")
    return layout.index("N"), layout.index("H"), layout.index("W")


def tensor_shape_at(info: TensorInfo, batch: int, hw: tuple[int, int]) -> tuple[int, ...]:
    """``info``'s shape for a batch and an image tile ``hw``; a side code (``lr_grid``)
    takes ``hw`` in LR px and covers it with ceil(hw / lr_grid) values."""
    if info.lr_grid is not None:
        hw = (-(-hw[0] // info.lr_grid), -(-hw[1] // info.lr_grid))
    n_ax, h_ax, w_ax = _spatial_axes(info)
    shape: list[int] = []
    for axis, dim in enumerate(info.shape):
        if axis == n_ax:
            shape.append(batch)
        elif axis == h_ax:
            shape.append(hw[0])
        elif axis == w_ax:
            shape.append(hw[1])
        elif isinstance(dim, int):
            shape.append(dim)
        else:
            raise IRNError(f"tensor {info.name}: dynamic axis {dim!r} that is not N, H or W")
    return tuple(shape)


def profile_for_graph(
    graph: GraphInfo,
    manifest: ModelManifest,
    tile_hw: tuple[int, int],
    max_batch: int = 1,
) -> tuple[ProfileShapes, ...]:
    """Optimization profile for every input of ``graph``.

    ``tile_hw`` is the graph's *input* tile (see :func:`graph_tile_hw`). The profile
    covers the tile (opt = max = tile at ``max_batch``) and every smaller legal input
    down to the smallest one (one scale step of HR, i.e. 1x1 LR; batch 1), so the tiler's
    fixed-shape tiles and small whole images both run without a rebuild.
    """
    if max_batch < 1:
        raise IRNError(f"max batch must be at least 1, got {max_batch}")
    th, tw = tile_hw
    smallest = (manifest.scale, manifest.scale) if graph.direction == "down" else (1, 1)
    if th < smallest[0] or tw < smallest[1]:
        raise IRNError(f"tile {th}x{tw} is smaller than the smallest input {smallest}")
    # A side code input (up's, IRN-M) follows the LR tile it belongs to.
    return tuple(
        ProfileShapes(
            name=info.name,
            min=tensor_shape_at(info, 1, smallest),
            opt=tensor_shape_at(info, max_batch, tile_hw),
            max=tensor_shape_at(info, max_batch, tile_hw),
        )
        for info in graph.inputs
    )


def profile_for_hr_tile(
    graph: GraphInfo,
    manifest: ModelManifest,
    hr_tile_hw: tuple[int, int] | None = None,
    max_batch: int = 1,
) -> tuple[ProfileShapes, ...]:
    """The profile of ``graph`` for an HR tile (default: irn-trt-run's), as every GPU path uses it.

    The tiler speaks in HR tiles; the up graph's input tile is that divided by the scale.
    """
    hr = hr_tile_hw or default_hr_tile(manifest)
    return profile_for_graph(graph, manifest, graph_tile_hw(graph, manifest.scale, hr), max_batch)


def profile_key(profiles: Iterable[ProfileShapes]) -> str:
    """Canonical text of a profile, e.g. ``hr:1x4x4x3/2x512x512x3/2x512x512x3``."""

    def dims(shape: tuple[int, ...]) -> str:
        return "x".join(str(d) for d in shape)

    return ",".join(
        f"{p.name}:{dims(p.min)}/{dims(p.opt)}/{dims(p.max)}"
        for p in sorted(profiles, key=lambda p: p.name)
    )


def output_shape(graph: GraphInfo, scale: int, input_shape: Sequence[int]) -> tuple[int, ...]:
    """The output shape IRN's contract implies for the main input's shape (restore: the same)."""
    in_info, out_info = graph.inputs[0], graph.outputs[0]
    n_ax, h_ax, w_ax = _spatial_axes(in_info)
    n, h, w = input_shape[n_ax], input_shape[h_ax], input_shape[w_ax]
    if graph.direction == "down":
        if h % scale or w % scale:
            raise IRNError(f"HR input {h}x{w} is not a multiple of the scale {scale}")
        hw = (h // scale, w // scale)
    elif graph.direction == "restore":  # a CRM: LR in, LR out
        hw = (h, w)
    else:
        hw = (h * scale, w * scale)
    return tensor_shape_at(out_info, n, hw)


def plan_bindings(
    graph: GraphInfo, scale: int, input_shapes: Mapping[str, Sequence[int]]
) -> tuple[Binding, ...]:
    """Bindings for one call: every input at its given shape, the output at the implied one."""
    missing = [t.name for t in graph.inputs if t.name not in input_shapes]
    extra = sorted(set(input_shapes) - {t.name for t in graph.inputs})
    if missing or extra:
        raise IRNError(f"graph {graph.file}: inputs {missing} missing, {extra} unexpected")
    plan = [Binding(t.name, t.dtype, tuple(input_shapes[t.name]), True) for t in graph.inputs]
    main = input_shapes[graph.inputs[0].name]
    out = output_shape(graph, scale, main)
    n_ax, h_ax, w_ax = _spatial_axes(graph.inputs[0])
    n, h, w = main[n_ax], main[h_ax], main[w_ax]
    lr_hw = (h // scale, w // scale) if graph.direction == "down" else (h, w)
    plan += [
        # A side code output (down's, IRN-M) covers the LR: ceil(LR / lr_grid) values.
        Binding(
            t.name, t.dtype, tensor_shape_at(t, n, lr_hw) if t.lr_grid is not None else out, False
        )
        for t in graph.outputs
    ]
    return tuple(plan)


def allocation_bytes(
    graph: GraphInfo, scale: int, profiles: Iterable[ProfileShapes]
) -> dict[str, int]:
    """Bytes to allocate once per tensor so that every shape of the profile fits."""
    max_shapes = {p.name: p.max for p in profiles}
    return {b.name: b.nbytes for b in plan_bindings(graph, scale, max_shapes)}


def check_engine_io(tensors: Sequence[TensorSpec], graph: GraphInfo) -> None:
    """Refuse an engine whose I/O names, directions or dtypes differ from the graph's."""
    want = {t.name: (t.dtype, True) for t in graph.inputs}
    want.update({t.name: (t.dtype, False) for t in graph.outputs})
    have = {t.name: (t.dtype, t.is_input) for t in tensors}
    if want != have:

        def fmt(d: Mapping[str, tuple[str, bool]]) -> str:
            return ", ".join(f"{'in' if v[1] else 'out'} {k}:{v[0]}" for k, v in sorted(d.items()))

        raise IRNError(
            f"engine I/O ({fmt(have)}) does not match {graph.file} ({fmt(want)}); "
            "rebuild it with irn-build"
        )


def parse_trt_version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise IRNError(f"cannot parse TensorRT version {text!r}") from None


def trt_version_problem(version: str) -> str | None:
    """None if this TensorRT version is supported, else a one-line reason."""
    if parse_trt_version(version) < MIN_TRT_VERSION:
        return f"TensorRT {version} is too old: {MIN_TRT_VERSION} or newer is needed"
    return None


def strongly_typed_flag_needed(version: str) -> bool:
    """Whether ``STRONGLY_TYPED`` must be requested: on 10.x yes; 11 is always strongly typed."""
    return parse_trt_version(version) < Version("11.0")


#: TensorRT releases with open wrong-result reports that may touch IRN graphs, checked
#: against NVIDIA/TensorRT's issues: 4813 (11.1 strongly typed FP32 engine wrong, 10.13
#: right) and 4846 (11.1 and 11.2, dynamic If -> Transpose -> Resize) were both open
#: with no fix announced, so every release from 11.1 on is flagged until one is.
ACCURACY_ISSUES_FROM = Version("11.1")
#: First release with the fixes (None: none known yet). Set it when NVIDIA ships them.
ACCURACY_ISSUES_FIXED_IN: Version | None = None


def known_accuracy_issues(version: str) -> list[str]:
    """Published accuracy regressions of this TensorRT version that may affect IRN graphs."""
    v = parse_trt_version(version)
    fixed = ACCURACY_ISSUES_FIXED_IN
    issues = []
    if v >= ACCURACY_ISSUES_FROM and (fixed is None or v < fixed):
        issues.append(
            f"TensorRT {version} may give wrong results: open reports against 11.1 and later "
            "(NVIDIA/TensorRT issues 4813, 4846); compare against ort-cpu once"
        )
    return issues
