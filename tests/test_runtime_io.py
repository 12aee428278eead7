"""Image I/O for the runtime (modes, alpha, bit depth, EXIF, atomic writes) and LR metadata."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from irn_trt.runtime.atomic import json_text, write_json_atomic
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.image_io import (
    ImageData,
    probe_image,
    read_image,
    resize_alpha,
    to_pil,
    write_image,
)
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
    image = ImageData(np.asarray(bird))
    write_image(out, image)
    assert [p.name for p in out.parent.iterdir()] == ["o.png"]  # no temp file left
    assert out.stat().st_mode & 0o044  # not the 0600 of a temp file
    with pytest.raises(IRNError, match="unknown output image format"):
        write_image(tmp_path / "o.xyz", image)


def test_reports_are_strict_json(tmp_path: Path) -> None:
    doc = {"psnr": float("inf"), "rows": [1.5, float("nan"), (float("-inf"), 2)], "n": 3}
    out = tmp_path / "r.json"
    write_json_atomic(out, doc)
    text = out.read_text()
    assert text == json_text(doc) and text.endswith("\n")
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"psnr": None, "rows": [1.5, None, [None, 2]], "n": 3}
    assert doc["psnr"] == float("inf")  # the caller's data is left as it was


def test_icc_profile_travels_through_every_format(tmp_path: Path, bird: Image.Image) -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    bird.save(tmp_path / "in.png", icc_profile=icc)
    img = read_image(tmp_path / "in.png")
    assert img.icc_profile == icc
    for suffix in (".png", ".jpg", ".webp", ".tiff"):
        write_image(tmp_path / f"out{suffix}", img)
        assert read_image(tmp_path / f"out{suffix}").icc_profile == icc


def test_cmyk_becomes_srgb_with_a_note(tmp_path: Path, bird: Image.Image) -> None:
    bird.convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    img = read_image(tmp_path / "c.jpg")
    assert img.kind == "rgb" and img.rgb.shape == (45, 61, 3)
    assert any("CMYK input converted to RGB without colour management" in n for n in img.notes)
    # PIL's plain CMYK -> RGB round trip is close to the source colours.
    assert np.abs(img.rgb.astype(int) - np.asarray(bird, dtype=int)).mean() < 8


def test_probe_reads_size_and_metadata_without_decoding(tmp_path: Path, bird: Image.Image) -> None:
    manifest = _manifest_stub(tmp_path)
    meta = LRMetadata.for_model(manifest, (61, 45), "rgb", alpha=False)
    write_image(
        tmp_path / "lr.png", ImageData(np.asarray(bird.resize((16, 12))), text=meta.to_text())
    )
    header = probe_image(tmp_path / "lr.png")
    assert header.size == (16, 12) and LRMetadata.from_text(header.text) == meta
    exif = Image.Exif()
    exif[0x0112] = 6
    bird.save(tmp_path / "r.jpg", exif=exif)
    assert probe_image(tmp_path / "r.jpg").size == (45, 61)  # as read_image will orient it
    with pytest.raises(IRNError, match="not an image"):
        (tmp_path / "t.png").write_text("text")
        probe_image(tmp_path / "t.png")


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((0, 5, 3), np.uint8), "empty image"),
        (np.zeros((4, 0), np.uint8), "empty image"),
        (np.zeros((4, 4, 5), np.uint8), "HxW, HxWx2, HxWx3 or HxWx4"),
        (np.zeros((4, 4, 3), np.float32), "uint8"),
    ],
)
def test_image_data_refuses_bad_arrays(array: np.ndarray, match: str) -> None:
    with pytest.raises(IRNError, match=match):
        ImageData.from_array(array)


def test_image_data_array_round_trip() -> None:
    rng = np.random.default_rng(1)
    for shape in ((5, 7), (5, 7, 3), (5, 7, 4)):
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(ImageData.from_array(arr).to_array(), arr)


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
    write_image(
        tmp_path / "lr.png", ImageData(np.asarray(bird.resize((16, 12))), text=meta.to_text())
    )
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


def test_quality_of_any_size() -> None:
    from irn_trt.runtime.metrics import psnr, rgb_to_y, y_psnr_ssim, y_quality

    rng = np.random.default_rng(3)
    for h, w, border in ((8, 30, 0), (19, 19, 4), (1, 1, 0), (40, 40, 4)):
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
        p, s = y_quality(a, b, border)
        if min(h, w) - 2 * border < 11:
            assert s is None
            t = slice(border, h - border or None), slice(border, w - border or None)
            assert p == psnr(rgb_to_y(a[t]), rgb_to_y(b[t]))
        else:
            assert (p, s) == pytest.approx(y_psnr_ssim(a, b, border))
