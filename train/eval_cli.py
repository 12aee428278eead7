"""``irn-eval``: the papers' evaluation protocol for a checkpoint or the bicubic baseline;
with ``--lr-jpeg`` the LR is JPEG-compressed before ``up`` (optionally restored by ``--crm``).

Torch loads only after the arguments are parsed (fast ``--help``); the
scoring itself is :mod:`irn_trt.train.evaluate`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from irn_trt.runtime.atomic import write_json_atomic
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
    "lr_psnr/lr_ssim: the LR vs MATLAB bicubic; a PSNR of identical images (+inf) is null",
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
        "         irn-eval ../shared/data/eval/Set5 --baseline bicubic --scale 4 --json out.json\n"
        "         irn-eval ../shared/data/eval/Set14 --checkpoint runs/irn_x4_jpeg/best "
        "--lr-jpeg 75 --crm runs/crm_x4_q75/best",
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
    p.add_argument(
        "--lr-jpeg",
        metavar="Q[,Q...]",
        help="compress the 8-bit LR with JPEG (Pillow, 4:2:0) at each quality before up; the "
        "table adds RGB PSNR (whole image), the LR's PSNR against the uncompressed LR and "
        "bits per HR pixel",
    )
    p.add_argument(
        "--crm",
        help="with --lr-jpeg: restore the decoded JPEG with this compression restore module "
        "checkpoint (irn-train --stage crm) before up",
    )
    p.add_argument("--json", help="write per-image and mean scores to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@cli_entry("irn-eval")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import default_checkpoint, load_checkpoint
    from .evaluate import evaluate_bicubic, evaluate_model, load_image_set, summarize

    scale = parse_scale(args.scale) if args.scale is not None else None
    if args.crm and not args.lr_jpeg:
        raise IRNError("--crm restores JPEG-compressed LRs: give --lr-jpeg Q")
    if args.lr_jpeg:
        from .recipe import parse_qualities

        qualities = parse_qualities(args.lr_jpeg)
        if args.baseline:
            raise IRNError("--lr-jpeg scores a checkpoint, not --baseline")
        if scale is not None:
            raise IRNError("--lr-jpeg runs at the checkpoint's own scale: drop --scale")
        return _compressed(args, qualities)
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
        if model.config.task == "restore":
            raise IRNError(
                f"{ckpt} is a CRM ({model.config.name}): give it as --crm, with --lr-jpeg"
            )
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
        write_json_atomic(args.json, doc)
    return 0


_JPEG_MEANING = (
    "psnr/ssim: Y channel of the reconstruction, border = scale; rgb_psnr: RGB, whole "
    "(mod-cropped) image; lr_psnr: RGB PSNR of the LR given to up (JPEG-decoded, or "
    "restored by the CRM) against the uncompressed 8-bit LR; bpp: JPEG bits per HR pixel"
)


def _compressed(args: argparse.Namespace, qualities: tuple[int, ...]) -> int:
    """``--lr-jpeg``: down, 8 bits, JPEG at each quality, optional CRM, up; a table each."""
    from .checkpoint import default_checkpoint, load_checkpoint
    from .evaluate import evaluate_compressed, load_image_set, summarize_compressed
    from .models import CompressionRestorer

    images = load_image_set(args.folder)
    ckpt = (
        Path(args.checkpoint)
        if args.checkpoint
        else _shipped_checkpoint_for(4.0, default_checkpoint)
    )
    model, _ = load_checkpoint(ckpt)
    crm = None
    if args.crm:
        crm, crm_config = load_checkpoint(args.crm)
        if not isinstance(crm, CompressionRestorer):
            raise IRNError(f"--crm {args.crm} is {crm.config.name}, not a CRM (crm_*)")
        trained = crm_config.get("meta", {}).get("train_config", {}).get("lr_jpeg") or []
        other = [q for q in qualities if trained and q not in trained]
        if other:
            print(
                f"irn-eval: note: {args.crm} was trained for JPEG quality "
                f"{', '.join(map(str, trained))}, scored here at {', '.join(map(str, other))}",
                file=sys.stderr,
            )
    scores = evaluate_compressed(model, images, qualities, crm, progress=not args.quiet)
    label = f"{model.config.name} ({ckpt}) + JPEG" + (
        f" + {crm.config.name} ({args.crm})" if crm else ""
    )
    doc_means = {}
    for q in qualities:
        rows = [sc for sc in scores if sc.quality == q]
        lines = [
            f"{label} q{q} on {args.folder}",
            f"{'image':<16} {'PSNR':>8} {'SSIM':>8} {'RGB PSNR':>9} {'LR PSNR':>9} {'bpp':>7}",
        ]
        for sc in [*rows, summarize_compressed(rows)]:
            lines.append(
                f"{sc.name:<16} {sc.psnr:8.2f} {sc.ssim:8.4f} {sc.rgb_psnr:9.2f} "
                f"{sc.lr_psnr:9.2f} {sc.bpp:7.4f}"
            )
        print("\n".join(lines))
        doc_means[str(q)] = asdict(summarize_compressed(rows))
    if args.json:
        doc = {
            "label": label,
            "task": "rescale",
            "metrics": _JPEG_MEANING,
            "scale": model.scale,
            "folder": str(args.folder),
            "jpeg": {"qualities": list(qualities), "subsampling": "4:2:0", "crm": args.crm},
            "images": [asdict(sc) for sc in scores],
            "mean_by_quality": doc_means,
        }
        write_json_atomic(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
