"""Stage-1 training mechanics on tiny crops: learning, bit-exact resume, checkpoints, the CLI.

Everything runs on 16-32 pixel crops of two shared training images with irn_x2
and batch 2, on one thread (two threads fighting other work on a 2-core machine
are many times slower than one).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from irn_trt.train.checkpoint import load_checkpoint
from irn_trt.train.cli import main
from irn_trt.train.data import CropSampler
from irn_trt.train.recipe import LR_VALID_PSNR_DB, X8_LR_VALID_PSNR_DB
from irn_trt.train.trainer import (
    TRAIN_MEMORY_FORMAT,
    TRAIN_STATE_FILE,
    TrainConfig,
    Trainer,
    apply_preset,
    apply_stage,
    irn_losses,
)
from train_support import (
    params_equal,
    read_log,
    straight_and_split_runs,
    tiny_config,
    tiny_val_folder,
)

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_val_folder(tmp_path_factory.mktemp("val") / "set5_crop")


def cli_args(train_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "--model", "irn_x2", "--crop", "16", "--batch", "2", "--iterations", "50",
        "--data", str(train_dir), "--run-dir", str(run_dir), "--val-every", "0",
        "--checkpoint-every", "0", "--threads", "1", "--quiet", *extra,
    ]  # fmt: skip


# --- learning ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_few_steps_lower_the_loss(tmp_path: Path, images: list[np.ndarray]) -> None:
    # One 16x16 patch (8 flip/transpose variants): the loss on a fixed batch of its
    # variants must fall. Adam's first steps from the identity init overshoot, so
    # compare after 24 steps, not 2.
    patch = [images[0][:16, :16]]
    cfg = tiny_config(crop=16)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    hr, lr_guide = CropSampler(patch, 16, 2, seed=99).batch(8)
    with torch.no_grad():
        before = irn_losses(trainer.model, hr, lr_guide, cfg).total.item()
    assert trainer.run(patch, max_steps=24) == 24
    with torch.no_grad():
        after = irn_losses(trainer.model, hr, lr_guide, cfg).total.item()
    assert after < 0.9 * before, (before, after)
    rows = read_log(tmp_path / "run")
    assert [int(r["step"]) for r in rows] == list(range(1, 25))
    assert all(math.isfinite(float(r["loss"])) for r in rows)


# --- resume and checkpoints ----------------------------------------------------------


def test_resume_is_bit_identical(tmp_path: Path, images: list[np.ndarray]) -> None:
    # Gaussian z in the reconstruction pass exercises the saved generator state too.
    cfg = tiny_config(crop=16, train_z="gaussian")
    straight, first, second = straight_and_split_runs(cfg, tmp_path, images)

    assert second.step == straight.step == 4
    assert params_equal(second.model, straight.model)
    assert not params_equal(first.model, straight.model)  # it did train on after the split
    losses = lambda d: [r["loss"] for r in read_log(d)]  # noqa: E731
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")


def two_saved_then_two_more(
    cfg: TrainConfig, run: Path, images: list[np.ndarray], aside: Path
) -> None:
    """Train 2 steps (last/ saved), copy that last/ to ``aside``, resume, train 2 more."""
    Trainer(cfg, run, progress=False).run(images, max_steps=2)
    shutil.copytree(run / "last", aside)
    more = Trainer(cfg, run, progress=False)
    more.resume()
    more.run(images, max_steps=2)


def test_resume_after_a_crash_keeps_one_log_row_per_step(
    tmp_path: Path, images: list[np.ndarray]
) -> None:
    """A run killed between checkpoints logged steps its last/ does not hold: the resume
    drops those rows and logs the recomputed steps once (bit-identical to the lost ones)."""
    cfg = tiny_config(crop=16)
    run = tmp_path / "run"
    two_saved_then_two_more(cfg, run, images, aside=tmp_path / "saved_at_2")
    before_crash = read_log(run)
    assert [r["step"] for r in before_crash] == ["1", "2", "3", "4"]
    # The crash: last/ is still the state of step 2, the log went on to step 4.
    shutil.rmtree(run / "last")
    shutil.copytree(tmp_path / "saved_at_2", run / "last")

    messages: list[str] = []
    again = Trainer(cfg, run, progress=False, log=messages.append)
    again.resume()
    assert [r["step"] for r in read_log(run)] == ["1", "2"]
    assert messages == ["log.csv: dropped 2 rows after step 2 (not saved)"]
    again.run(images, max_steps=2)
    after = read_log(run)
    assert [r["step"] for r in after] == ["1", "2", "3", "4"]
    assert [r["loss"] for r in after] == [r["loss"] for r in before_crash]


def test_log_trimming_keeps_what_it_cannot_read(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(crop=16), tmp_path / "run", progress=False, log=lambda _: None)
    log = tmp_path / "run" / "log.csv"
    log.parent.mkdir()
    odd = "step,lr,loss\n1,0.1,5\n\n2,0.1,4\n²,x,y\n,0.1,3\n3,0.1,2\n"
    log.write_text(odd)
    trainer._drop_log_rows_after(3)
    assert log.read_text() == odd  # nothing after step 3
    trainer._drop_log_rows_after(2)
    assert log.read_text().splitlines() == [
        "step,lr,loss",
        "1,0.1,5",
        "",
        "2,0.1,4",
        "²,x,y",
        ",0.1,3",
    ]
    foreign = "when,what\n5,x\n"
    log.write_text(foreign)
    trainer._drop_log_rows_after(1)
    assert log.read_text() == foreign


def test_a_kill_between_the_renames_of_a_save_resumes_from_the_complete_set(
    tmp_path: Path, images: list[np.ndarray]
) -> None:
    """save() writes last.new/ and swaps it in with two renames; whatever moment a kill
    hits, one complete set remains and resume takes the newest."""
    cfg = tiny_config(crop=16)
    run = tmp_path / "run"
    two_saved_then_two_more(cfg, run, images, aside=tmp_path / "at_2")
    assert not (run / "last.new").exists() and not (run / "last.old").exists()

    # Killed after last/ -> last.old/, before last.new/ -> last/.
    (run / "last").rename(run / "last.new")
    shutil.copytree(tmp_path / "at_2", run / "last.old")
    messages: list[str] = []
    t = Trainer(cfg, run, progress=False, log=messages.append)
    t.resume()
    assert t.step == 4 and "resuming from last.new/ (step 4)" in messages[0]

    # Killed while last.new/ was written (no config.json yet): last/ is taken as it is.
    shutil.rmtree(run / "last.old")
    shutil.copytree(tmp_path / "at_2", run / "last")
    (run / "last.new" / "config.json").unlink()
    t = Trainer(cfg, run, progress=False, log=messages.append)
    t.resume()
    assert t.step == 2


def test_a_half_saved_last_is_refused_in_one_line(
    tmp_path: Path, images: list[np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    """A last/ written in place by an older irn-train and killed while saving: the
    training state of step 4 is written, config.json is still step 2's. Resuming would
    pair them: refused."""
    run = tmp_path / "run"
    two_saved_then_two_more(tiny_config(crop=16), run, images, aside=tmp_path / "at_2")
    shutil.copy(tmp_path / "at_2" / "config.json", run / "last" / "config.json")
    rc = main(["--run-dir", str(run), "--resume", "--max-steps", "1", "--quiet"])
    _one_line_error(capsys, rc, "the weights are of step 2 but the training state of step 4")
    assert len(read_log(run)) == 4


def test_checkpoint_round_trips(tmp_path: Path, images: list[np.ndarray]) -> None:
    cfg = tiny_config(crop=16)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.run(images, max_steps=2)
    model, config = load_checkpoint(tmp_path / "run" / "last")
    assert params_equal(model, trainer.model)
    assert config["meta"]["step"] == 2
    assert TrainConfig.from_json(json.dumps(config["meta"]["train_config"])) == cfg

    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    model.to(memory_format=TRAIN_MEMORY_FORMAT)  # same kernels as the trainer's, same bits
    trainer.model.eval()
    with torch.no_grad():
        y0, z0 = trainer.model(x)
        y1, z1 = model(x)
        assert torch.equal(y0, y1) and torch.equal(z0, z1)
        assert torch.equal(trainer.model.inverse(y0, z0), model.inverse(y1, z1))

    state = torch.load(tmp_path / "run" / "last" / TRAIN_STATE_FILE, weights_only=True)
    assert state["step"] == 2
    assert state["scheduler"]["last_epoch"] == 2
    assert "plus" not in state  # stage-1 state layout unchanged


def test_config_json_round_trips_and_old_configs_load() -> None:
    # A train_config.json written before stage 2 existed (the keys a stage-1 run stores).
    old = """{"batch": 8, "betas": [0.9, 0.999], "checkpoint_every": 250, "crop": 64,
      "data": ["../shared/data/train"], "gamma": 0.5, "grad_clip": 10.0, "init_from": null,
      "iterations": 12000, "lambda_distr": 1.0, "lambda_guide": null, "lambda_recon": 1.0,
      "lr": 0.0002, "milestones": [6000, 9000, 11000], "model": "irn_x4", "seed": 0,
      "train_z": "zero", "val_dir": "../shared/data/eval/Set5", "val_every": 500,
      "weight_decay": 1e-05}"""
    cfg = TrainConfig.from_json(old)
    preset = apply_preset(TrainConfig(), "cpu")
    expected = replace(preset, data=("../shared/data/train",), val_dir="../shared/data/eval/Set5")
    assert cfg == expected  # same values as the cpu preset today, and stage "base"
    assert cfg.stage == "base" and cfg.milestones == (6000, 9000, 11000)
    plus = apply_stage(replace(cfg, vgg_weights="vgg19.pth", init_from="x"), "plus")
    assert plus.lr == 1e-4 and plus.lambda_recon == 0.01 and plus.lambda_distr == 0.0
    assert TrainConfig.from_json(plus.to_json()) == plus  # tuples survive JSON


# --- the CLI -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "cpu_crop", "paper_crop"),
    [("irn_x2", 64, 144), ("irn_x3", 66, 144), ("irn_x4", 64, 144), ("irn_x8", 64, 144)],
)
def test_preset_crops_are_whole_lr_pixels(model: str, cpu_crop: int, paper_crop: int) -> None:
    """Every scale trains from a preset without --crop: x3 rounds the crop up."""
    assert apply_preset(TrainConfig(model=model), "cpu").crop == cpu_crop
    assert apply_preset(TrainConfig(model=model), "paper").crop == paper_crop
    for crop in (cpu_crop, paper_crop):
        CropSampler([np.zeros((200, 200, 3), np.uint8)], crop, scale=int(model[-1]), seed=0)


def test_cli_trains_validates_and_resumes(
    tmp_path: Path, train_dir: Path, val_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    extra = ("--val-dir", str(val_dir), "--val-every", "2", "--max-steps", "2")
    assert main(cli_args(train_dir, run, *extra)) == 0
    for name in ("model.safetensors", "config.json", TRAIN_STATE_FILE):
        assert (run / "last" / name).is_file()
    assert (run / "best" / "model.safetensors").is_file()
    rows = read_log(run)
    assert [r["step"] for r in rows] == ["1", "2"]
    assert rows[0]["val_psnr"] == "" and 10.0 < float(rows[1]["val_psnr"]) < 100.0
    saved = json.loads((run / "train_config.json").read_text())
    assert (saved["model"], saved["crop"], saved["batch"]) == ("irn_x2", 16, 2)

    assert main(["--run-dir", str(run), "--resume", "--max-steps", "1", "--quiet"]) == 0
    assert "resuming irn_x2 at step 2 of 50" in capsys.readouterr().err
    assert [r["step"] for r in read_log(run)] == ["1", "2", "3"]
    state = torch.load(run / "last" / TRAIN_STATE_FILE, weights_only=True)
    assert state["step"] == 3

    # --iterations on resume is saved: a later plain --resume keeps the new length.
    assert main(["--run-dir", str(run), "--resume", "--iterations", "3", "--quiet"]) == 0
    assert "complete at step 3 of 3" in capsys.readouterr().err
    assert json.loads((run / "train_config.json").read_text())["iterations"] == 3
    assert main(["--run-dir", str(run), "--resume", "--quiet"]) == 0
    assert "complete at step 3 of 3" in capsys.readouterr().err
    assert len(read_log(run)) == 3
    assert main(["--run-dir", str(run), "--resume", "--iterations", "4", "--quiet"]) == 0
    assert [r["step"] for r in read_log(run)] == ["1", "2", "3", "4"]


def test_resume_with_another_learning_rate(
    tmp_path: Path, train_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--resume --lr`` scales the rates through the halvings already passed (and the
    ones to come), and the config keeps the new base rate for later resumes."""
    run = tmp_path / "run"
    args = cli_args(train_dir, run, "--lr", "2e-4", "--milestones", "2", "4", "--max-steps", "3")
    assert main(args) == 0
    capsys.readouterr()
    assert [float(r["lr"]) for r in read_log(run)] == [2e-4, 1e-4, 1e-4]
    assert main(["--run-dir", str(run), "--resume", "--lr", "1e-4", "--max-steps", "2"]) == 0
    assert "at step 3 of 50 (lr 5e-05," in capsys.readouterr().err
    assert [float(r["lr"]) for r in read_log(run)][3:] == [2.5e-5, 2.5e-5]
    assert json.loads((run / "train_config.json").read_text())["lr"] == 1e-4
    state = torch.load(run / "last" / TRAIN_STATE_FILE, weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == 2.5e-5
    assert main(["--run-dir", str(run), "--resume", "--max-steps", "1"]) == 0
    assert float(read_log(run)[-1]["lr"]) == 2.5e-5


def test_lambda_guide_flag_weights_the_guidance(tmp_path: Path, train_dir: Path) -> None:
    # Same seed, same first batch and weights: the logged guidance term scales with the
    # weight (irn_x2's default is scale**2 = 4), and the run keeps it.
    default, heavy = tmp_path / "default", tmp_path / "heavy"
    assert main(cli_args(train_dir, default, "--max-steps", "1")) == 0
    assert main(cli_args(train_dir, heavy, "--max-steps", "1", "--lambda-guide", "8")) == 0
    g_default = float(read_log(default)[0]["guide"])
    g_heavy = float(read_log(heavy)[0]["guide"])
    assert g_default > 0 and g_heavy == pytest.approx(2 * g_default, rel=1e-5)
    assert json.loads((heavy / "train_config.json").read_text())["lambda_guide"] == 8.0


def test_best_only_takes_valid_lr_images(
    tmp_path: Path, train_dir: Path, val_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ("--val-dir", str(val_dir), "--val-every", "2", "--max-steps", "2")
    lenient = tmp_path / "lenient"
    assert main(cli_args(train_dir, lenient, *extra, "--min-lr-psnr", "0")) == 0
    assert (lenient / "best" / "model.safetensors").is_file()
    lr_psnr = float(read_log(lenient)[1]["val_lr_psnr"])

    # The same run (same seed), with the floor just above what its LR scored: no best/.
    strict = tmp_path / "strict"
    floor = f"{lr_psnr + 0.01:.4f}"
    assert main(cli_args(train_dir, strict, *extra, "--min-lr-psnr", floor)) == 0
    assert float(read_log(strict)[1]["val_lr_psnr"]) == lr_psnr
    assert not (strict / "best").exists()
    assert "not a candidate for best/" in capsys.readouterr().out
    saved = json.loads((strict / "train_config.json").read_text())
    assert saved["min_lr_psnr"] == float(floor)

    # The floor may change on --resume (a run whose LR settles below it): the next
    # validation that passes the new floor makes best/, and the config keeps it.
    resume = ("--run-dir", str(strict), "--resume", "--max-steps", "2", "--min-lr-psnr", "0")
    assert main(list(resume)) == 0
    assert (strict / "best" / "model.safetensors").is_file()
    assert json.loads((strict / "train_config.json").read_text())["min_lr_psnr"] == 0.0
    capsys.readouterr()
    rc = main(["--run-dir", str(strict), "--resume", "--batch", "3"])
    _one_line_error(capsys, rc, "--conv-dtype and --min-lr-psnr)")


def test_x8_models_have_their_own_lr_floor() -> None:
    """IRN x8's LR stays below the papers' 40 dB for its whole CPU run (model card)."""
    for name, floor in (("irn_x8", X8_LR_VALID_PSNR_DB), ("irn_x4", LR_VALID_PSNR_DB)):
        for preset in ("cpu", "paper"):
            assert apply_preset(TrainConfig(model=name), preset).min_lr_psnr == floor
    assert X8_LR_VALID_PSNR_DB < LR_VALID_PSNR_DB


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_and_resume_matches_an_uninterrupted_run(
    tmp_path: Path, train_dir: Path, signum: int
) -> None:
    run = tmp_path / "run"
    args = cli_args(train_dir, run)
    args[args.index("--iterations") + 1] = "100000"
    proc = subprocess.Popen(
        [sys.executable, "-m", "irn_trt.train.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "log.csv").is_file() and proc.poll() is None:
            assert time.monotonic() < deadline, "irn-train did not start training"
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[0]
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "resume with --resume" in out, out
    stopped = len(read_log(run))
    state = torch.load(run / "last" / TRAIN_STATE_FILE, weights_only=True)
    assert state["step"] == stopped >= 1

    # Resume for two more steps; an uninterrupted run of the same length must match.
    assert main(["--run-dir", str(run), "--resume", "--max-steps", "2", "--quiet"]) == 0
    cfg = TrainConfig.from_json((run / "train_config.json").read_text())
    straight = Trainer(cfg, tmp_path / "straight", progress=False)
    straight.run(max_steps=stopped + 2)
    resumed, _ = load_checkpoint(run / "last")
    assert params_equal(resumed, straight.model)


# --- bad input: one line, exit 2 -----------------------------------------------------


def _one_line_error(capsys: pytest.CaptureFixture[str], rc: int, needle: str) -> None:
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("irn-train: error:") and needle in err, err


def test_device_cuda_refuses_cpu_side_stages(
    tmp_path: Path, train_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Stage jpeg compresses with Pillow inside the loss: refused on any machine, before
    # anything is built or written.
    args = cli_args(train_dir, tmp_path / "run", "--device", "cuda", "--stage", "jpeg")
    args += ["--init-from", str(tmp_path / "unused")]
    _one_line_error(capsys, main(args), "--device cuda trains the stages base, code")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_device_cuda_without_a_gpu(
    tmp_path: Path, train_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(cli_args(train_dir, tmp_path / "run", "--device", "cuda"))
    _one_line_error(capsys, rc, "PyTorch sees no CUDA GPU here")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for torch")
def test_device_cuda_trains_and_resumes_on_the_cpu(
    tmp_path: Path, train_dir: Path, val_dir: Path
) -> None:
    # Steps on the GPU (BF16 dense blocks), validation there, and the run resumed on the
    # CPU: the checkpoint and training state are device-free.
    run = tmp_path / "run"
    extra = ("--val-dir", str(val_dir), "--val-every", "2", "--min-lr-psnr", "0")
    gpu = ("--device", "cuda", "--conv-dtype", "bfloat16", "--max-steps", "2")
    assert main(cli_args(train_dir, run, *extra, *gpu)) == 0
    assert (run / "best" / "model.safetensors").is_file()
    cpu = ("--conv-dtype", "float32", "--max-steps", "1", "--quiet")
    assert main(["--run-dir", str(run), "--resume", *cpu]) == 0
    assert [int(r["step"]) for r in read_log(run)] == [1, 2, 3]


def test_empty_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    rc = main(cli_args(tmp_path / "empty", tmp_path / "run"))
    _one_line_error(capsys, rc, "no training images found")


def test_resume_without_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--run-dir", str(tmp_path / "nothing"), "--resume"])
    _one_line_error(capsys, rc, "nothing to resume")


def test_bad_run_directories(
    tmp_path: Path, train_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(cli_args(train_dir, run, "--max-steps", "1")) == 0
    capsys.readouterr()
    _one_line_error(capsys, main(cli_args(train_dir, run)), "already holds a run")
    rc = main(["--run-dir", str(run), "--resume", "--crop", "32"])
    _one_line_error(capsys, rc, "cannot change crop")
    rc = main(["--run-dir", str(run), "--resume", "--stage", "plus"])
    _one_line_error(capsys, rc, "cannot change stage")
    (run / "last" / TRAIN_STATE_FILE).write_bytes(b"not a torch file")
    rc = main(["--run-dir", str(run), "--resume", "--iterations", "7"])
    _one_line_error(capsys, rc, "unreadable training state")
    assert json.loads((run / "train_config.json").read_text())["iterations"] == 50


def test_crop_not_a_multiple_of_the_scale(
    tmp_path: Path, train_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli_args(train_dir, tmp_path / "run", "--model", "irn_x4")
    args[args.index("--crop") + 1] = "18"
    _one_line_error(capsys, main(args), "not a multiple of the scale")


# --- the CPU preset's speed (printed, not asserted) ------------------------------------


@pytest.mark.slow
def test_cpu_preset_step_time(
    tmp_path: Path, images: list[np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = replace(apply_preset(TrainConfig(), "cpu"), val_every=0, checkpoint_every=0)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.run(images, max_steps=3) == 3
    # The log's per-step rate excludes the end-of-run checkpoint; step 1 is a warm-up.
    seconds = [1.0 / float(r["steps_per_s"]) for r in read_log(tmp_path / "run")[1:]]
    with capsys.disabled():
        print(
            f"\n[cpu preset] {cfg.model}, batch {cfg.batch} of {cfg.crop}px crops: "
            f"{sum(seconds) / len(seconds):.2f} s/step on {torch.get_num_threads()} thread(s)"
        )
