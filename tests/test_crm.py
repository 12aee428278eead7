"""IRN + JPEG (seed 000, sections 3.5 / 4.4): the CRM (RRDB restore network), the
noise-robust fine-tuning stage and the CRM's training stage (losses, resume, CLI,
irn-eval), the CRM's export (graphs, parity, halo, manifest) and the runtime's restore
step in real ONNX Runtime (nearest quality, tiling).

Structure tests use tiny CRMs (one RRDB of 8 features) beside a one-block irn_x2, so an
export with FP16 graphs and the runtime's tiling run in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SET5, centre_crop, export_tiny, tiny_config
from irn_trt.export.api import export_model
from irn_trt.export.crm_export import RestoreModel, restore_macs_per_lr_pixel
from irn_trt.export.halo import measure_restore_halo
from irn_trt.runtime.api import Rescaler
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.image_io import ImageData, read_rgb
from irn_trt.runtime.manifest import ModelManifest, load_manifest
from irn_trt.runtime.metrics import psnr
from irn_trt.runtime.restore import count_restore_tiles, restore_lr
from irn_trt.runtime.trt_plan import output_shape, profile_for_hr_tile
from irn_trt.train.checkpoint import load_checkpoint, save_checkpoint
from irn_trt.train.configs import CRMConfig, config_from_dict, get_config, list_models
from irn_trt.train.evaluate import evaluate_compressed, to_tensor, to_uint8
from irn_trt.train.jpeg import jpeg_roundtrip
from irn_trt.train.models import CompressionRestorer, build_model, randomize_weights
from irn_trt.train.trainer import Trainer, irn_losses
from train_support import params_equal, read_log, straight_and_split_runs, tiny_val_folder
from train_support import tiny_config as tiny_train_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_crm(conditioned: bool = False) -> CRMConfig:
    """A CRM's structure at a test's cost: one RRDB, 8 features, growth 8."""
    name = "crm_small_cond" if conditioned else "crm_small"
    return dataclasses.replace(get_config(name), blocks=1, features=8, growth=8)


def random_crm(conditioned: bool = False, seed: int = 0) -> CompressionRestorer:
    torch.manual_seed(seed)  # the base initialisation, before the noise
    model = randomize_weights(build_model(tiny_crm(conditioned)), seed=seed, std=0.02)
    return model.eval()  # type: ignore[return-value]


# --- the architecture -------------------------------------------------------------------


def conv(cin: int, cout: int) -> int:
    return cin * cout * 9 + cout


def crm_params(c: CRMConfig) -> int:
    """conv_first, blocks x 3 residual dense blocks, conv_body, conv_hr, conv_last."""
    nf, gc = c.features, c.growth
    rdb = sum(conv(nf + k * gc, gc) for k in range(4)) + conv(nf + 4 * gc, nf)
    cin = c.in_channels + int(c.conditioned)
    return conv(cin, nf) + c.blocks * 3 * rdb + 2 * conv(nf, nf) + conv(nf, c.in_channels)


def test_parameter_counts_and_the_identity_start(capsys) -> None:
    for name in ("crm_rrdb8", "crm_rrdb8_cond", "crm_small", "crm_small_cond"):
        cfg = get_config(name)
        model = build_model(name)
        n = model.num_learnable_parameters()
        assert n == crm_params(cfg)  # type: ignore[arg-type]
        with capsys.disabled():
            print(f"\n[{name}] {n:,} learnable parameters")
    assert build_model("crm_rrdb8").num_learnable_parameters() == 5_832_771
    x = torch.rand(2, 3, 10, 12)
    with torch.no_grad():
        assert torch.equal(build_model("crm_small")(x), x)  # residual starts at zero
        assert torch.equal(build_model("crm_small_cond")(x, 50), x)
        crm = random_crm(conditioned=True)
        a, b = crm(x, 50), crm(x, torch.tensor([50.0, 90.0]))
        assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="quality-conditioned"):
        crm(x)


def test_registry_entries() -> None:
    names = set(list_models())
    assert {"crm_rrdb8", "crm_small", "crm_rrdb8_cond", "crm_small_cond"} <= names
    for name in ("crm_rrdb8", "crm_small_cond"):
        cfg = get_config(name)
        assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        assert cfg.task == "restore" and cfg.scale == 1
    for scale in (2, 4):
        robust, plain = get_config(f"irn_x{scale}_jpeg"), get_config(f"irn_x{scale}")
        assert robust.stages == plain.stages and "JPEG" in robust.description
        assert (
            build_model(robust.name).num_learnable_parameters()
            == build_model(plain.name).num_learnable_parameters()
        )


def test_restore_halo_is_the_architectures() -> None:
    # Every 3x3 conv reaches 1 px: conv_first, 15 per RRDB, conv_body, conv_hr, conv_last.
    for blocks in (0, 1, 2):
        cfg = dataclasses.replace(tiny_crm(), blocks=blocks)
        assert measure_restore_halo(cfg) == 1 + 15 * blocks + 3


# --- the training stages ----------------------------------------------------------------


@pytest.fixture(scope="module")
def frozen_irn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-block irn_x2 with small random weights (a valid LR), as a checkpoint."""
    model = randomize_weights(build_model(tiny_config("irn_x2")), seed=4, std=0.005)
    return save_checkpoint(model, tmp_path_factory.mktemp("frozen") / "irn")


def jpeg_config(**overrides: object):
    base = dict(crop=16, stage="jpeg", init_from=str(REPO / "weights" / "irn_x2"), lr_jpeg=(50, 90))
    return tiny_train_config(**{**base, **overrides})


def crm_config(frozen: Path, **overrides: object):
    base = dict(model="crm_small_cond", stage="crm", crm_irn=str(frozen), lr_jpeg=(50, 90))
    return tiny_train_config(**{"crop": 32, "lr": 1e-3, **base, **overrides})


def test_settings_a_stage_would_ignore_are_refused(tmp_path: Path, frozen_irn: Path) -> None:
    cases = [
        (tiny_train_config(lr_jpeg=(50,)), "--lr-jpeg applies to --stage jpeg"),
        (tiny_train_config(lr_noise=2.0), "--lr-noise and --jpeg-mode apply"),
        (tiny_train_config(crm_irn=str(frozen_irn)), "--crm-irn, --lr-cache and --crm-loss"),
        (tiny_train_config(lr_cache="x"), "--crm-irn, --lr-cache and --crm-loss apply"),
        (tiny_train_config(crm_loss="hr"), "--crm-irn, --lr-cache and --crm-loss apply"),
        (tiny_train_config(model="crm_small"), "train it with --stage crm"),
        (jpeg_config(init_from=None), "give --init-from"),
        (jpeg_config(lr_jpeg=()), "needs --lr-jpeg qualities or --lr-noise"),
        (jpeg_config(model="irn_a_x2"), "plain RGB LR"),
        (crm_config(frozen_irn, model="irn_x2"), "trains a CRM"),
        (crm_config(frozen_irn, crm_irn=None), "needs --crm-irn"),
        (crm_config(frozen_irn, lr_jpeg=()), "needs --lr-jpeg"),
        (crm_config(frozen_irn, model="crm_small"), "restores one JPEG quality"),
        (crm_config(frozen_irn, crop=31), "must be a multiple"),
    ]
    for cfg, message in cases:
        with pytest.raises(IRNError, match=message):
            Trainer(cfg, tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()


def test_jpeg_stage_guides_the_lr_harder() -> None:
    # 16x the papers' scale**2 (measured: at 1x the LR drifted to 29-30 dB against bicubic).
    from irn_trt.train.recipe import JPEG_GUIDE_FACTOR, TrainConfig, apply_stage

    assert JPEG_GUIDE_FACTOR == 16.0
    for model, weight in (("irn_x4_jpeg", 256.0), ("irn_x2_jpeg", 64.0)):
        assert apply_stage(TrainConfig(model=model), "jpeg").lambda_guide == weight
        assert apply_stage(TrainConfig(model=model), "base").lambda_guide is None


def test_jpeg_stage_degrades_only_the_reconstruction_pass(images: list[np.ndarray]) -> None:
    from irn_trt.train.data import CropSampler
    from irn_trt.train.stage_compress import lr_degrader

    cfg = jpeg_config(lr_jpeg=(30,))
    model = load_checkpoint(REPO / "weights" / "irn_x2")[0]
    hr, guide = CropSampler(images, 16, 2, seed=1).batch(2)
    degrade = lr_degrader(cfg, torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = irn_losses(model, hr, guide, cfg).terms
        lossy = irn_losses(model, hr, guide, cfg, lr_degrade=degrade).terms
    assert lossy["guide"] == plain["guide"] and lossy["distr"] == plain["distr"]
    assert lossy["recon"] > 1.05 * plain["recon"]


@pytest.mark.parametrize("mode", ["real", "sim"])
def test_jpeg_stage_resume_is_bit_identical(
    tmp_path: Path, images: list[np.ndarray], mode: str
) -> None:
    cfg = jpeg_config(jpeg_mode=mode, lr_noise=1.0 if mode == "real" else 0.0)
    straight, first, second = straight_and_split_runs(cfg, tmp_path, images)
    assert params_equal(second.model, straight.model)
    assert not params_equal(first.model, straight.model)
    losses = lambda d: [r["loss"] for r in read_log(d)]  # noqa: E731
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")


def test_crm_resume_is_bit_identical(
    tmp_path: Path, images: list[np.ndarray], frozen_irn: Path
) -> None:
    cfg = crm_config(frozen_irn)
    straight, first, second = straight_and_split_runs(cfg, tmp_path, images)
    assert params_equal(second.model, straight.model)
    assert not params_equal(first.model, straight.model)
    rows = read_log(tmp_path / "split")
    assert [r["loss"] for r in rows] == [r["loss"] for r in read_log(tmp_path / "straight")]
    # A fresh CRM is the identity: its first loss is the JPEG's own error.
    assert rows[0]["recon"] == rows[0]["jpeg_l2"]
    # The frozen IRN's LR of each training image was computed once and cached.
    cached = list((tmp_path / "split" / "lr_cache").glob("*/*.png"))
    assert len(cached) == len(images)


def test_cached_lr_is_the_rescalers_down(tmp_path: Path) -> None:
    # The cache runs the trained irn_x2 in NHWC for speed; its LR must still be the one
    # the plain (NCHW) forward gives: equal bytes but for rare one-level rounding ties.
    from irn_trt.train.models import quantize
    from irn_trt.train.stage_compress import CRMStage
    from PIL import Image

    cfg = crm_config(REPO / "weights" / "irn_x2")
    stage = CRMStage(cfg, progress=False)
    hr = centre_crop(read_rgb(SET5 / "baby.png"), 96, 96)
    (cached,) = stage.lr_images([hr], tmp_path)
    with torch.no_grad():
        y, _ = stage.rescaler(to_tensor(hr))
    plain = to_uint8(quantize(y))
    assert cached.shape == plain.shape == (48, 48, 3)
    diff = np.abs(cached.astype(int) - plain.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999
    # A second call reads the cache instead of recomputing.
    (path,) = (tmp_path / "lr_cache").glob("*/*.png")
    Image.fromarray(np.zeros_like(cached)).save(path)
    (again,) = stage.lr_images([hr], tmp_path)
    assert not again.any()


@pytest.mark.slow
def test_crm_steps_lower_the_loss(
    tmp_path: Path, images: list[np.ndarray], frozen_irn: Path
) -> None:
    # One 32x32 HR patch (a 16x16 LR and its flips / transposes): the CRM's loss on a
    # fixed batch of its JPEGs must fall below the JPEG's own error (a fresh CRM's).
    from irn_trt.train.data import CropSampler

    cfg = crm_config(frozen_irn, model="crm_small", lr_jpeg=(30,), batch=4)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    patch = [images[0][:32, :32]]
    lr, _ = CropSampler(trainer.crm.lr_images(patch, tmp_path), 16, 1, seed=5).batch(8)
    gen = torch.Generator()
    with torch.no_grad():
        before, terms = trainer.crm.losses(trainer.model, lr, lr, gen)
    assert before.item() == terms["jpeg_l2"]
    trainer.run(patch, max_steps=60)
    with torch.no_grad():
        after, _ = trainer.crm.losses(trainer.model.eval(), lr, lr, gen)
    print(f"\nCRM loss / JPEG's own L2 on a fixed batch after 60 steps: {after / before:.3f}")
    assert after < 0.9 * before


def test_paired_sampler_crops_hr_and_lr_alike() -> None:
    # An HR made of 2x2 blocks of its LR: every HR crop must be its LR crop's blocks, through
    # the random offsets, flips and transposes.
    from irn_trt.train.data import PairedCropSampler

    rng = np.random.default_rng(3)
    lrs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((20, 31), (27, 18))]
    hrs = [lr.repeat(2, axis=0).repeat(2, axis=1) for lr in lrs]
    hr, lr = PairedCropSampler(hrs, lrs, 16, 2, seed=1).batch(12)
    assert hr.shape == (12, 3, 16, 16) and lr.shape == (12, 3, 8, 8)
    assert torch.equal(hr, lr.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    assert len({tuple(x.flatten()[:8].tolist()) for x in lr}) > 6  # the crops differ


def test_crm_hr_loss_is_the_frozen_ups_error(
    tmp_path: Path, images: list[np.ndarray], frozen_irn: Path
) -> None:
    # --crm-loss hr: a fresh CRM is the identity, so the first loss is the Charbonnier error
    # of the frozen up of the JPEG'd LR against the HR crop (the deployed path, z = 0).
    from irn_trt.train.jpeg import real_jpeg
    from irn_trt.train.models import quantize

    cfg = crm_config(frozen_irn, model="crm_small", lr_jpeg=(40,), crm_loss="hr", batch=3)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    hr, lr = trainer.crm.sampler(images, tmp_path, seed=2).batch(3)
    assert hr.shape[-1] == 32 and lr.shape[-1] == 16
    with torch.no_grad():
        loss, terms = trainer.crm.losses(trainer.model, hr, lr, torch.Generator())
        rec = trainer.crm.rescaler.inverse(quantize(real_jpeg(lr, [40] * 3)))
    expected = torch.sum(torch.sqrt((hr - rec) ** 2 + 1e-6)) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["jpeg_l2"] > 0 and loss.item() > terms["jpeg_l2"]
    # It trains: two steps through the frozen up, logged like the LR loss.
    trainer.run(images, max_steps=2)
    assert [int(r["step"]) for r in read_log(tmp_path / "run")] == [1, 2]


def test_crm_hr_loss_runs_the_frozen_up_in_bf16_only_in_its_steps(
    tmp_path: Path, images: list[np.ndarray], frozen_irn: Path
) -> None:
    # --conv-dtype applies to the frozen rescaler inside the loss only: its LR cache (which
    # runs share by checkpoint) and the validation stay FP32.
    from irn_trt.train.modules import ConvCompute
    from irn_trt.train.stage_compress import CRMStage
    from irn_trt.train.trainer import native_bf16

    if not native_bf16():
        pytest.skip("this CPU has no native BF16")
    settings = dict(model="crm_small", lr_jpeg=(40,), crm_loss="hr")
    trainer = Trainer(
        crm_config(frozen_irn, conv_dtype="bfloat16", **settings), tmp_path / "run", progress=False
    )
    stacks = [m for m in trainer.crm.rescaler.modules() if isinstance(m, ConvCompute)]
    assert stacks and trainer.crm.rescaler_train_dtype == torch.bfloat16
    fp32 = CRMStage(crm_config(frozen_irn, **settings), progress=False)
    cached = trainer.crm.lr_images(images[:2], tmp_path / "a")
    assert all(
        np.array_equal(a, b)
        for a, b in zip(cached, fp32.lr_images(images[:2], tmp_path / "b"), strict=True)
    )
    hr, lr = trainer.crm.sampler(images, tmp_path, seed=2).batch(2)
    loss_bf16, _ = trainer.crm.losses(trainer.model, hr, lr, torch.Generator())
    loss_fp32, _ = fp32.losses(trainer.model, hr, lr, torch.Generator())
    assert loss_bf16.item() != loss_fp32.item()  # the step's up did run in BF16
    assert loss_bf16.item() == pytest.approx(loss_fp32.item(), rel=1e-2)
    assert all(m.compute_dtype is None for m in stacks)  # and FP32 again after it


def test_cli_trains_a_crm_and_irn_eval_scores_it(
    tmp_path: Path, train_dir: Path, frozen_irn: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from irn_trt.train.cli import main as train_main
    from irn_trt.train.eval_cli import main as eval_main

    val = tiny_val_folder(tmp_path / "val")
    run = tmp_path / "run"
    args = [
        "--model", "crm_small", "--stage", "crm", "--crm-irn", str(frozen_irn),
        "--lr-jpeg", "50", "--crop", "32", "--batch", "2", "--iterations", "2",
        "--data", str(train_dir), "--run-dir", str(run), "--val-every", "2",
        "--val-dir", str(val), "--checkpoint-every", "0", "--threads", "1", "--quiet",
    ]  # fmt: skip
    assert train_main(args) == 0
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["stage"] == "crm" and saved["lr_jpeg"] == [50] and saved["batch"] == 2
    assert saved["iterations"] == 2 and saved["crop"] == 32  # flags over the stage's preset
    row = read_log(run)[-1]
    assert math.isfinite(float(row["val_psnr"])) and math.isfinite(float(row["val_no_crm_psnr"]))
    assert (run / "best" / "model.safetensors").is_file()
    cache = sorted((run / "lr_cache").glob("*/*.png"))
    stamps = [p.stat().st_mtime_ns for p in cache]
    assert len(cache) == 4  # the 4 training crops' LRs, computed once
    assert train_main(["--run-dir", str(run), "--resume", "--iterations", "3", "--quiet"]) == 0
    assert [p.stat().st_mtime_ns for p in sorted((run / "lr_cache").glob("*/*.png"))] == stamps
    # Another CRM run of the same rescaler can share the cache (--lr-cache).
    other = [*args[: args.index("--run-dir")], "--run-dir", str(tmp_path / "q90")]
    other[other.index("50")] = "90"
    more = ["--lr-cache", str(run / "lr_cache"), "--iterations", "1", "--val-every", "0", "--quiet"]
    assert train_main([*other, *more]) == 0
    assert [p.stat().st_mtime_ns for p in sorted((run / "lr_cache").glob("*/*.png"))] == stamps
    assert not (tmp_path / "q90" / "lr_cache").exists()
    two = ["--model", "crm_small", "--stage", "crm", "--crm-irn", str(frozen_irn),
           "--lr-jpeg", "50,90", "--data", str(train_dir),
           "--run-dir", str(tmp_path / "x")]  # fmt: skip
    assert train_main(two) == 2
    assert "crm_small_cond" in capsys.readouterr().err

    out = tmp_path / "eval.json"
    assert eval_main([str(val), "--checkpoint", str(frozen_irn), "--lr-jpeg", "50,90",
                      "--crm", str(run / "best"), "--json", str(out), "--quiet"]) == 0  # fmt: skip
    text = capsys.readouterr()
    assert "q90" in text.out and "trained for JPEG quality 50, scored here at 90" in text.err
    doc = json.loads(out.read_text())
    assert set(doc["mean_by_quality"]) == {"50", "90"} and len(doc["images"]) == 2
    q90 = doc["mean_by_quality"]["90"]
    assert q90["bpp"] > doc["mean_by_quality"]["50"]["bpp"] > 0
    assert eval_main([str(val), "--checkpoint", str(frozen_irn), "--crm", str(run / "best")]) == 2
    assert "give --lr-jpeg" in capsys.readouterr().err


def test_evaluate_compressed_restores_with_the_crm(frozen_irn: Path) -> None:
    irn, _ = load_checkpoint(frozen_irn)
    img = centre_crop(read_rgb(SET5 / "bird.png"), 48, 64)
    crm = random_crm()
    cache: dict = {}
    plain = evaluate_compressed(irn, [("bird", img)], (None, 50), cache=cache)
    assert plain[0].bpp == 0 and plain[0].lr_psnr == math.inf and plain[1].bpp > 0
    assert set(cache) == {("bird", None), ("bird", 50)}
    restored = evaluate_compressed(irn, [("bird", img)], (50,), crm, cache=cache)[0]
    assert restored.bpp == plain[1].bpp and restored.lr_psnr != plain[1].lr_psnr


# --- export and the runtime -------------------------------------------------------------


@pytest.fixture(scope="module")
def crm_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelManifest]:
    """One-block irn_x2 + a per-quality CRM (q50) + a conditioned one (q75, q90), FP32 + FP16,
    verified on a Set5 crop, halos measured on a larger one (random weights, so the
    effective halo is that of these weights, not of a trained CRM)."""
    irn = randomize_weights(build_model(tiny_config("irn_x2")), seed=1, std=0.005).eval()
    baby = read_rgb(SET5 / "baby.png")
    out = tmp_path_factory.mktemp("crm_export") / "model"
    manifest = export_model(
        irn,
        out,
        verify_images=[("baby", centre_crop(baby, 48, 48))],
        halo_images=[centre_crop(baby, 128, 128)],
        restorers=[
            RestoreModel(random_crm(seed=2), (50,)),
            RestoreModel(random_crm(conditioned=True, seed=3), (75, 90), (50, 75, 90)),
        ],
    )
    return out, manifest


def test_bench_times_restore_and_up_against_up_alone(crm_export, tmp_path: Path) -> None:
    """irn-bench rows of a model directory with restore graphs: up of a JPEG-decoded LR
    through each quality's CRM, beside up alone (issue 15's benchmark rows)."""
    from irn_trt.runtime.bench import main as bench_main

    out, _ = crm_export
    report_file = tmp_path / "bench.json"
    code = bench_main(
        ["--model-dir", str(out), "--configs", "ort-cpu:fp32", "--quick", "--size", "96x64",
         "--threads", "1", "--json", str(report_file), "--quiet"]
    )  # fmt: skip
    assert code == 0
    (row,) = json.loads(report_file.read_text())["results"]
    assert "error" not in row, row
    for q in (50, 75, 90):
        with_crm = row[f"up_restore_q{q}_s"]
        assert with_crm > 0 and row[f"up_restore_q{q}_mp_per_s"] > 0
        assert row[f"restore_overhead_vs_up_q{q}"] == pytest.approx(
            with_crm / row["up_s"] - 1, abs=1e-3
        )


def test_export_writes_restore_graphs_with_parity_and_halo(crm_export) -> None:
    out, manifest = crm_export
    assert load_manifest(out) == manifest
    files = {g.file: g.quality for g in manifest.graphs if g.direction == "restore"}
    assert files == {f"restore.q{q}.{p}.onnx": q for q in (50, 75, 90) for p in ("fp32", "fp16")}
    assert all((out / f).is_file() for f in files)
    assert manifest.restore_qualities() == [50, 75, 90]
    per_q, cond = manifest.restore
    assert (per_q.qualities, per_q.conditioned, cond.qualities) == ((50,), False, (75, 90))
    assert cond.conditioned and cond.trained_qualities == (50, 75, 90)
    exact = 1 + 15 + 3
    for info in manifest.restore:
        assert info.halo == exact and info.subsampling == "4:2:0"
        assert info.effective_halo is not None and info.effective_halo["measured"]
        assert 0 < info.overlap_halo <= exact
        assert info.macs_per_lr_pixel == restore_macs_per_lr_pixel(random_crm(info.conditioned))
    for q in ("q50", "q75", "q90"):
        numbers = manifest.parity["restore"][q]
        assert numbers["restore_fp32_vs_torch"]["equal_fraction"] >= 0.999
        assert numbers["restore_fp16_vs_fp32"]["within1_fraction"] >= 0.99
        assert set(numbers["ops"]["fp16"]) <= set(numbers["ops"]["fp32"]) | {"Cast"}
    assert [g.quality for g in manifest.graphs if g.direction != "restore"] == [None] * 4


def test_restore_graph_takes_the_nearest_quality(crm_export) -> None:
    _, manifest = crm_export
    expect = {50: 50, 60: 50, 62: 50, 63: 75, 75: 75, 82: 75, 83: 90, 100: 90, 1: 50}
    for asked, used in expect.items():
        choice = manifest.restore_graph(asked, "fp16")
        assert (choice.quality, choice.graph.file) == (used, f"restore.q{used}.fp16.onnx")
        assert choice.restorer.conditioned == (used != 50)
        if asked == used:
            assert choice.note is None
        else:
            assert choice.note == (
                f"no CRM for JPEG quality {asked} in irn_x2: using the quality-{used} CRM "
                "(nearest of 50, 75, 90)"
            )
    with pytest.raises(IRNError, match="integer in 1..100"):
        manifest.restore_graph(0, "fp32")
    no_fp16 = dataclasses.replace(
        manifest, graphs=tuple(g for g in manifest.graphs if g.precision == "fp32")
    )
    with pytest.raises(IRNError, match="no fp16 restore graph"):
        no_fp16.restore_graph(50, "fp16")
    bare = dataclasses.replace(
        manifest, graphs=tuple(g for g in manifest.graphs if g.direction != "restore")
    )
    with pytest.raises(IRNError, match="no compression restore module"):
        bare.restore_graph(50, "fp32")


def test_older_manifests_load_unchanged(crm_export) -> None:
    _, manifest = crm_export
    old = manifest.to_dict()
    del old["restore"]
    old["graphs"] = [g for g in old["graphs"] if g["direction"] != "restore"]
    for g in old["graphs"]:
        del g["quality"]
    loaded = ModelManifest.from_dict(json.loads(json.dumps(old)))
    assert loaded.restore == () and loaded.restore_qualities() == []
    assert loaded == dataclasses.replace(
        manifest, restore=(), graphs=tuple(g for g in manifest.graphs if g.direction != "restore")
    )
    bad = manifest.to_dict()
    bad["graphs"][-1]["quality"] = 101
    with pytest.raises(ValueError, match="1..100"):
        ModelManifest.from_dict(bad)


def test_trt_plan_keeps_the_lr_size_for_restore_graphs(crm_export) -> None:
    _, manifest = crm_export
    graph = manifest.restore_graph(50, "fp16").graph
    assert output_shape(graph, 2, (3, 40, 56, 3)) == (3, 40, 56, 3)
    (profile,) = profile_for_hr_tile(graph, manifest, (128, 96), max_batch=2)
    assert profile.name == "lr" and profile.max == (2, 64, 48, 3) and profile.min == (1, 1, 1, 3)


def jpeg_lr(rescaler: Rescaler, hr: np.ndarray, quality: int) -> np.ndarray:
    return jpeg_roundtrip(rescaler.downscale(hr), quality)[0]


def test_runtime_restore_tiled_equals_untiled_and_pytorch(crm_export) -> None:
    out, manifest = crm_export
    hr = centre_crop(read_rgb(SET5 / "butterfly.png"), 200, 232)  # LR 100 x 116
    whole = Rescaler.load(out, backend="ort-cpu", precision="fp32", no_tile=True)
    lr = jpeg_lr(whole, hr, 50)
    ref = restore_lr(whole, lr, 50)
    assert whole.tiles_run == 2  # down, then one restore tile
    assert count_restore_tiles(whole, *lr.shape[:2], 50) == 1
    info = manifest.restore_graph(50, "fp32").restorer
    for overlap, exact in ((None, False), ("exact", True)):
        tiled = Rescaler.load(
            out, backend="ort-cpu", precision="fp32", tile=96, overlap=overlap
        )  # 48 LR px tiles: 3 x 3 with the effective halo, more with the exact one
        got = restore_lr(tiled, lr, 50)
        assert tiled.tiles_run == count_restore_tiles(tiled, *lr.shape[:2], 50) >= 9
        diff = np.abs(got.astype(int) - ref).max()
        what = overlap or "effective"
        print(f"\nrestore tiled ({what} overlap) vs untiled: {psnr(got, ref):.2f} dB, max {diff}")
        # The tiling tests' bound (tests/test_tiling_seams.py): >= 50 dB.
        assert psnr(got, ref) >= 50.0
        assert np.abs(got.astype(int) - ref).max() <= 1
        if exact:
            assert info.overlap_halo < info.halo
    # ONNX Runtime's FP32 graph against PyTorch's CRM, byte for byte (up to rounding).
    crm = random_crm(seed=2)
    with torch.no_grad():
        torch_out = to_uint8(crm(to_tensor(lr)))
    assert np.abs(torch_out.astype(int) - ref).max() <= 1


def test_upscale_restores_a_jpeg_lr_with_the_nearest_crm(crm_export, tmp_path: Path) -> None:
    out, _ = crm_export
    hr = centre_crop(read_rgb(SET5 / "bird.png"), 96, 128)
    r = Rescaler.load(out, backend="ort-cpu", precision="fp16", no_tile=True)
    lr = r.downscale(ImageData.from_array(hr))
    jpeg = dataclasses.replace(lr, rgb=jpeg_roundtrip(lr.rgb, 60)[0])
    plain = r.upscale(jpeg)
    assert r.last_restore is None
    restored = r.upscale(jpeg, lr_jpeg_quality=60)
    assert restored.notes == [
        "no CRM for JPEG quality 60 in irn_x2: using the quality-50 CRM (nearest of 50, 75, 90)"
    ]
    assert r.last_restore.quality == 50 and r.last_restore.graph.precision == "fp16"
    assert restored.size == plain.size == (128, 96)
    assert not np.array_equal(restored.rgb, plain.rgb)
    assert r.upscale(jpeg, lr_jpeg_quality=90).notes == []
    arr = r.upscale(jpeg.rgb, original_size=(128, 96), lr_jpeg_quality=90)
    np.testing.assert_array_equal(arr, r.upscale(jpeg, lr_jpeg_quality=90).rgb)
    # A model directory without a CRM upscales the JPEG LR as it is, and says so.
    bare = Rescaler.load(export_tiny("irn_x2", tmp_path / "bare", seed=5), backend="ort-cpu")
    got = bare.upscale(ImageData.from_array(jpeg.rgb), lr_jpeg_quality=75)
    assert "JPEG quality ~75) and irn_x2 has no compression-restore graph" in got.notes[-1]
    np.testing.assert_array_equal(got.rgb, bare.upscale(ImageData.from_array(jpeg.rgb)).rgb)


def test_irn_trt_run_routes_a_jpeg_lr_file_to_its_crm(crm_export, tmp_path: Path, capsys) -> None:
    """down --lr-format jpeg:60 writes a JPEG LR with the metadata; up of that file
    estimates its quality from the quantisation tables and runs the nearest CRM (q50),
    equal to an explicit ``lr_jpeg_quality``."""
    from conftest import run_cli
    from irn_trt.runtime.image_io import read_image, write_image

    out, _ = crm_export
    hr_path = tmp_path / "bird.png"
    write_image(hr_path, ImageData.from_array(centre_crop(read_rgb(SET5 / "bird.png"), 96, 128)))
    model = ["--model-dir", str(out), "--precision", "fp32"]
    lr_dir, hr_dir = tmp_path / "lr", tmp_path / "hr"
    assert (
        run_cli(str(hr_path), "--mode", "down", "--lr-format", "jpeg:60", "-o", str(lr_dir), *model)
        == 0
    )
    lr_file = lr_dir / "bird_lr.jpg"
    lr = read_image(lr_file)
    assert lr.lr_codec is not None and lr.lr_codec["quality"] == 60
    capsys.readouterr()
    assert run_cli(str(lr_file), "--mode", "up", "-o", str(hr_dir), *model) == 0
    assert "using the quality-50 CRM" in capsys.readouterr().err
    r = Rescaler.load(out, backend="ort-cpu", precision="fp32")
    want = r.upscale(dataclasses.replace(lr, lr_codec=None), lr_jpeg_quality=60)
    assert r.last_restore is not None and r.last_restore.quality == 50
    got = read_image(hr_dir / "bird_hr.png").rgb
    np.testing.assert_array_equal(got, want.rgb)
    assert not np.array_equal(got, r.upscale(dataclasses.replace(lr, lr_codec=None)).rgb)


@pytest.mark.slow
def test_export_cli_takes_crm_checkpoints(tmp_path: Path) -> None:
    from irn_trt.export.cli import main as export_main

    crm = save_checkpoint(random_crm(seed=7), tmp_path / "crm")
    base = ["--model", "irn_x2", "--random-init", "--precision", "fp32",
            "--no-verify", "--no-measure-memory", "--quiet", "--out"]  # fmt: skip
    assert export_main([*base, str(tmp_path / "m"), "--crm", f"{crm}@75"]) == 0
    m = load_manifest(tmp_path / "m")
    assert m.restore_qualities() == [75] and m.restore[0].model == "crm_small"
    assert m.peak_bytes_per_hr_px is None  # not measured: IRN x4's memory model
    # Without @Q a checkpoint that does not record its quality is refused in one line.
    assert export_main([*base, str(tmp_path / "n"), "--crm", str(crm)]) == 2
    assert export_main([*base, str(tmp_path / "n"), "--crm", f"{crm}@75,90"]) == 2
    assert not (tmp_path / "n").exists()


def test_reexport_without_a_crm_removes_its_graphs(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "restore.q50.fp32.onnx").write_bytes(b"old")
    export_tiny("irn_x2", tmp_path / "m", seed=6)
    assert not list((tmp_path / "m").glob("restore.*"))  # would not match the manifest
