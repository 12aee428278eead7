"""CMake-free TensorRT plugins for IRN: Triton kernels behind ``tensorrt.plugin``.

Modules (import what you need; nothing here imports Triton, TensorRT or torch):

- ``reference``: NumPy specification of every plugin (tests and CPU evaluation);
- ``kernels``: the Triton kernels and launch helpers (needs ``triton``);
- ``aot``: ahead-of-time compilation of the kernels to PTX (needs ``triton``);
- ``trt_plugins``: ``register_plugins()``, the TensorRT definitions (needs ``tensorrt``);
- ``onnx_rewrite``: ``apply_plugins(model, {"haar", "pack", "gaussian"})`` for ``irn-export``;
- ``onnx_reference``: run a plugin graph on the CPU, custom nodes by their references;
- :func:`fingerprint`: what a plugin engine embeds besides the graph (engine-cache key).

See ``README.md`` next to this file for how to add the next plugin.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

from irn_trt.runtime.errors import IRNError

from .trt_plugins import PLUGIN_NAMESPACE, PLUGIN_OPS, register_plugins, tensorrt_plugin_api_reason

__all__ = [
    "PLUGIN_NAMESPACE",
    "PLUGIN_OPS",
    "register_plugins",
    "tensorrt_plugin_api_reason",
    "prepare_tensorrt_for",
    "fingerprint",
    "FINGERPRINT_SOURCES",
]

#: The files whose text ends up in a plugin engine: the kernels and their constants (the
#: PTX), and the AOT glue (compile options, launch geometry, scalar arguments).
FINGERPRINT_SOURCES = ("kernels.py", "geometry.py", "aot.py", "trt_plugins.py")


def prepare_tensorrt_for(plugins: Iterable[str]) -> None:
    """Register the ``irn::*`` plugins a graph uses (``GraphInfo.plugins``) with TensorRT.

    Call it before parsing such a graph or deserializing its engine; it does
    nothing for native graphs (empty ``plugins``) and raises a one-line
    IRNError when ``tensorrt.plugin`` cannot provide them.
    """
    wanted = [p for p in plugins if p]
    if not wanted:
        return
    reason = tensorrt_plugin_api_reason()
    if reason is not None:
        raise IRNError(f"graph uses TensorRT plugins {', '.join(wanted)} but {reason}")
    known = set(register_plugins())
    missing = sorted(set(wanted) - known)
    if missing:
        raise IRNError(f"unknown TensorRT plugin(s) {', '.join(missing)}; known: {sorted(known)}")


def _triton_version() -> str:
    try:
        return metadata.version("triton")
    except metadata.PackageNotFoundError:
        return "absent"


def fingerprint(
    sources: Mapping[str, bytes] | None = None,
    triton_version: str | None = None,
    driver_version: int = 0,
) -> str:
    """SHA-256 of what a plugin engine embeds beyond its ONNX graph: the kernel sources,
    the AOT glue (:data:`FINGERPRINT_SOURCES`), the Triton version that compiled them and
    the CUDA driver version (``cudaDriverGetVersion``; 0: not known) that chose their PTX
    ISA (:func:`.aot.choose_ptx_version`).

    Part of the engine-cache key of graphs that use plugins, so an edited kernel, another
    Triton or another driver rebuilds the engine instead of loading stale PTX (after a
    driver downgrade a cached engine's PTX may not load at all). ``sources`` (file name ->
    bytes) and ``triton_version`` default to this installation's.
    """
    if sources is None:
        here = Path(__file__).resolve().parent
        sources = {name: (here / name).read_bytes() for name in FINGERPRINT_SOURCES}
    h = hashlib.sha256()
    h.update(f"triton={triton_version or _triton_version()}\n".encode())
    if driver_version:  # absent from keys made before the driver was part of them
        h.update(f"driver={driver_version}\n".encode())
    for name in sorted(sources):
        data = sources[name]
        h.update(f"{name}:{len(data)}\n".encode())
        h.update(data)
    return h.hexdigest()
