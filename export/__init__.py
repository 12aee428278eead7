"""ONNX export: an IRN model -> a model directory of split down/up graphs (FP32 and FP16)."""

from .api import ExportOptions, build_graph, export_model, weights_sha256
from .graphs import DownGraph, GraphSpec, UpGraph
from .halo import Halo, measure_halo
from .verify import Bounds

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
