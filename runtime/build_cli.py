"""``irn-build``: build (or find in the cache) the TensorRT engines of a model directory.

``irn-trt-run --backend trt`` builds on demand too; running ``irn-build`` first moves
the minutes-long build out of the first inference. Engines go to the engine cache
(``runtime/engine_cache.py``), keyed so that a later run with the same graph, GPU,
TensorRT version, precision, tile profile and builder options reuses them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from .engine_cache import EngineCache, default_cache_dir
from .errors import IRNError, cli_entry
from .manifest import GraphInfo, ModelManifest, load_manifest
from .trt_plan import (
    DEFAULT_MAX_BATCH,
    parse_tile,
    profile_for_hr_tile,
)

__all__ = ["build_parser", "main"]

PROG = "irn-build"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Build TensorRT engines (strongly typed, from the model directory's ONNX "
        "graphs) for the down and up graphs and store them in the engine cache. Needs an "
        "NVIDIA GPU, tensorrt>=10 and cuda-python (pip install 'irn-trt[gpu]').",
        epilog="example: irn-build build/irn_x4\n"
        "         irn-build build/irn_x4 --precision fp32 --tile 768x768 --max-batch 2 "
        "--cache-dir /data/engines\n"
        "Defaults match irn-trt-run's (HR tile from the model's halo, e.g. 1024x1024 at x4; "
        f"{DEFAULT_MAX_BATCH} tiles per call), so irn-trt-run --backend trt finds these engines; "
        "with other values pass the same --tile/--batch to irn-trt-run. The up engine is built "
        "for the LR tile (HR tile / scale).",
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
    p.add_argument(
        "--plugins",
        action="store_true",
        help="build the plugin variants (irn-export --plugins) instead of the native graphs",
    )
    p.add_argument(
        "--tile", help="HR tile HxW the engines serve (default: irn-trt-run's for this model)"
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=DEFAULT_MAX_BATCH,
        help=f"tiles per call (default {DEFAULT_MAX_BATCH}, as irn-trt-run)",
    )
    p.add_argument(
        "--workspace-gb", type=float, default=4.0, help="builder workspace limit in GiB (default 4)"
    )
    p.add_argument(
        "--opt-level",
        type=int,
        default=3,
        choices=range(6),
        metavar="{0..5}",
        help="TensorRT builder optimization level (default 3)",
    )
    p.add_argument("--cache-dir", type=Path, help=f"engine cache (default {default_cache_dir()})")
    p.add_argument("--rebuild", action="store_true", help="build even when the cache has it")
    p.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-engine lines")
    return p


def _plugin_graph(manifest: ModelManifest, direction: str, precision: str) -> GraphInfo:
    for g in manifest.graphs:
        if g.direction == direction and g.precision == precision and g.plugins:
            return g
    raise IRNError(
        f"model {manifest.model} has no {direction}.{precision} plugin graph "
        "(export it with irn-export --plugins)"
    )


@cli_entry(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    manifest = load_manifest(args.model_dir)
    hr_tile = parse_tile(args.tile, manifest.tile_multiple) if args.tile else None
    if args.max_batch < 1:
        raise IRNError(f"--max-batch must be at least 1, got {args.max_batch}")
    if args.workspace_gb <= 0:
        raise IRNError(f"--workspace-gb must be positive, got {args.workspace_gb}")
    directions = ["down", "up"] if args.direction == "both" else [args.direction]
    precisions = ["fp16", "fp32"] if args.precision == "both" else [args.precision]
    pick = _plugin_graph if args.plugins else ModelManifest.graph
    graphs = [pick(manifest, d, p) for d in directions for p in precisions]
    # Plan everything (pure) before touching the GPU, so bad arguments fail fast anywhere.
    plans = [(g, profile_for_hr_tile(g, manifest, hr_tile, args.max_batch)) for g in graphs]

    # GPU part: imported here so that a machine without tensorrt can still run --help.
    from .backends.trt import TrtBuildOptions, ensure_engine, trt_unavailable_reason
    from .cuda_util import CudaRuntime

    reason = trt_unavailable_reason(args.device)
    if reason:
        raise IRNError(f"cannot build TensorRT engines here: {reason}")
    cuda = CudaRuntime(args.device)
    gpu = cuda.info()
    cache = EngineCache(args.cache_dir or default_cache_dir())
    build = TrtBuildOptions(int(args.workspace_gb * (1 << 30)), args.opt_level)
    summary = []
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
            verbose=args.verbose,
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
            tqdm.write(f"{graph.direction}.{graph.precision}: {what} -> {path}", file=sys.stderr)
    cuda.close()
    if args.json:
        print(json.dumps({"model": manifest.model, "engines": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
