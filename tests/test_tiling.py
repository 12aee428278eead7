"""The tiling engine: plan exactness on odd sizes and seam-free stitching.

The stitching is checked against a real local operator with a known receptive
field (a box blur followed by s x s mean pooling, in NumPy): with an overlap of
at least its radius, tiled and whole-image results must be bit-identical.
"""

from __future__ import annotations

import numpy as np
import pytest
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.tiling import TileConfig, pad_to_multiple, plan_axis, plan_tiles, run_tiled


@pytest.mark.parametrize("length", [1, 5, 63, 64, 65, 100, 127, 255, 256, 257, 1000, 1331])
@pytest.mark.parametrize(("tile", "overlap"), [(64, 0), (64, 8), (64, 31), (100, 20), (33, 16)])
def test_plan_axis_partitions_with_fixed_tiles(length: int, tile: int, overlap: int) -> None:
    spans = plan_axis(length, tile, overlap)
    # Kept parts partition [0, length) in order.
    assert spans[0].keep0 == 0 and spans[-1].keep1 == length
    for a, b in zip(spans, spans[1:], strict=False):
        assert a.keep1 == b.keep0
        assert a.start < b.start
    for sp in spans:
        assert sp.keep0 < sp.keep1
        # One fixed tile size (or the whole axis when it is shorter), always inside the image.
        assert sp.size == min(tile, length)
        assert sp.start >= 0 and sp.start + sp.size <= length
        # Every kept pixel has `overlap` context inside the tile, except at the image edges.
        assert sp.keep0 == 0 or sp.keep0 - sp.start >= overlap
        assert sp.keep1 == length or sp.start + sp.size - sp.keep1 >= overlap
    if length > tile:
        assert spans[-1].start == length - tile  # last tile shifted back, not shrunk


def test_plan_tiles_counts_and_shapes() -> None:
    plan = plan_tiles(747, 1328, 484, 121)
    assert plan.tile_hw == (484, 484)
    assert len(plan) == len(plan_axis(747, 484, 121)) * len(plan_axis(1328, 484, 121))
    assert all((t.y.size, t.x.size) == (484, 484) for t in plan.tiles)
    whole = plan_tiles(50, 70, None, 10)
    assert len(whole) == 1 and whole.tile_hw == (50, 70)


def test_bad_tile_configs_are_one_line_errors() -> None:
    with pytest.raises(IRNError, match="twice the overlap"):
        TileConfig(tile=32, overlap=16)
    with pytest.raises(IRNError, match="overlap"):
        TileConfig(tile=32, overlap=-1)
    with pytest.raises(IRNError, match="tile must be positive"):
        TileConfig(tile=0, overlap=0)


def _box_then_pool(batch: np.ndarray, radius: int, s: int) -> np.ndarray:
    """(B, H, W, C) uint8 -> (B, H/s, W/s, C) uint8: zero-padded box blur, then s x s mean.

    Zero padding at the borders matters: like a CNN's convolutions, the result at
    the image edge differs from any interior continuation, so a tiler that put a
    tile border anywhere but at the image edge (and kept its neighbourhood) would show.
    """
    x = batch.astype(np.float64)
    k = 2 * radius + 1
    p = np.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)))
    c = np.cumsum(np.cumsum(p, axis=1), axis=2)
    c = np.pad(c, ((0, 0), (1, 0), (1, 0), (0, 0)))
    blur = (c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k]) / (k * k)
    b, h, w, ch = blur.shape
    pooled = blur.reshape(b, h // s, s, w // s, s, ch).mean(axis=(2, 4))
    return np.clip(np.rint(pooled * 3.0 - 200.0), 0, 255).astype(np.uint8)


def _upsample(batch: np.ndarray, radius: int, s: int) -> np.ndarray:
    """(B, h, w, C) -> (B, h*s, w*s, C): zero-padded box blur in LR, then nearest x s."""
    x = batch.astype(np.float64)
    k = 2 * radius + 1
    p = np.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)))
    c = np.cumsum(np.cumsum(p, axis=1), axis=2)
    c = np.pad(c, ((0, 0), (1, 0), (1, 0), (0, 0)))
    blur = (c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k]) / (k * k)
    up = blur.repeat(s, axis=1).repeat(s, axis=2)
    return np.clip(np.rint(up), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("h", "w"), [(4 * 37, 4 * 53), (4 * 64, 4 * 20), (4 * 9, 4 * 11)])
@pytest.mark.parametrize("batch", [1, 3])
def test_down_tiled_equals_whole_image(h: int, w: int, batch: int) -> None:
    s, radius_hr = 4, 9
    rng = np.random.default_rng(h * w)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    halo_lr = -(-radius_hr // s) + 1  # receptive radius in LR pixels (rounded up)
    whole = _box_then_pool(img[None], radius_hr, s)[0]
    calls = []

    def run(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape)
        return _box_then_pool(x, radius_hr, s)

    cfg = TileConfig(tile=16, overlap=halo_lr, batch=batch)
    tiled = run_tiled(img, run, s, 1, cfg)
    np.testing.assert_array_equal(tiled, whole)
    assert len({c[1:] for c in calls}) == 1  # one tile shape for every call
    assert all(c[0] <= batch for c in calls)


@pytest.mark.parametrize("pad", [False, True])
def test_up_tiled_equals_whole_image_and_small_images_pad(pad: bool) -> None:
    s, radius = 4, 3
    rng = np.random.default_rng(7)
    lr = rng.integers(0, 256, (45, 29, 3), dtype=np.uint8)
    shapes = []

    def run(x: np.ndarray) -> np.ndarray:
        shapes.append(x.shape[1:3])
        return _upsample(x, radius, s)

    cfg = TileConfig(tile=20, overlap=radius, pad_to_tile=pad)
    tiled = run_tiled(lr, run, 1, s, cfg)
    np.testing.assert_array_equal(tiled, _upsample(lr[None], radius, s)[0])
    assert set(shapes) == {(20, 20)}

    # An image smaller than the tile: padded to the tile only when the backend needs it.
    small = lr[:7, :5]
    shapes.clear()
    out = run_tiled(small, run, 1, s, cfg)
    assert out.shape == (28, 20, 3)
    assert shapes == [(20, 20)] if pad else shapes == [(7, 5)]
    # Away from the padded (bottom/right) edges the result is unchanged by the padding.
    ref = _upsample(small[None], radius, s)[0]
    np.testing.assert_array_equal(
        out[: (7 - radius) * s, : (5 - radius) * s], ref[: (7 - radius) * s, : (5 - radius) * s]
    )


def test_too_small_overlap_shows_seams() -> None:
    """The check above can fail: with overlap 0 a wide operator gives a different result."""
    s, radius_hr = 4, 9
    img = np.random.default_rng(1).integers(0, 256, (4 * 40, 4 * 40, 3), dtype=np.uint8)
    whole = _box_then_pool(img[None], radius_hr, s)[0]
    tiled = run_tiled(img, lambda x: _box_then_pool(x, radius_hr, s), s, 1, TileConfig(16, 0))
    assert not np.array_equal(tiled, whole)


def test_pad_to_multiple_edges() -> None:
    img = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    out = pad_to_multiple(img, 4, 4)
    assert out.shape == (8, 8, 3)
    np.testing.assert_array_equal(out[:5, :7], img)
    np.testing.assert_array_equal(out[7, 7], img[4, 6])  # edge replicated
    assert pad_to_multiple(out, 4, 4) is out
