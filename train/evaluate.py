"""``irn-eval``: the papers' evaluation protocol for a checkpoint (or the bicubic baseline).

For each HR image (mod-cropped to the scale): downscale, quantise the LR to 8
bits, upscale with z = 0 (or the mean over ``--z-samples`` Gaussian draws),
round to uint8 and measure Y-PSNR/SSIM with a border of ``scale`` pixels; the
LR is compared with the MATLAB-bicubic LR (no border).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.image_io import list_images, read_rgb
from irn_trt.runtime.metrics import y_psnr_ssim
from irn_trt.runtime.resize import imresize, modcrop
from tqdm import tqdm

from .models import InvertibleRescaler, quantize

__all__ = ["ImageScore", "evaluate_model", "evaluate_bicubic", "load_image_set", "summarize"]


@dataclass
class ImageScore:
    name: str
    psnr: float
    ssim: float
    lr_psnr: float
    lr_ssim: float


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div(255.0)[None]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> HxWx3 uint8 (clamped and rounded)."""
    arr = torch.round(torch.clamp(x[0], 0.0, 1.0) * 255.0).to(torch.uint8)
    return arr.permute(1, 2, 0).numpy()


@torch.no_grad()
def evaluate_model(
    model: InvertibleRescaler,
    images: Sequence[tuple[str, np.ndarray]],
    z_samples: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> list[ImageScore]:
    """Score ``model`` on (name, HR uint8) pairs; ``z_samples=0`` means z = 0."""
    scale = model.scale
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    scores = []
    for name, hr_full in tqdm(images, desc="eval", unit="img", disable=not progress):
        hr = modcrop(hr_full, scale)
        y, _ = model(to_tensor(hr))
        lr = quantize(y)
        lr_u8 = to_uint8(lr)
        lr_bic = imresize(hr, 1.0 / scale)
        lr_psnr, lr_ssim = y_psnr_ssim(lr_u8, lr_bic, 0)
        if z_samples <= 0:
            sr = to_uint8(model.inverse(lr))
            psnr, ssim = y_psnr_ssim(sr, hr, scale)
        else:
            zc = model.out_channels - model.in_channels
            vals = []
            for _ in range(z_samples):
                z = torch.randn((1, zc, *lr.shape[2:]), generator=gen)
                vals.append(y_psnr_ssim(to_uint8(model.inverse(lr, z)), hr, scale))
            psnr, ssim = (float(np.mean(v)) for v in zip(*vals, strict=True))
        scores.append(ImageScore(name, psnr, ssim, lr_psnr, lr_ssim))
    return scores


def evaluate_bicubic(images: Sequence[tuple[str, np.ndarray]], scale: int) -> list[ImageScore]:
    """The 'bicubic & bicubic' baseline: MATLAB-bicubic down, uint8, bicubic up."""
    scores = []
    for name, hr_full in images:
        hr = modcrop(hr_full, scale)
        lr = imresize(hr, 1.0 / scale)
        sr = imresize(lr, float(scale))
        psnr, ssim = y_psnr_ssim(sr, hr, scale)
        scores.append(ImageScore(name, psnr, ssim, float("inf"), 1.0))
    return scores


def summarize(scores: Sequence[ImageScore]) -> ImageScore:
    def mean(attr: str) -> float:
        return float(np.mean([getattr(s, attr) for s in scores]))

    return ImageScore("mean", mean("psnr"), mean("ssim"), mean("lr_psnr"), mean("lr_ssim"))


def load_image_set(folder: str | Path) -> list[tuple[str, np.ndarray]]:
    files = list_images(folder)
    if not files:
        raise IRNError(f"{folder}: no images found")
    return [(f.name, read_rgb(f)) for f in files]
