"""Deterministic random weights for tests and for measuring the receptive field.

A freshly built IRN is nearly the identity (every coupling block's last conv
starts at zero), so a graph exported from it would hide most mistakes. Adding
seeded normal noise to every learnable tensor makes every path of the network
carry signal while keeping it well conditioned (the coupling's log-scale stays
bounded by construction).
"""

from __future__ import annotations

from irn_trt.train.models import Rescaler, build_model, randomize_weights

__all__ = ["RANDOM_INIT_STD", "random_model"]

#: Standard deviation of the noise added to each weight and bias.
RANDOM_INIT_STD = 0.02


def random_model(name: str, seed: int = 0, std: float = RANDOM_INIT_STD) -> Rescaler:
    """A registry model with perturbed weights, in eval mode."""
    return randomize_weights(build_model(name), seed, std).eval()
