"""``irn-bench``: JSON with megapixels/s and peak memory per configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from irn_trt.runtime.bench import BenchConfig, parse_configs, synthetic_image
from irn_trt.runtime.bench import main as bench_main


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


@pytest.mark.slow
def test_bench_reports_speed_memory_and_torch_eager(tmp_model_dir, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    code = bench_main(
        [
            "--model-dir", str(tmp_model_dir.path), "--configs", "ort-cpu:fp32",
            "--torch-checkpoint", str(tmp_model_dir.checkpoint), "--size", "64x48",
            "--repeat", "1", "--threads", "1", "--json", str(out), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["size"] == [64, 48]
    by_label = {r["label"]: r for r in report["results"]}
    assert set(by_label) == {"ort-cpu:fp32:whole", "torch-eager:fp32:whole"}
    for r in by_label.values():
        assert "error" not in r, r
        assert r["down_mp_per_s"] > 0 and r["up_mp_per_s"] > 0
        assert r["peak_rss_mb"] > 10  # each configuration measured in its own process
    assert by_label["torch-eager:fp32:whole"]["checkpoint_matches_model_dir"] is True
    assert report["down_speed_vs_ort_cpu"]["ort-cpu:fp32:whole"] == 1.0


def test_bench_bad_arguments_one_line(tmp_model_dir, capsys) -> None:
    assert bench_main(["--model-dir", str(tmp_model_dir.path), "--size", "big"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "--size must look like" in err
