"""Stage 2 ("IRN+"): discriminator, VGG19 feature network and weights, the GAN step, resume.

Pretrained VGG19 weights cannot be downloaded here, so the mechanics run with a
randomly initialised feature network (``--vgg-weights random``, test-only), and
weight loading is checked with files in torchvision's layout written by the test.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from irn_trt.runtime.errors import IRNError
from irn_trt.train.checkpoint import save_checkpoint
from irn_trt.train.cli import main
from irn_trt.train.data import CropSampler
from irn_trt.train.discriminator import VGGStyleDiscriminator
from irn_trt.train.models import build_model
from irn_trt.train.perceptual import (
    RANDOM_VGG,
    VGG19Features,
    build_feature_network,
    load_vgg19_state_dict,
)
from irn_trt.train.stage_plus import PlusSettings, PlusStage
from irn_trt.train.trainer import TRAIN_STATE_FILE, Trainer, apply_stage
from safetensors.torch import save_file
from torch import nn
from train_support import params_equal, tiny_config

# torchvision's VGG19 ``features`` indices of the 16 convs, up to conv5_4 (index 34).
TORCHVISION_VGG19_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stage-1 checkpoint to start from (weights perturbed so the blocks are not identities)."""
    model = build_model("irn_x2")
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.01)
    return save_checkpoint(model, tmp_path_factory.mktemp("stage1") / "ckpt")


def plus_config(stage1: Path, **overrides: object):
    cfg = tiny_config(init_from=str(stage1), vgg_weights=RANDOM_VGG, disc_pretrain=2)
    return replace(apply_stage(cfg, "plus"), **overrides)


# --- discriminator -------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64, 144])
def test_discriminator_architecture(size: int) -> None:
    disc = VGGStyleDiscriminator(size)
    convs = [m for m in disc.features if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    assert [(m.kernel_size[0], m.stride[0]) for m in convs] == [(3, 1), (4, 2)] * 5
    assert sum(isinstance(m, nn.BatchNorm2d) for m in disc.features) == 9  # all but the first
    slopes = {m.negative_slope for m in disc.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.2}
    linears = [m for m in disc.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (512 * (size // 32) ** 2, 100),
        (100, 1),
    ]
    assert disc(torch.rand(2, 3, size, size)).shape == (2, 1)
    with pytest.raises(ValueError, match="built for"):
        disc(torch.rand(2, 3, size + 32, size + 32))


def test_discriminator_needs_32_pixels() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        VGGStyleDiscriminator(16)


# --- VGG19 feature network -----------------------------------------------------------


def test_vgg19_layout_is_torchvisions() -> None:
    net = VGG19Features()
    expected = {
        f"features.{i}.{kind}" for i in TORCHVISION_VGG19_CONVS for kind in ("weight", "bias")
    }
    assert set(net.state_dict()) == expected
    assert net.state_dict()["features.34.weight"].shape == (512, 512, 3, 3)
    assert isinstance(net.features[-1], nn.Conv2d)  # ends at conv5_4, before its ReLU

    net = build_feature_network(RANDOM_VGG, seed=0)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    feats = net(torch.rand(1, 3, 32, 48))
    assert feats.shape == (1, 512, 2, 3)
    assert (feats < 0).any()  # pre-ReLU activations
    again = build_feature_network(RANDOM_VGG, seed=0)
    assert params_equal(net, again)  # the test-only network is reproducible (resume)


def _torchvision_like_state(seed: int) -> dict[str, torch.Tensor]:
    """A full VGG19 state dict as torchvision lays it out (features + classifier)."""
    state = VGG19Features().randomize(seed).state_dict()
    state["classifier.0.weight"] = torch.zeros(8, 4)  # ignored by the loader
    state["classifier.0.bias"] = torch.zeros(8)
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_vgg19_weights_load(tmp_path: Path, suffix: str) -> None:
    state = _torchvision_like_state(seed=4)
    path = tmp_path / f"vgg19{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    loaded = load_vgg19_state_dict(path)
    assert set(loaded) == set(VGG19Features().state_dict())
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    net = build_feature_network(str(path))
    assert torch.equal(net.features[34].weight, state["features.34.weight"])


def test_vgg19_weights_errors(tmp_path: Path) -> None:
    with pytest.raises(IRNError, match="--vgg-weights PATH"):
        build_feature_network(None)
    with pytest.raises(IRNError, match="no such file"):
        load_vgg19_state_dict(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a state dict")
    with pytest.raises(IRNError, match="not a loadable state dict"):
        load_vgg19_state_dict(garbage)
    # A pickled object that is not plain tensors: weights_only refuses it.
    pickled = tmp_path / "pickled.pth"
    torch.save({"net": nn.Linear(2, 2)}, pickled)
    with pytest.raises(IRNError, match="not a loadable state dict"):
        load_vgg19_state_dict(pickled)
    # VGG19 with BatchNorm: same key names at different indices, wrong shapes.
    bn = {f"features.{i}.weight": torch.zeros(64) for i in TORCHVISION_VGG19_CONVS}
    bn |= {f"features.{i}.bias": torch.zeros(64) for i in TORCHVISION_VGG19_CONVS}
    torch.save(bn, tmp_path / "vgg19_bn.pth")
    with pytest.raises(IRNError, match="without BatchNorm"):
        load_vgg19_state_dict(tmp_path / "vgg19_bn.pth")
    torch.save({**bn, "features.1.running_mean": torch.zeros(64)}, tmp_path / "vgg19_bn2.pth")
    with pytest.raises(IRNError, match="with BatchNorm; plain VGG19 is needed"):
        load_vgg19_state_dict(tmp_path / "vgg19_bn2.pth")
    torch.save({"classifier.0.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(IRNError, match="missing features.0.bias"):
        load_vgg19_state_dict(tmp_path / "other.pth")


# --- the stage-2 step ----------------------------------------------------------------


def _settings(**overrides: object) -> PlusSettings:
    base = dict(
        crop=32, disc_pretrain=0, lambda_gan=1.0, lambda_percep=0.01, disc_lr=1e-4,
        disc_betas=(0.9, 0.99), milestones=(100,), gamma=0.5, grad_clip=10.0,
        vgg_weights=RANDOM_VGG, seed=0,
    )  # fmt: skip
    return PlusSettings(**{**base, **overrides})


def test_discriminator_step_lowers_its_loss(images: list[np.ndarray]) -> None:
    # Real crops vs. blurred copies: a few discriminator steps on the same batch must
    # lower the BCE (the discriminator is learning to tell them apart).
    torch.manual_seed(0)
    stage = PlusStage(_settings())
    hr, _ = CropSampler(images, 32, 2, seed=1).batch(4)
    blurred = nn.functional.interpolate(nn.functional.avg_pool2d(hr, 4), scale_factor=4)
    bce = nn.functional.binary_cross_entropy_with_logits

    def d_loss() -> float:
        with torch.no_grad():
            real, fake = stage.disc(hr), stage.disc(blurred)
        return (bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))).item()

    before = d_loss()
    for _ in range(3):
        stage.optimizer.zero_grad()
        real, fake = stage.disc(hr), stage.disc(blurred)
        (bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))).backward()
        stage.optimizer.step()
    assert d_loss() < before


@pytest.mark.slow
def test_pretrain_trains_only_the_discriminator(
    tmp_path: Path, images: list[np.ndarray], stage1: Path
) -> None:
    cfg = plus_config(stage1, crop=32, disc_pretrain=2)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.plus is not None
    g0 = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    d0 = {k: v.clone() for k, v in trainer.plus.disc.state_dict().items()}
    trainer.run(images, max_steps=2)
    assert all(torch.equal(g0[k], v) for k, v in trainer.model.state_dict().items())
    d1 = trainer.plus.disc.state_dict()
    assert any(not torch.equal(d0[k], d1[k]) for k in d0)
    trainer.run(images, max_steps=1)
    assert any(not torch.equal(g0[k], v) for k, v in trainer.model.state_dict().items())

    with (tmp_path / "run" / "log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["gan"] == "" for r in rows] == [True, True, False]
    assert float(rows[2]["gan"]) > 0 and float(rows[2]["percep"]) > 0
    assert all(float(r["d_loss"]) > 0 and float(r["distr"]) == 0.0 for r in rows)  # no z loss
    assert all(float(r["lr"]) == 1e-4 for r in rows)


@pytest.mark.slow
def test_plus_resume_is_bit_identical(
    tmp_path: Path, images: list[np.ndarray], stage1: Path
) -> None:
    # Split inside the discriminator's pre-training; the resumed half crosses into
    # generator training, so both networks' states and schedules must carry over.
    cfg = plus_config(stage1, crop=32, disc_pretrain=3)
    straight = Trainer(cfg, tmp_path / "straight", progress=False)
    straight.run(images, max_steps=4)
    Trainer(cfg, tmp_path / "split", progress=False).run(images, max_steps=2)
    resumed = Trainer(cfg, tmp_path / "split", progress=False)
    resumed.resume()
    resumed.run(images, max_steps=2)
    assert straight.plus is not None and resumed.plus is not None
    assert params_equal(resumed.model, straight.model)
    assert params_equal(resumed.plus.disc, straight.plus.disc)  # incl. BatchNorm statistics
    assert resumed.plus.scheduler.state_dict() == straight.plus.scheduler.state_dict()


def test_plus_resume_needs_the_discriminator_state(
    tmp_path: Path, images: list[np.ndarray], stage1: Path
) -> None:
    cfg = plus_config(stage1, crop=32)
    Trainer(cfg, tmp_path / "run", progress=False).run(images, max_steps=1)
    state_file = tmp_path / "run" / "last" / TRAIN_STATE_FILE
    state = torch.load(state_file, weights_only=True)
    assert set(state["plus"]) == {"discriminator", "optimizer", "scheduler"}
    del state["plus"]
    torch.save(state, state_file)
    with pytest.raises(IRNError, match="no stage-2"):
        Trainer(cfg, tmp_path / "run", progress=False).resume()


def test_plus_needs_a_stage1_checkpoint(tmp_path: Path) -> None:
    cfg = replace(apply_stage(tiny_config(vgg_weights=RANDOM_VGG), "plus"))
    with pytest.raises(IRNError, match="--init-from"):
        Trainer(cfg, tmp_path / "run", progress=False)


# --- the CLI -------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_stage_plus(
    tmp_path: Path, train_dir: Path, stage1: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = [
        "--stage", "plus", "--model", "irn_x2", "--crop", "32", "--batch", "2",
        "--iterations", "50", "--data", str(train_dir), "--run-dir", str(run),
        "--val-every", "0", "--threads", "1", "--quiet", "--init-from", str(stage1),
    ]  # fmt: skip

    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("irn-train: error:") and "--vgg-weights PATH" in err and "\n" not in err
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"junk")
    assert main([*args, "--vgg-weights", str(bad)]) == 2
    assert "not a loadable state dict" in capsys.readouterr().err

    rc = main([*args, "--vgg-weights", RANDOM_VGG, "--disc-pretrain", "1", "--max-steps", "2"])
    assert rc == 0
    assert "for testing the mechanics only" in capsys.readouterr().err
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["stage"] == "plus" and saved["disc_pretrain"] == 1
    assert (saved["lr"], saved["lambda_recon"], saved["lambda_distr"]) == (1e-4, 0.01, 0.0)
    assert "plus" in torch.load(run / "last" / TRAIN_STATE_FILE, weights_only=True)

    assert main(["--run-dir", str(run), "--resume", "--max-steps", "1", "--quiet"]) == 0
    assert torch.load(run / "last" / TRAIN_STATE_FILE, weights_only=True)["step"] == 3
