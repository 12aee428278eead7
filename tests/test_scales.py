"""Any scale in (1, 8]: geometry, metadata, the runtime's recipe and its agreement with irn-eval."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from irn_trt.runtime.api import Rescaler
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.image_io import ImageData, read_image
from irn_trt.runtime.metrics import y_quality
from irn_trt.runtime.pngmeta import LRMetadata
from irn_trt.runtime.scales import lr_size, parse_scale


@pytest.mark.parametrize("text", ["1", "0.5", "8.5", "nan", "x", "-3"])
def test_scale_out_of_range_is_one_line(text: str) -> None:
    with pytest.raises(IRNError, match="--scale"):
        parse_scale(text)


def test_lr_size_is_the_ceiling_without_float_noise() -> None:
    assert lr_size((10, 7), 2.5) == (4, 3)
    assert lr_size((61, 47), 2.5) == (25, 19)
    assert lr_size((35, 36), 3.5) == (10, 11)
    assert lr_size((61, 45), 4) == (16, 12)


def test_metadata_keeps_the_requested_scale(tmp_model_dir) -> None:
    meta = LRMetadata.for_model(tmp_model_dir.manifest, (61, 47), "rgb", False, 2.5)
    back = LRMetadata.from_text(meta.to_text())
    assert back == meta and back.effective_scale == 2.5
    back.check_lr_size((25, 19))
    with pytest.raises(IRNError, match="at x2.5"):
        back.check_lr_size((16, 12))
    plain = LRMetadata.for_model(tmp_model_dir.manifest, (61, 47), "rgb", False, 4.0)
    assert plain.requested_scale is None and "irn-trt:requested-scale" not in plain.to_text()
    with pytest.raises(IRNError, match="damaged"):
        LRMetadata.from_text({**meta.to_text(), "irn-trt:requested-scale": "9"})


@pytest.fixture(scope="module")
def crop(set5_dir: Path) -> np.ndarray:
    return read_image(set5_dir / "baby.png").rgb[100:161, 200:247].copy()  # 47x61: primes


def test_fractional_round_trip_restores_the_exact_size(tmp_model_dir, crop: np.ndarray) -> None:
    r = Rescaler.load(tmp_model_dir.path, backend="ort-cpu", precision="fp32", scale=2.5)
    assert r.output_scale == 2.5 and r.scale == 4
    img = ImageData(crop, alpha=np.full(crop.shape[:2], 77, np.uint8))
    lr = r.downscale(img)
    assert lr.size == (19, 25) and lr.alpha is not None and lr.alpha.shape == (25, 19)
    assert LRMetadata.from_text(lr.text).requested_scale == 2.5
    # up follows the LR's metadata, whatever scale this Rescaler was opened with.
    plain = Rescaler.load(tmp_model_dir.path, backend="ort-cpu", precision="fp32")
    hr = plain.upscale(lr)
    assert hr.size == (47, 61) and hr.alpha is not None and abs(int(hr.alpha.mean()) - 77) <= 1
    np.testing.assert_array_equal(hr.rgb, r.upscale(lr).rgb)
    # Arrays: the output scale gives the LR size, original_size the HR size.
    arr_lr = r.downscale(crop)
    assert arr_lr.shape == (25, 19, 3)
    assert r.upscale(arr_lr, original_size=(47, 61)).shape == (61, 47, 3)
    with pytest.raises(IRNError, match="does not match an LR of 19x25 at x2.5"):
        r.upscale(arr_lr, original_size=(61, 45))
    with pytest.raises(IRNError, match="needs a model of scale 5 or more"):
        Rescaler.load(tmp_model_dir.path, backend="ort-cpu", scale=4.5)


def test_runtime_recipe_equals_irn_eval(tmp_model_dir, crop: np.ndarray) -> None:
    """The torch evaluation of a fractional scale measures what the runtime does."""
    from irn_trt.train.checkpoint import load_checkpoint
    from irn_trt.train.evaluate import evaluate_model

    model, _ = load_checkpoint(tmp_model_dir.checkpoint)
    for scale in (2.5, 3.0, 3.5):
        (score,) = evaluate_model(model, [("crop", crop)], scale=scale)
        r = Rescaler.load(tmp_model_dir.path, backend="ort-cpu", precision="fp32", scale=scale)
        hr = r.upscale(r.downscale(ImageData(crop)))
        psnr, _ = y_quality(hr.rgb, crop, int(np.ceil(scale)))
        assert abs(psnr - score.psnr) < 0.05, (scale, psnr, score.psnr)


def test_bicubic_baseline_at_x3_matches_the_paper(set5_dir: Path) -> None:
    """The fractional geometry at an integer scale: bicubic & bicubic x3 on Set5 (paper 30.39)."""
    from irn_trt.train.evaluate import evaluate_bicubic, load_image_set, summarize

    images = load_image_set(set5_dir)
    assert abs(summarize(evaluate_bicubic(images, 3)).psnr - 30.39) < 0.05
    at_2_5 = summarize(evaluate_bicubic(images, 2.5)).psnr
    assert 30.39 < at_2_5 < 33.66  # between the x3 and x2 baselines


def test_cli_scale_picks_the_model_and_writes_the_scale(
    capsys, tmp_path: Path, tmp_model_dir, crop: np.ndarray, model_store: Path
) -> None:
    from irn_trt.runtime.cli import main
    from irn_trt.runtime.image_io import write_image

    shutil.copytree(tmp_model_dir.path, model_store / "irn_x4")
    src = tmp_path / "c.png"
    write_image(src, ImageData(crop))
    out = tmp_path / "out"
    code = main([str(src), "--scale", "3.5", "-o", str(out), "--backend", "ort-cpu", "--quiet",
                 "--json", "-", "--mode", "roundtrip"])  # fmt: skip
    stdout, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["scale"] == 3.5 and summary["model"] == "irn_x4"
    assert read_image(out / "c_lr.png").size == (14, 18)  # ceil(47/3.5) x ceil(61/3.5)
    assert read_image(out / "c_roundtrip.png").size == (47, 61)
    code = main([str(src), "--scale", "1.5", "-o", str(out), "--model", "irn_x2"])
    assert code == 2 and "no exported model irn_x2" in capsys.readouterr().err
