"""Triton kernels of the ``irn::*`` TensorRT plugins, and host-side launch helpers.

Every kernel takes its arguments in the order TensorRT's ahead-of-time plugin
path passes them: input pointers, then int32 scalars (shape-derived, resolved
by TensorRT at run time), then output pointers; everything fixed per engine
(levels, seed, block sizes) is a ``tl.constexpr`` baked into the PTX.

The same source runs three ways: compiled to PTX by :mod:`irn_trt.plugins.aot`
(what an engine embeds), and through the ``launch_*`` helpers either on CUDA
tensors or, with ``TRITON_INTERPRET=1``, on CPU tensors in Triton's interpreter
(how CI checks them against :mod:`irn_trt.plugins.reference`).

All arithmetic is float32 whatever the storage type; the round in ``pack`` uses
the 1.5*2^23 trick (round-half-even in IEEE float32), which is exact only
without FMA contraction, so kernels are compiled with ``enable_fp_fusion=False``.
"""

# Triton style: shape scalars and tl.constexpr parameters are upper case.
# ruff: noqa: N803

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

from .geometry import ELEMENTWISE_BLOCK, HaarGeometry

__all__ = [
    "haar_down_kernel",
    "haar_up_kernel",
    "pack_rgb8_kernel",
    "unpack_rgb8_kernel",
    "gaussian_z_kernel",
    "launch_haar_down",
    "launch_haar_up",
    "launch_pack_rgb8",
    "launch_unpack_rgb8",
    "launch_gaussian_z",
]

# 1.5 * 2^23: (x + M) - M rounds x half-to-even in float32 for 0 <= x < 2^22.
_ROUND_MAGIC = tl.constexpr(12582912.0)


@triton.jit
def _haar_signs(k, m):
    """+1/-1 as float32: (-1)^popcount(k & m) for indices below 256 (L <= 4)."""
    v = k & m
    v = v ^ (v >> 4)
    v = v ^ (v >> 2)
    v = v ^ (v >> 1)
    return 1.0 - 2.0 * (v & 1).to(tl.float32)


@triton.jit
def _block_pixel(m, LEVELS: tl.constexpr):
    """Split interleaved block index m into (dy, dx): dx from even bits, dy from odd bits."""
    dy = m * 0
    dx = m * 0
    for b in tl.static_range(LEVELS):
        dx += ((m >> (2 * b)) & 1) << b
        dy += ((m >> (2 * b + 1)) & 1) << b
    return dy, dx


@triton.jit
def haar_down_kernel(
    x_ptr,
    N,
    C,
    H,
    W,
    y_ptr,
    LEVELS: tl.constexpr,
    SIDE: tl.constexpr,
    NSUB: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """x (N, C, H, W) -> y (N, NSUB*C, H/SIDE, W/SIDE); one program = BLOCK_P pixel blocks.

    Each SIDE x SIDE block is read once and all NSUB = 4^L subbands are written
    from registers: the L-level Haar is a signed sum over the block.
    """
    h = H // SIDE
    w = W // SIDE
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    valid = p < N * C * h * w
    j = p % w
    i = (p // w) % h
    c = (p // (w * h)) % C
    n = p // (w * h * C)
    m = tl.arange(0, NSUB)
    dy, dx = _block_pixel(m, LEVELS)
    row = (n * C + c) * H + i * SIDE
    src = (row[:, None] + dy[None, :]) * W + (j * SIDE)[:, None] + dx[None, :]
    mask = valid[:, None] & (m[None, :] < NSUB)
    x = tl.load(x_ptr + src, mask=mask, other=0.0).to(tl.float32)
    k = tl.arange(0, NSUB)
    signs = _haar_signs(k[:, None], m[None, :])  # [k, m]
    # Dividing by 4^L (a power of two) is exact, so it can come after the sum.
    y = tl.sum(x[:, None, :] * signs[None, :, :], axis=2) * (1.0 / NSUB)
    dst = ((n * NSUB * C + c)[:, None] + k[None, :] * C) * (h * w) + (i * w + j)[:, None]
    tl.store(y_ptr + dst, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def haar_up_kernel(
    y_ptr,
    N,
    C,
    h,
    w,
    x_ptr,
    LEVELS: tl.constexpr,
    SIDE: tl.constexpr,
    NSUB: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """y (N, NSUB*C, h, w) -> x (N, C, h*SIDE, w*SIDE): exact synthesis, no scaling."""
    H = h * SIDE
    W = w * SIDE
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    valid = p < N * C * h * w
    j = p % w
    i = (p // w) % h
    c = (p // (w * h)) % C
    n = p // (w * h * C)
    k = tl.arange(0, NSUB)
    src = ((n * NSUB * C + c)[:, None] + k[None, :] * C) * (h * w) + (i * w + j)[:, None]
    mask = valid[:, None] & (k[None, :] < NSUB)
    y = tl.load(y_ptr + src, mask=mask, other=0.0).to(tl.float32)
    m = tl.arange(0, NSUB)
    signs = _haar_signs(m[:, None], k[None, :])  # [m, k]; the sign is symmetric in m, k
    x = tl.sum(y[:, None, :] * signs[None, :, :], axis=2)
    dy, dx = _block_pixel(m, LEVELS)
    row = (n * C + c) * H + i * SIDE
    dst = (row[:, None] + dy[None, :]) * W + (j * SIDE)[:, None] + dx[None, :]
    tl.store(x_ptr + dst, x.to(x_ptr.dtype.element_ty), mask=mask)


@triton.jit
def pack_rgb8_kernel(
    x_ptr,
    C,
    HW,
    total,
    out_ptr,
    BLOCK: tl.constexpr,
):
    """x (N, C, H, W) float -> out (N, H, W, C) float32 = round(clamp(x, 0, 1) * 255).

    The byte values 0..255 in float32: TensorRT plugins cannot write UINT8, so a
    native Cast after the plugin makes the bytes (exactly: the values are integers).
    Indexed by output element so stores are contiguous; HW = H*W, total = N*C*H*W.
    """
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = o < total
    c = o % C
    pix = (o // C) % HW
    n = o // (C * HW)
    v = tl.load(x_ptr + (n * C + c) * HW + pix, mask=valid, other=0.0).to(tl.float32)
    v = tl.minimum(tl.maximum(v, 0.0), 1.0) * 255.0
    v = (v + _ROUND_MAGIC) - _ROUND_MAGIC
    tl.store(out_ptr + o, v, mask=valid)


@triton.jit
def unpack_rgb8_kernel(
    u_ptr,
    C,
    HW,
    total,
    x_ptr,
    BLOCK: tl.constexpr,
):
    """u (N, H, W, C) byte values (float32, from a native Cast of the uint8 image) -> x (N, C,
    H, W) float = u / 255 (IEEE division, as ONNX Div)."""
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = o < total
    pix = o % HW
    c = (o // HW) % C
    n = o // (C * HW)
    u = tl.load(u_ptr + (n * HW + pix) * C + c, mask=valid, other=0.0).to(tl.float32)
    v = tl.math.div_rn(u, 255.0)
    tl.store(x_ptr + o, v.to(x_ptr.dtype.element_ty), mask=valid)


@triton.jit
def gaussian_z_kernel(
    like_ptr,
    total,
    z_ptr,
    SEED: tl.constexpr,
    SCALE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """z[i] = SCALE * N(0,1) from Philox(SEED, counter=i): depends only on (seed, index).

    ``like_ptr`` (the LR image) only gives the plugin its shape; it is not read.
    """
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = o < total
    z = tl.randn(SEED, o) * SCALE
    tl.store(z_ptr + o, z.to(z_ptr.dtype.element_ty), mask=valid)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---- launch helpers (torch tensors: CUDA, or CPU under TRITON_INTERPRET=1) ----


def launch_haar_down(x: Any, levels: int) -> Any:
    """Run :func:`haar_down_kernel` on a contiguous NCHW float tensor; returns the subbands."""
    geo = HaarGeometry(levels)
    n, c, hh, ww = (int(s) for s in x.shape)
    if hh % geo.side or ww % geo.side:
        raise ValueError(f"H and W must be divisible by {geo.side}, got {hh}x{ww}")
    y = x.new_empty((n, geo.subbands * c, hh // geo.side, ww // geo.side))
    blocks = n * c * (hh // geo.side) * (ww // geo.side)
    grid = (_cdiv(blocks, geo.block_positions),)
    haar_down_kernel[grid](x.contiguous(), n, c, hh, ww, y, **geo.constexprs())
    return y


def launch_haar_up(y: Any, levels: int) -> Any:
    """Run :func:`haar_up_kernel` on a contiguous NCHW float tensor of 4^L*C channels."""
    geo = HaarGeometry(levels)
    n, kc, h, w = (int(s) for s in y.shape)
    if kc % geo.subbands:
        raise ValueError(f"channels must be a multiple of {geo.subbands}, got {kc}")
    c = kc // geo.subbands
    x = y.new_empty((n, c, h * geo.side, w * geo.side))
    grid = (_cdiv(n * c * h * w, geo.block_positions),)
    haar_up_kernel[grid](y.contiguous(), n, c, h, w, x, **geo.constexprs())
    return x


def launch_pack_rgb8(x: Any) -> Any:
    """NCHW float tensor -> NHWC float32 byte values via :func:`pack_rgb8_kernel`."""
    import torch  # the launch helpers need tensors; the kernels themselves do not

    n, c, hh, ww = (int(s) for s in x.shape)
    out = torch.empty((n, hh, ww, c), dtype=torch.float32, device=x.device)
    total = n * c * hh * ww
    grid = (_cdiv(total, ELEMENTWISE_BLOCK),)
    pack_rgb8_kernel[grid](x.contiguous(), c, hh * ww, total, out, BLOCK=ELEMENTWISE_BLOCK)
    return out


def launch_unpack_rgb8(u: Any, dtype: Any = None) -> Any:
    """NHWC float32 byte values -> NCHW float tensor (float32 unless ``dtype``)."""
    import torch

    n, hh, ww, c = (int(s) for s in u.shape)
    out = torch.empty((n, c, hh, ww), dtype=dtype or torch.float32, device=u.device)
    total = n * c * hh * ww
    grid = (_cdiv(total, ELEMENTWISE_BLOCK),)
    unpack_rgb8_kernel[grid](u.contiguous(), c, hh * ww, total, out, BLOCK=ELEMENTWISE_BLOCK)
    return out


def launch_gaussian_z(like: Any, channels: int, seed: int, scale: float) -> Any:
    """(N, channels, h, w) noise for an LR tensor ``like`` of shape (N, *, h, w)."""
    n, _, h, w = (int(s) for s in like.shape)
    z = like.new_empty((n, channels, h, w))
    total = n * channels * h * w
    grid = (_cdiv(total, ELEMENTWISE_BLOCK),)
    gaussian_z_kernel[grid](
        like, total, z, SEED=int(seed), SCALE=float(scale), BLOCK=ELEMENTWISE_BLOCK
    )
    return z
