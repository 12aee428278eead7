"""The ``tensorrt.plugin`` definitions, exercised without TensorRT.

TensorRT cannot be installed here, so ``register_plugins`` runs against a small
stand-in for ``tensorrt.plugin``: decorators that record the functions, plain
integers for the symbolic shapes. The test checks the signatures against the
schemas in TensorRT's documentation (the real module rejects others at
registration), then runs every descriptor and AOT implementation on concrete
shapes: output shapes equal the NumPy references', and each AOT result is real
sm_80 PTX whose scalar arguments and grid fit its kernel. Attributes arrive as
TensorRT hands them over from an ONNX graph: one-element INT32 / FLOAT32 arrays
(onnx-tensorrt's ``loadFields``), converted by the annotation's rule of
``tensorrt/plugin/_lib.py`` (``data.astype(dtype)`` for ``NDArray[dtype]``,
``int(data)`` / ``float(data)`` for scalars, which NumPy 2.4 rejects). The real
module is exercised by the ``gpu`` tests.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import re
import sys
import types
import typing

import numpy as np
import pytest
from irn_trt.plugins import reference as ref
from irn_trt.plugins.trt_plugins import FloatAttr, IntAttr, attr_float, attr_int
from packaging.version import Version

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton is not installed"
)


class _DataType:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


class _ShapeExprs(tuple):
    def numel(self) -> int:
        return math.prod(self)


class TensorDesc:
    def __init__(self, shape_expr=(), dtype=None) -> None:
        self.shape_expr = _ShapeExprs(shape_expr)
        self.dtype = dtype


class AutoTuneCombination:
    def __init__(self, io_types=None, layouts=None, tactics=None) -> None:
        self.io_types = io_types


class KernelLaunchParams:
    def __init__(self) -> None:
        self.grid_x = self.grid_y = self.grid_z = 1
        self.block_x = self.block_y = self.block_z = 1
        self.shared_mem = 0


class SymExprs(tuple):
    pass


class SymIntExprs(SymExprs):
    @classmethod
    def from_tuple(cls, items):
        return cls(items)


class SymInt32:
    def __init__(self, value) -> None:
        self.value = int(value)


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch):
    """``tensorrt`` + ``tensorrt.plugin`` stand-ins; yields {kind: {plugin id: function}}."""
    recorded: dict[str, dict[str, typing.Callable]] = {"register": {}, "autotune": {}, "aot": {}}

    def recorder(kind: str):
        def decorator_for(plugin_id: str):
            def decorator(fn):
                recorded[kind][plugin_id] = fn
                return fn

            return decorator

        return decorator_for

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.0"
    trt.float32, trt.float16, trt.uint8 = (_DataType(n) for n in ("float32", "float16", "uint8"))
    trtp = types.ModuleType("tensorrt.plugin")
    trtp.TensorDesc, trtp.AutoTuneCombination = TensorDesc, AutoTuneCombination
    trtp.KernelLaunchParams, trtp.SymIntExprs, trtp.SymInt32 = (
        KernelLaunchParams,
        SymIntExprs,
        SymInt32,
    )
    trtp.register, trtp.autotune, trtp.aot_impl = (
        recorder("register"),
        recorder("autotune"),
        recorder("aot"),
    )
    trtp.from_shape_expr = lambda shape, dtype: TensorDesc(shape, dtype)
    trtp.cdiv = lambda a, b: -(-a // b)
    trt.plugin = trtp
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    from irn_trt.plugins.trt_plugins import register_plugins

    register_plugins.cache_clear()
    ids = register_plugins(80)
    yield trt, ids, recorded
    register_plugins.cache_clear()  # the next caller gets the real tensorrt.plugin


def _params(fn) -> list[tuple[str, object]]:
    return [(n, p.annotation) for n, p in inspect.signature(fn).parameters.items()]


def test_signatures_follow_tensorrt_plugin_schemas(standin) -> None:
    _, ids, recorded = standin
    assert ids == tuple(f"irn::{op}" for op in ("haar_down", "haar_up", "pack_rgb8",
                                               "unpack_rgb8", "gaussian_z"))  # fmt: skip
    for plugin_id in ids:
        desc, tune, aot = (recorded[k][plugin_id] for k in ("register", "autotune", "aot"))
        params = _params(desc)
        tensors = [n for n, a in params if inspect.isclass(a) and issubclass(a, TensorDesc)]
        attrs = [(n, a) for n, a in params if n not in tensors]
        # register: tensors first, then attributes as NDArray[int32] / NDArray[float32] (the
        # field types the ONNX parser writes), returns one TensorDesc
        assert [n for n, _ in params[: len(tensors)]] == tensors and tensors
        assert all(a in (IntAttr, FloatAttr) for _, a in attrs), plugin_id
        assert {_array_dtype(a) for _, a in attrs} <= {np.int32, np.float32}
        assert inspect.signature(desc).return_annotation is TensorDesc
        # autotune: tensors, a subset of the attributes in order, outputs
        names = [n for n, _ in _params(tune)]
        assert names[: len(tensors)] == tensors and names[-1] == "outputs"
        for name, ann in _params(tune)[len(tensors) : -1]:
            assert (name, ann) in attrs
        ret = inspect.signature(tune).return_annotation
        assert typing.get_origin(ret) is list
        assert typing.get_args(ret) == (AutoTuneCombination,)
        # aot_impl: tensors, attributes, outputs: tuple[TensorDesc], tactic; a 4-tuple back
        aot_params = _params(aot)
        assert [n for n, _ in aot_params] == [*tensors, *(n for n, _ in attrs), "outputs", "tactic"]
        outputs = dict(aot_params)["outputs"]
        assert typing.get_origin(outputs) is tuple and typing.get_args(outputs) == (TensorDesc,)
        ret = inspect.signature(aot).return_annotation
        assert typing.get_origin(ret) is tuple
        name_t, ptx_t, launch_t, extra_t = typing.get_args(ret)
        assert name_t in (str, bytes) and ptx_t in (str, bytes)
        assert launch_t is KernelLaunchParams and issubclass(extra_t, SymExprs)


def _array_dtype(annotation) -> type:
    """The dtype of an ``NDArray[dtype]`` annotation, read the way tensorrt.plugin reads it."""
    assert typing.get_origin(annotation) is np.ndarray, annotation
    return typing.get_args(typing.get_args(annotation)[1])[0]


def _parser_field(value) -> np.ndarray:
    """An INT / FLOAT ONNX attribute as TensorRT's ONNX parser passes it: one element."""
    return np.array([value], np.float32 if isinstance(value, float) else np.int32)


def _handed_over(annotation, data: np.ndarray):
    """What tensorrt.plugin gives the plugin functions for a field (its create_plugin rule)."""
    if typing.get_origin(annotation) is np.ndarray:
        return data.astype(_array_dtype(annotation))
    return annotation(data)


def _run(recorded, plugin_id: str, inputs: list[TensorDesc], attrs: dict):
    desc = recorded["register"][plugin_id]
    annotations = {n: a for n, a in _params(desc)}
    given = {k: _handed_over(annotations[k], _parser_field(v)) for k, v in attrs.items()}
    assert all(isinstance(v, np.ndarray) and v.shape == (1,) for v in given.values())
    out = desc(*inputs, **given)
    # TensorRT passes every attribute positionally to aot_impl, in registration order
    result = recorded["aot"][plugin_id](*inputs, *given.values(), outputs=(out,), tactic=0)
    return out, result


def test_attributes_accept_the_one_element_arrays_of_the_onnx_parser(standin) -> None:
    trt, _, recorded = standin
    assert attr_int(np.array([3], np.int32)) == 3
    assert attr_int(np.int64(2)) == 2 and attr_int(1) == 1  # scalars still work
    assert attr_float(np.array([0.8], np.float32)) == float(np.float32(0.8))
    with pytest.raises(ValueError, match="one value"):
        attr_int(np.array([1, 2], np.int32), "levels")
    if Version(np.__version__) >= Version("2.4"):
        # the failure the array annotations avoid: a scalar annotation gets int(array)
        with pytest.raises(TypeError):
            _handed_over(int, _parser_field(2))
    # every descriptor and aot_impl with attributes, fed what TensorRT hands over
    x = TensorDesc((1, 3, 8, 8), trt.float32)
    cases = [
        ("irn::haar_down", x, {"levels": 2}, (1, 48, 2, 2)),
        ("irn::haar_up", TensorDesc((1, 48, 2, 2), trt.float32), {"levels": 2}, (1, 3, 8, 8)),
        ("irn::unpack_rgb8", TensorDesc((1, 8, 8, 3), trt.float32), {"fp16": 1}, (1, 3, 8, 8)),
        ("irn::gaussian_z", x, {"channels": 5, "seed": 7, "scale": 0.5}, (1, 5, 8, 8)),
    ]
    for plugin_id, desc, attrs, shape in cases:
        out, (name, ptx, _, _) = _run(recorded, plugin_id, [desc], attrs)
        assert tuple(out.shape_expr) == shape and all(type(d) is int for d in out.shape_expr)
        assert name and b".target sm_80" in ptx
    # autotune reads unpack's attribute too
    tune = recorded["autotune"]["irn::unpack_rgb8"]
    (combo,) = tune(cases[2][1], _handed_over(IntAttr, _parser_field(1)), outputs=())
    assert combo.io_types == "FP32, FP16"


@pytest.mark.slow
def test_descriptors_and_aot_implementations_on_concrete_shapes(standin) -> None:
    trt, _, recorded = standin
    f32, f16 = trt.float32, trt.float16
    cases = [
        ("irn::haar_down", [TensorDesc((2, 3, 40, 56), f32)], {"levels": 1},
         ref.haar_down_ref(np.zeros((2, 3, 40, 56), np.float32), 1).shape, f32, 2 * 3 * 20 * 28),
        ("irn::haar_down", [TensorDesc((2, 3, 40, 56), f16)], {"levels": 2},
         (2, 48, 10, 14), f16, 2 * 3 * 10 * 14),
        ("irn::haar_up", [TensorDesc((2, 48, 5, 7), f32)], {"levels": 2},
         ref.haar_up_ref(np.zeros((2, 48, 5, 7), np.float32), 2).shape, f32, 2 * 3 * 5 * 7),
        # pack/unpack: float byte values on the uint8 side (the uint8 Casts stay native)
        ("irn::pack_rgb8", [TensorDesc((2, 3, 9, 13), f16)], {}, (2, 9, 13, 3), f32,
         2 * 3 * 9 * 13),
        ("irn::unpack_rgb8", [TensorDesc((2, 9, 13, 3), f32)], {"fp16": 1}, (2, 3, 9, 13), f16,
         2 * 3 * 9 * 13),
        ("irn::gaussian_z", [TensorDesc((2, 3, 5, 7), f32)],
         {"channels": 45, "seed": 9, "scale": 0.8}, (2, 45, 5, 7), f32, 2 * 45 * 5 * 7),
    ]  # fmt: skip
    for plugin_id, inputs, attrs, shape, dtype, work in cases:
        out, (name, ptx, launch, extra) = _run(recorded, plugin_id, inputs, attrs)
        assert tuple(out.shape_expr) == tuple(shape) and out.dtype is dtype, plugin_id
        ptx = ptx.decode()
        assert name.decode() == plugin_id.split("::")[1] + "_kernel"
        assert ".target sm_80" in ptx and f".entry {name.decode()}(" in ptx
        # TensorRT passes: input pointers, then these int32 scalars, then output pointers
        params = re.findall(rf"\.param \.(\w+)[^\n]*?{name.decode()}_param_(\d+)", ptx)
        kinds = [k for k, _ in params][: len(inputs) + len(extra) + 1]
        assert kinds == ["u64"] * len(inputs) + ["u32"] * len(extra) + ["u64"], plugin_id
        assert all(isinstance(e, SymInt32) and e.value > 0 for e in extra)
        # one program per BLOCK items (Haar: per BLOCK_P pixel blocks) covers the work once
        label = _spec_label(plugin_id, attrs, inputs)
        block = int(re.search(r"(?:BLOCK|BLOCK_P)=(\d+)", label).group(1))
        assert launch.grid_x == -(-work // block), plugin_id
        assert launch.block_x == 128 and launch.shared_mem >= 0


def _spec_label(plugin_id: str, attrs: dict, inputs: list[TensorDesc]) -> str:
    from irn_trt.plugins import aot

    dtype = "float16" if any(i.dtype.name == "float16" for i in inputs) else "float32"
    op = plugin_id.split("::")[1]
    if op.startswith("haar"):
        return getattr(aot, f"{op}_spec")(attrs["levels"], dtype).label()
    if op == "gaussian_z":
        return aot.gaussian_z_spec(attrs["seed"], attrs["scale"], dtype).label()
    return getattr(aot, f"{op}_spec")(dtype).label()


@pytest.mark.parametrize(
    ("version", "ok"),
    [("10.6.0", False), ("10.8.0.43", False), ("10.9.0.34", True), ("11.1.0", True)],
)
def test_plugin_tests_need_tensorrt_10_9(
    monkeypatch: pytest.MonkeyPatch, version: str, ok: bool
) -> None:
    # what the gpu plugin tests skip on (with this reason): no AOT plugins before 10.9
    from irn_trt.plugins import tensorrt_plugin_api_reason

    trt, trtp = types.ModuleType("tensorrt"), types.ModuleType("tensorrt.plugin")
    trt.__version__, trt.plugin = version, trtp
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    reason = tensorrt_plugin_api_reason()
    assert reason is None if ok else f"TensorRT {version} has no AOT" in reason
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not installed
    assert "tensorrt.plugin is not importable" in tensorrt_plugin_api_reason()
