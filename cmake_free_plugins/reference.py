"""NumPy reference implementations of the ``irn::*`` TensorRT plugins.

Each function here is the specification its Triton kernel is tested against
(and what :mod:`irn_trt.plugins.onnx_reference` runs in place of a custom node),
so it is written for clarity, not speed. NumPy only: importable anywhere.

Haar conventions follow ``train/modules.py``: one level maps channel ``c`` to
``k*C + c`` for the four 2x2 filters k0..k3, divided by 4 forward, plain sum
inverse. Because IRN transforms *all* channels again at the next level, ``L``
levels compose to a Walsh-Hadamard transform of each 2^L x 2^L pixel block,
with output channel ``K*C + c`` where the base-4 digits of ``K`` are the
per-level filter indices (finest level = lowest digit).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "haar_signs",
    "haar_down_ref",
    "haar_up_ref",
    "pack_rgb8_ref",
    "unpack_rgb8_ref",
    "philox4x32_10",
    "philox4x32_ref",
    "uniform_from_uint32_ref",
    "gaussian_z_ref",
]


def _spread_bits(v: np.ndarray, levels: int) -> np.ndarray:
    """Bit ``l`` of ``v`` goes to bit ``2*l`` (interleaving helper)."""
    out = np.zeros_like(v)
    for bit in range(levels):
        out |= ((v >> bit) & 1) << (2 * bit)
    return out


def haar_signs(levels: int) -> np.ndarray:
    """(4^L, 2^L, 2^L) matrix of +-1: sign of pixel (dy, dx) in subband K.

    Filter k of one level is -1 at dx=1 when bit 0 of k is set and at dy=1 when
    bit 1 is set (k1, k2, k3 of the spec), so the sign over L levels is the
    parity of ``K & interleave(dx, dy)``.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    side = 1 << levels
    d = np.arange(side, dtype=np.int64)
    m = _spread_bits(d[None, :], levels) | (_spread_bits(d[:, None], levels) << 1)  # (dy, dx)
    k = np.arange(4**levels, dtype=np.int64)[:, None, None]
    bits = k & m[None]
    parity = np.zeros_like(bits)
    for b in range(2 * levels):
        parity ^= (bits >> b) & 1
    return (1 - 2 * parity).astype(np.int64)


def haar_down_ref(x: np.ndarray, levels: int) -> np.ndarray:
    """L-level Haar analysis of NCHW ``x``: (N, C, H, W) -> (N, 4^L C, H/2^L, W/2^L)."""
    n, c, h, w = x.shape
    side = 1 << levels
    if h % side or w % side:
        raise ValueError(f"H and W must be divisible by {side} for {levels} level(s), got {h}x{w}")
    blocks = x.astype(np.float64).reshape(n, c, h // side, side, w // side, side)
    out = np.einsum("kyx,nciyjx->nkcij", haar_signs(levels).astype(np.float64), blocks)
    out /= 4.0**levels
    return out.reshape(n, 4**levels * c, h // side, w // side).astype(x.dtype)


def haar_up_ref(y: np.ndarray, levels: int) -> np.ndarray:
    """Exact inverse of :func:`haar_down_ref`: (N, 4^L C, h, w) -> (N, C, h 2^L, w 2^L)."""
    n, kc, h, w = y.shape
    k = 4**levels
    if kc % k:
        raise ValueError(f"channels must be a multiple of {k} for {levels} level(s), got {kc}")
    c = kc // k
    side = 1 << levels
    bands = y.astype(np.float64).reshape(n, k, c, h, w)
    out = np.einsum("kyx,nkcij->nciyjx", haar_signs(levels).astype(np.float64), bands)
    return out.reshape(n, c, h * side, w * side).astype(y.dtype)


def pack_rgb8_ref(x: np.ndarray) -> np.ndarray:
    """NCHW float image -> NHWC byte values as float32: round-half-even(clamp(x, 0, 1) * 255).

    What ``irn::pack_rgb8`` writes; the native ``Cast`` to uint8 after it is exact
    (integers 0..255). The arithmetic is float32 whatever the input type, like the
    kernel (an FP16 input is widened first), so the result is exact, not approximate.
    """
    v = np.clip(x.astype(np.float32), np.float32(0.0), np.float32(1.0)) * np.float32(255.0)
    return np.rint(v).astype(np.float32).transpose(0, 2, 3, 1).copy()


def unpack_rgb8_ref(u: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """NHWC byte values -> NCHW float in [0, 1]: u / 255 (correctly rounded float32 division).

    ``u`` is what ``irn::unpack_rgb8`` reads: the float32 output of the native ``Cast``
    of the uint8 image (a uint8 array is taken as that Cast's input).
    """
    if u.dtype not in (np.uint8, np.float32):
        raise ValueError(f"unpack_rgb8 expects uint8 or float32 byte values, got {u.dtype}")
    v = u.astype(np.float32) / np.float32(255.0)
    return v.astype(dtype).transpose(0, 3, 1, 2).copy()


# Philox4x32-10 constants (Salmon et al. 2011), as Triton's tl.randint uses them.
_PHILOX_ROUND_A = np.uint64(0xD2511F53)
_PHILOX_ROUND_B = np.uint64(0xCD9E8D57)
_PHILOX_KEY_A = 0x9E3779B9
_PHILOX_KEY_B = 0xBB67AE85
_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(
    counter: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    key: tuple[int, int],
    rounds: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Philox4x32 (Salmon et al. 2011) of four uint32 counter words under a 2-word key."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint32) for c in counter)
    k0, k1 = int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF
    for _ in range(rounds):
        prod_b = _PHILOX_ROUND_B * c2.astype(np.uint64)
        prod_a = _PHILOX_ROUND_A * c0.astype(np.uint64)
        n0 = (prod_b >> np.uint64(32)).astype(np.uint32) ^ c1 ^ np.uint32(k0)
        n2 = (prod_a >> np.uint64(32)).astype(np.uint32) ^ c3 ^ np.uint32(k1)
        c1 = (prod_b & _MASK32).astype(np.uint32)
        c3 = (prod_a & _MASK32).astype(np.uint32)
        c0, c2 = n0, n2
        k0 = (k0 + _PHILOX_KEY_A) & 0xFFFFFFFF
        k1 = (k1 + _PHILOX_KEY_B) & 0xFFFFFFFF
    return c0, c1, c2, c3


def philox4x32_ref(
    seed: int, counter: np.ndarray, rounds: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``tl.randint4x(seed, offsets)`` bit for bit.

    Triton splits the 64-bit seed into the (lo, hi) key words and the 64-bit
    offset into the first two counter words; the other two are zero.
    """
    counter = np.asarray(counter, dtype=np.uint64)
    lo = (counter & _MASK32).astype(np.uint32)
    hi = (counter >> np.uint64(32)).astype(np.uint32)
    zero = np.zeros_like(lo)
    seed &= 0xFFFFFFFFFFFFFFFF
    return philox4x32_10((lo, hi, zero, zero), (seed & 0xFFFFFFFF, seed >> 32), rounds)


def uniform_from_uint32_ref(bits: np.ndarray) -> np.ndarray:
    """Triton's uint32 -> float32 in [0, 1): fold the sign, scale by ~2^-31."""
    s = bits.astype(np.uint32).view(np.int32)
    s = np.where(s < 0, ~s, s)
    return s.astype(np.float32) * np.float32(4.6566127342e-10)


def gaussian_z_ref(
    shape: tuple[int, ...], seed: int, scale: float = 1.0, offset: int = 0
) -> np.ndarray:
    """Seeded N(0, scale^2) float32 noise; element ``i`` (C order) uses counter ``offset + i``.

    Box-Muller on the first two Philox words, as ``tl.randn`` does, so the value
    depends only on (seed, element index) and not on how the work was split.
    """
    count = int(np.prod(shape, dtype=np.int64))
    counter = np.arange(offset, offset + count, dtype=np.uint64)
    w0, w1, _, _ = philox4x32_ref(seed, counter)
    u1 = np.maximum(np.float32(1.0e-7), uniform_from_uint32_ref(w0))
    u2 = uniform_from_uint32_ref(w1)
    theta = np.float32(6.283185307179586) * u2
    radius = np.sqrt(np.float32(-2.0) * np.log(u1))
    z = (radius * np.cos(theta)) * np.float32(scale)
    return z.astype(np.float32).reshape(shape)
