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
    "IRNConfig",
    "register_model",
    "list_models",
    "get_config",
    "model_for_scale",
]

DownsamplerKind = Literal["haar", "learned3"]


@dataclass(frozen=True)
class Stage:
    """One downsampling step followed by ``blocks`` coupling blocks at its resolution."""

    downsampler: DownsamplerKind
    blocks: int


@dataclass(frozen=True)
class IRNConfig:
    """Architecture of one registry entry; everything the builder needs."""

    name: str
    stages: tuple[Stage, ...]
    in_channels: int = 3
    growth: int = 32
    clamp: float = 1.0
    description: str = ""

    @property
    def scale(self) -> int:
        s = 1
        for st in self.stages:
            s *= 2 if st.downsampler == "haar" else 3
        return s

    @property
    def latent_channels(self) -> int:
        return self.in_channels * self.scale**2 - self.in_channels

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
