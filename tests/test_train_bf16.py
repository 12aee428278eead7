"""``--conv-dtype bfloat16``: the ordinary conv stacks train in BF16, the invertible parts,
validation and checkpoints stay FP32, and a CPU without native BF16 is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from irn_trt.train import trainer as trainer_module
from irn_trt.train.checkpoint import load_checkpoint
from irn_trt.train.cli import main
from irn_trt.train.evaluate import evaluate_model, load_image_set, summarize
from irn_trt.train.models import build_model
from irn_trt.train.modules import ConvCompute, set_conv_compute_dtype
from train_support import read_log, tiny_val_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trained_looking(name: str) -> torch.nn.Module:
    """A fresh model is the identity (zero last convs): give every weight some size."""
    torch.manual_seed(0)
    model = build_model(name)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.dim() == 4:
                p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def test_bf16_conv_stacks_keep_the_irn_exactly_invertible() -> None:
    model = _trained_looking("irn_x2")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        y32, z32 = model(x)
        set_conv_compute_dtype(model, torch.bfloat16)
        assert all(
            m.compute_dtype == torch.bfloat16 for m in model.modules() if isinstance(m, ConvCompute)
        )
        y16, z16 = model(x)
        back = model.inverse(y16, z16)
    # The convs did run in BF16 (the outputs moved), the tensors between them are FP32,
    # and forward then inverse still cancel to far below one 8-bit level (0.1 / 255);
    # not to FP32 rounding: the inverse's conv inputs differ from the forward's in the
    # last FP32 bits and may round to the next BF16 value.
    assert y16.dtype == z16.dtype == torch.float32
    assert (y16 - y32).abs().max() > 1e-4
    assert (back - x).abs().max() < 0.1 / 255
    # Switching back restores the FP32 function bit for bit.
    set_conv_compute_dtype(model, None)
    with torch.no_grad():
        assert torch.equal(model(x)[0], y32)


def test_bf16_fgrn_encoder_and_decoder_return_fp32() -> None:
    model = _trained_looking("fgrn_x4")
    set_conv_compute_dtype(model, torch.bfloat16)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        rep = model.encoder(x)
        out = model.decoder(rep)
    assert rep.dtype == out.dtype == torch.float32
    assert out.shape == x.shape


def _args(train_dir: Path, run: Path, *extra: str) -> list[str]:
    return [
        "--model", "irn_x2", "--crop", "16", "--batch", "2", "--iterations", "50",
        "--data", str(train_dir), "--run-dir", str(run), "--checkpoint-every", "0",
        "--threads", "1", "--quiet", *extra,
    ]  # fmt: skip


def test_resume_switches_to_bf16_and_validates_in_fp32(
    tmp_path: Path, train_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    val = tiny_val_folder(tmp_path / "val")
    run = tmp_path / "run"
    assert (
        main(_args(train_dir, run, "--val-dir", str(val), "--val-every", "2", "--max-steps", "2"))
        == 0
    )
    capsys.readouterr()
    resume = ["--run-dir", str(run), "--resume", "--conv-dtype", "bfloat16", "--max-steps", "2"]
    rc = main([*resume, "--quiet"])
    err = capsys.readouterr().err
    if not trainer_module.native_bf16():
        # This CPU (say an AMD EPYC without AVX-512 BF16) refuses, and the run is untouched.
        assert rc == 2 and err.count("\n") == 1 and "needs a CPU with native BF16" in err
        assert json.loads((run / "train_config.json").read_text())["conv_dtype"] == "float32"
        return
    assert rc == 0 and "conv arithmetic: bfloat16)" in err
    assert json.loads((run / "train_config.json").read_text())["conv_dtype"] == "bfloat16"
    rows = read_log(run)
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    # Step 4's score is the FP32 model's: the checkpoint saved after it scores the same.
    model, _ = load_checkpoint(run / "last")
    with torch.no_grad():
        fp32 = summarize(evaluate_model(model, load_image_set(val)))
    assert float(rows[3]["val_psnr"]) == pytest.approx(fp32.psnr, abs=1e-4)
    assert float(rows[3]["val_lr_psnr"]) == pytest.approx(fp32.lr_psnr, abs=1e-4)
    # A plain resume keeps the saved arithmetic.
    assert main(["--run-dir", str(run), "--resume", "--max-steps", "1", "--quiet"]) == 0
    assert "conv arithmetic: bfloat16)" in capsys.readouterr().err


def test_a_cpu_without_native_bf16_is_refused_in_one_line(
    tmp_path: Path,
    train_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The hardware probe is the one thing replaced: what a CPU without BF16 reports.
    monkeypatch.setattr(trainer_module, "native_bf16", lambda: False)
    run = tmp_path / "run"
    rc = main(_args(train_dir, run, "--conv-dtype", "bfloat16", "--val-every", "0"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "Traceback" not in err
    assert err.startswith("irn-train: error:") and "--conv-dtype float32" in err
    assert not (run / "last").exists()
