"""IRN-A and IRN-M (seed 004): structure, exact invertibility, the start from a trained
IRN, their losses and training stages, evaluation and IRN-A's export (IRN-M's export and
runtime: test_irn_m.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import export_tiny, run_cli, tiny_config
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.manifest import load_manifest
from irn_trt.train.checkpoint import load_checkpoint, save_checkpoint
from irn_trt.train.data import CropSampler
from irn_trt.train.evaluate import evaluate_model
from irn_trt.train.models import (
    IRNConfig,
    build_model,
    get_config,
    init_from_model,
    quantize,
    randomize_weights,
)
from irn_trt.train.modules import AlphaPreSplit, AlphaSigmoid, HaarDownsampling
from irn_trt.train.trainer import Trainer, irn_losses
from PIL import Image
from train_support import SET5, read_log
from train_support import tiny_config as tiny_train_config

NEW_MODELS = ("irn_a_x2", "irn_a_x4", "irn_m_x2", "irn_m_x4")


def dense_params(cin: int, cout: int, growth: int = 32) -> int:
    convs = [(cin + k * growth, growth) for k in range(4)] + [(cin + 4 * growth, cout)]
    return sum(i * o * 9 + o for i, o in convs)


def coupling_params(channels: int, split: int) -> int:
    rest = channels - split
    return dense_params(rest, split) + 2 * dense_params(split, rest)


def test_parameter_counts_follow_the_architecture() -> None:
    # IRN-A: every coupling block splits 4 / C-4 (the alpha joins the LR branch).
    assert build_model("irn_a_x2").num_learnable_parameters() == 8 * coupling_params(12, 4)
    assert build_model("irn_a_x4").num_learnable_parameters() == 8 * (
        coupling_params(12, 4) + coupling_params(48, 4)
    )
    # IRN-M: IRN plus the auto-encoder (4 convs each way, 64 wide, 2x pixel shuffles).
    ae = (45 * 64 + 64 * 64 * 2 + 64 * 4) * 9 + 64 * 3 + 4
    ae += (4 * 64 + 64 * 256 * 2 + 64 * 45) * 9 + 64 + 256 * 2 + 45
    irn_x4 = build_model("irn_x4").num_learnable_parameters()
    assert build_model("irn_m_x4").num_learnable_parameters() == irn_x4 + ae


@pytest.mark.parametrize("name", NEW_MODELS)
def test_config_round_trips_and_shapes(name: str) -> None:
    cfg = get_config(name)
    assert IRNConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    model = build_model(tiny_config(name)).eval()
    s = model.scale
    with torch.no_grad():
        y, z = model(torch.rand(1, 3, 6 * s, 5 * s))
    assert y.shape == (1, cfg.lr_channels, 6, 5)
    assert z.shape == (1, cfg.latent_channels, 6, 5)
    assert cfg.lr_channels + cfg.latent_channels == 3 * s * s


@pytest.mark.parametrize("name", ["irn_a_x2", "irn_a_x4"])
def test_irn_a_is_exactly_invertible_before_quantisation(name: str) -> None:
    model = randomize_weights(build_model(tiny_config(name)), seed=3).double().eval()
    x = torch.rand(2, 3, 4 * model.scale, 7 * model.scale, dtype=torch.float64)
    with torch.no_grad():
        y, z = model(x)
        assert y[:, 3].min() > 0.0 and y[:, 3].max() < 1.0  # the sigmoid-normalised alpha
        rec = model.inverse(y, z)
    assert (rec - x).abs().max().item() < 1e-10


def test_pre_split_puts_the_high_frequency_mean_in_the_lr_branch() -> None:
    split = AlphaPreSplit(3, 12)
    x = torch.randn(2, 12, 5, 4, dtype=torch.float64)
    y = split(x)
    assert torch.equal(y[:, :3], x[:, :3]) and torch.equal(y[:, 4:], x[:, 4:])
    assert torch.allclose(y[:, 3], x[:, 3:].mean(dim=1))
    assert torch.allclose(split.inverse(y), x, atol=1e-12)  # eq. 1: 9 * mean - sum(others)


def test_alpha_logit_is_finite_at_the_8_bit_ends() -> None:
    step = AlphaSigmoid(3, 5)
    y = torch.zeros(1, 5, 1, 3)
    y[0, 3, 0] = torch.tensor([0.0, 0.5, 1.0])
    a = step.inverse(y)[0, 3, 0]
    assert torch.isfinite(a).all() and a[1] == 0
    assert a[0].item() == pytest.approx(-a[2].item(), abs=1e-3)  # float32 near 1


def test_irn_m_code_is_quantised_on_a_quarter_grid_of_any_size() -> None:
    model = randomize_weights(build_model(tiny_config("irn_m_x4")), seed=1).eval()
    with torch.no_grad():
        _, z = model(torch.rand(1, 3, 4 * 18, 4 * 10))  # LR 18x10: not multiples of 4
        code = model.encode_latent(z)
        z_hat = model.decode_latent(code, 18, 10)
    assert code.shape == (1, 4, 5, 3)  # ceil(18 / 4), ceil(10 / 4)
    assert torch.equal(code, torch.round(code * 255) / 255)
    assert z_hat.shape == z.shape


@pytest.fixture(scope="module")
def trained_x4() -> torch.nn.Module:
    model, _ = load_checkpoint(Path(__file__).resolve().parents[1] / "weights" / "irn_x4")
    return model.eval()


def test_irn_m_starts_as_the_irn_it_came_from(trained_x4: torch.nn.Module) -> None:
    # A fresh decoder gives z = 0, so the started IRN-M reconstructs as IRN x4 does.
    model = init_from_model(build_model("irn_m_x4"), trained_x4).eval()
    x = torch.rand(1, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y, z = model(x)
        y0, _ = trained_x4(x)
        assert torch.equal(y, y0)
        z_side = model.reconstruction_latent(z)
        assert z_side is not None and not z_side.any()
        assert torch.equal(model.inverse(quantize(y), z_side), trained_x4.inverse(quantize(y0)))


def test_irn_a_start_keeps_the_trained_blocks(trained_x4: torch.nn.Module) -> None:
    # F, G, H keep every weight they share with IRN x4; what reads or writes the alpha is
    # zero, so the alpha leaves the blocks as it entered them: the pre-split mean, whose
    # level-2 low band is what the LR carries (sigmoid-normalised).
    model = init_from_model(build_model("irn_a_x4"), trained_x4).double().eval()
    x = torch.rand(1, 3, 64, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    haar3 = HaarDownsampling(3).double()
    with torch.no_grad():
        y, _ = model(x)
        alpha = haar3(x)[:, 3:].mean(dim=1, keepdim=True)
        expected = torch.sigmoid(HaarDownsampling(1).double()(alpha)[:, :1])
        assert torch.allclose(y[:, 3:4], expected, atol=1e-12)
    src_f = trained_x4.steps[1].f.convs[0].weight
    dst_f = model.steps[2].f.convs[0].weight
    assert torch.equal(dst_f[:, :8].float(), src_f[:, 1:9])  # h1..h8 keep their weights
    dst_g = model.steps[2].g.convs[0].weight
    assert not dst_g[:, 3].any()  # the alpha input starts unused


def test_init_from_a_different_architecture_is_one_line(
    tmp_path: Path, trained_x4: torch.nn.Module
) -> None:
    with pytest.raises(ValueError, match="different architecture"):
        init_from_model(build_model("irn_a_x2"), trained_x4)
    save_checkpoint(trained_x4, tmp_path / "x4")
    cfg = tiny_train_config(model="irn_a_x2", init_from=str(tmp_path / "x4"))
    with pytest.raises(IRNError, match="--init-from .*different architecture"):
        Trainer(cfg, tmp_path / "run", progress=False)


@pytest.fixture(scope="module")
def patches() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
    img = np.kron(base, np.ones((4, 4, 1), np.float32))  # blocky: learnable in a few steps
    return [np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)]


def test_irn_a_loss_guides_only_the_colours(patches: list[np.ndarray]) -> None:
    cfg = tiny_train_config(model="irn_a_x2", crop=16)
    model = build_model(tiny_config("irn_a_x2"))
    hr, guide = CropSampler(patches, 16, 2, seed=1).batch(2)
    with torch.no_grad():
        terms = irn_losses(model, hr, guide, cfg).terms
        y, _ = model(hr)
    assert terms["guide"] == pytest.approx(4 * float(((y[:, :3] - guide) ** 2).sum()) / 2, 1e-5)
    assert "code" not in terms


def test_irn_m_stages_train_resume_and_log_the_code_loss(
    tmp_path: Path, patches: list[np.ndarray]
) -> None:
    irn = randomize_weights(build_model("irn_x2"), seed=2)
    save_checkpoint(irn, tmp_path / "irn")
    # Stage "code": only the auto-encoder learns; the rescaler keeps the IRN's weights.
    cfg = tiny_train_config(
        model="irn_m_x2", crop=16, stage="code", lr=1e-3, init_from=str(tmp_path / "irn")
    )
    trainer = Trainer(cfg, tmp_path / "code", progress=False)
    trainer.run(patches, max_steps=6)
    for a, b in zip(trainer.model.steps.parameters(), irn.steps.parameters(), strict=True):
        assert torch.equal(a, b)
    codes = [float(r["code"]) for r in read_log(tmp_path / "code")]
    assert len(codes) == 6 and min(codes[3:]) < codes[0]
    again = Trainer(cfg, tmp_path / "code", progress=False)
    again.resume()
    assert again.step == 6
    assert again.model.latent_code is not None
    # Joint stage from the pre-trained code: eq. 2's four terms, all parameters learn.
    joint = tiny_train_config(model="irn_m_x2", crop=16, init_from=str(tmp_path / "code" / "last"))
    trainer = Trainer(joint, tmp_path / "joint", progress=False)
    trainer.run(patches, max_steps=2)
    row = read_log(tmp_path / "joint")[-1]
    assert all(float(row[k]) > 0 for k in ("recon", "guide", "distr", "code"))
    assert not all(
        torch.equal(a, b)
        for a, b in zip(trainer.model.steps.parameters(), irn.steps.parameters(), strict=True)
    )


def test_code_stage_needs_a_model_with_a_code(tmp_path: Path) -> None:
    save_checkpoint(build_model("irn_x2"), tmp_path / "irn")
    cfg = tiny_train_config(stage="code", init_from=str(tmp_path / "irn"))
    with pytest.raises(IRNError, match="has none"):
        Trainer(cfg, tmp_path / "run", progress=False)


def test_evaluation_uses_the_side_code_and_the_colour_lr(trained_x4: torch.nn.Module) -> None:
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    plain = evaluate_model(trained_x4, [("noise", img)])[0]
    m = init_from_model(build_model("irn_m_x4"), trained_x4)
    started = evaluate_model(m, [("noise", img)])[0]
    assert started == plain  # zero-initialised decoder: z = 0, the same numbers
    a = init_from_model(build_model("irn_a_x4"), trained_x4)
    score = evaluate_model(a, [("noise", img)])[0]
    assert np.isfinite(score.psnr) and score.lr_psnr > 25  # LR compared on its colours only


def test_irn_a_exports_with_a_four_channel_lr(tmp_path: Path) -> None:
    from irn_trt.export.api import ExportOptions, export_model

    model = randomize_weights(build_model(tiny_config("irn_a_x2")), seed=5).eval()
    out = tmp_path / "irn_a"
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    export_model(model, out, options=ExportOptions(), verify_images=[("noise", hr)])
    manifest = load_manifest(out)
    assert manifest.lr_layout == "rgb+alpha-code" and manifest.lr_channels == 4
    assert manifest.z_channels == 8
    down = ort.InferenceSession(str(out / "down.fp32.onnx"), providers=["CPUExecutionProvider"])
    lr = down.run(None, {"hr": hr[None]})[0]
    with torch.no_grad():
        y, _ = model(torch.from_numpy(hr.transpose(2, 0, 1).copy()).float()[None] / 255)
    expected = torch.round(torch.clamp(y, 0, 1) * 255)[0].permute(1, 2, 0).numpy()
    assert lr.shape == (1, 16, 20, 4)
    assert np.abs(lr[0].astype(int) - expected.astype(int)).max() <= 1
    assert manifest.parity["down_fp32_vs_torch"]["equal_fraction"] > 0.999
    assert manifest.side_code("down") is None and manifest.lr_grid == 1  # IRN-M: test_irn_m.py


# --- IRN-A through irn-trt-run: where the alpha code lives in the LR file ------------


@pytest.fixture(scope="module")
def alpha_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny("irn_a_x2", tmp_path_factory.mktemp("alpha") / "irn_a", seed=8)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photo")
    rgb = np.array(Image.open(SET5 / "bird.png").convert("RGB"))[60:108, 80:144]
    Image.fromarray(rgb).save(folder / "bird.png")
    ramp = np.linspace(0, 255, rgb.shape[1]).astype(np.uint8)[None].repeat(rgb.shape[0], 0)
    Image.fromarray(np.dstack([rgb, ramp])).save(folder / "clear.png")
    return folder


@pytest.mark.parametrize("storage", ["chunk", "png-alpha"])
def test_alpha_code_travels_in_the_lr_file(
    alpha_model_dir: Path, photo: Path, tmp_path: Path, storage: str
) -> None:
    model = ["--model-dir", str(alpha_model_dir), "--alpha-code", storage]
    out = tmp_path / "rt"
    assert run_cli(str(photo / "bird.png"), "-o", str(out), *model, "--mode", "roundtrip") == 0
    lr = Image.open(out / "bird_lr.png")
    assert lr.text["irn-trt:code"] == storage
    if storage == "chunk":  # viewers show the picture: plain RGB, the code in irAC
        assert lr.mode == "RGB" and [c[0] for c in lr.private_chunks] == [b"irAC"]
    else:  # the paper's form
        assert lr.mode == "RGBA"
    # Upscaling the file gives exactly the round trip's result.
    assert run_cli(str(out / "bird_lr.png"), "-o", str(tmp_path / "up"), *model) == 0
    up = np.array(Image.open(tmp_path / "up" / "bird_hr.png"))
    assert np.array_equal(up, np.array(Image.open(out / "bird_roundtrip.png")))


def test_a_real_alpha_and_the_code_coexist_in_the_chunk_form(
    alpha_model_dir: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = ["--model-dir", str(alpha_model_dir)]
    out = tmp_path / "rt"
    assert run_cli(str(photo / "clear.png"), "-o", str(out), *model, "--mode", "roundtrip") == 0
    lr = Image.open(out / "clear_lr.png")
    assert lr.mode == "RGBA" and [c[0] for c in lr.private_chunks] == [b"irAC"]
    assert Image.open(out / "clear_roundtrip.png").mode == "RGBA"
    capsys.readouterr()
    rt = ["--mode", "roundtrip", "--alpha-code", "png-alpha"]
    assert run_cli(str(photo / "clear.png"), "-o", str(tmp_path / "b"), *model, *rt) == 1
    err = capsys.readouterr().err
    assert "alpha channel of its own" in err and "Traceback" not in err


def test_lost_or_damaged_codes_fall_back_with_a_warning(
    alpha_model_dir: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from irn_trt.runtime.image_io import CODE_CHUNK
    from PIL.PngImagePlugin import PngInfo

    model = ["--model-dir", str(alpha_model_dir)]
    out = tmp_path / "rt"
    assert run_cli(str(photo / "bird.png"), "-o", str(out), *model, "--mode", "down") == 0
    lr = Image.open(out / "bird_lr.png")
    lr.load()

    def resave(name: str, chunk: bytes | None, mode: str = "RGB") -> Path:
        info = PngInfo()
        for k, v in lr.text.items():
            info.add_text(k, v)
        if chunk is not None:
            info.add(CODE_CHUNK, chunk)
        path = tmp_path / f"{name}_lr.png"
        lr.convert(mode).save(path, pnginfo=info)
        return path

    cases = {
        "stripped": (resave("stripped", None), "lost its alpha-code chunk"),
        "damaged": (resave("damaged", b"IRC1garbage"), "damaged alpha-code chunk"),
    }
    plain = tmp_path / "plain_lr.png"
    lr.convert("RGB").save(plain)  # no metadata at all
    cases["plain"] = (plain, "has no alpha code for irn_a_x2")
    for path, words in cases.values():
        capsys.readouterr()
        assert run_cli(str(path), "-o", str(tmp_path / "up"), *model, "--mode", "up") == 0
        err = capsys.readouterr().err
        assert words in err and "neutral code" in err and "Traceback" not in err


def test_an_rgba_lr_stripped_of_its_text_reads_its_alpha_as_the_code(
    alpha_model_dir: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = ["--model-dir", str(alpha_model_dir), "--alpha-code", "png-alpha"]
    out = tmp_path / "rt"
    assert run_cli(str(photo / "bird.png"), "-o", str(out), *model, "--mode", "roundtrip") == 0
    Image.open(out / "bird_lr.png").save(tmp_path / "bare.png")  # Pillow drops the text
    capsys.readouterr()
    assert (
        run_cli(str(tmp_path / "bare.png"), "-o", str(tmp_path / "up"), *model, "--mode", "up") == 0
    )
    assert "reading the alpha channel as the alpha code" in capsys.readouterr().err
    up = np.array(Image.open(tmp_path / "up" / "bare_hr.png"))
    assert up.shape[2] == 3  # the code is not taken for transparency
    assert np.array_equal(up, np.array(Image.open(out / "bird_roundtrip.png")))


def test_counted_multiply_adds_include_the_alpha_branch(alpha_model_dir: Path) -> None:
    from conftest import graph_conv_macs
    from irn_trt.runtime.costs import model_macs

    manifest = load_manifest(alpha_model_dir)
    want = model_macs(manifest.architecture, 32, 48)
    assert graph_conv_macs(alpha_model_dir / "down.fp32.onnx", (1, 32, 48, 3)) == want
