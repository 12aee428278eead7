"""``irn-train``: train an IRN on image folders (stage 1, stage 2 'IRN+', the compression
stages: a JPEG-robust IRN and its compression restore module)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from irn_trt.runtime.errors import IRNError, cli_entry

# Torch-free imports only at module level: --help and argument errors stay fast.
from .configs import list_models
from .recipe import (
    CONV_DTYPES,
    FAMILY_PRESETS,
    LR_VALID_PSNR_DB,
    PRESETS,
    RANDOM_VGG,
    STAGES,
    TRAIN_CONFIG_FILE,
    X8_LR_VALID_PSNR_DB,
    TrainConfig,
    apply_preset,
    apply_stage,
    parse_qualities,
)

__all__ = ["main", "build_parser"]

DEFAULT_DATA = "../shared/data/train"
DEFAULT_VAL = "../shared/data/eval/Set5"

# Flags that map one to one onto TrainConfig fields.
_FIELDS = (
    "model", "crop", "batch", "iterations", "lr", "milestones", "train_z", "seed",
    "checkpoint_every", "val_every", "val_dir", "init_from", "grad_clip",
    "stage", "disc_pretrain", "vgg_weights", "min_lr_psnr", "lambda_code", "lambda_logdet",
    "lambda_range", "lambda_guide",
    "lr_jpeg", "jpeg_mode", "lr_noise", "crm_irn", "lr_cache", "crm_loss", "conv_dtype",
)  # fmt: skip
# What a resume may change: the length of the run, its learning rate (scaled through the
# schedule already passed), the arithmetic of its conv stacks and best/'s LR floor.
_RESUME_CHANGEABLE = ("iterations", "lr", "conv_dtype", "min_lr_psnr")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="irn-train",
        description="Train an Invertible Rescaling Network. Checkpoints go to RUN_DIR/last "
        "(every --checkpoint-every steps, on Ctrl-C/SIGTERM and at the end) and RUN_DIR/best.",
        epilog="examples:\n"
        "  irn-train --preset cpu --model irn_x4 --run-dir runs/irn_x4\n"
        "  irn-train --run-dir runs/irn_x4 --resume          # continue where it stopped\n"
        "  irn-train --run-dir runs/irn_x4 --resume --conv-dtype bfloat16   # AMX CPUs: faster\n"
        "  irn-train --preset cpu --model irn_x2 --iterations 2000 --data my_photos/\n"
        "  irn-train --stage plus --init-from runs/irn_x4/best --vgg-weights vgg19.pth \\\n"
        "            --run-dir runs/irn_x4_plus             # IRN+ (GAN + VGG19 loss)\n"
        "  irn-train --model irn_a_x4 --init-from weights/irn_x4 --run-dir runs/irn_a_x4\n"
        "  irn-train --model irn_m_x4 --stage code --init-from weights/irn_x4 \\\n"
        "            --run-dir runs/irn_m_x4_code           # IRN-M: pre-train its auto-encoder\n"
        "  irn-train --model irn_m_x4 --init-from runs/irn_m_x4_code/last --run-dir runs/irn_m_x4\n"
        "  irn-train --model fgrn_x4 --run-dir runs/fgrn_x4 --threads 1   # FGRN (seed 002)\n"
        "  irn-train --preset paper --iterations 20000 --milestones 10000 15000 \\\n"
        "            --device cuda --conv-dtype bfloat16 --run-dir runs/irn_x4_gpu   # on a GPU\n"
        "  irn-train --model irn_x4_jpeg --stage jpeg --init-from weights/irn_x4 \\\n"
        "            --lr-jpeg 50,75,90 --run-dir runs/irn_x4_jpeg   # JPEG-robust IRN\n"
        "  irn-train --model crm_small --stage crm --crm-irn runs/irn_x4_jpeg/best \\\n"
        "            --lr-jpeg 75 --run-dir runs/crm_x4_q75           # its CRM for quality 75",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="cpu",
        help="recipe (default: cpu; "
        "fgrn_* models get lr 1e-4 and 128 px crops, irn_color 48 px crops and "
        "8,000 steps; see FAMILY_PRESETS)",
    )
    p.add_argument("--model", choices=list_models(), help="registry entry (default: irn_x4)")
    p.add_argument(
        "--data", action="append", help=f"image folder, repeatable (default: {DEFAULT_DATA})"
    )
    p.add_argument("--run-dir", required=True, help="where checkpoints and logs go")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--crop", type=int, help="HR crop size")
    p.add_argument("--batch", type=int, help="batch size")
    p.add_argument(
        "--iterations",
        type=int,
        help="total steps of the run (with --resume: extends or shortens it, and is saved)",
    )
    p.add_argument("--max-steps", type=int, help="stop after this many steps in this invocation")
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument("--milestones", type=int, nargs="*", help="steps at which lr is halved")
    p.add_argument(
        "--train-z", choices=["gaussian", "zero"], help="latent in the reconstruction pass"
    )
    p.add_argument("--grad-clip", type=float, help="gradient norm clip")
    p.add_argument("--seed", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--val-every", type=int, help="validate every N steps (0: never)")
    p.add_argument("--val-dir", help=f"validation HR folder (default: {DEFAULT_VAL} if present)")
    p.add_argument(
        "--min-lr-psnr",
        type=float,
        help="best/ only takes checkpoints whose LR is at least this Y-PSNR vs bicubic on the "
        f"validation set (default: {LR_VALID_PSNR_DB:g} dB, the papers' validity threshold; "
        f"{FAMILY_PRESETS['fgrn']['cpu']['min_lr_psnr']:g} dB for fgrn_*, whose LR is not "
        f"meant to copy bicubic; {X8_LR_VALID_PSNR_DB:g} dB for x8 models). May change on "
        "--resume (saved; the best/ already saved stays)",
    )
    p.add_argument(
        "--init-from",
        help="start from this checkpoint directory (for irn_a_* / irn_m_*: the plain IRN of "
        "the same scale, e.g. weights/irn_x4, whose trained blocks they keep)",
    )
    p.add_argument(
        "--lambda-code",
        type=float,
        help="IRN-M: weight of the L2 error between z and its decoded side code (default: 1)",
    )
    p.add_argument(
        "--lambda-guide",
        type=float,
        help="weight of the LR guidance loss (L2 to the bicubic LR; default: scale**2, the "
        "papers'). Stage jpeg: the compressed reconstruction pulls the LR away from bicubic "
        "(sharpened, colour fringes), a larger weight holds it",
    )
    p.add_argument(
        "--lambda-logdet",
        type=float,
        help="FGRN: gamma, the weight of the flow module's log-determinant in its guidance "
        "loss (default: 1e-3, seed 002)",
    )
    p.add_argument(
        "--lambda-range",
        type=float,
        help="FGRN: weight of the squared excess of the encoder's output beyond [0, 1] "
        "(default: 10; not in seed 002: without it the straight-through quantiser let the "
        "representation drift out of range and training diverged; 0 = the seed's losses)",
    )
    p.add_argument(
        "--stage",
        choices=sorted(STAGES),
        help="base: stage 1 (default); plus: IRN+ fine-tuning with a GAN and VGG19 loss, "
        "needs --init-from and --vgg-weights, sets lr 1e-4, recon weight 0.01, no z loss "
        "(RUN_DIR/best still follows Y-PSNR: take RUN_DIR/last for IRN+); code: IRN-M's "
        "auto-encoder alone on a trained model's z (needs --init-from; lr 1e-3, 2000 steps); "
        "jpeg: fine-tune a trained IRN (--init-from) with the LR of the reconstruction pass "
        "JPEG-compressed (--lr-jpeg, default 50,75,90; lr 1e-4, 4000 steps); crm: train a "
        "compression restore module (--model crm_*) on the LRs of the frozen --crm-irn, "
        "compressed at --lr-jpeg (lr 2e-4, batch 16, crop 128, 20000 steps; best/ follows the "
        "HR's RGB PSNR)",
    )
    p.add_argument(
        "--lr-jpeg",
        metavar="Q[,Q...]",
        help="stage jpeg: JPEG qualities, one drawn per batch (default: 50,75,90); stage crm: "
        "the quality the CRM restores (several for a quality-conditioned crm_*_cond, one "
        "drawn per image)",
    )
    p.add_argument(
        "--jpeg-mode",
        choices=["real", "sim"],
        help="stage jpeg: real = Pillow's codec with an identity gradient (default); sim = the "
        "differentiable JPEG simulation (straight-through rounding)",
    )
    p.add_argument(
        "--lr-noise",
        type=float,
        help="stage jpeg: std of Gaussian noise (8-bit levels) added to the LR of the "
        "reconstruction pass after JPEG (default: 0; the seed's recipe is noise alone)",
    )
    p.add_argument(
        "--crm-irn",
        help="stage crm: the frozen rescaler checkpoint (normally the JPEG-robust one) whose "
        "LRs the CRM learns to restore",
    )
    p.add_argument(
        "--lr-cache",
        help="stage crm: folder for the frozen rescaler's LR of every training image, computed "
        "once (default: RUN_DIR/lr_cache; give the CRM runs of one rescaler the same folder to "
        "compute it once for all; entries are keyed by checkpoint and image)",
    )
    p.add_argument(
        "--crm-loss",
        choices=["lr", "hr"],
        help="stage crm: lr = L2 between the restored and the uncompressed LR (default, the "
        "seed's); hr = Charbonnier between the HR and the frozen --crm-irn's up of the "
        "restored LR (8-bit, z = 0, as deployed): for a JPEG-robust up, which learnt JPEG'd "
        "LRs rather than clean ones",
    )
    p.add_argument(
        "--disc-pretrain",
        type=int,
        help="stage plus: steps that train the discriminator alone first (default: 5000)",
    )
    p.add_argument(
        "--vgg-weights",
        help="stage plus: local torchvision VGG19 state dict (.pth or .safetensors); "
        f"'{RANDOM_VGG}' = random network, for tests only, never for real training",
    )
    p.add_argument(
        "--conv-dtype",
        choices=CONV_DTYPES,
        help="arithmetic of the ordinary conv stacks (dense blocks, FGRN's encoder/decoder) in "
        "training: float32 (default) or bfloat16, about 2.3x faster per step on a CPU with AMX "
        "(IRN x3, 1 thread) and refused on a CPU without native BF16; the invertible parts, "
        "validation and exports stay FP32 (stage code: the frozen IRN's z comes from BF16 "
        "dense blocks too). May change on --resume (saved)",
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where the steps run (default: cpu); cuda trains stages base and code on the "
        "first CUDA GPU (BF16 conv stacks with --conv-dtype bfloat16); the run directory is "
        "the same either way, and a run may resume on the other device (not bit for bit)",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@cli_entry("irn-train")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from .trainer import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    given = {k: getattr(args, k) for k in _FIELDS if getattr(args, k) is not None}
    if "lr_jpeg" in given:
        given["lr_jpeg"] = parse_qualities(given["lr_jpeg"])
    if "milestones" in given:
        given["milestones"] = tuple(given["milestones"])
    run_dir = Path(args.run_dir)
    config_path = run_dir / TRAIN_CONFIG_FILE
    if args.resume:
        if not config_path.is_file():
            raise IRNError(f"nothing to resume: {config_path} does not exist")
        cfg = TrainConfig.from_json(config_path.read_text())
        changed = [
            k for k, v in given.items() if k not in _RESUME_CHANGEABLE and getattr(cfg, k) != v
        ]
        if changed:
            raise IRNError(
                f"cannot change {', '.join(changed)} when resuming "
                "(only --iterations, --lr, --conv-dtype and --min-lr-psnr)"
            )
        cfg = replace(cfg, **{k: given[k] for k in _RESUME_CHANGEABLE if k in given})
    else:
        if config_path.exists():
            raise IRNError(f"{run_dir} already holds a run; use --resume or another --run-dir")
        # The model first: a preset may differ per model family (FAMILY_PRESETS).
        cfg = apply_preset(TrainConfig(model=given.get("model", TrainConfig.model)), args.preset)
        if args.stage:
            cfg = apply_stage(cfg, args.stage)
        data = tuple(args.data) if args.data else (DEFAULT_DATA,)
        if "val_dir" not in given and Path(DEFAULT_VAL).is_dir():
            given["val_dir"] = DEFAULT_VAL
        cfg = replace(cfg, data=data, **given)
    if cfg.stage == "plus" and cfg.vgg_weights == RANDOM_VGG:
        print(
            f"irn-train: warning: --vgg-weights {RANDOM_VGG}: random feature network, the "
            "perceptual loss is meaningless (for testing the mechanics only)",
            file=sys.stderr,
        )
    trainer = Trainer(cfg, run_dir, progress=not args.quiet, device=args.device)
    if args.resume:
        trainer.resume()
        if trainer.step >= cfg.iterations:
            print(
                f"{cfg.model} run is complete at step {trainer.step} of {cfg.iterations}; "
                "pass --iterations N to extend it",
                file=sys.stderr,
            )
            return 0
        print(
            f"resuming {cfg.model} at step {trainer.step} of {cfg.iterations} "
            f"(lr {trainer.optimizer.param_groups[0]['lr']:.3g}, "
            f"conv arithmetic: {cfg.conv_dtype})",
            file=sys.stderr,
        )
    trainer.run(max_steps=args.max_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
