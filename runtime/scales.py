"""Any scale in (1, 8] with the integer-scale models (spec section 1, "fractional scale").

A scale ``s`` without a model of its own runs the IRN of the nearest larger
integer scale ``n`` with a bicubic resize around it: ``down`` resizes the HR
image to ``n`` times the LR size, then IRN downscales by ``n``; ``up`` runs IRN's
inverse, then resizes back to the exact original size recorded in the LR. The
LR of a W x H image is ceil(W / s) x ceil(H / s), as for integer scales.
Torch-free (MATLAB-compatible bicubic from :mod:`.resize`).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import IRNError
from .resize import imresize

__all__ = [
    "MAX_SCALE",
    "parse_scale",
    "lr_size",
    "is_integer_scale",
    "format_scale",
    "resize_exact",
    "models_for_scale",
]

MAX_SCALE = 8.0


def parse_scale(value: str | float) -> float:
    """A requested scale in (1, 8], or a one-line error."""
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise IRNError(f"--scale {value!r} is not a number") from None
    if not (1.0 < scale <= MAX_SCALE) or math.isnan(scale):
        raise IRNError(f"--scale {value} is out of range: give a scale in (1, {MAX_SCALE:g}]")
    return scale


def is_integer_scale(scale: float) -> bool:
    return float(scale).is_integer()


def format_scale(scale: float) -> str:
    """2 -> "2", 2.5 -> "2.5" (metadata and messages)."""
    return f"{scale:g}"


def models_for_scale(scale: float) -> list[str]:
    """``irn_x<n>`` names that can serve ``scale``, best first: n = ceil(scale) .. 8."""
    first = math.ceil(round(scale, 9))
    return [f"irn_x{n}" for n in range(first, int(MAX_SCALE) + 1)]


def lr_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(width, height) of the LR of an image of ``size`` at ``scale``: ceil of each side."""
    w, h = size
    # Round before ceil: 10 / 2.5 must be 4, not 5 through 4.000000000000001.
    return math.ceil(round(w / scale, 9)), math.ceil(round(h / scale, 9))


def resize_exact(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic (MATLAB ``imresize``) resize of an HxW(xC) uint8 image to (width, height)."""
    w, h = size
    if image.shape[1] == w and image.shape[0] == h:
        return image
    if min(w, h) < 1:
        raise IRNError(f"cannot resize to {w}x{h}")
    return imresize(image, output_shape=(h, w))
