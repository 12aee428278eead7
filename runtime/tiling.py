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

A graph may also exchange a coarser tensor beside the image (IRN-M's side code:
one value per ``grid`` x ``grid`` LR px, ceil at the bottom/right edge). Then
tiles start, end and overlap on that grid (``TileConfig.grid``), and the last
tile along an axis ends exactly at the image's end, shorter by the part of a
cell the image does not fill, so a tile sees the same partial cells as the
whole image and the stitched code equals the untiled one. :func:`run_tiled_planes`
cuts and stitches every tensor at its own resolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

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
    "run_tiled_planes",
]


@dataclass(frozen=True)
class AxisSpan:
    """One tile along one axis, in LR pixels: read [start, start+size), keep [keep0, keep1)."""

    start: int
    size: int
    keep0: int
    keep1: int


def plan_axis(length: int, tile: int, overlap: int, grid: int = 1) -> list[AxisSpan]:
    """Tiles of fixed ``tile`` size covering ``[0, length)``; kept parts partition the axis.

    An axis no longer than the tile is one tile of the axis length (the caller
    pads first where a backend needs the exact tile shape). With ``grid`` > 1
    (``tile`` and ``overlap`` multiples of it), every start and kept boundary is on
    the grid; the last tile ends at ``length``, shorter when ``length`` is not a
    multiple of the grid.
    """
    if grid > 1:
        if tile % grid or overlap % grid:
            raise IRNError(
                f"tile {tile} and overlap {overlap} must be multiples of {grid} LR px "
                "(the side code's grid)"
            )
        cells = plan_axis(-(-length // grid), tile // grid, overlap // grid)
        return [
            AxisSpan(
                c.start * grid,
                min(c.size * grid, length - c.start * grid),
                c.keep0 * grid,
                min(c.keep1 * grid, length),
            )
            for c in cells
        ]
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


def plan_tiles(
    lr_h: int, lr_w: int, tile: TileSize | None, overlap: int, grid: int = 1
) -> TilePlan:
    """Plan an ``lr_h`` x ``lr_w`` (LR pixels) image; ``tile=None`` means one whole-image tile.

    ``grid``: see :func:`plan_axis`.
    """
    if tile is None:
        ys, xs = [AxisSpan(0, lr_h, 0, lr_h)], [AxisSpan(0, lr_w, 0, lr_w)]
    else:
        tile_h, tile_w = _hw(tile)
        ys = plan_axis(lr_h, tile_h, overlap, grid)
        xs = plan_axis(lr_w, tile_w, overlap, grid)
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
    grid: int = 1  # LR px per side-code value: tiles and the overlap align to it

    def __post_init__(self) -> None:
        if self.overlap < 0:
            raise IRNError(f"overlap must be >= 0, got {self.overlap}")
        if self.grid < 1:
            raise IRNError(f"grid must be positive, got {self.grid}")
        if self.overlap % self.grid:
            raise IRNError(f"overlap {self.overlap} is not a multiple of {self.grid} LR px")
        if self.tile is None:
            return
        for edge in _hw(self.tile):
            if edge % self.grid:
                raise IRNError(f"tile {self.tile} is not a multiple of {self.grid} LR px")
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


#: Pixels of a tensor per LR pixel along each axis: an int (the image, the HR) or a
#: fraction 1/g (a side code with one value per g x g LR px, ceil at the image's end).
Ratio = int | Fraction


def _extent(lr: int, ratio: Ratio) -> int:
    """Pixels of a tensor with ``ratio`` px per LR px covering ``lr`` LR px (ceil)."""
    return math.ceil(lr * ratio)


def _exact(lr: int, ratio: Ratio) -> int:
    """``lr * ratio`` where it must be whole (a tile start on the grid)."""
    value = lr * ratio
    if value != int(value):
        raise ValueError(f"{lr} LR px is not on the grid of a 1/{1 / ratio} tensor")
    return int(value)


def _batches(tiles: tuple[Tile, ...], batch: int) -> Iterator[tuple[Tile, ...]]:
    """Consecutive tiles of one shape, at most ``batch`` at a time (a short last tile
    along an axis, see :func:`plan_axis`, goes in its own batch)."""
    group: list[Tile] = []
    for t in tiles:
        if group and (
            len(group) == batch or (t.y.size, t.x.size) != (group[0].y.size, group[0].x.size)
        ):
            yield tuple(group)
            group = []
        group.append(t)
    if group:
        yield tuple(group)


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
    (out,) = run_tiled_planes(
        [(image, in_per_lr)], lambda xs: [run_batch(xs[0])], [out_per_lr], config, on_tile
    )
    return out


def run_tiled_planes(
    inputs: Sequence[tuple[np.ndarray, Ratio]],
    run_batch: Callable[[list[np.ndarray]], Sequence[np.ndarray]],
    out_ratios: Sequence[Ratio],
    config: TileConfig,
    on_tile: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """:func:`run_tiled` for graphs with several HWC inputs and outputs on different grids.

    ``inputs``: (array, px per LR px); the first is the image, whose H and W must
    be multiples of its (integer) ratio and set the LR size; the others cover it
    at their ratio (a side code: ceil(LR / g) values). ``run_batch`` gets one
    (B, h, w, C) stack per input and returns one per output, at ``out_ratios``.
    Every tile reads and keeps each tensor at its own resolution: tile starts and
    kept boundaries lie on ``config.grid``, where a 1/g tensor has whole values.
    """
    image, in_ratio = inputs[0]
    h, w = image.shape[:2]
    if h % in_ratio or w % in_ratio:
        raise ValueError(f"image {w}x{h} is not a multiple of {in_ratio}")
    lr_h, lr_w = int(h // in_ratio), int(w // in_ratio)
    for arr, r in inputs[1:]:
        if arr.shape[:2] != (_extent(lr_h, r), _extent(lr_w, r)):
            raise ValueError(f"input of shape {arr.shape} does not cover {lr_w}x{lr_h} LR px")
    planes = [arr for arr, _ in inputs]
    ratios = [r for _, r in inputs]
    src_h, src_w = lr_h, lr_w
    if config.pad_to_tile and config.tile is not None:
        tile_h, tile_w = _hw(config.tile)
        g = config.grid
        # Small images are padded to the tile so the backend always sees the one tile
        # shape; on a grid, to whole cells too (a short last tile would be another shape).
        src_h = max(tile_h, -(-lr_h // g) * g) if lr_h < tile_h or lr_h % g else lr_h
        src_w = max(tile_w, -(-lr_w // g) * g) if lr_w < tile_w or lr_w % g else lr_w
        if (src_h, src_w) != (lr_h, lr_w):
            planes = [
                np.pad(
                    p,
                    (
                        (0, _extent(src_h, r) - p.shape[0]),
                        (0, _extent(src_w, r) - p.shape[1]),
                        (0, 0),
                    ),
                    mode="edge",
                )
                for p, r in zip(planes, ratios, strict=True)
            ]
    plan = plan_tiles(src_h, src_w, config.tile, config.overlap, config.grid)
    outs: list[np.ndarray] | None = None
    for group in _batches(plan.tiles, max(1, config.batch)):
        stacks = [
            np.stack(
                [
                    p[
                        _exact(t.y.start, r) : _extent(t.y.start + t.y.size, r),
                        _exact(t.x.start, r) : _extent(t.x.start + t.x.size, r),
                    ]
                    for t in group
                ]
            )
            for p, r in zip(planes, ratios, strict=True)
        ]
        results = list(run_batch(stacks))
        if len(results) != len(out_ratios):
            raise RuntimeError(
                f"backend returned {len(results)} outputs, expected {len(out_ratios)}"
            )
        for res in results:
            if res.shape[0] != len(group):
                raise RuntimeError(f"backend returned {res.shape[0]} tiles for {len(group)}")
        if outs is None:
            outs = [
                np.empty((_extent(lr_h, r), _extent(lr_w, r), res.shape[3]), dtype=res.dtype)
                for res, r in zip(results, out_ratios, strict=True)
            ]
        for i, t in enumerate(group):
            # Kept region, clipped to the unpadded image.
            y0, y1 = t.y.keep0, min(t.y.keep1, lr_h)
            x0, x1 = t.x.keep0, min(t.x.keep1, lr_w)
            if y1 <= y0 or x1 <= x0:
                continue
            for out, res, r in zip(outs, results, out_ratios, strict=True):
                oy0, ox0 = _exact(y0, r), _exact(x0, r)
                oy1, ox1 = _extent(y1, r), _extent(x1, r)
                ty, tx = _exact(t.y.start, r), _exact(t.x.start, r)
                out[oy0:oy1, ox0:ox1] = res[i, oy0 - ty : oy1 - ty, ox0 - tx : ox1 - tx]
        if on_tile is not None:
            on_tile(len(group))
    assert outs is not None
    return outs
