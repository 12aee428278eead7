"""``irn-doctor --gpu-check``: the GPU acceptance check, written as one JSON report.

On a machine with an NVIDIA GPU and a GPU install set (``irn-trt[gpu-cu12]`` or
``[gpu-cu13]``), for each checked configuration (default ``trt:fp16`` and ``trt:fp32``):

1. builds (or finds in the engine cache) the engines irn-trt-run uses by default, for
   the shipped x4 model (``build/irn_x4`` or the model search path; exported from
   ``weights/irn_x4`` to a temporary folder when none is found and torch is installed);
2. compares them with ONNX Runtime CPU running the same graph on centre crops of Set5
   (PSNR of the LR against the reference LR, of the HR upscaled from the reference LR
   against the reference HR, and the round trip's Y-PSNR against the original), whole
   crops on both sides so that tiling plays no part;
3. times downscale and upscale of 1080p and 4K frames through the public API with
   irn-trt-run's default tiles (median of ``--repeats`` runs after one warm-up).

Then it writes the plugin variants of the model's graphs
(``cmake_free_plugins/export_variants.py``) to a temporary copy and builds their
engines with ``irn-build --plugins``. Without a usable GPU backend it refuses in one line
before doing anything. CPU backends can be named with ``--configs`` (e.g.
``ov-cpu:fp32``), which runs the same pipeline without a GPU: the tests do that.
PSNR values are ``null`` when the two images are identical (infinite PSNR).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IRNError

__all__ = [
    "REPORT_FORMAT",
    "DEFAULT_CONFIGS",
    "PSNR_FLOOR_DB",
    "CheckOptions",
    "parse_configs",
    "parse_sizes",
    "refusal",
    "run_check",
    "run_from_args",
]

REPORT_FORMAT = "irn-trt-gpu-check/1"
DEFAULT_CONFIGS = "trt:fp16,trt:fp32"
REFERENCE_BACKEND = "ort-cpu"
#: Lowest PSNR accepted against ONNX Runtime CPU running the same graph: FP32 engines
#: agree to rounding, FP16 ones to FP16 noise (the bounds of tests/test_trt_gpu.py);
#: BF16 (OpenVINO's hint on the FP32 graph) has 8 mantissa bits.
PSNR_FLOOR_DB = {"fp32": 50.0, "fp16": 40.0, "bf16": 35.0}
#: Centre crops of the test images, HR pixels (smaller images are used whole).
CROP = 256
#: Tile of the plugin-variant engines (HR px): small, as only the build is checked.
PLUGIN_TILE = 512

Log = Callable[[str], None]


def _stderr_log(message: str) -> None:
    print(f"gpu-check: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class CheckOptions:
    """What ``--gpu-check`` runs (see ``irn-doctor --help``)."""

    configs: tuple[tuple[str, str], ...]
    sizes: tuple[tuple[int, int], ...]  # (W, H) frames to time
    model_dir: Path | None = None
    model: str | None = None
    images: Path | None = None
    repeats: int = 3
    plugins: bool = True
    time_limit: float = 450.0
    crop: int = CROP


def parse_configs(text: str) -> tuple[tuple[str, str], ...]:
    """``"trt:fp16,ov-cpu:bf16"`` -> ((backend, precision), ...), checked against the registry."""
    from .backends import get_spec

    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, sep, precision = item.partition(":")
        spec = get_spec(name)  # IRNError naming the choices for an unknown backend
        if not sep or precision not in spec.precisions:
            raise IRNError(
                f"--configs {item!r}: write backend:precision with a precision of {name} "
                f"({', '.join(spec.precisions)})"
            )
        out.append((name, precision))
    if not out:
        raise IRNError("--configs is empty")
    return tuple(out)


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``"1920x1080,3840x2160"`` (W x H) -> ((1920, 1080), (3840, 2160)); ``""``: none."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        parts = item.lower().split("x")
        try:
            w, h = (int(p) for p in parts)
        except ValueError:
            raise IRNError(f"--sizes {item!r}: expected WxH, e.g. 1920x1080") from None
        if w <= 0 or h <= 0:
            raise IRNError(f"--sizes {item!r}: sizes must be positive")
        out.append((w, h))
    return tuple(out)


def refusal(configs: Sequence[tuple[str, str]]) -> str | None:
    """One line when a requested GPU backend cannot run here (None: go ahead)."""
    from .backends import candidates, get_spec

    for name in dict.fromkeys(n for n, _ in configs):
        if not get_spec(name).gpu:
            continue
        cand = candidates((name,))[0]
        if cand.cls is None:
            return (
                f"--gpu-check needs an NVIDIA GPU and a GPU install set "
                f"(pip install 'irn-trt[gpu-cu12]' or '[gpu-cu13]'): {name}: {cand.reason}"
            )
    return None


def _db(value: float) -> float | None:
    """PSNR for JSON: rounded, ``None`` for identical images (infinite PSNR)."""
    return None if math.isinf(value) else round(float(value), 2)


def _min_db(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return min(finite) if finite else None


def _close(rescaler: Any) -> None:
    """Release a Rescaler's backends (its ``close()`` where it has one)."""
    close = getattr(rescaler, "close", None)
    if callable(close):
        close()
        return
    for be in list(getattr(rescaler, "_backends", {}).values()):
        be_close = getattr(be, "close", None)
        if callable(be_close):
            be_close()


def _default_images() -> Path | None:
    """Set5 next to the checkout (``../shared/data/eval/Set5``), else the checkout's examples."""
    repo = Path(__file__).resolve().parents[1]
    for folder in (repo.parent / "shared" / "data" / "eval" / "Set5", repo / "examples"):
        if folder.is_dir():
            return folder
    return None


def load_crops(
    folder: Path | None, multiple: int, crop: int = CROP
) -> tuple[str, list[tuple[str, np.ndarray]]]:
    """(source, [(name, HxWx3 uint8)]): centre crops of at most ``crop`` px, multiples of
    ``multiple`` (the model's tile multiple)."""
    from .image_io import list_images, read_rgb

    folder = folder or _default_images()
    crops = []
    if folder is not None:
        if not folder.is_dir():
            raise IRNError(f"--images {folder}: not a folder")
        for path in list_images(folder):
            img = read_rgb(path)
            h = min(crop, img.shape[0]) // multiple * multiple
            w = min(crop, img.shape[1]) // multiple * multiple
            if h == 0 or w == 0:
                continue
            top, left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
            crops.append((path.name, np.ascontiguousarray(img[top : top + h, left : left + w])))
    if crops:
        return str(folder), crops
    # No image at all (an install without the checkout): a smooth synthetic card.
    edge = max(multiple, crop // multiple * multiple)
    y, x = np.mgrid[0:edge, 0:edge].astype(np.float32) / edge
    card = np.stack([x, y, 0.5 + 0.5 * np.sin(6.283 * (x + y))], axis=-1)
    return "synthetic", [("synthetic.png", (card * 255).round().astype(np.uint8))]


def frame_from(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """A ``height`` x ``width`` frame of real content: ``img`` mirrored and repeated."""
    tile = np.concatenate([img, img[::-1]], axis=0)
    tile = np.concatenate([tile, tile[:, ::-1]], axis=1)
    reps = (math.ceil(height / tile.shape[0]), math.ceil(width / tile.shape[1]), 1)
    return np.ascontiguousarray(np.tile(tile, reps)[:height, :width])


def resolve_model(opts: CheckOptions, workdir: Path, log: Log) -> tuple[Path, str]:
    """(model directory, how it was found): given, search path, or exported here."""
    from .model_store import DEFAULT_MODEL, find_model_dir

    if opts.model_dir is not None:
        return opts.model_dir, "given"
    name = opts.model or DEFAULT_MODEL
    try:
        return find_model_dir(name), "search path"
    except IRNError as exc:
        if name != DEFAULT_MODEL:
            raise
        missing = str(exc)
    try:
        from irn_trt.export.cli import main as export_main
    except ImportError as exc:
        raise IRNError(
            f"{missing}; exporting it here needs torch (pip install 'irn-trt[train]'): {exc}"
        ) from None
    out = workdir / DEFAULT_MODEL
    log(f"no exported {DEFAULT_MODEL}: exporting the shipped weights to {out}")
    if export_main(["--scale", "4", "--out", str(out), "--quiet"]) != 0:
        raise IRNError(f"irn-export of the shipped {DEFAULT_MODEL} failed (see above)")
    return out, "exported"


class _Clock:
    def __init__(self, limit: float) -> None:
        self.start = time.perf_counter()
        self.limit = limit

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def over(self) -> bool:
        return self.elapsed() > self.limit


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _accuracy(
    rescaler: Any,
    reference: Any,
    crops: Sequence[tuple[str, np.ndarray]],
    floor: float,
    scale: int,
) -> dict[str, Any]:
    """Per-crop PSNRs of ``rescaler`` against ``reference`` (both run whole crops)."""
    from .metrics import psnr, y_psnr_ssim

    rows = []
    for name, crop in crops:
        h, w = crop.shape[:2]
        ref_lr = reference.downscale(crop)
        ref_hr = reference.upscale(ref_lr, original_size=(w, h))
        lr = rescaler.downscale(crop)
        hr = rescaler.upscale(ref_lr, original_size=(w, h))  # same LR in: isolates up
        rt = rescaler.upscale(lr, original_size=(w, h))
        rows.append(
            {
                "name": name,
                "size": [w, h],
                "down_psnr_db": _db(psnr(lr, ref_lr)),
                "up_psnr_db": _db(psnr(hr, ref_hr)),
                "roundtrip_y_psnr_db": _db(y_psnr_ssim(rt, crop, border=scale)[0]),
                "reference_roundtrip_y_psnr_db": _db(y_psnr_ssim(ref_hr, crop, border=scale)[0]),
            }
        )
    low_down = _min_db([r["down_psnr_db"] for r in rows])
    low_up = _min_db([r["up_psnr_db"] for r in rows])
    ok = all(v is None or v >= floor for v in (low_down, low_up))
    return {
        "floor_db": floor,
        "min_down_psnr_db": low_down,
        "min_up_psnr_db": low_up,
        "ok": ok,
        "crops": rows,
    }


def _timing(
    rescaler: Any,
    frame_src: np.ndarray,
    sizes: Sequence[tuple[int, int]],
    repeats: int,
    clock: _Clock,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for w, h in sizes:
        label = f"{w}x{h}"
        if clock.over():
            rows.append({"size": label, "skipped": "time limit reached"})
            continue
        frame = frame_from(frame_src, w, h)
        lr = rescaler.downscale(frame)  # warm-up: first call at these tile shapes
        rescaler.upscale(lr, original_size=(w, h))
        downs, ups = [], []
        for _ in range(max(1, repeats)):
            lr, t = _timed(lambda frame=frame: rescaler.downscale(frame))
            downs.append(t)
            _, t = _timed(lambda lr=lr, size=(w, h): rescaler.upscale(lr, original_size=size))
            ups.append(t)
        down_s, up_s = statistics.median(downs), statistics.median(ups)
        mp = w * h / 1e6
        rows.append(
            {
                "size": label,
                "tiles_down": rescaler.count_tiles(h, w, "down"),
                # microseconds: a GPU runs these small frames in well under 0.1 ms
                "down_s": round(down_s, 6),
                "up_s": round(up_s, 6),
                "down_mp_per_s": round(mp / down_s, 2) if down_s > 0 else None,
                "up_mp_per_s": round(mp / up_s, 2) if up_s > 0 else None,
            }
        )
    return rows


def _check_config(
    model_dir: Path,
    backend: str,
    precision: str,
    crops: Sequence[tuple[str, np.ndarray]],
    opts: CheckOptions,
    clock: _Clock,
    log: Log,
) -> dict[str, Any]:
    from .api import Rescaler
    from .manifest import load_manifest

    row: dict[str, Any] = {
        "config": f"{backend}:{precision}",
        "backend": backend,
        "precision": precision,
        "ok": False,
        "error": None,
        "skipped": None,
        "first_call_s": None,
        "accuracy": None,
        "timing": [],
    }
    if clock.over():
        row["skipped"] = "time limit reached"
        return row
    scale = load_manifest(model_dir).scale
    ref_precision = "fp32" if precision == "bf16" else precision  # bf16 runs the fp32 graph
    rescaler = reference = tiled = None
    try:
        log(f"{row['config']}: loading (builds engines on a cache miss)")
        rescaler = Rescaler.load(model_dir, backend=backend, precision=precision, no_tile=True)
        reference = Rescaler.load(
            model_dir, backend=REFERENCE_BACKEND, precision=ref_precision, no_tile=True
        )
        first = crops[0][1]
        h, w = first.shape[:2]
        lr, t_down = _timed(lambda: rescaler.downscale(first))
        _, t_up = _timed(lambda: rescaler.upscale(lr, original_size=(w, h)))
        row["first_call_s"] = {"down": round(t_down, 2), "up": round(t_up, 2)}
        log(f"{row['config']}: comparing with {REFERENCE_BACKEND}:{ref_precision}")
        row["accuracy"] = _accuracy(
            rescaler, reference, crops, PSNR_FLOOR_DB.get(precision, 40.0), scale
        )
        _close(rescaler)
        _close(reference)
        rescaler = reference = None
        if opts.sizes:
            log(f"{row['config']}: timing {', '.join(f'{w}x{h}' for w, h in opts.sizes)}")
            tiled = Rescaler.load(model_dir, backend=backend, precision=precision)
            row["timing"] = _timing(tiled, first, opts.sizes, opts.repeats, clock)
        row["ok"] = bool(row["accuracy"]["ok"]) and not any("skipped" in t for t in row["timing"])
    except Exception as exc:  # noqa: BLE001 - one failing config must not hide the others
        text = str(exc).strip().splitlines()
        row["error"] = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    finally:
        for r in (rescaler, reference, tiled):
            if r is not None:
                with contextlib.suppress(Exception):
                    _close(r)
    return row


def _build_plugin_variants(model_dir: Path, workdir: Path, log: Log) -> dict[str, Any]:
    """Write the plugin graphs to a copy of the model and build their engines (irn-build)."""
    result: dict[str, Any] = {
        "families": [],
        "graphs": [],
        "tile": PLUGIN_TILE,
        "engines": [],
        "error": None,
        "skipped": None,
    }
    try:
        from irn_trt.plugins.export_variants import add_plugin_variants

        from .manifest import load_manifest, write_manifest
    except ImportError as exc:
        result["skipped"] = (
            f"writing plugin graphs needs onnx (pip install 'irn-trt[train]'): {exc}"
        )
        return result
    copy = workdir / "plugin_model"
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("*.plugins.onnx"))
    manifest = load_manifest(copy)
    variants = None
    errors = []
    for families in (("haar", "pack"), ("haar",)):  # pack needs uint8 I/O
        try:
            variants = add_plugin_variants(copy, manifest, families)
        except IRNError as exc:
            errors.append(str(exc))
            continue
        result["families"] = list(families)
        break
    if variants is None:
        result["error"] = "; ".join(errors)
        return result
    write_manifest(copy, variants)
    result["graphs"] = sorted(g.file for g in variants.graphs if g.plugins)
    from .backends.trt import trt_unavailable_reason

    reason = trt_unavailable_reason()
    if reason:
        result["skipped"] = f"cannot build TensorRT engines here: {reason}"
        return result
    from .build_cli import main as build_main

    log(f"plugin variants: building {len(result['graphs'])} engines ({PLUGIN_TILE} px tiles)")
    out, err = io.StringIO(), io.StringIO()
    argv = [str(copy), "--plugins", "--precision", "both", "--tile", str(PLUGIN_TILE)]
    argv += ["--cache-dir", str(workdir / "plugin_engines"), "--json", "--quiet"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = build_main(argv)
    if rc != 0:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        result["error"] = lines[-1] if lines else f"irn-build exited with {rc}"
        return result
    try:
        summary = json.loads(out.getvalue()[out.getvalue().index("{") :])
        result["engines"] = summary.get("engines", [])
    except ValueError:
        result["error"] = "irn-build --json printed no JSON summary"
    return result


def _environment() -> dict[str, Any]:
    from .doctor import collect

    full = collect()
    return {
        "irn_trt": full["irn_trt"],
        "python": full["python"],
        "libraries": {k: v.get("version") for k, v in full["libraries"].items()},
        "onnxruntime": {
            k: full["onnxruntime"].get(k)
            for k in ("version", "package", "cuda_version", "providers")
        },
        "cuda": full["cuda"],
        "gpus": full["gpus"],
        "install_problems": full["install"]["problems"],
    }


def run_check(opts: CheckOptions, log: Log = _stderr_log) -> dict[str, Any]:
    """Run the whole check; the report (never raises for a failing step: it records it)."""
    from .manifest import load_manifest

    clock = _Clock(opts.time_limit)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "ok": False,
        "seconds": None,
        "time_limit_s": opts.time_limit,
        "environment": _environment(),
        "model": None,
        "images": None,
        "reference": REFERENCE_BACKEND,
        "configs": [],
        "plugins": None,
        "problems": [],
    }
    with tempfile.TemporaryDirectory(prefix="irn-gpu-check-") as tmp:
        workdir = Path(tmp)
        model_dir, source = resolve_model(opts, workdir, log)
        manifest = load_manifest(model_dir)
        report["model"] = {
            "path": str(model_dir),
            "source": source,
            "model": manifest.model,
            "scale": manifest.scale,
            "graphs": [g.file for g in manifest.graphs],
        }
        images, crops = load_crops(opts.images, manifest.tile_multiple, opts.crop)
        report["images"] = {
            "source": images,
            "crops": [{"name": n, "size": [c.shape[1], c.shape[0]]} for n, c in crops],
        }
        for backend, precision in opts.configs:
            row = _check_config(model_dir, backend, precision, crops, opts, clock, log)
            report["configs"].append(row)
            if row["error"]:
                report["problems"].append(f"{row['config']}: {row['error']}")
            elif row["skipped"]:
                report["problems"].append(f"{row['config']}: skipped ({row['skipped']})")
            elif not row["ok"]:
                acc = row["accuracy"] or {}
                if not acc.get("ok", True):
                    report["problems"].append(
                        f"{row['config']}: PSNR against {REFERENCE_BACKEND} below "
                        f"{acc.get('floor_db')} dB (down {acc.get('min_down_psnr_db')}, "
                        f"up {acc.get('min_up_psnr_db')})"
                    )
                else:
                    report["problems"].append(f"{row['config']}: timing incomplete (time limit)")
        if opts.plugins:
            if clock.over():
                report["plugins"] = {"skipped": "time limit reached", "error": None}
            else:
                try:
                    report["plugins"] = _build_plugin_variants(model_dir, workdir, log)
                except Exception as exc:  # noqa: BLE001 - recorded, like a failing config
                    text = str(exc).strip().splitlines()
                    err = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
                    report["plugins"] = {"error": err, "skipped": None}
            plug = report["plugins"]
            if plug.get("error"):
                report["problems"].append(f"plugin variants: {plug['error']}")
            elif plug.get("skipped") == "time limit reached":
                report["problems"].append("plugin variants: skipped (time limit reached)")
    report["seconds"] = round(clock.elapsed(), 1)
    report["ok"] = not report["problems"]
    return report


def _summary_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for row in report["configs"]:
        if row["error"] or row["skipped"]:
            lines.append(f"{row['config']}: {row['error'] or 'skipped: ' + row['skipped']}")
            continue
        acc = row["accuracy"]
        text = (
            f"{row['config']}: min PSNR vs {report['reference']} down "
            f"{acc['min_down_psnr_db'] if acc['min_down_psnr_db'] is not None else 'identical'}"
            f" / up {acc['min_up_psnr_db'] if acc['min_up_psnr_db'] is not None else 'identical'}"
            f" dB (floor {acc['floor_db']})"
        )
        for t in row["timing"]:
            if "skipped" not in t:
                text += f"; {t['size']} down {t['down_s'] * 1e3:.3f} ms up {t['up_s'] * 1e3:.3f} ms"
        lines.append(text)
    plug = report.get("plugins")
    if plug:
        if plug.get("error"):
            lines.append(f"plugin variants: {plug['error']}")
        elif plug.get("skipped"):
            lines.append(f"plugin variants: skipped ({plug['skipped']})")
        else:
            lines.append(f"plugin variants: {len(plug.get('engines', []))} engines built")
    lines.append(f"{'OK' if report['ok'] else 'FAILED'} in {report['seconds']} s")
    return lines


def run_from_args(args: argparse.Namespace) -> int:
    """``irn-doctor --gpu-check``: 0 all passed, 1 a check failed, IRNError (2) refused."""
    from .atomic import json_text, write_text_atomic
    from .doctor import _stdout_to_stderr

    configs = parse_configs(args.configs)
    sizes = parse_sizes(args.sizes)
    if args.repeats < 1:
        raise IRNError(f"--repeats must be at least 1, got {args.repeats}")
    if args.time_limit <= 0:
        raise IRNError(f"--time-limit must be positive, got {args.time_limit}")
    if args.crop < 1:
        raise IRNError(f"--crop must be positive, got {args.crop}")
    reason = refusal(configs)
    if reason:
        raise IRNError(reason)
    out = None if args.out == "-" else Path(args.out)
    if out is not None and not out.parent.is_dir():
        raise IRNError(f"--out {out}: folder {out.parent} does not exist")
    opts = CheckOptions(
        configs=configs,
        sizes=sizes,
        model_dir=args.model_dir,
        model=args.model,
        images=args.images,
        repeats=args.repeats,
        plugins=not args.no_plugins,
        time_limit=args.time_limit,
        crop=args.crop,
    )
    with _stdout_to_stderr():  # TensorRT and friends may print: the report owns stdout
        report = run_check(opts)
        for line in _summary_lines(report):
            _stderr_log(line)
    text = json_text(report)
    if out is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(out, text)
        _stderr_log(f"report written to {out}")
    return 0 if report["ok"] else 1
