"""Launch geometry shared by the kernels, their AOT specs and the ONNX rewrite.

Triton-free, so the exporter and the runtime can use it without Triton.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ELEMENTWISE_BLOCK", "MAX_HAAR_LEVELS", "HaarGeometry", "haar_block_positions"]

ELEMENTWISE_BLOCK = 1024  # elements per program of the pack/unpack/gaussian kernels
MAX_HAAR_LEVELS = 3  # IRN x8; the per-block sign matrix grows as 16^L


@dataclass(frozen=True)
class HaarGeometry:
    """Compile-time constants of a Haar kernel for ``levels`` levels."""

    levels: int

    def __post_init__(self) -> None:
        if not 1 <= self.levels <= MAX_HAAR_LEVELS:
            raise ValueError(f"Haar levels must be in 1..{MAX_HAAR_LEVELS}, got {self.levels}")

    @property
    def side(self) -> int:
        return 1 << self.levels

    @property
    def subbands(self) -> int:
        return 4**self.levels

    @property
    def block_positions(self) -> int:
        return haar_block_positions(self.levels)

    def constexprs(self) -> dict[str, int]:
        return {
            "LEVELS": self.levels,
            "SIDE": self.side,
            "NSUB": self.subbands,
            "BLOCK_P": self.block_positions,
        }


def haar_block_positions(levels: int) -> int:
    """Pixel blocks per program: keeps the (BLOCK_P, 4^L, 4^L) product at 8K elements."""
    return max(1, 8192 // 16**levels)
