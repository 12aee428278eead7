"""Building blocks of the Invertible Rescaling Network.

Each module has explicit constructor arguments and two explicit directions,
``forward`` and ``inverse``; nothing is switched by a flag.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HaarDownsampling", "LearnedDownsampling3", "DenseBlock", "CouplingBlock"]


def _haar_filters(channels: int) -> torch.Tensor:
    """Dense (4C, C, 2, 2) weight whose output channel k*C + c is Haar filter k on channel c.

    Writing the grouped Haar transform as one dense conv puts its output directly
    in subband-major order (no reshape/transpose in exported graphs); the zeros
    cost nothing measurable next to the coupling blocks.
    """
    base = torch.tensor(
        [
            [[1.0, 1.0], [1.0, 1.0]],
            [[1.0, -1.0], [1.0, -1.0]],
            [[1.0, 1.0], [-1.0, -1.0]],
            [[1.0, -1.0], [-1.0, 1.0]],
        ]
    )
    weight = torch.zeros(4 * channels, channels, 2, 2)
    for k in range(4):
        for c in range(channels):
            weight[k * channels + c, c] = base[k]
    return weight


class HaarDownsampling(nn.Module):
    """Orthogonal 2x2 Haar analysis (forward, /4) and exact synthesis (inverse)."""

    factor = 2

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        # Fixed weights: a buffer, not a parameter, and not part of the state dict.
        self.register_buffer("weight", _haar_filters(channels), persistent=False)

    @property
    def out_channels(self) -> int:
        return 4 * self.channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, stride=2) * 0.25

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(y, self.weight, stride=2)


class LearnedDownsampling3(nn.Module):
    """IRN_LD: 3x3 space-to-depth per colour, then a learnable invertible 9x9 matrix.

    The matrix starts with the mean of the nine elements as its first row and
    rows 2..9 of the identity below, so output channels 0..C-1 begin as the 3x3
    box average of each colour. Output order is subband-major (k*C + c).
    """

    factor = 3

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.channels = channels
        init = torch.eye(9)
        init[0] = 1.0 / 9.0
        self.matrix = nn.Parameter(init)

    @property
    def out_channels(self) -> int:
        return 9 * self.channels

    @staticmethod
    def _space_to_subbands(x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, 9, C, H/3, W/3), element k = (dy, dx) in raster order
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // 3, 3, w // 3, 3)
        return x.permute(0, 3, 5, 1, 2, 4).reshape(b, 9, c, h // 3, w // 3)

    @staticmethod
    def _subbands_to_space(u: torch.Tensor) -> torch.Tensor:
        b, _, c, h, w = u.shape
        u = u.reshape(b, 3, 3, c, h, w).permute(0, 3, 4, 1, 5, 2)
        return u.reshape(b, c, h * 3, w * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self._space_to_subbands(x)
        u = torch.einsum("kj,bjchw->bkchw", self.matrix, v)
        b, _, c, h, w = u.shape
        return u.reshape(b, 9 * c, h, w)

    def inverse(self, y: torch.Tensor, matrix_inverse: torch.Tensor | None = None) -> torch.Tensor:
        b, n, h, w = y.shape
        c = n // 9
        inv = torch.linalg.inv(self.matrix) if matrix_inverse is None else matrix_inverse
        u = y.reshape(b, 9, c, h, w)
        v = torch.einsum("kj,bjchw->bkchw", inv, u)
        return self._subbands_to_space(v)


class DenseBlock(nn.Module):
    """Five 3x3 convs with dense connections (growth ``growth`` channels), the IRN subnet."""

    def __init__(self, in_channels: int, out_channels: int, growth: int = 32) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels + k * growth, growth if k < 4 else out_channels, 3, 1, 1)
            for k in range(5)
        )
        self.act = nn.LeakyReLU(0.2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in self.convs[:4]:
            nn.init.xavier_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)
        # The last conv starts at zero: each coupling block begins as the identity.
        nn.init.zeros_(self.convs[4].weight)
        nn.init.zeros_(self.convs[4].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in self.convs[:4]:
            features.append(self.act(conv(torch.cat(features, dim=1))))
        return self.convs[4](torch.cat(features, dim=1))


class CouplingBlock(nn.Module):
    """Affine coupling with exponential scaling (the paper's InvBlockExp).

    The first ``split`` channels are the LR branch. ``f`` updates it from the
    rest; ``g`` and ``h`` give the shift and the bounded log-scale of the rest.
    """

    def __init__(
        self,
        channels: int,
        split: int = 3,
        growth: int = 32,
        clamp: float = 1.0,
        scale_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        # The sigmoid/exp/multiply/divide of the affine scale run in ``scale_dtype``
        # when set (FP32 islands in FP16 exports); None keeps the input's dtype.
        self.scale_dtype = scale_dtype
        if not 0 < split < channels:
            raise ValueError(f"split must be in (0, {channels}), got {split}")
        self.split = split
        self.clamp = clamp
        rest = channels - split
        self.f = DenseBlock(rest, split, growth)
        self.g = DenseBlock(split, rest, growth)
        self.h = DenseBlock(split, rest, growth)

    def _scale(self, y1: torch.Tensor) -> torch.Tensor:
        h = self.h(y1)
        if self.scale_dtype is not None:
            h = h.to(self.scale_dtype)
        return torch.exp(self.clamp * (torch.sigmoid(h) * 2.0 - 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        y1 = x1 + self.f(x2)
        scale = self._scale(y1)
        y2 = (x2.to(scale.dtype) * scale).to(x.dtype) + self.g(y1)
        return torch.cat((y1, y2), dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = y[:, : self.split], y[:, self.split :]
        scale = self._scale(y1)
        x2 = ((y2 - self.g(y1)).to(scale.dtype) / scale).to(y.dtype)
        x1 = y1 - self.f(x2)
        return torch.cat((x1, x2), dim=1)
