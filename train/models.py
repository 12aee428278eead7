"""IRN and FGRN models, and the CRM; the registry of named configurations lives in
:mod:`.configs` (re-exported). Both rescaler classes downscale with ``forward(x) -> (y, z)``
and upscale with ``inverse(y, z)``; the CRM (:class:`CompressionRestorer`) maps a
JPEG-compressed LR to a restored one. :func:`build_model` picks the class from the
configuration's type.
"""

from __future__ import annotations

import torch
from irn_trt.runtime.metrics import LUMA_WEIGHTS
from torch import nn

from .configs import (
    CRMConfig,
    FGRNConfig,
    IRNConfig,
    LatentCode,
    ModelConfig,
    Stage,
    get_config,
    list_models,
    model_for_scale,
    register_model,
)
from .modules import (
    RRDB,
    AlphaPreSplit,
    AlphaSigmoid,
    CouplingBlock,
    DenseBlock,
    FGRNDecoder,
    FGRNEncoder,
    FlowGuidance,
    HaarDownsampling,
    LatentAutoencoder,
    LearnedDownsampling3,
    YCbCrSplit,
)

__all__ = [
    "Stage",
    "LatentCode",
    "IRNConfig",
    "FGRNConfig",
    "CRMConfig",
    "ModelConfig",
    "CompressionRestorer",
    "InvertibleRescaler",
    "FlowGuidedRescaler",
    "Rescaler",
    "init_from_model",
    "luma",
    "register_model",
    "list_models",
    "get_config",
    "build_model",
    "quantize",
    "randomize_weights",
    "model_for_scale",
]


def luma(x: torch.Tensor) -> torch.Tensor:
    """Full-range BT.601 luma of an RGB batch (B, 3, H, W) -> (B, 1, H, W)."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device)
    return torch.einsum("c,bchw->bhw", weights, x)[:, None]


def quantize(x: torch.Tensor, straight_through: bool = False, bits: int = 8) -> torch.Tensor:
    """Quantisation to ``bits`` bits: round(clamp(x, 0, 1) * L) / L with L = 2**bits - 1.

    With ``straight_through`` the gradient passes unchanged (training).
    """
    levels = float(2**bits - 1)
    q = torch.round(torch.clamp(x, 0.0, 1.0) * levels) / levels
    if straight_through:
        return x + (q - x).detach()
    return q


class InvertibleRescaler(nn.Module):
    """IRN: ``forward(x) -> (y, z)`` downscales, ``inverse(y, z) -> x`` upscales.

    ``y`` is the (unquantised) LR image with ``lr_channels`` channels (the
    colours, plus IRN-A's sigmoid-normalised alpha code); ``z`` the latent with
    ``latent_channels`` channels at LR resolution. IRN-M models also have
    ``latent_code``, an auto-encoder whose code of z travels beside the LR.
    """

    def __init__(self, config: IRNConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = config.scale
        self.in_channels = config.in_channels
        self.lr_channels = config.lr_channels
        steps: list[nn.Module] = []
        channels = config.in_channels
        for index, stage in enumerate(config.stages):
            down: nn.Module
            if stage.downsampler == "haar":
                down = HaarDownsampling(channels)
            elif stage.downsampler == "learned3":
                down = LearnedDownsampling3(channels)
            elif stage.downsampler == "ycbcr":
                down = YCbCrSplit(channels)
            else:
                raise ValueError(f"unknown downsampler {stage.downsampler!r}")
            steps.append(down)
            channels = down.out_channels
            if index == 0 and config.alpha_channel:
                steps.append(AlphaPreSplit(config.in_channels, channels))
            steps.extend(
                CouplingBlock(channels, self.lr_channels, config.growth, config.clamp)
                for _ in range(stage.blocks)
            )
        if config.alpha_channel:
            steps.append(AlphaSigmoid(config.in_channels, channels))
        self.steps = nn.ModuleList(steps)
        self.out_channels = channels
        self.latent_channels = channels - self.lr_channels
        self.latent_code: LatentAutoencoder | None = None
        if config.latent_code is not None:
            code = config.latent_code
            self.latent_code = LatentAutoencoder(
                self.latent_channels, code.channels, code.hidden, code.layers, code.pools
            )

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
        return out[:, : self.lr_channels], out[:, self.lr_channels :]

    def inverse(self, y: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Upscale ``y``; ``z=None`` means the all-zero latent (best PSNR)."""
        if y.ndim != 4 or y.shape[1] != self.lr_channels:
            raise ValueError(f"expected (B, {self.lr_channels}, h, w) LR, got {tuple(y.shape)}")
        if z is None:
            z = y.new_zeros(y.shape[0], self.latent_channels, *y.shape[2:])
        out = torch.cat((y, z), dim=1)
        for step in reversed(self.steps):
            out = step.inverse(out)
        return out

    def encode_latent(self, z: torch.Tensor, straight_through: bool = False) -> torch.Tensor:
        """IRN-M: z -> its quantised side code (``bits`` bits per value, in [0, 1])."""
        if self.latent_code is None or self.config.latent_code is None:
            raise ValueError(f"{self.config.name} has no latent code")
        code = self.latent_code.encode(z)
        return quantize(code, straight_through, self.config.latent_code.bits)

    def decode_latent(self, code: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """IRN-M: side code -> z estimate of ``height`` x ``width`` (the LR's size)."""
        if self.latent_code is None:
            raise ValueError(f"{self.config.name} has no latent code")
        return self.latent_code.decode(code, height, width)

    def reconstruction_latent(
        self, z: torch.Tensor, straight_through: bool = False
    ) -> torch.Tensor | None:
        """The z that ``up`` will see: decoded from the side code (IRN-M), else None (z = 0)."""
        if self.latent_code is None:
            return None
        code = self.encode_latent(z, straight_through)
        return self.decode_latent(code, z.shape[2], z.shape[3])

    def num_learnable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class FlowGuidedRescaler(nn.Module):
    """FGRN (seed 002): ``forward(x) -> (y, z)`` downscales, ``inverse(y) -> x`` upscales.

    Down: x_rep = Q(G_d(x)), y = F(x_rep); up: G_u(Q(F^-1(y))), with Q the 8-bit
    quantiser (seed 002, section 3.3: the representation is quantised like the LR, so
    F's inverse of the 8-bit LR rounds back onto it). ``y`` is the unquantised LR
    (RGB), as IRN's; ``z`` is always empty (0 channels) and ``inverse`` ignores it:
    the interface of :class:`InvertibleRescaler`, so evaluation, export and the
    runtime treat both alike. Training uses the parts (:meth:`represent`,
    ``decoder``, ``fgm.forward_with_logdet``), see ``trainer.fgrn_losses``.
    """

    def __init__(self, config: FGRNConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = config.scale
        self.in_channels = config.in_channels
        self.lr_channels = config.lr_channels
        self.latent_channels = 0
        self.latent_code = None  # no side code: the LR is all that travels
        c = config.in_channels
        self.encoder = FGRNEncoder(
            config.scale,
            c,
            config.features,
            config.encoder_blocks,
            c,
            image_skip=config.encoder_image_skip,
        )
        self.fgm = FlowGuidance(
            c,
            config.flow_cells,
            config.flow_split,
            config.growth,
            config.clamp,
            roll_channels=config.flow_roll_channels,
        )
        self.decoder = FGRNDecoder(config.scale, c, config.features, config.decoder_blocks, c)

    def check_size(self, height: int, width: int) -> None:
        if height % self.scale or width % self.scale:
            raise ValueError(
                f"image size {width}x{height} is not divisible by the scale {self.scale}; "
                f"crop or pad it to a multiple of {self.scale} first"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """G_d(x), the representation before the quantiser."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, H, W) input, got {tuple(x.shape)}")
        self.check_size(x.shape[2], x.shape[3])
        return self.encoder(x)

    def represent(self, x: torch.Tensor, straight_through: bool = False) -> torch.Tensor:
        """The quantised representation x_rep = Q(G_d(x)) (STE gradient when training)."""
        return quantize(self.encode(x), straight_through)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.fgm(self.represent(x))
        return y, y.new_zeros(y.shape[0], 0, *y.shape[2:])

    def recover_representation(self, y: torch.Tensor) -> torch.Tensor:
        """Q(F^-1(y)): the representation the decoder upscales, back on the 8-bit grid."""
        if y.ndim != 4 or y.shape[1] != self.lr_channels:
            raise ValueError(f"expected (B, {self.lr_channels}, h, w) LR, got {tuple(y.shape)}")
        return quantize(self.fgm.inverse(y))

    def inverse(self, y: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Upscale the LR ``y``; ``z`` is accepted for the common interface and unused."""
        return self.decoder(self.recover_representation(y))

    def reconstruction_latent(
        self, z: torch.Tensor, straight_through: bool = False
    ) -> torch.Tensor | None:
        return None

    def num_learnable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


#: A model of any rescaling family.
Rescaler = InvertibleRescaler | FlowGuidedRescaler


class CompressionRestorer(nn.Module):
    """CRM (seed 000, section 3.5): ``forward(lr, quality)`` restores a JPEG-compressed LR.

    ESRGAN's RRDB trunk without upsampling (see :class:`~.configs.CRMConfig`); the
    output is the input LR plus the network's residual, which starts at zero (the
    last conv is zero-initialised), so a fresh CRM passes the LR through unchanged.
    ``quality`` (conditioned CRMs only): the JPEG quality in 1..100, one number for
    the batch or a (B,) tensor. The output is not clamped or rounded (the loss sees
    it as is; evaluation and the exported graphs quantise it to 8 bits).
    """

    def __init__(self, config: CRMConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = 1
        self.in_channels = config.in_channels
        self.lr_channels = config.in_channels
        self.latent_channels = 0
        self.latent_code = None
        nf = config.features
        cin = config.in_channels + int(config.conditioned)
        self.conv_first = nn.Conv2d(cin, nf, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(nf, config.growth) for _ in range(config.blocks)))
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, config.in_channels, 3, 1, 1)
        self.act = nn.LeakyReLU(0.2)
        for conv in (self.conv_first, self.conv_body, self.conv_hr):
            nn.init.kaiming_normal_(conv.weight, a=0.0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.conv_last.weight)
        nn.init.zeros_(self.conv_last.bias)

    def condition(self, lr: torch.Tensor, quality: float | torch.Tensor | None) -> torch.Tensor:
        """The network's input: the LR, plus the quality plane (q / 100) if conditioned."""
        if not self.config.conditioned:
            return lr
        if quality is None:
            raise ValueError(f"{self.config.name} is quality-conditioned: pass the JPEG quality")
        q = torch.as_tensor(quality, dtype=lr.dtype, device=lr.device).reshape(-1, 1, 1, 1)
        plane = lr[:, :1] * 0.0 + q / 100.0
        return torch.cat((lr, plane), dim=1)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """What the network adds to the LR, from :meth:`condition`'s output."""
        fea = self.conv_first(x)
        fea = fea + self.conv_body(self.body(fea))
        return self.conv_last(self.act(self.conv_hr(fea)))

    def forward(
        self, lr: torch.Tensor, quality: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        if lr.ndim != 4 or lr.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, h, w) LR, got {tuple(lr.shape)}")
        return lr + self.residual(self.condition(lr, quality))

    def num_learnable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


#: The model class of each configuration type (what :func:`build_model` builds).
_MODEL_CLASSES: dict[type, type[nn.Module]] = {
    IRNConfig: InvertibleRescaler,
    FGRNConfig: FlowGuidedRescaler,
    CRMConfig: CompressionRestorer,
}


def _dense_block_from(
    target: DenseBlock,
    source: DenseBlock,
    cin_map: list[int | None],
    cout_map: list[int | None],
) -> None:
    """Copy ``source``'s weights into ``target``, whose x-input / output channels are remapped.

    ``cin_map[j]`` / ``cout_map[j]`` name the source channel behind target channel
    ``j`` (None: a new channel, its weights zero). The dense features (the growth
    channels after x in every conv's input) keep their places.
    """
    cin_t, cin_s = target.convs[0].in_channels, source.convs[0].in_channels
    last = len(target.convs) - 1
    with torch.no_grad():
        for k, (ct, cs) in enumerate(zip(target.convs, source.convs, strict=True)):
            rows = cout_map if k == last else list(range(ct.out_channels))
            weight = torch.zeros_like(ct.weight)
            bias = torch.zeros_like(ct.bias)
            for r, src_r in enumerate(rows):
                if src_r is None:
                    continue
                for j, src in enumerate(cin_map):
                    if src is not None:
                        weight[r, j] = cs.weight[src_r, src]
                weight[r, cin_t:] = cs.weight[src_r, cin_s:]
                bias[r] = cs.bias[src_r]
            ct.weight.copy_(weight)
            ct.bias.copy_(bias)


def init_from_model(target: InvertibleRescaler, source: InvertibleRescaler) -> InvertibleRescaler:
    """Start ``target`` from a trained plain IRN ``source`` of the same scale and stages.

    Same LR layout (IRN-M from IRN): every step is copied as is; the latent
    auto-encoder keeps its fresh initialisation. IRN-A from IRN: the alpha code
    takes the place of the first high-pass channel, moving from the latent to the
    LR branch of every coupling block; each subnet keeps its trained weights for
    the channels it shares with IRN, and the weights that read or write the alpha
    start at zero, so the alpha starts as the pre-split mean, carried unchanged.
    """
    if not isinstance(target, InvertibleRescaler) or not isinstance(source, InvertibleRescaler):
        raise ValueError(
            f"cannot start {target.config.name} from {source.config.name}: "
            "only IRN-A / IRN-M start from a plain IRN"
        )
    t_cfg, s_cfg = target.config, source.config
    if t_cfg.stages != s_cfg.stages or t_cfg.in_channels != s_cfg.in_channels:
        raise ValueError(f"cannot start {t_cfg.name} from {s_cfg.name}: different architecture")
    if s_cfg.alpha_channel or s_cfg.latent_code is not None:
        raise ValueError(f"start {t_cfg.name} from a plain IRN, not {s_cfg.name}")
    s_couplings = [m for m in source.steps if isinstance(m, CouplingBlock)]
    t_couplings = [m for m in target.steps if isinstance(m, CouplingBlock)]
    with torch.no_grad():
        for t_step, s_step in zip(
            [m for m in target.steps if isinstance(m, LearnedDownsampling3)],
            [m for m in source.steps if isinstance(m, LearnedDownsampling3)],
            strict=True,
        ):
            t_step.matrix.copy_(s_step.matrix)
    if not t_cfg.alpha_channel:
        for t_step, s_step in zip(t_couplings, s_couplings, strict=True):
            t_step.load_state_dict(s_step.state_dict())
        return target
    c = s_cfg.in_channels  # the source's LR width; the target's is c + 1
    for t_step, s_step in zip(t_couplings, s_couplings, strict=True):
        n = s_step.split + s_step.f.convs[0].in_channels  # channels at this level
        # f reads the latent branch (source channels c..n-1, target c+1..n-1) and writes the LR's.
        _dense_block_from(t_step.f, s_step.f, [j + 1 for j in range(n - c - 1)], [*range(c), None])
        # g and h read the LR branch (+ the new alpha) and write the latent's.
        for name in ("g", "h"):
            _dense_block_from(
                getattr(t_step, name),
                getattr(s_step, name),
                [*range(c), None],
                [j + 1 for j in range(n - c - 1)],
            )
    return target


def build_model(name: str | ModelConfig) -> Rescaler:
    """Build a freshly initialised model from a registry name or a config (any family;
    a :class:`CRMConfig` builds a :class:`CompressionRestorer`)."""
    config = get_config(name) if isinstance(name, str) else name
    try:
        cls = _MODEL_CLASSES[type(config)]
    except KeyError:
        raise ValueError(f"no model class for configuration {type(config).__name__}") from None
    return cls(config)  # type: ignore[return-value]


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
