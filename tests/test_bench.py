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
from conftest import LARGE, gpu_unavailable_reason, graph_conv_macs
from irn_trt.runtime.api import Rescaler
from irn_trt.runtime.bench import (
    BenchConfig,
    TileChoice,
    parse_configs,
    parse_tiles,
    skip_reason,
    synthetic_image,
)
from irn_trt.runtime.bench import main as bench_main
from irn_trt.runtime.costs import conv_macs, conv_peak_onnx, model_macs
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.image_io import ImageData, read_rgb, write_image
from irn_trt.runtime.tiling import plan_tiles


def test_parse_configs_and_synthetic_image() -> None:
    cfgs = parse_configs("ov-cpu:bf16, ort-cpu", [TileChoice(None), TileChoice(512)])
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
    assert [t.tile for t in parse_tiles("0,1024,768x512,512x512")] == [None, 1024, "768x512", 512]
    assert BenchConfig("trt", "fp16", "768x512").label() == "trt:fp16:768x512"
    with pytest.raises(IRNError, match="expected WxH"):
        parse_tiles("big")
    with pytest.raises(IRNError, match="must be positive"):
        parse_tiles("0x512")


def test_tiles_name_the_default_policy_the_raw_graph_and_overlaps() -> None:
    got = parse_tiles("raw, default,1920@480,768x512@exact,default@76,0")
    assert got == [
        TileChoice("raw"),
        TileChoice("default"),
        TileChoice(1920, 480),
        TileChoice("768x512", "exact"),
        TileChoice("default", 76),
        TileChoice(None),
    ]
    labels = [c.label() for c in parse_configs("ov-cpu:fp32", got)]
    assert labels == [
        "ov-cpu:fp32:raw",
        "ov-cpu:fp32:default",
        "ov-cpu:fp32:1920@480",
        "ov-cpu:fp32:768x512@exact",
        "ov-cpu:fp32:default@76",
        "ov-cpu:fp32:whole",
    ]
    for bad, why in [
        ("raw@480", "no overlap"),
        ("0@8", "no overlap"),
        ("1920@wide", "'exact' or a number of HR pixels"),
        ("1920@", "'exact' or a number of HR pixels"),
        ("defaults", "expected WxH"),
    ]:
        with pytest.raises(IRNError, match=why):
            parse_tiles(bad)


def test_raw_graph_equals_the_untiled_rescaler_byte_for_byte(tmp_model_dir) -> None:
    """irn-bench's baseline (the graph once, no Rescaler) computes what the Rescaler does."""
    img = np.ascontiguousarray(
        read_rgb(LARGE / "Bridge_by_Sander_Klootwijk.jpg")[900:996, 1500:1628]
    )
    with Rescaler.load(tmp_model_dir.path, backend="ort-cpu", no_tile=True, threads=1) as r:
        (lr_raw,) = r.run_graph("down", [img])
        lr = r.downscale(img)
        assert lr_raw.shape == lr.shape == (24, 32, 3) and lr_raw.dtype == np.uint8
        assert np.array_equal(lr_raw, lr) and lr.std() > 5
        (hr_raw,) = r.run_graph("up", [lr])
        assert np.array_equal(hr_raw, r.upscale(lr, original_size=(128, 96)))
        assert r.tiles_run == 2  # the Rescaler's calls only: run_graph does not tile


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


@pytest.mark.slow
def test_bench_rows_against_the_raw_graph_with_end_to_end(
    tmp_model_dir, tmp_path: Path, capsys
) -> None:
    """One run: raw graph, whole, default policy and two overlaps of one tile, each also
    through irn-trt-run's per-file path; every row relative to raw, LR bytes compared."""
    photo = read_rgb(LARGE / "Bridge_by_Sander_Klootwijk.jpg")
    crop = tmp_path / "bridge_crop.png"
    write_image(crop, ImageData(np.ascontiguousarray(photo[1100:1292, 2000:2256])))  # 256x192
    out = tmp_path / "bench.json"
    code = bench_main(
        [
            "--model-dir", str(tmp_model_dir.path), "--configs", "ort-cpu:fp32",
            "--image", str(crop), "--size", "full", "--tiles", "raw,0,default,128@0,128@16",
            "--e2e", "--quick", "--threads", "1", "--json", str(out), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["size"] == [256, 192] and report["image"] == str(crop)
    rows = {r["label"].removeprefix("ort-cpu:fp32:"): r for r in report["results"]}
    assert list(rows) == ["raw", "whole", "default", "128@0", "128@16"]
    for r in rows.values():
        assert "error" not in r and r["down_s"] > 0 and r["up_s"] > 0, r
        assert r["peak_rss_mb"] > 10
    raw = rows.pop("raw")
    assert raw["tiles_per_image"] == 1 and not any(k.startswith("e2e") for k in raw)
    assert not any("vs_raw" in k for k in raw)
    halo_hr = tmp_model_dir.manifest.overlap_halo * 4
    # The overlap of each row is the one asked for, and the tiles follow from it.
    want = {"whole": (1, halo_hr), "default": (1, halo_hr), "128@0": (4, 0), "128@16": (6, 16)}
    for label, (tiles, overlap) in want.items():
        r = rows[label]
        assert (r["tiles_per_image"], r["overlap_hr"]) == (tiles, overlap), label
        assert len(plan_tiles(48, 64, 32 if "@" in label else None, overlap // 4)) == tiles
        assert r["e2e_down_tiles"] == r["e2e_up_tiles"] == tiles
        assert r["e2e_down_s"] > 0 and r["e2e_up_s"] > 0 and r["e2e_lr_bytes"] > 1000
        assert r["e2e_peak_rss_mb"] <= r["peak_rss_mb"]
        for d in ("down", "up"):
            assert r[f"{d}_overhead_vs_raw"] == round(r[f"{d}_s"] / raw[f"{d}_s"] - 1, 4)
            assert r[f"e2e_{d}_rate_vs_raw"] == round(raw[f"{d}_s"] / r[f"e2e_{d}_s"], 4)
            cpu = r[f"{d}_cpu_s"]
            assert cpu > 0 and r[f"e2e_{d}_cpu_s"] > 0
            assert r[f"{d}_cpu_overhead_vs_raw"] == round(cpu / raw[f"{d}_cpu_s"] - 1, 4)
            assert r[f"e2e_{d}_cpu_rate_vs_raw"] == round(
                raw[f"{d}_cpu_s"] / r[f"e2e_{d}_cpu_s"], 4
            )
    assert rows["128@0"]["tile_hr"] == 128 and rows["whole"]["tile_hr"] == "256x192"
    # Untiled through the Rescaler (whole; default, which fits the memory budget here):
    # the raw graph's LR byte for byte. Tiles without overlap: seams change bytes.
    for label in ("whole", "default"):
        assert rows[label]["lr_identical_to_raw"] == 1.0 and rows[label]["lr_max_diff_vs_raw"] == 0
    assert rows["128@0"]["lr_identical_to_raw"] < 1.0 and rows["128@0"]["lr_max_diff_vs_raw"] > 0


def test_bench_bad_arguments_one_line(tmp_model_dir, capsys) -> None:
    assert bench_main(["--model-dir", str(tmp_model_dir.path), "--size", "big"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "--size must look like" in err
    assert bench_main(["--model-dir", str(tmp_model_dir.path), "--configs", "ort-cpu:int3"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "does not run int3" in err
    model = ["--model-dir", str(tmp_model_dir.path)]
    for argv, why in [
        (["--e2e", "--image", str(LARGE / "Bridge_by_Sander_Klootwijk.jpg")], "--size full"),
        (["--e2e", "--size", "full"], "--size full"),
        (["--size", "full"], "needs --image"),
        (["--tiles", "raw@480"], "no overlap"),
    ]:
        assert bench_main([*model, *argv]) == 2
        err = capsys.readouterr().err
        assert err.strip().count("\n") == 0 and why in err, err
