"""FGRN (seed 002): parameter counts, the flow module's invertibility and log-determinant,
the quantised representation, training (losses, learning, resume, CLI), checkpoints and
irn-eval, export parity in ONNX Runtime, the halo, and irn-trt-run / irn-bench on a tiny
random-weight export through the unchanged runtime."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import SET5, centre_crop, graph_conv_macs
from irn_trt.export.api import ExportOptions, export_model, macs_per_lr_pixel
from irn_trt.export.halo import measure_halo
from irn_trt.runtime.costs import direction_macs
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.image_io import read_image, read_rgb
from irn_trt.runtime.metrics import psnr
from irn_trt.runtime.resize import imresize
from irn_trt.train.checkpoint import load_checkpoint, save_checkpoint
from irn_trt.train.configs import (
    FGRNConfig,
    architecture_differences,
    config_from_dict,
    get_config,
    list_models,
)
from irn_trt.train.data import CropSampler
from irn_trt.train.evaluate import evaluate_model, to_tensor, to_uint8
from irn_trt.train.models import (
    FlowGuidedRescaler,
    InvertibleRescaler,
    build_model,
    init_from_model,
    quantize,
    randomize_weights,
)
from irn_trt.train.modules import FGRNEncoder, FlowGuidance
from irn_trt.train.recipe import TrainConfig, apply_preset
from irn_trt.train.trainer import Trainer, fgrn_losses, model_losses
from train_support import params_equal, read_log, straight_and_split_runs, tiny_val_folder
from train_support import tiny_config as tiny_train_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# --- the architecture ------------------------------------------------------------------


def conv(cin: int, cout: int) -> int:
    return cin * cout * 9 + cout


def dense(cin: int, cout: int, growth: int) -> int:
    return sum(conv(cin + k * growth, growth) for k in range(4)) + conv(cin + 4 * growth, cout)


def fgrn_params(c: FGRNConfig) -> int:
    """The derived count: encoder + flow cells + decoder (EDSR's upsampler, IRN's dense blocks)."""
    nf, rgb, s = c.features, c.in_channels, c.scale
    res = 2 * conv(nf, nf)
    encoder = conv(rgb * s * s, nf) + c.encoder_blocks * res + conv(nf, rgb)
    rest = rgb - c.flow_split
    cell = dense(rest, c.flow_split, c.growth) + 2 * dense(c.flow_split, rest, c.growth)
    factors = [3] if s == 3 else [2] * (s.bit_length() - 1)
    upsampler = sum(conv(nf, nf * f * f) for f in factors)
    decoder = conv(rgb, nf) + c.decoder_blocks * res + upsampler + conv(nf, rgb)
    return encoder + c.flow_cells * cell + decoder


def tiny(scale: int = 4, **kw: object) -> FGRNConfig:
    """FGRN's structure at a test's cost: one residual block each side, two flow cells."""
    base = dict(encoder_blocks=1, decoder_blocks=1, features=16, flow_cells=2, growth=8)
    return FGRNConfig(f"fgrn_x{scale}", scale=scale, **{**base, **kw})  # type: ignore[arg-type]


def tiny_random(config: FGRNConfig, seed: int = 0) -> FlowGuidedRescaler:
    """Every weight perturbed (a fresh flow module is the identity); the encoder's output
    centred in [0, 1] so that the quantiser does not clamp most of the representation."""
    torch.manual_seed(seed)  # the base initialisation, before the noise
    model = randomize_weights(build_model(config), seed=seed)
    with torch.no_grad():
        model.encoder.tail.bias.add_(0.5)
    return model.eval()


def test_parameter_counts_follow_the_derived_configuration(capsys) -> None:
    paper = {"fgrn_x4": 3.35e6, "fgrn_x2": 1.33e6}
    for name, target in paper.items():
        cfg = get_config(name)
        n = build_model(name).num_learnable_parameters()
        assert n == fgrn_params(cfg)
        with capsys.disabled():
            print(f"\n[{name}] {n:,} learnable parameters, paper {target / 1e6:.2f} M: "
                  f"{100 * (n / target - 1):+.2f} %")  # fmt: skip
        assert abs(n / target - 1) < 0.02
    assert fgrn_params(tiny(3)) == build_model(tiny(3)).num_learnable_parameters()


def test_registry_configs_round_trip_with_their_family() -> None:
    assert {"fgrn_x4", "fgrn_x2"} <= set(list_models())
    for name in ("fgrn_x4", "fgrn_x2", "irn_x4", "irn_a_x4", "irn_color"):
        cfg = get_config(name)
        d = json.loads(json.dumps(cfg.to_dict()))
        assert config_from_dict(d) == cfg
    d = get_config("fgrn_x4").to_dict()
    assert d["family"] == "fgrn" and "family" not in get_config("irn_x4").to_dict()
    with pytest.raises(ValueError, match="unknown model family"):
        config_from_dict({**d, "family": "srgan"})
    with pytest.raises(ValueError, match="power of two or 3"):
        replace(get_config("fgrn_x4"), scale=6)


def test_shapes_empty_latent_and_size_check() -> None:
    for s in (2, 3, 4):
        model = tiny_random(tiny(s))
        with torch.no_grad():
            y, z = model(torch.rand(2, 3, 5 * s, 7 * s))
            assert y.shape == (2, 3, 5, 7) and z.shape == (2, 0, 5, 7)
            assert model.inverse(quantize(y)).shape == (2, 3, 5 * s, 7 * s)
    with pytest.raises(ValueError, match="not divisible by the scale 4"):
        tiny_random(tiny(4))(torch.rand(1, 3, 18, 16))


# --- the flow-guidance module -----------------------------------------------------------


@pytest.mark.parametrize("roll", [False, True])
def test_fgm_is_invertible_and_its_logdet_is_the_jacobians(roll: bool) -> None:
    fgm = FlowGuidance(3, cells=3, split=1, growth=8, roll_channels=roll).double().eval()
    randomize_weights(fgm, seed=5, std=0.05)
    x = torch.rand(2, 3, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        y, logdet = fgm.forward_with_logdet(x)
        assert torch.equal(y, fgm(x))
        assert (y - x).abs().max() > 0.05  # the cells do something
        assert (fgm.inverse(y) - x).abs().max().item() < 1e-10
    # log|det J| of the whole (3 x 2 x 3 = 18-dimensional) map, by autograd.
    small = torch.rand(1, 3, 2, 3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: fgm(t.reshape(small.shape)).flatten(),
                                             small.flatten())  # fmt: skip
    sign, logabs = torch.linalg.slogdet(jac)
    _, ld = fgm.forward_with_logdet(small)
    assert sign.item() == 1.0 and ld.item() == pytest.approx(logabs.item(), abs=1e-9)
    assert abs(ld.item()) > 0.1


def test_rolled_flow_updates_every_channel_from_every_other() -> None:
    """With the seed's fixed split, channel 2 never reads channel 1 directly: a change in
    channel 1 reaches channel 2 only through channel 0's (additive) update. One roll
    between two cells lets each channel take the additive branch; a rolled flow's first
    cell couples the last channel with the others."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    plain = FlowGuidance(3, cells=2, split=1, growth=8).double().eval()
    randomize_weights(plain, seed=2, std=0.05)
    rolled = FlowGuidance(3, cells=2, split=1, growth=8, roll_channels=True).double().eval()
    rolled.load_state_dict(plain.state_dict())  # the same parameters: the roll adds none
    with torch.no_grad():
        assert not torch.allclose(rolled(x), plain(x))
        first_cell = plain.cells[0]
        expected = first_cell(torch.cat((x[:, 2:], x[:, :2]), dim=1))
        torch.testing.assert_close(rolled.cells[0](rolled._roll(x)), expected)
    # The rolls are undone after the last cell: a fresh rolled flow is the identity,
    # exactly, whether the number of cells is a multiple of the channels' or not.
    for cells in (3, 4, 5):
        fresh = FlowGuidance(3, cells=cells, split=1, growth=8, roll_channels=True).double()
        with torch.no_grad():
            assert torch.equal(fresh(x), x)
            assert torch.equal(fresh.forward_with_logdet(x)[0], x)
            assert torch.equal(fresh.inverse(x), x)


def test_encoder_image_skip_starts_at_the_box_average_and_exports_with_parity(
    tmp_path: Path, set5_crop_images
) -> None:
    """fgrn_x4's encoder adds the HR's box average to its output: fresh, the encoder
    gives the box-downscaled image and, the flow being the identity, so does the LR; the
    export computes the same skip as a strided Conv, at FP32 and FP16."""
    cfg = tiny(4, flow_roll_channels=True, encoder_image_skip=True)
    assert get_config("fgrn_x4").encoder_image_skip
    assert not get_config("fgrn_x4_seed").encoder_image_skip
    torch.manual_seed(0)  # the base initialisation
    x = torch.rand(2, 3, 32, 24)
    fresh = build_model(cfg).eval()
    with torch.no_grad():
        box = torch.nn.functional.avg_pool2d(x, 4)
        assert torch.equal(fresh.encode(x), box)
        assert (fresh(x)[0] - box).abs().max().item() <= 0.5 / 255 + 1e-6
    d = cfg.to_dict()
    del d["encoder_image_skip"]  # a config.json written before the option existed
    assert config_from_dict(d).encoder_image_skip is False
    with pytest.raises(ValueError, match="out_channels == in_channels"):
        FGRNEncoder(4, 3, 8, 1, 4, image_skip=True)

    model = randomize_weights(build_model(cfg), seed=3, std=0.003).eval()
    with torch.no_grad():  # the skip still dominates: the representation stays in range
        assert 0.02 < (model.encode(x) - box).abs().max().item() < 0.15
    export_model(model, tmp_path / "m", verify_images=set5_crop_images)
    from irn_trt.runtime.manifest import load_manifest

    m = load_manifest(tmp_path / "m")
    assert config_from_dict(m.architecture) == cfg
    p = m.parity
    assert p["down_fp32_vs_torch"]["equal_fraction"] >= 0.999
    assert p["up_fp32_vs_torch"]["min_psnr_db"] >= 60
    assert p["down_fp16_vs_fp32"]["within1_fraction"] >= 0.99
    assert abs(p["e2e_fp16_minus_fp32_db"]) <= 0.1


def test_configs_from_before_the_roll_option_keep_the_seeds_flow() -> None:
    d = get_config("fgrn_x4").to_dict()
    del d["flow_roll_channels"]  # a config.json written before the option existed
    assert config_from_dict(d).flow_roll_channels is False
    model = build_model(replace(get_config("fgrn_x2"), flow_roll_channels=True))
    assert model.fgm.roll_channels and not build_model(config_from_dict(d)).fgm.roll_channels


def test_representation_is_8_bit_and_round_trips_through_the_lr() -> None:
    x = to_tensor(centre_crop(read_rgb(SET5 / "baby.png"), 64, 64))
    fresh = build_model(tiny(4)).eval()
    with torch.no_grad():
        rep = fresh.represent(x)
        assert torch.equal(rep, torch.round(rep * 255) / 255)
        y, _ = fresh(x)
        # A fresh flow module is the identity: the LR is the representation, and the
        # representation comes back from the 8-bit LR exactly.
        assert torch.equal(y, rep)
        assert torch.equal(fresh.recover_representation(quantize(y)), rep)
        # A flow module near the identity, an 8-bit representation inside (0, 1) (a trained
        # model's LR is guided towards a bicubic image, which is): F^-1's error from the
        # LR's rounding rounds away, the representation comes back exactly.
        fgm_near_identity = randomize_weights(fresh.fgm, seed=1, std=0.005)
        gen = torch.Generator().manual_seed(2)
        rep = torch.randint(26, 230, (1, 3, 32, 32), generator=gen).float() / 255
        y = fgm_near_identity(rep)
        back = fresh.recover_representation(quantize(y))
    assert 1 / 255 < (y - rep).abs().max().item() < 20 / 255 and y.min() > 0 and y.max() < 1
    assert torch.equal(back, torch.round(back * 255) / 255)
    assert (back == rep).float().mean().item() > 0.99


# --- training ---------------------------------------------------------------------------


def fgrn_train_config(**overrides: object) -> TrainConfig:
    return tiny_train_config(model="fgrn_x2", lr=3e-4, **overrides)


def test_losses_train_the_flow_module_alone_on_the_guidance() -> None:
    model = tiny_random(tiny(2)).train()
    hr = torch.rand(2, 3, 16, 16)
    guide = torch.from_numpy(
        np.stack([imresize(to_uint8(h[None]), 0.5) for h in hr]).transpose(0, 3, 1, 2)
    ).float() / 255.0  # fmt: skip
    cfg = fgrn_train_config(lambda_recon=0.0, lambda_range=0.0)
    losses = fgrn_losses(model, hr, guide, cfg)
    assert set(losses.terms) == {"recon", "guide", "distr", "range"}
    assert losses.terms["recon"] == 0.0 and losses.terms["range"] == 0.0
    losses.total.backward()
    for name, p in model.named_parameters():
        touched = p.grad is not None and bool(p.grad.abs().sum() > 0)
        # No bicubic guidance reaches the encoder (nor the decoder): only F learns from it.
        assert touched == name.startswith("fgm."), name
    # The log-det term is -gamma * sum of the cells' log-scales, per sample.
    with torch.no_grad():
        _, logdet = model.fgm.forward_with_logdet(model.represent(hr))
    assert losses.terms["distr"] == pytest.approx(-1e-3 * logdet.sum().item() / 2, rel=1e-5)
    model.zero_grad()
    full = model_losses(model, hr, guide, fgrn_train_config())
    assert full.terms["recon"] > 0 and full.output is not None


def test_reconstruction_loss_runs_through_the_deployed_path() -> None:
    """The training reconstruction is what down then up compute (F, the 8-bit LR, F's
    inverse, the quantised representation, the decoder), and it trains all three parts
    (the seed's eq. 7 bypassed F, and the deployed result fell 6 dB below the bypass)."""
    model = tiny_random(tiny(2))
    hr = torch.rand(2, 3, 16, 16)
    guide = torch.nn.functional.avg_pool2d(hr, 2)
    only_recon = fgrn_train_config(lambda_guide=0.0, lambda_logdet=0.0, lambda_range=0.0)
    losses = fgrn_losses(model, hr, guide, only_recon)
    with torch.no_grad():
        deployed = model.inverse(quantize(model(hr)[0]))
    assert torch.equal(losses.output.detach(), deployed)
    assert losses.terms["recon"] == pytest.approx(
        torch.sum(torch.abs(hr - deployed)).item() / 2, rel=1e-5
    )
    losses.total.backward()
    for part in (model.encoder, model.fgm, model.decoder):
        assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in part.parameters())


def test_clipped_lr_values_pass_no_reconstruction_gradient() -> None:
    """The LR's clamp keeps its gradient: a value F puts beyond [0, 1] is clipped in the
    8-bit LR, and a straight-through gradient there pushed F on with no effect until the
    run diverged."""
    model = tiny_random(tiny(2))
    hr = torch.rand(2, 3, 16, 16)
    guide = torch.nn.functional.avg_pool2d(hr, 2)
    captured: list[torch.Tensor] = []

    def shift_first_call(module: torch.nn.Module, args: object, out: torch.Tensor) -> torch.Tensor:
        if captured:
            return out
        shifted = out + torch.linspace(-0.6, 0.6, out.shape[-1])  # some columns clip
        shifted.retain_grad()
        captured.append(shifted)
        return shifted

    model.fgm.register_forward_hook(shift_first_call)
    only_recon = fgrn_train_config(lambda_guide=0.0, lambda_logdet=0.0, lambda_range=0.0)
    fgrn_losses(model, hr, guide, only_recon).total.backward()
    lr, grad = captured[0].detach(), captured[0].grad
    outside = (lr < 0) | (lr > 1)
    assert outside.any() and (~outside).any()
    assert not grad[outside].any() and grad[~outside].abs().sum() > 0


def test_range_term_pulls_the_representation_back_into_range() -> None:
    """The straight-through quantiser passes gradients through its clamp, so nothing in
    the seed's losses stops G_d's output from drifting out of [0, 1] (a run diverged by
    step ~60): the range term is zero inside and pulls outside values back."""
    model = tiny_random(tiny(2)).train()
    hr = torch.rand(2, 3, 16, 16)
    guide = torch.nn.functional.avg_pool2d(hr, 2)
    only_range = fgrn_train_config(lambda_recon=0.0, lambda_guide=0.0, lambda_logdet=0.0)
    with torch.no_grad():
        model.encoder.tail.weight.zero_()
        model.encoder.tail.bias.fill_(0.5)  # G_d(x) = 0.5 everywhere: inside the range
    assert fgrn_losses(model, hr, guide, only_range).terms["range"] == 0.0
    with torch.no_grad():
        model.encoder.tail.bias.fill_(2.0)  # 1.0 above the range everywhere
    losses = fgrn_losses(model, hr, guide, only_range)
    # 10 x (excess 1.0)^2 over 3 x 8 x 8 LR values per image, averaged over the batch.
    assert losses.terms["range"] == pytest.approx(10.0 * 3 * 8 * 8)
    losses.total.backward()
    # Gradient descent lowers the tail's bias, back towards the quantiser's range; the
    # decoder learns nothing from it.
    assert bool((model.encoder.tail.bias.grad > 0).all())
    assert model.decoder.tail.weight.grad is None or not model.decoder.tail.weight.grad.any()
    no_range = fgrn_train_config(lambda_recon=0.0, lambda_guide=0.0, lambda_range=0.0)
    assert fgrn_losses(model, hr, guide, no_range).terms["range"] == 0.0


def test_family_preset_and_refusals(tmp_path: Path) -> None:
    cpu = apply_preset(TrainConfig(model="fgrn_x4"), "cpu")
    assert (cpu.crop, cpu.lr, cpu.min_lr_psnr, cpu.iterations) == (128, 1e-4, 30.0, 12_000)
    paper = apply_preset(TrainConfig(model="fgrn_x4"), "paper")
    assert (paper.crop, paper.batch, paper.milestones) == (192, 36, (200_000, 400_000))
    irn = apply_preset(TrainConfig(), "cpu")
    assert (irn.crop, irn.lr, irn.min_lr_psnr) == (64, 2e-4, 40.0)
    with pytest.raises(IRNError, match="has no such stage"):
        Trainer(fgrn_train_config(stage="plus"), tmp_path / "p", progress=False)
    with pytest.raises(ValueError, match="only IRN-A / IRN-M"):
        init_from_model(build_model("fgrn_x2"), build_model("irn_x2"))


@pytest.mark.slow
def test_a_few_steps_lower_the_loss(tmp_path: Path, images: list[np.ndarray]) -> None:
    patch = [images[0][:32, :32]]
    cfg = fgrn_train_config(crop=32)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert isinstance(trainer.model, FlowGuidedRescaler)
    hr, lr_guide = CropSampler(patch, 32, 2, seed=99).batch(8)
    with torch.no_grad():
        before = model_losses(trainer.model, hr, lr_guide, cfg)
    assert trainer.run(patch, max_steps=24) == 24
    with torch.no_grad():
        after = model_losses(trainer.model, hr, lr_guide, cfg)
    assert after.total.item() < 0.7 * before.total.item(), (before.terms, after.terms)
    assert after.terms["recon"] < 0.7 * before.terms["recon"]
    rows = read_log(tmp_path / "run")
    assert [int(r["step"]) for r in rows] == list(range(1, 25))
    assert all(math.isfinite(float(r["loss"])) for r in rows)


def test_resume_is_bit_identical(tmp_path: Path, images: list[np.ndarray]) -> None:
    cfg = fgrn_train_config(crop=16)
    straight, first, second = straight_and_split_runs(cfg, tmp_path, images)
    assert params_equal(second.model, straight.model)
    assert not params_equal(first.model, straight.model)
    losses = lambda d: [r["loss"] for r in read_log(d)]  # noqa: E731
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")


def test_resume_refuses_a_registry_entry_redefined_since_the_run(
    tmp_path: Path, images: list[np.ndarray]
) -> None:
    """The roll and the skip add no parameters, so a checkpoint of the seed's flow loads
    into today's fgrn_x2 without a missing key: resume compares the architectures."""
    cfg = fgrn_train_config(crop=16)
    run = Trainer(cfg, tmp_path / "run", progress=False)
    run.run(images, max_steps=1)
    seed_form = replace(get_config("fgrn_x2"), flow_roll_channels=False, encoder_image_skip=False)
    save_checkpoint(build_model(seed_form), tmp_path / "run" / "last")  # weights only
    again = Trainer(cfg, tmp_path / "run", progress=False)
    with pytest.raises(IRNError, match=r"another architecture .*encoder_image_skip, flow_roll"):
        again.resume()
    # --init-from a checkpoint of the same name but the old form: refused too, naming the
    # registry entry that has its architecture.
    seed_x4 = tmp_path / "seed_x4"
    save_checkpoint(build_model(replace(get_config("fgrn_x4_seed"), name="fgrn_x4")), seed_x4)
    with pytest.raises(IRNError, match=r"another architecture .* registry's fgrn_x4_seed$"):
        Trainer(replace(cfg, model="fgrn_x4", init_from=str(seed_x4)), tmp_path / "r2")
    assert architecture_differences(get_config("fgrn_x4"), get_config("fgrn_x4")) == []


def test_cli_trains_validates_and_irn_eval_scores_it(
    tmp_path: Path, train_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from irn_trt.train.cli import main as train_main
    from irn_trt.train.eval_cli import main as eval_main

    val = tiny_val_folder(tmp_path / "val")
    run = tmp_path / "run"
    args = [
        "--model", "fgrn_x2", "--crop", "16", "--batch", "2", "--iterations", "4",
        "--data", str(train_dir), "--run-dir", str(run), "--val-every", "2",
        "--val-dir", str(val), "--checkpoint-every", "0", "--threads", "1", "--quiet",
        "--min-lr-psnr", "0", "--lambda-logdet", "0.002",
    ]  # fmt: skip
    assert train_main(args) == 0
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["lr"] == 1e-4 and saved["lambda_logdet"] == 0.002 and saved["crop"] == 16
    validated = [r for r in read_log(run) if r["val_psnr"]]
    assert [int(r["step"]) for r in validated] == [2, 4]
    assert all(math.isfinite(float(r["val_lr_psnr"])) for r in validated)  # LR vs bicubic
    model, cfg = load_checkpoint(run / "best")
    assert isinstance(model, FlowGuidedRescaler) and cfg["architecture"]["family"] == "fgrn"
    assert train_main(["--run-dir", str(run), "--resume", "--iterations", "5", "--quiet"]) == 0
    assert int(read_log(run)[-1]["step"]) == 5

    out = tmp_path / "eval.json"
    assert eval_main([str(val), "--checkpoint", str(run / "last"), "--json", str(out),
                      "--quiet"]) == 0  # fmt: skip
    doc = json.loads(out.read_text())
    assert doc["task"] == "rescale" and doc["scale"] == 2
    assert math.isfinite(doc["mean"]["psnr"]) and math.isfinite(doc["mean"]["lr_psnr"])


def test_checkpoint_round_trip_and_wrong_family(tmp_path: Path) -> None:
    model = tiny_random(tiny(4))
    save_checkpoint(model, tmp_path / "ck")
    loaded, _ = load_checkpoint(tmp_path / "ck")
    assert isinstance(loaded, FlowGuidedRescaler) and params_equal(loaded, model)
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    cfg["architecture"]["family"] = "irn"  # an FGRN state dict under an IRN architecture
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(IRNError, match="architecture in config.json is invalid"):
        load_checkpoint(tmp_path / "ck")


# --- halo, export and the runtime -------------------------------------------------------


def flow_reach(c: FGRNConfig, inverse: bool) -> int:
    """How far (LR px) F or F^-1 reaches, followed channel by channel: each function of a
    cell is a dense block of five 3x3 convs (reach 5) and reads a whole branch; a rolled
    flow shifts the channels between cells, which changes which reach meets which."""
    assert c.flow_split == 1 and c.in_channels == 3
    r = [0, 0, 0]
    for _ in range(c.flow_cells):
        if not inverse:
            if c.flow_roll_channels:
                r = [r[2], r[0], r[1]]
            first = max(r[0], max(r[1:]) + 5)  # y1 = x1 + f(x2)
            r = [first, *(max(rc, first + 5) for rc in r[1:])]  # y2 = x2 exp(h(y1)) + g(y1)
        else:
            rest = [max(rc, r[0] + 5) for rc in r[1:]]  # x2 = (y2 - g(y1)) / exp(h(y1))
            r = [max(r[0], max(rest) + 5), *rest]  # x1 = y1 - f(x2)
            if c.flow_roll_channels:
                r = [r[1], r[2], r[0]]
    return max(r)


def analytic_halo(c: FGRNConfig) -> tuple[int, int]:
    """Every 3x3 conv reaches 1 px at its resolution; the flow as :func:`flow_reach`."""
    s = c.scale
    down = 1 + 2 * c.encoder_blocks + 1 + flow_reach(c, inverse=False)
    factors = [3] if s == 3 else [2] * (s.bit_length() - 1)
    # F^-1, head and body at LR resolution
    reach_hr = s * (flow_reach(c, inverse=True) + 1 + 2 * c.decoder_blocks)
    res = 1
    for f in factors:  # each upsampler conv at its resolution, then the tail at the HR's
        reach_hr += s // res
        res *= f
    reach_hr += 1
    return down, -(-reach_hr // s)


def test_measured_halo_is_the_architectures() -> None:
    rolled = replace(tiny(4), flow_cells=3, flow_roll_channels=True)
    for cfg in (tiny(4), tiny(3), get_config("fgrn_x2"), rolled):
        halo = measure_halo(cfg)
        assert (halo.down, halo.up) == analytic_halo(cfg), cfg.name
    plain_x4 = replace(get_config("fgrn_x4"), flow_roll_channels=False)
    assert analytic_halo(plain_x4) == (74, 75)
    # The roll shortens the inverse's longest chain (the additive branch's reach moves
    # into the affine branch of the next cell instead of feeding its additive branch).
    assert analytic_halo(tiny(4, flow_roll_channels=True)) == (24, 20)


@pytest.fixture(scope="module")
def fgrn_export(tmp_path_factory, set5_crop_images) -> tuple[Path, FlowGuidedRescaler, Path]:
    """A tiny random-weight FGRN x4 (rolled flow) exported at FP32 + FP16, verified on the
    Set5 crops."""
    root = tmp_path_factory.mktemp("fgrn")
    model = tiny_random(tiny(4, flow_roll_channels=True))
    ckpt = save_checkpoint(model, root / "checkpoint")
    export_model(model, root / "model", verify_images=set5_crop_images)
    return root / "model", model, ckpt


def test_export_parity_manifest_and_costs(fgrn_export) -> None:
    from irn_trt.runtime.manifest import load_manifest

    model_dir, model, _ = fgrn_export
    m = load_manifest(model_dir)
    got = (m.model, m.scale, m.lr_layout, m.z_channels, m.tile_multiple)
    assert got == ("fgrn_x4", 4, "rgb", 0, 4)
    assert config_from_dict(m.architecture) == model.config
    assert (m.halo, m.parity["halo_measured"]) == (24, {"down": 24, "up": 20})
    p = m.parity
    assert p["down_fp32_vs_torch"]["equal_fraction"] >= 0.999
    assert p["up_fp32_vs_torch"]["min_psnr_db"] >= 60
    assert p["down_fp16_vs_fp32"]["within1_fraction"] >= 0.99
    assert p["up_fp16_vs_fp32"]["min_psnr_db"] >= 45
    assert abs(p["e2e_fp16_minus_fp32_db"]) <= 0.1
    assert "DepthToSpace" in p["ops"]["up.fp32"] and "Relu" in p["ops"]["down.fp16"]
    for g in m.graphs:  # the IRN graphs' I/O: one image in, one out
        assert [t.name for t in g.inputs] == (["hr"] if g.direction == "down" else ["lr"])
        graph = onnx.load(model_dir / g.file)
        assert len(graph.graph.input) == 1 and len(graph.graph.output) == 1
    # Multiply-adds: counted while exporting, read back from the graphs' Conv nodes.
    assert m.macs_per_lr_pixel == {d: macs_per_lr_pixel(model, d) for d in ("down", "up")}
    macs = direction_macs(m, 64, 96)
    assert graph_conv_macs(model_dir / "down.fp32.onnx", (1, 64, 96, 3)) == macs["down"]
    assert graph_conv_macs(model_dir / "up.fp32.onnx", (1, 16, 24, 3)) == macs["up"]
    assert macs["up"] > macs["down"]


def test_manifest_macs_agree_with_irns_architecture_count() -> None:
    from irn_trt.runtime.costs import model_macs

    for name in ("irn_x2", "irn_x3"):
        model = build_model(name)
        for d in ("down", "up"):
            assert macs_per_lr_pixel(model, d) * 36 == model_macs(
                model.config.to_dict(), 6 * model.scale, 6 * model.scale
            )
    assert isinstance(build_model("irn_x2"), InvertibleRescaler)


def test_export_refuses_a_latent_policy(tmp_path: Path) -> None:
    with pytest.raises(IRNError, match="has no latent z"):
        export_model(build_model(tiny(2)), tmp_path / "m", options=ExportOptions(z_policy="input"))
    assert not (tmp_path / "m").exists()


def _run_cli(capsys, *args: str) -> tuple[int, str, str]:
    from irn_trt.runtime.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("backend", ["ort-cpu", "ov-cpu"])
def test_irn_trt_run_round_trip_matches_pytorch(
    capsys, tmp_path: Path, fgrn_export, backend: str
) -> None:
    if backend == "ov-cpu":
        pytest.importorskip("openvino")
    model_dir, model, _ = fgrn_export
    img = centre_crop(read_rgb(SET5 / "butterfly.png"), 96, 128)
    src = tmp_path / "butterfly.png"
    from PIL import Image

    Image.fromarray(img).save(src)
    out = tmp_path / "out"
    code, stdout, err = _run_cli(
        capsys, str(src), "-o", str(out), "--mode", "roundtrip", "--model-dir", str(model_dir),
        "--backend", backend, "--precision", "fp32", "--json", "-",
    )  # fmt: skip
    assert code == 0, err
    item = json.loads(stdout)["items"][0]
    lr = read_image(out / "butterfly_lr.png").rgb
    rt = read_image(out / "butterfly_roundtrip.png").rgb
    with torch.no_grad():
        y, _ = model(to_tensor(img))
        lr_t = to_uint8(quantize(y))
        rt_t = to_uint8(model.inverse(quantize(y)))
    assert lr.shape == (24, 32, 3) and rt.shape == img.shape
    assert (lr == lr_t).mean() >= 0.999
    assert psnr(rt, rt_t) >= 60
    # The round trip's Y-PSNR is irn-eval's (same protocol: border = scale) within 0.02 dB.
    assert item["psnr"] == pytest.approx(evaluate_model(model, [("b", img)])[0].psnr, abs=0.02)

    # Tiles overlapping by the exact halo give the untiled result.
    tiled = tmp_path / "tiled"
    code, _, err = _run_cli(
        capsys, str(src), "-o", str(tiled), "--mode", "roundtrip", "--model-dir",
        str(model_dir), "--backend", backend, "--precision", "fp32", "--tile", "208",
        "--overlap", "exact", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert np.array_equal(read_image(tiled / "butterfly_lr.png").rgb, lr)
    assert np.array_equal(read_image(tiled / "butterfly_roundtrip.png").rgb, rt)


def test_irn_trt_run_fp16_and_odd_sizes(capsys, tmp_path: Path, fgrn_export) -> None:
    model_dir, _, _ = fgrn_export
    from PIL import Image

    src = tmp_path / "bird.png"
    with Image.open(SET5 / "bird.png") as im:
        im.convert("RGB").crop((10, 20, 71, 65)).save(src)  # 61 x 45
    code, stdout, err = _run_cli(
        capsys, str(src), "-o", str(tmp_path / "o"), "--mode", "roundtrip", "--model-dir",
        str(model_dir), "--backend", "ort-cpu", "--precision", "fp16", "--json", "-",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["precision"] == "fp16"
    assert read_image(tmp_path / "o" / "bird_lr.png").size == (16, 12)
    assert read_image(tmp_path / "o" / "bird_roundtrip.png").size == (61, 45)


def test_irn_bench_counts_each_direction(capsys, tmp_path: Path, fgrn_export) -> None:
    from irn_trt.runtime.bench import main as bench_main

    model_dir, _, _ = fgrn_export
    out = tmp_path / "bench.json"
    code = bench_main(
        ["--model-dir", str(model_dir), "--configs", "ort-cpu:fp32", "--quick", "--size",
         "64x48", "--threads", "1", "--json", str(out), "--quiet"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    from irn_trt.runtime.manifest import load_manifest

    want = direction_macs(load_manifest(model_dir), 48, 64)
    by_dir = report["gflop_per_image_by_direction"]
    assert by_dir == {d: round(2 * want[d] / 1e9, 3) for d in ("down", "up")}
    row = report["results"][0]
    assert "error" not in row, row
    assert row["up_gflop_per_s"] == pytest.approx(2 * want["up"] / 1e9 / row["up_s"], rel=0.01)
