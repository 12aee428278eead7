"""``irn-bench``: megapixels/s, GFLOP/s against a measured peak, and peak memory (JSON).

Each configuration runs in its own child process, so its peak RSS is its own
(``ru_maxrss`` only ever grows within a process) and one backend's threads or
caches cannot slow the next. Optionally PyTorch eager on the checkpoint the
model directory was exported from (its child is ``irn_trt.train.bench_eager``,
so the runtime stays torch-free) and Set5-style round-trip quality per
configuration (the evidence for BF16 being a default or not).

Tile choices (``--tiles``): ``0`` the whole image through the Rescaler, untiled;
``default`` the Rescaler's own tile policy for the backend (what ``irn-trt-run`` does
without tile flags); a size (one number or ``WxH``, HR px) that tile; ``@O`` after a
size or ``default`` sets the overlap as ``irn-trt-run --overlap`` does (HR px or
``exact``); ``raw`` the backend's graph called once on the whole image padded to the
scale, no Rescaler: the baseline. With a ``raw`` row, every row of the same backend and
precision reports its time relative to it (``*_overhead_vs_raw`` = time / raw - 1) and
how far its LR is from the raw LR. ``--e2e`` also times, per row, ``irn-trt-run``'s
own per-file path on the ``--image`` file (decode, tiles, encode and write the PNG):
``e2e_*_s`` and ``e2e_*_rate_vs_raw`` = raw time / e2e time.

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .atomic import json_text, write_text_atomic
from .errors import IRNError, cli_entry
from .options import add_engine_arguments, engine_options_from_args

if TYPE_CHECKING:
    import numpy as np

    from .api import Rescaler

__all__ = [
    "BenchConfig",
    "DEFAULT_TILES",
    "PRESETS",
    "RAW",
    "TileChoice",
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
#: ``--tiles`` words: the Rescaler's own tile policy, and the graph alone (the baseline).
DEFAULT_TILES = "default"
RAW = "raw"
#: ``--size``: the whole ``--image`` file, uncropped (what ``--e2e`` needs).
FULL_SIZE = "full"


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


class TileChoice(NamedTuple):
    """One ``--tiles`` entry: the tile and the overlap (None: the Rescaler's default).

    ``tile``: None (``0``, the whole image untiled), ``"default"`` (the Rescaler's tile
    policy), ``"raw"`` (the graph alone), or an HR tile, one number (a square) or
    ``"WxH"`` as ``--tile`` everywhere. ``overlap``: HR px or ``"exact"``, as
    ``irn-trt-run --overlap``.
    """

    tile: int | str | None
    overlap: int | str | None = None

    def label(self) -> str:
        text = "whole" if self.tile is None else str(self.tile)
        return text if self.overlap is None else f"{text}@{self.overlap}"


@dataclass(frozen=True)
class BenchConfig:
    """One measurement: backend (or ``torch-eager``), precision, tile choice (see
    :class:`TileChoice`; ``tile`` None: the whole image, untiled)."""

    backend: str
    precision: str
    tile: int | str | None
    overlap: int | str | None = None

    def label(self) -> str:
        return f"{self.backend}:{self.precision}:{TileChoice(self.tile, self.overlap).label()}"


def parse_tiles(text: str) -> list[TileChoice]:
    """``--tiles``: ``"raw,0,default,1024,768x512@exact,1920@480"`` -> tile choices.

    ``0``: the whole image, untiled; ``default``: the Rescaler's tile policy;
    ``raw``: the graph alone; sizes as every size flag; ``@O`` (after a size or
    ``default``): the overlap, HR px or ``exact``.
    """
    from .cli import overlap_arg
    from .trt_plan import format_wxh, parse_wxh

    out: list[TileChoice] = []
    for part in (p.strip() for p in text.split(",")):
        size, at, over = part.partition("@")
        try:
            overlap = overlap_arg(over) if at else None
        except IRNError as exc:
            raise IRNError(f"--tiles entry {part!r}: {exc}") from None
        if size in (DEFAULT_TILES, RAW):
            tile: int | str | None = size
        else:
            w, h = parse_wxh(size, "--tiles entry")
            if w == h == 0:
                tile = None
            elif min(w, h) <= 0:
                raise IRNError(f"--tiles entry {part!r} must be positive (0: whole image)")
            else:
                label = format_wxh((h, w))
                tile = int(label) if label.isdigit() else label
        if at and tile in (None, RAW):
            what = "raw (the graph alone)" if tile == RAW else "0 (the whole image)"
            raise IRNError(f"--tiles entry {part!r}: {what} has no tiles, so no overlap")
        out.append(TileChoice(tile, overlap))
    return out


def parse_configs(text: str, tiles: Sequence[TileChoice]) -> list[BenchConfig]:
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
        out.extend(BenchConfig(backend, precision, t.tile, t.overlap) for t in tiles)
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

    cfg = BenchConfig(args["backend"], args["precision"], args["tile"], args.get("overlap"))
    fixed = cfg.tile not in (None, DEFAULT_TILES, RAW)
    r = Rescaler.load(
        args["model_dir"],
        backend=cfg.backend,
        precision=cfg.precision,
        tile=cfg.tile if fixed else None,
        overlap=cfg.overlap,
        no_tile=cfg.tile in (None, RAW),
        threads=args["threads"],
        options=EngineOptions.from_dict(args.get("engine") or {}),
    )
    with r:  # engines and sessions released before the child reports
        return _measure(r, args)


def _e2e(r: Rescaler, args: dict) -> dict:
    """``irn-trt-run``'s own per-file path on the ``--image`` file, into a temp folder.

    Its ``Runner`` (runtime/cli.py) reads and decodes the file, plans the tiles, runs
    them and encodes and writes the LR PNG atomically, as one file of a batch; ``up``
    (when timed) then reads that LR back, as a second ``irn-trt-run`` would. Seconds
    are the Runner's per-file time; the backends are loaded before (``load_s``).
    """
    from .batch import Source, plan_batch
    from .cli import Runner, peak_rss_mb

    def quiet(_: str) -> None:
        return None

    runner = Runner(r, quiet, quiet, progress=False)
    res: dict[str, Any] = {}
    src = Path(args["image"])
    with tempfile.TemporaryDirectory(prefix="irn-bench-e2e-") as tmp:
        for d in ("down", "up"):
            job = plan_batch([Source(src, d)], Path(tmp) / d).jobs[0]
            c0 = time.process_time()
            item = runner.run(job)
            cpu = time.process_time() - c0
            if item.error:
                raise IRNError(f"end to end ({d}): {item.error}")
            if d in args["directions"]:
                res[f"e2e_{d}_s"] = round(item.seconds, 4)
                res[f"e2e_{d}_cpu_s"] = round(cpu, 4)
                res[f"e2e_{d}_mp_per_s"] = round(item.megapixels / item.seconds, 4)
                res[f"e2e_{d}_tiles"] = item.tiles
            if d == "down":
                res["e2e_lr_bytes"] = item.lr_bytes
                if "up" not in args["directions"]:
                    break
                src = Path(item.outputs[0])
    # ru_maxrss so far: the load and the e2e run, before the in-memory image exists.
    res["e2e_peak_rss_mb"] = round(peak_rss_mb(), 1)
    return res


def _measure(r: Rescaler, args: dict) -> dict:
    import numpy as np

    from .image_io import ImageData
    from .tiling import pad_to_multiple
    from .trt_plan import format_wxh

    raw = args["tile"] == RAW
    directions = args["directions"]
    t0 = time.perf_counter()
    for d in ("down", "up"):  # loaded before any timing; down always makes the LR
        if d == "down" or d in directions:
            r.backend(d)
    res: dict[str, Any] = {"precision": r.selection.precision}
    res["load_s"] = round(time.perf_counter() - t0, 4)
    # The e2e run comes first, in the fresh process as irn-trt-run's would, and is the
    # warm-up of the in-memory timing below (the same image through the same Rescaler).
    warm = bool(args.get("e2e")) and not raw
    if warm:
        res.update(_e2e(r, args))
    # ImageData: what the LR carries besides its pixels (IRN-M's side code) goes along.
    hr = ImageData(bench_image(args["image"], args["height"], args["width"]))
    height, width = hr.rgb.shape[:2]
    mp = height * width / 1e6
    s = r.scale
    if raw:  # the graphs alone: the LR planes of down are what up takes

        def down() -> Any:
            return r.run_graph("down", [pad_to_multiple(hr.rgb, s, s)])

        def up(lr: Any) -> Any:
            return r.run_graph("up", lr)

        def lr_rgb(lr: Any) -> np.ndarray:
            return lr[0]

    else:

        def down() -> Any:
            return r.downscale(hr)

        up = r.upscale

        def lr_rgb(lr: Any) -> np.ndarray:
            return lr.rgb

    lr = None if warm else down()  # warm-up: the first call at a shape selects kernels
    # CPU seconds (every thread of this process) beside the wall time: on a shared
    # machine they say how much of a difference is work and how much is waiting.
    if "down" in directions:
        c0 = time.process_time()
        t, lr = time_median(down, args["repeat"])
        # microseconds: small frames on a GPU take well under 0.1 ms
        res["down_s"], res["down_mp_per_s"] = round(t, 6), round(mp / t, 4)
        res["down_cpu_s"] = round((time.process_time() - c0) / args["repeat"], 6)
    elif lr is None:
        lr = down()
    if args.get("lr_file") and r.manifest.lr_channels == 3:  # compared with raw's
        np.save(args["lr_file"], lr_rgb(lr))
    if "up" in directions:
        if not warm:
            up(lr)
        c0 = time.process_time()
        t, _ = time_median(lambda: up(lr), args["repeat"])
        res["up_s"], res["up_mp_per_s"] = round(t, 6), round(mp / t, 4)
        res["up_cpu_s"] = round((time.process_time() - c0) / args["repeat"], 6)
        if not raw:
            res.update(_time_restore_and_up(r, lr, mp, t, args["repeat"]))
    if raw:
        res["tiles_per_image"] = 1
    else:
        plan = r.tile_plan(height, width)
        th, tw = plan.tile_hw
        res["tiles_per_image"] = len(plan)
        tile_text = format_wxh((th * s, tw * s))
        res["tile_hr"] = int(tile_text) if tile_text.isdigit() else tile_text
        res["overlap_hr"] = r.overlap_lr * s
    try:
        peak = _backend_peak(r, *args["peak_hw"], max(args["repeat"], 3))
        res["peak_gflop_per_s"] = round(peak, 2)
    except Exception as exc:  # a reference the backend cannot run is reported, not fatal
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        res["peak_error"] = msg
    if args["quality"]:
        res["quality_y_psnr"] = round(_quality_runtime(r, args["quality"]), 4)
    return res


def _time_restore_and_up(r: Rescaler, lr: Any, mp: float, up_s: float, repeat: int) -> dict:
    """For each JPEG quality with a compression restore graph: ``up`` of the LR after a
    JPEG round trip at that quality, restore step included (``up_restore_q<Q>_s``) and its
    cost over ``up`` alone (``restore_overhead_vs_up_q<Q>`` = time / up time - 1)."""
    from .codecs import jpeg_roundtrip

    res: dict[str, Any] = {}
    for q in r.manifest.restore_qualities():
        try:  # a quality that cannot run is reported beside the row's other timings
            decoded = replace(lr, rgb=jpeg_roundtrip(lr.rgb, q)[0])
            r.upscale(decoded, lr_jpeg_quality=q)  # warm-up: loads the restore graph
            t, _ = time_median(lambda d=decoded, q=q: r.upscale(d, lr_jpeg_quality=q), repeat)
        except IRNError as exc:
            res[f"up_restore_q{q}_error"] = str(exc)
            continue
        res[f"up_restore_q{q}_s"] = round(t, 6)
        res[f"up_restore_q{q}_mp_per_s"] = round(mp / t, 4)
        res[f"restore_overhead_vs_up_q{q}"] = round(t / up_s - 1.0, 4)
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


def _vs_raw(results: list[dict], lr_files: dict[str, Path]) -> None:
    """Each row against the ``raw`` row of its backend and precision: time / raw - 1 per
    direction, raw time / e2e time, and how far its LR is from the raw LR."""
    import numpy as np

    raws = {(r["backend"], r["precision"]): r for r in results if r.get("tile") == RAW}
    for row in results:
        ref = raws.get((row["backend"], row["precision"]))
        if ref is None or row is ref or "error" in ref or "error" in row:
            continue
        for d in ("down", "up"):
            for t in ("s", "cpu_s"):  # wall time, and CPU time (see _measure)
                kind = "" if t == "s" else "cpu_"
                base = ref.get(f"{d}_{t}")
                if base and row.get(f"{d}_{t}"):
                    row[f"{d}_{kind}overhead_vs_raw"] = round(row[f"{d}_{t}"] / base - 1, 4)
                if base and row.get(f"e2e_{d}_{t}"):
                    row[f"e2e_{d}_{kind}rate_vs_raw"] = round(base / row[f"e2e_{d}_{t}"], 4)
        mine, theirs = lr_files.get(row["label"]), lr_files.get(ref["label"])
        if mine and theirs and mine.is_file() and theirs.is_file():
            a, b = np.load(mine), np.load(theirs)
            if a.shape != b.shape:
                row["lr_vs_raw_error"] = f"LR {a.shape} vs raw {b.shape}"
                continue
            diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
            row["lr_identical_to_raw"] = round(float((diff == 0).mean()), 6)
            row["lr_max_diff_vs_raw"] = int(diff.max())


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


def _parse_size(text: str, image: str | None = None) -> tuple[int, int]:
    """``--size WxH`` (one number: square), the order of every size flag; ``full``: the
    size of the ``--image`` file (its header, EXIF rotation included)."""
    from .trt_plan import parse_wxh

    if text == FULL_SIZE:
        if image is None:
            raise IRNError(f"--size {FULL_SIZE} needs --image (the file whose size it is)")
        from .image_io import probe_image

        return probe_image(image).size
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
        "  irn-bench --configs ov-cpu:fp32,ov-cpu:bf16 --quality ../shared/data/eval/Set5\n"
        "  irn-bench --configs ov-cpu:fp32 --image photo.jpg --size full --direction down \\\n"
        "      --tiles raw,default,1920@480 --e2e --threads 1 --repeat 1 --json tiles.json\n"
        "                          # tiling overhead and irn-trt-run end to end vs the raw graph",
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
        help="comma-separated tile choices: 0 = whole image, untiled; default = the "
        "Rescaler's own tile policy (irn-trt-run without tile flags); raw = the graph called "
        "once on the whole image, no Rescaler (the baseline of the *_vs_raw fields); or an HR "
        "tile, one number (square) or WxH; @O after a tile or default sets the overlap in HR "
        "px or 'exact', as irn-trt-run's --overlap (e.g. 1920@480) (default: %(default)s)",
    )
    p.add_argument(
        "--e2e",
        action="store_true",
        help="also time irn-trt-run's per-file path on the --image file (decode, tiles, "
        "encode and write the PNG) per row: e2e_down_s / e2e_up_s and, with a raw row, "
        "e2e_*_rate_vs_raw = raw time / e2e time; needs --image FILE --size full",
    )
    p.add_argument(
        "--torch-checkpoint", type=Path, help="also time PyTorch eager on this checkpoint"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"quick preset: --size {q.size} --repeat {q.repeat} and a smaller reference conv",
    )
    p.add_argument(
        "--size",
        help=f"HR test size WxH, or {FULL_SIZE} = the whole --image file (default: {d.size}; "
        f"--quick: {q.size})",
    )
    p.add_argument(
        "--image", help="crop the test image (--size) from this file (default: synthetic)"
    )
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
    if args.e2e and (args.image is None or args.size != FULL_SIZE):
        raise IRNError(
            f"--e2e times irn-trt-run on the --image file as it is: pass --image FILE "
            f"--size {FULL_SIZE}"
        )
    width, height = _parse_size(args.size or preset.size, args.image)
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
        "e2e": args.e2e,
    }
    from tqdm import tqdm

    from .costs import direction_macs

    gflop = {d: 2 * m / 1e9 for d, m in direction_macs(manifest, height, width).items()}
    results = []
    with tempfile.TemporaryDirectory(prefix="irn-bench-lr-") as lr_dir:
        lr_files: dict[str, Path] = {}
        for i, cfg in enumerate(tqdm(configs, desc="configs", unit="cfg", disable=args.quiet)):
            res: dict[str, Any] = {"label": cfg.label(), **asdict(cfg)}
            reason = skip_reason(cfg)
            if reason is not None:
                res["skipped"] = reason
                if not args.quiet:
                    tqdm.write(f"{PROG}: {cfg.label()}: skipped: {reason}", file=sys.stderr)
            else:
                lr_files[cfg.label()] = Path(lr_dir) / f"lr{i}.npy"
                extra = {"lr_file": str(lr_files[cfg.label()])}
                res.update(_run_config(cfg, {**common, **extra}, args.timeout))
                _add_flops(res, gflop)
                if "error" in res and not args.quiet:
                    tqdm.write(f"{PROG}: {cfg.label()}: {res['error']}", file=sys.stderr)
            results.append(res)
        _vs_raw(results, lr_files)
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
        "vs_raw": "rows with a raw row of their backend and precision: *_overhead_vs_raw = "
        "time / raw time - 1 (in memory, same image); e2e_*_rate_vs_raw = raw time / "
        "irn-trt-run's per-file time (e2e_*_s: decode, tiles, encode, write); the same "
        "with CPU seconds of the process (*_cpu_s, all threads): *_cpu_overhead_vs_raw, "
        "e2e_*_cpu_rate_vs_raw; "
        "lr_identical_to_raw = fraction of LR bytes equal to raw's, lr_max_diff_vs_raw in "
        "8-bit levels; peak_rss_mb per row (its own process; e2e_peak_rss_mb before the "
        "in-memory image)",
    }
    text = json_text(report)
    if args.json and args.json != "-":
        write_text_atomic(args.json, text)
    else:
        sys.stdout.write(text)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
