"""Small real model directories for the TensorRT/engine-cache tests (no torch, no exporter).

The graphs honour the model-directory contract (uint8 NHWC ``hr`` -> ``lr`` and back,
dynamic N/H/W, FP16 only inside) with a trivial "model": ``down`` is a scale x scale
average pool, ``up`` a nearest-neighbour upscale (optionally adding a mean of a ``z``
input, for the ``input`` z policy). Every op is supported by ONNX Runtime and by
TensorRT's ONNX parser, so GPU tests build real engines from them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from irn_trt.runtime.manifest import (
    GraphInfo,
    ModelManifest,
    TensorInfo,
    file_sha256,
    write_manifest,
)
from onnx import TensorProto, helper

OPSET = 17
IR_VERSION = 8  # what TensorRT 10 and ONNX Runtime 1.17+ all read


def _inner_cast(nodes: list, src: str, precision: str, tag: str) -> str:
    """Cast to float16 inside the FP16 graph (I/O stays uint8)."""
    if precision != "fp16":
        return src
    nodes.append(helper.make_node("Cast", [src], [f"{tag}_h"], to=TensorProto.FLOAT16))
    return f"{tag}_h"


def _outer_cast(nodes: list, src: str, precision: str, tag: str) -> str:
    if precision != "fp16":
        return src
    nodes.append(helper.make_node("Cast", [src], [f"{tag}_f"], to=TensorProto.FLOAT))
    return f"{tag}_f"


def _to_uint8(nodes: list, inits: list, src: str, out: str) -> None:
    inits += [
        helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("hi", TensorProto.FLOAT, [], [255.0]),
    ]
    nodes += [
        helper.make_node("Round", [src], ["rounded"]),
        helper.make_node("Clip", ["rounded", "lo", "hi"], ["clipped"]),
        helper.make_node("Transpose", ["clipped"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Cast", ["nhwc"], [out], to=TensorProto.UINT8),
    ]


def down_graph(scale: int, precision: str) -> onnx.ModelProto:
    nodes: list = []
    inits: list = []
    nodes += [
        helper.make_node("Cast", ["hr"], ["hr_f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["hr_f"], ["nchw"], perm=[0, 3, 1, 2]),
    ]
    x = _inner_cast(nodes, "nchw", precision, "in")
    nodes.append(
        helper.make_node(
            "AveragePool", [x], ["pooled"], kernel_shape=[scale, scale], strides=[scale, scale]
        )
    )
    y = _outer_cast(nodes, "pooled", precision, "out")
    _to_uint8(nodes, inits, y, "lr")
    graph = helper.make_graph(
        nodes,
        f"toy_down_{precision}",
        [helper.make_tensor_value_info("hr", TensorProto.UINT8, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info("lr", TensorProto.UINT8, ["N", "h", "w", 3])],
        inits,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )


def up_graph(scale: int, precision: str, z_channels: int = 0) -> onnx.ModelProto:
    nodes: list = []
    inits = [helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, scale, scale])]
    nodes += [
        helper.make_node("Cast", ["lr"], ["lr_f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["lr_f"], ["nchw"], perm=[0, 3, 1, 2]),
    ]
    src = "nchw"
    inputs = [helper.make_tensor_value_info("lr", TensorProto.UINT8, ["N", "h", "w", 3])]
    if z_channels:
        inputs.append(
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", z_channels, "h", "w"])
        )
        nodes += [
            helper.make_node("ReduceMean", ["z"], ["zmean"], axes=[1], keepdims=1),
            helper.make_node("Add", ["nchw", "zmean"], ["with_z"]),
        ]
        src = "with_z"
    x = _inner_cast(nodes, src, precision, "in")
    nodes.append(helper.make_node("Resize", [x, "", "scales"], ["big"], mode="nearest"))
    y = _outer_cast(nodes, "big", precision, "out")
    _to_uint8(nodes, inits, y, "hr")
    graph = helper.make_graph(
        nodes,
        f"toy_up_{precision}",
        inputs,
        [helper.make_tensor_value_info("hr", TensorProto.UINT8, ["N", "H", "W", 3])],
        inits,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )


def make_toy_model_dir(
    root: Path,
    scale: int = 4,
    precisions: tuple[str, ...] = ("fp32", "fp16"),
    z_channels: int = 0,
    model: str = "toy_x4",
) -> ModelManifest:
    """Write a complete model directory (graphs + manifest.json) into ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    hr = TensorInfo("hr", "uint8", ("N", "H", "W", 3), "NHWC")
    lr = TensorInfo("lr", "uint8", ("N", "h", "w", 3), "NHWC")
    z = TensorInfo("z", "float32", ("N", z_channels, "h", "w"), "NCHW")
    graphs = []
    for precision in precisions:
        for direction in ("down", "up"):
            proto = (
                down_graph(scale, precision)
                if direction == "down"
                else up_graph(scale, precision, z_channels)
            )
            onnx.checker.check_model(proto)
            name = f"{direction}.{precision}.onnx"
            onnx.save(proto, str(root / name))
            ins = (hr,) if direction == "down" else ((lr, z) if z_channels else (lr,))
            outs = (lr,) if direction == "down" else (hr,)
            graphs.append(
                GraphInfo(direction, precision, name, file_sha256(root / name), ins, outs)
            )
    manifest = ModelManifest(
        model=model,
        scale=scale,
        architecture={"toy": True},
        checkpoint_sha256="0" * 64,
        io="uint8",
        z_policy="input" if z_channels else "zero",
        z_channels=z_channels,
        temperature=1.0,
        halo=0,
        tile_multiple=scale,
        opset=OPSET,
        versions={"onnx": onnx.__version__},
        graphs=tuple(graphs),
    )
    write_manifest(root, manifest)
    return manifest


def toy_down_reference(hr: np.ndarray, scale: int) -> np.ndarray:
    """What the toy down graph computes, in NumPy (NHWC uint8 batch)."""
    n, h, w, c = hr.shape
    pooled = hr.reshape(n, h // scale, scale, w // scale, scale, c).astype(np.float64).mean((2, 4))
    return np.clip(np.round(pooled), 0, 255).astype(np.uint8)
