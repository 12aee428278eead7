"""Image quality metrics exactly as the IRN papers measure them (torch-free).

PSNR and SSIM are computed on the Y channel of YCbCr (ITU-R BT.601, studio
range) from uint8 RGB, in float64, after cropping a border of ``scale`` pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "LUMA_WEIGHTS",
    "SSIM_MIN_SIDE",
    "rgb_to_luma",
    "rgb_psnr_ssim",
    "rgb_quality",
    "rgb_to_y",
    "psnr",
    "ssim",
    "shave",
    "y_psnr_ssim",
    "y_psnr_ssim_banded",
    "y_quality",
]

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)

#: Full-range BT.601 luma (JPEG / ITU-T T.871, Pillow's ``convert("L")``): the plain
#: greyscale conversion that IRN_color's grey image is guided towards and judged against.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def rgb_to_luma(img: np.ndarray) -> np.ndarray:
    """Full-range luma in [0, 255] as float64 from an HxWx3 uint8 image (not rounded)."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_luma expects HxWx3 uint8, got {img.dtype} {img.shape}")
    return img.astype(np.float64) @ np.array(LUMA_WEIGHTS, dtype=np.float64)


def rgb_psnr_ssim(test: np.ndarray, ref: np.ndarray, border: int = 0) -> tuple[float, float]:
    """PSNR over all channels and SSIM averaged over the channels (uint8 images, banded).

    The measure of IRN_color (seed 000, section 4.3: RGB PSNR / SSIM). HxW grey
    images are measured as one channel.
    """
    if test.shape != ref.shape:
        raise ValueError(f"image sizes differ: {test.shape} vs {ref.shape}")
    return _psnr_ssim_banded(shave(test, border), shave(ref, border), _channel_planes)


def rgb_quality(test: np.ndarray, ref: np.ndarray) -> tuple[float, float | None]:
    """:func:`rgb_psnr_ssim` for images of any size: SSIM ``None`` under ``SSIM_MIN_SIDE`` px."""
    if test.shape != ref.shape:
        raise ValueError(f"image sizes differ: {test.shape} vs {ref.shape}")
    if min(test.shape[:2]) < SSIM_MIN_SIDE:
        return psnr(test, ref), None
    return rgb_psnr_ssim(test, ref)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y of YCbCr in [16, 235] as float64, from an HxWx3 (or HxW grey) uint8 image."""
    if img.dtype != np.uint8:
        raise TypeError(f"rgb_to_y expects uint8 RGB, got {img.dtype}")
    x = img.astype(np.float64)
    if x.ndim == 2:
        return x * (_Y_WEIGHTS.sum() / 255.0) + 16.0
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects HxWx3, got shape {img.shape}")
    return x @ (_Y_WEIGHTS / 255.0) + 16.0


def shave(img: np.ndarray, border: int) -> np.ndarray:
    """Remove ``border`` pixels from each side (no-op for 0)."""
    if border <= 0:
        return img
    return img[border:-border, border:-border]


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB between two arrays on the same scale (float64 arithmetic)."""
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ: {a.shape} vs {b.shape}")
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(peak * peak / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    # Separable 'valid' correlation with a symmetric 1-D kernel.
    n = g.size
    h, w = img.shape
    rows = sum(g[k] * img[k : h - n + 1 + k, :] for k in range(n))
    return sum(g[k] * rows[:, k : w - n + 1 + k] for k in range(n))


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """SSIM of two single-channel images: Gaussian window 11, sigma 1.5, 'valid'."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim expects two HxW arrays of one shape, got {a.shape}, {b.shape}")
    if min(a.shape) < 11:
        raise ValueError(f"ssim needs at least 11x11 pixels, got {a.shape}")
    return float(np.mean(_ssim_map(a, b, peak)))


def _ssim_map(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> np.ndarray:
    """The per-window SSIM values ('valid': (H-10) x (W-10))."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    c1 = (0.01 * peak) ** 2
    c2 = (0.03 * peak) ** 2
    g = _gaussian_window()
    mu_a = _filter_valid(a, g)
    mu_b = _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a * mu_a
    var_b = _filter_valid(b * b, g) - mu_b * mu_b
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return num / den


def y_psnr_ssim(test: np.ndarray, ref: np.ndarray, border: int = 0) -> tuple[float, float]:
    """Y-channel PSNR and SSIM of two uint8 RGB images after shaving ``border`` pixels."""
    if test.shape != ref.shape:
        raise ValueError(f"image sizes differ: {test.shape} vs {ref.shape}")
    ya = shave(rgb_to_y(test), border)
    yb = shave(rgb_to_y(ref), border)
    return psnr(ya, yb), ssim(ya, yb)


def y_psnr_ssim_banded(
    test: np.ndarray, ref: np.ndarray, border: int = 0, band: int = 256
) -> tuple[float, float]:
    """:func:`y_psnr_ssim` computed over bands of ``band`` rows (same numbers, up to float
    summation order), so a 4K image needs tens of MB instead of ~1.2 GB of float64 maps."""
    if test.shape != ref.shape:
        raise ValueError(f"image sizes differ: {test.shape} vs {ref.shape}")
    return _psnr_ssim_banded(shave(test, border), shave(ref, border), lambda x: [rgb_to_y(x)], band)


def _channel_planes(img: np.ndarray) -> list[np.ndarray]:
    if img.ndim == 2:
        return [img.astype(np.float64)]
    return [img[:, :, c].astype(np.float64) for c in range(img.shape[2])]


def _psnr_ssim_banded(
    t: np.ndarray,
    r: np.ndarray,
    planes: Callable[[np.ndarray], list[np.ndarray]],
    band: int = 256,
) -> tuple[float, float]:
    """PSNR over all planes and mean SSIM of the planes that ``planes`` takes from each
    band of ``band`` rows (plus the window's 10 rows of context)."""
    h, w = t.shape[:2]
    if min(h, w) < 11:
        raise ValueError(f"ssim needs at least 11x11 pixels, got {(h, w)}")
    rows = h - 10  # rows of the 'valid' SSIM map; map row i uses image rows i..i+10
    sq_err = 0.0
    ssim_sum = 0.0
    n_planes = 0
    for m0 in range(0, rows, band):
        m1 = min(m0 + band, rows)
        pa, pb = planes(t[m0 : m1 + 10]), planes(r[m0 : m1 + 10])
        n_planes = len(pa)
        own = (m1 - m0) if m1 < rows else pa[0].shape[0]  # image rows this band accounts for
        for a, b in zip(pa, pb, strict=True):
            d = a[:own] - b[:own]
            sq_err += float(np.sum(d * d))
            ssim_sum += float(np.sum(_ssim_map(a, b)))
    mse = sq_err / (h * w * n_planes)
    p = float("inf") if mse == 0 else float(10.0 * np.log10(255.0 * 255.0 / mse))
    return p, ssim_sum / (rows * (w - 10) * n_planes)


#: The SSIM window's side: smaller images have no SSIM.
SSIM_MIN_SIDE = 11


def y_quality(test: np.ndarray, ref: np.ndarray, border: int = 0) -> tuple[float, float | None]:
    """Y-PSNR and SSIM of images of any size (banded, bounded memory).

    SSIM is ``None`` when less than ``SSIM_MIN_SIDE`` pixels a side remain after
    the border: its 11x11 window does not fit. PSNR is always given.
    """
    if test.shape != ref.shape:
        raise ValueError(f"image sizes differ: {test.shape} vs {ref.shape}")
    t, r = shave(test, border), shave(ref, border)
    if min(t.shape[:2]) < SSIM_MIN_SIDE:
        return psnr(rgb_to_y(t), rgb_to_y(r)), None
    return y_psnr_ssim_banded(t, r, 0)
