"""``irn-eval``: the papers' evaluation protocol for a checkpoint (or the bicubic baseline).

For each HR image (mod-cropped to the scale): downscale, quantise the LR to 8
bits, upscale with z = 0 (or the mean over ``--z-samples`` Gaussian draws),
round to uint8 and measure Y-PSNR/SSIM with a border of ``scale`` pixels; the
LR is compared with the MATLAB-bicubic LR (no border).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from irn_trt.runtime.atomic import write_text_atomic
from irn_trt.runtime.errors import IRNError, cli_entry
from irn_trt.runtime.image_io import list_images, read_rgb
from irn_trt.runtime.metrics import y_psnr_ssim
from irn_trt.runtime.resize import imresize, modcrop
from tqdm import tqdm

from .checkpoint import default_checkpoint, load_checkpoint
from .models import InvertibleRescaler, quantize

__all__ = ["ImageScore", "evaluate_model", "evaluate_bicubic", "summarize", "main"]


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


def _format_table(scores: Sequence[ImageScore], title: str) -> str:
    lines = [title, f"{'image':<16} {'PSNR':>8} {'SSIM':>7} {'LR PSNR':>8} {'LR SSIM':>8}"]
    for s in [*scores, summarize(scores)]:
        lines.append(f"{s.name:<16} {s.psnr:8.2f} {s.ssim:7.4f} {s.lr_psnr:8.2f} {s.lr_ssim:8.4f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="irn-eval",
        description="Evaluate an IRN checkpoint (or the bicubic baseline) with the papers' "
        "protocol: Y-PSNR/SSIM of the reconstruction (border = scale) and of the LR vs bicubic.",
        epilog="example: irn-eval ../shared/data/eval/Set5 --checkpoint weights/irn_x4\n"
        "         irn-eval ../shared/data/eval/Set5 --baseline bicubic --scale 4 --json out.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", help="folder of HR images")
    p.add_argument("--checkpoint", help="checkpoint directory (default: weights/irn_x<scale>)")
    p.add_argument("--scale", type=int, help="scale (default: the checkpoint's; 4 for --baseline)")
    p.add_argument("--baseline", choices=["bicubic"], help="evaluate bicubic & bicubic instead")
    p.add_argument(
        "--z-samples", type=int, default=0, help="average over N Gaussian z (default: z=0)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --z-samples")
    p.add_argument("--json", help="write per-image and mean scores to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@cli_entry("irn-eval")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    images = load_image_set(args.folder)
    if args.baseline == "bicubic":
        scale = args.scale or 4
        if scale < 2:
            raise IRNError(f"scale must be at least 2, got {scale}")
        scores = evaluate_bicubic(images, scale)
        label = f"bicubic & bicubic x{scale}"
    else:
        from .models import model_for_scale

        if args.checkpoint:
            ckpt = Path(args.checkpoint)
        else:
            ckpt = default_checkpoint(model_for_scale(args.scale or 4))
        model, _ = load_checkpoint(ckpt, expect_scale=args.scale)
        scale = model.scale
        scores = evaluate_model(model, images, args.z_samples, args.seed, progress=not args.quiet)
        z = "z=0" if args.z_samples <= 0 else f"mean of {args.z_samples} Gaussian z"
        label = f"{model.config.name} ({ckpt}), {z}"
    print(_format_table(scores, f"{label} on {args.folder}"))
    if args.json:
        mean = summarize(scores)
        doc = {
            "label": label,
            "scale": scale,
            "folder": str(args.folder),
            "images": [asdict(s) for s in scores],
            "mean": asdict(mean),
        }
        write_text_atomic(args.json, json.dumps(doc, indent=2, allow_nan=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
