"""The shipped checkpoints score what was recorded for them, and their LR images are valid.

Each `weights/<model>` is re-scored with the evaluation protocol (irn-eval's code, z = 0)
on a fixed subset of Set5, a 96x96 centre crop of each image, and compared with the
numbers recorded below for that exact file (its SHA-256): a damaged weight file, a changed
model or a changed metric fails here. The crops cost about a thirteenth of the full Set5;
the full-Set5 numbers of the model card and the training log stay a command:
`irn-eval ../shared/data/eval/Set5 --checkpoint weights/irn_x4` (equal to the log's
validation row at the checkpoint's step within 0.005 dB; checked when REFERENCE was
recorded). The log's row itself is checked here without recomputation.

REFERENCE was recorded from the real computation on the crops (this file's `__main__`).
When a shipped checkpoint changes (only when it improves: CONTRIBUTING.md), re-record:

    python tests/test_shipped_weights.py     # prints REFERENCE for the files in weights/
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from conftest import SET5, centre_crop
from irn_trt.runtime.image_io import list_images, read_rgb
from irn_trt.train.checkpoint import checkpoint_sha256, default_checkpoint, load_checkpoint
from irn_trt.train.evaluate import evaluate_model, summarize
from irn_trt.train.recipe import TrainConfig, apply_preset
from irn_trt.train.trainer import LR_VALID_PSNR_DB

CROP = 96  # a multiple of every shipped scale, so mod-crop keeps it whole
#: Mean Y-PSNR (dB) / SSIM of the round trip and of the LR vs MATLAB bicubic on the crops.
REFERENCE = {
    "fgrn_x4": {
        "sha256": "a881ea002486c8c0c428a9b0cc102f9e724bde6d4f4d01e66c52e36fa66d65d2",
        "psnr": 34.4369,
        "ssim": 0.91264,
        "lr_psnr": 37.4493,
        "lr_ssim": 0.99104,
    },
    "irn_a_x2": {
        "sha256": "e2e6aa7ad98f44967d33181f214d22e2a3d8641d3f21bf975a7e21e069050b64",
        "psnr": 46.7854,
        "ssim": 0.98977,
        "lr_psnr": 49.952,
        "lr_ssim": 0.99754,
    },
    "irn_a_x4": {
        "sha256": "5ac56e440ba23cb41b3e74373b6126a757385399e7226d037fbb656321b16e37",
        "psnr": 38.623,
        "ssim": 0.94654,
        "lr_psnr": 44.9562,
        "lr_ssim": 0.99736,
    },
    "irn_e_x4": {
        "sha256": "52e662c4a723472ead1b8ddc12ef7c5b3ef015dcbe2615f170803b4d8c8e5064",
        "psnr": 36.7829,
        "ssim": 0.93446,
        "lr_psnr": 44.1764,
        "lr_ssim": 0.99688,
    },
    "irn_m_x4": {
        "sha256": "d8e76cb0108e03d3639d506bbac34c002ea444eb228156507e4b3ba317de7463",
        "psnr": 37.3349,
        "ssim": 0.93488,
        "lr_psnr": 44.0315,
        "lr_ssim": 0.99688,
    },
    "irn_x2": {
        "sha256": "4b418ab224d238b6263099ca377c5d6863fa25b616f9b5e0c757e1a1b961f6a4",
        "psnr": 43.6785,
        "ssim": 0.98266,
        "lr_psnr": 47.3746,
        "lr_ssim": 0.99582,
    },
    "irn_x3": {
        "sha256": "8dc49ef47a9c39e6332e53da64456dd962d983f70f0bacfe836901d9f36d76b8",
        "psnr": 38.8891,
        "ssim": 0.95579,
        "lr_psnr": 43.9731,
        "lr_ssim": 0.99609,
    },
    "irn_x4": {
        "sha256": "1238b75a51e5f47ac32bb5b0c5882b2f6a2e7cda72a47e9cf29af71357e7a4aa",
        "psnr": 37.2718,
        "ssim": 0.935,
        "lr_psnr": 43.7798,
        "lr_ssim": 0.9967,
    },
    "irn_x2_jpeg": {
        "sha256": "3f0fe67fb8fcabf86254c0f5d7faae4d3cca684e842703709524d5bba7f41c48",
        "psnr": 39.0128,
        "ssim": 0.95243,
        "lr_psnr": 45.3456,
        "lr_ssim": 0.98901,
    },
    "irn_x4_jpeg": {
        "sha256": "cfbf45923798bd868bb66d16e68f63ca0033ee42196d43ed57739eddd285e349",
        "psnr": 33.8127,
        "ssim": 0.89614,
        "lr_psnr": 44.4116,
        "lr_ssim": 0.99576,
    },
    "irn_x8": {
        "sha256": "95ef81a9ff65a82d11814bcc42ee2eb117bf0fd5c9f7a1d637bc5060c455c784",
        "psnr": 32.3319,
        "ssim": 0.87724,
        "lr_psnr": 38.7973,
        "lr_ssim": 0.99671,
    },
}
# Other CPUs' kernels differ in the last bits, which can flip a few rounded LR pixels.
PSNR_TOLERANCE_DB = 0.01
SSIM_TOLERANCE = 2e-4


def crop_scores(weights: Path, set5: Path = SET5) -> dict[str, float | str]:
    """The numbers REFERENCE holds, computed now for the checkpoint at ``weights``."""
    model, _ = load_checkpoint(weights)
    crops = [(f.name, centre_crop(read_rgb(f), CROP, CROP)) for f in list_images(set5)]
    mean = summarize(evaluate_model(model, crops))
    return {
        "sha256": checkpoint_sha256(weights),
        "psnr": round(mean.psnr, 4),
        "ssim": round(mean.ssim, 5),
        "lr_psnr": round(mean.lr_psnr, 4),
        "lr_ssim": round(mean.lr_ssim, 5),
    }


def logged_validation(weights: Path, step: int) -> tuple[float, float]:
    """(val Y-PSNR, val LR PSNR) at ``step`` in the training log beside the weights."""
    log = weights.parent / "training" / weights.name / "log.csv"
    with log.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if int(row["step"]) == step and row["val_psnr"]:
                return float(row["val_psnr"]), float(row["val_lr_psnr"])
    raise AssertionError(f"{log} has no validation row at step {step}")


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_shipped_checkpoint_has_a_valid_logged_validation(name: str) -> None:
    weights = default_checkpoint(name)
    model, config = load_checkpoint(weights)
    assert model.config.name == name
    _, logged_lr_psnr = logged_validation(weights, int(config["meta"]["step"]))
    # The run's own floor, never below its model's preset floor: 40 dB for IRN at x2-x4,
    # lower for x8 (recipe.X8_LR_VALID_PSNR_DB) and for FGRN, whose LR is not a bicubic
    # copy by design (recipe.FAMILY_PRESETS).
    run_config = weights.parent / "training" / weights.name / "train_config.json"
    floor = json.loads(run_config.read_text()).get("min_lr_psnr", LR_VALID_PSNR_DB)
    assert logged_lr_psnr >= floor
    assert floor >= apply_preset(TrainConfig(model=name), "cpu").min_lr_psnr
    if model.config.family == "irn" and model.config.scale != 8:
        assert floor >= LR_VALID_PSNR_DB


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_shipped_checkpoint_scores_its_reference(name: str, set5_dir: Path) -> None:
    weights = default_checkpoint(name)
    want = REFERENCE[name]
    got = crop_scores(weights, set5_dir)
    assert got["sha256"] == want["sha256"], (
        f"{weights} changed: re-record REFERENCE (python tests/test_shipped_weights.py) "
        "and the model card"
    )
    for key in ("psnr", "lr_psnr"):
        assert got[key] == pytest.approx(want[key], abs=PSNR_TOLERANCE_DB), key
    for key in ("ssim", "lr_ssim"):
        assert got[key] == pytest.approx(want[key], abs=SSIM_TOLERANCE), key


if __name__ == "__main__":
    # Every shipped checkpoint directory, including one not yet in REFERENCE.
    weights_root = Path(__file__).resolve().parents[1] / "weights"
    for weights_file in sorted(weights_root.glob("*/model.safetensors")):
        model_name = weights_file.parent.name
        print(f'"{model_name}": {crop_scores(default_checkpoint(model_name))},', file=sys.stdout)
