"""The registry of named IRN configurations (``irn_x2`` ... ``irn_e_x4``), torch-free.

A configuration says everything the builder in :mod:`irn_trt.train.models`
needs; keeping it free of torch lets every CLI list the models in ``--help``
without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

__all__ = [
    "Stage",
    "LatentCode",
    "IRNConfig",
    "register_model",
    "list_models",
    "get_config",
    "model_for_scale",
]

DownsamplerKind = Literal["haar", "learned3", "ycbcr"]

#: Resolution factor of each downsampler kind ("ycbcr", IRN_color's graying
#: module, only splits the colours: factor 1).
DOWNSAMPLER_FACTOR = {"haar": 2, "learned3": 3, "ycbcr": 1}


@dataclass(frozen=True)
class Stage:
    """One downsampling step followed by ``blocks`` coupling blocks at its resolution."""

    downsampler: DownsamplerKind
    blocks: int


@dataclass(frozen=True)
class LatentCode:
    """IRN-M (seed 004, section 2.2): z squeezed by a small auto-encoder into a side code.

    The encoder maps z (``latent_channels`` at LR resolution) to ``channels``
    channels on a grid ``1/2**pools`` of the LR's, through ``layers`` 3x3 convs
    (a 2x2 max-pool after each of the first ``pools``); the decoder mirrors it
    with ``layers`` convs (2x pixel-shuffle upsampling in place of the pools).
    The code is sigmoid-bounded and stored with ``bits`` bits per value.
    """

    channels: int = 4
    hidden: int = 64
    layers: int = 4
    pools: int = 2
    bits: int = 8

    @property
    def factor(self) -> int:
        """How many LR pixels one code value covers along each axis."""
        return 2**self.pools


@dataclass(frozen=True)
class IRNConfig:
    """Architecture of one registry entry; everything the builder needs.

    ``alpha_channel`` (IRN-A, seed 004 section 2.1): after the first downsampling
    the mean of the high-frequency channels replaces the first of them and joins
    the LR branch, so the LR has ``in_channels + 1`` channels (the extra one
    sigmoid-normalised). ``latent_code`` (IRN-M): z is also compressed into a
    side code (see :class:`LatentCode`) from which ``up`` rebuilds it.
    """

    name: str
    stages: tuple[Stage, ...]
    in_channels: int = 3
    growth: int = 32
    clamp: float = 1.0
    description: str = ""
    alpha_channel: bool = False
    latent_code: LatentCode | None = None

    @property
    def scale(self) -> int:
        s = 1
        for st in self.stages:
            s *= DOWNSAMPLER_FACTOR[st.downsampler]
        return s

    @property
    def task(self) -> Literal["rescale", "decolorize"]:
        """``decolorize`` for IRN_color (a graying module instead of downsampling)."""
        return "decolorize" if self.stages[0].downsampler == "ycbcr" else "rescale"

    @property
    def lr_channels(self) -> int:
        """Channels of the degraded image: the colours (plus IRN-A's alpha code), or grey."""
        if self.task == "decolorize":
            return 1
        return self.in_channels + int(self.alpha_channel)

    @property
    def default_lambda_guide(self) -> float:
        """The papers' guidance weight: scale**2 when rescaling, 9 for IRN_color (000, 4.1)."""
        return 9.0 if self.task == "decolorize" else float(self.scale**2)

    @property
    def latent_channels(self) -> int:
        return self.in_channels * self.scale**2 - self.lr_channels

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = [asdict(s) for s in self.stages]
        d["scale"] = self.scale
        return d

    @classmethod
    def from_dict(cls, d: dict) -> IRNConfig:
        return cls(
            name=d["name"],
            stages=tuple(Stage(**s) for s in d["stages"]),
            in_channels=int(d.get("in_channels", 3)),
            growth=int(d.get("growth", 32)),
            clamp=float(d.get("clamp", 1.0)),
            description=str(d.get("description", "")),
            alpha_channel=bool(d.get("alpha_channel", False)),
            latent_code=LatentCode(**d["latent_code"]) if d.get("latent_code") else None,
        )


_REGISTRY: dict[str, Callable[[], IRNConfig]] = {}


def register_model(fn: Callable[[], IRNConfig]) -> Callable[[], IRNConfig]:
    """Register a function returning an :class:`IRNConfig` under its ``name``."""
    _REGISTRY[fn().name] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_config(name: str) -> IRNConfig:
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None


def model_for_scale(scale: int) -> str:
    """The default registry entry for an integer scale."""
    names = {2: "irn_x2", 3: "irn_x3", 4: "irn_x4", 8: "irn_x8"}
    if scale not in names:
        raise ValueError(f"unknown scale {scale}; supported: 2, 3, 4, 8")
    return names[scale]


@register_model
def irn_x2() -> IRNConfig:
    return IRNConfig("irn_x2", (Stage("haar", 8),), description="IRN x2: 1 Haar level, 8 blocks")


@register_model
def irn_x4() -> IRNConfig:
    return IRNConfig(
        "irn_x4", (Stage("haar", 8), Stage("haar", 8)), description="IRN x4: 2 levels x 8 blocks"
    )


@register_model
def irn_x8() -> IRNConfig:
    return IRNConfig(
        "irn_x8",
        (Stage("haar", 8), Stage("haar", 8), Stage("haar", 8)),
        description="IRN x8: 3 levels x 8 blocks",
    )


@register_model
def irn_x3() -> IRNConfig:
    return IRNConfig(
        "irn_x3",
        (Stage("learned3", 12),),
        description="IRN_LD x3: learnable 9x9 downsampling, 12 blocks",
    )


@register_model
def irn_e_x4() -> IRNConfig:
    return IRNConfig(
        "irn_e_x4",
        (Stage("haar", 0), Stage("haar", 16)),
        description="IRN_E x4: both Haar levels first, 16 blocks at 1/4 resolution",
    )


@register_model
def irn_a_x4() -> IRNConfig:
    return IRNConfig(
        "irn_a_x4",
        (Stage("haar", 8), Stage("haar", 8)),
        description="IRN-A x4: IRN x4 with a 4th LR channel (alpha) coding high frequencies",
        alpha_channel=True,
    )


@register_model
def irn_m_x4() -> IRNConfig:
    return IRNConfig(
        "irn_m_x4",
        (Stage("haar", 8), Stage("haar", 8)),
        description="IRN-M x4: IRN x4 with z auto-encoded into a side code (LR metadata)",
        latent_code=LatentCode(),
    )


@register_model
def irn_a_x2() -> IRNConfig:
    return IRNConfig(
        "irn_a_x2",
        (Stage("haar", 8),),
        description="IRN-A x2: IRN x2 with a 4th LR channel (alpha) coding high frequencies",
        alpha_channel=True,
    )


@register_model
def irn_m_x2() -> IRNConfig:
    return IRNConfig(
        "irn_m_x2",
        (Stage("haar", 8),),
        description="IRN-M x2: IRN x2 with z auto-encoded into a side code (LR metadata)",
        latent_code=LatentCode(),
    )


@register_model
def irn_color() -> IRNConfig:
    return IRNConfig(
        "irn_color",
        (Stage("ycbcr", 8),),
        description="IRN_color: invertible decolorization-colorization (YCbCr split, 8 blocks)",
    )
