"""One-op native ONNX graphs, written like the exporter writes them, for each plugin.

Each builder returns the native graph; ``apply_plugins`` turns it into the
one-node plugin graph. They isolate one plugin for engine checks and for
timing a plugin against the native layers it replaces (``bench.py``). They
also check the rewrite on graphs that were not traced from PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .onnx_rewrite import _haar_weight

__all__ = ["MicroGraph", "haar_down_graph", "haar_up_graph", "pack_graph", "unpack_graph",
           "gaussian_graph", "OPSET"]  # fmt: skip

OPSET = 17
_FLOAT = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}


@dataclass(frozen=True)
class MicroGraph:
    """A native graph, the plugin family that replaces it, and an example input."""

    name: str
    model: onnx.ModelProto
    family: str  # what apply_plugins needs: "haar", "pack" or "gaussian"
    input_name: str
    input_shape: tuple[int, ...]
    input_dtype: str

    def example(self, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if self.input_dtype == "uint8":
            return rng.integers(0, 256, self.input_shape, dtype=np.uint8)
        return rng.random(self.input_shape, dtype=np.float32).astype(self.input_dtype)


def _model(nodes: list, inputs: list, outputs: list, inits: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "micro", inputs, outputs, initializer=inits)
    # IR 8 (ONNX 1.13+) as the exporter writes: older runtimes reject newer IR versions.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _dims(prefix: str) -> list[str]:
    return [f"{prefix}{d}" for d in "NCHW"]


def haar_down_graph(
    levels: int, channels: int, shape_hw: tuple[int, int], dtype: str = "float32", batch: int = 1
) -> MicroGraph:
    """``levels`` stride-2 Conv layers with the Haar analysis weights (/4)."""
    np_dtype = np.dtype(dtype)
    nodes, inits, name, c = [], [], "x", channels
    for level in range(levels):
        w = numpy_helper.from_array((_haar_weight(c) * 0.25).astype(np_dtype), f"w{level}")
        out = "y" if level == levels - 1 else f"t{level}"
        nodes.append(helper.make_node("Conv", [name, w.name], [out], strides=[2, 2]))
        inits.append(w)
        name, c = out, 4 * c
    x = helper.make_tensor_value_info("x", _FLOAT[dtype], ["N", channels, "H", "W"])
    y = helper.make_tensor_value_info("y", _FLOAT[dtype], ["N", c, "h", "w"])
    shape = (batch, channels, *shape_hw)
    return MicroGraph(f"haar_down_L{levels}_{dtype}", _model(nodes, [x], [y], inits), "haar",
                      "x", shape, dtype)  # fmt: skip


def haar_up_graph(
    levels: int, channels: int, shape_hw: tuple[int, int], dtype: str = "float32", batch: int = 1
) -> MicroGraph:
    """``levels`` stride-2 ConvTranspose layers with the Haar synthesis weights."""
    np_dtype = np.dtype(dtype)
    nodes, inits, name = [], [], "y"
    c = channels * 4**levels
    for level in range(levels):
        w = numpy_helper.from_array(_haar_weight(c // 4).astype(np_dtype), f"w{level}")
        out = "x" if level == levels - 1 else f"t{level}"
        nodes.append(helper.make_node("ConvTranspose", [name, w.name], [out], strides=[2, 2]))
        inits.append(w)
        name, c = out, c // 4
    y = helper.make_tensor_value_info("y", _FLOAT[dtype], ["N", channels * 4**levels, "h", "w"])
    x = helper.make_tensor_value_info("x", _FLOAT[dtype], ["N", channels, "H", "W"])
    shape = (batch, channels * 4**levels, *shape_hw)
    return MicroGraph(f"haar_up_L{levels}_{dtype}", _model(nodes, [y], [x], inits), "haar",
                      "y", shape, dtype)  # fmt: skip


def _scalar(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


def pack_graph(shape_hw: tuple[int, int], dtype: str = "float32", batch: int = 1) -> MicroGraph:
    """float NCHW -> uint8 NHWC as the exporter's ``_image_out`` (FP16: widened first)."""
    nodes, src = [], "x"
    if dtype == "float16":
        nodes.append(helper.make_node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT))
        src = "x32"
    nodes += [
        helper.make_node("Clip", [src, "lo", "hi"], ["c"]),
        helper.make_node("Mul", ["c", "k255"], ["m"]),
        helper.make_node("Round", ["m"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Cast", ["t"], ["u"], to=TensorProto.UINT8),
    ]
    inits = [_scalar("lo", 0.0), _scalar("hi", 1.0), _scalar("k255", 255.0)]
    x = helper.make_tensor_value_info("x", _FLOAT[dtype], ["N", 3, "H", "W"])
    u = helper.make_tensor_value_info("u", TensorProto.UINT8, ["N", "H", "W", 3])
    return MicroGraph(f"pack_rgb8_{dtype}", _model(nodes, [x], [u], inits), "pack", "x",
                      (batch, 3, *shape_hw), dtype)  # fmt: skip


def unpack_graph(shape_hw: tuple[int, int], dtype: str = "float32", batch: int = 1) -> MicroGraph:
    """uint8 NHWC -> float NCHW as the exporter's ``_image_in`` (FP16: narrowed last)."""
    out = "x" if dtype == "float32" else "x32"
    nodes = [
        helper.make_node("Cast", ["u"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Div", ["t", "k255"], [out]),
    ]
    if dtype == "float16":
        nodes.append(helper.make_node("Cast", ["x32"], ["x"], to=TensorProto.FLOAT16))
    u = helper.make_tensor_value_info("u", TensorProto.UINT8, ["N", "H", "W", 3])
    x = helper.make_tensor_value_info("x", _FLOAT[dtype], ["N", 3, "H", "W"])
    return MicroGraph(f"unpack_rgb8_{dtype}", _model(nodes, [u], [x], [_scalar("k255", 255.0)]),
                      "pack", "u", (batch, *shape_hw, 3), "uint8")  # fmt: skip


def gaussian_graph(
    channels: int, temperature: float, shape_hw: tuple[int, int], batch: int = 1
) -> MicroGraph:
    """LR y -> Concat(y, RandomNormalLike(zeros(N, channels, h, w)) * t), as the up graph does."""
    i64 = np.dtype("int64")
    nodes = [helper.make_node("Shape", ["y"], ["s"])]
    for axis, name in ((0, "n"), (2, "h"), (3, "w")):
        nodes.append(helper.make_node("Gather", ["s", f"i{axis}"], [f"{name}0"], axis=0))
        nodes.append(helper.make_node("Unsqueeze", [f"{name}0", "ax0"], [name]))
    nodes += [
        helper.make_node("Concat", ["n", "zc", "h", "w"], ["zshape"], axis=0),
        helper.make_node(
            "ConstantOfShape", ["zshape"], ["zeros"],
            value=numpy_helper.from_array(np.zeros(1, np.float32)),
        ),
        helper.make_node("RandomNormalLike", ["zeros"], ["noise"], dtype=TensorProto.FLOAT),
        helper.make_node("Mul", ["noise", "temp"], ["z"]),
        helper.make_node("Concat", ["y", "z"], ["yz"], axis=1),
    ]  # fmt: skip
    inits = [
        *(numpy_helper.from_array(np.array(a, i64), f"i{a}") for a in (0, 2, 3)),
        numpy_helper.from_array(np.array([0], i64), "ax0"),
        numpy_helper.from_array(np.array([channels], i64), "zc"),
        _scalar("temp", temperature),
    ]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "h", "w"])
    yz = helper.make_tensor_value_info("yz", TensorProto.FLOAT, ["N", 3 + channels, "h", "w"])
    return MicroGraph("gaussian_z", _model(nodes, [y], [yz], inits), "gaussian", "y",
                      (batch, 3, *shape_hw), "float32")  # fmt: skip
