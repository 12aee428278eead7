"""TensorRT side of the irn::* plugins: registration, engines, self-contained plans, timing.

All tests here need an NVIDIA GPU with TensorRT >= 10.9 (AOT Python plugins),
Triton and onnx; without a GPU they are skipped by the ``gpu`` marker (see
conftest.py), and without the rest by the checks below, each with its reason.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="onnx is not installed (pip install 'irn-trt[train]')")

from irn_trt.plugins import micro_graphs as mg  # noqa: E402
from irn_trt.plugins import reference as ref  # noqa: E402
from irn_trt.plugins.onnx_rewrite import apply_plugins, plugin_ops  # noqa: E402

pytestmark = pytest.mark.gpu


def plugin_stack_reason() -> str | None:
    """None when Triton and TensorRT's AOT plugin API (10.9+) are here, else why not."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'irn-trt[plugins]')"
    from irn_trt.plugins import tensorrt_plugin_api_reason

    return tensorrt_plugin_api_reason()


@pytest.fixture(autouse=True, scope="module")
def _plugin_stack() -> None:
    # a fixture, not a collection-time check: tensorrt is imported only where tests run
    reason = plugin_stack_reason()
    if reason:
        pytest.skip(f"plugin test: {reason}")


MICRO = [
    mg.haar_down_graph(1, 3, (40, 56), "float32", 2),
    mg.haar_down_graph(2, 3, (40, 56), "float16", 2),
    mg.haar_up_graph(1, 12, (5, 7), "float32", 2),
    mg.haar_up_graph(3, 3, (5, 7), "float32", 2),
    mg.pack_graph((9, 13), "float32", 2),
    mg.pack_graph((9, 13), "float16", 3),
    mg.unpack_graph((9, 13), "float32", 2),
    mg.unpack_graph((9, 13), "float16", 2),
    mg.gaussian_graph(45, 0.8, (5, 7), 2),
]


def _reference(graph: mg.MicroGraph, x: np.ndarray, seed: int) -> np.ndarray:
    if graph.name.startswith("haar_down"):
        return ref.haar_down_ref(x, int(graph.name[len("haar_down_L")]))
    if graph.name.startswith("haar_up"):
        return ref.haar_up_ref(x, int(graph.name[len("haar_up_L")]))
    if graph.name.startswith("pack"):  # the plugin's byte values, then the native Cast
        return ref.pack_rgb8_ref(x).astype(np.uint8)
    if graph.name.startswith("unpack"):
        return ref.unpack_rgb8_ref(x, np.float16 if graph.name.endswith("16") else np.float32)
    n, _, h, w = x.shape
    z = ref.gaussian_z_ref((n, 45, h, w), seed, np.float32(0.8))
    return np.concatenate([x, z], axis=1)


def test_plugins_register_with_tensorrt() -> None:
    from irn_trt.plugins import PLUGIN_OPS, register_plugins, tensorrt_plugin_api_reason

    assert tensorrt_plugin_api_reason() is None
    assert register_plugins() == tuple(f"irn::{op}" for op in PLUGIN_OPS)
    assert register_plugins() == register_plugins()  # idempotent


def test_kernels_target_this_gpu_with_ptx_its_driver_loads() -> None:
    import re

    from irn_trt.plugins import aot

    major, minor, driver = aot.local_device()
    kernel = aot.compile_kernel(aot.haar_down_spec(2, "float16"))  # this GPU, this driver
    assert re.fullmatch(rf"sm_{10 * major + minor}a?", kernel.target)
    isa = re.search(r"^\.version (\d+)\.(\d+)$", kernel.ptx, re.MULTILINE)
    assert isa and 10 * int(isa[1]) + int(isa[2]) <= aot.ptx_isa_for_cuda(driver)


@pytest.mark.parametrize("graph", MICRO, ids=lambda g: g.name)
def test_plugin_engine_matches_reference(graph: mg.MicroGraph) -> None:
    from irn_trt.plugins.trt_engine import EngineRunner, build_plan

    seed = 11
    plugged = apply_plugins(graph.model, {graph.family}, seed=seed)
    runner = EngineRunner(build_plan(plugged, {graph.input_name: graph.input_shape}))
    try:
        x = graph.example(3)
        (out,) = runner.run({graph.input_name: x}).values()
    finally:
        runner.close()
    want = _reference(graph, x, seed)
    assert out.shape == want.shape and out.dtype == want.dtype
    if out.dtype == np.uint8 or graph.name.startswith("unpack"):
        np.testing.assert_array_equal(out, want)
    elif graph.family == "gaussian":
        np.testing.assert_array_equal(out[:, :3], want[:, :3])
        # device log/cos (libdevice) vs NumPy's: a few float32 ulps
        np.testing.assert_allclose(out[:, 3:], want[:, 3:], rtol=0, atol=1e-5)
    else:  # Haar: float32 sums of 4^L taps against an exact reference; FP16 storage
        levels = int(graph.name.split("_L")[1][0])
        tol = 1e-6 * 4**levels if out.dtype == np.float32 else 1e-3
        np.testing.assert_allclose(out.astype(np.float64), want, rtol=0, atol=tol)


def test_irn_plugin_engines_match_native_engines(set5_dir: Path) -> None:
    torch = pytest.importorskip("torch", reason="the IRN graphs are traced with torch")
    from irn_trt.export.graphs import DownGraph, GraphSpec, UpGraph
    from irn_trt.export.onnx_graph import DynamicIO, trace_to_onnx
    from irn_trt.export.random_init import random_model
    from irn_trt.plugins.trt_engine import EngineRunner, build_plan
    from irn_trt.runtime.image_io import read_rgb

    model = random_model("irn_x4", seed=2)
    hr = read_rgb(set5_dir / "baby.png")[:128, :192][None]
    dims = {0: "N", 1: "H", 2: "W"}
    for direction, feed in (("down", hr), ("up", hr[:, ::4, ::4].copy())):
        for precision in ("fp32", "fp16"):
            spec = GraphSpec(precision=precision, io="uint8")
            module = DownGraph(model, spec) if direction == "down" else UpGraph(model, spec)
            name_in, name_out = ("hr", "lr") if direction == "down" else ("lr", "hr")
            native = trace_to_onnx(
                module,
                (torch.from_numpy(feed),),
                [DynamicIO(name_in, dims)],
                [DynamicIO(name_out, dims)],
            )
            plugged = apply_plugins(native, {"haar", "pack"})
            shapes = {name_in: feed.shape}
            outs = []
            for graph in (native, plugged):
                runner = EngineRunner(build_plan(graph, shapes), plugin_ops(graph))
                try:
                    outs.append(runner.run({name_in: feed})[name_out].astype(int))
                finally:
                    runner.close()
            assert np.abs(outs[0] - outs[1]).max() <= 1, (direction, precision)
            assert np.mean(outs[0] != outs[1]) < 0.01, (direction, precision)


def test_aot_plugin_engine_runs_without_the_plugin_definitions(tmp_path: Path) -> None:
    from irn_trt.plugins.trt_engine import build_plan

    graph = mg.pack_graph((9, 13), "float32", 1)
    plan = build_plan(apply_plugins(graph.model, {"pack"}), {"x": graph.input_shape})
    path = tmp_path / "pack.plan"
    path.write_bytes(plan)
    # A fresh interpreter that never imports irn_trt: the PTX is inside the plan.
    code = (
        "import sys, tensorrt as trt\n"
        "rt = trt.Runtime(trt.Logger(trt.Logger.WARNING))\n"
        f"engine = rt.deserialize_cuda_engine(open({str(path)!r}, 'rb').read())\n"
        "sys.exit(0 if engine is not None and 'irn_trt' not in sys.modules else 1)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=300).returncode == 0


def test_benchmark_reports_every_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    from irn_trt.plugins.bench import main

    assert main(["--size", "256x128", "--iterations", "3", "--json", "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 8
    for row in rows:
        assert row["native_ms"] > 0 and row["plugin_ms"] > 0
        assert row["max_abs_diff"] <= 1.0
