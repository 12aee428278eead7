"""``irn-export --plugins``: plugin variants written next to the native graphs, and bad requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from irn_trt.export.cli import main
from irn_trt.plugins.onnx_reference import run_split
from irn_trt.runtime.image_io import read_rgb
from irn_trt.runtime.manifest import file_sha256, load_manifest


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plugins", "haar,warp"], "unknown plugin(s) warp"),
        (["--plugins", "gaussian"], "--plugins gaussian needs --z gaussian"),
        (["--plugins", "pack", "--io", "float32"], "--plugins pack needs --io uint8"),
        (["--model", "irn_x3", "--plugins", "haar"], "needs a model with Haar levels"),
    ],
)
def test_impossible_plugin_requests_fail_before_exporting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "model"
    argv = ["--random-init", "--quiet", "--no-verify", "--out", str(out), *args]
    if "--model" not in args:
        argv += ["--model", "irn_x2"]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects the --plugins value itself
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("irn-export: error:")
    assert not out.exists()


@pytest.mark.slow
def test_export_writes_plugin_variants(tmp_path: Path, set5_dir: Path) -> None:
    out = tmp_path / "x2"
    argv = ["--model", "irn_x2", "--random-init", "--precision", "fp32", "--no-verify"]
    argv += ["--z", "gaussian", "--plugins", "haar,pack,gaussian", "--plugin-seed", "7"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    manifest = load_manifest(out)
    # irn-export measures the graphs' memory slopes by default (tests/test_tile_policy.py).
    assert manifest.peak_bytes_per_hr_px is not None
    assert all(v > 100 for v in manifest.peak_bytes_per_hr_px.values())
    by_file = {g.file: g for g in manifest.graphs}
    assert set(by_file) == {
        "down.fp32.onnx", "up.fp32.onnx", "down.fp32.plugins.onnx", "up.fp32.plugins.onnx",
    }  # fmt: skip
    assert by_file["down.fp32.plugins.onnx"].plugins == (
        "irn::haar_down", "irn::pack_rgb8", "irn::unpack_rgb8",
    )  # fmt: skip
    up = by_file["up.fp32.plugins.onnx"]
    assert up.plugins == ("irn::gaussian_z", "irn::haar_up", "irn::pack_rgb8", "irn::unpack_rgb8")
    assert file_sha256(out / up.file) == up.sha256
    assert manifest.graph("down", "fp32").file == "down.fp32.onnx"  # native stays the default
    seeds = [
        onnx.helper.get_attribute_value(a)
        for n in onnx.load(out / up.file).graph.node
        if n.op_type == "gaussian_z"
        for a in n.attribute
        if a.name == "seed"
    ]
    assert seeds == [7]
    # the plugin down graph computes exactly what the native one computes in ONNX Runtime
    hr = read_rgb(set5_dir / "head.png")[40:74, 60:90][None]  # 34x30 HR -> 17x15 LR
    native = ort.InferenceSession(str(out / "down.fp32.onnx"), providers=["CPUExecutionProvider"])
    want = native.run(None, {"hr": hr})[0]
    got = run_split(onnx.load(out / "down.fp32.plugins.onnx"), {"hr": hr})[0]
    assert got.shape == (1, 17, 15, 3)
    np.testing.assert_array_equal(got, want)
