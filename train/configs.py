"""The registry of named model configurations (``irn_x2`` ... ``fgrn_x4``, ``crm_*``), torch-free.

A configuration says everything the builder in :mod:`irn_trt.train.models`
needs; keeping it free of torch lets every CLI list the models in ``--help``
without importing torch. Three families share the registry: :class:`IRNConfig`
(one invertible network, seeds 000 / 001 / 004), :class:`FGRNConfig` (an
encoder, an invertible flow-guidance module and a decoder, seed 002) and
:class:`CRMConfig` (the compression restore module of seed 000, section 3.5: not
a rescaler, it restores a JPEG-compressed LR before ``up``). All answer the same
questions (``name``, ``scale``, ``task``, ``lr_channels``, ``latent_channels``,
``alpha_channel``, ``latent_code``, ``default_lambda_guide``, ``to_dict``);
:func:`config_from_dict` reads any back from its ``to_dict``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Literal

__all__ = [
    "Stage",
    "LatentCode",
    "IRNConfig",
    "FGRNConfig",
    "CRMConfig",
    "ModelConfig",
    "config_from_dict",
    "architecture_differences",
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

    #: The model family (:func:`config_from_dict` reads a dict without one as IRN).
    family: ClassVar[str] = "irn"

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


@dataclass(frozen=True)
class FGRNConfig:
    """FGRN (seed 002): encoder G_d, invertible flow-guidance module F, decoder G_u.

    Down: squeeze the HR (``scale`` x ``scale`` space-to-depth), a 3x3 conv to
    ``features`` channels, ``encoder_blocks`` residual blocks, a 3x3 conv to 3
    channels, the 8-bit quantiser (the representation x), then F: ``flow_cells``
    affine coupling cells on x's 3 channels split ``flow_split`` / 3 - ``flow_split``,
    every function a dense block of growth ``growth``, log-scales bounded by
    ``clamp``; ``flow_roll_channels`` shifts the channels by one before every cell
    (see :class:`~.modules.FlowGuidance`); ``encoder_image_skip`` adds the HR's box
    average to the encoder's output (see :class:`~.modules.FGRNEncoder`). Up: F's
    inverse, the quantiser again (x is on the 8-bit grid, so a small error of the
    inverse rounds away), a 3x3 conv to ``features``, ``decoder_blocks`` residual
    blocks, pixel-shuffle upsampling, a 3x3 conv to RGB.
    There is no latent: the LR alone is upscaled.
    """

    family: ClassVar[str] = "fgrn"

    name: str
    scale: int
    encoder_blocks: int
    decoder_blocks: int
    features: int = 64
    flow_cells: int = 4
    flow_split: int = 1
    growth: int = 32
    clamp: float = 1.0
    in_channels: int = 3
    description: str = ""
    flow_roll_channels: bool = False
    encoder_image_skip: bool = False

    # The LR layout questions every configuration answers: an RGB LR and nothing beside it.
    alpha_channel: ClassVar[bool] = False
    latent_code: ClassVar[LatentCode | None] = None

    def __post_init__(self) -> None:
        power_of_two = self.scale >= 2 and self.scale & (self.scale - 1) == 0
        if not (power_of_two or self.scale == 3):
            raise ValueError(f"FGRN scale must be a power of two or 3, got {self.scale}")
        if not 0 < self.flow_split < self.in_channels:
            raise ValueError(
                f"flow_split must be in (0, {self.in_channels}), got {self.flow_split}"
            )

    @property
    def task(self) -> Literal["rescale"]:
        return "rescale"

    @property
    def lr_channels(self) -> int:
        return self.in_channels

    @property
    def latent_channels(self) -> int:
        return 0

    @property
    def default_lambda_guide(self) -> float:
        """Seed 002, eq. 9: the L1 guidance term has weight 1 (gamma weighs the log-det)."""
        return 1.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["family"] = self.family
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FGRNConfig:
        if d.get("family") != cls.family:
            raise ValueError(f"not an FGRN architecture (family {d.get('family')!r})")
        return cls(
            name=str(d["name"]),
            scale=int(d["scale"]),
            encoder_blocks=int(d["encoder_blocks"]),
            decoder_blocks=int(d["decoder_blocks"]),
            features=int(d.get("features", 64)),
            flow_cells=int(d.get("flow_cells", 4)),
            flow_split=int(d.get("flow_split", 1)),
            growth=int(d.get("growth", 32)),
            clamp=float(d.get("clamp", 1.0)),
            in_channels=int(d.get("in_channels", 3)),
            description=str(d.get("description", "")),
            # Checkpoints from before the option have the seed's fixed split.
            flow_roll_channels=bool(d.get("flow_roll_channels", False)),
            encoder_image_skip=bool(d.get("encoder_image_skip", False)),
        )


@dataclass(frozen=True)
class CRMConfig:
    """Compression restore module (seed 000, sections 3.5 / 4.4): ESRGAN's RRDB network
    without upsampling, on the LR.

    A 3x3 conv to ``features`` channels, ``blocks`` residual-in-residual dense blocks
    (three five-conv dense blocks of growth ``growth`` each), a 3x3 conv plus the skip
    from the first conv, a 3x3 conv with LeakyReLU and a 3x3 conv to RGB whose output
    (zero at initialisation) is added to the input LR. ``conditioned``: the JPEG
    quality (q / 100, a constant plane) is a 4th input channel, so one network serves
    several qualities; otherwise one network restores one quality (the seed's choice).
    It works at the LR's resolution: ``scale`` 1, ``task`` ``"restore"``.
    """

    family: ClassVar[str] = "crm"
    scale: ClassVar[int] = 1
    alpha_channel: ClassVar[bool] = False
    latent_code: ClassVar[LatentCode | None] = None

    name: str
    blocks: int
    features: int = 64
    growth: int = 32
    in_channels: int = 3
    conditioned: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.blocks < 0 or self.features < 1 or self.growth < 1:
            raise ValueError(
                f"CRM needs blocks >= 0, features >= 1, growth >= 1, got {self.blocks}, "
                f"{self.features}, {self.growth}"
            )

    @property
    def task(self) -> Literal["restore"]:
        return "restore"

    @property
    def lr_channels(self) -> int:
        return self.in_channels

    @property
    def latent_channels(self) -> int:
        return 0

    @property
    def default_lambda_guide(self) -> float:
        return 0.0  # no guidance: an L2 loss to the uncompressed LR only

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["family"] = self.family
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CRMConfig:
        if d.get("family") != cls.family:
            raise ValueError(f"not a CRM architecture (family {d.get('family')!r})")
        return cls(
            name=str(d["name"]),
            blocks=int(d["blocks"]),
            features=int(d.get("features", 64)),
            growth=int(d.get("growth", 32)),
            in_channels=int(d.get("in_channels", 3)),
            conditioned=bool(d.get("conditioned", False)),
            description=str(d.get("description", "")),
        )


#: A configuration of any family.
ModelConfig = IRNConfig | FGRNConfig | CRMConfig

_FAMILIES: dict[str, type[IRNConfig] | type[FGRNConfig] | type[CRMConfig]] = {
    IRNConfig.family: IRNConfig,
    FGRNConfig.family: FGRNConfig,
    CRMConfig.family: CRMConfig,
}


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """The configuration ``to_dict`` wrote (checkpoints, manifests); no ``family`` = IRN."""
    family = d.get("family", IRNConfig.family)
    if family not in _FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(_FAMILIES)}")
    return _FAMILIES[family].from_dict(d)


def architecture_differences(a: ModelConfig, b: ModelConfig) -> list[str]:
    """The fields in which ``a`` and ``b`` compute differently (name and description
    aside); empty when the same weights mean the same function in both."""
    da, db = a.to_dict(), b.to_dict()
    keys = (set(da) | set(db)) - {"name", "description"}
    return sorted(k for k in keys if da.get(k) != db.get(k))


_REGISTRY: dict[str, Callable[[], ModelConfig]] = {}


def register_model(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Register a function returning a configuration (:data:`ModelConfig`) under its ``name``."""
    _REGISTRY[fn().name] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_config(name: str) -> ModelConfig:
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


# --- FGRN (seed 002) -------------------------------------------------------------------
# The seed gives the structure and the totals (x4 3.35 M, x2 1.33 M parameters), not the
# widths. Derived here: EDSR-baseline residual blocks (64 features, the seed's [19]),
# IRN's dense blocks (growth 32) in 4 flow cells splitting 1 / 2, EDSR's upsampler (one
# conv + 2x pixel shuffle per factor 2); the encoder and decoder get the same depth,
# 16 each at x4 (EDSR-baseline's 16) and 3 each at x2: 3,398,578 (+1.5 %) and
# 1,309,874 (-1.5 %) learnable parameters (tests/test_fgrn.py derives the formula).


@register_model
def fgrn_x4() -> FGRNConfig:
    # The shipped design: the seed's sizes, with the flow's channels rolled by one before
    # every cell and the encoder's output added to the HR's box average (no parameters
    # for either). The seed's literal form (fgrn_x4_seed) left the LR 26-31 dB from
    # bicubic with a colour cast in every run; see the model card's FGRN sections.
    return FGRNConfig(
        "fgrn_x4",
        scale=4,
        encoder_blocks=16,
        decoder_blocks=16,
        flow_roll_channels=True,
        encoder_image_skip=True,
        description=(
            "FGRN x4: encoder (16 res. blocks, box-average skip) + 4 rolled flow cells "
            "+ decoder (16 res. blocks)"
        ),
    )


@register_model
def fgrn_x4_seed() -> FGRNConfig:
    # Seed 002 as written: a fixed 1 / 2 split in every flow cell, no skip in the encoder.
    return replace(
        fgrn_x4(),
        name="fgrn_x4_seed",
        flow_roll_channels=False,
        encoder_image_skip=False,
        description="FGRN x4 as seed 002 has it: encoder + 4 flow cells (fixed split) + decoder",
    )


@register_model
def fgrn_x2() -> FGRNConfig:
    # fgrn_x4's design at x2 (not trained yet).
    return FGRNConfig(
        "fgrn_x2",
        scale=2,
        encoder_blocks=3,
        decoder_blocks=3,
        flow_roll_channels=True,
        encoder_image_skip=True,
        description=(
            "FGRN x2: encoder (3 res. blocks, box-average skip) + 4 rolled flow cells "
            "+ decoder (3 res. blocks)"
        ),
    )


# --- noise-robust IRN (seed 000, sections 3.5 / 4.4) -----------------------------------
# The architectures of irn_x4 / irn_x2; the names mark checkpoints fine-tuned with
# `irn-train --stage jpeg` (JPEG-compressed LR in the reconstruction pass), the base of
# the compression restore modules below.


@register_model
def irn_x4_jpeg() -> IRNConfig:
    return IRNConfig(
        "irn_x4_jpeg",
        (Stage("haar", 8), Stage("haar", 8)),
        description="IRN x4 fine-tuned with JPEG-compressed LRs in the reconstruction pass "
        "(irn-train --stage jpeg; same architecture as irn_x4)",
    )


@register_model
def irn_x2_jpeg() -> IRNConfig:
    return IRNConfig(
        "irn_x2_jpeg",
        (Stage("haar", 8),),
        description="IRN x2 fine-tuned with JPEG-compressed LRs in the reconstruction pass "
        "(irn-train --stage jpeg; same architecture as irn_x2)",
    )


# --- CRM: compression restore modules (seed 000, sections 3.5 / 4.4) --------------------
# The seed: 8 RRDBs (ESRGAN's, 64 features, growth 32), one network per JPEG quality,
# L2 to the uncompressed LR. crm_small is a CPU-trainable size; *_cond take the quality
# as an input channel (one network for several qualities).


@register_model
def crm_rrdb8() -> CRMConfig:
    return CRMConfig(
        "crm_rrdb8",
        blocks=8,
        description="CRM (seed 000): 8 RRDBs, 64 features, growth 32; one JPEG quality",
    )


@register_model
def crm_rrdb8_cond() -> CRMConfig:
    return CRMConfig(
        "crm_rrdb8_cond",
        blocks=8,
        conditioned=True,
        description="CRM, 8 RRDBs, 64 features, growth 32; quality-conditioned (q/100 input)",
    )


@register_model
def crm_small() -> CRMConfig:
    return CRMConfig(
        "crm_small",
        blocks=2,
        features=32,
        growth=16,
        description="CRM, CPU size: 2 RRDBs, 32 features, growth 16; one JPEG quality",
    )


@register_model
def crm_small_cond() -> CRMConfig:
    return CRMConfig(
        "crm_small_cond",
        blocks=2,
        features=32,
        growth=16,
        conditioned=True,
        description="CRM, CPU size: 2 RRDBs, 32 features, growth 16; quality-conditioned",
    )
