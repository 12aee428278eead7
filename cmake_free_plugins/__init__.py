"""CMake-free TensorRT plugins for IRN: Triton kernels behind ``tensorrt.plugin``.

Modules (import what you need; nothing here imports Triton, TensorRT or torch):

- ``reference``: NumPy specification of every plugin (tests and CPU evaluation);
- ``kernels``: the Triton kernels and launch helpers (needs ``triton``);
- ``aot``: ahead-of-time compilation of the kernels to PTX (needs ``triton``);
- ``trt_plugins``: ``register_plugins()``, the TensorRT definitions (needs ``tensorrt``);
- ``onnx_rewrite``: ``apply_plugins(model, {"haar", "pack", "gaussian"})`` for ``irn-export``;
- ``onnx_reference``: run a plugin graph on the CPU, custom nodes by their references.

See ``README.md`` next to this file for how to add the next plugin.
"""

from __future__ import annotations

from collections.abc import Iterable

from irn_trt.runtime.errors import IRNError

from .trt_plugins import PLUGIN_NAMESPACE, PLUGIN_OPS, register_plugins, tensorrt_plugin_api_reason

__all__ = [
    "PLUGIN_NAMESPACE",
    "PLUGIN_OPS",
    "register_plugins",
    "tensorrt_plugin_api_reason",
    "prepare_tensorrt_for",
]


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
