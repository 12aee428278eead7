"""MATLAB-compatible bicubic ``imresize`` in NumPy (torch-free).

The papers' bicubic baselines and the IRN guidance LR are produced with
MATLAB's ``imresize``: cubic kernel with a = -0.5, the kernel widened by the
scale when shrinking (antialiasing) and symmetric padding at the borders. The
evaluation numbers in the papers are only reproducible with exactly this resize.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["imresize", "modcrop"]


def _cubic(x: np.ndarray) -> np.ndarray:
    # Keys' cubic convolution kernel with a = -0.5.
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def _contributions(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per output sample: the input indices (0-based, padded symmetrically) and weights."""
    kernel_width = 4.0
    antialias = scale < 1
    if antialias:
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    # Output sample centre mapped into input coordinates (1-based, pixel centres).
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    dist = u[:, None] - indices
    weights = scale * _cubic(dist * scale) if antialias else _cubic(dist)
    weights /= weights.sum(axis=1, keepdims=True)
    # Symmetric padding: mirror indices outside [1, in_len] back inside.
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx0 = (indices - 1).astype(np.int64) % (2 * in_len)
    idx = mirror[idx0]
    # Drop tap columns that are zero for every output sample.
    keep = np.any(weights != 0, axis=0)
    return idx[:, keep], weights[:, keep]


#: Bytes of float64 gathered at once per chunk of output samples: the gather
#: (out, taps, rest) would otherwise be ~taps x the image (about 2 GB for a 4K RGB).
_CHUNK_BYTES = 64 << 20


def _resize_axis(img: np.ndarray, axis: int, out_len: int, scale: float) -> np.ndarray:
    idx, weights = _contributions(img.shape[axis], out_len, scale)
    moved = np.moveaxis(img, axis, 0)
    rest = moved.shape[1:]
    per_sample = idx.shape[1] * max(1, int(np.prod(rest))) * 8
    chunk = max(1, _CHUNK_BYTES // per_sample)
    out = np.empty((out_len, *rest), dtype=np.float64)
    for a in range(0, out_len, chunk):
        b = min(a + chunk, out_len)
        w = weights[a:b].reshape(weights[a:b].shape + (1,) * len(rest))
        out[a:b] = np.sum(moved[idx[a:b]] * w, axis=1)  # (chunk, taps, ...) summed over taps
    return np.moveaxis(out, 0, axis)


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Resize an HxW or HxWxC image like MATLAB's ``imresize(img, scale, 'bicubic')``.

    ``uint8`` input gives rounded ``uint8`` output (as MATLAB does); float input
    gives float64 output without clipping or rounding (as the training guidance
    needs). Exactly one of ``scale`` and ``output_shape`` must be given.
    """
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize needs exactly one of scale and output_shape")
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize expects an HxW or HxWxC array, got shape {img.shape}")
    in_h, in_w = img.shape[:2]
    if output_shape is None:
        assert scale is not None
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)
    else:
        out_h, out_w = (int(v) for v in output_shape)
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"output_shape must be positive, got {output_shape}")
        scales = (out_h / in_h, out_w / in_w)
    is_uint8 = img.dtype == np.uint8
    out = img.astype(np.float64)
    # MATLAB resizes the dimension with the smaller scale factor first.
    order = np.argsort(scales, kind="stable")
    out_lens = (out_h, out_w)
    for axis in order:
        out = _resize_axis(out, int(axis), out_lens[axis], scales[axis])
    if is_uint8:
        return np.clip(np.round(out), 0, 255).astype(np.uint8)
    return out


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so that height and width are multiples of ``scale``."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]
