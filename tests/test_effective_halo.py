"""The effective halo of the shipped irn_x4: measured at export, seam-free at the default overlap.

One real export of ``weights/irn_x4`` (FP32 graphs, the effective halo probed on
the first Set5 image as ``irn-export`` does), then tiled vs untiled on a crop of
a real 4K photo through ONNX Runtime, with tiles small enough for many seams.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import LARGE
from irn_trt.runtime.api import Rescaler
from irn_trt.runtime.image_io import read_rgb
from irn_trt.runtime.manifest import ModelManifest
from irn_trt.runtime.metrics import psnr
from irn_trt.runtime.tiling import plan_tiles


@pytest.fixture(scope="module")
def shipped_x4(
    tmp_path_factory: pytest.TempPathFactory, set5_dir: Path
) -> tuple[ModelManifest, Path]:
    from irn_trt.export.api import ExportOptions, export_model
    from irn_trt.train.checkpoint import checkpoint_sha256, default_checkpoint, load_checkpoint

    ckpt = default_checkpoint("irn_x4")
    model, _ = load_checkpoint(ckpt)
    out = tmp_path_factory.mktemp("shipped_x4") / "model"
    return export_model(
        model,
        out,
        options=ExportOptions(precisions=("fp32",)),
        checkpoint_sha256=checkpoint_sha256(ckpt),
        halo_images=[read_rgb(set5_dir / "baby.png")],
    ), out


@pytest.mark.slow
def test_export_records_an_effective_halo_far_below_the_receptive_field(shipped_x4) -> None:
    manifest, out = shipped_x4
    eh = manifest.effective_halo
    assert eh is not None and eh["measured"] is True
    assert eh["threshold_levels"] == 1e-6 and eh["margin"] >= 0
    # Measured 17/17 (+ margin 2) against a receptive field of 120 LR px.
    assert 8 <= eh["down"] <= manifest.halo // 4
    assert 8 <= eh["up"] <= manifest.halo // 4
    assert Rescaler.load(out, backend="ort-cpu").overlap_lr == max(eh["down"], eh["up"])


def _identical(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose bytes are all equal."""
    return float((a == b).all(axis=-1).mean())


@pytest.mark.slow
def test_tiled_at_the_effective_halo_matches_untiled(shipped_x4) -> None:
    manifest, out = shipped_x4
    path = LARGE / "Bridge_by_Sander_Klootwijk.jpg"
    if not path.is_file():
        pytest.fail(f"shared data missing: {path}")
    crop = np.ascontiguousarray(read_rgb(path)[1000:1384, 2000:2384])  # 384x384, varied detail
    ov = manifest.overlap_halo * 4
    tile = 2 * ov + 64  # HR: a 16 LR px kept core, so 3 x 3 tiles and 4 seams
    tiled = Rescaler.load(out, backend="ort-cpu", tile=tile, threads=1)
    whole = Rescaler.load(out, backend="ort-cpu", no_tile=True, threads=1)
    assert len(plan_tiles(96, 96, tile // 4, ov // 4)) >= 9
    lr_w = whole.downscale(crop)
    lr_t = tiled.downscale(crop)
    hr_w = whole.upscale(lr_w)
    hr_t = tiled.upscale(lr_w)
    for name, t, w in (("down", lr_t, lr_w), ("up", hr_t, hr_w)):
        same = _identical(t, w)
        print(f"{name}: {100 * same:.4f} % identical pixels, {psnr(t, w):.1f} dB")
        assert same >= 0.9999, name
        assert psnr(t, w) >= 60.0, name
