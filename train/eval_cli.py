"""``irn-eval``: the papers' evaluation protocol for a checkpoint or the bicubic baseline.

Torch loads only after the arguments are parsed (fast ``--help``); the
scoring itself is :mod:`irn_trt.train.evaluate`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from irn_trt.runtime.atomic import write_text_atomic
from irn_trt.runtime.errors import IRNError, cli_entry
from irn_trt.runtime.scales import models_for_scale, parse_scale

if TYPE_CHECKING:
    from .evaluate import ImageScore

__all__ = ["build_parser", "main"]


def _shipped_checkpoint_for(scale: float, default_checkpoint: Callable[[str], Path]) -> Path:
    """The shipped irn_x<n> of the smallest integer n >= ``scale`` that exists."""
    from .configs import list_models

    names = [name for name in models_for_scale(scale) if name in list_models()]
    for name in names:
        if default_checkpoint(name).exists():
            return default_checkpoint(name)
    raise IRNError(
        f"no shipped checkpoint for x{scale:g} ({', '.join(names) or 'no model'}); "
        "pass --checkpoint"
    )


#: Column names of the table (and what the JSON's fields mean) per task.
_COLUMNS = {
    "rescale": ("PSNR", "SSIM", "LR PSNR", "LR SSIM"),
    "decolorize": ("RGB PSNR", "RGB SSIM", "grey PSNR", "grey SSIM"),
}
_MEANING = {
    "rescale": "psnr/ssim: Y channel of the reconstruction, border = scale; "
    "lr_psnr/lr_ssim: the LR vs MATLAB bicubic",
    "decolorize": "psnr/ssim: RGB of the colour restored from the 8-bit grey image; "
    "lr_psnr/lr_ssim: the grey image vs the plain luma conversion (0.299, 0.587, 0.114)",
}


def _format_table(scores: Sequence[ImageScore], title: str, task: str = "rescale") -> str:
    from .evaluate import summarize

    a, b, c, d = _COLUMNS[task]
    lines = [title, f"{'image':<16} {a:>8} {b:>8} {c:>9} {d:>9}"]
    for s in [*scores, summarize(scores)]:
        lines.append(f"{s.name:<16} {s.psnr:8.2f} {s.ssim:8.4f} {s.lr_psnr:9.2f} {s.lr_ssim:9.4f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="irn-eval",
        description="Evaluate an IRN checkpoint (or the bicubic baseline) with the papers' "
        "protocol: Y-PSNR/SSIM of the reconstruction (border = scale) and of the LR vs bicubic.",
        epilog="example: irn-eval ../shared/data/eval/Set5 --checkpoint weights/irn_x4\n"
        "         irn-eval ../shared/data/eval/Set14 --checkpoint runs/irn_color/best  "
        "# RGB PSNR, grey vs luma\n"
        "         irn-eval ../shared/data/eval/Set5 --baseline bicubic --scale 4 --json out.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", help="folder of HR images")
    p.add_argument("--checkpoint", help="checkpoint directory (default: weights/irn_x<scale>)")
    p.add_argument(
        "--scale",
        help="scale in (1, 8] (default: the checkpoint's; 4 for --baseline); a scale without a "
        "model of its own, e.g. 2.5, runs the shipped irn_x<n> of the nearest integer n >= it "
        "(or --checkpoint) with a bicubic resize around it, as irn-trt-run --scale does",
    )
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
    from .checkpoint import default_checkpoint, load_checkpoint
    from .evaluate import evaluate_bicubic, evaluate_model, load_image_set, summarize

    scale = parse_scale(args.scale) if args.scale is not None else None
    images = load_image_set(args.folder)
    task = "rescale"
    if args.baseline == "bicubic":
        scale = scale or 4.0
        scores = evaluate_bicubic(images, scale)
        label = f"bicubic & bicubic x{scale:g}"
    else:
        if args.checkpoint:
            ckpt = Path(args.checkpoint)
        else:
            ckpt = _shipped_checkpoint_for(scale or 4.0, default_checkpoint)
        model, _ = load_checkpoint(ckpt)  # a larger scale than asked serves (evaluate_model)
        task = model.config.task
        if task == "decolorize" and scale is not None:
            raise IRNError(f"{model.config.name} decolorizes: --scale does not apply")
        scale = scale or float(model.scale)
        scores = evaluate_model(
            model, images, args.z_samples, args.seed, progress=not args.quiet, scale=scale
        )
        z = "z=0" if args.z_samples <= 0 else f"mean of {args.z_samples} Gaussian z"
        via = f" at x{scale:g}" if scale != model.scale else ""
        if task == "decolorize":
            z = "z=0"
        label = f"{model.config.name}{via} ({ckpt}), {z}"
    print(_format_table(scores, f"{label} on {args.folder}", task))
    if args.json:
        mean = summarize(scores)
        doc = {
            "label": label,
            "task": task,
            "metrics": _MEANING[task],
            "scale": scale,
            "folder": str(args.folder),
            "images": [asdict(s) for s in scores],
            "mean": asdict(mean),
        }
        write_text_atomic(args.json, json.dumps(doc, indent=2, allow_nan=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
