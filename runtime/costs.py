"""Arithmetic cost of a model, and a reference workload that measures a backend's peak.

:func:`model_macs` counts the multiply-adds of the convolutions an exported IRN graph
runs (the dense blocks of every coupling block, and the downsampler as the dense strided
Conv / ConvTranspose the exporter writes), from the ``architecture`` of ``manifest.json``.
Element-wise work (activations, the coupling's exp/sigmoid, the quantiser) is not
counted. Down and up cost the same: the inverse evaluates the same three dense blocks per
coupling block and the transposed downsampler. IRN x4 on a 1920x1080 HR frame:
1.2108e12 multiply-adds per direction, the figure of the IRN paper's cost table.
``tests/test_bench.py`` checks the count against the Conv nodes of an exported graph.

:func:`conv_peak_onnx` writes a one-node ONNX graph (a 3x3 convolution with many
channels) without the ``onnx`` package, so ``irn-bench`` can measure on each backend
what its convolutions reach at best: the reference for the achieved GFLOP/s. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import IRNError
from .manifest import ModelManifest

__all__ = ["model_macs", "direction_macs", "conv_macs", "conv_peak_onnx", "PEAK_CHANNELS"]

#: Channels of the reference convolution (in = out); many more than IRN's 32-wide
#: dense-block outputs, so the reference is what the backend's conv kernels can do.
PEAK_CHANNELS = 256

_FACTOR = {"haar": 2, "learned3": 3, "ycbcr": 1}


def _dense_block_macs(cin: int, cout: int, growth: int) -> int:
    """Per output pixel: four 3x3 convs growing by ``growth``, then one to ``cout``."""
    return 9 * (sum((cin + k * growth) * growth for k in range(4)) + (cin + 4 * growth) * cout)


def model_macs(architecture: Mapping[str, Any], hr_height: int, hr_width: int) -> int:
    """Multiply-adds of one pass (down or up) over an HR image of this size.

    The size is padded up to a multiple of the scale first, as the runtime does.
    """
    try:
        stages = [(str(s["downsampler"]), int(s["blocks"])) for s in architecture["stages"]]
        channels = int(architecture.get("in_channels", 3))
        growth = int(architecture.get("growth", 32))
    except (KeyError, TypeError, ValueError) as exc:
        raise IRNError(f"manifest architecture is incomplete ({exc})") from None
    # The coupling blocks' LR branch: grey (IRN_color), colours + alpha code (IRN-A), colours.
    if stages and stages[0][0] == "ycbcr":
        split = 1
    else:
        split = channels + int(bool(architecture.get("alpha_channel", False)))
    scale = 1
    for kind, _ in stages:
        if kind not in _FACTOR:
            raise IRNError(f"unknown downsampler {kind!r} in the manifest architecture")
        scale *= _FACTOR[kind]
    lr_h, lr_w = -(-hr_height // scale), -(-hr_width // scale)
    total = 0
    below = scale  # scale still to go below the current stage (LR = this stage / below)
    alpha = bool(architecture.get("alpha_channel", False))
    for index, (kind, blocks) in enumerate(stages):
        f = _FACTOR[kind]
        below //= f
        pixels = lr_h * below * lr_w * below  # positions at this stage's resolution
        total += pixels * (f * f * channels) * channels * f * f  # dense (f²C, C, f, f) conv
        channels *= f * f
        if alpha and index == 0:  # IRN-A's pre-split: a (C, C, 1, 1) channel mix
            total += pixels * channels * channels
        rest = channels - split
        block = _dense_block_macs(rest, split, growth) + 2 * _dense_block_macs(split, rest, growth)
        total += pixels * blocks * block
    return total


def direction_macs(manifest: ModelManifest, hr_height: int, hr_width: int) -> dict[str, int]:
    """Multiply-adds of the down and up graphs over an HR image of this size.

    The manifest's ``macs_per_lr_pixel`` (written by the exporter for every model
    family) times the padded LR area; older manifests: :func:`model_macs` of their
    IRN ``architecture``, the same for both directions.
    """
    if manifest.macs_per_lr_pixel is not None:
        s = manifest.scale
        pixels = -(-hr_height // s) * -(-hr_width // s)
        return {d: manifest.macs_per_lr_pixel[d] * pixels for d in ("down", "up")}
    macs = model_macs(manifest.architecture, hr_height, hr_width)
    return {"down": macs, "up": macs}


def conv_macs(channels: int, height: int, width: int) -> int:
    """Multiply-adds of the reference 3x3 convolution (same padding) on one image."""
    return channels * channels * 9 * height * width


# --- a minimal ONNX writer (protobuf wire format) for the reference graph ---------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes(field: int, payload: bytes | str) -> bytes:
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _tensor_type(shape: tuple[int, ...]) -> bytes:
    dims = b"".join(_bytes(1, _int(1, d)) for d in shape)  # TensorShapeProto.dim.dim_value
    tensor = _int(1, 1) + _bytes(2, dims)  # elem_type FLOAT, shape
    return _bytes(1, tensor)  # TypeProto.tensor_type


def _value_info(name: str, shape: tuple[int, ...]) -> bytes:
    return _bytes(1, name) + _bytes(2, _tensor_type(shape))


def _ints_attribute(name: str, values: tuple[int, ...]) -> bytes:
    return _bytes(1, name) + b"".join(_int(8, v) for v in values) + _int(20, 7)  # type INTS


def conv_peak_onnx(
    channels: int = PEAK_CHANNELS, height: int = 128, width: int = 128, seed: int = 0
) -> bytes:
    """ONNX bytes of ``y = Conv3x3(x)``: float32 NCHW (1, channels, height, width) in and out."""
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((channels, channels, 3, 3)) * 0.02).astype("<f4")
    initializer = (
        b"".join(_int(1, d) for d in weight.shape)
        + _int(2, 1)  # data_type FLOAT
        + _bytes(8, "w")
        + _bytes(9, weight.tobytes())
    )
    node = (
        _bytes(1, "x")
        + _bytes(1, "w")
        + _bytes(2, "y")
        + _bytes(3, "conv")
        + _bytes(4, "Conv")
        + _bytes(5, _ints_attribute("kernel_shape", (3, 3)))
        + _bytes(5, _ints_attribute("pads", (1, 1, 1, 1)))
    )
    shape = (1, channels, height, width)
    graph = (
        _bytes(1, node)
        + _bytes(2, "conv_peak")
        + _bytes(5, initializer)
        + _bytes(11, _value_info("x", shape))
        + _bytes(12, _value_info("y", shape))
    )
    opset = _bytes(1, "") + _int(2, 17)
    return _int(1, 8) + _bytes(2, "irn-trt") + _bytes(7, graph) + _bytes(8, opset)
