"""``irn-bench``: megapixels/s, GFLOP/s against a measured peak, and peak memory (JSON).

Each configuration runs in its own child process, so its peak RSS is its own
(``ru_maxrss`` only ever grows within a process) and one backend's threads or
caches cannot slow the next. Optionally PyTorch eager on the checkpoint the
model directory was exported from (its child is ``irn_trt.train.bench_eager``,
so the runtime stays torch-free) and Set5-style round-trip quality per
configuration (the evidence for BF16 being a default or not).

Speed is also given as achieved GFLOP/s (2 x the multiply-adds of the model's
convolutions on the image, ``runtime/costs.py``; tile overlap that is computed twice
is not counted) and as a fraction of a reference peak that each child measures on its
own backend with the same settings: one 3x3 convolution with 256 channels
(:func:`~irn_trt.runtime.costs.conv_peak_onnx`). Configurations that cannot run on
this machine (a backend that is not installed or has no device, BF16 on a CPU without
it, PyTorch not installed) are listed as skipped with the reason, and do not fail the
run. Heavy modules are imported only where used, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import write_text_atomic
from .errors import IRNError, cli_entry
from .options import add_engine_arguments, engine_options_from_args

if TYPE_CHECKING:
    import numpy as np

    from .api import Rescaler

__all__ = [
    "BenchConfig",
    "PRESETS",
    "parse_tiles",
    "parse_configs",
    "skip_reason",
    "synthetic_image",
    "bench_image",
    "time_median",
    "measure_peak",
    "child_main",
    "main",
]

PROG = "irn-bench"
TORCH = "torch-eager"
DEFAULT_CONFIGS = "trt:fp16,ort-cuda:fp16,ov-cpu:fp32,ov-cpu:bf16,ort-cpu:fp32"


@dataclass(frozen=True)
class Preset:
    """Defaults for the size, repeats and the reference convolution's spatial size."""

    size: str
    repeat: int
    peak_hw: tuple[int, int]


#: ``default``: the numbers to quote; ``quick`` (``--quick``): a check in well under a
#: minute on a 2-core CPU (small image, one timed run, a smaller reference conv).
PRESETS = {
    "default": Preset("960x544", 3, (128, 128)),
    "quick": Preset("192x128", 1, (64, 64)),
}


@dataclass(frozen=True)
class BenchConfig:
    """One measurement: backend (or ``torch-eager``), precision, HR tile (None: whole image).

    ``tile`` is one number (a square) or ``"WxH"``, as ``--tile`` everywhere.
    """

    backend: str
    precision: str
    tile: int | str | None

    def label(self) -> str:
        return f"{self.backend}:{self.precision}:" + (str(self.tile) if self.tile else "whole")


def parse_tiles(text: str) -> list[int | str | None]:
    """``--tiles``: ``"0,1024,768x512"`` -> [None, 1024, "768x512"] (0: whole image)."""
    from .trt_plan import format_wxh, parse_wxh

    out: list[int | str | None] = []
    for part in text.split(","):
        w, h = parse_wxh(part, "--tiles entry")
        if w == h == 0:
            out.append(None)
        elif min(w, h) <= 0:
            raise IRNError(f"--tiles entry {part.strip()!r} must be positive (0: whole image)")
        else:
            label = format_wxh((h, w))
            out.append(int(label) if label.isdigit() else label)
    return out


def parse_configs(text: str, tiles: Sequence[int | str | None]) -> list[BenchConfig]:
    """``"ov-cpu:fp32,ov-cpu:bf16,ort-cpu"`` x tiles -> configs (precision default ``auto``)."""
    from .api import PRECISIONS
    from .backends import get_spec

    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        backend, _, precision = part.partition(":")
        precision = precision or "auto"
        if backend != TORCH:
            spec = get_spec(backend)  # unknown names: one clear line
            if precision not in ("auto", *spec.precisions):
                raise IRNError(
                    f"{part}: {backend} does not run {precision} "
                    f"(choose from {', '.join(spec.precisions)})"
                )
        elif precision not in ("auto", "fp32"):
            raise IRNError(f"{part}: {TORCH} runs fp32 only")
        if precision not in PRECISIONS:
            raise IRNError(f"{part}: unknown precision {precision!r}")
        out.extend(BenchConfig(backend, precision, t) for t in tiles)
    if not out:
        raise IRNError("no configurations given (--configs)")
    return out


def skip_reason(cfg: BenchConfig) -> str | None:
    """Why ``cfg`` cannot run on this machine (None: it can), without loading any model."""
    if cfg.backend == TORCH:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            return "torch is not installed (pip install irn-trt[train])"
        return None
    from .backends import candidates

    reason = candidates((cfg.backend,))[0].reason
    if reason is None and cfg.backend == "ov-cpu" and cfg.precision == "bf16":
        from .backends.ov_cpu import cpu_supports_bf16

        if not cpu_supports_bf16():
            reason = "this CPU has no BF16 support (OpenVINO lists no BF16 capability)"
    return reason


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic textured test image (speed does not depend on content)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 127.5 + 60 * np.sin(xx / 37.0)[..., None] * np.cos(yy / 23.0)[..., None]
    noise = rng.normal(0, 20, (height, width, 3)).astype(np.float32)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def bench_image(image: str | None, height: int, width: int) -> np.ndarray:
    import numpy as np

    from .image_io import read_rgb
    from .resize import imresize

    if image is None:
        return synthetic_image(height, width)
    img = read_rgb(image)
    if img.shape[0] < height or img.shape[1] < width:
        img = imresize(img, output_shape=(max(height, img.shape[0]), max(width, img.shape[1])))
    return np.ascontiguousarray(img[:height, :width])


def time_median(fn, repeat: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def measure_peak(run: Callable[[], object], macs: int, repeat: int) -> float:
    """GFLOP/s of ``run`` (``macs`` multiply-adds per call): best of ``repeat`` after a warm-up."""
    run()
    best = float("inf")
    for _ in range(max(repeat, 2)):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return 2 * macs / best / 1e9


def _backend_peak(rescaler: Rescaler, height: int, width: int, repeat: int) -> float:
    """The reference conv's GFLOP/s on the backend the rescaler uses, with its options."""
    import numpy as np

    from .costs import PEAK_CHANNELS, conv_macs, conv_peak_onnx
    from .manifest import GraphInfo, TensorInfo, file_sha256

    be = rescaler.backend("down")
    shape = (1, PEAK_CHANNELS, height, width)
    with tempfile.TemporaryDirectory(prefix="irn-bench-peak-") as tmp:
        path = Path(tmp) / "conv_peak.onnx"
        path.write_bytes(conv_peak_onnx(PEAK_CHANNELS, height, width))
        graph = GraphInfo(
            "peak",
            "fp32",
            path.name,
            file_sha256(path),
            (TensorInfo("x", "float32", shape, "NCHW"),),
            (TensorInfo("y", "float32", shape, "NCHW"),),
        )
        x = {"x": np.random.default_rng(0).random(shape, dtype=np.float32)}
        with type(be)(tmp, rescaler.manifest, graph, be.options) as peak:
            macs = conv_macs(PEAK_CHANNELS, height, width)
            return measure_peak(lambda: peak.run(x), macs, repeat)


def _quality_runtime(rescaler: Rescaler, folder: str) -> float:
    """Mean Y-PSNR of the round trip over a folder, irn-eval's protocol (mod-crop, border)."""
    import numpy as np

    from .image_io import ImageData, list_images, read_rgb
    from .metrics import y_psnr_ssim
    from .resize import modcrop

    s = rescaler.scale
    vals = []
    for f in list_images(folder):
        hr = modcrop(read_rgb(f), s)
        # ImageData: what the LR carries besides its pixels (IRN-M's side code) goes along.
        lr = rescaler.downscale(ImageData(hr))
        vals.append(y_psnr_ssim(rescaler.upscale(lr).rgb, hr, s)[0])
    return float(np.mean(vals))


def _child_runtime(args: dict) -> dict:
    from .api import Rescaler
    from .options import EngineOptions

    cfg = BenchConfig(args["backend"], args["precision"], args["tile"])
    r = Rescaler.load(
        args["model_dir"],
        backend=cfg.backend,
        precision=cfg.precision,
        tile=cfg.tile,
        no_tile=cfg.tile is None,
        threads=args["threads"],
        options=EngineOptions.from_dict(args.get("engine") or {}),
    )
    with r:  # engines and sessions released before the child reports
        return _measure(r, args)


def _measure(r: Rescaler, args: dict) -> dict:
    from .image_io import ImageData

    # ImageData: what the LR carries besides its pixels (IRN-M's side code) goes along.
    hr = ImageData(bench_image(args["image"], args["height"], args["width"]))
    res: dict = {"precision": r.selection.precision}
    mp = hr.rgb.shape[0] * hr.rgb.shape[1] / 1e6
    lr = r.downscale(hr)  # warm-up: the first call at a shape selects kernels
    if "down" in args["directions"]:
        t, lr = time_median(lambda: r.downscale(hr), args["repeat"])
        res["down_s"], res["down_mp_per_s"] = round(t, 4), round(mp / t, 4)
    if "up" in args["directions"]:
        r.upscale(lr)
        t, _ = time_median(lambda: r.upscale(lr), args["repeat"])
        res["up_s"], res["up_mp_per_s"] = round(t, 4), round(mp / t, 4)
    res["tiles_per_image"] = r.count_tiles(hr.rgb.shape[0], hr.rgb.shape[1])
    try:
        peak = _backend_peak(r, *args["peak_hw"], max(args["repeat"], 3))
        res["peak_gflop_per_s"] = round(peak, 2)
    except Exception as exc:  # a reference the backend cannot run is reported, not fatal
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        res["peak_error"] = msg
    if args["quality"]:
        res["quality_y_psnr"] = round(_quality_runtime(r, args["quality"]), 4)
    return res


def child_main(payload: str, measure) -> int:  # type: ignore[no-untyped-def]
    """Run one configuration (``measure(args) -> dict``) and print its JSON line."""
    from .cli import peak_rss_mb

    args = json.loads(payload)
    try:
        res = measure(args)
    except IRNError as exc:
        res = {"error": str(exc)}
    res["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(res))
    return 0


def _run_config(cfg: BenchConfig, common: dict, timeout: float | None) -> dict:
    payload = json.dumps({**common, **asdict(cfg)})
    # PyTorch eager lives in irn_trt.train (torch never enters the runtime's imports).
    module = "irn_trt.train.bench_eager" if cfg.backend == TORCH else "irn_trt.runtime.bench"
    cmd = [sys.executable, "-m", module, "--child", payload]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"child failed (exit {proc.returncode}): {tail}"}
    return json.loads(lines[-1])


def _add_flops(res: dict[str, Any], gflop: dict[str, float]) -> None:
    """Achieved GFLOP/s per direction and its fraction of the row's measured peak."""
    peak = res.get("peak_gflop_per_s")
    for d in ("down", "up"):
        if res.get(f"{d}_s"):
            res[f"{d}_gflop_per_s"] = round(gflop[d] / res[f"{d}_s"], 2)
            if peak:
                res[f"{d}_fraction_of_peak"] = round(res[f"{d}_gflop_per_s"] / peak, 3)


def _ratios(results: list[dict]) -> dict[str, float]:
    """Speed of each configuration relative to the first ort-cpu one (down direction)."""
    ref = next((r for r in results if r["backend"] == "ort-cpu" and "down_mp_per_s" in r), None)
    if ref is None:
        return {}
    return {
        r["label"]: round(r["down_mp_per_s"] / ref["down_mp_per_s"], 3)
        for r in results
        if "down_mp_per_s" in r
    }


def _parse_size(text: str) -> tuple[int, int]:
    """``--size WxH`` (one number: square), the order of every size flag."""
    from .trt_plan import parse_wxh

    try:
        w, h = parse_wxh(text, "--size")
    except IRNError:
        raise IRNError(f"--size must look like 960x544 (WxH), got {text!r}") from None
    if w < 1 or h < 1:
        raise IRNError(f"--size must be positive, got {text!r}")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    d, q = PRESETS["default"], PRESETS["quick"]
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Benchmark backends/precisions/tile sizes on one model directory: "
        "megapixels/s (HR side, median of --repeat runs after a warm-up), achieved GFLOP/s "
        "and its fraction of a peak measured on the same backend, and peak RSS, as JSON. "
        "Configurations this machine cannot run are listed as skipped, with the reason.",
        epilog="examples:\n"
        "  irn-bench --quick                                # under a minute, any machine\n"
        "  irn-bench --model-dir build/irn_x4 --configs ov-cpu:fp32,ov-cpu:bf16,ort-cpu:fp32 \\\n"
        "      --torch-checkpoint weights/irn_x4 --size 960x544 --threads 2 --json bench.json\n"
        "  irn-bench --configs ov-cpu:fp32,ov-cpu:bf16 --quality ../shared/data/eval/Set5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        help="irn-export output (default: irn_x4 from the model search path)",
    )
    p.add_argument(
        "--configs",
        default=DEFAULT_CONFIGS,
        help="comma-separated BACKEND[:PRECISION] (default: %(default)s)",
    )
    p.add_argument(
        "--tiles",
        default="0",
        help="comma-separated HR tiles, each one number (square) or WxH; 0 = whole image "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--torch-checkpoint", type=Path, help="also time PyTorch eager on this checkpoint"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"quick preset: --size {q.size} --repeat {q.repeat} and a smaller reference conv",
    )
    p.add_argument("--size", help=f"HR test size WxH (default: {d.size}; --quick: {q.size})")
    p.add_argument("--image", help="crop the test image from this file (default: synthetic)")
    p.add_argument("--direction", choices=["down", "up", "both"], default="both")
    p.add_argument(
        "--repeat", type=int, help=f"timed runs per config, median (default: {d.repeat})"
    )
    p.add_argument("--threads", type=int, help="CPU threads (default: the backend's choice)")
    p.add_argument("--quality", help="also measure the mean round-trip Y-PSNR on this folder")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per configuration")
    p.add_argument("--json", help="write the results here ('-' = stdout, the default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_engine_arguments(p, tile=False)  # the tile comes per configuration (--tiles)
    return p


@cli_entry(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"] and len(argv) == 2:
        return child_main(argv[1], _child_runtime)
    args = build_parser().parse_args(argv)
    preset = PRESETS["quick" if args.quick else "default"]
    width, height = _parse_size(args.size or preset.size)
    repeat = preset.repeat if args.repeat is None else args.repeat
    if repeat < 1:
        raise IRNError(f"--repeat must be at least 1, got {repeat}")
    tiles = parse_tiles(args.tiles)
    engine = engine_options_from_args(args, prog=PROG)
    from .manifest import load_manifest
    from .model_store import find_model_dir

    if args.model_dir is None:
        args.model_dir = find_model_dir()
    manifest = load_manifest(args.model_dir)  # fail early, in one line
    configs = parse_configs(args.configs, tiles)
    if args.torch_checkpoint is not None:
        configs.append(BenchConfig(TORCH, "fp32", None))
    common = {
        "model_dir": str(args.model_dir),
        "checkpoint": str(args.torch_checkpoint) if args.torch_checkpoint else None,
        "image": args.image,
        "height": height,
        "width": width,
        "directions": ["down", "up"] if args.direction == "both" else [args.direction],
        "repeat": repeat,
        "threads": args.threads,
        "quality": args.quality,
        "peak_hw": list(preset.peak_hw),
        "engine": engine.to_dict(),
    }
    from tqdm import tqdm

    from .costs import direction_macs

    gflop = {d: 2 * m / 1e9 for d, m in direction_macs(manifest, height, width).items()}
    results = []
    for cfg in tqdm(configs, desc="configs", unit="cfg", disable=args.quiet):
        res: dict[str, Any] = {"label": cfg.label(), **asdict(cfg)}
        reason = skip_reason(cfg)
        if reason is not None:
            res["skipped"] = reason
            if not args.quiet:
                tqdm.write(f"{PROG}: {cfg.label()}: skipped: {reason}", file=sys.stderr)
        else:
            res.update(_run_config(cfg, common, args.timeout))
            _add_flops(res, gflop)
            if "error" in res and not args.quiet:
                tqdm.write(f"{PROG}: {cfg.label()}: {res['error']}", file=sys.stderr)
        results.append(res)
    report = {
        "model": manifest.model,
        "model_dir": str(args.model_dir),
        "size": [width, height],
        "image": args.image or "synthetic",
        "preset": "quick" if args.quick else "default",
        "repeat": repeat,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "gflop_per_image": round(gflop["down"], 3),
        "gflop_per_image_by_direction": {d: round(g, 3) for d, g in gflop.items()},
        "gflop_counts": "2 x multiply-adds of the model's convolutions per direction on the "
        "image (runtime/costs.py; gflop_per_image is the down graph's, equal to the up "
        "graph's for IRN); tile overlap computed twice is not counted",
        "peak_reference": f"3x3 conv, 256 channels, {preset.peak_hw[1]}x{preset.peak_hw[0]}, "
        "best of the timed runs, on each row's backend and settings",
        "results": results,
        "skipped": {r["label"]: r["skipped"] for r in results if "skipped" in r},
        "down_speed_vs_ort_cpu": _ratios(results),
    }
    text = json.dumps(report, indent=2) + "\n"
    if args.json and args.json != "-":
        write_text_atomic(args.json, text)
    else:
        sys.stdout.write(text)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
