"""The compression stages of ``irn-train`` (seed 000, sections 3.5 and 4.4).

``--stage jpeg`` fine-tunes a trained IRN so that its ``up`` tolerates a lossy LR: in
the reconstruction pass the 8-bit LR goes through JPEG at a quality drawn per batch
(and optional Gaussian noise) before the inverse; the guidance and latent losses still
see the clean LR. The seed fine-tunes IRN x2 for 100k steps "adding a random noise on
the generated LR images during upscaling"; we read that as robustness to what the CRM
leaves of the compression, and use the compression itself (real JPEG by default, or
the differentiable simulation of :mod:`.jpeg`), with ``--lr-noise`` for the literal
recipe.

``--stage crm`` trains a compression restore module on the LRs of a frozen rescaler
(``--crm-irn``, normally the noise-robust one): each LR crop is compressed with real
JPEG at the CRM's quality (one, or one per image for a quality-conditioned CRM) and
the CRM is trained with L2 to the uncompressed 8-bit LR (``--crm-loss lr``), or through
the frozen ``up`` against the HR (``--crm-loss hr``). The frozen rescaler's LR of
every training image is computed once, on the whole image (as the runtime's ``down``
makes it), and cached as PNG in ``RUN_DIR/lr_cache/<checkpoint sha>/`` (or
``--lr-cache DIR``, which the CRM runs of one rescaler can share); crops come from
there. Validation: the HR's RGB PSNR after ``up`` of the restored LR, and the restored
LR against the uncompressed one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from irn_trt.runtime.atomic import atomic_path
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.image_io import read_rgb
from irn_trt.runtime.resize import modcrop
from PIL import Image
from tqdm import tqdm

from .checkpoint import checkpoint_sha256, load_checkpoint
from .data import CropSampler, PairedCropSampler
from .evaluate import (
    CompressedScore,
    check_compressible,
    evaluate_compressed,
    summarize_compressed,
    to_tensor,
    to_uint8,
)
from .jpeg import real_jpeg, simulate_jpeg
from .models import CompressionRestorer, InvertibleRescaler, Rescaler, quantize
from .modules import set_conv_compute_dtype
from .perceptual import charbonnier_sum
from .recipe import TrainConfig

__all__ = ["CRM_LOG_COLUMNS", "CRMStage", "check_compression_settings", "lr_degrader"]

#: Extra log.csv columns of stage crm: the L2 of the JPEG'd LR itself (what the CRM
#: starts from) and the validation scores without a CRM.
CRM_LOG_COLUMNS = ("jpeg_l2", "val_no_crm_psnr", "val_no_crm_lr_psnr")


def check_compression_settings(cfg: TrainConfig, model: torch.nn.Module) -> None:
    """Refuse, in one line, compression settings that the run's stage or model would ignore."""
    is_crm = isinstance(model, CompressionRestorer)
    if is_crm and cfg.stage != "crm":
        raise IRNError(
            f"{cfg.model} is a compression restore module: train it with --stage crm "
            "--crm-irn CHECKPOINT --lr-jpeg Q"
        )
    if cfg.stage not in ("jpeg", "crm") and cfg.lr_jpeg:
        raise IRNError("--lr-jpeg applies to --stage jpeg and --stage crm only")
    if cfg.stage != "jpeg" and (cfg.lr_noise or cfg.jpeg_mode != "real"):
        raise IRNError("--lr-noise and --jpeg-mode apply to --stage jpeg only")
    if cfg.stage != "crm" and (cfg.crm_irn or cfg.lr_cache or cfg.crm_loss != "lr"):
        raise IRNError("--crm-irn, --lr-cache and --crm-loss apply to --stage crm only")
    if cfg.lr_noise < 0:
        raise IRNError(f"--lr-noise must be >= 0, got {cfg.lr_noise}")
    if cfg.stage == "jpeg":
        if not isinstance(model, InvertibleRescaler):
            raise IRNError(f"--stage jpeg fine-tunes an IRN; {cfg.model} is not one")
        check_compressible(model)
        if not cfg.init_from:
            raise IRNError("--stage jpeg fine-tunes a trained IRN: give --init-from CHECKPOINT")
        if not cfg.lr_jpeg and not cfg.lr_noise:
            raise IRNError("--stage jpeg needs --lr-jpeg qualities or --lr-noise")
    if cfg.stage == "crm":
        if not is_crm:
            raise IRNError(f"--stage crm trains a CRM (crm_*); {cfg.model} is not one")
        if not cfg.crm_irn:
            raise IRNError(
                "--stage crm needs --crm-irn CHECKPOINT: the rescaler whose LRs it restores"
            )
        if not cfg.lr_jpeg:
            raise IRNError("--stage crm needs --lr-jpeg: the JPEG quality the CRM restores")
        if len(cfg.lr_jpeg) > 1 and not model.config.conditioned:  # type: ignore[union-attr]
            raise IRNError(
                f"{cfg.model} restores one JPEG quality: give one --lr-jpeg value, or train a "
                f"quality-conditioned CRM ({cfg.model}_cond) for {len(cfg.lr_jpeg)} qualities"
            )


def lr_degrader(
    cfg: TrainConfig, generator: torch.Generator
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Stage jpeg: what the reconstruction pass does to the (quantised) LR batch.

    A quality drawn per batch from ``cfg.lr_jpeg`` (from ``generator``, whose state is
    saved, so a resumed run draws the same), the codec of ``cfg.jpeg_mode``, then
    Gaussian noise of ``cfg.lr_noise`` 8-bit levels.
    """

    def degrade(lr: torch.Tensor) -> torch.Tensor:
        out = lr
        if cfg.lr_jpeg:
            q = cfg.lr_jpeg[int(torch.randint(len(cfg.lr_jpeg), (1,), generator=generator))]
            out = real_jpeg(out, q) if cfg.jpeg_mode == "real" else simulate_jpeg(out, q)
        if cfg.lr_noise > 0:
            noise = torch.randn(out.shape, generator=generator) * (cfg.lr_noise / 255.0)
            out = out + noise.to(out.dtype)
        return out

    return degrade


def _image_key(img: np.ndarray) -> str:
    h = hashlib.sha256(repr(img.shape).encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()[:20]


class CRMStage:
    """The frozen rescaler, its cached LRs and the CRM's loss and validation."""

    def __init__(self, cfg: TrainConfig, progress: bool = True) -> None:
        assert cfg.crm_irn is not None
        rescaler, _ = load_checkpoint(cfg.crm_irn)
        check_compressible(rescaler)
        rescaler.eval()
        for p in rescaler.parameters():
            p.requires_grad_(False)
        self.rescaler: Rescaler = rescaler
        self.scale = rescaler.scale
        self.qualities = tuple(cfg.lr_jpeg)
        self.sha = checkpoint_sha256(cfg.crm_irn)
        self.progress = progress
        self.cache_root = cfg.lr_cache
        self.loss_space = cfg.crm_loss
        # The frozen rescaler's conv arithmetic inside the steps of ``--crm-loss hr`` (the
        # trainer sets its --conv-dtype); the LR cache and validation stay FP32.
        self.rescaler_train_dtype: torch.dtype | None = None
        if cfg.crop % self.scale or cfg.crop // self.scale < 8:
            raise IRNError(
                f"--crop {cfg.crop} (HR px) must be a multiple of {cfg.crm_irn}'s scale "
                f"{self.scale} giving LR crops of at least 8 px"
            )
        self.lr_crop = cfg.crop // self.scale
        # The frozen rescaler's LR and JPEG of each validation image never change.
        self._val_cache: dict[tuple[str, int | None], tuple[np.ndarray, int]] = {}
        self.baseline: CompressedScore | None = None

    @torch.no_grad()
    def lr_images(self, images: Sequence[np.ndarray], run_dir: Path) -> list[np.ndarray]:
        """The frozen rescaler's 8-bit LR of each HR training image (computed once, cached)."""
        folder = Path(self.cache_root or run_dir / "lr_cache") / self.sha[:16]
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        bar = tqdm(images, desc="LR of the training images", unit="img",
                   disable=not self.progress)  # fmt: skip
        for img in bar:
            path = folder / f"{_image_key(img)}.png"
            if path.is_file():
                out.append(read_rgb(path))
                continue
            hr = modcrop(img, self.scale)
            # NHWC: 1.55x faster whole-image forwards on the CPU (17 against 27 s per HR
            # megapixel, IRN x4, 1 thread); the 8-bit LR differs on 2e-5 of the bytes.
            hr_t = to_tensor(hr).contiguous(memory_format=torch.channels_last)
            y, _ = self.rescaler(hr_t)
            lr = to_uint8(quantize(y))
            with atomic_path(path) as tmp:
                Image.fromarray(lr).save(tmp, format="PNG")
            out.append(lr)
        return out

    def losses(
        self,
        crm: CompressionRestorer,
        first: torch.Tensor,
        second: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The CRM's loss on a batch from :meth:`sampler`: ``--crm-loss lr``, L2 (sum over
        C, H, W, mean over the batch) between the restored and clean LR (``first``);
        ``hr``, Charbonnier (as IRN's reconstruction) between the HR crop (``first``) and
        the frozen up of the restored LR (``second`` is the clean LR), rounded to 8 bits
        with a straight-through gradient, z = 0."""
        lr = first if self.loss_space == "lr" else second
        b = lr.shape[0]
        if len(self.qualities) == 1:
            qs = [self.qualities[0]] * b
        else:
            idx = torch.randint(len(self.qualities), (b,), generator=generator)
            qs = [self.qualities[int(i)] for i in idx]
        jpeg = real_jpeg(lr, qs).detach()
        quality = torch.tensor(qs, dtype=lr.dtype) if crm.config.conditioned else None
        restored = crm(jpeg, quality)
        if self.loss_space == "lr":
            loss = torch.sum((restored - lr) ** 2) / b
        else:
            # The training arithmetic applies to this pass only: the LR cache and validation
            # run the frozen rescaler in FP32.
            set_conv_compute_dtype(self.rescaler, self.rescaler_train_dtype)
            try:
                rec = self.rescaler.inverse(quantize(restored, straight_through=True))
            finally:
                set_conv_compute_dtype(self.rescaler, None)
            loss = charbonnier_sum(first, rec)
        base = torch.sum((jpeg - lr) ** 2).item() / b
        return loss, {"recon": loss.item(), "guide": 0.0, "distr": 0.0, "jpeg_l2": base}

    def sampler(self, images: Sequence[np.ndarray], run_dir: Path, seed: int) -> CropSampler:
        """Crops for :meth:`losses`: of the frozen rescaler's LRs (``lr``), or aligned HR and
        LR crops (``hr``)."""
        lrs = self.lr_images(images, run_dir)
        if self.loss_space == "lr":
            return CropSampler(lrs, self.lr_crop, 1, seed)
        hrs = [modcrop(img, self.scale) for img in images]
        return PairedCropSampler(hrs, lrs, self.lr_crop * self.scale, self.scale, seed)

    def validate(
        self, crm: CompressionRestorer, images: Sequence[tuple[str, np.ndarray]]
    ) -> tuple[float, float, dict[str, float]]:
        """Mean over images and qualities: the HR's RGB PSNR after ``up`` of the restored LR,
        and the restored LR's RGB PSNR against the uncompressed one; plus the same without
        a CRM (computed once)."""
        if self.baseline is None:
            self.baseline = summarize_compressed(
                evaluate_compressed(self.rescaler, images, self.qualities, cache=self._val_cache)
            )
        mean = summarize_compressed(
            evaluate_compressed(self.rescaler, images, self.qualities, crm, self._val_cache)
        )
        crm.train()
        extra = {
            "val_no_crm_psnr": round(self.baseline.rgb_psnr, 4),
            "val_no_crm_lr_psnr": round(self.baseline.lr_psnr, 4),
        }
        return mean.rgb_psnr, mean.lr_psnr, extra
