"""IRN models; the registry of named configurations lives in :mod:`.configs` (re-exported)."""

from __future__ import annotations

import torch
from torch import nn

from .configs import IRNConfig, Stage, get_config, list_models, model_for_scale, register_model
from .modules import CouplingBlock, HaarDownsampling, LearnedDownsampling3

__all__ = [
    "Stage",
    "IRNConfig",
    "InvertibleRescaler",
    "register_model",
    "list_models",
    "get_config",
    "build_model",
    "quantize",
    "randomize_weights",
    "model_for_scale",
]


def quantize(x: torch.Tensor, straight_through: bool = False) -> torch.Tensor:
    """8-bit quantisation of an image in [0, 1]: round(clamp(x, 0, 1) * 255) / 255.

    With ``straight_through`` the gradient passes unchanged (training).
    """
    q = torch.round(torch.clamp(x, 0.0, 1.0) * 255.0) / 255.0
    if straight_through:
        return x + (q - x).detach()
    return q


class InvertibleRescaler(nn.Module):
    """IRN: ``forward(x) -> (y, z)`` downscales, ``inverse(y, z) -> x`` upscales.

    ``y`` is the (unquantised) LR image with ``in_channels`` channels; ``z`` the
    latent with ``in_channels * (scale**2 - 1)`` channels at LR resolution.
    """

    def __init__(self, config: IRNConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = config.scale
        self.in_channels = config.in_channels
        steps: list[nn.Module] = []
        channels = config.in_channels
        for stage in config.stages:
            down: nn.Module
            if stage.downsampler == "haar":
                down = HaarDownsampling(channels)
            elif stage.downsampler == "learned3":
                down = LearnedDownsampling3(channels)
            else:
                raise ValueError(f"unknown downsampler {stage.downsampler!r}")
            steps.append(down)
            channels = down.out_channels
            steps.extend(
                CouplingBlock(channels, config.in_channels, config.growth, config.clamp)
                for _ in range(stage.blocks)
            )
        self.steps = nn.ModuleList(steps)
        self.out_channels = channels

    def check_size(self, height: int, width: int) -> None:
        if height % self.scale or width % self.scale:
            raise ValueError(
                f"image size {width}x{height} is not divisible by the scale {self.scale}; "
                f"crop or pad it to a multiple of {self.scale} first"
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, H, W) input, got {tuple(x.shape)}")
        self.check_size(x.shape[2], x.shape[3])
        out = x
        for step in self.steps:
            out = step(out)
        return out[:, : self.in_channels], out[:, self.in_channels :]

    def inverse(self, y: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Upscale ``y``; ``z=None`` means the all-zero latent (best PSNR)."""
        if y.ndim != 4 or y.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, h, w) LR, got {tuple(y.shape)}")
        if z is None:
            z = y.new_zeros(y.shape[0], self.out_channels - self.in_channels, *y.shape[2:])
        out = torch.cat((y, z), dim=1)
        for step in reversed(self.steps):
            out = step.inverse(out)
        return out

    def num_learnable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def build_model(name: str | IRNConfig) -> InvertibleRescaler:
    """Build a freshly initialised model from a registry name or a config."""
    config = name if isinstance(name, IRNConfig) else get_config(name)
    return InvertibleRescaler(config)


def randomize_weights(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Add seeded N(0, std^2) noise to every learnable tensor, in place; returns ``model``.

    A freshly built IRN has every coupling block at the identity, which would make
    exported graphs trivially exact; tests and ``irn-export --random-init`` use this
    to get a model whose every layer does something. Parameters are visited in name
    order and the noise is drawn in float64, so the result depends only on the seed.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float64) * std
            param.add_(noise.to(param.dtype))
    return model
