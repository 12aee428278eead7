"""``irn-bench``: JSON with megapixels/s, GFLOP/s against a measured peak, and peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import gpu_unavailable_reason, graph_conv_macs
from irn_trt.runtime.bench import (
    BenchConfig,
    parse_configs,
    parse_tiles,
    skip_reason,
    synthetic_image,
)
from irn_trt.runtime.bench import main as bench_main
from irn_trt.runtime.costs import conv_macs, conv_peak_onnx, model_macs
from irn_trt.runtime.errors import IRNError


def test_parse_configs_and_synthetic_image() -> None:
    cfgs = parse_configs("ov-cpu:bf16, ort-cpu", [None, 512])
    assert cfgs == [
        BenchConfig("ov-cpu", "bf16", None),
        BenchConfig("ov-cpu", "bf16", 512),
        BenchConfig("ort-cpu", "auto", None),
        BenchConfig("ort-cpu", "auto", 512),
    ]
    assert cfgs[1].label() == "ov-cpu:bf16:512"
    img = synthetic_image(20, 30)
    assert img.shape == (20, 30, 3) and img.dtype.name == "uint8" and img.std() > 10
    assert (img == synthetic_image(20, 30)).all()


def test_tiles_are_numbers_or_wxh_like_every_size_flag() -> None:
    assert parse_tiles("0,1024,768x512,512x512") == [None, 1024, "768x512", 512]
    assert BenchConfig("trt", "fp16", "768x512").label() == "trt:fp16:768x512"
    with pytest.raises(IRNError, match="expected WxH"):
        parse_tiles("big")
    with pytest.raises(IRNError, match="must be positive"):
        parse_tiles("0x512")


def test_parse_configs_rejects_what_no_machine_runs() -> None:
    with pytest.raises(IRNError, match="unknown backend"):
        parse_configs("cuda-magic:fp32", [None])
    with pytest.raises(IRNError, match="ort-cpu does not run bf16"):
        parse_configs("ort-cpu:bf16", [None])


@pytest.mark.skipif(gpu_unavailable_reason() is None, reason="a GPU is present")
def test_gpu_configs_are_skipped_with_the_reason_on_a_cpu_machine() -> None:
    for name in ("trt", "ort-cuda", "ort-trt"):
        reason = skip_reason(BenchConfig(name, "fp16", None))
        assert reason and "\n" not in reason
    assert skip_reason(BenchConfig("ort-cpu", "fp32", None)) is None


def test_model_macs_match_the_exported_graph_and_the_papers_figure(tmp_model_dir) -> None:
    """IRN x4 on a 1080p frame: 1.21e12 multiply-adds per direction, counted two ways."""
    m = tmp_model_dir.manifest
    want = model_macs(m.architecture, 1080, 1920)
    assert want == pytest.approx(1.21e12, rel=0.005)
    assert graph_conv_macs(tmp_model_dir.path / "down.fp32.onnx", (1, 1080, 1920, 3)) == want
    assert graph_conv_macs(tmp_model_dir.path / "up.fp32.onnx", (1, 270, 480, 3)) == want
    # Sizes that are not multiples of the scale are padded, as the runtime does.
    assert model_macs(m.architecture, 1077, 1918) == want


def test_reference_conv_graph_is_valid_onnx_and_computes_a_conv() -> None:
    data = conv_peak_onnx(channels=8, height=5, width=6)
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(1).random((1, 8, 5, 6), dtype=np.float32)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x})[0]
    w = torch.from_numpy(onnx.numpy_helper.to_array(model.graph.initializer[0]).copy())
    want = torch.nn.functional.conv2d(torch.from_numpy(x), w, padding=1).numpy()
    assert got.shape == (1, 8, 5, 6) and np.allclose(got, want, atol=1e-5)
    assert float(np.abs(want).max()) > 0.01
    assert conv_macs(8, 5, 6) == 8 * 8 * 9 * 30


def test_bench_help_imports_nothing_heavy() -> None:
    code = (
        "import sys, irn_trt.runtime.bench\n"
        "names = ('numpy', 'torch', 'onnxruntime', 'openvino', 'tensorrt', 'PIL', 'tqdm')\n"
        "print(','.join(m for m in names if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    helped = subprocess.run(
        [sys.executable, "-m", "irn_trt.runtime.bench", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "irn-bench --quick" in helped.stdout


@pytest.mark.slow
def test_bench_reports_speed_flops_memory_and_torch_eager(
    tmp_model_dir, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "bench.json"
    code = bench_main(
        [
            "--model-dir", str(tmp_model_dir.path), "--configs", "ort-cpu:fp32,trt:fp16",
            "--torch-checkpoint", str(tmp_model_dir.checkpoint), "--quick", "--size", "64x48",
            "--threads", "1", "--json", str(out), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["size"] == [64, 48] and report["preset"] == "quick" and report["repeat"] == 1
    gflop = 2 * model_macs(tmp_model_dir.manifest.architecture, 48, 64) / 1e9
    assert report["gflop_per_image"] == round(gflop, 3)
    by_label = {r["label"]: r for r in report["results"]}
    assert set(by_label) == {"ort-cpu:fp32:whole", "trt:fp16:whole", "torch-eager:fp32:whole"}
    trt = by_label.pop("trt:fp16:whole")
    if gpu_unavailable_reason() is not None:
        assert trt["skipped"] and "down_s" not in trt
        assert report["skipped"] == {"trt:fp16:whole": trt["skipped"]}
    for r in by_label.values():
        assert "error" not in r and "skipped" not in r, r
        assert r["down_mp_per_s"] > 0 and r["up_mp_per_s"] > 0
        assert r["peak_rss_mb"] > 10  # each configuration measured in its own process
        assert r["peak_gflop_per_s"] > 0
        assert r["down_gflop_per_s"] == pytest.approx(gflop / r["down_s"], rel=0.01)
        assert r["down_fraction_of_peak"] == pytest.approx(
            r["down_gflop_per_s"] / r["peak_gflop_per_s"], abs=0.002
        )
    assert by_label["torch-eager:fp32:whole"]["checkpoint_matches_model_dir"] is True
    assert report["down_speed_vs_ort_cpu"]["ort-cpu:fp32:whole"] == 1.0


def test_bench_bad_arguments_one_line(tmp_model_dir, capsys) -> None:
    assert bench_main(["--model-dir", str(tmp_model_dir.path), "--size", "big"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "--size must look like" in err
    assert bench_main(["--model-dir", str(tmp_model_dir.path), "--configs", "ort-cpu:int3"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "does not run int3" in err
