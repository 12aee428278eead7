"""Seam-freeness with a real exported IRN on a crop of a real 4K photo (ort-cpu)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import LARGE
from irn_trt.runtime.api import Rescaler
from irn_trt.runtime.image_io import read_rgb
from irn_trt.runtime.metrics import psnr


@pytest.fixture(scope="module")
def photo_crop() -> np.ndarray:
    path = LARGE / "seeding_by_Clements_Engelhardt.jpg"
    if not path.is_file():
        pytest.fail(f"shared data missing: {path}")
    return np.ascontiguousarray(read_rgb(path)[1200:1454, 2000:2258])  # 258x254: not /4


@pytest.mark.slow
def test_tiled_equals_untiled_at_50_db(tmp_model_dir, photo_crop: np.ndarray) -> None:
    # Overlap 48 HR (12 LR) is far below the model's halo (120 LR): a stricter test than
    # the default; tile 192 HR gives 2 x 2 tiles here, with a seam in each direction.
    tiled = Rescaler.load(tmp_model_dir.path, backend="ort-cpu", precision="fp32", tile=192,
                          overlap=48)  # fmt: skip
    whole = Rescaler.load(tmp_model_dir.path, backend="ort-cpu", precision="fp32", no_tile=True)
    lr_t = tiled.downscale(photo_crop)
    assert tiled.tiles_run == 4
    lr_w = whole.downscale(photo_crop)
    assert lr_t.shape == lr_w.shape == (64, 65, 3)
    print(f"LR tiled vs untiled: {psnr(lr_t, lr_w):.2f} dB")
    assert psnr(lr_t, lr_w) >= 50.0
    hr_t = tiled.upscale(lr_w, original_size=(258, 254))
    hr_w = whole.upscale(lr_w, original_size=(258, 254))
    assert hr_t.shape == hr_w.shape == photo_crop.shape
    print(f"HR tiled vs untiled: {psnr(hr_t, hr_w):.2f} dB")
    assert psnr(hr_t, hr_w) >= 50.0
    # The tiles really are stitched from different calls: the image is not one tile.
    assert tiled.tiles_run == 8 and whole.tiles_run == 2


def test_default_tiling_follows_the_manifest_halo(tmp_model_dir) -> None:
    r = Rescaler.load(tmp_model_dir.path, backend="ort-cpu", max_memory=3 << 30)
    halo = tmp_model_dir.manifest.halo
    assert r.overlap_lr == halo  # random weights: no effective halo recorded
    assert r.tile_lr is None  # CPU: whole images, or tiles sized by the memory budget
    # A 5312x2988 photo takes a bounded number of tiles within 3 GiB.
    n = r.count_tiles(2988, 5312)
    assert 1 < n < 100
    with pytest.raises(Exception, match="multiple of the scale"):
        Rescaler.load(tmp_model_dir.path, backend="ort-cpu", tile=1001)


def test_api_arrays_gray_rgba_and_original_size(tmp_model_dir, photo_crop: np.ndarray) -> None:
    r = Rescaler.load(tmp_model_dir.path, backend="ort-cpu", no_tile=True)
    small = photo_crop[:30, :41]
    lr = r.downscale(small)
    assert lr.shape == (8, 11, 3) and lr.dtype == np.uint8
    assert r.upscale(lr, original_size=(41, 30)).shape == (30, 41, 3)
    gray = r.downscale(small[:, :, 1])
    assert gray.shape == (8, 11)
    rgba = np.dstack([small, np.full(small.shape[:2], 200, np.uint8)])
    out = r.downscale(rgba)
    assert out.shape == (8, 11, 4) and abs(int(out[..., 3].mean()) - 200) <= 1
    with pytest.raises(Exception, match="does not match an LR"):
        r.upscale(lr, original_size=(100, 30))
    with pytest.raises(Exception, match="uint8"):
        r.downscale(small.astype(np.float32))


def test_api_image_data_carries_metadata_and_refuses_empty(
    tmp_model_dir, photo_crop: np.ndarray
) -> None:
    import dataclasses

    from irn_trt.runtime.errors import IRNError
    from irn_trt.runtime.image_io import ImageData
    from irn_trt.runtime.pngmeta import LRMetadata

    r = Rescaler.load(tmp_model_dir.path, backend="ort-cpu", no_tile=True)
    img = ImageData(photo_crop[:30, :41].copy(), icc_profile=b"icc", text={"Software": "cam"})
    lr = r.downscale(img)
    meta = LRMetadata.from_text(lr.text)
    assert meta is not None and meta.original_size == (41, 30) and meta.model == "irn_x4"
    assert lr.size == (11, 8) and lr.icc_profile == b"icc" and lr.text["Software"] == "cam"
    hr = r.upscale(lr)
    assert hr.size == (41, 30) and hr.notes == [] and hr.icc_profile == b"icc"
    np.testing.assert_array_equal(hr.rgb, r.upscale(lr.rgb, original_size=(41, 30)))
    other = {**lr.text, "irn-trt:checkpoint-sha256": "0" * 64}
    with pytest.raises(IRNError, match="LR downscaled by irn_x4"):
        r.upscale(dataclasses.replace(lr, text=other))
    assert "not super-resolution" in r.upscale(dataclasses.replace(lr, text={})).notes[0]
    for empty in (np.zeros((0, 0, 3), np.uint8), np.zeros((5, 0), np.uint8)):
        with pytest.raises(IRNError, match="empty image"):
            r.downscale(empty)
