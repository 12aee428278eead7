"""The model directory written by ``irn-export`` and read by the runtime.

A model directory holds ``manifest.json`` plus up to four ONNX graphs
(``down.fp32.onnx``, ``down.fp16.onnx``, ``up.fp32.onnx``, ``up.fp16.onnx``).
This module is the single definition of that format: the exporter builds a
:class:`ModelManifest` and writes it with :func:`write_manifest`; every backend
reads it with :func:`load_manifest`. Torch-free.

Tiling fields (LR pixels):

- ``halo``: the exact receptive-field radius of the architecture (the larger of
  down and up). Tiles that overlap by this much reproduce an untiled run up to
  floating-point noise whatever the weights (``irn-trt-run --overlap exact``).
- ``effective_halo`` (optional, absent or null in older manifests):
  ``{"down": int, "up": int, "threshold_levels": float, "margin": int}``, how
  far a tile edge changes the *trained* model's output by ``threshold_levels``
  8-bit levels or more (measured at export by
  :func:`irn_trt.export.halo.measure_effective_halo`, ``margin`` LR px
  included); never above ``halo``. The runtime's default overlap is its
  larger value (:attr:`ModelManifest.overlap_halo`), or ``halo`` without it.

``macs_per_lr_pixel`` (optional, absent or null in older manifests): ``{"down": int,
"up": int}``, the multiply-adds of each graph's convolutions per LR pixel, counted by
the exporter while running the graphs (``irn-bench`` turns them into GFLOP/s; without
the field it counts them from an IRN ``architecture``).

``peak_bytes_per_hr_px`` (optional, absent or null in older manifests): ``{"down": int,
"up": int}``, how many bytes the peak RSS of a fresh ``ort-cpu`` process grows per HR
pixel of the image it runs (measured by the exporter, :mod:`.memory_probe`); the CPU tile
planner uses it instead of IRN x4's constants (:mod:`.memory`).

``lr_layout`` says what the LR carries (absent in older manifests: ``rgb``):
``rgb`` (plain IRN), ``rgb+alpha-code`` (IRN-A: a 4th, sigmoid-normalised
channel that codes high frequencies; the graphs' LR has 4 channels),
``rgb+latent`` (IRN-M: a side code of z travels with the LR), ``grey``
(IRN_color: the "LR" is a same-size 8-bit grey image; the task is
decolorize / colorize, ``scale`` is 1).

Side code (IRN-M): ``down`` has a second output and ``up`` a second input, the
same tensor (name, 8-bit, channels last for uint8 I/O), whose :class:`TensorInfo`
has ``lr_grid`` set: one value per ``lr_grid`` x ``lr_grid`` LR pixels, so an LR
of h x w has a code of ceil(h / lr_grid) x ceil(w / lr_grid). Tensors without it
(absent in older manifests) are images. Tiles then start and end on that grid:
``tile_multiple`` is ``scale * lr_grid`` HR px (just ``scale`` otherwise), and
``halo`` a multiple of ``lr_grid``.

Compression restore modules (CRM, seed 000 section 3.5; optional, absent in older
manifests, which load unchanged). A CRM maps a JPEG-decoded LR to a restored LR
before ``up``. Its graphs are ``graphs`` entries with ``direction: "restore"`` and
an integer ``quality`` (the JPEG quality they restore; ``null`` on down / up
graphs), files ``restore.q<Q>.<precision>.onnx``. They have the up graph's LR
contract: one image input ``lr`` and one output ``restored`` of the same size and
layout (uint8 NHWC or float32 NCHW, as ``io``). Each CRM is described once in
``restore`` (a list):

    {"model": "crm_small", "architecture": {...}, "checkpoint_sha256": "...",
     "conditioned": false, "qualities": [75], "trained_qualities": [75],
     "halo": 34, "effective_halo": {"halo": 12, "threshold_levels": 1e-06,
     "margin": 2, "measured": true} | null, "macs_per_lr_pixel": 379584 | null,
     "codec": "jpeg", "subsampling": "4:2:0"}

``qualities``: the qualities of its graphs (one per graph: a quality-conditioned CRM,
``conditioned: true``, is exported as one graph per quality with the quality folded
in, so every graph keeps the single-image contract); ``trained_qualities``: those it
was trained on; ``halo`` / ``effective_halo``: its own receptive field and measured
tile overlap in LR px, as for down / up (``effective_halo`` may be null). A quality
belongs to at most one CRM. :meth:`ModelManifest.restore_graph` picks the graph for
a JPEG quality: that quality's, else the nearest one (ties: the lower quality, the
stronger restoration), saying so in one line. Parity numbers: ``parity.restore``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .atomic import write_json_atomic
from .errors import IRNError

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_FILE",
    "LR_LAYOUTS",
    "TensorInfo",
    "GraphInfo",
    "ModelManifest",
    "RESTORE_DIRECTION",
    "RestoreChoice",
    "RestoreInfo",
    "load_manifest",
    "write_manifest",
    "file_sha256",
]

MANIFEST_FORMAT = "irn-trt-model/1"
MANIFEST_FILE = "manifest.json"
#: What an LR image carries besides its colours (see the module docstring).
LR_LAYOUTS = ("rgb", "rgb+alpha-code", "rgb+latent", "grey")
#: ``GraphInfo.direction`` of a compression restore module's graph.
RESTORE_DIRECTION = "restore"

Direction = Literal["down", "up"]
Precision = Literal["fp32", "fp16"]


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output. ``shape`` uses strings for dynamic axes (N, H, W...)."""

    name: str
    dtype: str  # numpy dtype name: "uint8", "float32", "float16"
    shape: tuple[int | str, ...]
    layout: str  # "NHWC" or "NCHW"
    #: A side code's grid: one value per lr_grid x lr_grid LR px (None: an image tensor).
    lr_grid: int | None = None


@dataclass(frozen=True)
class GraphInfo:
    """One ONNX file of the model directory."""

    direction: str  # "down" | "up" | "restore"
    precision: str  # "fp32" | "fp16"
    file: str
    sha256: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    plugins: tuple[str, ...] = ()  # TensorRT plugin ops used (empty: native graph)
    quality: int | None = None  # restore graphs: the JPEG quality they restore


@dataclass(frozen=True)
class RestoreInfo:
    """One compression restore module of the model directory (see the module docstring)."""

    model: str  # registry name, e.g. "crm_small"
    architecture: dict[str, Any]
    checkpoint_sha256: str
    conditioned: bool
    qualities: tuple[int, ...]  # the qualities of its graphs
    trained_qualities: tuple[int, ...]
    halo: int  # receptive-field radius in LR px
    effective_halo: dict[str, Any] | None = None  # {"halo", "threshold_levels", "margin", ...}
    macs_per_lr_pixel: int | None = None
    codec: str = "jpeg"
    subsampling: str = "4:2:0"

    @property
    def overlap_halo(self) -> int:
        """Default tile overlap (LR px): the effective halo if recorded, else ``halo``."""
        if self.effective_halo is None:
            return self.halo
        return min(self.halo, int(self.effective_halo["halo"]))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RestoreInfo:
        eh = d.get("effective_halo")
        if eh is not None:
            eh = dict(eh)
            if not isinstance(eh.get("halo"), int) or eh["halo"] < 0:
                raise ValueError("restore effective_halo.halo must be a non-negative integer")
        macs = d.get("macs_per_lr_pixel")
        if macs is not None and (not isinstance(macs, int) or isinstance(macs, bool) or macs < 0):
            raise ValueError("restore macs_per_lr_pixel must be a non-negative integer")
        return cls(
            model=str(d["model"]),
            architecture=dict(d["architecture"]),
            checkpoint_sha256=str(d["checkpoint_sha256"]),
            conditioned=bool(d["conditioned"]),
            qualities=tuple(_quality(q) for q in d["qualities"]),
            trained_qualities=tuple(_quality(q) for q in d.get("trained_qualities", ())),
            halo=int(d["halo"]),
            effective_halo=eh,
            macs_per_lr_pixel=macs,
            codec=str(d.get("codec", "jpeg")),
            subsampling=str(d.get("subsampling", "4:2:0")),
        )


@dataclass(frozen=True)
class RestoreChoice:
    """The restore graph :meth:`ModelManifest.restore_graph` picked for a JPEG quality."""

    graph: GraphInfo
    restorer: RestoreInfo
    quality: int  # the quality of the graph used
    requested: int  # the LR's quality
    note: str | None = None  # one line when ``quality`` differs from ``requested``


@dataclass(frozen=True)
class ModelManifest:
    model: str  # registry name, e.g. "irn_x4"
    scale: int
    architecture: dict[str, Any]
    checkpoint_sha256: str
    io: str  # "uint8" (NHWC RGB bytes) or "float32" (NCHW in [0, 1])
    z_policy: str  # "zero" | "gaussian" | "input"
    z_channels: int
    temperature: float
    halo: int  # receptive field radius in LR pixels: tiles need this overlap (LR side)
    tile_multiple: int  # HR tile offsets and sizes must be multiples of this
    opset: int
    versions: dict[str, str]
    graphs: tuple[GraphInfo, ...]
    parity: dict[str, Any] = field(default_factory=dict)
    effective_halo: dict[str, Any] | None = None  # see the module docstring
    lr_layout: str = "rgb"  # one of LR_LAYOUTS; see the module docstring
    macs_per_lr_pixel: dict[str, int] | None = None  # see the module docstring
    peak_bytes_per_hr_px: dict[str, int] | None = None  # see the module docstring
    restore: tuple[RestoreInfo, ...] = ()  # compression restore modules, see the docstring
    format: str = MANIFEST_FORMAT

    @property
    def task(self) -> str:
        """``decolorize`` for IRN_color (grey LR at scale 1), else ``rescale``."""
        return "decolorize" if self.lr_layout == "grey" else "rescale"

    @property
    def lr_channels(self) -> int:
        """Channels of the LR tensor the graphs exchange (IRN-A 4, IRN_color 1, else 3)."""
        return {"rgb+alpha-code": 4, "grey": 1}.get(self.lr_layout, 3)

    @property
    def lr_grid(self) -> int:
        """LR px per side-code value along each axis (1 without a side code): tiles align to it."""
        return max(1, self.tile_multiple // self.scale)

    def side_code(self, direction: str) -> TensorInfo | None:
        """The side code among ``direction``'s outputs (down) or inputs (up); None if none."""
        graphs = [g for g in self.graphs if g.direction == direction]
        if not graphs:
            return None
        tensors = graphs[0].outputs if direction == "down" else graphs[0].inputs
        return next((t for t in tensors if t.lr_grid is not None), None)

    @property
    def overlap_halo(self) -> int:
        """Default tile overlap (LR px): the effective halo if recorded, else the exact ``halo``."""
        if self.effective_halo is None:
            return self.halo
        return min(self.halo, max(int(self.effective_halo["down"]), int(self.effective_halo["up"])))

    def graph(self, direction: str, precision: str) -> GraphInfo:
        for g in self.graphs:
            if g.direction == direction and g.precision == precision and not g.plugins:
                return g
        have = ", ".join(f"{g.direction}.{g.precision}" for g in self.graphs)
        raise IRNError(f"model {self.model} has no {direction}.{precision} graph (has: {have})")

    def precisions(self, direction: str) -> list[str]:
        return [g.precision for g in self.graphs if g.direction == direction and not g.plugins]

    def restore_qualities(self) -> list[int]:
        """The JPEG qualities with a restore graph (any precision), ascending."""
        return sorted(
            {
                g.quality
                for g in self.graphs
                if g.direction == RESTORE_DIRECTION and g.quality is not None and not g.plugins
            }
        )

    def restore_graph(self, quality: int, precision: str) -> RestoreChoice:
        """The restore graph for an LR compressed at JPEG ``quality``: that quality's, else
        the nearest (ties: the lower quality), with a one-line note saying which."""
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise IRNError(f"JPEG quality must be an integer in 1..100, got {quality!r}")
        have = self.restore_qualities()
        if not have:
            raise IRNError(
                f"model {self.model} has no compression restore module "
                "(export one with irn-export --crm)"
            )
        graphs: dict[int, GraphInfo] = {
            g.quality: g
            for g in self.graphs
            if g.direction == RESTORE_DIRECTION
            and g.precision == precision
            and g.quality is not None
            and not g.plugins
        }
        if not graphs:
            raise IRNError(
                f"model {self.model} has no {precision} restore graph "
                f"(has {', '.join(sorted(set(self.precisions(RESTORE_DIRECTION))))})"
            )
        used = min(graphs, key=lambda q: (abs(q - quality), q))
        graph = graphs[used]
        info = next((r for r in self.restore if used in r.qualities), None)
        if info is None:
            raise IRNError(f"model {self.model}: restore graph {graph.file} has no restore entry")
        note = None
        if used != quality:
            listed = ", ".join(str(q) for q in sorted(graphs))
            note = (
                f"no CRM for JPEG quality {quality} in {self.model}: using the quality-{used} "
                f"CRM (nearest of {listed})"
            )
        return RestoreChoice(graph, info, used, quality, note)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelManifest:
        graphs = tuple(
            GraphInfo(
                direction=g["direction"],
                precision=g["precision"],
                file=g["file"],
                sha256=g["sha256"],
                inputs=tuple(_tensor(t) for t in g["inputs"]),
                outputs=tuple(_tensor(t) for t in g["outputs"]),
                plugins=tuple(g.get("plugins", ())),
                quality=None if g.get("quality") is None else _quality(g["quality"]),
            )
            for g in d["graphs"]
        )
        return cls(
            model=d["model"],
            scale=int(d["scale"]),
            architecture=dict(d["architecture"]),
            checkpoint_sha256=d["checkpoint_sha256"],
            io=d["io"],
            z_policy=d["z_policy"],
            z_channels=int(d["z_channels"]),
            temperature=float(d["temperature"]),
            halo=int(d["halo"]),
            tile_multiple=int(d["tile_multiple"]),
            opset=int(d["opset"]),
            versions=dict(d["versions"]),
            graphs=graphs,
            parity=dict(d.get("parity", {})),
            effective_halo=_effective_halo(d.get("effective_halo")),
            lr_layout=_lr_layout(d.get("lr_layout", "rgb")),
            macs_per_lr_pixel=_per_direction(d.get("macs_per_lr_pixel"), "macs_per_lr_pixel"),
            peak_bytes_per_hr_px=_per_direction(
                d.get("peak_bytes_per_hr_px"), "peak_bytes_per_hr_px"
            ),
            restore=tuple(RestoreInfo.from_dict(r) for r in d.get("restore", ())),
            format=d.get("format", MANIFEST_FORMAT),
        )


def _tensor(t: dict[str, Any]) -> TensorInfo:
    grid = t.get("lr_grid")
    if grid is not None and (not isinstance(grid, int) or isinstance(grid, bool) or grid < 1):
        raise ValueError(f"tensor {t.get('name')!r}: lr_grid must be a positive integer")
    return TensorInfo(t["name"], t["dtype"], tuple(t["shape"]), t["layout"], grid)


def _quality(raw: Any) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or not 1 <= raw <= 100:
        raise ValueError(f"JPEG quality {raw!r} is not an integer in 1..100")
    return raw


def _lr_layout(raw: Any) -> str:
    if raw not in LR_LAYOUTS:
        raise ValueError(f"lr_layout {raw!r} is not one of {', '.join(LR_LAYOUTS)}")
    return str(raw)


def _per_direction(raw: Any, what: str) -> dict[str, int] | None:
    """A ``{"down": int, "up": int}`` field (non-negative integers), or None."""
    if raw is None:
        return None
    values = dict(raw)
    for key in ("down", "up"):
        value = values.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{what}.{key} must be a non-negative integer")
    return {"down": values["down"], "up": values["up"]}


def _effective_halo(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    eh = dict(raw)
    for key in ("down", "up"):
        if not isinstance(eh.get(key), int) or eh[key] < 0:
            raise ValueError(f"effective_halo.{key} must be a non-negative integer")
    return eh


def load_manifest(model_dir: str | os.PathLike[str]) -> ModelManifest:
    """Read and validate ``model_dir/manifest.json`` (one-line errors)."""
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST_FILE
    if not model_dir.is_dir():
        raise IRNError(f"model directory {model_dir} does not exist (run irn-export first)")
    if not path.is_file():
        raise IRNError(f"{model_dir} is not a model directory: {MANIFEST_FILE} is missing")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IRNError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
        raise IRNError(f"{path}: not an irn-trt manifest (format {MANIFEST_FORMAT} expected)")
    try:
        return ModelManifest.from_dict(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise IRNError(f"{path}: invalid manifest ({type(exc).__name__}: {exc})") from None


def write_manifest(model_dir: str | os.PathLike[str], manifest: ModelManifest) -> Path:
    path = Path(model_dir) / MANIFEST_FILE
    write_json_atomic(path, manifest.to_dict(), sort_keys=True)
    return path
