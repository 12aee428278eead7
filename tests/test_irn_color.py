"""IRN_color (seed 000, sections 3.4 / 4.3): the graying module, exact invertibility,
grayscale guidance, RGB evaluation and the grey/colour graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import export_tiny, run_cli, tiny_config
from irn_trt.runtime.manifest import load_manifest
from irn_trt.runtime.metrics import rgb_psnr_ssim, rgb_to_luma
from irn_trt.train.checkpoint import save_checkpoint
from irn_trt.train.data import CropSampler
from irn_trt.train.eval_cli import main as eval_main
from irn_trt.train.evaluate import evaluate_model
from irn_trt.train.models import build_model, get_config, luma, randomize_weights
from irn_trt.train.trainer import Trainer, irn_losses
from PIL import Image
from test_irn_am import coupling_params
from train_support import SET5, read_log
from train_support import tiny_config as tiny_train_config


def test_parameter_count_is_the_papers() -> None:
    # 8 blocks splitting 1 / 2: 1,413,592 learnable parameters, the paper's "1.41 M".
    model = build_model("irn_color")
    assert model.num_learnable_parameters() == 8 * coupling_params(3, 1) == 1_413_592
    cfg = get_config("irn_color")
    assert (cfg.task, cfg.scale, cfg.lr_channels, cfg.latent_channels) == ("decolorize", 1, 1, 2)
    assert cfg.default_lambda_guide == 9.0


def test_exactly_invertible_and_starts_as_the_luma() -> None:
    x = torch.rand(2, 3, 9, 14, dtype=torch.float64)
    fresh = build_model("irn_color").double().eval()
    with torch.no_grad():
        y, _ = fresh(x)
        # Identity blocks: the grey image is exactly the full-range BT.601 luma.
        assert torch.allclose(y, luma(x), atol=1e-12)
        trained = randomize_weights(build_model(tiny_config("irn_color")), seed=4).double()
        y, z = trained(x)
        assert y.shape == (2, 1, 9, 14) and z.shape == (2, 2, 9, 14)
        assert (trained.inverse(y, z) - x).abs().max().item() < 1e-10


def test_guidance_is_the_luma_with_weight_9() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    hr, guide = CropSampler([img], 16, 1, seed=1).batch(2)
    assert torch.equal(hr, guide)  # scale 1: the sampler hands the HR itself over
    model = randomize_weights(build_model(tiny_config("irn_color")), seed=2)
    cfg = tiny_train_config(model="irn_color", crop=16)
    with torch.no_grad():
        terms = irn_losses(model, hr, guide, cfg).terms
        y, _ = model(hr)
    expected = 9.0 * float(((y - luma(hr)) ** 2).sum()) / 2
    assert terms["guide"] == pytest.approx(expected, rel=1e-5)


def test_a_few_training_steps_run_and_log(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)]
    cfg = tiny_train_config(model="irn_color", crop=16)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.run(images, max_steps=3) == 3
    rows = read_log(tmp_path / "run")
    assert len(rows) == 3 and all(float(r["guide"]) >= 0 for r in rows)


def test_evaluation_is_in_rgb_with_the_grey_judged_against_the_luma(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    fresh = build_model("irn_color")
    score = evaluate_model(fresh, [("noise", img)])[0]
    assert score.lr_psnr == float("inf")  # a fresh model's grey is the rounded luma
    # z = 0 drops the colour: the restored image is the grey one, in RGB.
    grey = np.round(rgb_to_luma(img)).astype(np.uint8)
    expected = rgb_psnr_ssim(np.repeat(grey[..., None], 3, axis=2), img)
    assert score.psnr == pytest.approx(expected[0], abs=0.05)

    folder = tmp_path / "set"
    folder.mkdir()
    Image.fromarray(img).save(folder / "noise.png")
    save_checkpoint(fresh, tmp_path / "ckpt")
    out = tmp_path / "scores.json"
    assert eval_main([str(folder), "--checkpoint", str(tmp_path / "ckpt"), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["task"] == "decolorize" and "RGB" in doc["metrics"]
    assert doc["mean"]["psnr"] == pytest.approx(score.psnr)


def test_scale_does_not_apply_to_colour(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_checkpoint(build_model("irn_color"), tmp_path / "ckpt")
    folder = tmp_path / "set"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "a.png")
    assert eval_main([str(folder), "--checkpoint", str(tmp_path / "ckpt"), "--scale", "2"]) != 0
    assert "--scale does not apply" in capsys.readouterr().err


def test_export_writes_a_grey_down_and_a_colour_up_graph(tmp_path: Path) -> None:
    from irn_trt.export.api import ExportOptions, export_model

    model = randomize_weights(build_model(tiny_config("irn_color")), seed=6).eval()
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)
    out = tmp_path / "color"
    export_model(model, out, options=ExportOptions(), verify_images=[("noise", img)])
    manifest = load_manifest(out)
    assert (manifest.lr_layout, manifest.lr_channels, manifest.scale) == ("grey", 1, 1)
    providers = ["CPUExecutionProvider"]
    down = ort.InferenceSession(str(out / "down.fp32.onnx"), providers=providers)
    up = ort.InferenceSession(str(out / "up.fp32.onnx"), providers=providers)
    grey = down.run(None, {"hr": img[None]})[0]
    assert grey.shape == (1, 20, 28, 1) and grey.dtype == np.uint8
    with torch.no_grad():
        y, _ = model(torch.from_numpy(img.transpose(2, 0, 1).copy()).float()[None] / 255)
        rgb = model.inverse(torch.from_numpy(grey[0, ..., 0].astype(np.float32))[None, None] / 255)
    expected = np.round(y[0, 0].clamp(0, 1).numpy() * 255)
    assert np.abs(grey[0, ..., 0].astype(int) - expected).max() <= 1
    colour = up.run(None, {"lr": grey})[0]
    torch_colour = np.round(rgb[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255)
    assert colour.shape == (1, 20, 28, 3)
    assert np.abs(colour[0].astype(int) - torch_colour).max() <= 1


# --- the runtime: decolorize / colorize through irn-trt-run --------------------------


@pytest.fixture(scope="module")
def colour_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny("irn_color", tmp_path_factory.mktemp("colour") / "irn_color", seed=7)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rgb = np.array(Image.open(SET5 / "baby.png").convert("RGB"))[100:148, 200:260]
    Image.fromarray(rgb).save(folder / "colour.png")
    Image.fromarray(rgb).convert("L").save(folder / "grey.png")
    rgba = np.dstack([rgb, np.linspace(0, 255, rgb.shape[1]).astype(np.uint8)[None].repeat(48, 0)])
    Image.fromarray(rgba).save(folder / "clear.png")
    return folder


def test_decolorize_writes_a_grey_png_and_colorize_restores_the_size(
    colour_model_dir: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    src = photos / "colour.png"
    args = ["--model-dir", str(colour_model_dir), "--mode", "roundtrip", "--json", "-"]
    assert run_cli(str(src), "-o", str(out), *args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["task"] == "decolorize"
    assert doc["operations"] == {"down": "decolorize", "up": "colorize"}
    grey_path, back_path = out / "colour_gray.png", out / "colour_roundtrip.png"
    grey = Image.open(grey_path)
    assert grey.mode == "L" and grey.size == (60, 48)  # an ordinary greyscale picture
    assert grey.text["irn-trt:model"] == "irn_color"
    back = np.array(Image.open(back_path))
    assert back.shape == (48, 60, 3)
    original = np.array(Image.open(src))
    assert doc["items"][0]["psnr"] == pytest.approx(rgb_psnr_ssim(back, original)[0], abs=1e-6)
    # Auto mode colorizes the grey PNG (its metadata) into <stem>_color.png.
    assert (
        run_cli(str(grey_path), "-o", str(tmp_path / "up"), "--model-dir", str(colour_model_dir))
        == 0
    )
    again = np.array(Image.open(tmp_path / "up" / "colour_color.png"))
    assert np.array_equal(again, back)


def test_colour_model_bad_inputs_are_one_line(
    colour_model_dir: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = ["--model-dir", str(colour_model_dir)]
    assert (
        run_cli(str(photos / "grey.png"), "-o", str(tmp_path / "a"), *model, "--mode", "down") == 1
    )
    err = capsys.readouterr().err
    assert "already greyscale: there is no colour to decolorize" in err
    assert "Traceback" not in err
    assert (
        run_cli(str(photos / "colour.png"), "-o", str(tmp_path / "b"), *model, "--mode", "up") == 1
    )
    assert "colorize takes a greyscale image" in capsys.readouterr().err
    # A grey photo without metadata colorizes with a warning that the colours are a guess.
    assert run_cli(str(photos / "grey.png"), "-o", str(tmp_path / "c"), *model, "--mode", "up") == 0
    assert "the colours are a guess" in capsys.readouterr().err
    # RGBA: the alpha is carried unchanged, grey + alpha (LA) then RGBA.
    rt = ["--mode", "roundtrip"]
    assert run_cli(str(photos / "clear.png"), "-o", str(tmp_path / "d"), *model, *rt) == 0
    assert "alpha channel carried unchanged" in capsys.readouterr().err
    assert Image.open(tmp_path / "d" / "clear_gray.png").mode == "LA"
    back = np.array(Image.open(tmp_path / "d" / "clear_roundtrip.png"))
    assert np.array_equal(back[..., 3], np.array(Image.open(photos / "clear.png"))[..., 3])


def test_counted_multiply_adds_match_the_graph(colour_model_dir: Path) -> None:
    from conftest import graph_conv_macs
    from irn_trt.runtime.costs import model_macs

    manifest = load_manifest(colour_model_dir)
    want = model_macs(manifest.architecture, 48, 64)
    assert graph_conv_macs(colour_model_dir / "down.fp32.onnx", (1, 48, 64, 3)) == want
    assert graph_conv_macs(colour_model_dir / "up.fp32.onnx", (1, 48, 64, 1)) == want


def test_reconstruction_pass_uses_z_zero_even_with_the_paper_preset() -> None:
    # Seed 000, 3.4: IRN_color trains its inverse from z = 0, whatever train_z says.
    model = randomize_weights(build_model(tiny_config("irn_color")), seed=3)
    hr = torch.rand(2, 3, 16, 16)
    gaussian = tiny_train_config(model="irn_color", crop=16, train_z="gaussian")
    zero = tiny_train_config(model="irn_color", crop=16, train_z="zero")
    with torch.no_grad():
        a = irn_losses(model, hr, hr, gaussian, torch.Generator().manual_seed(1)).terms
        b = irn_losses(model, hr, hr, zero).terms
    assert a == b


def test_arrays_and_colour_profiles_survive_the_round_trip(
    colour_model_dir: Path, photos: Path, tmp_path: Path
) -> None:
    from irn_trt.runtime.api import Rescaler
    from irn_trt.runtime.image_io import read_image, write_image
    from PIL import ImageCms

    rgba = np.array(Image.open(photos / "clear.png"))
    with Rescaler.load(colour_model_dir, backend="ort-cpu") as r:
        grey = r.downscale(rgba)
        assert grey.shape == (48, 60, 2)  # grey + alpha, as ImageData.to_array writes it
        back = r.upscale(grey)
        assert back.shape == (48, 60, 4) and np.array_equal(back[..., 3], rgba[..., 3])
        # A colour ICC profile cannot sit in a greyscale PNG: kept aside, restored by up.
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        image = read_image(photos / "colour.png")
        image = type(image)(image.rgb, icc_profile=srgb)
        lr_path = write_image(tmp_path / "x_gray.png", r.downscale(image))
        assert "icc_profile" not in Image.open(lr_path).info
        restored = write_image(tmp_path / "x_color.png", r.upscale(read_image(lr_path)))
        assert Image.open(restored).info.get("icc_profile") == srgb


def test_cpu_preset_is_sized_for_colour() -> None:
    """IRN_color's full-resolution blocks cost 3.2x IRN x4 per 64 px step: its CPU preset
    trains 48 px crops for 8,000 steps; other presets and models are unchanged."""
    from irn_trt.train.recipe import PRESETS, TrainConfig, apply_preset

    colour = apply_preset(TrainConfig(model="irn_color"), "cpu")
    assert (colour.crop, colour.iterations) == (48, 8_000)
    assert colour.milestones == (4_000, 6_000, 7_300)
    assert all(m < colour.iterations for m in colour.milestones)
    assert apply_preset(TrainConfig(model="irn_color"), "paper").crop == PRESETS["paper"]["crop"]
    irn = apply_preset(TrainConfig(model="irn_x4"), "cpu")
    assert (irn.crop, irn.iterations) == (64, 12_000)
    CropSampler([np.zeros((60, 60, 3), np.uint8)], colour.crop, scale=1, seed=0)
