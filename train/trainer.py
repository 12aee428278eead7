"""Stage-1 IRN training (the papers' recipe), resumable bit for bit.

A run directory holds ``train_config.json``, ``log.csv``, ``last/`` (the newest
checkpoint plus ``train_state.pt``: optimizer, scheduler, RNG, step) and
``best/`` (the checkpoint with the best validation Y-PSNR). The compression stages
(``jpeg``, ``crm``) are in :mod:`.stage_compress`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from irn_trt.runtime.atomic import atomic_path, write_text_atomic
from irn_trt.runtime.errors import IRNError
from tqdm import tqdm

from .checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from .configs import architecture_differences, get_config, list_models
from .data import CropSampler, load_folders
from .evaluate import (
    evaluate_compressed,
    evaluate_model,
    load_image_set,
    summarize,
    summarize_compressed,
)
from .models import (
    CompressionRestorer,
    FlowGuidedRescaler,
    InvertibleRescaler,
    Rescaler,
    build_model,
    init_from_model,
    luma,
    quantize,
)
from .modules import set_conv_compute_dtype
from .perceptual import charbonnier_sum
from .recipe import (
    CONV_DTYPES,
    LR_VALID_PSNR_DB,
    PRESETS,
    STAGES,
    TRAIN_CONFIG_FILE,
    TRAIN_STATE_FILE,
    TrainConfig,
    apply_preset,
    apply_stage,
)
from .stage_compress import CRM_LOG_COLUMNS, CRMStage, check_compression_settings, lr_degrader
from .stage_plus import PLUS_LOG_COLUMNS, PlusSettings, PlusStage

# The recipe (TrainConfig, presets, stages, file names) is re-exported from .recipe.
__all__ = [
    "LR_VALID_PSNR_DB",
    "PRESETS",
    "STAGES",
    "TRAIN_CONFIG_FILE",
    "TRAIN_MEMORY_FORMAT",
    "TRAIN_STATE_FILE",
    "TrainConfig",
    "Trainer",
    "apply_preset",
    "apply_stage",
    "code_losses",
    "fgrn_losses",
    "irn_losses",
    "model_losses",
    "training_device",
]

# NHWC: oneDNN's CPU convolutions (forward and backward) run about 1.2x faster in it for
# IRN's small dense-block convs (measured: IRN x4, batch 8 of 64x64 crops, 1 thread).
TRAIN_MEMORY_FORMAT = torch.channels_last
LOG_FILE = "log.csv"
X86_MACHINES = ("x86_64", "amd64", "i386", "i686")


@dataclass
class LossTerms:
    total: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)
    output: torch.Tensor | None = None  # the reconstruction (stage 2 feeds it to D and VGG)


def irn_losses(
    model: InvertibleRescaler,
    hr: torch.Tensor,
    lr_guide: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator | None = None,
    *,
    lr_degrade: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> LossTerms:
    """Spec section 3: L2 guidance, z energy, Charbonnier reconstruction through STE quantizer.

    ``lr_degrade`` (stage jpeg): applied to the quantised LR of the reconstruction pass
    only (JPEG, noise; see :func:`~.stage_compress.lr_degrader`).

    The guidance sees the colour channels of the LR (IRN-A's alpha code has none);
    IRN_color's grey image is guided towards the luma of the HR (``lr_guide`` is
    the HR itself at scale 1).
    IRN-M (seed 004, eq. 2) reconstructs from the z its side code decodes to and
    adds the code's L2 error to z, weighted by ``cfg.lambda_code``.
    """
    b = hr.shape[0]
    config = model.config
    lam_guide = cfg.lambda_guide if cfg.lambda_guide is not None else config.default_lambda_guide
    y, z = model(hr)
    if config.task == "decolorize":
        # Grayscale guidance (seed 000, section 3.4): the image's own luma.
        target = luma(lr_guide)
        l_guide = lam_guide * torch.sum((y - target) ** 2) / b
    else:
        l_guide = lam_guide * torch.sum((y[:, : model.in_channels] - lr_guide) ** 2) / b
    l_distr = cfg.lambda_distr * torch.sum(z**2) / b
    lr_q = quantize(y, straight_through=True)
    terms: dict[str, float] = {}
    z_rec = model.reconstruction_latent(z, straight_through=True)
    if z_rec is not None:
        l_code = cfg.lambda_code * torch.sum((z_rec - z) ** 2) / b
        terms["code"] = l_code.item()
    elif cfg.train_z == "gaussian" and config.task == "rescale" and not config.alpha_channel:
        # IRN_color (seed 000, 3.4) and IRN-A (seed 004) reconstruct from z = 0 in training.
        z_rec = torch.randn(z.shape, generator=generator).to(z.device)
    else:
        z_rec = torch.zeros_like(z)
    if lr_degrade is not None:
        lr_q = lr_degrade(lr_q)
    rec = model.inverse(lr_q, z_rec)
    l_recon = cfg.lambda_recon * charbonnier_sum(hr, rec)
    total = l_guide + l_distr + l_recon
    if "code" in terms:
        total = total + l_code
    terms = {"recon": l_recon.item(), "guide": l_guide.item(), "distr": l_distr.item(), **terms}
    return LossTerms(total, terms, rec)


def fgrn_losses(
    model: FlowGuidedRescaler,
    hr: torch.Tensor,
    lr_guide: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator | None = None,
) -> LossTerms:
    """Seed 002, section 3.4's objectives, with the reconstruction through the deployed path.

    ``recon``: L1 between the HR and G_u(Q(F^-1(Q(F(Q(G_d(HR))))))), the function that
    the exported down and up graphs compute, through straight-through rounding; it trains
    G_d, F and G_u. The seed's eq. 7 is G_u(Q(G_d(HR))), bypassing F on the premise that
    F is lossless; it is not once the LR is 8-bit: trained that way F contracted
    (log|det J| about -1.7 per value at step 3,974), its inverse amplified the LR's
    rounding and the deployed reconstruction fell 6 dB below the bypass (Set5 27.0
    against 33.2 dB). Through the channel, F learns to keep what the decoder needs above
    one 8-bit level of the LR, as IRN's network does (Set5 33.0 dB after 400 steps from
    there). Measured alternatives: F's weights trained by the guidance alone (the seed's
    split) reached 28.1 dB in the same 400 steps, since the straight-through gradient
    through F^-1(Q(F(.))) is close to the identity and tells the encoder nothing about
    the rounding. The LR's clamp keeps its true gradient (see the code).
    ``guide`` (eq. 9): L1 between F(x_rep) and the bicubic LR; ``distr`` is eq. 9's
    -gamma * sum of the cells' log|det J| (gamma = ``cfg.lambda_logdet``, 1e-3).
    ``range`` (not in the seed): ``cfg.lambda_range`` x the squared excess of G_d(HR)
    beyond [0, 1]; the straight-through gradient ignores the quantiser's clamp, and
    without it the representation drifted out of range until the run diverged.
    Sums over C, H, W averaged over the batch, as for IRN. ``generator`` is unused
    (no latent to sample); it keeps :func:`irn_losses`' signature.
    """
    b = hr.shape[0]
    lam_guide = (
        cfg.lambda_guide if cfg.lambda_guide is not None else model.config.default_lambda_guide
    )
    raw = model.encode(hr)
    rep = quantize(raw, straight_through=True)
    # The LR's clamp keeps its gradient (zero outside [0, 1]): with the straight-through
    # gradient passing it, the reconstruction pushed F to widen its range (less rounding
    # after F^-1), clipped LR values pushed on with no effect, and the run diverged
    # from about step 4,900 (LR vs bicubic 17.8 dB and Set5 19.6 dB at 6,000).
    lr_8bit = quantize(model.fgm(rep).clamp(0.0, 1.0), straight_through=True)
    rec = model.decoder(quantize(model.fgm.inverse(lr_8bit), straight_through=True))
    l_recon = cfg.lambda_recon * torch.sum(torch.abs(hr - rec)) / b
    # Zero while the representation is in range: pulls back what the clamp cuts off.
    l_range = cfg.lambda_range * torch.sum((raw - raw.clamp(0.0, 1.0)) ** 2) / b
    # A second pass of F on the detached representation: the guidance trains F alone,
    # never the encoder (the seed's point: no bicubic LR guidance on G_d).
    lr, logdet = model.fgm.forward_with_logdet(rep.detach())
    l_guide = lam_guide * torch.sum(torch.abs(lr - lr_guide)) / b
    l_logdet = -cfg.lambda_logdet * torch.sum(logdet) / b
    total = l_recon + l_guide + l_logdet + l_range
    terms = {
        "recon": l_recon.item(),
        "guide": l_guide.item(),
        "distr": l_logdet.item(),
        "range": l_range.item(),
    }
    return LossTerms(total, terms, rec)


#: The stage-1 losses of each model class (what :func:`model_losses` runs).
_LOSSES: dict[type, Callable[..., LossTerms]] = {
    InvertibleRescaler: irn_losses,
    FlowGuidedRescaler: fgrn_losses,
}


def model_losses(
    model: Rescaler,
    hr: torch.Tensor,
    lr_guide: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator | None = None,
    *,
    lr_degrade: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> LossTerms:
    """The stage-1 losses of ``model``'s family (:func:`irn_losses` or :func:`fgrn_losses`);
    ``lr_degrade`` is IRN's (stage jpeg)."""
    if lr_degrade is not None:
        return irn_losses(model, hr, lr_guide, cfg, generator, lr_degrade=lr_degrade)  # type: ignore[arg-type]
    return _LOSSES[type(model)](model, hr, lr_guide, cfg, generator)


def code_losses(model: InvertibleRescaler, hr: torch.Tensor, cfg: TrainConfig) -> LossTerms:
    """Stage ``code``: IRN-M's auto-encoder alone, L2 between z and its decoded code.

    The rescaler is frozen (it runs without gradients), so this pre-trains the
    auto-encoder on the latents of the model it will join (seed 004 pre-trains
    it alone with MSE before the joint training).
    """
    b = hr.shape[0]
    with torch.no_grad():
        _, z = model(hr)
    z_rec = model.reconstruction_latent(z, straight_through=True)
    assert z_rec is not None
    l_code = cfg.lambda_code * torch.sum((z_rec - z) ** 2) / b
    zero = 0.0
    return LossTerms(l_code, {"recon": zero, "guide": zero, "distr": zero, "code": l_code.item()})


def native_bf16() -> bool:
    """Whether this CPU has BF16 arithmetic instructions (x86: AVX-512 BF16 or AMX).

    oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) also accepts
    plain AVX-512, where BF16 convolutions are emulated (slower than FP32); it serves
    only where torch has no x86 flag reader.
    """
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if amx is None or avx512_bf16 is None or platform.machine().lower() not in X86_MACHINES:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return bool(amx() or avx512_bf16())


def conv_compute_dtype(name: str, device: torch.device | None = None) -> torch.dtype | None:
    """The dtype of ``TrainConfig.conv_dtype`` for :func:`set_conv_compute_dtype` (None for
    FP32); BF16 only where the CPU computes it natively (any CUDA GPU that PyTorch runs
    does), in one line otherwise."""
    if name == "float32":
        return None
    if name != "bfloat16":
        raise IRNError(f"unknown conv dtype {name!r}; known: {', '.join(CONV_DTYPES)}")
    if (device is None or device.type == "cpu") and not native_bf16():
        # Emulated BF16 would be slower than FP32: refuse rather than crawl.
        raise IRNError(
            "--conv-dtype bfloat16 needs a CPU with native BF16 (AVX-512 BF16 or AMX), which "
            "this one lacks; run (or resume) with --conv-dtype float32"
        )
    return torch.bfloat16


def _matching_entry(model: Rescaler) -> str:
    """A message's suffix naming the registry entry whose architecture ``model`` has."""
    for entry in list_models():
        if not architecture_differences(model.config, get_config(entry)):
            return f"; it is the registry's {entry}"
    return ""


def _initial_model(name: str, init_from: str) -> InvertibleRescaler:
    """The model a run starts from: ``init_from`` itself, or ``name`` built from it.

    A checkpoint of another registry entry is accepted where
    :func:`~irn_trt.train.models.init_from_model` can map it (IRN-A / IRN-M from
    the plain IRN of the same scale).
    """
    source, _ = load_checkpoint(init_from)
    if source.config.name == name:
        # The same name, but a registry entry may have been redefined since (FGRN's roll
        # and skip have no parameters, so the weights alone would not tell).
        differences = architecture_differences(source.config, get_config(name))
        if differences:
            raise IRNError(
                f"--init-from {init_from}: its {name} is another architecture than the "
                f"registry's (differing: {', '.join(differences)}){_matching_entry(source)}"
            )
        return source
    try:
        return init_from_model(build_model(name), source)
    except ValueError as exc:
        raise IRNError(f"--init-from {init_from}: {exc}") from None


#: The stages ``--device cuda`` trains (the others keep CPU-side parts: Pillow's JPEG in
#: the loss, the CRM's LR cache, the discriminator stage's VGG loading).
CUDA_STAGES = ("base", "code")


def training_device(name: str, stage: str) -> torch.device:
    """``irn-train --device``: ``cpu`` or ``cuda`` (stages :data:`CUDA_STAGES`), in one line
    where it cannot be had."""
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda":
        raise IRNError(f"unknown device {name!r}; known: cpu, cuda")
    if stage not in CUDA_STAGES:
        raise IRNError(
            f"--device cuda trains the stages {', '.join(CUDA_STAGES)}; stage {stage} runs on "
            "the CPU (--device cpu)"
        )
    if not torch.cuda.is_available():
        raise IRNError(
            "--device cuda: PyTorch sees no CUDA GPU here (a CPU build of torch, no driver or "
            "no GPU); train with --device cpu"
        )
    # The invertible parts stay FP32 as on the CPU (cuDNN would run their convs, the Haar
    # transform among them, in TF32: 10-bit mantissas); fixed crop shapes: autotune once.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda")


class Trainer:
    """Owns the model, optimizer, schedule, sampler and run directory of one run."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: str | os.PathLike[str],
        progress: bool = True,
        log: Callable[[str], None] = print,
        device: str = "cpu",
    ) -> None:
        self.cfg = cfg
        self.device = training_device(device, cfg.stage)
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.log = log
        torch.manual_seed(cfg.seed)
        if cfg.init_from:
            self.model = _initial_model(cfg.model, cfg.init_from)
        else:
            self.model = build_model(cfg.model)
        if cfg.stage == "plus" and not isinstance(self.model, InvertibleRescaler):
            raise IRNError(f"--stage plus fine-tunes an IRN (IRN+); {cfg.model} has no such stage")
        check_compression_settings(cfg, self.model)
        self.crm: CRMStage | None = CRMStage(cfg, progress) if cfg.stage == "crm" else None
        self.conv_dtype = conv_compute_dtype(cfg.conv_dtype, self.device)
        set_conv_compute_dtype(self.model, self.conv_dtype)
        if self.crm is not None:
            self.crm.rescaler_train_dtype = self.conv_dtype
        self.model.to(device=self.device, memory_format=TRAIN_MEMORY_FORMAT)
        self.model.train()
        trained = self.model.parameters()
        if cfg.stage == "code":
            if self.model.latent_code is None:
                raise IRNError(f"--stage code trains a latent auto-encoder; {cfg.model} has none")
            if not cfg.init_from:
                raise IRNError("--stage code pre-trains on a trained model's z: give --init-from")
            trained = self.model.latent_code.parameters()
        self.optimizer = torch.optim.Adam(
            trained, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma
        )
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.lr_degrade = lr_degrader(cfg, self.generator) if cfg.stage == "jpeg" else None
        self.step = 0
        self.best_psnr = -math.inf
        self.sampler: CropSampler | None = None
        self._stop_requested = False
        self.plus: PlusStage | None = None
        if cfg.stage == "plus":
            if not cfg.init_from:
                raise IRNError(
                    "--stage plus fine-tunes a stage-1 model: give --init-from CHECKPOINT"
                )
            self.plus = PlusStage(
                PlusSettings(
                    crop=cfg.crop,
                    disc_pretrain=cfg.disc_pretrain,
                    lambda_gan=cfg.lambda_gan,
                    lambda_percep=cfg.lambda_percep,
                    disc_lr=cfg.disc_lr,
                    disc_betas=cfg.disc_betas,
                    milestones=cfg.milestones,
                    gamma=cfg.gamma,
                    grad_clip=cfg.grad_clip,
                    vgg_weights=cfg.vgg_weights,
                    seed=cfg.seed,
                )
            )
        elif cfg.stage not in ("base", "code", "jpeg", "crm"):
            raise IRNError(f"unknown stage {cfg.stage!r}; known: {', '.join(STAGES)}")

    # --- state ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        assert self.sampler is not None
        state = {
            "step": self.step,
            "best_psnr": self.best_psnr,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "generator": self.generator.get_state(),
            "sampler": self.sampler.state(),
        }
        if self.plus is not None:
            state["plus"] = self.plus.state_dict()
        return state

    def save(self, which: str = "last") -> Path:
        """Write ``RUN_DIR/<which>``: ``last`` with the training state, ``best`` without."""
        directory = self.run_dir / which
        meta: dict[str, Any] = {"step": self.step, "train_config": json.loads(self.cfg.to_json())}
        if which != "last":
            meta["val_psnr"] = self.best_psnr
            save_checkpoint(self.model, directory, meta=meta)
            return directory
        # last/ is three files: they are written into last.new/, which then replaces last/
        # by two renames, so a kill at any moment leaves one complete set (see resume()).
        staging, previous = self._staging_dirs()
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        torch.save(self.state_dict(), staging / TRAIN_STATE_FILE)
        save_checkpoint(self.model, staging, meta=meta)
        shutil.rmtree(previous, ignore_errors=True)
        if directory.exists():
            os.replace(directory, previous)
        os.replace(staging, directory)
        shutil.rmtree(previous, ignore_errors=True)
        return directory

    def _staging_dirs(self) -> tuple[Path, Path]:
        """(``last.new``, ``last.old``): the next last/ while written, the one it replaces."""
        return self.run_dir / "last.new", self.run_dir / "last.old"

    def _saved_state(self) -> tuple[Path, dict[str, Any]]:
        """The newest complete last/ set and its training state: last/, else (a kill between
        the renames of :meth:`save`) last.new/, else last.old/; one line if none is whole."""
        last = self.run_dir / "last"
        problems: list[str] = []
        for directory in (last, *self._staging_dirs()):
            state_file = directory / TRAIN_STATE_FILE
            if not state_file.is_file():
                continue
            try:
                state = torch.load(state_file, map_location="cpu", weights_only=True)
                weights_step = read_checkpoint_config(directory).get("meta", {}).get("step")
            except IRNError as exc:
                problems.append(str(exc))
                continue
            except Exception as exc:
                problems.append(f"{state_file}: unreadable training state ({type(exc).__name__})")
                continue
            # Runs saved before last.new/ existed wrote the three files in place: a kill
            # between them paired the weights of one step with the state of another.
            if weights_step is not None and int(weights_step) != int(state["step"]):
                problems.append(
                    f"{directory}: the weights are of step {weights_step} but the training "
                    f"state of step {state['step']} (stopped while saving)"
                )
                continue
            if directory != last:
                self.log(
                    f"{last} is missing or incomplete (the run was stopped while saving): "
                    f"resuming from {directory.name}/ (step {state['step']})"
                )
            return directory, state
        if not problems:
            raise IRNError(f"nothing to resume: {last / TRAIN_STATE_FILE} does not exist")
        raise IRNError(f"cannot resume: {'; '.join(problems)}")

    def resume(self) -> None:
        directory, state = self._saved_state()
        model, _ = load_checkpoint(directory)
        # Equal parameter names do not make equal functions (FGRN's roll and skip have
        # no parameters): a registry entry redefined since the run started is refused.
        differences = architecture_differences(model.config, self.model.config)
        if differences:
            raise IRNError(
                f"cannot resume: {directory} holds another architecture than the registry's "
                f"{self.cfg.model} (differing: {', '.join(differences)}){_matching_entry(model)}"
            )
        self.model.load_state_dict(model.state_dict())
        self.model.train()
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._apply_base_lr()
        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        self.best_psnr = max(float(state["best_psnr"]), self._best_saved_psnr())
        self._pending_sampler_state = state["sampler"]
        if self.plus is not None:
            if "plus" not in state:
                raise IRNError(
                    f"{directory / TRAIN_STATE_FILE}: no stage-2 (discriminator) state to resume"
                )
            self.plus.load_state_dict(state["plus"])
        # Only once the state has loaded, so a failed resume leaves the run as it was.
        self.save_config()
        self._drop_log_rows_after(self.step)

    def _apply_base_lr(self) -> None:
        """A resume with another ``cfg.lr`` (``irn-train --resume --lr``) scales the saved
        learning rates by the ratio, so the schedule's halvings already passed still hold."""
        saved = self.scheduler.base_lrs
        if all(lr == self.cfg.lr for lr in saved):
            return
        for group, base in zip(self.optimizer.param_groups, saved, strict=True):
            group["lr"] *= self.cfg.lr / base
        self.scheduler.base_lrs = [self.cfg.lr] * len(saved)

    def _best_saved_psnr(self) -> float:
        """The score best/ was saved with: a kill between a save of best/ and the next of
        last/ leaves last/'s state with a lower best score than best/ holds."""
        try:
            meta = read_checkpoint_config(self.run_dir / "best").get("meta", {})
            return float(meta.get("val_psnr", -math.inf))
        except (IRNError, TypeError, ValueError):
            return -math.inf

    def _drop_log_rows_after(self, step: int) -> None:
        """Forget the log rows of steps after ``step``: a run killed without saving (OOM,
        power loss, SIGKILL) logged steps that the resume computes again, and the learning
        curve must have one row per step."""
        path = self.run_dir / LOG_FILE
        if not path.is_file():
            return
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if len(rows) < 2 or not rows[0] or rows[0][0] != "step":
            return  # not a log this trainer wrote: leave it alone

        def after(row: list[str]) -> bool:
            cell = row[0].strip() if row else ""
            return cell.isascii() and cell.isdecimal() and int(cell) > step

        kept = [row for row in rows if not after(row)]
        dropped = len(rows) - len(kept)
        if not dropped:
            return
        self.log(
            f"log.csv: dropped {dropped} row{'s' if dropped > 1 else ''} after step {step} "
            "(not saved)"
        )
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            csv.writer(fh).writerows(kept)

    def save_config(self) -> None:
        """Make the run's ``train_config.json`` say what it trains with (a resume may change
        ``iterations``), so that a later plain resume continues the same run."""
        path = self.run_dir / TRAIN_CONFIG_FILE
        if not path.is_file() or TrainConfig.from_json(path.read_text()) != self.cfg:
            write_text_atomic(path, self.cfg.to_json())

    # --- loop ----------------------------------------------------------------------
    def _plus_step(self, hr: torch.Tensor, lr_guide: torch.Tensor) -> LossTerms:
        """Stage 2: generator (after the discriminator's pre-training) and discriminator."""
        assert self.plus is not None
        cfg = self.cfg

        def pixel_losses(m: InvertibleRescaler, h: torch.Tensor, g: torch.Tensor) -> LossTerms:
            return model_losses(m, h, g, cfg, self.generator)

        total, terms = self.plus.train_step(
            self.model, self.optimizer, self.scheduler, self.step, hr, lr_guide, pixel_losses
        )
        return LossTerms(total, terms)

    def _request_stop(self, signum: int, _frame: Any) -> None:
        self._stop_requested = True
        self.log(f"signal {signum}: saving at the end of this step")

    def _append_log(self, row: dict[str, Any]) -> None:
        path = self.run_dir / LOG_FILE
        header = [
            "step",
            "lr",
            "loss",
            "recon",
            "guide",
            "distr",
            "steps_per_s",
            "val_psnr",
            "val_lr_psnr",
        ]
        if self.plus is not None:
            header += PLUS_LOG_COLUMNS
        if self.model.latent_code is not None:
            header.append("code")
        if isinstance(self.model, FlowGuidedRescaler):
            header.append("range")
        if self.cfg.stage == "jpeg":
            header.append("val_clean_psnr")
        if self.crm is not None:
            header += CRM_LOG_COLUMNS
        new = not path.exists()
        with path.open("a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)

    def validate(
        self, images: Sequence[tuple[str, np.ndarray]]
    ) -> tuple[float, float, dict[str, float]]:
        """(score for best/, LR score, extra log columns). Stage jpeg scores the mean Y-PSNR
        over its JPEG qualities (no CRM) and logs the clean LR's; stage crm, see
        :meth:`CRMStage.validate`."""
        # Scored as deployed: FP32 throughout, whatever the training arithmetic.
        set_conv_compute_dtype(self.model, None)
        try:
            return self._validate_fp32(images)
        finally:
            set_conv_compute_dtype(self.model, self.conv_dtype)

    def _validate_fp32(
        self, images: Sequence[tuple[str, np.ndarray]]
    ) -> tuple[float, float, dict[str, float]]:
        if self.crm is not None:
            assert isinstance(self.model, CompressionRestorer)
            return self.crm.validate(self.model, images)
        mean = summarize(evaluate_model(self.model, images))
        extra: dict[str, float] = {}
        psnr = mean.psnr
        if self.cfg.stage == "jpeg" and self.cfg.lr_jpeg:
            psnr = summarize_compressed(
                evaluate_compressed(self.model, images, self.cfg.lr_jpeg)
            ).psnr
            extra["val_clean_psnr"] = round(mean.psnr, 4)
        self.model.train()
        return psnr, mean.lr_psnr, extra

    def run(self, images: Sequence[np.ndarray] | None = None, max_steps: int | None = None) -> int:
        """Train until ``cfg.iterations`` (or ``max_steps`` more steps, or a signal)."""
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.save_config()
        if images is None:
            images = load_folders(cfg.data, cfg.crop, progress=self.progress)
        if self.crm is not None:
            # The CRM trains on the frozen rescaler's LRs: crops of crop / scale LR px.
            self.sampler = self.crm.sampler(images, self.run_dir, cfg.seed)
        else:
            self.sampler = CropSampler(images, cfg.crop, self.model.scale, cfg.seed)
        pending = getattr(self, "_pending_sampler_state", None)
        if pending is not None:
            self.sampler.set_state(pending)
        val_images = load_image_set(cfg.val_dir) if cfg.val_dir else None

        end = cfg.iterations if max_steps is None else min(cfg.iterations, self.step + max_steps)
        old_handlers = {
            s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)
        }
        bar = tqdm(
            total=end, initial=self.step, desc=cfg.model, unit="step", disable=not self.progress
        )
        t_last = time.perf_counter()
        try:
            while self.step < end and not self._stop_requested:
                hr, lr_guide = self.sampler.batch(cfg.batch)
                hr = hr.to(self.device).contiguous(memory_format=TRAIN_MEMORY_FORMAT)
                lr_guide = lr_guide.to(self.device)
                if self.plus is not None:
                    losses = self._plus_step(hr, lr_guide)
                else:
                    if cfg.stage == "code":
                        losses = code_losses(self.model, hr, cfg)
                    elif self.crm is not None:
                        total, terms = self.crm.losses(
                            self.model, hr, lr_guide, self.generator,  # type: ignore[arg-type]
                        )  # fmt: skip
                        losses = LossTerms(total, terms)
                    else:
                        losses = model_losses(
                            self.model, hr, lr_guide, cfg, self.generator,
                            lr_degrade=self.lr_degrade,
                        )  # fmt: skip
                    self.optimizer.zero_grad(set_to_none=True)
                    losses.total.backward()
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    self.optimizer.step()
                    self.scheduler.step()
                self.step += 1
                now = time.perf_counter()
                rate = 1.0 / max(now - t_last, 1e-9)
                t_last = now
                bar.update(1)
                bar.set_postfix(
                    loss=f"{losses.total.item():.1f}",
                    rec=f"{losses.terms['recon']:.1f}",
                    gd=f"{losses.terms['guide']:.2f}",
                    z=f"{losses.terms['distr']:.1f}",
                    **{
                        k: f"{losses.terms[k]:.3g}"
                        for k in (*PLUS_LOG_COLUMNS, "code")
                        if k in losses.terms
                    },
                    refresh=False,
                )
                row: dict[str, Any] = {
                    "step": self.step,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "loss": losses.total.item(),
                    "steps_per_s": round(rate, 4),
                    **losses.terms,
                }
                if val_images and cfg.val_every and self.step % cfg.val_every == 0:
                    psnr, lr_psnr, extra = self.validate(val_images)
                    row["val_psnr"], row["val_lr_psnr"] = round(psnr, 4), round(lr_psnr, 4)
                    row.update(extra)
                    # A CRM's LR score is against the uncompressed LR: no bicubic floor.
                    valid = self.crm is not None or lr_psnr >= cfg.min_lr_psnr
                    note = (
                        "" if valid else f" (below {cfg.min_lr_psnr:g}: not a candidate for best/)"
                    )
                    if self.model.config.task == "decolorize":
                        what = f"val RGB PSNR {psnr:.2f} dB, grey vs luma {lr_psnr:.2f} dB"
                    elif self.crm is not None:
                        base, base_lr = extra["val_no_crm_psnr"], extra["val_no_crm_lr_psnr"]
                        what = (
                            f"val HR RGB PSNR {psnr:.2f} dB (no CRM {base:.2f}), "
                            f"LR vs uncompressed {lr_psnr:.2f} dB (no CRM {base_lr:.2f})"
                        )
                    elif "val_clean_psnr" in extra:
                        clean = extra["val_clean_psnr"]
                        what = (
                            f"val Y-PSNR {psnr:.2f} dB with JPEG {cfg.lr_jpeg} "
                            f"({clean:.2f} lossless), LR vs bicubic {lr_psnr:.2f} dB"
                        )
                    else:
                        what = f"val Y-PSNR {psnr:.2f} dB, LR vs bicubic {lr_psnr:.2f} dB"
                    bar.write(f"step {self.step}: {what}{note}")
                    if valid and psnr > self.best_psnr:
                        self.best_psnr = psnr
                        self.save("best")
                    t_last = time.perf_counter()
                self._append_log(row)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save("last")
        finally:
            bar.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
        self.save("last")
        if self._stop_requested:
            self.log(f"stopped at step {self.step}; resume with --resume")
        return self.step
