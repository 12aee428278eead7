"""``irn-trt-run``: downscale / upscale / round-trip images with an exported IRN (torch-free)."""

from __future__ import annotations

import argparse
import glob
import json
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .api import DEFAULT_MODEL_DIR, PRECISIONS, Rescaler
from .atomic import write_text_atomic
from .backends import backend_names
from .errors import IRNError, cli_entry
from .image_io import IMAGE_SUFFIXES, ImageData, list_images, read_image, to_pil, write_image
from .memory import parse_memory
from .metrics import y_psnr_ssim_banded
from .pngmeta import LRMetadata

__all__ = ["main", "build_parser", "peak_rss_mb"]

PROG = "irn-trt-run"
MODES = ("auto", "down", "up", "roundtrip")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class Job:
    """One input file and where its outputs go."""

    src: Path
    out_dir: Path  # folder for derived names
    out_file: Path | None = None  # explicit output file (single input, -o FILE)


@dataclass
class ItemResult:
    input: str
    mode: str = ""
    outputs: list[str] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)
    tiles: int = 0
    seconds: float = 0.0
    megapixels: float = 0.0
    psnr: float | None = None
    ssim: float | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Rescale images with an exported IRN model directory. Mode auto upscales "
        "LR PNGs made by irn-trt and downscales anything else; roundtrip writes both and prints "
        "PSNR/SSIM against the input.",
        epilog="examples:\n"
        "  irn-trt-run photo.jpg -o out/                 # -> out/photo_lr.png (x4 smaller)\n"
        "  irn-trt-run out/photo_lr.png -o out/          # -> out/photo_hr.png (original size)\n"
        "  irn-trt-run 'shots/*.png' --mode roundtrip --backend ort-cpu --json -\n"
        "  irn-trt-run big.jpg --tile 1024 --overlap 64 --precision fp32",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("irn-out"),
        help="output folder (default: ./irn-out), or a file name for a single input",
    )
    p.add_argument("--mode", choices=MODES, default="auto", help="what to do (default: auto)")
    p.add_argument(
        "--model-dir",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help=f"model directory from irn-export (default: {DEFAULT_MODEL_DIR})",
    )
    p.add_argument(
        "--backend",
        choices=["auto", *backend_names()],
        default="auto",
        help="inference backend (default: auto = the fastest that works here)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="arithmetic precision (default: the backend's best validated one)",
    )
    p.add_argument("--tile", type=int, help="tile edge in HR pixels (multiple of the scale)")
    p.add_argument(
        "--overlap",
        help="tile overlap in HR pixels, or 'exact' for the full receptive field (default: the "
        "manifest's effective halo, where a tile edge changes no output byte)",
    )
    p.add_argument(
        "--no-tile", action="store_true", help="run whole images (memory grows with size)"
    )
    p.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="CPU backends: peak memory to plan tiles for, e.g. 2G or 800M (default: a quarter "
        "of the RAM, at most 3G); images that fit run whole",
    )
    p.add_argument("--threads", type=int, help="CPU threads for CPU backends")
    p.add_argument("--batch", type=int, help="tiles per backend call (default: backend's choice)")
    p.add_argument("--json", metavar="PATH", help="write a JSON summary to PATH ('-' = stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines")
    return p


def _expand(inputs: Sequence[str], output: Path) -> tuple[list[Job], list[ItemResult]]:
    """Files, folders and globs -> jobs; unmatched inputs become failed items."""
    jobs: list[Job] = []
    missing: list[ItemResult] = []
    single_file_out = output.suffix.lower() in IMAGE_SUFFIXES
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            for f in list_images(path):
                rel_parent = f.parent.relative_to(path)
                jobs.append(Job(f, output / rel_parent))
        elif path.exists():
            jobs.append(Job(path, output.parent if single_file_out else output))
        elif glob.has_magic(raw):
            matches = sorted(Path(m) for m in glob.glob(raw, recursive=True) if Path(m).is_file())
            if not matches:
                missing.append(ItemResult(raw, error=f"{raw}: no files match"))
            jobs.extend(Job(m, output.parent if single_file_out else output) for m in matches)
        else:
            missing.append(ItemResult(raw, error=f"{raw}: no such file or folder"))
    if single_file_out:
        if len(jobs) + len(missing) != 1:
            raise IRNError(
                f"-o {output} names a file but there are {len(jobs)} inputs; give a folder"
            )
        for job in jobs:
            job.out_file = output
    return jobs, missing


def _out_path(job: Job, kind: str) -> Path:
    """Output name for ``kind`` in lr/hr/roundtrip; never the input itself."""
    if job.out_file is not None and kind != "lr-roundtrip":
        path = job.out_file
    else:
        stem = job.src.stem
        if kind == "hr" and stem.endswith("_lr"):
            stem = stem[: -len("_lr")]
        suffix = {"lr": "_lr", "lr-roundtrip": "_lr", "hr": "_hr", "roundtrip": "_roundtrip"}[kind]
        path = job.out_dir / f"{stem}{suffix}.png"
    if path.resolve() == job.src.resolve():
        raise IRNError(f"{job.src}: output would overwrite the input; choose another -o")
    return path


class Runner:
    """Processes jobs one by one with one Rescaler; one failed file never stops the batch."""

    def __init__(self, rescaler: Rescaler, mode: str, quiet: bool) -> None:
        self.rescaler = rescaler
        self.mode = mode
        self.quiet = quiet

    def _warn(self, item: ItemResult, msg: str) -> None:
        item.warnings.append(msg)
        tqdm.write(f"{PROG}: warning: {item.input}: {msg}", file=sys.stderr)

    def _bar(self, total: int, desc: str) -> tqdm:
        return tqdm(total=total, desc=desc, unit="tile", leave=False, disable=self.quiet)

    def run(self, job: Job) -> ItemResult:
        item = ItemResult(str(job.src))
        t0 = time.perf_counter()
        tiles0 = self.rescaler.tiles_run
        try:
            img = read_image(job.src)
            for note in img.notes:
                self._warn(item, note)
            meta = LRMetadata.from_text(img.text, str(job.src))
            mode = self.mode if self.mode != "auto" else ("up" if meta is not None else "down")
            item.mode = mode
            item.size = img.size
            s = self.rescaler.scale
            if min(img.size) < s and mode != "up":
                raise IRNError(
                    f"{job.src}: {img.size[0]}x{img.size[1]} is too small to downscale "
                    f"(at least {s}x{s} at x{s})"
                )
            if mode == "down":
                self._down(job, img, item, "lr")
            elif mode == "up":
                self._up(job, img, meta, item)
            else:
                self._roundtrip(job, img, item)
        except IRNError as exc:
            item.error = str(exc) if str(exc).startswith(str(job.src)) else f"{job.src}: {exc}"
        except MemoryError:
            item.error = f"{job.src}: out of memory (try a smaller --tile)"
        item.seconds = time.perf_counter() - t0
        item.tiles = self.rescaler.tiles_run - tiles0
        return item

    def _down_array(self, img: ImageData, item: ItemResult) -> tuple[np.ndarray, np.ndarray | None]:
        r = self.rescaler
        if img.alpha is not None:
            self._warn(item, "alpha channel resized with a bicubic filter (IRN rescales RGB only)")
        src = img.rgb if img.alpha is None else np.dstack([img.rgb, img.alpha])
        n = r.count_tiles(img.rgb.shape[0], img.rgb.shape[1], "down")
        with self._bar(n, "down") as bar:
            out = r.downscale(src, on_tile=bar.update)
        item.megapixels += img.rgb.shape[0] * img.rgb.shape[1] / 1e6
        if img.alpha is None:
            return out, None
        return np.ascontiguousarray(out[:, :, :3]), np.ascontiguousarray(out[:, :, 3])

    def _down(
        self, job: Job, img: ImageData, item: ItemResult, kind: str
    ) -> tuple[np.ndarray, ...]:
        target = _out_path(job, kind)
        if target.suffix.lower() != ".png":
            raise IRNError(f"{target}: the LR must be a PNG (lossless, carries the metadata)")
        lr, alpha = self._down_array(img, item)
        meta = LRMetadata.for_model(self.rescaler.manifest, img.size, img.kind, alpha is not None)
        write_image(target, to_pil(lr, alpha, "rgb"), meta.to_pnginfo())
        item.outputs.append(str(target))
        return lr, alpha, meta

    def _up_array(
        self,
        lr: np.ndarray,
        alpha: np.ndarray | None,
        original_size: tuple[int, int] | None,
        item: ItemResult,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        r = self.rescaler
        src = lr if alpha is None else np.dstack([lr, alpha])
        n = r.count_tiles(lr.shape[0], lr.shape[1], "up")
        with self._bar(n, "up") as bar:
            out = r.upscale(src, original_size=original_size, on_tile=bar.update)
        item.megapixels += out.shape[0] * out.shape[1] / 1e6
        if alpha is None:
            return out, None
        return np.ascontiguousarray(out[:, :, :3]), np.ascontiguousarray(out[:, :, 3])

    def _up(self, job: Job, img: ImageData, meta: LRMetadata | None, item: ItemResult) -> None:
        kind = "rgb"
        original = None
        if meta is None:
            self._warn(
                item,
                "no irn-trt metadata: upscaling anyway, but IRN is not super-resolution "
                "(only LRs made by irn-trt's down reconstruct well)",
            )
            if img.alpha is not None:
                self._warn(
                    item, "alpha channel resized with a bicubic filter (IRN rescales RGB only)"
                )
        else:
            meta.check_model(self.rescaler.manifest, str(job.src))
            meta.check_lr_size(img.size, str(job.src))
            kind, original = meta.kind, meta.original_size
        hr, alpha = self._up_array(img.rgb, img.alpha, original, item)
        target = _out_path(job, "hr")
        write_image(target, to_pil(hr, alpha, kind))
        item.outputs.append(str(target))

    def _roundtrip(self, job: Job, img: ImageData, item: ItemResult) -> None:
        lr, alpha, meta = self._down(job, img, item, "lr-roundtrip")
        hr, hr_alpha = self._up_array(lr, alpha, meta.original_size, item)
        target = _out_path(job, "roundtrip")
        write_image(target, to_pil(hr, hr_alpha, img.kind))
        item.outputs.append(str(target))
        border = self.rescaler.scale if min(img.size) > 2 * self.rescaler.scale else 0
        # Banded: a full-image float64 SSIM would cost more memory than a tile.
        item.psnr, item.ssim = y_psnr_ssim_banded(hr, img.rgb, border)
        if not self.quiet:
            tqdm.write(f"{job.src}: round trip Y-PSNR {item.psnr:.2f} dB, SSIM {item.ssim:.4f}")


def _summary(rescaler: Rescaler | None, items: list[ItemResult], seconds: float) -> dict:
    mp = sum(i.megapixels for i in items)
    sel = rescaler.selection if rescaler is not None else None
    return {
        "backend": sel.backend if sel else None,
        "precision": sel.precision if sel else None,
        "backend_reason": sel.describe() if sel else None,
        "model": rescaler.manifest.model if rescaler else None,
        "tile": rescaler.tile_lr * rescaler.scale if rescaler and rescaler.tile_lr else None,
        "overlap": rescaler.overlap_lr * rescaler.scale if rescaler else None,
        "files": len(items),
        "failed": sum(1 for i in items if i.error),
        "tiles": sum(i.tiles for i in items),
        "seconds": round(seconds, 3),
        "megapixels": round(mp, 4),
        "megapixels_per_s": round(mp / seconds, 4) if seconds > 0 else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "items": [asdict(i) for i in items],
    }


def _overlap_arg(text: str | None) -> int | str | None:
    if text is None or text == "exact":
        return text
    try:
        return int(text)
    except ValueError:
        raise IRNError(f"--overlap {text!r} must be 'exact' or a number of HR pixels") from None


@cli_entry(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None and args.threads < 1:
        raise IRNError(f"--threads must be at least 1, got {args.threads}")
    if args.batch is not None and args.batch < 1:
        raise IRNError(f"--batch must be at least 1, got {args.batch}")
    jobs, items = _expand(args.inputs, args.output)

    def info(msg: str) -> None:
        if not args.quiet:
            print(f"{PROG}: {msg}", file=sys.stderr)

    rescaler = Rescaler.load(
        args.model_dir,
        backend=args.backend,
        precision=args.precision,
        tile=args.tile,
        overlap=_overlap_arg(args.overlap),
        no_tile=args.no_tile,
        threads=args.threads,
        batch=args.batch,
        log=info,
        max_memory=parse_memory(args.max_memory) if args.max_memory is not None else None,
    )
    runner = Runner(rescaler, args.mode, args.quiet)
    t0 = time.perf_counter()
    for item in items:  # inputs that matched nothing
        print(f"{PROG}: error: {item.error}", file=sys.stderr)
    for job in tqdm(jobs, desc="files", unit="file", disable=args.quiet or len(jobs) < 2):
        item = runner.run(job)
        if item.error:
            tqdm.write(f"{PROG}: error: {item.error}", file=sys.stderr)
        items.append(item)
    seconds = time.perf_counter() - t0
    summary = _summary(rescaler, items, seconds)
    ok = summary["files"] - summary["failed"]
    info(
        f"{ok}/{summary['files']} files, {summary['tiles']} tiles, {seconds:.1f} s, "
        f"{summary['megapixels_per_s'] or 0:.3f} MP/s, backend {summary['backend']} "
        f"{summary['precision']}, peak RSS {summary['peak_rss_mb']:.0f} MiB"
    )
    if args.json:
        text = json.dumps(summary, indent=2) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            write_text_atomic(args.json, text)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
