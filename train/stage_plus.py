"""Stage 2, "IRN+": the adversarial and perceptual fine-tuning step (spec section 3).

Generator loss = L_guide (λ s²) + λ_recon·Charbonnier recon + λ_gan·BCE(D(fake), real)
+ λ_percep·Charbonnier(VGG19 conv5_4), no z-distribution loss. The discriminator is
trained every step with BCE on real HR crops vs. reconstructions; during the first
``disc_pretrain`` steps it is trained alone (the generator is not updated), so it
starts from a useful state instead of pushing the pretrained IRN around at random.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .discriminator import VGGStyleDiscriminator
from .models import InvertibleRescaler
from .perceptual import VGG19Features, build_feature_network, charbonnier_sum

__all__ = ["PlusSettings", "PlusStage", "PLUS_LOG_COLUMNS"]

PLUS_LOG_COLUMNS = ("gan", "percep", "d_loss", "d_real", "d_fake")


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    # Vanilla (JS-divergence) GAN loss on raw logits.
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


@dataclass(frozen=True)
class PlusSettings:
    """The stage-2 numbers the step needs (the trainer fills them from TrainConfig)."""

    crop: int
    disc_pretrain: int
    lambda_gan: float
    lambda_percep: float
    disc_lr: float
    disc_betas: tuple[float, float]
    milestones: tuple[int, ...]
    gamma: float
    grad_clip: float
    vgg_weights: str | None
    seed: int


class PlusStage:
    """Owns the discriminator, its optimizer/schedule and the frozen VGG19 loss network."""

    def __init__(self, settings: PlusSettings) -> None:
        self.settings = settings
        # The loss network first: a missing --vgg-weights fails before any work.
        self.vgg: VGG19Features = build_feature_network(settings.vgg_weights, settings.seed)
        self.disc = VGGStyleDiscriminator(settings.crop)
        self.disc.train()
        # Discriminator: Adam(0.9, 0.99), no weight decay, as in the reference recipe.
        self.optimizer = torch.optim.Adam(
            self.disc.parameters(), lr=settings.disc_lr, betas=settings.disc_betas
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(settings.milestones), gamma=settings.gamma
        )

    def train_step(
        self,
        model: InvertibleRescaler,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        step: int,
        hr: torch.Tensor,
        lr_guide: torch.Tensor,
        pixel_losses: Callable[[InvertibleRescaler, torch.Tensor, torch.Tensor], Any],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """One stage-2 step at ``step`` (0-based); returns (generator total, loss terms).

        ``pixel_losses(model, hr, lr_guide)`` returns the stage-1 loss object (with the
        reconstruction in ``.output``) under the run's λ settings.
        """
        s = self.settings
        train_generator = step >= s.disc_pretrain
        terms: dict[str, float] = {}
        if train_generator:
            self.disc.requires_grad_(False)
            losses = pixel_losses(model, hr, lr_guide)
            fake = losses.output
            l_percep = s.lambda_percep * charbonnier_sum(self.vgg(fake), self.vgg(hr).detach())
            l_gan = s.lambda_gan * _bce(self.disc(fake), real=True)
            total = losses.total + l_percep + l_gan
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            optimizer.step()
            terms.update(losses.terms, gan=l_gan.item(), percep=l_percep.item())
            self.disc.requires_grad_(True)
        else:
            with torch.no_grad():
                losses = pixel_losses(model, hr, lr_guide)
            fake, total = losses.output, losses.total.detach()
            terms.update(losses.terms)
        with warnings.catch_warnings():
            # While the generator is frozen its schedule still counts steps (as the
            # reference does); torch warns about stepping before optimizer.step().
            warnings.filterwarnings("ignore", message=r".*lr_scheduler\.step\(\)")
            scheduler.step()

        self.optimizer.zero_grad(set_to_none=True)
        d_real = self.disc(hr)
        d_fake = self.disc(fake.detach())
        l_d = _bce(d_real, real=True) + _bce(d_fake, real=False)
        l_d.backward()
        self.optimizer.step()
        self.scheduler.step()
        terms.update(
            d_loss=l_d.item(),
            d_real=torch.sigmoid(d_real).mean().item(),
            d_fake=torch.sigmoid(d_fake).mean().item(),
        )
        return total, terms

    # --- state (saved inside train_state.pt) ---------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "discriminator": {k: v.detach().clone() for k, v in self.disc.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.disc.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
