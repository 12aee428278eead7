"""Plugin variants of exported IRN graphs: structure, and equality with the native graphs.

Native graphs come from the exporter's own wrappers (``export/graphs.py``) on
small random-weight IRNs (two Haar levels, one coupling block each, so both
the IRN and the IRN_E layouts are covered in seconds). A plugin graph is run
with its native pieces in ONNX Runtime and each ``irn`` node computed by its
NumPy reference (``run_split``), and compared with ONNX Runtime running the
native graph on real image crops.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from irn_trt.export.graphs import DownGraph, GraphSpec, UpGraph
from irn_trt.export.onnx_graph import DynamicIO, trace_to_onnx
from irn_trt.plugins import reference as ref
from irn_trt.plugins.onnx_reference import plugin_boundaries, run_split, run_with_references
from irn_trt.plugins.onnx_rewrite import (
    PluginRewriteError,
    apply_plugins,
    parse_plugin_list,
    plugin_ops,
)
from irn_trt.runtime.image_io import read_rgb
from irn_trt.train.models import InvertibleRescaler, IRNConfig, Stage, randomize_weights

LAYOUTS = {
    "irn": (Stage("haar", 1), Stage("haar", 1)),  # Haar, blocks, Haar, blocks (IRN x4)
    "irn_e": (Stage("haar", 0), Stage("haar", 1)),  # both Haar levels first (IRN_E x4)
}
Z_CHANNELS = 45
TEMPERATURE = 0.8


@functools.cache
def _model(layout: str) -> InvertibleRescaler:
    return randomize_weights(
        InvertibleRescaler(IRNConfig(f"t_{layout}", LAYOUTS[layout])), 5
    ).eval()


def _image_dims(io: str) -> dict[int, str]:
    return {0: "N", 1: "H", 2: "W"} if io == "uint8" else {0: "N", 2: "H", 3: "W"}


@functools.cache
def _export(
    layout: str, direction: str, precision: str, io: str = "uint8", z: str = "zero"
) -> onnx.ModelProto:
    spec = GraphSpec(precision=precision, io=io)  # type: ignore[arg-type]
    model = _model(layout)
    size = 16 if direction == "down" else 4
    shape = (1, size, size, 3) if io == "uint8" else (1, 3, size, size)
    dtype = torch.uint8 if io == "uint8" else torch.float32
    example: tuple[torch.Tensor, ...] = (torch.zeros(shape, dtype=dtype),)
    if direction == "down":
        module = DownGraph(model, spec)
        ios = ([DynamicIO("hr", _image_dims(io))], [DynamicIO("lr", _image_dims(io))])
    else:
        module = UpGraph(model, spec, z, TEMPERATURE)  # type: ignore[arg-type]
        inputs = [DynamicIO("lr", _image_dims(io))]
        if z == "input":
            example += (torch.zeros(1, Z_CHANNELS, size, size),)
            inputs.append(DynamicIO("z", {0: "N", 2: "H", 3: "W"}))
        ios = (inputs, [DynamicIO("hr", _image_dims(io))])
    return trace_to_onnx(module, example, *ios)


@pytest.fixture(scope="module")
def crops(set5_dir) -> np.ndarray:
    """Two real 36x44 HR crops (LR 9x11 at x4: odd sizes), uint8 NHWC, batch 2."""
    a = read_rgb(set5_dir / "baby.png")[100:136, 120:164]
    b = read_rgb(set5_dir / "butterfly.png")[60:96, 90:134]
    return np.stack([a, b])


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), opts, ["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _plugin_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == "irn"]


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _io(model: onnx.ModelProto) -> list[tuple]:
    def sig(v: onnx.ValueInfoProto) -> tuple:
        t = v.type.tensor_type
        return (v.name, t.elem_type, tuple(d.dim_param or d.dim_value for d in t.shape.dim))

    return [sig(v) for v in [*model.graph.input, *model.graph.output]]


# ---- structure ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "direction", "levels"),
    [("irn", "down", [1, 1]), ("irn", "up", [1, 1]), ("irn_e", "down", [2]), ("irn_e", "up", [2])],
)
def test_plugin_graph_structure(layout: str, direction: str, levels: list[int]) -> None:
    native = _export(layout, direction, "fp32")
    plugged = apply_plugins(native, {"haar", "pack"})
    onnx.checker.check_model(plugged, full_check=True)
    assert _io(plugged) == _io(native)  # same inputs/outputs: a drop-in replacement
    assert any(o.domain == "irn" and o.version == 1 for o in plugged.opset_import)
    nodes = _plugin_nodes(plugged)
    haar = "haar_down" if direction == "down" else "haar_up"
    assert [n.op_type for n in nodes] == ["unpack_rgb8", *[haar] * len(levels), "pack_rgb8"]
    for node in nodes:
        attrs = _attrs(node)
        assert attrs["plugin_namespace"] == b"irn" and attrs["aot"] == 1
    assert [_attrs(n)["levels"] for n in nodes[1:-1]] == levels
    assert _attrs(nodes[0])["fp16"] == 0
    # the uint8 Casts stay native at the boundary (no UINT8 plugin tensors): the
    # plugins read and write the float side of them
    producer = {o: n for n in plugged.graph.node for o in n.output}
    consumers = {i: n for n in plugged.graph.node for i in n.input}
    first_cast = producer[nodes[0].input[0]]
    assert first_cast.op_type == "Cast" and _attrs(first_cast)["to"] == onnx.TensorProto.FLOAT
    assert list(first_cast.input) == [native.graph.input[0].name]
    last_cast = consumers[nodes[-1].output[0]]
    assert last_cast.op_type == "Cast" and _attrs(last_cast)["to"] == onnx.TensorProto.UINT8
    assert list(last_cast.output) == [native.graph.output[0].name]
    # no native Haar, Round or RandomNormalLike left behind
    ops = {n.op_type for n in plugged.graph.node}
    assert "ConvTranspose" not in ops and "Round" not in ops
    two_by_two = [
        n for n in plugged.graph.node
        if n.op_type == "Conv"
        and next(i for i in plugged.graph.initializer if i.name == n.input[1]).dims[2] == 2
    ]  # fmt: skip
    assert not two_by_two
    assert plugin_ops(plugged) == ("irn::" + haar, "irn::pack_rgb8", "irn::unpack_rgb8")
    assert len(plugged.graph.node) < len(native.graph.node)
    # the native graph is not modified
    assert not _plugin_nodes(native)


def test_fp16_graph_absorbs_its_casts() -> None:
    native = _export("irn", "up", "fp16")
    plugged = apply_plugins(native, {"pack"})
    unpack, pack = _plugin_nodes(plugged)
    assert _attrs(unpack)["fp16"] == 1
    # pack reads the FP16 tensor directly (the kernel widens it exactly)
    producer = {o: n for n in plugged.graph.node for o in n.output}
    assert producer[pack.input[0]].op_type == "ConvTranspose"
    assert _io(plugged) == _io(native)


def test_gaussian_plugin_structure() -> None:
    native = _export("irn", "up", "fp16", z="gaussian")
    plugged = apply_plugins(native, {"gaussian", "haar", "pack"}, seed=1234)
    (node,) = [n for n in _plugin_nodes(plugged) if n.op_type == "gaussian_z"]
    attrs = _attrs(node)
    assert attrs["channels"] == Z_CHANNELS and attrs["seed"] == 1234
    assert attrs["scale"] == pytest.approx(TEMPERATURE, rel=1e-7)
    ops = {n.op_type for n in plugged.graph.node}
    assert not ops & {"RandomNormalLike", "ConstantOfShape", "Shape"}
    consumer = [n for n in plugged.graph.node if node.output[0] in n.input]
    assert [n.op_type for n in consumer] == ["Concat"]
    assert list(consumer[0].input) == [node.input[0], node.output[0]]


# ---- numbers --------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["irn", "irn_e"])
def test_fp32_plugin_graphs_equal_native_in_onnxruntime(layout: str, crops: np.ndarray) -> None:
    down = _export(layout, "down", "fp32")
    lr = _ort(down, {"hr": crops})
    assert lr.shape == (2, 9, 11, 3) and lr.dtype == np.uint8
    got_lr = run_split(apply_plugins(down, {"haar", "pack"}), {"hr": crops})[0]
    np.testing.assert_array_equal(got_lr, lr)

    up = _export(layout, "up", "fp32")
    hr = _ort(up, {"lr": lr})
    got_hr = run_split(apply_plugins(up, {"haar", "pack"}), {"lr": lr})[0]
    assert got_hr.shape == crops.shape
    np.testing.assert_array_equal(got_hr, hr)


@pytest.mark.parametrize("layout", ["irn", "irn_e"])
@pytest.mark.parametrize("plugins", [{"haar"}, {"pack"}, {"haar", "pack"}], ids=sorted)
def test_fp16_plugin_graphs_equal_native_split_alike(
    layout: str, plugins: set[str], crops: np.ndarray
) -> None:
    # ONNX Runtime's FP16 kernels round differently depending on what it fuses (its
    # own optimisation levels disagree on ~1% of 8-bit outputs), so the native graph
    # is cut where the plugin graph is: then the results must be identical.
    lr = crops[:, ::4, ::4].copy()
    for direction, feeds in (("down", {"hr": crops}), ("up", {"lr": lr})):
        native = _export(layout, direction, "fp16")
        plugged = apply_plugins(native, plugins)
        got = run_split(plugged, feeds)[0]
        np.testing.assert_array_equal(got, run_split(native, feeds, plugin_boundaries(plugged))[0])
        whole = _ort(native, feeds).astype(int)
        assert np.abs(got.astype(int) - whole).max() <= 1
        assert np.mean(got != whole) < 0.05


def test_pack_graph_in_pure_onnx_reference_evaluator(crops: np.ndarray) -> None:
    # Independent of ONNX Runtime: ONNX's own evaluator for the native ops.
    from onnx.reference import ReferenceEvaluator

    small = crops[:, :20, :28].copy()
    native = _export("irn", "down", "fp16")
    want = ReferenceEvaluator(native).run(None, {"hr": small})[0]
    got = run_with_references(apply_plugins(native, {"pack", "haar"}), {"hr": small})[0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gaussian_plugin_equals_native_fed_with_the_reference_noise(
    precision: str, crops: np.ndarray
) -> None:
    lr = crops[:, ::4, ::4].copy()  # (2, 9, 11, 3)
    seed = 97
    native = _export("irn", "up", precision, z="gaussian")
    plugged = apply_plugins(native, {"gaussian"}, seed=seed)
    got = run_split(plugged, {"lr": lr})[0]
    z = ref.gaussian_z_ref((2, Z_CHANNELS, 9, 11), seed, np.float32(TEMPERATURE))
    want = _ort(_export("irn", "up", precision, z="input"), {"lr": lr, "z": z})
    if precision == "fp32":
        np.testing.assert_array_equal(got, want)
    else:  # different graphs, so differently fused FP16 kernels (see above)
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
        assert np.mean(got != want) < 0.05
    np.testing.assert_array_equal(run_split(plugged, {"lr": lr})[0], got)  # reproducible
    other = apply_plugins(native, {"gaussian"}, seed=98)
    assert not np.array_equal(run_split(other, {"lr": lr})[0], got)


# ---- one-op graphs (written with onnx.helper, not traced) --------------------------------


def _micro_graphs() -> list:
    from irn_trt.plugins import micro_graphs as mg

    types = ("float32", "float16")
    return [
        *(mg.haar_down_graph(lv, 3, (8 * 5, 8 * 7), d, 2) for lv in (1, 2, 3) for d in types),
        *(mg.haar_up_graph(lv, 3, (5, 7), d, 2) for lv in (1, 2, 3) for d in types),
        *(mg.pack_graph((9, 13), d, 2) for d in types),
        *(mg.unpack_graph((9, 13), d, 2) for d in types),
        mg.gaussian_graph(Z_CHANNELS, TEMPERATURE, (5, 7), 2),
    ]


@pytest.mark.parametrize("graph", _micro_graphs(), ids=lambda g: g.name)
def test_one_op_graphs_become_one_plugin_node(graph) -> None:
    plugged = apply_plugins(graph.model, {graph.family}, seed=3)
    nodes = _plugin_nodes(plugged)
    assert len(nodes) == 1 and _io(plugged) == _io(graph.model)
    native_ops = [n.op_type for n in plugged.graph.node if n.domain != "irn"]
    if graph.family == "gaussian":
        assert native_ops == ["Concat"]
    elif graph.family == "pack":  # the boundary Cast to or from uint8 stays native
        assert native_ops == ["Cast"]
        (cast,) = [n for n in plugged.graph.node if n.domain != "irn"]
        uint8_side = cast.output[0] if graph.name.startswith("pack") else cast.input[0]
        assert uint8_side in {v.name for v in [*plugged.graph.input, *plugged.graph.output]}
    else:
        assert native_ops == []
    x = graph.example()
    got = run_split(plugged, {graph.input_name: x})[0]
    want = _ort(graph.model, {graph.input_name: x})
    assert got.shape == want.shape and got.dtype == want.dtype
    if graph.family == "gaussian":  # ONNX Runtime's noise is its own; the LR passes through
        np.testing.assert_array_equal(got[:, :3], want[:, :3])
        z = ref.gaussian_z_ref((2, Z_CHANNELS, 5, 7), 3, np.float32(TEMPERATURE))
        np.testing.assert_array_equal(got[:, 3:], z)
    elif graph.name.startswith("haar") and got.dtype == np.float32:
        # ONNX Runtime sums the 4^L taps in float32; the reference is exact (float64)
        levels = int(_attrs(nodes[0])["levels"])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * 4**levels)
    else:
        np.testing.assert_array_equal(got, want)


# ---- errors ---------------------------------------------------------------------------


def test_requests_that_match_nothing_are_errors() -> None:
    with pytest.raises(PluginRewriteError, match="needs --io uint8"):
        apply_plugins(_export("irn", "down", "fp32", io="float32"), {"pack"})
    with pytest.raises(PluginRewriteError, match="needs --z gaussian"):
        apply_plugins(_export("irn", "up", "fp32"), {"gaussian"})
    with pytest.raises(PluginRewriteError, match="seed"):
        apply_plugins(_export("irn", "up", "fp32", z="gaussian"), {"gaussian"}, seed=-1)
    with pytest.raises(PluginRewriteError, match="unknown plugin"):
        apply_plugins(_export("irn", "up", "fp32"), {"warp"})


def test_float_io_graphs_take_haar_plugins() -> None:
    plugged = apply_plugins(_export("irn", "down", "fp32", io="float32"), {"haar"})
    assert [n.op_type for n in _plugin_nodes(plugged)] == ["haar_down", "haar_down"]


def test_parse_plugin_list() -> None:
    assert parse_plugin_list("haar, pack,gaussian") == {"haar", "pack", "gaussian"}
    assert parse_plugin_list("haar") == {"haar"}
    with pytest.raises(PluginRewriteError, match="unknown plugin.*warp"):
        parse_plugin_list("haar,warp")
    with pytest.raises(PluginRewriteError, match="none given"):
        parse_plugin_list(" , ")


# ---- model directory variants (what irn-export --plugins writes) -----------------------


def _model_dir(tmp_path, z: str = "gaussian", io: str = "uint8"):
    from irn_trt.runtime.manifest import (
        GraphInfo,
        ModelManifest,
        TensorInfo,
        file_sha256,
        write_manifest,
    )

    tmp_path.mkdir(parents=True, exist_ok=True)
    graphs = []
    for direction in ("down", "up"):
        for precision in ("fp32", "fp16"):
            model = _export(
                "irn", direction, precision, io=io, z=z if direction == "up" else "zero"
            )
            path = tmp_path / f"{direction}.{precision}.onnx"
            onnx.save(model, path)
            layout = "NHWC" if io == "uint8" else "NCHW"
            graphs.append(
                GraphInfo(
                    direction,
                    precision,
                    path.name,
                    file_sha256(path),
                    tuple(
                        TensorInfo(i.name, io, ("N", "H", "W", 3), layout)
                        for i in model.graph.input
                    ),
                    tuple(
                        TensorInfo(o.name, io, ("N", "H", "W", 3), layout)
                        for o in model.graph.output
                    ),
                )
            )
    manifest = ModelManifest(
        model="t_irn", scale=4, architecture={}, checkpoint_sha256="0" * 64, io=io,
        z_policy=z, z_channels=Z_CHANNELS, temperature=TEMPERATURE, halo=8, tile_multiple=4,
        opset=17, versions={}, graphs=tuple(graphs),
    )  # fmt: skip
    write_manifest(tmp_path, manifest)
    return manifest


def test_add_plugin_variants_writes_and_records_plugin_graphs(tmp_path) -> None:
    from irn_trt.plugins.export_variants import add_plugin_variants
    from irn_trt.runtime.manifest import file_sha256, load_manifest, write_manifest

    manifest = _model_dir(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.onnx")}
    updated = add_plugin_variants(tmp_path, manifest, {"haar", "pack", "gaussian"}, seed=5)
    write_manifest(tmp_path, updated)
    loaded = load_manifest(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.fp??.onnx")} == before  # untouched
    variants = [g for g in loaded.graphs if g.plugins]
    assert sorted(g.file for g in variants) == [
        "down.fp16.plugins.onnx", "down.fp32.plugins.onnx",
        "up.fp16.plugins.onnx", "up.fp32.plugins.onnx",
    ]  # fmt: skip
    for g in variants:
        assert file_sha256(tmp_path / g.file) == g.sha256
        assert g.plugins == plugin_ops(onnx.load(tmp_path / g.file))
        native = loaded.graph(g.direction, g.precision)  # the default stays native
        assert not native.plugins and (native.inputs, native.outputs) == (g.inputs, g.outputs)
        assert ("irn::gaussian_z" in g.plugins) == (g.direction == "up")
    assert loaded.precisions("up") == ["fp32", "fp16"]


def test_add_plugin_variants_refuses_impossible_requests(tmp_path) -> None:
    import dataclasses

    from irn_trt.plugins.export_variants import add_plugin_variants, plugin_file_name

    manifest = _model_dir(tmp_path)  # io uint8, z gaussian
    with pytest.raises(PluginRewriteError, match="needs --z gaussian"):
        add_plugin_variants(tmp_path, dataclasses.replace(manifest, z_policy="zero"), {"gaussian"})
    with pytest.raises(PluginRewriteError, match="needs --io uint8"):
        add_plugin_variants(tmp_path, dataclasses.replace(manifest, io="float32"), {"pack"})
    assert not list(tmp_path.glob("*.plugins.onnx"))
    assert plugin_file_name("up.fp16.onnx") == "up.fp16.plugins.onnx"
