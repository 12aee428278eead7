"""``irn-build``: build (or find in the cache) the TensorRT engines of a model directory.

``irn-trt-run --backend trt`` builds on demand too; running ``irn-build`` first moves
the minutes-long build out of the first inference. Engines go to the engine cache
(``runtime/engine_cache.py``), keyed so that a later run with the same graph, GPU,
TensorRT version, precision, tile profile and builder options reuses them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from .atomic import json_text
from .engine_cache import EngineCache, default_cache_dir
from .errors import IRNError, cli_entry
from .manifest import load_manifest
from .options import add_engine_arguments, engine_options_from_args
from .trt_plan import DEFAULT_MAX_BATCH, profile_for_hr_tile

__all__ = ["build_parser", "main"]

PROG = "irn-build"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Build TensorRT engines (strongly typed, from the model directory's ONNX "
        "graphs) for the down and up graphs and store them in the engine cache. Needs an "
        "NVIDIA GPU, tensorrt>=10 and cuda-python (pip install 'irn-trt[gpu]').",
        epilog="example: irn-build build/irn_x4\n"
        "         irn-build build/irn_x4 --precision fp32 --tile 768x512 --batch 2 "
        "--cache-dir /data/engines\n"
        "         irn-trt-run photo.jpg --backend trt --tile 768x512 --batch 2 "
        "--cache-dir /data/engines\n"
        "The engine options (--tile WxH, --batch, --cache-dir, --device, --workspace-gb, "
        "--opt-level, --plugins) are irn-trt-run's and irn-bench's: with the same values they "
        "find these engines. The defaults match too (a square HR tile from the model's halo, "
        f"1920 for irn_x4; {DEFAULT_MAX_BATCH} tiles per call). The up engine is built for the "
        "LR tile (HR tile / scale). --max-batch is the old spelling of --batch.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_dir", help="model directory written by irn-export (manifest.json)")
    p.add_argument(
        "--precision",
        choices=["fp16", "fp32", "both"],
        default="fp16",
        help="which ONNX graphs to build from (default: fp16)",
    )
    p.add_argument(
        "--direction",
        choices=["down", "up", "both"],
        default="both",
        help="which graphs (default: both)",
    )
    p.add_argument("--rebuild", action="store_true", help="build even when the cache has it")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--verbose", action="store_true", help="TensorRT's verbose log (on stderr)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-engine lines")
    add_engine_arguments(p, deprecated_max_batch=True)
    return p


@cli_entry(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    manifest = load_manifest(args.model_dir)
    opts = engine_options_from_args(args, manifest.tile_multiple, verbose=args.verbose, prog=PROG)
    directions = ["down", "up"] if args.direction == "both" else [args.direction]
    precisions = ["fp16", "fp32"] if args.precision == "both" else [args.precision]
    graphs = [opts.graph(manifest, d, p) for d in directions for p in precisions]
    # The engine's batch: what irn-trt-run gives a GPU backend (EngineOptions.batch_for).
    batch = opts.batch_for(benefits_from_batch=True)
    # Plan everything (pure) before touching the GPU, so bad arguments fail fast anywhere.
    plans = [(g, profile_for_hr_tile(g, manifest, opts.tile_hw, batch)) for g in graphs]

    # GPU part: imported here so that a machine without tensorrt can still run --help.
    from .backends.trt import TrtBuildOptions, ensure_engine, trt_unavailable_reason
    from .cuda_util import CudaRuntime

    reason = trt_unavailable_reason(opts.device)
    if reason:
        raise IRNError(f"cannot build TensorRT engines here: {reason}")
    cache = EngineCache(opts.cache_dir or default_cache_dir())
    build = TrtBuildOptions(opts.workspace_bytes, opts.opt_level)
    summary = []
    with CudaRuntime(opts.device) as cuda:  # released on every exit, errors included
        gpu = cuda.info()
        bar = tqdm(plans, desc="engines", unit="engine", disable=args.quiet, file=sys.stderr)
        for graph, profiles in bar:
            bar.set_postfix_str(f"{graph.direction}.{graph.precision}")
            t0 = time.perf_counter()
            plan, key, built = ensure_engine(
                Path(args.model_dir),
                manifest,
                graph,
                profiles,
                gpu,
                cache,
                build,
                rebuild=args.rebuild,
                verbose=opts.verbose,
            )
            seconds = time.perf_counter() - t0
            path = cache.plan_path(key)
            summary.append(
                {
                    "graph": graph.file,
                    "plugins": list(graph.plugins),
                    "built": built,
                    "seconds": round(seconds, 2),
                    "engine": str(path),
                    "bytes": len(plan),
                    "gpu": gpu.name,
                    "compute_capability": gpu.compute_capability,
                    "profile": key.profile,
                }
            )
            if not args.quiet:
                what = f"built in {seconds:.1f} s" if built else "cache hit"
                line = f"{graph.direction}.{graph.precision}: {what} -> {path}"
                tqdm.write(line, file=sys.stderr)
    if args.json:
        sys.stdout.write(json_text({"model": manifest.model, "engines": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
