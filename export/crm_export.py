"""Compression restore modules (CRM) in a model directory: their graphs, parity and halo.

A CRM restores a JPEG-decoded LR before ``up``. Each of its graphs has the up graph's
LR contract (one image ``lr`` in, the restored image ``restored`` out, same size, the
export's ``io``), and restores one JPEG quality: a quality-conditioned CRM is exported
as one graph per quality with the quality folded in as a constant, so no backend, engine
profile or tiler needs a second input. Inside: the uint8 -> [0, 1] conversion, the
RRDB network in the graph's precision, the residual added to the input in FP32 (an FP16
graph keeps the input LR exact) and the clamp / round to 8 bits in FP32.

Parity (``parity.restore``, per quality): the inputs are the export's verification
images through the rescaler's PyTorch ``down``, 8 bits and Pillow's JPEG at that
quality; ``restore.fp32`` is compared byte for byte with PyTorch, ``restore.fp16`` with
``restore.fp32``, with the bounds of ``down`` (:class:`~.verify.Bounds`). The halo is
measured as for down / up (:func:`~.halo.measure_restore_halo`, and on trained weights
:func:`~.halo.measure_restore_effective_halo`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.manifest import (
    RESTORE_DIRECTION,
    GraphInfo,
    RestoreInfo,
    TensorInfo,
    file_sha256,
)
from irn_trt.train.evaluate import check_compressible, to_tensor, to_uint8
from irn_trt.train.jpeg import JPEG_SUBSAMPLING, jpeg_roundtrip
from irn_trt.train.models import CompressionRestorer, Rescaler, quantize
from irn_trt.train.recipe import check_quality
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .graphs import GraphSpec, _image_in, _image_out, frozen_copy
from .halo import (
    EFFECTIVE_HALO_MARGIN,
    EFFECTIVE_HALO_THRESHOLD,
    measure_restore_effective_halo,
    measure_restore_halo,
)
from .onnx_graph import DynamicIO, ops_used, trace_to_onnx
from .verify import Bounds, OrtGraph

__all__ = [
    "RestoreGraph",
    "RestoreModel",
    "build_restore_graph",
    "export_restorers",
    "restore_file",
    "restore_macs_per_lr_pixel",
    "restore_model_from_checkpoint",
]


def restore_file(quality: int, precision: str) -> str:
    """The file name of a restore graph, ``restore.q<Q>.<precision>.onnx``."""
    return f"{RESTORE_DIRECTION}.q{quality}.{precision}.onnx"


@dataclass(frozen=True)
class RestoreModel:
    """A CRM to export beside a rescaler: the network and the JPEG qualities of its graphs.

    A per-quality CRM has exactly one quality; a conditioned one gets a graph per
    quality. ``trained_qualities`` (recorded in the manifest) default to ``qualities``.
    """

    crm: CompressionRestorer
    qualities: tuple[int, ...]
    trained_qualities: tuple[int, ...] = ()
    checkpoint_sha256: str | None = None

    def validate(self) -> None:
        if not isinstance(self.crm, CompressionRestorer):
            raise IRNError(f"{getattr(self.crm, 'config', self.crm)} is not a CRM (crm_*)")
        if not self.qualities:
            raise IRNError(f"{self.crm.config.name}: no JPEG quality to export it for")
        for q in (*self.qualities, *self.trained_qualities):
            check_quality(q)
        if len(set(self.qualities)) != len(self.qualities):
            raise IRNError(f"{self.crm.config.name}: JPEG qualities {self.qualities} repeat")
        if not self.crm.config.conditioned and len(self.qualities) != 1:
            raise IRNError(
                f"{self.crm.config.name} restores one JPEG quality, not {list(self.qualities)}"
            )


def restore_model_from_checkpoint(
    path: str | os.PathLike[str], qualities: Sequence[int] | None = None
) -> RestoreModel:
    """A CRM checkpoint (``irn-train --stage crm``) as a :class:`RestoreModel`.

    The qualities come from its training configuration (``lr_jpeg``) unless given.
    """
    from irn_trt.train.checkpoint import checkpoint_sha256, load_checkpoint

    model, config = load_checkpoint(path)
    if not isinstance(model, CompressionRestorer):
        raise IRNError(f"--crm {path} is {model.config.name}, not a CRM (crm_*)")
    trained = tuple(config.get("meta", {}).get("train_config", {}).get("lr_jpeg") or ())
    chosen = tuple(qualities) if qualities else trained
    if not chosen:
        raise IRNError(
            f"--crm {path}: its checkpoint does not say which JPEG quality it restores; "
            "give it as --crm DIR@Q"
        )
    return RestoreModel(model, chosen, trained or chosen, checkpoint_sha256(path))


class RestoreGraph(nn.Module):
    """JPEG-decoded LR -> restored LR (8 bits), at one quality (see the module docstring)."""

    def __init__(self, crm: CompressionRestorer, spec: GraphSpec, quality: int) -> None:
        super().__init__()
        self.spec = spec
        self.quality = quality
        self.net = frozen_copy(crm, spec.dtype)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x32 = _image_in(lr, GraphSpec("fp32", self.spec.io))
        x = x32.to(self.spec.dtype) if self.spec.dtype != torch.float32 else x32
        q = self.quality if self.net.config.conditioned else None
        residual = self.net.residual(self.net.condition(x, q))
        return _image_out(x32 + residual.float(), self.spec)


def build_restore_graph(
    crm: CompressionRestorer, quality: int, spec: GraphSpec
) -> tuple[onnx.ModelProto, tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """Trace one restore graph; returns it with its input and output descriptions."""
    c = crm.lr_channels
    if spec.io == "uint8":
        shape, layout, axes = ("N", "H/s", "W/s", c), "NHWC", {0: "N", 1: "H/s", 2: "W/s"}
        example = torch.full((1, 4, 4, c), 128, dtype=torch.uint8)
    else:
        shape, layout, axes = ("N", c, "H/s", "W/s"), "NCHW", {0: "N", 2: "H/s", 3: "W/s"}
        example = torch.full((1, c, 4, 4), 0.5)
    graph = trace_to_onnx(
        RestoreGraph(crm, spec, quality),
        (example,),
        [DynamicIO("lr", axes)],
        [DynamicIO("restored", axes)],
    )
    dtype = "uint8" if spec.io == "uint8" else "float32"
    return (
        graph,
        (TensorInfo("lr", dtype, shape, layout),),
        (TensorInfo("restored", dtype, shape, layout),),
    )


@torch.no_grad()
def restore_macs_per_lr_pixel(crm: CompressionRestorer, size: int = 4) -> int:
    """Multiply-adds of a restore graph per LR pixel (PyTorch's FLOP counter, as for down/up)."""
    module = RestoreGraph(crm, GraphSpec("fp32", "float32"), 50)
    x = torch.full((1, crm.lr_channels, size, size), 0.5)
    with FlopCounterMode(display=False) as counter:
        module(x)
    return int(counter.get_total_flops() // 2 // (size * size))


@torch.no_grad()
def _jpeg_lrs(
    rescaler: Rescaler, images: Sequence[np.ndarray], quality: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The rescaler's 8-bit LR of each (mod-cropped) HR image, and its JPEG at ``quality``."""
    clean, jpeg = [], []
    for hr in images:
        y, _ = rescaler(to_tensor(hr))
        lr = to_uint8(quantize(y))
        clean.append(lr)
        jpeg.append(jpeg_roundtrip(lr, quality)[0])
    return clean, jpeg


def _db(a: np.ndarray, b: np.ndarray) -> float:
    from irn_trt.runtime.metrics import psnr

    return round(min(psnr(a, b), 100.0), 3)


@torch.no_grad()
def _parity(
    crm: CompressionRestorer,
    quality: int,
    sessions: dict[str, OrtGraph],
    clean: Sequence[np.ndarray],
    jpeg: Sequence[np.ndarray],
    bounds: Bounds,
) -> tuple[dict, list[str]]:
    total = equal = within1 = 0
    max32 = max16 = 0
    lr_db: dict[str, list[float]] = {"jpeg": [], "torch": [], "fp32": [], "fp16": []}
    for ref, inp in zip(clean, jpeg, strict=True):
        t = to_uint8(crm(to_tensor(inp), quality if crm.config.conditioned else None))
        o32 = sessions["fp32"](inp)
        d = np.abs(o32.astype(np.int16) - t.astype(np.int16))
        total += d.size
        equal += int((d == 0).sum())
        max32 = max(max32, int(d.max()))
        lr_db["jpeg"].append(_db(inp, ref))
        lr_db["torch"].append(_db(t, ref))
        lr_db["fp32"].append(_db(o32, ref))
        if "fp16" in sessions:
            o16 = sessions["fp16"](inp)
            d16 = np.abs(o16.astype(np.int16) - o32.astype(np.int16))
            within1 += int((d16 <= 1).sum())
            max16 = max(max16, int(d16.max()))
            lr_db["fp16"].append(_db(o16, ref))
    numbers: dict = {
        "restore_fp32_vs_torch": {"equal_fraction": round(equal / total, 6), "max_abs_diff": max32},
        "lr_psnr_db_vs_uncompressed": {
            k: round(float(np.mean(v)), 3) for k, v in lr_db.items() if v
        },
    }
    failures = []
    if equal / total < bounds.down_fp32_min_equal or max32 > bounds.down_fp32_max_diff:
        failures.append(
            f"restore.q{quality}.fp32 equals PyTorch's LR on {100 * equal / total:.3f}% of "
            f"values (max diff {max32}; need >= {100 * bounds.down_fp32_min_equal}% and <= "
            f"{bounds.down_fp32_max_diff})"
        )
    if "fp16" in sessions:
        numbers["restore_fp16_vs_fp32"] = {
            "within1_fraction": round(within1 / total, 6),
            "max_abs_diff": max16,
        }
        if within1 / total < bounds.down_fp16_min_within1:
            failures.append(
                f"restore.q{quality}.fp16 within 1 level of FP32 on "
                f"{100 * within1 / total:.2f}% of values "
                f"(need >= {100 * bounds.down_fp16_min_within1}%)"
            )
    return numbers, failures


def check_restorers(rescaler: Rescaler, restorers: Sequence[RestoreModel]) -> None:
    """Refuse, before any work, CRMs that cannot join this rescaler's model directory."""
    if not restorers:
        return
    check_compressible(rescaler)
    seen: set[int] = set()
    for r in restorers:
        r.validate()
        if r.crm.lr_channels != rescaler.lr_channels:
            raise IRNError(
                f"{r.crm.config.name} restores {r.crm.lr_channels}-channel LRs; "
                f"{rescaler.config.name}'s have {rescaler.lr_channels}"
            )
        clash = seen & set(r.qualities)
        if clash:
            raise IRNError(f"two CRMs restore JPEG quality {sorted(clash)[0]}: keep one")
        seen |= set(r.qualities)


def export_restorers(
    rescaler: Rescaler,
    restorers: Sequence[RestoreModel],
    out: Path,
    precisions: Sequence[str],
    io: str,
    verify_images: Sequence[np.ndarray] = (),
    halo_images: Sequence[np.ndarray] = (),
    bounds: Bounds | None = None,
) -> tuple[list[GraphInfo], list[RestoreInfo], dict]:
    """Build, verify and write every CRM's graphs into ``out`` (the export's temporary folder).

    ``verify_images`` / ``halo_images``: HR uint8, mod-cropped to the scale. Returns the
    graphs' manifest entries, the ``restore`` entries and ``parity.restore``; raises an
    :class:`IRNError` (nothing is moved into place) if a parity bound is broken.
    """
    bounds = bounds or Bounds()
    check_restorers(rescaler, restorers)
    build = ["fp32", *(p for p in precisions if p != "fp32")] if verify_images else precisions
    graph_infos: list[GraphInfo] = []
    infos: list[RestoreInfo] = []
    parity: dict = {}
    failures: list[str] = []
    for r in restorers:
        crm = r.crm.eval()
        exact = measure_restore_halo(crm.config)
        jpeg_halo: list[tuple[int, np.ndarray]] = []
        for q in r.qualities:
            blobs = {}
            for precision in build:
                spec = GraphSpec(precision, io)  # type: ignore[arg-type]
                graph, ins, outs = build_restore_graph(crm, q, spec)
                blobs[precision] = graph.SerializeToString()
                if precision in precisions:
                    name = restore_file(q, precision)
                    (out / name).write_bytes(blobs[precision])
                    graph_infos.append(
                        GraphInfo(
                            RESTORE_DIRECTION,
                            precision,
                            name,
                            file_sha256(out / name),
                            ins,
                            outs,
                            quality=q,
                        )
                    )
                    parity.setdefault(f"q{q}", {}).setdefault("ops", {})[precision] = ops_used(
                        graph
                    )
            if verify_images:
                clean, jpeg = _jpeg_lrs(rescaler, verify_images, q)
                sessions = {p: OrtGraph(b, io) for p, b in blobs.items()}
                numbers, fails = _parity(crm, q, sessions, clean, jpeg, bounds)
                parity.setdefault(f"q{q}", {}).update(numbers)
                failures += fails
            if halo_images:
                jpeg_halo += [(q, j) for j in _jpeg_lrs(rescaler, halo_images, q)[1]]
        effective = None
        if halo_images:
            radius, measured = measure_restore_effective_halo(crm, jpeg_halo, exact)
            effective = {
                "halo": radius,
                "threshold_levels": EFFECTIVE_HALO_THRESHOLD,
                "margin": EFFECTIVE_HALO_MARGIN,
                "measured": measured,
            }
        infos.append(
            RestoreInfo(
                model=crm.config.name,
                architecture=crm.config.to_dict(),
                checkpoint_sha256=r.checkpoint_sha256 or _weights_sha256(crm),
                conditioned=crm.config.conditioned,
                qualities=tuple(r.qualities),
                trained_qualities=tuple(r.trained_qualities or r.qualities),
                halo=exact,
                effective_halo=effective,
                macs_per_lr_pixel=restore_macs_per_lr_pixel(crm),
                subsampling=JPEG_SUBSAMPLING,
            )
        )
    if failures:
        raise IRNError("export verification failed: " + "; ".join(failures))
    return graph_infos, infos, parity


def _weights_sha256(model: nn.Module) -> str:
    from .api import weights_sha256

    return weights_sha256(model)  # type: ignore[arg-type]
