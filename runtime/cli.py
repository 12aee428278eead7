"""``irn-trt-run``: downscale / upscale / round-trip images with an exported IRN (torch-free).

A batch is planned before any inference (``runtime/batch.py``): every output
path is known, collisions are resolved by a fixed naming rule or refused, and
no file is replaced unless the user named it or passed ``--overwrite``. Then
each file is read, rescaled and written atomically; one bad file becomes one
error line and the batch goes on; the summary (and ``--json``) always covers
what ran.
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .api import PRECISIONS, Rescaler, memory_budget_summary, tile_summary
from .atomic import json_text, write_text_atomic
from .backends import backend_names
from .batch import OUTPUT_SUFFIXES, BatchPlan, PlannedJob, Source, plan_batch
from .codecs import LRFormat, parse_lr_format
from .errors import IRNError, cli_entry
from .image_io import (
    IMAGE_SUFFIXES,
    ImageData,
    list_images,
    output_format,
    probe_image,
    read_image,
    write_image,
)
from .memory import parse_memory, peak_rss_bytes
from .metrics import SSIM_MIN_SIDE, rgb_quality, y_quality
from .model_store import DEFAULT_MODEL, MODELS_ENV
from .options import add_engine_arguments, engine_options_from_args
from .pngmeta import KEY_PREFIX, LRMetadata
from .scales import format_scale

__all__ = ["main", "build_parser", "overlap_arg", "peak_rss_mb", "process_age_s", "Runner"]

PROG = "irn-trt-run"
MODES = ("auto", "down", "up", "roundtrip")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (:func:`.memory.peak_rss_bytes`)."""
    return peak_rss_bytes() / (1 << 20)


def process_age_s() -> float | None:
    """Seconds since this process started (interpreter start-up included), from Linux's
    ``/proc/self/stat`` (10 ms resolution); None where there is no ``/proc``."""
    try:
        # Field 22, starttime, in clock ticks after boot; the fields after the command
        # name (which may hold spaces and parentheses) start at field 3.
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):  # no /proc, no CLOCK_BOOTTIME
        return None


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
    skipped: bool = False
    #: The LR file written (down, roundtrip) or read (up): its size in bytes and its bits
    #: per pixel of the HR image (8 * bytes / (HR width * HR height)).
    lr_bytes: int | None = None
    lr_bits_per_hr_pixel: float | None = None
    #: How the LR file is compressed (``ImageData.lr_codec``: format, lossless, JPEG quality).
    lr_codec: dict | None = None


#: What down / up do, per task of the model (its manifest's ``task``), in messages and JSON.
VERBS: dict[str, dict[str, str]] = {
    "rescale": {"down": "downscale", "up": "upscale"},
    "decolorize": {"down": "decolorize", "up": "colorize"},
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Rescale images with an exported IRN model. Mode auto upscales LR files "
        "made by irn-trt and downscales anything else; roundtrip writes both and reports "
        "PSNR/SSIM against the input. The batch is planned first: output names never collide "
        "and no existing file is replaced unless you named it or pass --overwrite. Written "
        "paths are printed on stdout (or listed in --json).",
        epilog="examples:\n"
        "  irn-trt-run photo.jpg -o out/                 # -> out/photo_lr.png (x4 smaller)\n"
        "  irn-trt-run out/photo_lr.png -o out/          # -> out/photo_hr.png (original size)\n"
        "  irn-trt-run 'shots/*.png' --mode roundtrip --backend ort-cpu --json -\n"
        "  irn-trt-run big.jpg --model irn_x2 --tile 1024 --overlap 64 --precision fp32\n"
        "  irn-trt-run photo.jpg --backend trt --tile 768x512 --batch 2 --cache-dir /data/engines"
        "\n                                               # engines of irn-build, same flags\n"
        "  irn-trt-run photo.jpg --scale 2.5 -o out/     # irn_x3 (else irn_x4) + bicubic\n"
        "  irn-trt-run photo.jpg --model irn_color -o out/  # decolorize -> out/photo_gray.png\n"
        "  irn-trt-run photo.jpg --server http://127.0.0.1:8000 -o out/   # on an irn-serve\n"
        "  irn-trt-run photo.jpg --lr-format webp-lossless -o out/   # -> out/photo_lr.webp\n"
        "  irn-trt-run photo.jpg --lr-format jpeg:90 -o out/  # -> out/photo_lr.jpg (lossy: up "
        "loses quality)\n"
        "\n"
        "models with a side code (irn_m_*): the LR PNG carries it in a private chunk (irLC);"
        "\nan LR without it upscales with the neutral code and a warning.\n"
        "models that decolorize (irn_color): down = decolorize (an 8-bit grey PNG), up = "
        "colorize;\noutputs <stem>_gray.png, <stem>_color.png, <stem>_roundtrip.png "
        "(roundtrip PSNR/SSIM in RGB).\n"
        "output names: <stem>_lr.png (.webp, .jpg, .jxl with --lr-format), <stem>_hr.png "
        "(a trailing _lr dropped), "
        "<stem>_roundtrip.png;\n"
        "files found in an input folder keep their sub-folder; inputs from different folders "
        "that\nwould share a name keep their folders; same stem, other extension: "
        "pic.jpg_lr.png.\n"
        "model search path (--model): $IRN_TRT_MODELS, the checkout's build/, "
        "~/.local/share/irn-trt/models",
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
    model = p.add_mutually_exclusive_group()
    model.add_argument(
        "--model",
        help=f"exported model to use, found in the model search path (default: {DEFAULT_MODEL}; "
        f"${MODELS_ENV} adds folders)",
    )
    model.add_argument("--model-dir", type=Path, help="an irn-export output directory")
    p.add_argument(
        "--scale",
        type=float,
        help="downscale factor in (1, 8], e.g. 2.5: without --model, the exported irn_x<n> of the "
        "nearest integer n >= it runs, with a bicubic resize around it for fractional scales "
        "(default: the model's own scale; up always follows the LR's metadata)",
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
    p.add_argument(
        "--overlap",
        help="tile overlap in HR pixels, or 'exact' for the full receptive field (default: the "
        "manifest's effective halo, where a tile edge changes no output byte)",
    )
    p.add_argument(
        "--no-tile", action="store_true", help="run whole images (memory grows with size)"
    )
    p.add_argument(
        "--alpha-code",
        choices=["chunk", "png-alpha"],
        default="chunk",
        help="IRN-A models: keep the LR's alpha code in a private PNG chunk (default: the LR "
        "looks like the picture in any viewer) or as the PNG's alpha channel (the paper's "
        "form: viewers show it half transparent)",
    )
    p.add_argument(
        "--lr-format",
        type=_lr_format_arg,
        default=LRFormat("png"),
        metavar="FORMAT",
        help="how the LR file is stored: png (default), webp-lossless, jpeg:Q or webp:Q "
        "(Q 1..100: lossy, up then loses quality; without a compression-restore graph in the "
        "model directory it only warns), jxl-lossless (needs pillow-jxl-plugin, extra jxl). "
        "The irn-trt metadata travels in every format (PNG text, else XMP); JPEG cannot "
        "hold an alpha channel",
    )
    p.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="CPU backends: peak memory to plan tiles for, e.g. 2G or 800M (default: a quarter "
        "of the RAM, at most 3G); images that fit run whole",
    )
    p.add_argument("--threads", type=int, help="CPU threads for CPU backends")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument(
        "--overwrite", action="store_true", help="replace output files that already exist"
    )
    existing.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip inputs whose outputs all exist already (resume a batch)",
    )
    p.add_argument("--json", metavar="PATH", help="write a JSON summary to PATH ('-' = stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines")
    p.add_argument(
        "--server",
        metavar="URL",
        help="run on an irn-serve at URL (http://HOST:PORT or grpc://HOST:PORT) instead of "
        "here: same outputs; --model picks the served model, --tile the square tile of images "
        "too large for one 4 MiB message (irn_trt.runtime.client)",
    )
    add_engine_arguments(p)
    return p


def _lr_format_arg(text: str) -> LRFormat:
    try:
        return parse_lr_format(text)
    except IRNError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--lr-format ")) from None


# --- planning -----------------------------------------------------------------------------


def _find_sources(
    inputs: Sequence[str], out_dir: Path
) -> tuple[list[tuple[Path, Path | None]], list[ItemResult]]:
    """Files, folders and globs -> (file, folder it was found in); misses become failed items.

    A folder scan leaves out what lies under the output folder (earlier outputs
    are not inputs) and a file named twice is run once.
    """
    found: list[tuple[Path, Path | None]] = []
    failed: list[ItemResult] = []
    out_resolved = out_dir.resolve()
    seen: set[Path] = set()

    def add(path: Path, root: Path | None) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append((path, root))

    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            below = out_resolved != path.resolve()  # an output folder inside the input folder
            for f in list_images(path):
                if not (below and f.resolve().is_relative_to(out_resolved)):
                    add(f, path)
        elif path.exists():
            add(path, None)
        elif glob.has_magic(raw):
            matches = sorted(Path(m) for m in glob.glob(raw, recursive=True) if Path(m).is_file())
            if not matches:
                failed.append(ItemResult(raw, error=f"{raw}: no files match"))
            for m in matches:
                add(m, None)
        else:
            failed.append(ItemResult(raw, error=f"{raw}: no such file or folder"))
    if not found and not failed:
        raise IRNError(f"no image files in {', '.join(inputs)} ({', '.join(IMAGE_SUFFIXES)})")
    return found, failed


def _resolve_mode(path: Path, requested: str, scale: float, task: str = "rescale") -> str:
    """The mode one file runs in, from its header alone (no decoding); one-line errors."""
    header = probe_image(path)
    down, up = VERBS[task]["down"], VERBS[task]["up"]
    lr_suffix = OUTPUT_SUFFIXES[task]["lr"]
    mode = requested
    if requested == "auto":
        if any(k.startswith(KEY_PREFIX) for k in header.text):
            try:
                LRMetadata.from_text(header.text)
            except IRNError as exc:
                raise IRNError(f"{exc}: pass --mode down to {down} it as a plain image") from None
            mode = "up"
        elif path.stem.endswith(lr_suffix):
            raise IRNError(
                f"named like an irn-trt output ({lr_suffix}) but carries no irn-trt metadata "
                f"(stripped by another tool?): pass --mode up to {up} it anyway, or --mode "
                f"down to {down} it"
            )
        else:
            mode = "down"
    w, h = header.size
    if mode != "up" and min(w, h) < scale:
        need = math.ceil(scale)
        raise IRNError(
            f"{w}x{h} is too small to downscale (at least {need}x{need} at x{format_scale(scale)})"
        )
    return mode


def _check_writable_folder(folder: Path) -> str | None:
    """None if files can be created in ``folder`` (created later if missing), else why not."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return f"cannot create folder {folder}"
        probe = probe.parent
    if not probe.is_dir():
        return f"cannot create folder {folder}: {probe} is a file"
    try:  # a real probe: permissions, read-only file systems, ACLs all show here
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        return f"cannot write in folder {probe} ({exc.strerror or exc})"
    return None


def _check_json_target(target: str) -> Path | None:
    if target == "-":
        return None
    path = Path(target)
    if path.is_dir():
        raise IRNError(f"--json {target} is a folder; give a file path (or - for stdout)")
    problem = _check_writable_folder(path.parent)
    if problem:
        raise IRNError(f"--json {target}: {problem}")
    return path


def _plan(
    args: argparse.Namespace, scale: float, json_path: Path | None, task: str = "rescale"
) -> tuple[BatchPlan, list[ItemResult]]:
    single_file_out = args.output.suffix.lower() in IMAGE_SUFFIXES
    out_dir = args.output.parent if single_file_out else args.output
    found, failed = _find_sources(args.inputs, out_dir)
    if single_file_out:
        if len(found) + len(failed) != 1:
            raise IRNError(
                f"-o {args.output} names a file but there are {len(found) + len(failed)} "
                f"inputs; give a folder"
            )
        output_format(args.output)
    sources: list[Source] = []
    for path, root in found:
        try:
            sources.append(Source(path, _resolve_mode(path, args.mode, scale, task), root))
        except IRNError as exc:
            failed.append(ItemResult(str(path), error=_with_path(path, exc)))
    lr_named = single_file_out and sources and sources[0].mode == "down"
    fmt: LRFormat = args.lr_format
    if lr_named and not fmt.accepts_suffix(args.output.suffix):
        raise IRNError(
            f"-o {args.output}: an LR in --lr-format {fmt.spec} must be named *{fmt.extension}"
            + (" (or pass --lr-format for another format)" if fmt.name == "png" else "")
        )
    reserved = {str(json_path): "--json summary"} if json_path else {}
    plan = plan_batch(
        sources,
        out_dir,
        args.output if single_file_out and sources else None,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
        reserved=reserved,
        task=task,
        lr_extension=fmt.extension,
    )
    folders = sorted({p.parent for job in plan.jobs for p in job.outputs.values()})
    for folder in folders:
        problem = _check_writable_folder(folder)
        if problem:
            plan.conflicts.append(f"output: {problem}")
    return plan, failed


def _with_path(path: Path | str, exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, (IRNError, MemoryError)):
        text = f"{type(exc).__name__}: {text}"  # an unexpected failure: say what kind
    if isinstance(exc, MemoryError):
        text = "out of memory (try a smaller --tile)"
    return text if text.startswith(str(path)) else f"{path}: {text}"


# --- running ------------------------------------------------------------------------------


class Runner:
    """Runs planned jobs one by one with one Rescaler; one failed file never stops the batch."""

    def __init__(
        self,
        rescaler: Rescaler,
        info: Callable[[str], None],
        warn: Callable[[str], None],
        progress: bool,
        lr_format: LRFormat | None = None,
    ) -> None:
        self.rescaler = rescaler
        self.info = info
        self.warn = warn
        self.progress = progress
        self.lr_format = lr_format or LRFormat("png")

    def _notes(self, item: ItemResult, image: ImageData) -> None:
        for note in image.notes:
            if note not in item.warnings:
                item.warnings.append(note)
                self.warn(f"{item.input}: {note}")

    def _rescale(self, direction: str, image: ImageData, item: ItemResult) -> ImageData:
        r = self.rescaler
        h, w = image.rgb.shape[:2]
        n = r.count_tiles(h, w, direction)
        verb = VERBS[r.manifest.task][direction]
        bar = _bar(self.progress, total=n, desc=verb, unit="tile", leave=False)
        with bar:
            if direction == "down":
                out = r.downscale(image, on_tile=bar.update)
                item.megapixels += h * w / 1e6
            else:
                out = r.upscale(image, on_tile=bar.update)
                item.megapixels += out.rgb.shape[0] * out.rgb.shape[1] / 1e6
        self._notes(item, out)
        return out

    def _write(self, item: ItemResult, path: Path, image: ImageData) -> None:
        write_image(path, image)
        item.outputs.append(str(path))

    def _write_lr(
        self, item: ItemResult, path: Path, lr: ImageData, hr_size: tuple[int, int]
    ) -> None:
        write_image(path, lr, self.lr_format)
        item.outputs.append(str(path))
        _lr_size(item, path, hr_size)

    def _check_lr_format(self, img: ImageData) -> None:
        """Refuse, before any inference, an image the LR format cannot hold."""
        fmt = self.lr_format
        if img.alpha is not None and not fmt.holds_alpha:
            raise IRNError(
                f"has an alpha channel, which a {fmt.spec} LR cannot hold: use --lr-format "
                "png, webp-lossless or webp:Q"
            )

    def run(self, job: PlannedJob) -> ItemResult:
        src = job.source.path
        item = ItemResult(str(src), mode=job.source.mode)
        t0 = time.perf_counter()
        tiles0 = self.rescaler.tiles_run
        try:
            img = read_image(src)
            item.size = img.size
            self._notes(item, img)
            if job.source.mode != "up":
                self._check_lr_format(img)
            if job.source.mode == "down":
                lr = self._rescale("down", img, item)
                self._write_lr(item, job.outputs["lr"], lr, img.size)
            elif job.source.mode == "up":
                item.lr_codec = img.lr_codec
                hr = self._rescale("up", img, item)
                self._write(item, job.outputs["hr"], hr)
                _lr_size(item, src, hr.size)
            else:
                lr = self._rescale("down", img, item)
                self._write_lr(item, job.outputs["lr"], lr, img.size)
                if self.lr_format.name != "png":  # up what was stored, not what was coded
                    lr = read_image(job.outputs["lr"])
                    item.lr_codec = lr.lr_codec
                hr = self._rescale("up", lr, item)
                self._write(item, job.outputs["roundtrip"], hr)
                if self.rescaler.manifest.task == "decolorize":  # IRN_color: RGB, no border
                    metric = "RGB"
                    item.psnr, item.ssim = rgb_quality(hr.rgb, img.rgb)
                else:
                    metric = "Y"
                    s = math.ceil(self.rescaler.output_scale)  # the papers' border: the scale
                    border = s if min(img.size) > 2 * s else 0
                    item.psnr, item.ssim = y_quality(hr.rgb, img.rgb, border)
                if item.ssim is None:
                    note = f"SSIM not reported: under {SSIM_MIN_SIDE} px a side (its window)"
                    item.warnings.append(note)
                    self.warn(f"{src}: {note}")
                ssim = "n/a" if item.ssim is None else f"{item.ssim:.4f}"
                self.info(f"{src}: round trip {metric}-PSNR {item.psnr:.2f} dB, SSIM {ssim}")
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # any failure of one file: one line, and the batch goes on
            item.error = _with_path(src, exc)
        item.seconds = time.perf_counter() - t0
        item.tiles = self.rescaler.tiles_run - tiles0
        return item


def _lr_size(item: ItemResult, lr_path: Path, hr_size: tuple[int, int]) -> None:
    """The LR file's bytes and bits per HR pixel into ``item``."""
    item.lr_bytes = lr_path.stat().st_size
    item.lr_bits_per_hr_pixel = round(8.0 * item.lr_bytes / (hr_size[0] * hr_size[1]), 6)


def _startup_s(rescaler: Rescaler | None, ready_at: float | None) -> float | None:
    """Process start to the first graph ready to run: ``ready_at`` (process age when
    ``Rescaler.load`` returned) plus the first graph's load; None if none was loaded."""
    loads = getattr(rescaler, "load_seconds", None)  # a server client loads nothing here
    if ready_at is None or not loads:
        return None
    return round(ready_at + next(iter(loads.values())), 3)


def _summary(
    rescaler: Rescaler | None,
    items: list[ItemResult],
    seconds: float,
    ready_at: float | None = None,
) -> dict:
    mp = sum(i.megapixels for i in items)
    sel = rescaler.selection if rescaler is not None else None
    return {
        "backend": sel.backend if sel else None,
        "precision": sel.precision if sel else None,
        "backend_reason": sel.describe() if sel else None,
        "model": rescaler.manifest.model if rescaler else None,
        "task": rescaler.manifest.task if rescaler else None,
        "operations": VERBS[rescaler.manifest.task] if rescaler else None,
        "model_dir": str(rescaler.model_dir) if rescaler else None,
        "scale": rescaler.output_scale if rescaler else None,
        "tile": tile_summary(rescaler) if rescaler else None,
        "overlap": rescaler.overlap_lr * rescaler.scale if rescaler else None,
        "max_memory_mb": memory_budget_summary(rescaler),
        "files": len(items),
        "failed": sum(1 for i in items if i.error),
        "skipped": sum(1 for i in items if i.skipped),
        "outputs": [o for i in items for o in i.outputs],
        "tiles": sum(i.tiles for i in items),
        "seconds": round(seconds, 3),
        "startup_s": _startup_s(rescaler, ready_at),
        "model_load_s": {k: round(v, 3) for k, v in getattr(rescaler, "load_seconds", {}).items()},
        "model_from_cache": dict(getattr(rescaler, "loaded_from_cache", {})),
        "megapixels": round(mp, 4),
        "megapixels_per_s": round(mp / seconds, 4) if seconds > 0 else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "items": [asdict(i) for i in items],
    }


@cli_entry(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = not args.quiet and sys.stderr.isatty()

    def info(msg: str) -> None:
        if not args.quiet:
            _stderr_line(f"{PROG}: {msg}")

    def warn(msg: str) -> None:
        _stderr_line(f"{PROG}: warning: {msg}")

    def error(msg: str) -> None:
        _stderr_line(f"{PROG}: error: {msg}")

    json_path = _check_json_target(args.json) if args.json else None
    if args.server:
        from .client import connect_for_cli

        rescaler = connect_for_cli(args, info)
        return _run_and_close(args, rescaler, json_path, info, warn, error, progress)
    rescaler = Rescaler.load(
        args.model_dir,
        model=args.model,
        scale=args.scale,
        backend=args.backend,
        precision=args.precision,
        overlap=overlap_arg(args.overlap),
        max_memory=parse_memory(args.max_memory) if args.max_memory is not None else None,
        alpha_code=args.alpha_code,
        no_tile=args.no_tile,
        threads=args.threads,
        log=info,
        options=engine_options_from_args(args, prog=PROG),
    )
    ready_at = process_age_s()  # imports, model lookup, graph checks, backend selection
    return _run_and_close(args, rescaler, json_path, info, warn, error, progress, ready_at)


def _run_and_close(
    args: argparse.Namespace,
    rescaler: Rescaler,
    json_path: Path | None,
    info: Callable[[str], None],
    warn: Callable[[str], None],
    error: Callable[[str], None],
    progress: bool,
    ready_at: float | None = None,
) -> int:
    try:
        return _run_batch(args, rescaler, json_path, info, warn, error, progress, ready_at)
    finally:  # sessions, engines and GPU buffers are released on every way out
        try:
            rescaler.close()
        except Exception as exc:  # noqa: BLE001 - the results stand; say what went wrong
            warn(f"releasing the backend failed: {exc}")


def _run_batch(
    args: argparse.Namespace,
    rescaler: Rescaler,
    json_path: Path | None,
    info: Callable[[str], None],
    warn: Callable[[str], None],
    error: Callable[[str], None],
    progress: bool,
    ready_at: float | None = None,
) -> int:
    json_to_stdout = args.json == "-"
    _check_model_lr_format(rescaler, args.lr_format)
    plan, items = _plan(args, rescaler.output_scale, json_path, rescaler.manifest.task)
    if plan.conflicts:
        for line in plan.conflicts:
            error(line)
        raise IRNError(
            f"refused: {len(plan.conflicts)} output problem(s) above; nothing was run or written"
        )
    for item in items:  # inputs that matched nothing or cannot run
        error(item.error or "")
    for job in plan.skipped:
        items.append(ItemResult(str(job.source.path), mode=job.source.mode, skipped=True))
        info(f"{job.source.path}: outputs exist, skipped")
    runner = Runner(rescaler, info, warn, progress, args.lr_format)
    t0 = time.perf_counter()
    interrupted = False
    try:
        no_files_bar = not progress or len(plan.jobs) < 2
        for job in _bar(not no_files_bar, plan.jobs, desc="files", unit="file"):
            item = runner.run(job)
            items.append(item)
            if item.error:
                error(item.error)
            elif not json_to_stdout:
                for path in item.outputs:
                    print(path, flush=True)
    except KeyboardInterrupt:
        interrupted = True
    seconds = time.perf_counter() - t0
    summary = _summary(rescaler, items, seconds, ready_at)
    summary["lr_format"] = args.lr_format.spec
    summary["interrupted"] = interrupted
    ok = summary["files"] - summary["failed"] - summary["skipped"]
    info(
        f"{ok}/{summary['files']} files done"
        + (f", {summary['skipped']} skipped" if summary["skipped"] else "")
        + (f", {summary['failed']} failed" if summary["failed"] else "")
        + f", {summary['tiles']} tiles, {seconds:.1f} s, "
        f"{summary['megapixels_per_s'] or 0:.3f} MP/s, backend {summary['backend']} "
        f"{summary['precision']}, peak RSS {summary['peak_rss_mb']:.0f} MiB"
    )
    if args.json:
        text = json_text(summary)
        if json_to_stdout:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            try:
                write_text_atomic(json_path, text)
            except OSError as exc:
                error(f"--json {json_path}: cannot write ({exc.strerror or exc})")
                return 1
    if interrupted:
        raise KeyboardInterrupt
    return 1 if summary["failed"] else 0


def _check_model_lr_format(rescaler: Rescaler, fmt: LRFormat) -> None:
    """Refuse, before planning, an LR format that cannot hold this model's LR."""
    manifest = rescaler.manifest
    if fmt.name != "png" and manifest.lr_channels == 4:
        raise IRNError(
            f"{manifest.model}'s LR carries an alpha code in a PNG chunk: use --lr-format png"
        )
    if fmt.name != "png" and manifest.side_code("up") is not None:
        raise IRNError(
            f"{manifest.model}'s LR carries a latent code in a PNG chunk: use --lr-format png"
        )
    if manifest.task == "decolorize" and not fmt.holds_grey:
        raise IRNError(
            f"{manifest.model} writes a greyscale image, which WebP cannot store: use "
            "--lr-format png or jpeg:Q"
        )


def overlap_arg(text: str | None) -> int | str | None:
    """``--overlap``: None, ``"exact"`` or HR pixels (``irn-bench --tiles N@O`` too)."""
    if text is None or text == "exact":
        return text
    try:
        return int(text)
    except ValueError:
        raise IRNError(f"--overlap {text!r} must be 'exact' or a number of HR pixels") from None


class _NoBar:
    """What the runner uses of a disabled tqdm bar, without importing tqdm."""

    def __init__(self, iterable: Any = None) -> None:
        self.iterable = iterable

    def __iter__(self) -> Any:
        return iter(self.iterable)

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None


def _bar(enabled: bool, iterable: Any = None, **kwargs: Any) -> Any:
    """A tqdm progress bar, or (no terminal, --quiet) a stand-in: importing tqdm costs
    0.05-0.1 s of every run's start-up, and most runs show no bar."""
    if not enabled:
        return _NoBar(iterable)
    from tqdm import tqdm

    return tqdm(iterable, **kwargs)


def _stderr_line(text: str) -> None:
    """One line on stderr that does not tear a progress bar (there is none without tqdm)."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is None:
        print(text, file=sys.stderr)
    else:
        tqdm.tqdm.write(text, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
