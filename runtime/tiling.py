"""One tiling engine for every backend: one tile shape per image, overlap, crop-stitch.

The plan is made in LR pixels, so HR offsets and sizes are always multiples of
the scale (Haar/IRN_LD need that) for both directions. Every tile has the same
shape: along an axis longer than the tile, the last tile is shifted back inside
the image instead of shrinking (one static engine shape serves all tiles).
Each tile keeps only its centre; the ``overlap`` (by default the manifest's
effective halo, where a tile edge no longer changes an output byte, or its exact
receptive field ``halo``) is cropped away, so no blending is needed and the
result equals an untiled run up to floating-point noise.

Tiles are square and fixed (``tile``) for backends with static engine shapes;
CPU backends get whole images, or the fewest largest tiles (possibly
rectangular) that fit a memory budget (:func:`fit_tiles`).

Only the output image is allocated at full size; tiles are streamed, so the
backend's working memory is bounded by the tile size, not the image size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .errors import IRNError

__all__ = [
    "AxisSpan",
    "Tile",
    "TilePlan",
    "TileConfig",
    "plan_axis",
    "plan_tiles",
    "fit_tiles",
    "pad_to_multiple",
    "run_tiled",
]


@dataclass(frozen=True)
class AxisSpan:
    """One tile along one axis, in LR pixels: read [start, start+size), keep [keep0, keep1)."""

    start: int
    size: int
    keep0: int
    keep1: int


def plan_axis(length: int, tile: int, overlap: int) -> list[AxisSpan]:
    """Tiles of fixed ``tile`` size covering ``[0, length)``; kept parts partition the axis.

    An axis no longer than the tile is one tile of the axis length (the caller
    pads first where a backend needs the exact tile shape).
    """
    if length <= 0:
        raise ValueError(f"axis length must be positive, got {length}")
    if length <= tile:
        return [AxisSpan(0, length, 0, length)]
    step = tile - 2 * overlap
    if step <= 0:
        raise IRNError(f"tile {tile} is too small for overlap {overlap} (need tile > 2*overlap)")
    starts = [0]
    while starts[-1] + tile < length:
        starts.append(min(starts[-1] + step, length - tile))
    spans = []
    keep0 = 0
    for i, s in enumerate(starts):
        keep1 = length if i == len(starts) - 1 else s + tile - overlap
        spans.append(AxisSpan(s, tile, keep0, keep1))
        keep0 = keep1
    return spans


@dataclass(frozen=True)
class Tile:
    """A tile in LR pixels (rows ``y``, columns ``x``)."""

    y: AxisSpan
    x: AxisSpan


@dataclass(frozen=True)
class TilePlan:
    lr_h: int
    lr_w: int
    tiles: tuple[Tile, ...]

    @property
    def tile_hw(self) -> tuple[int, int]:
        """Shape (LR pixels) shared by every tile."""
        return self.tiles[0].y.size, self.tiles[0].x.size

    def __len__(self) -> int:
        return len(self.tiles)


TileSize = int | tuple[int, int]  # square edge, or (height, width), in LR pixels


def _hw(tile: TileSize) -> tuple[int, int]:
    return (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))


def plan_tiles(lr_h: int, lr_w: int, tile: TileSize | None, overlap: int) -> TilePlan:
    """Plan an ``lr_h`` x ``lr_w`` (LR pixels) image; ``tile=None`` means one whole-image tile."""
    tile_h, tile_w = (lr_h, lr_w) if tile is None else _hw(tile)
    ys = plan_axis(lr_h, tile_h, overlap)
    xs = plan_axis(lr_w, tile_w, overlap)
    return TilePlan(lr_h, lr_w, tuple(Tile(y, x) for y in ys for x in xs))


def _tile_for(length: int, count: int, overlap: int) -> int:
    """The shortest tile that covers ``length`` in ``count`` tiles (see :func:`plan_axis`)."""
    if count == 1:
        return length
    return -(-(length + 2 * overlap * (count - 1)) // count)


def fit_tiles(lr_h: int, lr_w: int, overlap: int, max_pixels: int) -> tuple[int, int] | None:
    """The tile (h, w) in LR px of at most ``max_pixels`` that computes the fewest pixels.

    ``None`` when the whole image fits (one tile, no overlap paid). Otherwise a
    grid of ny x nx equal tiles is searched; tile edges stay above twice the
    overlap, so the kept core of every tile is non-empty.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if lr_h * lr_w <= max_pixels:
        return None
    best: tuple[int, int, int] | None = None  # (computed pixels, h, w)
    for ny in range(1, lr_h + 1):
        th = _tile_for(lr_h, ny, overlap)
        if th <= 2 * overlap and ny > 1:
            break
        if th * min(lr_w, 2 * overlap + 1) > max_pixels:
            continue  # even the narrowest useful tile is too large with this height
        for nx in range(1, lr_w + 1):
            tw = _tile_for(lr_w, nx, overlap)
            if tw <= 2 * overlap and nx > 1:
                break
            if th * tw <= max_pixels:
                cost = (
                    len(plan_axis(lr_h, th, overlap)) * th * len(plan_axis(lr_w, tw, overlap)) * tw
                )
                if best is None or cost < best[0]:
                    best = (cost, th, tw)
                break  # more columns only cost more overlap
    if best is None:
        raise IRNError(
            f"no tile of at most {max_pixels} LR px keeps anything with an overlap of "
            f"{overlap} LR px (raise the memory budget or lower the overlap)"
        )
    return best[1], best[2]


@dataclass(frozen=True)
class TileConfig:
    """Tiling settings in LR pixels (``tile=None``: whole images; ``(h, w)``: rectangular)."""

    tile: TileSize | None
    overlap: int
    batch: int = 1
    pad_to_tile: bool = False  # pad images smaller than the tile up to it (static shapes)

    def __post_init__(self) -> None:
        if self.overlap < 0:
            raise IRNError(f"overlap must be >= 0, got {self.overlap}")
        if self.tile is None:
            return
        for edge in _hw(self.tile):
            if edge < 1:
                raise IRNError(f"tile must be positive, got {self.tile}")
            if edge <= 2 * self.overlap:
                raise IRNError(
                    f"tile ({edge} LR px) must be larger than twice the overlap "
                    f"({self.overlap} LR px)"
                )


def pad_to_multiple(img: np.ndarray, multiple_h: int, multiple_w: int) -> np.ndarray:
    """Edge-pad an HWC image at the bottom/right so H, W are multiples (no copy if already)."""
    h, w = img.shape[:2]
    ph, pw = (-h) % multiple_h, (-w) % multiple_w
    if ph == 0 and pw == 0:
        return img
    return np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="edge")


def _batches(tiles: tuple[Tile, ...], batch: int) -> Iterator[tuple[Tile, ...]]:
    for i in range(0, len(tiles), batch):
        yield tiles[i : i + batch]


def run_tiled(
    image: np.ndarray,
    run_batch: Callable[[np.ndarray], np.ndarray],
    in_per_lr: int,
    out_per_lr: int,
    config: TileConfig,
    on_tile: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Run ``run_batch`` over tiles of an HWC ``image`` and stitch the kept parts.

    ``in_per_lr`` / ``out_per_lr`` are the input / output pixels per LR pixel
    (down: scale / 1; up: 1 / scale); the image's H and W must be multiples of
    ``in_per_lr``. ``run_batch`` maps (B, h, w, C) to (B, h', w', C') with
    h' = h / in_per_lr * out_per_lr. ``on_tile(n)`` reports progress.
    """
    h, w = image.shape[:2]
    if h % in_per_lr or w % in_per_lr:
        raise ValueError(f"image {w}x{h} is not a multiple of {in_per_lr}")
    lr_h, lr_w = h // in_per_lr, w // in_per_lr
    src = image
    if config.pad_to_tile and config.tile is not None:
        tile_h, tile_w = _hw(config.tile)
        if lr_h < tile_h or lr_w < tile_w:
            # Small images: pad to the tile so the backend always sees the one tile shape.
            src = np.pad(
                image,
                (
                    (0, max(0, tile_h - lr_h) * in_per_lr),
                    (0, max(0, tile_w - lr_w) * in_per_lr),
                    (0, 0),
                ),
                mode="edge",
            )
    plan = plan_tiles(
        src.shape[0] // in_per_lr, src.shape[1] // in_per_lr, config.tile, config.overlap
    )
    out: np.ndarray | None = None
    for group in _batches(plan.tiles, max(1, config.batch)):
        stack = np.stack(
            [
                src[
                    t.y.start * in_per_lr : (t.y.start + t.y.size) * in_per_lr,
                    t.x.start * in_per_lr : (t.x.start + t.x.size) * in_per_lr,
                ]
                for t in group
            ]
        )
        res = run_batch(stack)
        if res.shape[0] != len(group):
            raise RuntimeError(f"backend returned {res.shape[0]} tiles for {len(group)}")
        if out is None:
            out = np.empty((lr_h * out_per_lr, lr_w * out_per_lr, res.shape[3]), dtype=res.dtype)
        for t, r in zip(group, res, strict=True):
            # Kept region, clipped to the unpadded image.
            y0, y1 = t.y.keep0, min(t.y.keep1, lr_h)
            x0, x1 = t.x.keep0, min(t.x.keep1, lr_w)
            if y1 <= y0 or x1 <= x0:
                continue
            out[y0 * out_per_lr : y1 * out_per_lr, x0 * out_per_lr : x1 * out_per_lr] = r[
                (y0 - t.y.start) * out_per_lr : (y1 - t.y.start) * out_per_lr,
                (x0 - t.x.start) * out_per_lr : (x1 - t.x.start) * out_per_lr,
            ]
        if on_tile is not None:
            on_tile(len(group))
    assert out is not None
    return out
