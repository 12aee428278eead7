"""``export_model``: a model -> a model directory (four ONNX graphs + manifest.json, plus the
graphs of any compression restore modules given, see :mod:`.crm_export`).

The graphs are built in a temporary folder beside ``out_dir``, verified, and
only then moved into place (each file atomically, the manifest last), so a
failed or interrupted export leaves the previous model directory as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import torch
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.manifest import (
    MANIFEST_FILE,
    GraphInfo,
    ModelManifest,
    TensorInfo,
    file_sha256,
    write_manifest,
)
from irn_trt.runtime.resize import modcrop
from irn_trt.train.models import (
    FlowGuidedRescaler,
    InvertibleRescaler,
    ModelConfig,
    Rescaler,
)
from safetensors.torch import save as safetensors_save
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .crm_export import RestoreModel, check_restorers, export_restorers
from .fgrn_graphs import FGRNDownGraph, FGRNUpGraph
from .graphs import DownGraph, GraphSpec, IOKind, UpGraph, ZPolicy
from .halo import measure_effective_halo, measure_halo, round_up
from .onnx_graph import OPSET, DynamicIO, ops_used, trace_to_onnx
from .verify import Bounds, GraphSet, OrtGraph, measure_parity

__all__ = [
    "PRECISIONS",
    "ExportOptions",
    "export_model",
    "build_graph",
    "graph_module",
    "macs_per_lr_pixel",
    "weights_sha256",
]

PRECISIONS = ("fp32", "fp16")
#: Name of IRN-M's side-code tensor in its graphs.
CODE_TENSOR = "code"
GRAPH_FILES = tuple(f"{d}.{p}.onnx" for d in ("down", "up") for p in PRECISIONS)

#: The down / up graph wrappers of each model class.
_GRAPHS: dict[type, tuple[type[nn.Module], type[nn.Module]]] = {
    InvertibleRescaler: (DownGraph, UpGraph),
    FlowGuidedRescaler: (FGRNDownGraph, FGRNUpGraph),
}


@dataclass(frozen=True)
class ExportOptions:
    """What to export. ``precisions``: a subset of ("fp32", "fp16")."""

    precisions: tuple[str, ...] = PRECISIONS
    io: IOKind = "uint8"
    z_policy: ZPolicy = "zero"
    temperature: float = 1.0
    #: Keep the coupling's sigmoid/exp/scale/divide in FP32 inside FP16 graphs
    #: (chosen by measurement, see the export notes in CHANGELOG/README).
    coupling_fp32: bool = True
    #: Measure each direction's peak memory slope on ort-cpu (fresh child processes, a
    #: few seconds to a minute) for the runtime's CPU tile planner (manifest
    #: ``peak_bytes_per_hr_px``); off, the runtime assumes IRN x4's. Off by default in
    #: the API (tests and tools export often); ``irn-export`` turns it on.
    measure_memory: bool = False

    def validate(self) -> None:
        if not self.precisions or any(p not in PRECISIONS for p in self.precisions):
            raise IRNError(
                f"precisions must be a non-empty subset of {PRECISIONS}, got {self.precisions}"
            )
        if self.io not in ("uint8", "float32"):
            raise IRNError(f"io must be uint8 or float32, got {self.io!r}")
        if self.z_policy not in ("zero", "gaussian", "input"):
            raise IRNError(f"z policy must be zero, gaussian or input, got {self.z_policy!r}")
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise IRNError(f"temperature must be a finite number >= 0, got {self.temperature}")


def lr_layout(config: ModelConfig) -> str:
    """The manifest's ``lr_layout`` for a model configuration."""
    if config.task == "decolorize":
        return "grey"
    if config.alpha_channel:
        return "rgb+alpha-code"
    if config.latent_code is not None:
        return "rgb+latent"
    return "rgb"


def weights_sha256(model: Rescaler) -> str:
    """SHA-256 of the model's weights serialized as safetensors (for models without a file)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return hashlib.sha256(safetensors_save(tensors)).hexdigest()


def _image_dims(
    io: str, batch: str, h: str, w: str, channels: int = 3
) -> tuple[tuple[int | str, ...], str, dict[int, str]]:
    """Shape, layout and dynamic axes of an image tensor."""
    if io == "uint8":
        return (batch, h, w, channels), "NHWC", {0: batch, 1: h, 2: w}
    return (batch, channels, h, w), "NCHW", {0: batch, 2: h, 3: w}


def code_grid(model: Rescaler) -> int:
    """LR px per side-code value along each axis (IRN-M: 4), 1 for models without one."""
    code = getattr(model.config, "latent_code", None)
    return code.factor if code is not None else 1


def _code_info(model: Rescaler, io: str) -> tuple[TensorInfo, dict[int, str]]:
    """The side code tensor of IRN-M's graphs (down's second output, up's second input)."""
    code = model.config.latent_code
    assert code is not None
    n = model.scale * code.factor  # HR px per code value
    shape, layout, axes = _image_dims(io, "N", f"ceil(H/{n})", f"ceil(W/{n})", code.channels)
    io_dtype = "uint8" if io == "uint8" else "float32"
    return TensorInfo(CODE_TENSOR, io_dtype, shape, layout, lr_grid=code.factor), axes


def graph_module(
    model: Rescaler,
    direction: str,
    spec: GraphSpec,
    z_policy: ZPolicy = "zero",
    temperature: float = 1.0,
) -> nn.Module:
    """The traceable wrapper of one direction for ``model``'s family."""
    try:
        down_cls, up_cls = _GRAPHS[type(model)]
    except KeyError:
        raise IRNError(f"cannot export a {type(model).__name__}") from None
    if direction == "down":
        return down_cls(model, spec)
    if direction != "up":
        raise ValueError(f"direction must be down or up, got {direction!r}")
    return up_cls(model, spec, z_policy, temperature)


@torch.no_grad()
def macs_per_lr_pixel(model: Rescaler, direction: str, size: int = 4) -> int:
    """Multiply-adds of one direction's graph per LR pixel, counted while running it.

    PyTorch's FLOP counter sees every convolution the FP32 graph wrapper runs
    (fixed-weight ones included), as :func:`irn_trt.runtime.costs.model_macs`
    counts them: every output (ConvTranspose: input) position at the full kernel.
    All of them scale with the image area, so one ``size`` x ``size`` LR run gives
    the per-pixel cost; the manifest records it for ``irn-bench``.
    """
    module = graph_module(model, direction, GraphSpec("fp32", "float32"))
    s, g = model.scale, code_grid(model)
    size *= g  # a whole number of side-code cells: every part scales with the area
    side = size * s if direction == "down" else size
    x = torch.full((1, model.in_channels if direction == "down" else model.lr_channels,
                    side, side), 0.5)  # fmt: skip
    args = [x]
    if direction == "up" and model.latent_code is not None:
        args.append(torch.full((1, model.config.latent_code.channels, size // g, size // g), 0.5))
    with FlopCounterMode(display=False) as counter:
        module(*args)
    flops = counter.get_total_flops()
    return int(flops // 2 // (size * size))


def build_graph(
    model: Rescaler,
    direction: str,
    spec: GraphSpec,
    z_policy: ZPolicy = "zero",
    temperature: float = 1.0,
) -> tuple[onnx.ModelProto, tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """Trace one graph; returns it with its input and output descriptions."""
    s = model.scale
    io_dtype = "uint8" if spec.io == "uint8" else "float32"
    hr_shape, layout, hr_axes = _image_dims(spec.io, "N", "H", "W")
    lr_shape, _, lr_axes = _image_dims(spec.io, "N", f"H/{s}", f"W/{s}", model.lr_channels)
    hr_info = TensorInfo("hr", io_dtype, hr_shape, layout)
    lr_info = TensorInfo("lr", io_dtype, lr_shape, layout)
    # Trace at a size that is a multiple of the scale at every level (and two side-code
    # cells, IRN-M), batch 1.
    g = code_grid(model)
    side = 2 * s * g

    def example(shape: tuple[int | str, ...], size: int) -> torch.Tensor:
        dims = [1 if d == "N" else (size if isinstance(d, str) else d) for d in shape]
        if spec.io == "uint8":
            return torch.full(dims, 128, dtype=torch.uint8)
        return torch.full(dims, 0.5, dtype=torch.float32)

    module = graph_module(model, direction, spec, z_policy, temperature)
    code = _code_info(model, spec.io) if model.latent_code is not None else None
    if direction == "down":
        outputs, out_infos = [DynamicIO("lr", lr_axes)], [lr_info]
        if code is not None:  # IRN-M: the side code is the second output
            outputs.append(DynamicIO(code[0].name, code[1]))
            out_infos.append(code[0])
        graph = trace_to_onnx(
            module, (example(hr_shape, side),), [DynamicIO("hr", hr_axes)], outputs
        )
        return graph, (hr_info,), tuple(out_infos)
    inputs = [DynamicIO("lr", lr_axes)]
    infos = [lr_info]
    examples = [example(lr_shape, 2 * g)]
    if code is not None:  # IRN-M: the side code is the second input
        inputs.append(DynamicIO(code[0].name, code[1]))
        infos.append(code[0])
        examples.append(example(code[0].shape, 2))
    elif z_policy == "input":
        zc = model.latent_channels
        inputs.append(DynamicIO("z", {0: "N", 2: f"H/{s}", 3: f"W/{s}"}))
        infos.append(TensorInfo("z", "float32", ("N", zc, f"H/{s}", f"W/{s}"), "NCHW"))
        examples.append(torch.zeros(1, zc, 2, 2))
    graph = trace_to_onnx(module, tuple(examples), inputs, [DynamicIO("hr", hr_axes)])
    return graph, tuple(infos), (hr_info,)


def _measure_memory(
    folder: Path, graphs: Sequence[GraphInfo], scale: int, tile_multiple: int
) -> dict[str, int] | None:
    """Each direction's ``ort-cpu`` peak-RSS slope (bytes per HR px), measured on its FP32
    graph (FP16 if only that was exported); None, with a warning, if it cannot be measured."""
    from irn_trt.runtime.memory_probe import measure_peak_slope

    peak = {}
    for direction in ("down", "up"):
        mine = sorted(
            (g for g in graphs if g.direction == direction), key=lambda g: g.precision != "fp32"
        )
        graph = mine[0]
        try:
            peak[direction] = measure_peak_slope(folder / graph.file, graph, scale, tile_multiple)
        except RuntimeError as exc:
            print(
                f"warning: peak memory of {graph.file} not measured ({exc}): the runtime "
                "will plan CPU tiles with IRN x4's memory model",
                file=sys.stderr,
            )
            return None
    return peak


def _versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "onnx": onnx.__version__, "opset": str(OPSET)}
    for dist in ("onnxruntime", "onnxslim", "irn-trt"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def _prepare_out_dir(out_dir: Path) -> tuple[Path, bool]:
    """Create ``out_dir`` and a private temporary folder in it; says if ``out_dir`` is new."""
    if out_dir.exists() and not out_dir.is_dir():
        raise IRNError(f"output {out_dir} exists and is not a directory")
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".irn-export.", dir=out_dir))
    except OSError as exc:
        _remove_if_empty(out_dir, created)
        raise IRNError(
            f"cannot write to output directory {out_dir} ({exc.strerror or exc})"
        ) from None
    return tmp, created


def _remove_if_empty(out_dir: Path, created: bool) -> None:
    if created:
        with contextlib.suppress(OSError):
            out_dir.rmdir()


def export_model(
    model: Rescaler,
    out_dir: str | os.PathLike[str],
    *,
    options: ExportOptions | None = None,
    checkpoint_sha256: str | None = None,
    verify_images: Sequence[tuple[str, np.ndarray]] = (),
    bounds: Bounds | None = None,
    halo_images: Sequence[np.ndarray] = (),
    progress: bool = False,
    restorers: Sequence[RestoreModel] = (),
) -> ModelManifest:
    """Export ``model`` into ``out_dir``; returns the manifest written there.

    ``verify_images`` are (name, HR uint8) images; when given, every graph is run in
    ONNX Runtime and compared with PyTorch (see :mod:`.verify`), and the export
    fails, leaving ``out_dir`` untouched, if a bound is broken. The numbers go into
    the manifest's ``parity``. ``checkpoint_sha256`` defaults to the hash of the
    weights themselves (for models that do not come from a checkpoint file).
    ``halo_images`` (HR uint8): when given, the trained weights' effective halo is
    measured on them (:func:`.halo.measure_effective_halo`) and recorded in the
    manifest's ``effective_halo``, the runtime's default tile overlap.
    ``restorers``: compression restore modules exported beside the rescaler (their
    graphs verified on the same images, their halo measured on the same halo images;
    :func:`.crm_export.export_restorers`).
    """
    from tqdm import tqdm

    options = options or ExportOptions()
    options.validate()
    if model.latent_code is not None and options.z_policy != "zero":
        raise IRNError(
            f"{model.config.name} rebuilds z from its side code: --z {options.z_policy} "
            "does not apply"
        )
    if model.latent_code is not None and model.config.latent_code.bits != 8:
        raise IRNError(f"{model.config.name}: only 8-bit side codes can be exported")
    if model.latent_channels == 0 and options.z_policy != "zero":
        raise IRNError(
            f"{model.config.name} has no latent z: --z {options.z_policy} does not apply "
            "(its up graph takes the LR alone)"
        )
    check_restorers(model, restorers)
    model = model.eval()
    out_dir = Path(out_dir)
    s = model.scale
    images = [(name, modcrop(img, s)) for name, img in verify_images]
    for name, img in images:
        if min(img.shape[:2]) <= 2 * s:
            # irn-eval's protocol shaves a border of `scale` pixels before measuring.
            raise IRNError(f"verification image {name} is too small for scale {s}")
    # fp32 graphs are always built: they are the reference of the fp16 parity checks.
    build = ["fp32", *(p for p in options.precisions if p != "fp32")]
    if not images:
        build = list(options.precisions)
    steps = [(d, p) for p in build for d in ("down", "up")]
    tmp, created = _prepare_out_dir(out_dir)
    done = False
    try:
        blobs: dict[tuple[str, str], bytes] = {}
        infos: dict[
            tuple[str, str], tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...], list[str]]
        ] = {}
        bar = tqdm(steps, desc=f"export {model.config.name}", unit="graph", disable=not progress)
        for direction, precision in bar:
            bar.set_postfix_str(f"{direction}.{precision}")
            spec = GraphSpec(precision, options.io, options.coupling_fp32)  # type: ignore[arg-type]
            graph, ins, outs = build_graph(
                model, direction, spec, options.z_policy, options.temperature
            )
            blobs[(direction, precision)] = graph.SerializeToString()
            infos[(direction, precision)] = (ins, outs, ops_used(graph))
        bar.close()

        parity: dict = {}
        if images:

            def session(d: str, p: str) -> OrtGraph | None:
                blob = blobs.get((d, p))
                return OrtGraph(blob, options.io) if blob is not None else None

            graphs = GraphSet(
                down_fp32=session("down", "fp32"),  # type: ignore[arg-type]
                up_fp32=session("up", "fp32"),  # type: ignore[arg-type]
                down_fp16=session("down", "fp16"),
                up_fp16=session("up", "fp16"),
            )
            report = measure_parity(model, graphs, images, options.z_policy, bounds)
            report.check()
            parity = report.numbers

        halo = measure_halo(model.config)
        effective = measure_effective_halo(model, halo_images, halo) if halo_images else None
        g = code_grid(model)  # tiles start and end on the side code's grid
        graph_infos = []
        for direction in ("down", "up"):
            for precision in options.precisions:
                name = f"{direction}.{precision}.onnx"
                path = tmp / name
                path.write_bytes(blobs[(direction, precision)])
                ins, outs, _ = infos[(direction, precision)]
                graph_infos.append(
                    GraphInfo(direction, precision, name, file_sha256(path), ins, outs)
                )
        restore_infos: list = []
        if restorers:
            more, restore_infos, restore_parity = export_restorers(
                model,
                restorers,
                tmp,
                options.precisions,
                options.io,
                [img for _, img in images],
                [modcrop(img, s) for img in halo_images],
                bounds,
            )
            graph_infos += more
            parity["restore"] = restore_parity
        parity["ops"] = {f"{d}.{p}": infos[(d, p)][2] for d, p in infos if p in options.precisions}
        parity["halo_measured"] = {"down": halo.down, "up": halo.up}
        parity["coupling_fp32_island"] = options.coupling_fp32
        macs = {d: macs_per_lr_pixel(model, d) for d in ("down", "up")}
        peak = _measure_memory(tmp, graph_infos, s, s * g) if options.measure_memory else None
        manifest = ModelManifest(
            model=model.config.name,
            scale=s,
            architecture=model.config.to_dict(),
            checkpoint_sha256=checkpoint_sha256 or weights_sha256(model),
            io=options.io,
            z_policy=options.z_policy,
            z_channels=model.latent_channels,
            lr_layout=lr_layout(model.config),
            temperature=float(options.temperature) if options.z_policy == "gaussian" else 0.0,
            halo=round_up(halo.halo, g),
            tile_multiple=s * g,
            opset=OPSET,
            versions=_versions(),
            graphs=tuple(graph_infos),
            parity=parity,
            effective_halo=effective.to_dict() if effective is not None else None,
            macs_per_lr_pixel=macs,
            peak_bytes_per_hr_px=peak,
            restore=tuple(restore_infos),
        )
        write_manifest(tmp, manifest)
        for info in graph_infos:
            os.replace(tmp / info.file, out_dir / info.file)
        os.replace(tmp / MANIFEST_FILE, out_dir / MANIFEST_FILE)
        # Graphs of a precision this export did not produce would not match the manifest.
        written = {g.file for g in graph_infos}
        stale_restore = {p.name for p in out_dir.glob("restore.*.onnx")}
        for stale in (set(GRAPH_FILES) | stale_restore) - written:
            (out_dir / stale).unlink(missing_ok=True)
        done = True
        return manifest
    except OSError as exc:
        raise IRNError(
            f"cannot write the model directory {out_dir} ({exc.strerror or exc})"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            _remove_if_empty(out_dir, created)
