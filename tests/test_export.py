"""irn-export: real graphs from random-weight models, run in ONNX Runtime on Set5 crops."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import centre_crop, graph_conv_macs, tiny_config
from irn_trt.export.api import ExportOptions, build_graph, export_model
from irn_trt.export.graphs import GraphSpec
from irn_trt.export.halo import measure_halo, measure_receptive_field
from irn_trt.export.onnx_graph import OPSET, TENSORRT_OPS, ops_used
from irn_trt.export.random_init import random_model
from irn_trt.export.verify import Bounds
from irn_trt.runtime.costs import model_macs
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.image_io import list_images, read_rgb
from irn_trt.runtime.manifest import file_sha256, load_manifest
from irn_trt.train.checkpoint import load_checkpoint
from irn_trt.train.evaluate import evaluate_model, to_tensor, to_uint8
from irn_trt.train.models import InvertibleRescaler, IRNConfig, Stage, quantize, randomize_weights
from irn_trt.train.modules import LearnedDownsampling3
from onnx import TensorProto

FILES = ("down.fp32.onnx", "down.fp16.onnx", "up.fp32.onnx", "up.fp16.onnx", "manifest.json")


@pytest.fixture(scope="module")
def x4_dir(tmp_model_dir) -> Path:
    """irn_x4 (random weights) exported at both precisions, verified on the Set5 crops
    (the suite's shared export, conftest.tmp_model_dir)."""
    return tmp_model_dir.path


@pytest.fixture(scope="module")
def x4_model(tmp_model_dir) -> InvertibleRescaler:
    """The model that directory was exported from."""
    return load_checkpoint(tmp_model_dir.checkpoint)[0].eval()


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _tiny(scale_stages: tuple[Stage, ...] = (Stage("haar", 2),)) -> InvertibleRescaler:
    """A two-block model: for tests whose point is logic, not the full architecture."""
    return randomize_weights(InvertibleRescaler(IRNConfig("tiny", scale_stages)), seed=3).eval()


# --- the x4 model directory --------------------------------------------------------------


@pytest.mark.slow
def test_x4_directory_has_five_checked_files(x4_dir: Path, x4_model) -> None:
    assert sorted(p.name for p in x4_dir.iterdir()) == sorted(FILES)
    m = load_manifest(x4_dir)
    assert (m.model, m.scale, m.tile_multiple, m.io, m.z_policy) == (
        "irn_x4",
        4,
        4,
        "uint8",
        "zero",
    )
    assert m.z_channels == 45 and m.opset >= 17
    assert m.architecture == x4_model.config.to_dict()
    assert m.halo == measure_halo(x4_model.config).halo > 0
    assert {"torch", "onnx", "onnxruntime", "opset"} <= set(m.versions)
    for g in m.graphs:
        path = x4_dir / g.file
        assert g.sha256 == file_sha256(path)
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version >= OPSET
        assert set(ops_used(model)) <= TENSORRT_OPS
        sess = _session(path)
        assert [i.name for i in sess.get_inputs()] == [t.name for t in g.inputs]
        assert [o.name for o in sess.get_outputs()] == [t.name for t in g.outputs]
    assert m.graph("down", "fp16").inputs[0].dtype == "uint8"
    assert m.graph("up", "fp32").inputs[0].shape == ("N", "H/4", "W/4", 3)


@pytest.mark.slow
def test_x4_fp32_matches_pytorch_on_set5(x4_dir: Path, x4_model, set5_crop_images) -> None:
    # An independent check of what the export's own verification enforced (on all five).
    down, up = _session(x4_dir / "down.fp32.onnx"), _session(x4_dir / "up.fp32.onnx")
    equal = total = 0
    with torch.no_grad():
        for _, hr in set5_crop_images[:2]:
            y, _ = x4_model(to_tensor(hr))
            lr_t = to_uint8(quantize(y))
            lr_g = down.run(None, {"hr": hr[None]})[0][0]
            diff = np.abs(lr_g.astype(int) - lr_t.astype(int))
            assert diff.max() <= 1
            equal += int((diff == 0).sum())
            total += diff.size
            hr_t = to_uint8(x4_model.inverse(quantize(y)))
            hr_g = up.run(None, {"lr": lr_t[None]})[0][0]
            mse = np.mean((hr_g.astype(np.float64) - hr_t) ** 2)
            assert mse == 0 or 10 * np.log10(255**2 / mse) >= 60
    assert equal / total >= 0.999


@pytest.mark.slow
def test_x4_fp16_parity_and_end_to_end(x4_dir: Path, x4_model, set5_crop_images) -> None:
    p = load_manifest(x4_dir).parity
    assert p["down_fp16_vs_fp32"]["within1_fraction"] >= 0.99
    assert p["up_fp16_vs_fp32"]["min_psnr_db"] >= 45
    assert abs(p["e2e_y_psnr_db"]["fp16"] - p["e2e_y_psnr_db"]["fp32"]) <= 0.1
    # The exported pipeline reproduces irn-eval's protocol numbers for the same weights.
    ref = np.mean([s.psnr for s in evaluate_model(x4_model, set5_crop_images)])
    assert abs(p["e2e_y_psnr_db"]["fp32"] - ref) <= 0.02
    assert [e["image"] for e in p["images"]] == [n for n, _ in set5_crop_images]


def _float_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {}
    for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        types[v.name] = v.type.tensor_type.elem_type
    for init in inferred.graph.initializer:
        types[init.name] = init.data_type
    for node in inferred.graph.node:
        if node.op_type == "Constant":
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


FP32_ISLAND_OPS = {
    "Cast",
    "Div",
    "Mul",
    "Clip",
    "Round",
    "Transpose",
    "Sigmoid",
    "Exp",
    "Sub",
    "Add",
}
FP32_ISLAND_OPS |= {"ConstantOfShape", "RandomNormalLike"}


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["down", "up"])
def test_fp16_graphs_are_strongly_typed(x4_dir: Path, direction: str) -> None:
    model = onnx.load(x4_dir / f"{direction}.fp16.onnx")
    types = _float_types(model)
    f16, f32 = TensorProto.FLOAT16, TensorProto.FLOAT
    fp32_ops: set[str] = set()
    for node in model.graph.node:
        outs = [types[o] for o in node.output]
        ins = [types[i] for i in node.input if i]
        if node.op_type in ("Conv", "ConvTranspose", "LeakyRelu", "Concat", "Slice"):
            # The network body is FP16; only shape arithmetic (int64) sits beside it.
            assert set(outs) in ({f16}, {TensorProto.INT64}), node.name
            assert f32 not in ins, node.name
        if node.op_type != "Cast":
            # No implicit conversion anywhere: all float operands of a node share a type.
            assert len({t for t in ins + outs if t in (f16, f32)}) <= 1, node.name
        if f32 in outs:
            fp32_ops.add(node.op_type)
        assert TensorProto.DOUBLE not in outs
    assert fp32_ops <= FP32_ISLAND_OPS
    # The deliberate islands: input normalisation / output quantiser, coupling scale.
    assert {"Round", "Clip", "Exp", "Sigmoid"} <= fp32_ops
    assert sum(n.op_type == "Conv" for n in model.graph.node) > 200


@pytest.mark.slow
def test_graphs_take_any_multiple_of_the_scale_and_batches(x4_dir: Path) -> None:
    down, up = _session(x4_dir / "down.fp16.onnx"), _session(x4_dir / "up.fp32.onnx")
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (2, 4 * 5, 4 * 9, 3), dtype=np.uint8)
    lr = down.run(None, {"hr": hr})[0]
    assert lr.shape == (2, 5, 9, 3) and lr.dtype == np.uint8
    out = up.run(None, {"lr": lr})[0]
    assert out.shape == (2, 20, 36, 3) and out.dtype == np.uint8


# --- other architectures ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["irn_x3", "irn_x8", "irn_e_x4"])  # x2: the CLI test
def test_other_scales_export_fp32(tmp_path: Path, name: str, set5_dir: Path) -> None:
    """Each registry entry's structure (tiny depth: the export's logic does not depend on
    the number of blocks) exports, verifies, and costs what runtime/costs.py counts."""
    config = tiny_config(name)
    model = randomize_weights(InvertibleRescaler(config), seed=2).eval()
    s = model.scale
    crop = centre_crop(read_rgb(list_images(set5_dir)[1]), 32 * s, 32 * s)
    m = export_model(
        model, tmp_path, options=ExportOptions(precisions=("fp32",)), verify_images=[("c", crop)]
    )
    assert m.scale == s and {g.file for g in m.graphs} == {"down.fp32.onnx", "up.fp32.onnx"}
    assert m.architecture == config.to_dict()
    assert m.parity["down_fp32_vs_torch"]["equal_fraction"] >= 0.999
    assert m.halo == measure_halo(model.config).halo
    lr = _session(tmp_path / "down.fp32.onnx").run(None, {"hr": crop[None]})[0]
    assert lr.shape == (1, crop.shape[0] // s, crop.shape[1] // s, 3)
    h, w = 8 * s, 12 * s
    want = model_macs(m.architecture, h, w)
    assert graph_conv_macs(tmp_path / "down.fp32.onnx", (1, h, w, 3)) == want
    assert graph_conv_macs(tmp_path / "up.fp32.onnx", (1, h // s, w // s, 3)) == want


def test_learned_downsampling_is_conv_with_precomputed_inverse() -> None:
    from irn_trt.export.graphs import learned3_weights

    step = LearnedDownsampling3(3)
    with torch.no_grad():
        step.matrix.add_(torch.randn(9, 9, generator=torch.Generator().manual_seed(0)) * 0.1)
    x = torch.rand(2, 3, 9, 12)
    fwd, bwd = (w.float() for w in learned3_weights(step))
    y = torch.nn.functional.conv2d(x, fwd, stride=3)
    assert torch.allclose(y, step(x), atol=1e-5)
    back = torch.nn.functional.conv_transpose2d(y, bwd, stride=3)
    assert torch.allclose(back, x, atol=1e-4)


# --- z policies and float I/O (tiny model: the point is the graph logic) -----------------


def _lr_bytes(seed: int, h: int = 6, w: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1, h, w, 3), dtype=np.uint8)


def test_up_z_policies() -> None:
    model = _tiny()
    spec = GraphSpec("fp32", "uint8")
    zero, _, _ = build_graph(model, "up", spec, "zero")
    assert [i.name for i in zero.graph.input] == ["lr"]
    lr = _lr_bytes(0)
    ref = _session_bytes(zero).run(None, {"lr": lr})[0]
    with torch.no_grad():
        want = to_uint8(model.inverse(torch.from_numpy(lr).permute(0, 3, 1, 2).float() / 255))
    assert np.array_equal(ref[0], want)

    cold, _, _ = build_graph(model, "up", spec, "gaussian", temperature=0.0)
    assert np.array_equal(_session_bytes(cold).run(None, {"lr": lr})[0], ref)
    warm = _session_bytes(build_graph(model, "up", spec, "gaussian", temperature=1.0)[0])
    a, b = (warm.run(None, {"lr": lr})[0] for _ in range(2))
    assert not np.array_equal(a, b)  # sampled inside the graph, per run

    g, ins, _ = build_graph(model, "up", spec, "input")
    assert [t.name for t in ins] == ["lr", "z"] and ins[1].shape[1] == model.out_channels - 3
    z = np.random.default_rng(1).normal(size=(1, ins[1].shape[1], 6, 7)).astype(np.float32)
    got = _session_bytes(g).run(None, {"lr": lr, "z": z})[0]
    with torch.no_grad():
        lr_t = torch.from_numpy(lr).permute(0, 3, 1, 2).float() / 255
        want = to_uint8(model.inverse(lr_t, torch.from_numpy(z)))
    assert np.array_equal(got[0], want)


def _session_bytes(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_float32_io_export(tmp_path: Path, set5_crop_images) -> None:
    model = _tiny()
    m = export_model(
        model, tmp_path, options=ExportOptions(io="float32"), verify_images=set5_crop_images[:2]
    )
    g = m.graph("down", "fp16")
    assert (g.inputs[0].dtype, g.inputs[0].layout, g.outputs[0].dtype) == (
        "float32",
        "NCHW",
        "float32",
    )
    x = set5_crop_images[0][1].transpose(2, 0, 1)[None].astype(np.float32) / 255
    lr = _session(tmp_path / "down.fp16.onnx").run(None, {"hr": x})[0]
    assert lr.dtype == np.float32 and lr.shape == (1, 3, 32, 32)
    levels = lr * 255
    assert np.allclose(levels, np.round(levels), atol=1e-3)  # LR values are multiples of 1/255


@pytest.mark.slow
def test_export_is_idempotent(tmp_path: Path, set5_crop_images) -> None:
    model = _tiny((Stage("haar", 1), Stage("haar", 1)))
    opts = ExportOptions(precisions=("fp32",))
    a = export_model(model, tmp_path / "a", options=opts, verify_images=set5_crop_images[:1])
    b = export_model(model, tmp_path / "b", options=opts, verify_images=set5_crop_images[:1])
    assert [g.sha256 for g in a.graphs] == [g.sha256 for g in b.graphs]
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (
        tmp_path / "b" / "manifest.json"
    ).read_bytes()


def test_failed_verification_leaves_directory_untouched(tmp_path: Path, set5_crop_images) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "down.fp32.onnx").write_bytes(b"previous")
    impossible = Bounds(down_fp32_min_equal=1.01)  # a fraction never exceeds 1
    with pytest.raises(IRNError, match="verification failed"):
        export_model(_tiny(), out, verify_images=set5_crop_images[:1], bounds=impossible)
    assert [p.name for p in out.iterdir()] == ["down.fp32.onnx"]
    assert (out / "down.fp32.onnx").read_bytes() == b"previous"


# --- halo -------------------------------------------------------------------------------


def test_halo_bounds_the_whole_model_receptive_field() -> None:
    config = IRNConfig("tiny2", (Stage("haar", 2), Stage("haar", 1)))
    chained = measure_halo(config)
    whole = measure_receptive_field(config)
    assert chained.up == whole.up > 0
    assert whole.down <= chained.down
    # A seam-free tile needs exactly this much: a change one pixel beyond stays outside.
    assert chained.halo == max(chained.down, chained.up)


# --- CLI ---------------------------------------------------------------------------------


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("irn-export: error: ")
    return err[0]


def test_cli_help_has_example(capsys) -> None:
    from irn_trt.export.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "irn-export --scale 4" in capsys.readouterr().out


def test_cli_missing_default_checkpoint(tmp_path, monkeypatch, capsys) -> None:
    from irn_trt.export.cli import main

    monkeypatch.setenv("IRN_TRT_WEIGHTS", str(tmp_path / "nothing"))
    assert main(["--scale", "4", "--out", str(tmp_path / "o")]) == 2
    assert "--random-init" in _one_error(capsys)
    assert not (tmp_path / "o").exists()


def test_cli_bad_checkpoints(tmp_path, capsys) -> None:
    from irn_trt.export.cli import main
    from irn_trt.train.checkpoint import save_checkpoint

    out = tmp_path / "o"
    assert main(["--checkpoint", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "no such file" in _one_error(capsys)

    ckpt = save_checkpoint(random_model("irn_x2"), tmp_path / "x2")
    assert main(["--scale", "4", "--checkpoint", str(ckpt), "--out", str(out)]) == 2
    assert "not scale 4" in _one_error(capsys)

    (ckpt / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    assert main(["--scale", "2", "--checkpoint", str(ckpt), "--out", str(out)]) == 2
    assert "corrupt" in _one_error(capsys)
    assert not out.exists()


def test_cli_unknown_scale_and_model(capsys) -> None:
    from irn_trt.export.cli import main

    assert main(["--scale", "5", "--random-init"]) == 2
    assert "unknown scale 5" in _one_error(capsys)
    assert main(["--model", "irn_x9", "--random-init"]) == 2
    assert "unknown model" in _one_error(capsys)


def test_cli_unwritable_output(tmp_path, capsys) -> None:
    from irn_trt.export.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert (
        main(["--model", "irn_x2", "--random-init", "--out", str(blocker / "sub"), "--quiet"]) == 2
    )
    assert "cannot write to output directory" in _one_error(capsys)
    assert main(["--model", "irn_x2", "--random-init", "--out", str(blocker), "--quiet"]) == 2
    assert "not a directory" in _one_error(capsys)
    assert blocker.read_text() == "x"


@pytest.mark.slow
def test_cli_end_to_end_random_init(tmp_path, set5_dir, capsys) -> None:
    from irn_trt.export.cli import main

    out = tmp_path / "m"
    argv = ["--model", "irn_x2", "--random-init", "--precision", "fp32", "--out", str(out)]
    argv += ["--verify-image", str(list_images(set5_dir)[0]), "--verify-size", "48", "--quiet"]
    assert main(argv) == 0
    assert capsys.readouterr().out == ""
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["model"] == "irn_x2" and [g["file"] for g in doc["graphs"]] == [
        "down.fp32.onnx",
        "up.fp32.onnx",
    ]
    assert doc["parity"]["images"][0]["image"] == "baby.png"


def test_verification_without_onnxruntime_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # ONNX Runtime is an extra (cpu or a GPU set): without it, verifying says what to do.
    from irn_trt.export.verify import OrtGraph
    from irn_trt.runtime.errors import IRNError

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(IRNError, match=r"irn-trt\[cpu\].*--no-verify"):
        OrtGraph(b"", "uint8")
