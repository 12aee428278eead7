"""``irn-eval``: the papers' evaluation protocol for a checkpoint (or the bicubic baseline).

For each HR image (mod-cropped to the scale): downscale, quantise the LR to 8
bits, upscale with z = 0 (or the mean over ``--z-samples`` Gaussian draws),
round to uint8 and measure Y-PSNR/SSIM with a border of ``scale`` pixels; the
LR is compared with the MATLAB-bicubic LR (no border).

:func:`evaluate_compressed` scores the LR as a user stores it lossily: the 8-bit LR
through real JPEG at a quality (Pillow, 4:2:0), optionally restored by a CRM, then up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.image_io import list_images, read_rgb
from irn_trt.runtime.metrics import psnr, rgb_psnr_ssim, rgb_to_luma, y_psnr_ssim
from irn_trt.runtime.resize import imresize, modcrop
from irn_trt.runtime.scales import lr_size
from tqdm import tqdm

from .jpeg import jpeg_roundtrip
from .models import CompressionRestorer, InvertibleRescaler, Rescaler, quantize

__all__ = [
    "CompressedScore",
    "ImageScore",
    "evaluate_bicubic",
    "evaluate_compressed",
    "evaluate_model",
    "load_image_set",
    "summarize",
    "summarize_compressed",
]


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
    return arr.permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def evaluate_model(
    model: Rescaler,
    images: Sequence[tuple[str, np.ndarray]],
    z_samples: int = 0,
    seed: int = 0,
    progress: bool = False,
    scale: float | None = None,
) -> list[ImageScore]:
    """Score ``model`` on (name, HR uint8) pairs; ``z_samples=0`` means z = 0.

    IRN-M models upscale from the z their quantised side code decodes to
    (``z_samples`` does not apply); IRN-A's LR includes its quantised alpha code.
    IRN_color is scored in RGB (see :func:`_evaluate_colour`).

    ``scale`` below the model's (a fractional scale, spec section 1) evaluates
    the runtime's recipe: no mod-crop, LR = ceil(size / scale), the HR resized
    bicubically to the model's scale times the LR before ``down`` and the
    reconstruction resized back after ``up``; the LR is compared with the bicubic
    LR of the same size and the border is ceil(scale).
    """
    if model.config.task == "decolorize":
        if scale not in (None, 1, 1.0):
            raise IRNError(f"{model.config.name} decolorizes: it has no scale to choose")
        return _evaluate_colour(model, images, progress)
    n = model.scale
    s = float(n) if scale is None else float(scale)
    if s > n:
        raise IRNError(f"scale {s:g} needs a model of scale >= {math.ceil(s)}; this one is x{n}")
    fractional = s != n
    model.eval()
    device = next(model.parameters()).device  # a model in training may be on a GPU
    gen = torch.Generator().manual_seed(seed)
    scores = []
    for name, hr_full in tqdm(images, desc="eval", unit="img", disable=not progress):
        if fractional:
            hr = hr_full
            lw, lh = lr_size((hr.shape[1], hr.shape[0]), s)
            model_in = imresize(hr, output_shape=(lh * n, lw * n))
            lr_bic = imresize(hr, output_shape=(lh, lw))
        else:
            hr = modcrop(hr_full, n)
            model_in = hr
            lr_bic = imresize(hr, 1.0 / n)
        border = math.ceil(s)

        def restore(x: torch.Tensor, hr: np.ndarray = hr) -> np.ndarray:
            out = to_uint8(x)
            return imresize(out, output_shape=hr.shape[:2]) if fractional else out

        y, z = model(to_tensor(model_in).to(device))
        lr = quantize(y)
        # The LR's colours are what a viewer shows; IRN-A's alpha code is not compared.
        lr_u8 = to_uint8(lr[:, : model.in_channels])
        lr_psnr, lr_ssim = y_psnr_ssim(lr_u8, lr_bic, 0)
        z_side = model.reconstruction_latent(z)  # IRN-M: z decoded from its side code
        if z_samples <= 0 or z_side is not None:
            psnr, ssim = y_psnr_ssim(restore(model.inverse(lr, z_side)), hr, border)
        else:
            zc = model.latent_channels
            vals = []
            for _ in range(z_samples):
                z = torch.randn((1, zc, *lr.shape[2:]), generator=gen).to(device)
                vals.append(y_psnr_ssim(restore(model.inverse(lr, z)), hr, border))
            psnr, ssim = (float(np.mean(v)) for v in zip(*vals, strict=True))
        scores.append(ImageScore(name, psnr, ssim, lr_psnr, lr_ssim))
    return scores


def _evaluate_colour(
    model: InvertibleRescaler, images: Sequence[tuple[str, np.ndarray]], progress: bool
) -> list[ImageScore]:
    """IRN_color (seed 000, section 4.3): RGB PSNR / SSIM of the colour restored from the
    8-bit grey image with z = 0, and the grey image against the plain luma conversion
    (rounded to 8 bits): ``lr_psnr`` / ``lr_ssim``. No border is cropped."""
    model.eval()
    device = next(model.parameters()).device
    scores = []
    for name, img in tqdm(images, desc="eval", unit="img", disable=not progress):
        y, _ = model(to_tensor(img).to(device))
        grey = quantize(y)
        grey_u8 = to_uint8(grey)[..., 0]
        luma_u8 = np.round(rgb_to_luma(img)).astype(np.uint8)
        lr_psnr, lr_ssim = rgb_psnr_ssim(grey_u8, luma_u8)
        psnr, ssim = rgb_psnr_ssim(to_uint8(model.inverse(grey)), img)
        scores.append(ImageScore(name, psnr, ssim, lr_psnr, lr_ssim))
    return scores


def evaluate_bicubic(images: Sequence[tuple[str, np.ndarray]], scale: float) -> list[ImageScore]:
    """The 'bicubic & bicubic' baseline: MATLAB-bicubic down, uint8, bicubic up.

    A fractional ``scale`` uses the geometry of :func:`evaluate_model`'s
    fractional path (no mod-crop, LR = ceil(size / scale), border ceil(scale)).
    """
    scores = []
    for name, hr_full in images:
        if float(scale).is_integer():
            hr = modcrop(hr_full, int(scale))
            lr = imresize(hr, 1.0 / scale)
            sr = imresize(lr, float(scale))
        else:
            hr = hr_full
            lw, lh = lr_size((hr.shape[1], hr.shape[0]), scale)
            lr = imresize(hr, output_shape=(lh, lw))
            sr = imresize(lr, output_shape=hr.shape[:2])
        psnr, ssim = y_psnr_ssim(sr, hr, math.ceil(scale))
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


@dataclass
class CompressedScore:
    """One image through down, JPEG at ``quality`` (None: the lossless 8-bit LR), an
    optional CRM, and up (z = 0).

    ``psnr`` / ``ssim``: Y channel, border = scale (the papers' protocol); ``rgb_psnr``:
    all three channels of the whole (mod-cropped) image, the seed's measure for
    compression; ``lr_psnr``: RGB PSNR of the LR that ``up`` receives against the
    uncompressed 8-bit LR; ``bpp``: bits of the JPEG file per HR pixel (0 when lossless).
    """

    name: str
    quality: int | None
    psnr: float
    ssim: float
    rgb_psnr: float
    lr_psnr: float
    bpp: float


def check_compressible(model: Rescaler) -> None:
    """Refuse, in one line, a model whose LR is not a plain RGB image (JPEG holds RGB)."""
    config = model.config
    if (
        isinstance(model, CompressionRestorer)
        or config.task != "rescale"
        or config.alpha_channel
        or config.latent_code is not None
    ):
        raise IRNError(
            f"{config.name}: JPEG-compressed LRs apply to rescalers with a plain RGB LR "
            "(IRN, FGRN), not to this model"
        )


@torch.no_grad()
def evaluate_compressed(
    model: Rescaler,
    images: Sequence[tuple[str, np.ndarray]],
    qualities: Sequence[int | None],
    crm: CompressionRestorer | None = None,
    cache: dict[tuple[str, int | None], tuple[np.ndarray, int]] | None = None,
    progress: bool = False,
) -> list[CompressedScore]:
    """Score ``model`` on (name, HR uint8) pairs with its LR JPEG-compressed at each quality.

    ``crm`` restores the decoded JPEG before ``up`` (not the lossless LR). ``cache``
    keeps each image's LR and JPEG between calls for a model that does not change
    (a frozen rescaler under a CRM being trained): pass the same dict every time.
    Returns one score per image and quality, image-major.
    """
    check_compressible(model)
    model.eval()
    if crm is not None:
        crm.eval()
    s = model.scale
    memo: dict[tuple[str, int | None], tuple[np.ndarray, int]] = {} if cache is None else cache
    scores = []
    for name, hr_full in tqdm(images, desc="eval", unit="img", disable=not progress):
        hr = modcrop(hr_full, s)
        if (name, None) not in memo:
            y, _ = model(to_tensor(hr))
            memo[(name, None)] = (to_uint8(quantize(y)), 0)
        clean = memo[(name, None)][0]
        for q in qualities:
            if q is None:
                lr, nbytes = clean, 0
            else:
                if (name, q) not in memo:
                    memo[(name, q)] = jpeg_roundtrip(clean, q)
                lr, nbytes = memo[(name, q)]
                if crm is not None:
                    lr = to_uint8(crm(to_tensor(lr), q if crm.config.conditioned else None))
            out = to_uint8(model.inverse(to_tensor(lr)))
            y_psnr, y_ssim = y_psnr_ssim(out, hr, s)
            scores.append(
                CompressedScore(
                    name,
                    q,
                    y_psnr,
                    y_ssim,
                    psnr(out, hr),
                    psnr(lr, clean),
                    8.0 * nbytes / (hr.shape[0] * hr.shape[1]),
                )
            )
    return scores


def summarize_compressed(scores: Sequence[CompressedScore]) -> CompressedScore:
    """The mean over ``scores`` (one quality, or a mix: ``quality`` is then None)."""
    qs = {sc.quality for sc in scores}

    def mean(attr: str) -> float:
        return float(np.mean([getattr(sc, attr) for sc in scores]))

    return CompressedScore(
        "mean",
        qs.pop() if len(qs) == 1 else None,
        mean("psnr"),
        mean("ssim"),
        mean("rgb_psnr"),
        mean("lr_psnr"),
        mean("bpp"),
    )
