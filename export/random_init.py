"""Deterministic random weights for tests and for measuring the receptive field.

A freshly built IRN is nearly the identity (every coupling block's last conv
starts at zero), so a graph exported from it would hide most mistakes. Adding
seeded normal noise to every learnable tensor makes every path of the network
carry signal while keeping it well conditioned (the coupling's log-scale stays
bounded by construction).
"""

from __future__ import annotations

import torch
from irn_trt.train.models import InvertibleRescaler, build_model

__all__ = ["RANDOM_INIT_STD", "perturb_weights", "random_model"]

#: Standard deviation of the noise added to each weight and bias.
RANDOM_INIT_STD = 0.02


@torch.no_grad()
def perturb_weights(
    model: InvertibleRescaler, seed: int, std: float = RANDOM_INIT_STD
) -> InvertibleRescaler:
    """Add seeded N(0, std^2) noise to every learnable tensor of ``model`` (in place)."""
    gen = torch.Generator().manual_seed(seed)
    for _, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        noise = torch.randn(param.shape, generator=gen, dtype=torch.float64) * std
        param.add_(noise.to(param.dtype))
    return model


def random_model(name: str, seed: int = 0, std: float = RANDOM_INIT_STD) -> InvertibleRescaler:
    """A registry model with perturbed weights, in eval mode."""
    return perturb_weights(build_model(name), seed, std).eval()
