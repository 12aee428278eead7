"""JPEG for training: a differentiable simulation and Pillow's real codec with an identity gradient.

:func:`simulate_jpeg` follows baseline JPEG as libjpeg (Pillow's codec) runs it with
Pillow's defaults: JFIF RGB -> YCbCr, 4:2:0 chroma subsampling (2x2 mean), level
shift and 8x8 orthonormal DCT, the IJG tables of ITU-T T.81 Annex K scaled by the
quality with libjpeg's rule (:func:`quant_tables`), rounding of the coefficients,
dequantisation, inverse DCT, "fancy" (triangle) chroma upsampling, YCbCr -> RGB.
Images whose sides are not multiples of 16 are edge-padded first, as the encoder
pads its last MCU. The coefficient rounding is either straight-through (``"ste"``:
exact rounding forward, identity gradient) or Shin & Song's cubic approximation
(``"cubic"``: r + (x - r)^3, 2017); the pixel-domain roundings of the codec (colour
conversion, subsampling, decoder output) are straight-through in both.

:func:`real_jpeg` encodes and decodes every image with Pillow (``quality=Q``,
``subsampling="4:2:0"``) and passes the gradient through unchanged; :func:`jpeg_roundtrip`
is the same codec on one uint8 image (with the file size), for evaluation and the
CRM's data. Measured against Pillow on 64x64 Set5 / Set14 crops, see
``tests/test_jpeg.py`` and CHANGELOG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from irn_trt.runtime.codecs import JPEG_SUBSAMPLING, ijg_quant_tables, jpeg_roundtrip
from irn_trt.runtime.errors import IRNError

from .recipe import check_quality as _check_quality
from .recipe import parse_qualities

__all__ = [
    "JPEG_SUBSAMPLING",
    "Rounding",
    "jpeg_roundtrip",
    "parse_qualities",
    "quant_tables",
    "real_jpeg",
    "simulate_jpeg",
]

Rounding = Literal["ste", "cubic"]

# JFIF (full-range BT.601) RGB -> YCbCr; Cb / Cr are offset by 128 after the matrix.
_RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168735892, -0.331264108, 0.5),
    (0.5, -0.418687589, -0.081312411),
)
_YCBCR_TO_RGB = (
    (1.0, 0.0, 1.402),
    (1.0, -0.344136286, -0.714136286),
    (1.0, 1.772, 0.0),
)


def quant_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """libjpeg's luminance and chrominance tables (8x8, natural order) at ``quality``
    (the runtime's :func:`~irn_trt.runtime.codecs.ijg_quant_tables`, as arrays)."""
    q = _check_quality(quality)
    luma, chroma = ijg_quant_tables(q)
    return (
        np.asarray(luma, dtype=np.int64).reshape(8, 8),
        np.asarray(chroma, dtype=np.int64).reshape(8, 8),
    )


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    """Exact rounding forward, identity gradient."""
    return x + (torch.round(x) - x).detach()


def _cubic_round(x: torch.Tensor) -> torch.Tensor:
    """Shin & Song (2017): round(x) + (x - round(x))^3, differentiable almost everywhere."""
    r = torch.round(x).detach()
    return r + (x - r) ** 3


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The orthonormal 8-point DCT-II (JPEG's FDCT normalisation: 1/4 C(u) C(v) in 2D)."""
    k = torch.arange(8, dtype=torch.float64)
    m = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * 0.5
    m[0] /= math.sqrt(2.0)
    return m.to(dtype=dtype, device=device)


def _blocks(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H/8, W/8, 8, 8)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5)


def _unblocks(x: torch.Tensor) -> torch.Tensor:
    b, c, nh, nw, _, _ = x.shape
    return x.permute(0, 1, 2, 4, 3, 5).reshape(b, c, nh * 8, nw * 8)


def _quality_list(quality: int | Sequence[int], batch: int) -> list[int]:
    if isinstance(quality, (int, np.integer)) and not isinstance(quality, bool):
        return [_check_quality(quality)] * batch
    qs = [_check_quality(q) for q in quality]  # type: ignore[union-attr]
    if len(qs) != batch:
        raise IRNError(f"{len(qs)} JPEG qualities for a batch of {batch}")
    return qs


def _tables(qs: list[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(B, 3, 1, 1, 8, 8) quantisation steps: the luma table for Y, the chroma one for Cb, Cr."""
    rows = []
    for q in qs:
        luma, chroma = quant_tables(q)
        rows.append(np.stack([luma, chroma, chroma]))
    return torch.from_numpy(np.stack(rows)).to(dtype=dtype, device=device)[:, :, None, None]


def _code(
    plane: torch.Tensor, steps: torch.Tensor, dct: torch.Tensor, rnd: Rounding
) -> torch.Tensor:
    """Level shift, DCT, quantise (rounding ``rnd``), dequantise, inverse DCT, unshift."""
    blocks = _blocks(plane - 128.0)
    coef = torch.einsum("ij,...jk,lk->...il", dct, blocks, dct)
    ratio = coef / steps
    q = _ste_round(ratio) if rnd == "ste" else _cubic_round(ratio)
    rec = torch.einsum("ji,...jk,kl->...il", dct, q * steps, dct)
    # The decoder's IDCT output is an integer sample, range-limited to 0..255.
    return torch.clamp(_ste_round(_unblocks(rec) + 128.0), 0.0, 255.0)


def simulate_jpeg(
    x: torch.Tensor, quality: int | Sequence[int], rounding: Rounding = "ste"
) -> torch.Tensor:
    """Differentiable JPEG of an RGB batch ``x`` (B, 3, H, W) in [0, 1] at ``quality``.

    ``quality`` is one value for the batch or one per image. Returns the decoded
    batch in [0, 1] on the 8-bit grid (up to ``rounding="cubic"``'s approximation of
    the coefficients), the shape of ``x``.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise IRNError(f"JPEG simulation takes (B, 3, H, W) RGB, got {tuple(x.shape)}")
    if rounding not in ("ste", "cubic"):
        raise IRNError(f"rounding must be 'ste' or 'cubic', got {rounding!r}")
    b, _, h, w = x.shape
    qs = _quality_list(quality, b)
    dtype, device = x.dtype, x.device
    steps = _tables(qs, dtype, device)
    dct = _dct_matrix(dtype, device)
    rgb = torch.clamp(x, 0.0, 1.0) * 255.0
    # The encoder pads its last MCU (16x16 at 4:2:0) by repeating the edge samples.
    ph, pw = (-h) % 16, (-w) % 16
    if ph or pw:
        rgb = F.pad(rgb, (0, pw, 0, ph), mode="replicate")
    to_ycc = torch.tensor(_RGB_TO_YCBCR, dtype=dtype, device=device)
    ycc = torch.einsum("kc,bchw->bkhw", to_ycc, rgb)
    offset = torch.tensor([0.0, 128.0, 128.0], dtype=dtype, device=device)[None, :, None, None]
    ycc = torch.clamp(_ste_round(ycc + offset), 0.0, 255.0)
    y_plane = _code(ycc[:, :1], steps[:, :1], dct, rounding)
    chroma = _ste_round(F.avg_pool2d(ycc[:, 1:], 2))  # 2x2 mean (libjpeg's h2v2 downsample)
    chroma = _code(chroma, steps[:, 1:], dct, rounding)
    # libjpeg's "fancy" h2v2 upsampling: weights 3/4, 1/4 per axis, edges repeated.
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    ycc = torch.cat((y_plane, _ste_round(chroma)), dim=1) - offset
    to_rgb = torch.tensor(_YCBCR_TO_RGB, dtype=dtype, device=device)
    out = torch.einsum("kc,bchw->bkhw", to_rgb, ycc)
    out = torch.clamp(_ste_round(out), 0.0, 255.0)[:, :, :h, :w]
    return out / 255.0


def real_jpeg(x: torch.Tensor, quality: int | Sequence[int]) -> torch.Tensor:
    """Pillow's real JPEG of an RGB batch in [0, 1] (forward), identity gradient (backward).

    Each image is rounded to 8 bits, encoded and decoded at its quality; the result
    is ``x`` plus the (detached) change the codec made.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise IRNError(f"JPEG takes (B, 3, H, W) RGB, got {tuple(x.shape)}")
    qs = _quality_list(quality, x.shape[0])
    with torch.no_grad():
        u8 = torch.round(torch.clamp(x.detach().float(), 0.0, 1.0) * 255.0).to(torch.uint8)
        arrays = u8.permute(0, 2, 3, 1).cpu().numpy()
        decoded = np.stack([jpeg_roundtrip(np.ascontiguousarray(a), q)[0] for a, q in
                            zip(arrays, qs, strict=True)])  # fmt: skip
        out = torch.from_numpy(decoded).permute(0, 3, 1, 2).to(x.dtype).div(255.0).to(x.device)
    return x + (out - x).detach()
