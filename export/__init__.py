"""ONNX export: an IRN model -> a model directory of split down/up graphs (FP32 and FP16)."""

import importlib
from typing import Any

# Loaded on first use (PEP 562): importing irn_trt.export.cli for --help must not import torch.
_LAZY = {
    "ExportOptions": "api",
    "build_graph": "api",
    "export_model": "api",
    "weights_sha256": "api",
    "DownGraph": "graphs",
    "GraphSpec": "graphs",
    "UpGraph": "graphs",
    "Halo": "halo",
    "measure_halo": "halo",
    "Bounds": "verify",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Bounds",
    "DownGraph",
    "ExportOptions",
    "GraphSpec",
    "Halo",
    "UpGraph",
    "build_graph",
    "export_model",
    "measure_halo",
    "weights_sha256",
]
