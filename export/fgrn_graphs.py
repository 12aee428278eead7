"""Traceable ``down`` / ``up`` wrappers around a :class:`FlowGuidedRescaler` (FGRN, seed 002).

The graphs have IRN's I/O (the same :class:`~.graphs.GraphSpec`, uint8 NHWC or float32
NCHW, an RGB LR, no latent input), so the runtime runs them unchanged. Inside:

* down: squeeze as a fixed one-hot strided ``Conv`` (exact, TensorRT-native; PyTorch's
  pixel-unshuffle would export as Reshape / Transpose with computed shapes), the
  encoder (with ``encoder_image_skip``, plus the HR's box average as a fixed strided
  ``Conv``), the 8-bit quantiser of the representation, the flow module F;
* up: F's inverse, the quantiser, the decoder (its pixel shuffles become ONNX
  ``DepthToSpace``, mode CRD).

The quantisers run in FP32 (rounding ``x * 255`` needs more than FP16's 11 bits near
255), and in FP16 graphs the flow cells' sigmoid / exp / scale can stay in an FP32
island like IRN's coupling blocks (``GraphSpec.coupling_fp32``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from irn_trt.train.models import FlowGuidedRescaler
from torch import nn

from .graphs import GraphSpec, ZPolicy, _image_in, _image_out, frozen_copy

__all__ = ["FGRNDownGraph", "FGRNUpGraph", "squeeze_weight"]


def squeeze_weight(channels: int, factor: int) -> torch.Tensor:
    """(f²C, C, f, f) one-hot Conv weight equal to ``pixel_unshuffle(x, f)`` with stride f.

    Output channel ``c*f² + dy*f + dx`` takes pixel (dy, dx) of each f x f cell of
    input channel ``c``, PyTorch's pixel-unshuffle order.
    """
    weight = torch.zeros(channels * factor * factor, channels, factor, factor)
    for c in range(channels):
        for dy in range(factor):
            for dx in range(factor):
                weight[c * factor * factor + dy * factor + dx, c, dy, dx] = 1.0
    return weight


def _quantize(x: torch.Tensor) -> torch.Tensor:
    """The 8-bit quantiser in FP32, back in ``x``'s dtype (k / 255 in FP16 is within 2^-12)."""
    q = torch.round(torch.clamp(x.float(), 0.0, 1.0) * 255.0) / 255.0
    return q.to(x.dtype) if x.dtype != torch.float32 else q


class _FGRNNet(nn.Module):
    """A frozen copy of the model in the graph's dtype, with the squeeze (and the
    encoder's box-average skip, if any) as fixed Convs."""

    def __init__(self, model: FlowGuidedRescaler, spec: GraphSpec) -> None:
        super().__init__()
        net = frozen_copy(model, spec.dtype)
        self.spec = spec
        self.scale = model.scale
        self.encoder = net.encoder
        self.fgm = net.fgm
        self.decoder = net.decoder
        self.register_buffer(
            "squeeze", squeeze_weight(model.in_channels, model.scale).to(spec.dtype)
        )
        # The encoder's box-average skip (FGRNEncoder.image_skip) as a stride-f Conv:
        # 1 / f² is exact in FP16 for f = 2, 4, 8.
        self.image_skip = model.encoder.image_skip
        if self.image_skip:
            c, f = model.in_channels, model.scale
            box = torch.eye(c).view(c, c, 1, 1).repeat(1, 1, f, f) / (f * f)
            self.register_buffer("box", box.to(spec.dtype))
        if spec.coupling_fp32:
            for cell in self.fgm.cells:
                cell.scale_dtype = torch.float32

    def down(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        h = enc.head(F.conv2d(x, self.squeeze, stride=self.scale))
        out = enc.tail(h + enc.body(h))
        if self.image_skip:
            out = out + F.conv2d(x, self.box, stride=self.scale)
        rep = _quantize(out)
        return self.fgm(rep)

    def up(self, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(_quantize(self.fgm.inverse(y)))


class FGRNDownGraph(nn.Module):
    """HR image -> quantised LR image (encoder, quantiser, flow module)."""

    def __init__(self, model: FlowGuidedRescaler, spec: GraphSpec) -> None:
        super().__init__()
        self.spec = spec
        self.net = _FGRNNet(model, spec)

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        return _image_out(self.net.down(_image_in(hr, self.spec)), self.spec)


class FGRNUpGraph(nn.Module):
    """LR image -> HR image (flow module inverse, quantiser, decoder; clamped and rounded).

    FGRN has no latent: only the ``zero`` z policy exists (nothing to sample or feed).
    """

    def __init__(
        self,
        model: FlowGuidedRescaler,
        spec: GraphSpec,
        z_policy: ZPolicy = "zero",
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if z_policy != "zero":
            raise ValueError(f"{model.config.name} has no latent: z policy {z_policy!r}")
        self.spec = spec
        self.net = _FGRNNet(model, spec)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return _image_out(self.net.up(_image_in(lr, self.spec)), self.spec)
