"""Traceable ``down`` / ``up`` wrappers around an :class:`InvertibleRescaler`.

The wrappers fold what a deployment needs into the graph: the uint8 <-> float
conversion, the NHWC <-> NCHW layout change, the 8-bit quantiser of the LR and
the clamp/round of the HR. They walk ``model.steps`` themselves (instead of
``model.forward``) so that each step is written in ops TensorRT runs natively:
Haar and IRN_LD become strided Conv / ConvTranspose, and the coupling's
scale factor can be computed in an FP32 island inside an FP16 graph.

Everything about precision is explicit in the traced code: an FP16 wrapper
holds a half copy of the model and casts at its boundaries, so the exported
graph is strongly typed (every tensor has one declared type, every change of
type is a ``Cast`` node).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from irn_trt.train.models import InvertibleRescaler
from irn_trt.train.modules import (
    AlphaPreSplit,
    AlphaSigmoid,
    CouplingBlock,
    HaarDownsampling,
    LearnedDownsampling3,
    YCbCrSplit,
    set_conv_compute_dtype,
)
from torch import nn

__all__ = [
    "IOKind",
    "ZPolicy",
    "PrecisionKind",
    "GraphSpec",
    "DownGraph",
    "UpGraph",
    "learned3_weights",
    "channel_mix_weights",
    "frozen_copy",
]

IOKind = Literal["uint8", "float32"]
ZPolicy = Literal["zero", "gaussian", "input"]
PrecisionKind = Literal["fp32", "fp16"]


@dataclass(frozen=True)
class GraphSpec:
    """How one graph is built.

    ``coupling_fp32`` keeps the coupling's sigmoid/exp/multiply/divide in FP32
    inside an FP16 graph (ignored for FP32 graphs).
    """

    precision: PrecisionKind = "fp32"
    io: IOKind = "uint8"
    coupling_fp32: bool = True

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.precision == "fp16" else torch.float32


def learned3_weights(step: LearnedDownsampling3) -> tuple[torch.Tensor, torch.Tensor]:
    """IRN_LD as a stride-3 Conv and its inverse as a stride-3 ConvTranspose.

    Output channel ``k*C + c`` of the forward is ``sum_j M[k, j] * x[c, 3h+dy_j, 3w+dx_j]``
    with ``j = 3*dy + dx`` (the module's raster order), i.e. a dense (9C, C, 3, 3)
    kernel. The inverse uses the matrix inverse, precomputed in float64 so the
    exported constant is as exact as the graph's precision allows.
    """
    c = step.channels
    m = step.matrix.detach().to(torch.float64)
    inv = torch.linalg.inv(m)
    fwd = torch.zeros(9 * c, c, 3, 3, dtype=torch.float64)
    bwd = torch.zeros(9 * c, c, 3, 3, dtype=torch.float64)
    for k in range(9):
        for ch in range(c):
            fwd[k * c + ch, ch] = m[k].reshape(3, 3)
            # ConvTranspose weight (Cin, Cout, kh, kw): input subband k spreads to pixel j.
            bwd[k * c + ch, ch] = inv[:, k].reshape(3, 3)
    return fwd, bwd


def channel_mix_weights(step: YCbCrSplit | AlphaPreSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed channel mix and its inverse as (C, C, 1, 1) Conv weights (float64).

    IRN_color's graying module: its RGB -> YCbCr matrix and the inverse. IRN-A's
    pre-split: channel ``c`` (the first high-pass one) becomes the mean of the
    ``n`` high-pass channels; inverse ``n * mean - sum(the other high-pass)``.
    """
    if isinstance(step, YCbCrSplit):
        return step.matrix[:, :, None, None], step.matrix_inverse[:, :, None, None]
    c, n, total = step.colours, step.high, step.channels
    fwd = torch.eye(total, dtype=torch.float64)
    fwd[c, c:] = 1.0 / n
    bwd = torch.eye(total, dtype=torch.float64)
    bwd[c, c] = float(n)
    bwd[c, c + 1 :] = -1.0
    return fwd[:, :, None, None], bwd[:, :, None, None]


def frozen_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` in ``dtype``, in eval mode, without gradients (what a graph traces)."""
    net = copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    # A model straight from training may carry its reduced conv arithmetic: graphs never do.
    set_conv_compute_dtype(net, None)
    return net.to(dtype)


class _Steps(nn.Module):
    """The model's steps with the downsamplers' kernels precomputed for one dtype."""

    def __init__(self, model: InvertibleRescaler, spec: GraphSpec) -> None:
        super().__init__()
        net = frozen_copy(model, spec.dtype)
        self.spec = spec
        self.lr_channels = model.lr_channels
        self.z_channels = model.latent_channels
        self.steps = net.steps
        kinds: list[str] = []
        for i, step in enumerate(model.steps):
            if isinstance(step, HaarDownsampling):
                # The /4 of the analysis is a power of two: folding it is exact.
                self.register_buffer(f"fwd{i}", (step.weight * 0.25).to(spec.dtype))
                self.register_buffer(f"bwd{i}", step.weight.clone().to(spec.dtype))
                kinds.append("down2")
            elif isinstance(step, LearnedDownsampling3):
                fwd, bwd = learned3_weights(step)
                self.register_buffer(f"fwd{i}", fwd.to(spec.dtype))
                self.register_buffer(f"bwd{i}", bwd.to(spec.dtype))
                kinds.append("down3")
            elif isinstance(step, CouplingBlock):
                kinds.append("coupling")
                if spec.coupling_fp32:
                    self.steps[i].scale_dtype = torch.float32
            elif isinstance(step, (YCbCrSplit, AlphaPreSplit)):
                # A fixed channel mix (graying module, IRN-A's pre-split): a 1x1 Conv both ways.
                fwd, bwd = channel_mix_weights(step)
                self.register_buffer(f"fwd{i}", fwd.to(spec.dtype))
                self.register_buffer(f"bwd{i}", bwd.to(spec.dtype))
                kinds.append("mix")
            elif isinstance(step, AlphaSigmoid):
                # The logit of an 8-bit alpha needs FP32: near 0 or 1 FP16 loses its steps.
                kinds.append("pointwise_fp32" if spec.coupling_fp32 else "pointwise")
            else:
                raise TypeError(f"cannot export step {type(step).__name__}")
        self.kinds = tuple(kinds)

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        for i, (kind, step) in enumerate(zip(self.kinds, self.steps, strict=True)):
            if kind in ("coupling", "pointwise"):
                x = step(x)
            elif kind == "mix":
                x = F.conv2d(x, getattr(self, f"fwd{i}"))
            elif kind == "pointwise_fp32":
                x = step(x.float()).to(x.dtype)
            else:
                stride = 2 if kind == "down2" else 3
                x = F.conv2d(x, getattr(self, f"fwd{i}"), stride=stride)
        return x

    def inverse_steps(self, x: torch.Tensor) -> torch.Tensor:
        for i in reversed(range(len(self.kinds))):
            kind, step = self.kinds[i], self.steps[i]
            if kind in ("coupling", "pointwise"):
                x = step.inverse(x)
            elif kind == "mix":
                x = F.conv2d(x, getattr(self, f"bwd{i}"))
            elif kind == "pointwise_fp32":
                x = step.inverse(x.float()).to(x.dtype)
            else:
                stride = 2 if kind == "down2" else 3
                x = F.conv_transpose2d(x, getattr(self, f"bwd{i}"), stride=stride)
        return x


def _image_in(x: torch.Tensor, spec: GraphSpec) -> torch.Tensor:
    """Graph input -> NCHW float in [0, 1] of the graph's dtype (normalisation in FP32)."""
    if spec.io == "uint8":
        # Cast before Transpose: TensorRT only lets uint8 tensors meet a Cast.
        x = x.to(torch.float32).permute(0, 3, 1, 2) / 255.0
    return x.to(spec.dtype) if spec.dtype != torch.float32 else x


def _image_out(x: torch.Tensor, spec: GraphSpec) -> torch.Tensor:
    """NCHW float -> 8-bit levels (clamp, x255, round in FP32) in the graph's output format."""
    levels = torch.round(torch.clamp(x.float(), 0.0, 1.0) * 255.0)
    if spec.io == "uint8":
        return levels.permute(0, 2, 3, 1).to(torch.uint8)
    return levels / 255.0


class _SideCode(nn.Module):
    """IRN-M's auto-encoder of z in the graph's dtype (seed 004, section 2.2).

    ``encode``: z -> the code's 8-bit levels, the graph's second output (its
    sigmoid in an FP32 island when ``coupling_fp32``: the quantiser's steps near
    0 and 1 need more than FP16 keeps; the quantiser itself is ``_image_out``'s).
    ``decode``: the code input -> z of the LR's size (the decoder's output cropped
    to it, as :meth:`LatentAutoencoder.decode` does).
    """

    def __init__(self, model: InvertibleRescaler, spec: GraphSpec) -> None:
        super().__init__()
        if model.latent_code is None or model.config.latent_code is None:
            raise ValueError(f"{model.config.name} has no side code")
        if model.config.latent_code.bits != 8:
            # The code travels as 8-bit bytes, like the LR (uint8 I/O, PNG chunk).
            raise ValueError(
                f"{model.config.name}: only 8-bit side codes export "
                f"(got {model.config.latent_code.bits} bits)"
            )
        self.spec = spec
        self.ae = frozen_copy(model.latent_code, spec.dtype)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.ae.encode_logits(z)
        if self.spec.coupling_fp32:
            return torch.sigmoid(logits.float())
        return torch.sigmoid(logits)

    def decode(self, code: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.ae.decode(_image_in(code, self.spec), height, width)


class DownGraph(nn.Module):
    """HR image -> quantised LR image (IRN forward; the latent is dropped), and for IRN-M
    the 8-bit side code of z as a second output."""

    def __init__(self, model: InvertibleRescaler, spec: GraphSpec) -> None:
        super().__init__()
        self.spec = spec
        self.net = _Steps(model, spec)
        self.code = _SideCode(model, spec) if model.latent_code is not None else None

    def forward(self, hr: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.net.forward_steps(_image_in(hr, self.spec))
        lr = _image_out(out[:, : self.net.lr_channels], self.spec)
        if self.code is None:
            return lr
        return lr, _image_out(self.code.encode(out[:, self.net.lr_channels :]), self.spec)


class UpGraph(nn.Module):
    """LR image (+ z for the ``input`` policy) -> HR image (IRN inverse, clamped and rounded).

    ``zero`` builds z = 0 from the LR's shape inside the graph; ``gaussian``
    samples N(0, 1) * ``temperature`` inside the graph (RandomNormalLike, FP32);
    ``input`` takes an FP32 NCHW z as a second input. IRN-M (a model with a side
    code) takes the code as its second input instead and decodes z from it.
    """

    def __init__(
        self,
        model: InvertibleRescaler,
        spec: GraphSpec,
        z_policy: ZPolicy = "zero",
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.z_policy = z_policy
        self.temperature = float(temperature)
        self.net = _Steps(model, spec)
        self.code = _SideCode(model, spec) if model.latent_code is not None else None
        if self.code is not None and z_policy != "zero":
            raise ValueError(
                f"{model.config.name} rebuilds z from its side code, not by {z_policy}"
            )

    def _latent(self, lr: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        if self.code is not None:
            if z is None:
                raise ValueError("an IRN-M up graph needs the side code")
            return self.code.decode(z, lr.shape[2], lr.shape[3])
        if self.z_policy == "input":
            if z is None:
                raise ValueError("the 'input' z policy needs z")
            return z.to(self.spec.dtype) if self.spec.dtype != torch.float32 else z
        # ConstantOfShape is FP32-only in TensorRT's parser: make z in FP32, then cast.
        zeros = lr.new_zeros(
            (lr.shape[0], self.net.z_channels, lr.shape[2], lr.shape[3]), dtype=torch.float32
        )
        if self.z_policy == "gaussian":
            zeros = torch.randn_like(zeros) * self.temperature
        return zeros.to(self.spec.dtype) if self.spec.dtype != torch.float32 else zeros

    def forward(self, lr: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        y = _image_in(lr, self.spec)
        out = self.net.inverse_steps(torch.cat((y, self._latent(y, z)), dim=1))
        return _image_out(out, self.spec)
