"""Image I/O for the runtime (modes, alpha, bit depth, EXIF, atomic writes) and LR metadata."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.image_io import read_image, resize_alpha, to_pil, write_image
from irn_trt.runtime.manifest import load_manifest
from irn_trt.runtime.pngmeta import LRMetadata
from PIL import Image


@pytest.fixture(scope="module")
def bird(set5_dir: Path) -> Image.Image:
    with Image.open(set5_dir / "bird.png") as im:
        return im.convert("RGB").crop((0, 0, 61, 45))


def test_rgb_png_and_jpeg(tmp_path: Path, bird: Image.Image) -> None:
    bird.save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.kind == "rgb" and img.alpha is None and img.notes == []
    np.testing.assert_array_equal(img.rgb, np.asarray(bird))
    assert img.size == (61, 45)
    for suffix in (".jpg", ".webp", ".tiff", ".bmp"):
        bird.save(tmp_path / f"a{suffix}")
        other = read_image(tmp_path / f"a{suffix}")
        assert other.rgb.shape == (45, 61, 3) and other.kind == "rgb"


def test_gray_and_palette_round_trip_kind(tmp_path: Path, bird: Image.Image) -> None:
    bird.convert("L").save(tmp_path / "g.png")
    g = read_image(tmp_path / "g.png")
    assert g.kind == "gray" and g.rgb.shape == (45, 61, 3)
    assert np.array_equal(g.rgb[..., 0], g.rgb[..., 1])
    back = to_pil(g.rgb, None, g.kind)
    assert back.mode == "L"
    np.testing.assert_array_equal(np.asarray(back), np.asarray(bird.convert("L")))

    bird.convert("P").save(tmp_path / "p.png")
    p = read_image(tmp_path / "p.png")
    assert p.kind == "palette"
    assert to_pil(p.rgb, None, p.kind).mode == "P"


def test_alpha_is_split_and_resized(tmp_path: Path, bird: Image.Image) -> None:
    rgba = np.dstack([np.asarray(bird), np.tile(np.linspace(0, 255, 61, dtype=np.uint8), (45, 1))])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.alpha is not None
    np.testing.assert_array_equal(img.alpha, rgba[..., 3])
    small = resize_alpha(img.alpha, (16, 12))
    assert small.shape == (12, 16)
    assert small[:, 0].mean() < 40 and small[:, -1].mean() > 215  # the ramp survives
    # A fully opaque alpha channel is dropped (nothing to carry along).
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "b.png")
    assert read_image(tmp_path / "b.png").alpha is None


def test_16_bit_is_reduced_with_a_note(tmp_path: Path) -> None:
    arr = (np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 30).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    img = read_image(tmp_path / "d.png")
    assert any("16-bit" in n for n in img.notes)
    assert img.rgb.dtype == np.uint8
    assert img.rgb[-1, -1, 0] == round(int(arr[-1, -1]) / 257)


def test_exif_orientation_applied(tmp_path: Path, bird: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    bird.save(tmp_path / "r.jpg", exif=exif, quality=95)
    img = read_image(tmp_path / "r.jpg")
    assert img.size == (45, 61)


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"this is not an image", "not an image"), (None, "no such file")],
)
def test_bad_files_one_line(tmp_path: Path, content: bytes | None, match: str) -> None:
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(IRNError, match=match) as exc:
        read_image(path)
    assert "\n" not in str(exc.value)


def test_truncated_png(tmp_path: Path, set5_dir: Path) -> None:
    data = (set5_dir / "bird.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(IRNError, match="cannot read image"):
        read_image(tmp_path / "t.png")


def test_write_is_atomic_and_readable(tmp_path: Path, bird: Image.Image) -> None:
    out = tmp_path / "sub" / "o.png"
    write_image(out, bird)
    assert [p.name for p in out.parent.iterdir()] == ["o.png"]  # no temp file left
    assert out.stat().st_mode & 0o044  # not the 0600 of a temp file
    with pytest.raises(IRNError, match="unknown output image format"):
        write_image(tmp_path / "o.xyz", bird)


def _manifest_stub(tmp_path: Path):  # a minimal manifest for metadata checks
    import json

    from irn_trt.runtime.manifest import MANIFEST_FORMAT

    d = {
        "format": MANIFEST_FORMAT,
        "model": "irn_x4",
        "scale": 4,
        "architecture": {},
        "checkpoint_sha256": "ab" * 32,
        "io": "uint8",
        "z_policy": "zero",
        "z_channels": 45,
        "temperature": 1.0,
        "halo": 8,
        "tile_multiple": 4,
        "opset": 17,
        "versions": {},
        "graphs": [],
    }
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    return load_manifest(tmp_path)


def test_metadata_round_trip_through_png(tmp_path: Path, bird: Image.Image) -> None:
    manifest = _manifest_stub(tmp_path)
    meta = LRMetadata.for_model(manifest, (61, 45), "gray", alpha=True)
    write_image(tmp_path / "lr.png", bird.resize((16, 12)), meta.to_pnginfo())
    img = read_image(tmp_path / "lr.png")
    back = LRMetadata.from_text(img.text)
    assert back == meta
    back.check_model(manifest)
    back.check_lr_size((16, 12))
    with pytest.raises(IRNError, match="was it resized"):
        back.check_lr_size((15, 12))
    other = dataclasses.replace(manifest, checkpoint_sha256="cd" * 32)
    with pytest.raises(IRNError, match="downscaled by irn_x4"):
        back.check_model(other)
    assert LRMetadata.from_text({"Software": "x"}) is None
    with pytest.raises(IRNError, match="damaged"):
        LRMetadata.from_text({"irn-trt:model": "irn_x4"})


@pytest.mark.parametrize(
    ("h", "w", "border", "band"), [(300, 200, 4, 37), (64, 90, 0, 256), (21, 30, 4, 1)]
)
def test_banded_metrics_equal_the_papers_metrics(h: int, w: int, border: int, band: int) -> None:
    from irn_trt.runtime.metrics import y_psnr_ssim, y_psnr_ssim_banded

    rng = np.random.default_rng(h)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    p0, s0 = y_psnr_ssim(a, b, border)
    p1, s1 = y_psnr_ssim_banded(a, b, border, band=band)
    assert abs(p0 - p1) < 1e-9 and abs(s0 - s1) < 1e-12
    assert y_psnr_ssim_banded(a, a, border)[0] == float("inf")
