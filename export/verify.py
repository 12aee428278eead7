"""Parity of exported graphs: ONNX Runtime (CPU) against PyTorch, FP16 against FP32.

The bounds are the acceptance criteria of the export (issue 3). Each check
compares 8-bit outputs, since that is what a deployment hands over:

* ``down.fp32`` vs PyTorch: LR bytes identical on >= 99.9 % of values, never off by > 1.
* ``up.fp32`` vs PyTorch (same LR bytes in): HR >= 60 dB.
* ``down.fp16`` vs ``down.fp32``: off by <= 1 level on >= 99 % of values.
* ``up.fp16`` vs ``up.fp32`` (same LR in): HR >= 45 dB.
* end to end (``up(down(x))``), Y-PSNR of FP16 within 0.1 dB of FP32.

IRN-M's side code (down's second output, up's second input) is held to the LR's
bounds: its bytes equal PyTorch's (``code_fp32_vs_torch``) and FP16's within one
level of FP32's (``code_fp16_vs_fp32``); up gets the same code bytes as PyTorch's
decoder, and end to end each graph's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.metrics import psnr, rgb_to_y, shave
from irn_trt.train.evaluate import to_tensor, to_uint8
from irn_trt.train.models import Rescaler, quantize

__all__ = [
    "Bounds",
    "GraphSet",
    "ParityReport",
    "OrtGraph",
    "measure_parity",
]

#: PSNR reported for identical outputs (JSON has no infinity).
IDENTICAL_DB = 100.0


@dataclass(frozen=True)
class Bounds:
    down_fp32_min_equal: float = 0.999
    down_fp32_max_diff: int = 1
    up_fp32_min_db: float = 60.0
    down_fp16_min_within1: float = 0.99
    up_fp16_min_db: float = 45.0
    e2e_fp16_max_drop_db: float = 0.1


class OrtGraph:
    """One serialized ONNX graph in an ONNX Runtime CPU session, with image conversions."""

    def __init__(self, onnx_bytes: bytes, io: str, threads: int | None = None) -> None:
        try:
            # Imported here: ONNX Runtime is an extra (cpu or a GPU set), not a base dependency.
            import onnxruntime as ort
        except ImportError:
            raise IRNError(
                "checking the exported graphs needs ONNX Runtime: pip install 'irn-trt[cpu]' "
                "(or a GPU set), or pass --no-verify"
            ) from None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(
            onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.io = io
        self.input_names = [i.name for i in self.session.get_inputs()]

    def _to_graph(self, img: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> the graph's image input (batch of one)."""
        if self.io == "uint8":
            return np.ascontiguousarray(img[None])
        return np.ascontiguousarray(img.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)

    def _from_graph(self, out: np.ndarray) -> np.ndarray:
        """The graph's image output -> HxWx3 uint8 (float outputs are exact multiples of 1/255)."""
        if self.io == "uint8":
            return out[0]
        return np.round(out[0].transpose(1, 2, 0) * 255.0).astype(np.uint8)

    def outputs(self, img: np.ndarray, second: np.ndarray | None = None) -> list[np.ndarray]:
        """Every output as HxWxC uint8; ``second`` feeds the second input as the graph takes
        it (a z, or a side code through :meth:`image_input`)."""
        feeds = {self.input_names[0]: self._to_graph(img)}
        if second is not None:
            feeds[self.input_names[1]] = second
        return [self._from_graph(out) for out in self.session.run(None, feeds)]

    def image_input(self, img: np.ndarray) -> np.ndarray:
        """HxWxC uint8 (e.g. IRN-M's side code) -> the graph's input format."""
        return self._to_graph(img)

    def __call__(self, img: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
        return self.outputs(img, z)[0]


@dataclass
class GraphSet:
    """The graphs under test; FP16 ones may be absent (FP32-only export)."""

    down_fp32: OrtGraph
    up_fp32: OrtGraph
    down_fp16: OrtGraph | None = None
    up_fp16: OrtGraph | None = None


@dataclass
class ParityReport:
    numbers: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.failures:
            raise IRNError("export verification failed: " + "; ".join(self.failures))


def _y_psnr(test: np.ndarray, ref: np.ndarray, border: int) -> float:
    """Y-channel PSNR with a shaved border: irn-eval's protocol, without its SSIM."""
    return psnr(shave(rgb_to_y(test), border), shave(rgb_to_y(ref), border))


def _db(value: float) -> float:
    return round(min(value, IDENTICAL_DB), 3)


@torch.no_grad()
def measure_parity(
    model: Rescaler,
    graphs: GraphSet,
    images: Sequence[tuple[str, np.ndarray]],
    z_policy: str,
    bounds: Bounds | None = None,
    seed: int = 0,
) -> ParityReport:
    """Compare the graphs with ``model`` on (name, HR uint8) images (already mod-cropped).

    With the ``gaussian`` policy the ``up`` graphs sample their own z, so they
    are only checked to run and give finite images near PyTorch's z = 0 output;
    with ``input`` the same seeded N(0, 1) z goes to PyTorch and the graphs.
    """
    bounds = bounds or Bounds()
    s = model.scale
    rep = ParityReport()
    total = 0
    down32_equal = down32_maxdiff = 0
    down16_within1 = down16_maxdiff = 0
    up32_db: list[float] = []
    up16_db: list[float] = []
    e2e = {"torch": [], "fp32": [], "fp16": []}
    gen = torch.Generator().manual_seed(seed)
    per_image = []
    coded = getattr(model, "latent_code", None) is not None  # IRN-M: a side code
    code_total = code32_equal = code32_maxdiff = code16_within1 = code16_maxdiff = 0

    def down_graph(g: OrtGraph, hr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outs = g.outputs(hr)
        return outs[0], (outs[1] if coded else None)

    def up_graph(g: OrtGraph, lr: np.ndarray, code: np.ndarray | None) -> np.ndarray:
        if code is not None:
            return g(lr, g.image_input(code))
        return g(lr, z_np)

    for name, hr in images:
        if hr.shape[0] % s or hr.shape[1] % s:
            raise IRNError(
                f"verification image {name} is {hr.shape[1]}x{hr.shape[0]}, not a multiple of {s}"
            )
        x = to_tensor(hr)
        y, z_full = model(x)
        lr_q = quantize(y)
        lr_t = to_uint8(lr_q)
        z = None
        z_np = None
        code_t = None
        if coded:  # IRN-M: PyTorch's 8-bit code, and the z its decoder rebuilds from it
            code_q = model.encode_latent(z_full)
            code_t = to_uint8(code_q)
            z = model.decode_latent(code_q, *lr_q.shape[2:])
        elif z_policy == "input":
            z = torch.randn((1, model.latent_channels, *lr_q.shape[2:]), generator=gen)
            z_np = z.numpy()
        hr_t = to_uint8(model.inverse(lr_q, z))
        e2e["torch"].append(_y_psnr(hr_t, hr, s))

        lr32, code32 = down_graph(graphs.down_fp32, hr)
        diff = np.abs(lr32.astype(np.int16) - lr_t.astype(np.int16))
        total += diff.size
        down32_equal += int((diff == 0).sum())
        down32_maxdiff = max(down32_maxdiff, int(diff.max()))
        up32_t = up_graph(graphs.up_fp32, lr_t, code_t)
        up32_db.append(psnr(up32_t, hr_t))
        up32_e2e = up_graph(graphs.up_fp32, lr32, code32)
        e2e["fp32"].append(_y_psnr(up32_e2e, hr, s))
        entry = {
            "image": name,
            "down_fp32_equal": float((diff == 0).mean()),
            "up_fp32_db": _db(up32_db[-1]),
        }
        if code32 is not None and code_t is not None:
            cdiff = np.abs(code32.astype(np.int16) - code_t.astype(np.int16))
            code_total += cdiff.size
            code32_equal += int((cdiff == 0).sum())
            code32_maxdiff = max(code32_maxdiff, int(cdiff.max()))
            entry["code_fp32_equal"] = float((cdiff == 0).mean())

        if graphs.down_fp16 is not None and graphs.up_fp16 is not None:
            lr16, code16 = down_graph(graphs.down_fp16, hr)
            d16 = np.abs(lr16.astype(np.int16) - lr32.astype(np.int16))
            down16_within1 += int((d16 <= 1).sum())
            down16_maxdiff = max(down16_maxdiff, int(d16.max()))
            if code16 is not None and code32 is not None:
                c16 = np.abs(code16.astype(np.int16) - code32.astype(np.int16))
                code16_within1 += int((c16 <= 1).sum())
                code16_maxdiff = max(code16_maxdiff, int(c16.max()))
            up16_db.append(psnr(up_graph(graphs.up_fp16, lr32, code32), up32_e2e))
            e2e["fp16"].append(_y_psnr(up_graph(graphs.up_fp16, lr16, code16), hr, s))
            entry.update(up_fp16_db=_db(up16_db[-1]), e2e_fp16_db=round(e2e["fp16"][-1], 3))
        entry.update(e2e_torch_db=round(e2e["torch"][-1], 3), e2e_fp32_db=round(e2e["fp32"][-1], 3))
        per_image.append(entry)

    n = rep.numbers
    n["images"] = per_image
    n["down_fp32_vs_torch"] = {
        "equal_fraction": round(down32_equal / total, 6),
        "max_abs_diff": down32_maxdiff,
    }
    n["up_fp32_vs_torch"] = {
        "min_psnr_db": _db(min(up32_db)),
        "mean_psnr_db": _db(float(np.mean(up32_db))),
    }
    n["e2e_y_psnr_db"] = {k: round(float(np.mean(v)), 4) for k, v in e2e.items() if v}
    stochastic = z_policy == "gaussian"
    if (
        down32_equal / total < bounds.down_fp32_min_equal
        or down32_maxdiff > bounds.down_fp32_max_diff
    ):
        rep.failures.append(
            f"down.fp32 LR equals PyTorch's on {100 * down32_equal / total:.3f}% of values "
            f"(max diff {down32_maxdiff}; need >= {100 * bounds.down_fp32_min_equal}% and <= "
            f"{bounds.down_fp32_max_diff})"
        )
    if code_total:
        n["code_fp32_vs_torch"] = {
            "equal_fraction": round(code32_equal / code_total, 6),
            "max_abs_diff": code32_maxdiff,
        }
        if (
            code32_equal / code_total < bounds.down_fp32_min_equal
            or code32_maxdiff > bounds.down_fp32_max_diff
        ):
            rep.failures.append(
                f"down.fp32 side code equals PyTorch's on {100 * code32_equal / code_total:.3f}% "
                f"of values (max diff {code32_maxdiff}; need >= "
                f"{100 * bounds.down_fp32_min_equal}% and <= {bounds.down_fp32_max_diff})"
            )
    if not stochastic and min(up32_db) < bounds.up_fp32_min_db:
        rep.failures.append(
            f"up.fp32 HR is {min(up32_db):.2f} dB from PyTorch's (need >= {bounds.up_fp32_min_db})"
        )
    if up16_db:
        n["down_fp16_vs_fp32"] = {
            "within1_fraction": round(down16_within1 / total, 6),
            "max_abs_diff": down16_maxdiff,
        }
        n["up_fp16_vs_fp32"] = {
            "min_psnr_db": _db(min(up16_db)),
            "mean_psnr_db": _db(float(np.mean(up16_db))),
        }
        if code_total:
            n["code_fp16_vs_fp32"] = {
                "within1_fraction": round(code16_within1 / code_total, 6),
                "max_abs_diff": code16_maxdiff,
            }
            if code16_within1 / code_total < bounds.down_fp16_min_within1:
                rep.failures.append(
                    f"down.fp16 side code within 1 level of FP32 on "
                    f"{100 * code16_within1 / code_total:.2f}% of values "
                    f"(need >= {100 * bounds.down_fp16_min_within1}%)"
                )
        drop = float(np.mean(e2e["fp32"]) - np.mean(e2e["fp16"]))
        n["e2e_fp16_minus_fp32_db"] = round(-drop, 4)
        if down16_within1 / total < bounds.down_fp16_min_within1:
            rep.failures.append(
                f"down.fp16 LR within 1 level of FP32 on {100 * down16_within1 / total:.2f}% "
                f"of values "
                f"(need >= {100 * bounds.down_fp16_min_within1}%)"
            )
        if not stochastic and min(up16_db) < bounds.up_fp16_min_db:
            rep.failures.append(
                f"up.fp16 HR is {min(up16_db):.2f} dB from FP32 (need >= {bounds.up_fp16_min_db})"
            )
        if not stochastic and abs(drop) > bounds.e2e_fp16_max_drop_db:
            rep.failures.append(
                f"end-to-end Y-PSNR of FP16 differs from FP32 by {drop:.3f} dB "
                f"(need <= {bounds.e2e_fp16_max_drop_db})"
            )
    return rep
