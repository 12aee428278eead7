"""MATLAB-compatible resize and the papers' metrics, checked against published numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from irn_trt.runtime.metrics import psnr, rgb_to_y, ssim, y_psnr_ssim
from irn_trt.runtime.resize import imresize, modcrop


def _reject_non_json(name: str) -> float:
    raise AssertionError(f"{name} is not JSON (strict parsers reject it)")


def run_eval(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "irn_trt.train.eval_cli", *args],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("scale", "psnr_ref", "ssim_ref"), [(4, 28.42, 0.8104), (2, 33.66, 0.9299)]
)
def test_bicubic_baseline_matches_paper_on_set5(tmp_path, set5_dir, scale, psnr_ref, ssim_ref):
    out = tmp_path / "bicubic.json"
    res = run_eval(
        [str(set5_dir), "--baseline", "bicubic", "--scale", str(scale), "--json", str(out)]
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text(), parse_constant=_reject_non_json)
    mean = doc["mean"]
    assert abs(mean["psnr"] - psnr_ref) <= 0.05
    # The baseline's LR is bicubic itself: its PSNR (+inf) is written as null.
    assert mean["lr_psnr"] is None and all(im["lr_psnr"] is None for im in doc["images"])
    assert abs(mean["ssim"] - ssim_ref) <= 0.002


def test_imresize_constant_image_stays_constant():
    img = np.full((37, 29, 3), 123, dtype=np.uint8)
    for scale in (0.25, 0.5, 1 / 3, 2, 3):
        assert np.all(imresize(img, scale) == 123)


def test_imresize_shapes_and_dtypes():
    img = np.random.default_rng(0).random((30, 21, 3))
    small = imresize(img, 0.25)
    assert small.shape == (8, 6, 3) and small.dtype == np.float64
    assert imresize(img, output_shape=(10, 7)).shape == (10, 7, 3)
    assert imresize((img * 255).astype(np.uint8), 2).dtype == np.uint8


def test_imresize_downscale_by_2_of_linear_ramp_is_exact():
    # A linear ramp is reproduced exactly by a normalised symmetric kernel away from borders.
    ramp = np.tile(np.arange(64, dtype=np.float64), (64, 1))
    small = imresize(ramp, 0.5)
    centre = small[8:-8, 8:-8]
    expected = (np.arange(32) * 2 + 0.5)[8:-8]
    assert np.allclose(centre, expected[None, :], atol=1e-9)


def test_imresize_rejects_bad_arguments():
    img = np.zeros((4, 4))
    with pytest.raises(ValueError):
        imresize(img)
    with pytest.raises(ValueError):
        imresize(img, scale=-1)


def test_modcrop():
    img = np.zeros((13, 10, 3))
    assert modcrop(img, 4).shape == (12, 8, 3)


def test_rgb_to_y_range_and_grey():
    black = np.zeros((2, 2, 3), np.uint8)
    white = np.full((2, 2, 3), 255, np.uint8)
    assert np.allclose(rgb_to_y(black), 16.0)
    assert np.allclose(rgb_to_y(white), 235.0)
    grey = np.full((2, 2), 255, np.uint8)
    assert np.allclose(rgb_to_y(grey), 235.0)


def test_psnr_and_ssim_basics():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (32, 32)).astype(np.float64)
    assert psnr(a, a) == float("inf")
    assert ssim(a, a) == pytest.approx(1.0)
    b = a + 1.0
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2))
    noisy = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    assert 0 < ssim(a, noisy) < 0.99


def test_y_psnr_ssim_shaves_border():
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    test = ref.copy()
    test[:4] = 0  # damage only the border
    assert y_psnr_ssim(test, ref, border=4)[0] == float("inf")
    assert y_psnr_ssim(test, ref, border=0)[0] < 30


def test_eval_cli_bad_folder_is_one_line(tmp_path):
    res = run_eval([str(tmp_path / "nope"), "--baseline", "bicubic"])
    assert res.returncode != 0
    assert res.stderr.strip().count("\n") == 0 and "not a folder" in res.stderr
