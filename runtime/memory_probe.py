"""Measure how a graph's peak memory grows with the image: the per-model CPU memory model.

The CPU backends' peak RSS grows linearly with the tile, at a slope that depends on
the model (IRN_color runs eight blocks at full resolution: about 3.5 kB per HR pixel on
ONNX Runtime, against 0.6-1.0 kB for IRN x4 and 0.3 kB for IRN_E). The exporter
measures it per direction (:func:`measure_peak_slope`) and records it in the manifest
(``peak_bytes_per_hr_px``); :func:`irn_trt.runtime.memory.max_tile_pixels` plans the
tiles with it. A fresh child process (``python -m irn_trt.runtime.memory_probe``) per
image size runs the graph on ``ort-cpu`` with the backend's own options; the peak RSS of
the two sizes gives the slope. A static count of live tensors does not predict it (the
ratio of measured to counted bytes ran from 1.4 to 2.8 across models).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from .errors import IRNError
from .manifest import GraphInfo
from .memory import machine_memory, peak_rss_bytes
from .trt_plan import graph_tile_hw, tensor_shape_at

__all__ = ["measure_peak_slope"]

#: HR sides (px) of the two measured runs, each rounded to the model's tile multiple:
#: large enough that activations dwarf allocator noise, small enough to take seconds.
PROBE_SIDES_PX = (512, 1024)


def _feeds(inputs: list[tuple[str, str, list[int]]]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for name, dtype, shape in inputs:
        if dtype == "uint8":
            feeds[name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            feeds[name] = rng.random(shape, dtype=np.float32).astype(dtype)
    return feeds


def _probe(graph: str, inputs: list[tuple[str, str, list[int]]]) -> int:
    """In the child: peak RSS (bytes) after loading ``graph`` and running it once."""
    import onnxruntime as ort

    from .backends.ort_cpu import cpu_run_options, cpu_session_options

    session = ort.InferenceSession(
        graph, sess_options=cpu_session_options(1), providers=["CPUExecutionProvider"]
    )
    session.run(None, _feeds(inputs), cpu_run_options())
    return peak_rss_bytes()


def _child_peak(path: Path, graph: GraphInfo, scale: int, side: int, timeout: float) -> int:
    """Peak RSS (bytes) of a fresh process that loads ``path`` and runs one ``side``^2 image."""
    tile = graph_tile_hw(graph, scale, (side, side))
    inputs = [(t.name, t.dtype, list(tensor_shape_at(t, 1, tile))) for t in graph.inputs]
    proc = subprocess.run(
        [sys.executable, "-m", "irn_trt.runtime.memory_probe"],
        input=json.dumps({"graph": str(path), "inputs": inputs}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].isdigit():
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(tail[-1] if tail else f"exit status {proc.returncode}")
    return int(lines[-1])


def measure_peak_slope(
    path: str | Path, graph: GraphInfo, scale: int, tile_multiple: int, timeout: float = 600
) -> int:
    """Bytes of peak RSS per HR pixel of the graph file ``path`` (described by ``graph``) on
    ``ort-cpu``, rounded up.

    One fresh process per size: within one process a second, larger run reuses what the
    first one's allocator kept and peaks lower (FGRN x4 up: 0.65 kB/px that way against
    1.06 kB/px from fresh processes, which is what a tiled run reaches). The larger size
    shrinks when the smaller one's peak says it would not fit half of this machine's
    memory. Raises ``RuntimeError`` with the reason when it cannot measure.
    """

    def rounded(side: float) -> int:
        return max(1, int(side) // tile_multiple) * tile_multiple

    path = Path(path)
    small = rounded(PROBE_SIDES_PX[0])
    try:
        small_peak = _child_peak(path, graph, scale, small, timeout)
        # The small run's peak per pixel bounds the slope from above (it includes the base).
        fits = math.sqrt(machine_memory() / 2 / (small_peak / small**2))
        large = rounded(min(PROBE_SIDES_PX[1], fits))
        if large * large < 2 * small * small:
            raise RuntimeError(f"not enough memory to run a {large}^2 image beside the base")
        large_peak = _child_peak(path, graph, scale, large, timeout)
    except (OSError, ValueError, IRNError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(str(exc) or type(exc).__name__) from None
    return math.ceil(max(0, large_peak - small_peak) / (large * large - small * small))


def _main() -> None:
    request = json.loads(sys.stdin.read())
    print(_probe(request["graph"], request["inputs"]))


if __name__ == "__main__":
    _main()
