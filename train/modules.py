"""Building blocks of the Invertible Rescaling Network (and of FGRN, seed 002).

Each module has explicit constructor arguments and two explicit directions,
``forward`` and ``inverse``; nothing is switched by a flag.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

import torch
import torch.nn.functional as F
from irn_trt.runtime.metrics import LUMA_WEIGHTS
from torch import nn

__all__ = [
    "ConvCompute",
    "set_conv_compute_dtype",
    "HaarDownsampling",
    "LearnedDownsampling3",
    "DenseBlock",
    "CouplingBlock",
    "YCbCrSplit",
    "AlphaPreSplit",
    "AlphaSigmoid",
    "LatentAutoencoder",
    "SpaceToDepth",
    "ResBlock",
    "PixelShuffleUpsampler",
    "FGRNEncoder",
    "FGRNDecoder",
    "FlowCell",
    "FlowGuidance",
    "ResidualDenseBlock",
    "RRDB",
]


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


class YCbCrSplit(nn.Module):
    """IRN_color's graying module: RGB -> (Y, Cb, Cr), full-range BT.601, exact inverse.

    Y is the plain luma (weights ``LUMA_WEIGHTS``); Cb = (B - Y) / 1.772 and
    Cr = (R - Y) / 1.402 are centred on 0 (no +0.5 offset: they start the latent
    branch, whose target is N(0, I)). The inverse matrix is computed in float64.
    """

    factor = 1

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        if channels != 3:
            raise ValueError(f"the graying module needs RGB input, got {channels} channels")
        self.channels = channels
        kr, kg, kb = LUMA_WEIGHTS
        fwd = torch.tensor(
            [
                [kr, kg, kb],
                [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
                [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))],
            ],
            dtype=torch.float64,
        )
        # Fixed weights: float64 buffers (cast per call), not part of the state dict.
        self.register_buffer("matrix", fwd, persistent=False)
        self.register_buffer("matrix_inverse", torch.linalg.inv(fwd), persistent=False)

    @property
    def out_channels(self) -> int:
        return 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kc,bchw->bkhw", self.matrix.to(x.dtype), x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kc,bchw->bkhw", self.matrix_inverse.to(y.dtype), y)


class ConvCompute(nn.Module, metaclass=ABCMeta):
    """A stack of ordinary (non-invertible) convolutions whose arithmetic may run in a
    lower precision during training: ``compute_dtype`` (set by
    :func:`set_conv_compute_dtype`, never saved) autocasts :meth:`convolve` and the result
    comes back in the input's dtype.

    Only these stacks are reduced: the Haar transform, the coupling's affine update
    and every other exactly invertible part stay in the input's dtype, so forward and
    inverse still cancel to far below one 8-bit level (about 1e-4 at most: the inverse
    rounds its slightly different conv inputs to BF16 again); a BF16 coupling would
    lose 8 bits of every value per block.
    """

    compute_dtype: torch.dtype | None = None

    @abstractmethod
    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """The stack's computation (each subclass's own); :meth:`forward` wraps it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compute_dtype is None or self.compute_dtype == x.dtype:
            return self.convolve(x)
        # The input is cast once, so the dense concatenations stay in the low dtype.
        with torch.autocast(x.device.type, dtype=self.compute_dtype):
            out = self.convolve(x.to(self.compute_dtype))
        return out.to(x.dtype)


def set_conv_compute_dtype(model: nn.Module, dtype: torch.dtype | None) -> None:
    """Run every :class:`ConvCompute` stack of ``model`` in ``dtype`` (None: as the input)."""
    for module in model.modules():
        if isinstance(module, ConvCompute):
            module.compute_dtype = dtype


class DenseBlock(ConvCompute):
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

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
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


class AlphaPreSplit(nn.Module):
    """IRN-A's pre-split (seed 004, section 2.1, eq. 1), exact and linear.

    Input: a downsampler's subband-major output, ``colours`` low-pass channels
    followed by ``k * colours`` high-pass ones (k = 3 for Haar). The first
    high-pass channel is replaced by the mean of all high-pass channels, which
    sits right after the low-pass channels and so joins the LR branch when the
    coupling blocks split at ``colours + 1``. The inverse recovers the removed
    channel as ``n * mean - sum(the others)``.
    """

    def __init__(self, colours: int, channels: int) -> None:
        super().__init__()
        if channels <= colours + 1:
            raise ValueError(f"need more than {colours + 1} channels, got {channels}")
        self.colours = colours
        self.channels = channels

    @property
    def out_channels(self) -> int:
        return self.channels

    @property
    def high(self) -> int:
        return self.channels - self.colours

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.colours
        alpha = x[:, c:].mean(dim=1, keepdim=True)
        return torch.cat((x[:, :c], alpha, x[:, c + 1 :]), dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        c = self.colours
        alpha, rest = y[:, c : c + 1], y[:, c + 1 :]
        removed = alpha * self.high - rest.sum(dim=1, keepdim=True)
        return torch.cat((y[:, :c], removed, rest), dim=1)


class AlphaSigmoid(nn.Module):
    """IRN-A's output normalisation: a sigmoid on the alpha channel, a logit back.

    The inverse clamps to half a quantisation step inside (0, 1) so that an
    8-bit alpha of 0 or 255 maps to a finite value.
    """

    #: Half an 8-bit step: the logit of 0 / 255 would be infinite.
    EPS = 0.5 / 255.0

    def __init__(self, channel: int, channels: int) -> None:
        super().__init__()
        self.channel = channel
        self.channels = channels

    @property
    def out_channels(self) -> int:
        return self.channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.channel
        return torch.cat((x[:, :a], torch.sigmoid(x[:, a : a + 1]), x[:, a + 1 :]), dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        a = self.channel
        p = torch.clamp(y[:, a : a + 1], self.EPS, 1.0 - self.EPS)
        # log(1 - p) rather than log1p: exports as a plain Log (TensorRT-native).
        return torch.cat((y[:, :a], torch.log(p) - torch.log(1.0 - p), y[:, a + 1 :]), dim=1)


class LatentAutoencoder(nn.Module):
    """IRN-M's auto-encoder of z (seed 004, section 2.2).

    ``encode``: ``layers`` 3x3 convs (LeakyReLU between), a 2x2 max-pool (ceil
    mode, so any size works) after each of the first ``pools``, ending in
    ``code_channels`` channels and a sigmoid: a code in [0, 1] on a grid
    ``2**pools`` times coarser than z. ``decode``: ``layers`` 3x3 convs, the
    first ``pools`` of the middle ones followed by a 2x pixel shuffle, cropped
    back to z's size.
    """

    def __init__(
        self,
        latent_channels: int,
        code_channels: int = 4,
        hidden: int = 64,
        layers: int = 4,
        pools: int = 2,
    ) -> None:
        super().__init__()
        if layers < pools + 1:
            raise ValueError(f"{pools} pools need at least {pools + 1} conv layers, got {layers}")
        self.pools = pools
        self.latent_channels = latent_channels
        self.code_channels = code_channels
        enc_widths = [latent_channels] + [hidden] * (layers - 1) + [code_channels]
        self.encoder = nn.ModuleList(
            nn.Conv2d(enc_widths[i], enc_widths[i + 1], 3, 1, 1) for i in range(layers)
        )
        # Decoder: conv 0 lifts the code to ``hidden``; convs 1..pools end in a 2x
        # pixel shuffle (4x the channels first); the last one maps to z's channels.
        dec: list[nn.Conv2d] = []
        for i in range(layers):
            cin = code_channels if i == 0 else hidden
            if i == layers - 1:
                cout = latent_channels
            elif 1 <= i <= pools:
                cout = hidden * 4
            else:
                cout = hidden
            dec.append(nn.Conv2d(cin, cout, 3, 1, 1))
        self.decoder = nn.ModuleList(dec)
        # The last conv starts at zero: an untrained code decodes to z = 0, so a
        # model started from a trained IRN reconstructs exactly as that IRN does.
        nn.init.zeros_(dec[-1].weight)
        nn.init.zeros_(dec[-1].bias)
        self.act = nn.LeakyReLU(0.2)
        self.shuffle = nn.PixelShuffle(2)

    @property
    def factor(self) -> int:
        return 2**self.pools

    def encode_logits(self, z: torch.Tensor, smooth_pool: bool = False) -> torch.Tensor:
        """The code before its sigmoid (exported graphs take the sigmoid in FP32).

        ``smooth_pool`` averages instead of taking the max over the same windows: the
        same receptive field, with a derivative for every input (halo measurement).
        """
        pool = F.avg_pool2d if smooth_pool else F.max_pool2d
        x = z
        last = len(self.encoder) - 1
        for i, conv in enumerate(self.encoder):
            x = conv(x)
            if i < last:
                x = self.act(x)
            if i < self.pools:
                x = pool(x, 2, ceil_mode=True)
        return x

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.encode_logits(z))

    def decode(self, code: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = code
        last = len(self.decoder) - 1
        for i, conv in enumerate(self.decoder):
            x = conv(x)
            if 1 <= i <= self.pools:
                x = self.shuffle(x)
            if i < last:
                x = self.act(x)
        return x[:, :, :height, :width]


# --- FGRN (seed 002): encoder, flow-guidance module, decoder ----------------------------


class SpaceToDepth(nn.Module):
    """FGRN's squeeze: (B, C, fH, fW) -> (B, f²C, H, W), lossless; channel c*f² + dy*f + dx."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(x, self.factor)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(y, self.factor)


class ResBlock(nn.Module):
    """EDSR's residual block: conv 3x3, ReLU, conv 3x3, times ``res_scale``, plus the input."""

    def __init__(self, features: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv2 = nn.Conv2d(features, features, 3, 1, 1)
        self.act = nn.ReLU()
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x))) * self.res_scale


class PixelShuffleUpsampler(nn.Module):
    """EDSR's upsampler: per factor 2 (or one 3), a 3x3 conv to f² x the features, then a
    pixel shuffle. The shuffle exports as ONNX ``DepthToSpace`` (mode CRD)."""

    def __init__(self, scale: int, features: int) -> None:
        super().__init__()
        if scale == 3:
            factors = [3]
        elif scale >= 2 and scale & (scale - 1) == 0:
            factors = [2] * (scale.bit_length() - 1)
        else:
            raise ValueError(f"the upsampler needs a scale of 3 or a power of two, got {scale}")
        self.factors = tuple(factors)
        self.convs = nn.ModuleList(nn.Conv2d(features, features * f * f, 3, 1, 1) for f in factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for f, conv in zip(self.factors, self.convs, strict=True):
            x = F.pixel_shuffle(conv(x), f)
        return x


class FGRNEncoder(ConvCompute):
    """G_d: squeeze, a 3x3 conv to ``features``, ``blocks`` residual blocks (with EDSR's
    global skip), a 3x3 conv to ``out_channels``: the (unquantised) representation.

    ``image_skip`` (not in the seed; needs ``out_channels == in_channels``): the output
    is added to the input's ``scale`` x ``scale`` box average, computed in the input's
    dtype, and the last conv starts at zero, so a fresh encoder gives the box-downscaled
    image. No parameter and no loss: the representation stays free, but starts where
    the flow, itself an identity when fresh, maps it close to the bicubic LR.
    """

    def __init__(
        self,
        scale: int,
        in_channels: int,
        features: int,
        blocks: int,
        out_channels: int,
        image_skip: bool = False,
    ) -> None:
        super().__init__()
        if image_skip and out_channels != in_channels:
            raise ValueError(
                f"image_skip needs out_channels == in_channels, got {out_channels} / {in_channels}"
            )
        self.scale = scale
        self.image_skip = image_skip
        self.squeeze = SpaceToDepth(scale)
        self.head = nn.Conv2d(in_channels * scale * scale, features, 3, 1, 1)
        self.body = nn.Sequential(*(ResBlock(features) for _ in range(blocks)))
        self.tail = nn.Conv2d(features, out_channels, 3, 1, 1)
        if image_skip:
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(self.squeeze(x))
        return self.tail(h + self.body(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out + F.avg_pool2d(x, self.scale) if self.image_skip else out


class FGRNDecoder(ConvCompute):
    """G_u: a 3x3 conv to ``features``, ``blocks`` residual blocks (global skip), the
    pixel-shuffle upsampler, a 3x3 conv to ``out_channels``."""

    def __init__(
        self, scale: int, in_channels: int, features: int, blocks: int, out_channels: int
    ) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(in_channels, features, 3, 1, 1)
        self.body = nn.Sequential(*(ResBlock(features) for _ in range(blocks)))
        self.upsample = PixelShuffleUpsampler(scale, features)
        self.tail = nn.Conv2d(features, out_channels, 3, 1, 1)

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return self.tail(self.upsample(h + self.body(h)))


class FlowCell(CouplingBlock):
    """One cell of FGRN's flow-guidance module (seed 002, eq. 5 / 6).

    The seed's cell is IRN's affine coupling with an augmented (additive) identity
    branch: l1' = l1 + alpha(l2), l2' = l2 * exp(beta(l1')) + phi(l1'), with dense
    blocks for alpha / beta / phi (``f`` / ``h`` / ``g`` here) and beta bounded as
    in IRN (clamp * (2 sigmoid - 1)). ``forward_with_logdet`` also returns the
    log-determinant of the Jacobian, the sum of beta over l2's elements.
    """

    def forward_with_logdet(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        y1 = x1 + self.f(x2)
        log_scale = self.clamp * (torch.sigmoid(self.h(y1)) * 2.0 - 1.0)
        y2 = x2 * torch.exp(log_scale) + self.g(y1)
        return torch.cat((y1, y2), dim=1), log_scale.sum(dim=(1, 2, 3))


class FlowGuidance(nn.Module):
    """FGRN's FGM: ``cells`` flow cells on ``channels`` channels, F = f_K o ... o f_1.

    ``roll_channels``: before every cell, shift the channels cyclically by one, so each
    channel takes its turn as the additive branch (RealNVP's alternating pattern). With
    a fixed split (False, as in the seed) channel 0 is always the additive branch and
    channels 1.. never update each other directly. Fitted alone to the bicubic LR from a
    trained encoder's representations, a rolled flow gets closer than an unrolled one
    (weights/MODEL_CARD.md, fgrn_x4). After the last cell the K rolls are undone (one
    fixed permutation), so a fresh module is the identity in both cases (every dense
    block's last conv starts at zero) and the LR's channels keep the representation's
    order. Permutations: no log-det term.
    """

    def __init__(
        self,
        channels: int = 3,
        cells: int = 4,
        split: int = 1,
        growth: int = 32,
        clamp: float = 1.0,
        roll_channels: bool = False,
    ) -> None:
        super().__init__()
        self.cells = nn.ModuleList(FlowCell(channels, split, growth, clamp) for _ in range(cells))
        self.roll_channels = roll_channels

    @staticmethod
    def _shift(x: torch.Tensor, k: int) -> torch.Tensor:
        """Channels shifted cyclically by ``k`` (channel c moves to c + k); exported as
        Slice + Concat: plain ONNX, exact at any precision."""
        k %= x.shape[1]
        return torch.cat((x[:, -k:], x[:, :-k]), dim=1) if k else x

    def _roll(self, x: torch.Tensor) -> torch.Tensor:
        """The shift before every cell (none with the seed's fixed split)."""
        return self._shift(x, 1) if self.roll_channels else x

    def _rolls_left(self, x: torch.Tensor) -> int:
        """How far the cells' rolls leave the channels shifted (0 without rolls)."""
        return len(self.cells) % x.shape[1] if self.roll_channels else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Each cell's own forward (not forward_with_logdet): it honours the cell's
        # scale_dtype, the FP32 island of FP16 exports.
        for cell in self.cells:
            x = cell(self._roll(x))
        return self._shift(x, -self._rolls_left(x))

    def forward_with_logdet(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """F(x) and the sum over the cells of log|det J| per sample (shape (B,))."""
        logdet = x.new_zeros(x.shape[0])
        for cell in self.cells:
            x, ld = cell.forward_with_logdet(self._roll(x))
            logdet = logdet + ld
        return self._shift(x, -self._rolls_left(x)), logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y = self._shift(y, self._rolls_left(y))
        for cell in reversed(self.cells):
            y = cell.inverse(y)
            y = self._shift(y, -1) if self.roll_channels else y
        return y


# --- CRM (seed 000, section 3.5): ESRGAN's residual-in-residual dense blocks -----------


class ResidualDenseBlock(DenseBlock):
    """ESRGAN's residual dense block: IRN's five-conv dense block on ``features`` channels
    (growth ``growth``), its output scaled by ``res_scale`` and added to the input.

    Initialised as ESRGAN: Kaiming-normal weights x 0.1, zero biases, every conv.
    """

    def __init__(self, features: int, growth: int = 32, res_scale: float = 0.2) -> None:
        self.res_scale = res_scale
        super().__init__(features, features, growth)

    def reset_parameters(self) -> None:
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight, a=0.0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x) * self.res_scale


class RRDB(nn.Module):
    """Residual-in-residual dense block: three residual dense blocks, scaled by
    ``res_scale`` and added to the input (ESRGAN, Wang et al. 2018)."""

    def __init__(self, features: int, growth: int = 32, res_scale: float = 0.2) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualDenseBlock(features, growth) for _ in range(3)))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.blocks(x) * self.res_scale
