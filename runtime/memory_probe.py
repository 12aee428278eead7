"""Measure how a graph's peak memory grows with the image: the per-model CPU memory model.

The CPU backends' peak RSS grows linearly with the tile, at a slope that depends on
the model (IRN_color runs eight blocks at full resolution: about 3.5 kB per HR pixel on
ONNX Runtime, against 0.9 kB for IRN x4; IRN_E about a third of IRN x4). The exporter
measures it per direction (:func:`measure_peak_slope`) and records it in the manifest
(``peak_bytes_per_hr_px``); :func:`irn_trt.runtime.memory.max_tile_pixels` plans the
tiles with it. A fresh child process (``python -m irn_trt.runtime.memory_probe``) per
image size runs the graph on ``ort-cpu`` with the backend's own options; the peak RSS of
the two sizes gives the slope. A static count of live tensors does not predict it (the ratio
of measured to counted bytes ran from 1.4 to 2.8 across models).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .manifest import TensorInfo
from .memory import peak_rss_bytes

__all__ = ["concrete_shape", "measure_peak_slope"]

_AXIS = re.compile(r"^(ceil\()?([HW])(?:/(\d+))?\)?$")

#: HR sides of the two measured runs, in multiples of the model's tile multiple: large
#: enough that activations dwarf allocator noise, small enough to take seconds.
PROBE_SIDES_PX = (512, 1024)


def concrete_shape(info: TensorInfo, hr_h: int, hr_w: int) -> tuple[int, ...]:
    """``info``'s shape for one ``hr_h`` x ``hr_w`` HR image (axes ``N``, ``H``, ``W/4``,
    ``ceil(H/16)``, ... as the exporter writes them)."""
    dims = []
    for axis in info.shape:
        if isinstance(axis, int):
            dims.append(axis)
            continue
        if axis == "N":
            dims.append(1)
            continue
        m = _AXIS.match(axis)
        if m is None:
            raise ValueError(f"{info.name}: unknown axis {axis!r}")
        size = hr_h if m.group(2) == "H" else hr_w
        div = int(m.group(3) or 1)
        dims.append(math.ceil(size / div) if m.group(1) else size // div)
    return tuple(dims)


def _feeds(inputs: Sequence[TensorInfo], hr_side: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for info in inputs:
        shape = concrete_shape(info, hr_side, hr_side)
        if info.dtype == "uint8":
            feeds[info.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            feeds[info.name] = rng.random(shape, dtype=np.float32).astype(info.dtype)
    return feeds


def _probe(graph: str, inputs: list[TensorInfo], sides: Sequence[int]) -> list[int]:
    """In the child: peak RSS (bytes) after running the graph at each side, in order."""
    import onnxruntime as ort

    from .backends.ort_cpu import cpu_run_options, cpu_session_options

    session = ort.InferenceSession(
        graph, sess_options=cpu_session_options(1), providers=["CPUExecutionProvider"]
    )
    run_options = cpu_run_options()
    peaks = []
    for side in sides:
        session.run(None, _feeds(inputs, side), run_options)
        peaks.append(peak_rss_bytes())
    return peaks


def _child_peak(graph: str | Path, inputs: Sequence[TensorInfo], side: int, timeout: float) -> int:
    """Peak RSS (bytes) of a fresh process that loads ``graph`` and runs one ``side``^2 image."""
    request = {"graph": str(graph), "inputs": [vars(t) for t in inputs], "sides": [side]}
    proc = subprocess.run(
        [sys.executable, "-m", "irn_trt.runtime.memory_probe"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit status {proc.returncode}")
    return int(json.loads(proc.stdout.strip().splitlines()[-1])[0])


def measure_peak_slope(
    graph: str | Path, inputs: Sequence[TensorInfo], tile_multiple: int, timeout: float = 600
) -> int:
    """Bytes of peak RSS per HR pixel of ``graph`` on ``ort-cpu`` (rounded up).

    One fresh process per size: within one process a second, larger run reuses what the
    first one's allocator kept and peaks lower (FGRN x4 up: 0.65 kB/px that way against
    1.06 kB/px from fresh processes, which is what a tiled run reaches). Raises
    ``RuntimeError`` with the child's last line when the measurement fails.
    """
    sides = [max(1, round(s / tile_multiple)) * tile_multiple for s in PROBE_SIDES_PX]
    small, large = (_child_peak(graph, inputs, side, timeout) for side in sides)
    return math.ceil(max(0, large - small) / (sides[1] ** 2 - sides[0] ** 2))


def _main() -> None:
    request = json.loads(sys.stdin.read())
    inputs = [
        TensorInfo(t["name"], t["dtype"], tuple(t["shape"]), t["layout"], t["lr_grid"])
        for t in request["inputs"]
    ]
    print(json.dumps(_probe(request["graph"], inputs, request["sides"])))


if __name__ == "__main__":
    _main()
