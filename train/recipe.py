"""Training recipes: the run configuration, presets and stages (torch-free).

Kept apart from the trainer so that ``irn-train --help`` lists presets and
stages without importing torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from irn_trt.runtime.errors import IRNError

from .configs import get_config

__all__ = [
    "CONV_DTYPES",
    "FAMILY_PRESETS",
    "LR_VALID_PSNR_DB",
    "X8_LR_VALID_PSNR_DB",
    "PRESETS",
    "RANDOM_VGG",
    "STAGES",
    "TRAIN_CONFIG_FILE",
    "TRAIN_STATE_FILE",
    "TrainConfig",
    "apply_preset",
    "apply_stage",
    "check_quality",
    "parse_qualities",
]

# ``--conv-dtype`` choices (TrainConfig.conv_dtype).
CONV_DTYPES = ("float32", "bfloat16")
# ``--vgg-weights random``: a random feature network, for tests of the mechanics only.
RANDOM_VGG = "random"
TRAIN_STATE_FILE = "train_state.pt"
TRAIN_CONFIG_FILE = "train_config.json"
# The papers' validity threshold for an LR image: Y-PSNR vs MATLAB bicubic, in dB.
LR_VALID_PSNR_DB = 40.0
# best/'s floor for IRN x8 (preset default). Its LR carries 64 HR values per pixel, x4's 16,
# and trades against the reconstruction as the run improves: irn_x8's CPU run measured 33.3 to
# 39.0 dB vs bicubic over steps 500-7,000 (34.9 at 7,000, when Set5 passed 29 dB), where x2 /
# x3 / x4 end at 42-46 dB; at 40 its best/ stayed empty. The papers give no x8 figure (issue
# 13 asks to state it); 33 dB keeps the whole measured range and still rejects a broken LR.
X8_LR_VALID_PSNR_DB = 33.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run; stored in the run directory."""

    model: str = "irn_x4"
    data: tuple[str, ...] = ()
    crop: int = 64
    batch: int = 8
    iterations: int = 12000
    lr: float = 2e-4
    milestones: tuple[int, ...] = (6000, 9000, 11000)
    gamma: float = 0.5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-5
    grad_clip: float = 10.0
    train_z: Literal["gaussian", "zero"] = "zero"
    lambda_recon: float = 1.0
    lambda_guide: float | None = None  # None: scale**2, as in the papers
    lambda_distr: float = 1.0
    # IRN-M (seed 004, eq. 2): weight of the L2 error between z and its decoded side code.
    lambda_code: float = 1.0
    # FGRN (seed 002, eq. 9): gamma, the weight of the flow cells' log-determinant.
    lambda_logdet: float = 1e-3
    # FGRN: weight of the squared excess of the encoder's output beyond [0, 1] (not in the
    # seed). The quantiser's straight-through gradient ignores its clamp, so with nothing
    # else anchoring the representation it drifted out of range and the run diverged by
    # step ~60 (FP32 and BF16 alike); 0 restores the seed's losses exactly.
    lambda_range: float = 10.0
    seed: int = 0
    checkpoint_every: int = 250
    val_every: int = 500
    val_dir: str | None = None
    # best/ keeps the best validation Y-PSNR among checkpoints whose LR vs bicubic is at least this.
    min_lr_psnr: float = LR_VALID_PSNR_DB
    init_from: str | None = None
    # Stage 2 ("IRN+"); the defaults keep configs written before stage 2 existed loadable.
    stage: Literal["base", "plus", "code", "jpeg", "crm"] = "base"
    disc_pretrain: int = 5000
    vgg_weights: str | None = None
    lambda_gan: float = 1.0
    lambda_percep: float = 0.01
    disc_lr: float = 1e-4
    disc_betas: tuple[float, float] = (0.9, 0.99)
    # Compression (seed 000, section 3.5). Stage "jpeg": the LR of the reconstruction pass
    # goes through JPEG at a quality drawn per batch from ``lr_jpeg`` (``jpeg_mode``: real
    # = Pillow with an identity gradient, sim = the differentiable simulation), then gets
    # N(0, lr_noise^2) noise (8-bit levels). Stage "crm": a CRM learns to restore the LRs
    # of the frozen rescaler ``crm_irn`` after real JPEG at ``lr_jpeg`` (one quality, or
    # several for a quality-conditioned CRM, drawn per image).
    lr_jpeg: tuple[int, ...] = ()
    jpeg_mode: Literal["real", "sim"] = "real"
    lr_noise: float = 0.0
    crm_irn: str | None = None
    # Stage "crm": where the frozen rescaler's LRs are cached (None: RUN_DIR/lr_cache).
    lr_cache: str | None = None
    # Stage "crm": what the CRM's loss compares. "lr": L2 between the restored and the
    # uncompressed LR (the seed's). "hr": Charbonnier between the HR and the frozen
    # rescaler's up of the restored LR (rounded to 8 bits, as deployed), so the CRM
    # serves the up it feeds (a JPEG-robust up learnt JPEG'd LRs, not clean ones).
    crm_loss: Literal["lr", "hr"] = "lr"
    # Arithmetic of the ordinary conv stacks (IRN's dense blocks, FGRN's encoder/decoder)
    # in training; "bfloat16" needs a CPU with native BF16 (AVX-512 BF16 or AMX). The
    # invertible parts, validation and every export stay in FP32.
    conv_dtype: Literal["float32", "bfloat16"] = "float32"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise IRNError(f"train_config.json has unknown keys: {', '.join(sorted(unknown))}")
        for key in ("data", "milestones", "betas", "disc_betas", "lr_jpeg"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)


PRESETS: dict[str, dict[str, Any]] = {
    # The published recipe (DIV2K-scale budget; impractical on a CPU).
    "paper": dict(
        crop=144,
        batch=16,
        iterations=500_000,
        milestones=(100_000, 200_000, 300_000, 400_000),
        train_z="gaussian",
        checkpoint_every=5000,
        val_every=5000,
    ),
    # Fits a 2-core machine: small crops, z = 0 in the reconstruction pass (converges faster).
    "cpu": dict(
        crop=64,
        batch=8,
        iterations=12_000,
        milestones=(6_000, 9_000, 11_000),
        train_z="zero",
        checkpoint_every=250,
        val_every=500,
    ),
}


# What a preset changes for a model family (or task, see _recipe_kind) on top of PRESETS
# (the papers' recipes differ).
FAMILY_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "fgrn": {
        # Seed 002, section 4.1: batch 36 of 192x192 HR, Adam lr 3e-4 halved every 200k
        # steps (the total is not stated: IRN's 500k). Its LR is not a bicubic copy by
        # design (table 2 rates it with NIQE / PIQE): best/ asks 30 dB vs bicubic, which
        # still rejects a visibly wrong LR, instead of IRN's 40.
        "paper": dict(
            crop=192,
            batch=36,
            lr=3e-4,
            iterations=500_000,
            milestones=(200_000, 400_000),
            min_lr_psnr=30.0,
        ),
        # The CPU preset's steps and schedule (curves comparable with IRN's step for step)
        # and 128 px crops: FGRN x4 costs about a fifth of IRN x4's multiply-adds per
        # pixel, and 32x32 LR crops are less than its 75 px receptive field (16x16 would
        # be mostly zero padding). lr 1e-4, not the seed's 3e-4: with the reconstruction
        # through F's inverse of the 8-bit LR (trainer.fgrn_losses), 3e-4 diverged within
        # 150 steps where 1e-4 trained steadily (fgrn_x4 from step 3,974, batch 8).
        "cpu": dict(crop=128, lr=1e-4, min_lr_psnr=30.0),
    },
    # IRN_color (seed 000, 3.4) runs its 8 blocks at full resolution: a 64 px step costs
    # 3.2x IRN x4's (measured, batch 8, 1 thread). 48 px crops (still 3x the receptive
    # field of one dense block) and 8,000 steps fit the CPU preset into about the time
    # of IRN x4's 12,000; the schedule's halvings keep their relative places.
    "decolorize": {
        "cpu": dict(crop=48, iterations=8_000, milestones=(4_000, 6_000, 7_300)),
    },
}


#: Stage jpeg's guidance weight, as a multiple of the papers' (scale**2). Measured on
#: irn_x4, 500 steps (Set5; JPEG 50 / 75 / 90): at 1x the compressed reconstruction made the
#: LR sharpened with colour fringes (29-30 dB against bicubic, from 42), 4x 35.8 dB, 16x
#: 40.9 dB; the rate-distortion gain over irn_x4 + JPEG at equal bits per pixel was about
#: the same for all three (+0.6-0.7 dB Y at 0.2 bpp).
JPEG_GUIDE_FACTOR = 16.0

# What ``--stage`` changes on top of a preset (spec section 3, "IRN+"): λ_recon 0.01,
# lr 1e-4, no distribution loss. Explicit flags still override these.
STAGES: dict[str, dict[str, Any]] = {
    "base": dict(stage="base"),
    "plus": dict(stage="plus", lr=1e-4, lambda_recon=0.01, lambda_distr=0.0),
    # IRN-M's auto-encoder alone on a trained model's z (seed 004 pre-trains it with MSE).
    "code": dict(stage="code", lr=1e-3, iterations=2000, milestones=(1000, 1500)),
    # Noise-robust fine-tuning of a trained IRN (seed 000, 4.4: 100k steps with noise on
    # the LR in the reconstruction pass; here JPEG at the CRMs' qualities, lr halved).
    "jpeg": dict(
        stage="jpeg", lr=1e-4, iterations=4000, milestones=(2000, 3000), lr_jpeg=(50, 75, 90)
    ),
    # A CRM on the frozen rescaler's LRs (crop = HR crop: LR crops of crop / scale).
    # best/ follows the HR's RGB PSNR; the LR-vs-bicubic floor does not apply (trainer).
    "crm": dict(
        stage="crm",
        lr=2e-4,
        crop=128,
        batch=16,
        iterations=20_000,
        milestones=(10_000, 15_000, 18_000),
    ),
}


def check_quality(quality: int) -> int:
    """``quality`` as an int if it is a JPEG quality (1..100), else a one-line IRNError."""
    if isinstance(quality, bool) or not hasattr(quality, "__index__"):
        raise IRNError(f"JPEG quality must be an integer in 1..100, got {quality!r}")
    if not 1 <= int(quality) <= 100:
        raise IRNError(f"JPEG quality must be in 1..100, got {quality}")
    return int(quality)


def parse_qualities(text: str) -> tuple[int, ...]:
    """``"50,75,90"`` -> (50, 75, 90): JPEG qualities in 1..100, no repeats (one-line errors)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise IRNError(f"JPEG qualities {text!r}: expected numbers such as 50,75,90")
    out = []
    for p in parts:
        try:
            q = int(p)
        except ValueError:
            raise IRNError(f"JPEG quality {p!r} is not an integer in 1..100") from None
        out.append(check_quality(q))
    if len(set(out)) != len(out):
        raise IRNError(f"JPEG qualities {text!r} repeat a value")
    return tuple(out)


def _recipe_kind(model_config: Any) -> str:
    """FAMILY_PRESETS' key: the model's family, or its task where that changes the cost
    (IRN_color is an IRN that decolorizes)."""
    if model_config is None:
        return ""
    if model_config.task == "decolorize":
        return "decolorize"
    return model_config.family


def apply_preset(cfg: TrainConfig, preset: str) -> TrainConfig:
    """``cfg`` with ``preset`` applied, and ``cfg.model``'s family's changes to it on top."""
    if preset not in PRESETS:
        raise IRNError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    try:
        model_config = get_config(cfg.model)
    except ValueError:
        model_config = None  # an unknown model is refused where it is built, in one line
    values = {
        **PRESETS[preset],
        **FAMILY_PRESETS.get(_recipe_kind(model_config), {}).get(preset, {}),
    }
    # The presets' crops suit x2/x4/x8; for x3 round up to whole LR pixels (64 -> 66), as
    # the data loader takes only crops that are a multiple of the scale.
    scale = int(getattr(model_config, "scale", 1) or 1)
    values["crop"] = -(-values["crop"] // scale) * scale
    if scale == 8 and "min_lr_psnr" not in values:
        values["min_lr_psnr"] = X8_LR_VALID_PSNR_DB
    return replace(cfg, **values)


def apply_stage(cfg: TrainConfig, stage: str) -> TrainConfig:
    """``cfg`` with the settings of ``stage`` (see STAGES) on top."""
    if stage not in STAGES:
        raise IRNError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    cfg = replace(cfg, **STAGES[stage])
    if stage == "jpeg":
        guide = JPEG_GUIDE_FACTOR * get_config(cfg.model).default_lambda_guide
        cfg = replace(cfg, lambda_guide=guide)
    return cfg
