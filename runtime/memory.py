"""Memory budget -> tile size for the CPU backends (torch-free).

CPU backends take any input shape, so they need no fixed tile: ``irn-trt-run``
runs whole images, or, when an image would not fit ``--max-memory``, the
fewest and largest tiles that do (:func:`irn_trt.runtime.tiling.fit_tiles`).
The budget becomes a tile size through a linear model of the process's peak
RSS (:data:`PEAK_MODELS`), measured per backend and direction on IRN x4; a model
directory whose manifest records its own slope (``peak_bytes_per_hr_px``, measured on
``ort-cpu`` by the exporter, :mod:`.memory_probe`) is planned with that slope instead,
scaled to the backend by the IRN x4 ratios.

Default budget (:func:`default_max_memory`): a quarter of the machine's memory
(physical RAM, or the cgroup limit when lower), at most 3 GiB, so a 4K photo's
round trip stays under 4 GB with room for the model's own noise, and two jobs
fit side by side on an 8 GB machine.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import IRNError
from .tiling import fit_tiles

__all__ = [
    "DEFAULT_MAX_MEMORY_CAP",
    "budget_tile",
    "bytes_per_hr_px",
    "MEASURED_SLOPE_MARGIN",
    "IMAGE_BYTES_PER_PX",
    "PEAK_MODELS",
    "PeakModel",
    "default_max_memory",
    "machine_memory",
    "max_tile_pixels",
    "parse_memory",
    "peak_rss_bytes",
    "tiles_by_budget",
]

GIB = 1 << 30
MIB = 1 << 20

#: Upper bound of the default budget (bytes).
DEFAULT_MAX_MEMORY_CAP = 3 * GIB


@dataclass(frozen=True)
class PeakModel:
    """Peak RSS ~= ``base`` + ``per_px`` x HR pixels of the largest tile (bytes)."""

    base: int
    per_px: float


#: Measured on irn_x4 (uint8 I/O, FP32 graphs, 1 thread, OpenVINO 2026.4, ONNX Runtime
#: 1.32, x86-64 without AVX-512): peak RSS (``ru_maxrss``) of a fresh process that loads
#: one direction and runs one untiled square image through ``Rescaler`` at 512^2, 768^2,
#: 1024^2/1536^2 and 2048^2 HR px (up: its LR input), least-squares line
#: (residuals <= 10 MiB, ov-cpu up 47 MiB). Fitted slopes: ort-cpu down 937 B/px, up
#: 593; ov-cpu down 942, up 807; per_px below rounds them up. Intercepts were 132-275
#: MiB; ``base`` is 320 MiB: a loaded direction peaks at 220 MiB, and a round trip holds
#: the other direction's compiled graph (~100 MiB) as well. Other models differ (IRN_color
#: about 3.5 kB/px, IRN_E about 0.3): their manifests carry their own measured slope
#: (:func:`bytes_per_hr_px`); these constants serve manifests without one.
#: Re-measure a point with ``irn-trt-run crop.png --mode down --no-tile --backend
#: ov-cpu --threads 1 --json -`` (``peak_rss_mb``) on crops of a few sizes.
PEAK_MODELS: dict[tuple[str, str], PeakModel] = {
    ("ort-cpu", "down"): PeakModel(base=320 * MIB, per_px=950.0),
    ("ort-cpu", "up"): PeakModel(base=320 * MIB, per_px=610.0),
    ("ov-cpu", "down"): PeakModel(base=320 * MIB, per_px=950.0),
    ("ov-cpu", "up"): PeakModel(base=320 * MIB, per_px=850.0),
}

#: Bytes per HR pixel of the image itself outside the backend: the decoded input (PIL
#: keeps RGB as 4 bytes/px, NumPy 3), the output array and the PNG encoder's copies.
IMAGE_BYTES_PER_PX = 20

#: Head-room on a model's own measured slope (the IRN x4 constants above were rounded up
#: from their fits by 1.5-3 %).
MEASURED_SLOPE_MARGIN = 1.05
#: Floor of a measured slope: a tiny graph's growth can hide in the allocator's first
#: chunk and measure 0, which must not mean "any tile fits". At least the FP32 input and
#: output of an RGB pixel.
MIN_MEASURED_SLOPE = 24


def bytes_per_hr_px(backend: str, direction: str, measured: int | None = None) -> float:
    """Peak RSS per HR pixel of a tile on ``backend``: IRN x4's (:data:`PEAK_MODELS`), or
    the model's own ``ort-cpu`` slope ``measured`` scaled by IRN x4's ratio of this
    backend to ``ort-cpu`` (OpenVINO's up graph keeps more alive) and a margin."""
    model = PEAK_MODELS[(backend, direction)]
    if measured is None:
        return model.per_px
    ratio = model.per_px / PEAK_MODELS[("ort-cpu", direction)].per_px
    return max(measured, MIN_MEASURED_SLOPE) * ratio * MEASURED_SLOPE_MARGIN


def tiles_by_budget(backend: str) -> bool:
    """Whether ``backend`` takes any input shape and has a peak model (the CPU backends).

    The others (GPU engines, whose profiles are built for one tile shape) keep
    the fixed default tile.
    """
    return (backend, "down") in PEAK_MODELS and (backend, "up") in PEAK_MODELS


def peak_rss_bytes() -> int:
    """This process's peak RSS (bytes) since its exec: ``VmHWM`` on Linux. (``ru_maxrss``
    keeps the parent's peak across fork and exec, so a child of a 1 GB process reads
    1 GB whatever it does.) Elsewhere ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # Unix only: imported here, so the runtime imports on any OS

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def machine_memory() -> int:
    """Memory this process may use (bytes): physical RAM, or the cgroup limit if lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def default_max_memory() -> int:
    """The default budget (bytes): a quarter of :func:`machine_memory`, at most 3 GiB."""
    return min(machine_memory() // 4, DEFAULT_MAX_MEMORY_CAP)


_UNITS = {"": MIB, "K": 1 << 10, "M": MIB, "G": GIB, "T": 1 << 40}


def parse_memory(text: str) -> int:
    """``"3G"``, ``"2.5GiB"``, ``"800M"``, ``"800"`` (MiB) -> bytes (binary units)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if m is None:
        raise IRNError(f"--max-memory {text!r}: expected a size such as 3G, 2.5G or 800M")
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise IRNError(f"--max-memory {text!r} must be positive")
    return value


def max_tile_pixels(
    backend: str, direction: str, budget: int, image_hr_px: int, measured: int | None = None
) -> int:
    """The largest tile (HR px) whose modelled peak, with the image's buffers, fits ``budget``.

    ``measured``: the model's own peak slope on ``ort-cpu`` (see :func:`bytes_per_hr_px`).
    Raises an :class:`IRNError` when not even the image's own buffers fit.
    """
    model = PEAK_MODELS[(backend, direction)]
    per_px = bytes_per_hr_px(backend, direction, measured)
    room = budget - model.base - IMAGE_BYTES_PER_PX * image_hr_px
    pixels = int(room / per_px)
    if pixels < 256 * 256:
        need = model.base + IMAGE_BYTES_PER_PX * image_hr_px + 256 * 256 * per_px
        raise IRNError(
            f"--max-memory {budget / MIB:.0f} MiB is too small for this image on {backend} "
            f"(needs at least {need / MIB:.0f} MiB)"
        )
    return pixels


def budget_tile(
    backend: str,
    direction: str,
    lr_h: int,
    lr_w: int,
    scale: int,
    overlap: int,
    budget: int,
    grid: int = 1,
    measured: int | None = None,
) -> tuple[int, int] | None:
    """The CPU tile (h, w) in LR px for an ``lr_h`` x ``lr_w`` image, or None for the whole image.

    The largest tiles whose modelled peak RSS (with the image's own buffers)
    stays within ``budget`` bytes, arranged to compute the fewest pixels; with a
    side code (``grid`` LR px per value, ``overlap`` a multiple of it), in whole cells.
    ``measured``: the model's own peak slope (:func:`bytes_per_hr_px`).
    """
    hr_px = lr_h * lr_w * scale * scale
    max_lr_px = max_tile_pixels(backend, direction, budget, hr_px, measured) // (scale * scale)
    cells = fit_tiles(-(-lr_h // grid), -(-lr_w // grid), overlap // grid, max_lr_px // grid**2)
    return None if cells is None else (cells[0] * grid, cells[1] * grid)
