"""``irn-bench``: megapixels/s and peak memory per backend, precision and tile size (JSON).

Each configuration runs in its own child process, so its peak RSS is its own
(``ru_maxrss`` only ever grows within a process) and one backend's threads or
caches cannot slow the next. Optionally PyTorch eager on the checkpoint the
model directory was exported from (its child is ``irn_trt.train.bench_eager``,
so the runtime stays torch-free) and Set5-style round-trip quality per
configuration (the evidence for BF16 being a default or not).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .api import Rescaler
from .atomic import write_text_atomic
from .cli import peak_rss_mb
from .errors import IRNError, cli_entry
from .image_io import list_images, read_rgb
from .metrics import y_psnr_ssim
from .resize import imresize, modcrop

__all__ = [
    "BenchConfig",
    "parse_configs",
    "synthetic_image",
    "bench_image",
    "time_median",
    "child_main",
    "main",
]

PROG = "irn-bench"
TORCH = "torch-eager"


@dataclass(frozen=True)
class BenchConfig:
    """One measurement: backend (or ``torch-eager``), precision, HR tile (None: whole image)."""

    backend: str
    precision: str
    tile: int | None

    def label(self) -> str:
        return f"{self.backend}:{self.precision}:" + (str(self.tile) if self.tile else "whole")


def parse_configs(text: str, tiles: Sequence[int | None]) -> list[BenchConfig]:
    """``"ov-cpu:fp32,ov-cpu:bf16,ort-cpu"`` x tiles -> configs (precision default ``auto``)."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        backend, _, precision = part.partition(":")
        out.extend(BenchConfig(backend, precision or "auto", t) for t in tiles)
    if not out:
        raise IRNError("no configurations given (--configs)")
    return out


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic textured test image (speed does not depend on content)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 127.5 + 60 * np.sin(xx / 37.0)[..., None] * np.cos(yy / 23.0)[..., None]
    noise = rng.normal(0, 20, (height, width, 3)).astype(np.float32)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def bench_image(image: str | None, height: int, width: int) -> np.ndarray:
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


def _quality_runtime(rescaler: Rescaler, folder: str) -> float:
    """Mean Y-PSNR of the round trip over a folder, irn-eval's protocol (mod-crop, border)."""
    s = rescaler.scale
    vals = []
    for f in list_images(folder):
        hr = modcrop(read_rgb(f), s)
        vals.append(y_psnr_ssim(rescaler.upscale(rescaler.downscale(hr)), hr, s)[0])
    return float(np.mean(vals))


def _child_runtime(args: dict) -> dict:
    cfg = BenchConfig(args["backend"], args["precision"], args["tile"])
    r = Rescaler.load(
        args["model_dir"],
        backend=cfg.backend,
        precision=cfg.precision,
        tile=cfg.tile,
        no_tile=cfg.tile is None,
        threads=args["threads"],
    )
    hr = bench_image(args["image"], args["height"], args["width"])
    res: dict = {"precision": r.selection.precision}
    mp = hr.shape[0] * hr.shape[1] / 1e6
    lr = r.downscale(hr)  # warm-up: the first call at a shape selects kernels
    if "down" in args["directions"]:
        t, lr = time_median(lambda: r.downscale(hr), args["repeat"])
        res["down_s"], res["down_mp_per_s"] = round(t, 4), round(mp / t, 4)
    if "up" in args["directions"]:
        r.upscale(lr)
        t, _ = time_median(lambda: r.upscale(lr), args["repeat"])
        res["up_s"], res["up_mp_per_s"] = round(t, 4), round(mp / t, 4)
    res["tiles_per_image"] = r.count_tiles(hr.shape[0], hr.shape[1])
    if args["quality"]:
        res["quality_y_psnr"] = round(_quality_runtime(r, args["quality"]), 4)
    return res


def child_main(payload: str, measure) -> int:  # type: ignore[no-untyped-def]
    """Run one configuration (``measure(args) -> dict``) and print its JSON line."""
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
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise IRNError(f"--size must look like 960x544, got {text!r}") from None
    if w < 1 or h < 1:
        raise IRNError(f"--size must be positive, got {text!r}")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Benchmark backends/precisions/tile sizes on one model directory: "
        "megapixels/s (HR side, median of --repeat runs after a warm-up) and peak RSS, as JSON.",
        epilog="example:\n"
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
        default="ov-cpu:fp32,ov-cpu:bf16,ort-cpu:fp32",
        help="comma-separated BACKEND[:PRECISION] (default: %(default)s)",
    )
    p.add_argument(
        "--tiles",
        default="0",
        help="comma-separated HR tile sizes; 0 = whole image (default: %(default)s)",
    )
    p.add_argument(
        "--torch-checkpoint", type=Path, help="also time PyTorch eager on this checkpoint"
    )
    p.add_argument("--size", default="960x544", help="HR test size WxH (default: %(default)s)")
    p.add_argument("--image", help="crop the test image from this file (default: synthetic)")
    p.add_argument("--direction", choices=["down", "up", "both"], default="both")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per config (median)")
    p.add_argument("--threads", type=int, help="CPU threads (default: the backend's choice)")
    p.add_argument("--quality", help="also measure the mean round-trip Y-PSNR on this folder")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per configuration")
    p.add_argument("--json", help="write the results here ('-' = stdout, the default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@cli_entry(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"] and len(argv) == 2:
        return child_main(argv[1], _child_runtime)
    args = build_parser().parse_args(argv)
    width, height = _parse_size(args.size)
    if args.repeat < 1:
        raise IRNError(f"--repeat must be at least 1, got {args.repeat}")
    try:
        tiles = [int(t) or None for t in args.tiles.split(",")]
    except ValueError:
        raise IRNError(f"--tiles must be integers, got {args.tiles!r}") from None
    configs = parse_configs(args.configs, tiles)
    if args.model_dir is None:
        from .model_store import find_model_dir

        args.model_dir = find_model_dir()
    if args.torch_checkpoint is not None:
        configs.append(BenchConfig(TORCH, "fp32", None))
    common = {
        "model_dir": str(args.model_dir),
        "checkpoint": str(args.torch_checkpoint) if args.torch_checkpoint else None,
        "image": args.image,
        "height": height,
        "width": width,
        "directions": ["down", "up"] if args.direction == "both" else [args.direction],
        "repeat": args.repeat,
        "threads": args.threads,
        "quality": args.quality,
    }
    from .manifest import load_manifest

    manifest = load_manifest(args.model_dir)  # fail early, in one line
    results = []
    for cfg in tqdm(configs, desc="configs", unit="cfg", disable=args.quiet):
        res = {"label": cfg.label(), **asdict(cfg), **_run_config(cfg, common, args.timeout)}
        if "error" in res and not args.quiet:
            tqdm.write(f"{PROG}: {cfg.label()}: {res['error']}", file=sys.stderr)
        results.append(res)
    report = {
        "model": manifest.model,
        "model_dir": str(args.model_dir),
        "size": [width, height],
        "image": args.image or "synthetic",
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "results": results,
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
