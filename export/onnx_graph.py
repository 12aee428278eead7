"""Trace a graph wrapper to ONNX, simplify it and check it.

Tracing uses PyTorch's TorchScript-based exporter: it needs nothing beyond
torch (the torch.export-based one needs onnxscript) and keeps dynamic N/H/W as
plain Shape ops. The result is constant-folded and simplified with onnxslim,
then checked with ``onnx.checker`` (full check, with shape inference), and the
ops used are checked against :data:`TENSORRT_OPS`.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import onnx
import onnxslim
import torch
from irn_trt.runtime.errors import IRNError
from onnx import TensorProto

__all__ = [
    "OPSET",
    "TENSORRT_OPS",
    "DynamicIO",
    "trace_to_onnx",
    "ops_used",
    "check_graph",
]

OPSET = 17

#: Every op the exported graphs may contain. Each is in ONNX-TensorRT's operator
#: support matrix (docs/operators.md of onnx/onnx-tensorrt, TensorRT >= 8.5) for
#: the types we use: Conv / ConvTranspose need initializer weights, Clip constant
#: bounds, Slice / Unsqueeze constant axes, ConstantOfShape is FP32-only (we only
#: emit FP32 ones), RandomNormalLike ignores its seed. ``Cast`` carries uint8 in/out
#: (TensorRT >= 10 lists UINT8 among its ONNX types).
TENSORRT_OPS = frozenset(
    {
        "Add",
        "Cast",
        "Clip",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "ConvTranspose",
        # FGRN's pixel shuffles (mode CRD); onnx-tensorrt docs/operators.md: FP32, FP16,
        # and its importer handles both modes with dynamic shapes.
        "DepthToSpace",
        "Div",
        "Exp",
        "Gather",
        "LeakyRelu",
        # IRN-A's logit; onnx-tensorrt docs/operators.md: Log, FP32 and FP16.
        "Log",
        # IRN-M's encoder (2x2, stride 2, ceil_mode 1); onnx-tensorrt docs/operators.md:
        # FP32, FP16, 2D; its importer maps ceil_mode to PaddingMode::kEXPLICIT_ROUND_UP.
        "MaxPool",
        "Mul",
        "RandomNormalLike",
        # FGRN's residual blocks (EDSR's); onnx-tensorrt docs/operators.md: FP32, FP16.
        "Relu",
        "Round",
        "Shape",
        "Sigmoid",
        "Slice",
        "Sub",
        "Transpose",
        "Unsqueeze",
    }
)


@dataclass(frozen=True)
class DynamicIO:
    """Name and dynamic axes (index -> symbolic name) of one graph input or output."""

    name: str
    axes: dict[int, str]


def _set_dim_params(model: onnx.ModelProto, specs: Sequence[DynamicIO]) -> None:
    """Give dynamic I/O dims our symbolic names (the tracer invents some for outputs)."""
    values = {v.name: v for v in [*model.graph.input, *model.graph.output]}
    for spec in specs:
        dims = values[spec.name].type.tensor_type.shape.dim
        for axis, name in spec.axes.items():
            dims[axis].Clear()
            dims[axis].dim_param = name


def trace_to_onnx(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    inputs: Sequence[DynamicIO],
    outputs: Sequence[DynamicIO],
) -> onnx.ModelProto:
    """Trace ``module`` at ``example_inputs``; returns the simplified, checked model."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter is deprecated but still maintained; its warnings
        # (deprecation, tracer notes on shape arithmetic) are not the user's business.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example_inputs,
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=[s.name for s in inputs],
            output_names=[s.name for s in outputs],
            dynamic_axes={s.name: dict(s.axes) for s in [*inputs, *outputs]},
            do_constant_folding=True,
        )
    model = onnx.load_from_string(buf.getvalue())
    model = onnxslim.slim(model)
    if model is None:
        raise IRNError("onnxslim failed to simplify the traced graph")
    _set_dim_params(model, [*inputs, *outputs])
    model.producer_name = "irn-trt"
    model.doc_string = ""
    check_graph(model)
    return model


def ops_used(model: onnx.ModelProto) -> list[str]:
    return sorted({n.op_type for n in model.graph.node})


def check_graph(model: onnx.ModelProto) -> None:
    """Full ``onnx.checker`` check, opset, and TensorRT-supported ops only."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise IRNError(f"exported graph fails onnx.checker: {first}") from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < OPSET:
        raise IRNError(f"exported graph has opset {opset}, need >= {OPSET}")
    extra = sorted(set(ops_used(model)) - TENSORRT_OPS)
    if extra:
        raise IRNError(f"exported graph uses ops outside the TensorRT-checked set: {extra}")
    bad = [
        init.name
        for init in model.graph.initializer
        if init.data_type in (TensorProto.DOUBLE, TensorProto.BFLOAT16)
    ]
    if bad:
        raise IRNError(f"exported graph has float64/bfloat16 constants: {bad[:3]}")
