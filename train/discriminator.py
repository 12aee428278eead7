"""The VGG-style discriminator of IRN+ (spec section 3, stage 2).

Five levels, each a 3x3 conv then a 4x4 stride-2 conv (64 -> 128 -> 256 -> 512 -> 512
channels), BatchNorm after every conv but the first, LeakyReLU 0.2; then dense
layers to 100 features and one logit. The dense input depends on the crop size,
so the size is an explicit constructor argument (the paper's 128/144 crops give
4x4 features, our CPU preset's 64 crops give 2x2).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["VGGStyleDiscriminator", "DOWNSAMPLING"]

DOWNSAMPLING = 32  # five stride-2 convs
_WIDTHS = (64, 128, 256, 512, 512)


def _conv(cin: int, cout: int, kernel: int, stride: int, norm: bool) -> list[nn.Module]:
    # BatchNorm supplies the bias, so normalised convs carry none.
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, 1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2))
    return layers


class VGGStyleDiscriminator(nn.Module):
    """Maps an RGB batch ``(N, 3, S, S)`` in [0, 1] to one real/fake logit per image."""

    def __init__(self, input_size: int, in_channels: int = 3) -> None:
        super().__init__()
        if input_size < DOWNSAMPLING:
            raise ValueError(
                f"the discriminator needs crops of at least {DOWNSAMPLING} pixels, got {input_size}"
            )
        self.input_size = input_size
        layers: list[nn.Module] = []
        cin = in_channels
        for level, width in enumerate(_WIDTHS):
            layers += _conv(cin, width, 3, 1, norm=level > 0)
            layers += _conv(width, width, 4, 2, norm=True)
            cin = width
        self.features = nn.Sequential(*layers)
        side = input_size
        for _ in _WIDTHS:  # a 4x4 / stride 2 / pad 1 conv floors odd sizes
            side //= 2
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(cin * side * side, 100), nn.LeakyReLU(0.2), nn.Linear(100, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"discriminator built for {self.input_size}x{self.input_size} crops, "
                f"got {tuple(x.shape[-2:])}"
            )
        return self.head(self.features(x))
