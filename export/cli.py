"""``irn-export``: checkpoint -> model directory of split FP32/FP16 ONNX graphs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from irn_trt.runtime.errors import IRNError, cli_entry
from irn_trt.runtime.image_io import list_images, read_rgb
from irn_trt.runtime.model_store import export_root
from irn_trt.train.configs import get_config, list_models, model_for_scale

if TYPE_CHECKING:  # torch loads after argument parsing (fast --help and argument errors)
    from irn_trt.train.models import Rescaler

__all__ = ["build_parser", "main", "default_verify_image", "synthetic_image"]

_SET5 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval" / "Set5"


def default_verify_image() -> Path | None:
    """The first Set5 image of the shared data beside the repository, if it is there."""
    if _SET5.is_dir():
        files = list_images(_SET5)
        return files[0] if files else None
    return None


def synthetic_image(size: int = 128, seed: int = 0) -> np.ndarray:
    """A deterministic test card (gradients, edges, texture) when no real image is at hand."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    rng = np.random.default_rng(seed)
    img = np.stack(
        [
            0.5 + 0.4 * np.sin(8 * xx + 3 * yy),
            (xx > 0.5) * 0.6 + 0.2 * yy,
            0.5 + 0.3 * np.cos(20 * xx * yy),
        ],
        axis=2,
    )
    img += rng.normal(0, 0.03, img.shape)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = min(h, size), min(w, size)
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top : top + ch, left : left + cw]


def _verify_images(path: str | None, size: int, quiet: bool) -> list[tuple[str, np.ndarray]]:
    if path is None:
        found = default_verify_image()
        if found is None:
            if not quiet:
                print(
                    "irn-export: no Set5 image found; verifying on a synthetic test card",
                    file=sys.stderr,
                )
            return [("synthetic", synthetic_image())]
        files = [found]
    else:
        p = Path(path)
        files = list_images(p) if p.is_dir() else [p]
        if not files:
            raise IRNError(f"{p}: no images found")
    images = [(f.name, read_rgb(f)) for f in files]
    return [(n, _centre_crop(img, size) if size > 0 else img) for n, img in images]


def _resolve_model_name(scale: int | None, model: str | None) -> str:
    if model is not None:
        try:
            config = get_config(model)
        except ValueError as exc:
            raise IRNError(str(exc)) from None
        if config.family == "crm":
            raise IRNError(f"{model} is a CRM: export it beside its rescaler with --crm DIR")
        if scale is not None and config.scale != scale:
            raise IRNError(f"model {model} has scale {config.scale}, not {scale}")
        return model
    try:
        return model_for_scale(4 if scale is None else scale)
    except ValueError as exc:
        raise IRNError(str(exc)) from None


def _load(args: argparse.Namespace, name: str) -> tuple[Rescaler, str | None]:
    """The model to export and its checkpoint hash (None: hash the weights)."""
    from irn_trt.train.checkpoint import checkpoint_sha256, default_checkpoint, load_checkpoint

    from .random_init import random_model

    if args.random_init:
        return random_model(name, seed=args.seed), None
    if args.checkpoint is None:
        ckpt = default_checkpoint(name)
        if not ckpt.exists():
            raise IRNError(
                f"no shipped checkpoint at {ckpt}; pass --checkpoint DIR "
                f"(or --random-init for a test export)"
            )
    else:
        ckpt = Path(args.checkpoint)
    model, _ = load_checkpoint(ckpt, expect_scale=get_config(name).scale)
    if model.config.name != name and args.model is not None:
        raise IRNError(f"checkpoint {ckpt} is {model.config.name}, not {name}")
    return model, checkpoint_sha256(ckpt)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="irn-export",
        description="Export an IRN checkpoint to a model directory: down (HR -> 8-bit LR) and "
        "up (LR -> HR) ONNX graphs in FP32 and strongly typed FP16, plus manifest.json. "
        "Every graph is checked in ONNX Runtime against PyTorch unless --no-verify.",
        epilog="examples:\n"
        "  irn-export --scale 4                      # weights/irn_x4 -> <models>/irn_x4/\n"
        "  irn-export --checkpoint runs/irn_x4/best --out build/irn_x4\n"
        "  irn-export --model irn_e_x4 --random-init --precision fp32 --out /tmp/e4\n"
        "  irn-export --model fgrn_x4 --checkpoint runs/fgrn_x4/best --out build/fgrn_x4\n"
        "  irn-export --model irn_m_x4 --checkpoint runs/irn_m_x4/best  # + the side code\n"
        "  irn-export --scale 4 --io float32 --z gaussian --temperature 0.8\n"
        "  irn-export --scale 4 --z gaussian --plugins haar,pack,gaussian --plugin-seed 7\n"
        "  irn-export --model irn_x4_jpeg --checkpoint runs/irn_x4_jpeg/best \\\n"
        "             --crm runs/crm_x4_q50/best --crm runs/crm_x4_q75/best \\\n"
        "             --crm runs/crm_x4_q90/best   # JPEG-robust IRN x4 + its CRMs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scale", type=int, help="2, 3, 4 or 8 (default 4, or the --model's)")
    p.add_argument(
        "--model", help=f"registry name ({', '.join(list_models())}); default from --scale"
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="checkpoint directory (default: weights/<model>)")
    src.add_argument(
        "--random-init",
        action="store_true",
        help="seeded random weights instead (tests, benchmarks)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --random-init (default 0)")
    p.add_argument("--precision", choices=["fp32", "fp16", "both"], default="both")
    p.add_argument(
        "--io",
        choices=["uint8", "float32"],
        default="uint8",
        help="uint8: NHWC RGB bytes in and out (default); float32: NCHW in [0, 1]",
    )
    p.add_argument(
        "--z",
        choices=["zero", "gaussian", "input"],
        default="zero",
        help="latent of the up graph: zero (default, best PSNR), gaussian (sampled in the "
        "graph), input (an explicit z input)",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="std of z for --z gaussian")
    p.add_argument(
        "--out",
        help="model directory (default: <models>/<model>, <models> being the first folder of "
        "the model search path: $IRN_TRT_MODELS, else this checkout's build/, else "
        "~/.local/share/irn-trt/models; irn-trt-run --model finds it there)",
    )
    p.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="check parity (default on)",
    )
    p.add_argument(
        "--measure-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure each graph's peak memory per pixel on ort-cpu for the runtime's CPU "
        "tiles (default on; a few seconds to a minute)",
    )
    p.add_argument(
        "--verify-image",
        help="image file or folder for --verify (default: the first Set5 image of ../shared)",
    )
    p.add_argument(
        "--verify-size",
        type=int,
        default=256,
        help="centre-crop verification images to at most this size (0: whole images; default 256)",
    )
    p.add_argument(
        "--plugins",
        type=_plugin_list,
        help="also write TensorRT plugin variants (<graph>.plugins.onnx) using these irn::* "
        "plugins: comma list of haar, pack, gaussian (e.g. haar,pack); native graphs stay "
        "the default",
    )
    p.add_argument(
        "--plugin-seed",
        type=int,
        default=0,
        help="seed baked into the gaussian_z plugin (0 <= seed < 2^31, default 0)",
    )
    p.add_argument(
        "--crm",
        action="append",
        metavar="DIR[@Q[,Q...]]",
        help="a compression restore module checkpoint (irn-train --stage crm) to export beside "
        "the model, repeatable: restore graphs for the JPEG quality it was trained on, or the "
        "qualities after @ (a quality-conditioned CRM gets one graph per quality)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    return p


def _crm_args(values: Sequence[str] | None) -> list[tuple[str, tuple[int, ...] | None]]:
    """``--crm DIR[@Q,...]`` values as (checkpoint, qualities or None); parsed before torch."""
    from irn_trt.train.recipe import parse_qualities

    out = []
    for value in values or ():
        path, sep, qualities = value.rpartition("@")
        if not sep:
            path, qualities = value, ""
        out.append((path, parse_qualities(qualities) if sep else None))
    return out


def _plugin_list(text: str) -> frozenset[str]:
    from irn_trt.plugins.onnx_rewrite import parse_plugin_list

    try:
        return parse_plugin_list(text)
    except IRNError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _summary(manifest_parity: dict) -> str:
    keys = [
        "down_fp32_vs_torch",
        "code_fp32_vs_torch",
        "up_fp32_vs_torch",
        "down_fp16_vs_fp32",
        "code_fp16_vs_fp32",
        "up_fp16_vs_fp32",
        "e2e_y_psnr_db",
    ]
    lines = [f"  {k}: {json.dumps(manifest_parity[k])}" for k in keys if k in manifest_parity]
    for q, numbers in manifest_parity.get("restore", {}).items():
        shown = {k: v for k, v in numbers.items() if k != "ops"}
        lines.append(f"  restore {q}: {json.dumps(shown)}")
    return "\n".join(lines)


@cli_entry("irn-export")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .api import ExportOptions, export_model

    name = _resolve_model_name(args.scale, args.model)
    precisions = ("fp32", "fp16") if args.precision == "both" else (args.precision,)
    options = ExportOptions(
        precisions=precisions,
        io=args.io,
        z_policy=args.z,
        temperature=args.temperature,
        measure_memory=args.measure_memory,
    )
    options.validate()
    if args.plugins and getattr(get_config(name), "latent_code", None) is not None:
        raise IRNError(
            f"--plugins: {name}'s graphs (a side code beside the LR) have no plugin variants"
        )
    crm_args = _crm_args(args.crm)
    if crm_args and args.plugins:
        raise IRNError("--plugins variants of restore (--crm) graphs are not supported yet")
    if args.plugins:
        from irn_trt.plugins.export_variants import check_plugin_request

        # Models without Haar levels (IRN_LD, FGRN) have no stages of that kind.
        stages = getattr(get_config(name), "stages", ())
        has_haar = any(st.downsampler == "haar" for st in stages)
        check_plugin_request(args.plugins, args.io, args.z, has_haar=has_haar)
    model, sha = _load(args, name)
    from .crm_export import restore_model_from_checkpoint

    restorers = [restore_model_from_checkpoint(path, qs) for path, qs in crm_args]
    out = Path(args.out) if args.out else export_root() / model.config.name
    images = _verify_images(args.verify_image, args.verify_size, args.quiet) if args.verify else []
    # Trained weights: measure the effective halo (default tile overlap) on the first
    # verification image, uncropped (random weights keep the exact halo).
    halo_images = [] if args.random_init else [_verify_images(args.verify_image, 0, True)[0][1]]
    manifest = export_model(
        model,
        out,
        options=options,
        checkpoint_sha256=sha,
        verify_images=images,
        halo_images=halo_images,
        progress=not args.quiet,
        restorers=restorers,
    )
    if args.plugins:
        from irn_trt.plugins.export_variants import add_plugin_variants
        from irn_trt.runtime.manifest import write_manifest

        manifest = add_plugin_variants(out, manifest, args.plugins, seed=args.plugin_seed)
        write_manifest(out, manifest)
    if not args.quiet:
        files = ", ".join(g.file for g in manifest.graphs)
        halo = f"halo {manifest.halo} LR px"
        if manifest.effective_halo is not None:
            halo += f", effective {manifest.overlap_halo} LR px (default tile overlap)"
        print(f"wrote {out}/: {files}, manifest.json ({halo})")
        if manifest.peak_bytes_per_hr_px is not None:
            peak = manifest.peak_bytes_per_hr_px
            print(
                f"  peak memory on ort-cpu: {peak['down']} B (down) / {peak['up']} B (up) "
                "per HR px (plans the CPU tiles)"
            )
        for info in manifest.restore:
            qs = ", ".join(str(q) for q in info.qualities)
            eff = f", effective {info.overlap_halo}" if info.effective_halo else ""
            print(f"  CRM {info.model} for JPEG quality {qs}: halo {info.halo} LR px{eff}")
        if manifest.parity.get("images"):
            print(_summary(manifest.parity))
    return 0


if __name__ == "__main__":
    sys.exit(main())
