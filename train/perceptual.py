"""VGG19 feature loss of IRN+ (spec section 3: conv5_4 before its ReLU, weight 0.01).

Our own VGG19 feature stack whose parameter names follow torchvision's VGG19
layout (``features.{i}.weight`` / ``features.{i}.bias``), so a locally stored
torchvision state dict loads as is; torchvision itself is not needed. Pretrained
weights cannot be downloaded here, so the path is always explicit.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from irn_trt.runtime.errors import IRNError
from torch import nn

from .recipe import RANDOM_VGG

__all__ = [
    "RANDOM_VGG",
    "VGG19Features",
    "load_vgg19_state_dict",
    "build_feature_network",
    "charbonnier_sum",
]

# Test-only value of ``--vgg-weights``: a randomly initialised network. It exercises the
# stage's mechanics but gives no perceptual signal, so it is never for real training.

# torchvision's VGG19 "E" configuration: conv widths, "M" = 2x2 max-pool.
_VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512)  # fmt: skip
CONV5_4 = 34  # index of conv5_4 in torchvision's ``features``
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """``features[: CONV5_4 + 1]`` of VGG19: RGB in [0, 1] -> conv5_4 activations (pre-ReLU).

    The input is normalised with ImageNet statistics inside (what the pretrained
    weights expect); the statistics are non-persistent buffers so the state dict
    holds exactly torchvision's ``features.*`` keys.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in _VGG19:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(item), 3, 1, 1), nn.ReLU()]
                cin = int(item)
        self.features = nn.Sequential(*layers[: CONV5_4 + 1])
        self.register_buffer(
            "mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std)

    def freeze(self) -> VGG19Features:
        """Eval mode, no parameter gradients: the loss network is fixed."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def randomize(self, seed: int) -> VGG19Features:
        """Kaiming-normal weights from a private generator (test-only network, reproducible)."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in self.features:
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=gen)
                    m.bias.zero_()
        return self


def load_vgg19_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The ``features.*`` tensors of a torchvision VGG19 weights file, checked against our layout.

    ``.safetensors`` files are read with safetensors, anything else with
    ``torch.load(weights_only=True)`` (no arbitrary unpickling). Classifier keys are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise IRNError(f"VGG19 weights {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated/corrupt/pickled files raise many types
        msg = f"VGG19 weights {path}: not a loadable state dict ({type(exc).__name__})"
        raise IRNError(msg) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise IRNError(f"VGG19 weights {path}: not a state dict")
    features = {
        k.removeprefix("module."): v
        for k, v in state.items()
        if isinstance(k, str) and k.removeprefix("module.").startswith("features.")
    }
    if any(k.endswith("running_mean") for k in features):
        raise IRNError(f"VGG19 weights {path}: this is VGG19 with BatchNorm; plain VGG19 is needed")
    expected = VGG19Features().state_dict()
    missing = sorted(set(expected) - set(features))
    if missing:
        raise IRNError(
            f"VGG19 weights {path}: not torchvision's VGG19 layout (missing {missing[0]}"
            + (f" and {len(missing) - 1} more)" if len(missing) > 1 else ")")
        )
    for key, ref in expected.items():
        value = features[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(ref.shape):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise IRNError(
                f"VGG19 weights {path}: {key} has shape {shape}, expected {tuple(ref.shape)} "
                "(VGG19 without BatchNorm is needed)"
            )
    return {k: features[k].float() for k in expected}


def build_feature_network(weights: str | None, seed: int = 0) -> VGG19Features:
    """The frozen loss network from a local weights file, or random with ``RANDOM_VGG``."""
    if not weights:
        raise IRNError(
            "--stage plus needs --vgg-weights PATH: a local torchvision VGG19 state dict "
            "(vgg19-dcbb9e9d.pth or .safetensors); it cannot be downloaded here"
        )
    net = VGG19Features()
    if weights == RANDOM_VGG:
        net.randomize(seed)
    else:
        net.load_state_dict(load_vgg19_state_dict(weights))
    return net.freeze()


def charbonnier_sum(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Σ sqrt((a - b)² + eps) over C, H, W, averaged over the batch (the papers' 'l1')."""
    return torch.sum(torch.sqrt((a - b) ** 2 + eps)) / a.shape[0]
