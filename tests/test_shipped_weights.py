"""The shipped checkpoints score what their training logs say, and their LR images are valid.

Each `weights/<model>` is re-scored on Set5 with the evaluation protocol (z = 0) and
compared with the validation row of its own training log at the checkpoint's step, so
a damaged weight file, a changed model or a changed metric fails here.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from irn_trt.train.checkpoint import default_checkpoint, load_checkpoint
from irn_trt.train.evaluate import evaluate_model, load_image_set, summarize
from irn_trt.train.trainer import LR_VALID_PSNR_DB

# The trainer validates in NHWC, irn-eval in NCHW: the kernels differ in the last bits.
LOG_TOLERANCE_DB = 0.005


def logged_validation(weights: Path, step: int) -> tuple[float, float]:
    """(val Y-PSNR, val LR PSNR) at ``step`` in the training log beside the weights."""
    log = weights.parent / "training" / weights.name / "log.csv"
    with log.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if int(row["step"]) == step and row["val_psnr"]:
                return float(row["val_psnr"]), float(row["val_lr_psnr"])
    raise AssertionError(f"{log} has no validation row at step {step}")


@pytest.mark.parametrize("name", ["irn_x4", "irn_x2"])
def test_shipped_checkpoint_matches_its_log(name: str, set5_dir: Path) -> None:
    weights = default_checkpoint(name)
    model, config = load_checkpoint(weights)
    assert model.config.name == name
    step = int(config["meta"]["step"])
    logged_psnr, logged_lr_psnr = logged_validation(weights, step)

    mean = summarize(evaluate_model(model, load_image_set(set5_dir)))
    assert mean.psnr == pytest.approx(logged_psnr, abs=LOG_TOLERANCE_DB)
    assert mean.lr_psnr == pytest.approx(logged_lr_psnr, abs=LOG_TOLERANCE_DB)
    assert mean.lr_psnr >= LR_VALID_PSNR_DB
