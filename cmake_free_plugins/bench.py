"""Time each irn::* plugin against the native TensorRT layers it replaces (GPU only).

For every one-op graph of ``micro_graphs.py`` at a deployment size, builds a
native engine and a plugin engine, checks that they agree, and reports the
median time of each. Speed targets live here, not in unit tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass

import numpy as np
from irn_trt.runtime.errors import IRNError, cli_entry
from tqdm import tqdm

from . import micro_graphs as mg
from .onnx_rewrite import apply_plugins, plugin_ops

__all__ = ["BenchRow", "bench_graphs", "main"]


@dataclass(frozen=True)
class BenchRow:
    graph: str
    native_ms: float
    plugin_ms: float
    max_abs_diff: float  # between the two engines' outputs (noise channels excluded)

    @property
    def speedup(self) -> float:
        return self.native_ms / self.plugin_ms if self.plugin_ms > 0 else float("nan")


def bench_graphs(hr_hw: tuple[int, int], batch: int = 1, fp16: bool = True) -> list[mg.MicroGraph]:
    """The graphs an IRN x4 engine pair contains, at HR size ``hr_hw``."""
    h, w = hr_hw
    if h % 8 or w % 8:
        raise IRNError(f"benchmark size {w}x{h} must be a multiple of 8")
    dtype = "float16" if fp16 else "float32"
    return [
        mg.unpack_graph((h, w), dtype, batch),
        mg.haar_down_graph(1, 3, (h, w), dtype, batch),
        mg.haar_down_graph(1, 12, (h // 2, w // 2), dtype, batch),
        mg.haar_down_graph(2, 3, (h, w), dtype, batch),
        mg.haar_up_graph(1, 12, (h // 4, w // 4), dtype, batch),
        mg.haar_up_graph(2, 3, (h // 4, w // 4), dtype, batch),
        mg.pack_graph((h, w), dtype, batch),
        mg.gaussian_graph(45, 1.0, (h // 4, w // 4), batch),
    ]


def _bench_one(graph: mg.MicroGraph, iterations: int) -> BenchRow:
    from .trt_engine import EngineRunner, build_plan

    plugged = apply_plugins(graph.model, {graph.family}, seed=1)
    feeds = {graph.input_name: graph.example()}
    shapes = {graph.input_name: graph.input_shape}
    native = EngineRunner(build_plan(graph.model, shapes))
    plugin = EngineRunner(build_plan(plugged, shapes), plugin_ops(plugged))
    try:
        a = next(iter(native.run(feeds).values())).astype(np.float64)
        b = next(iter(plugin.run(feeds).values())).astype(np.float64)
        if graph.family == "gaussian":  # only the passed-through LR channels can agree
            a, b = a[:, :3], b[:, :3]
        diff = float(np.abs(a - b).max())
        return BenchRow(
            graph.name,
            native.time(feeds, iterations) * 1e3,
            plugin.time(feeds, iterations) * 1e3,
            diff,
        )
    finally:
        native.close()
        plugin.close()


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1920x1080, got {text!r}") from None
    return h, w


@cli_entry("irn-plugins-bench")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m irn_trt.plugins.bench",
        description=__doc__.splitlines()[0],
        epilog="example: python -m irn_trt.plugins.bench --size 1920x1080 --fp32 --json",
    )
    parser.add_argument(
        "--size", type=_size, default=(1080, 1920), help="HR WxH (default 1920x1080)"
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--fp32", action="store_true", help="FP32 graphs (default FP16 inside)")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    from irn_trt.runtime.backends.trt import trt_unavailable_reason

    reason = trt_unavailable_reason()
    if reason:
        raise IRNError(f"the plugin benchmark needs TensorRT on a GPU: {reason}")
    graphs = bench_graphs(args.size, args.batch, fp16=not args.fp32)
    rows = [
        _bench_one(g, args.iterations)
        for g in tqdm(graphs, desc="plugins", disable=args.quiet, file=sys.stderr)
    ]
    if args.json:
        print(json.dumps([{**asdict(r), "speedup": r.speedup} for r in rows], indent=2))
    else:
        print(
            f"{'graph':24s} {'native ms':>10s} {'plugin ms':>10s} {'speedup':>8s} {'max diff':>9s}"
        )
        for r in rows:
            print(
                f"{r.graph:24s} {r.native_ms:10.3f} {r.plugin_ms:10.3f} "
                f"{r.speedup:8.2f} {r.max_abs_diff:9.2g}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
