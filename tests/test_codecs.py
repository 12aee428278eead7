"""LR codecs (issue 15, item 1): ``--lr-format``, the metadata in every format, the JPEG
quality estimate, sizes in the JSON, and each bad input as one line. Real images, the
real exported x4 (random weights) in ONNX Runtime."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import centre_crop
from irn_trt.runtime.batch import Source, plan_batch
from irn_trt.runtime.cli import main
from irn_trt.runtime.codecs import (
    LRFormat,
    describe_codec,
    jpeg_quality,
    jxl_available,
    metadata_xmp,
    parse_lr_format,
    text_from_xmp,
)
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.image_io import ImageData, probe_image, read_image, read_rgb, write_image
from irn_trt.runtime.pngmeta import LRMetadata
from PIL import Image, ImageCms

FORMATS = ["png", "webp-lossless", "jpeg:80", "webp:80"] + (
    ["jxl-lossless"] if jxl_available() else []
)
LOSSLESS = {"png", "webp-lossless", "jxl-lossless"}


@pytest.fixture(scope="module")
def bird(set5_dir: Path) -> np.ndarray:
    return centre_crop(read_rgb(set5_dir / "bird.png"), 60, 76)


@pytest.fixture(scope="module")
def bird_png(tmp_path_factory, bird: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("bird") / "bird.png"
    Image.fromarray(bird).save(path)
    return path


def _jpeg(rgb: np.ndarray, **kwargs) -> Image.Image:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", **kwargs)
    return Image.open(io.BytesIO(buf.getvalue()))


def _run(capsys, model, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--model-dir", str(model.path), "--backend", "ort-cpu", "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


# --- formats and the quality estimate -------------------------------------------------------


def test_parse_lr_format() -> None:
    assert parse_lr_format("png") == LRFormat("png")
    assert parse_lr_format("JPEG:75") == LRFormat("jpeg", 75)
    assert parse_lr_format("webp:1").spec == "webp:1"
    assert parse_lr_format("webp-lossless").extension == ".webp"
    assert parse_lr_format("jpeg:100").accepts_suffix(".JPEG")
    for bad, words in [
        ("jpeg:0", "1..100"),
        ("jpeg:101", "1..100"),
        ("webp:7.5", "1..100"),
        ("jpeg", "give a quality"),
        ("gif", "is not one of"),
    ]:
        with pytest.raises(IRNError, match=words):
            parse_lr_format(bad)


@pytest.mark.parametrize("quality", [50, 75, 90])
@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_quality_exact_for_pillow_files(
    bird: np.ndarray, quality: int, progressive: bool
) -> None:
    im = _jpeg(bird, quality=quality, progressive=progressive)
    assert jpeg_quality(im) == quality
    codec = describe_codec(im)
    assert codec == {
        "format": "jpeg",
        "lossless": False,
        "quality": quality,
        "quality_exact": True,
        "progressive": progressive,
    }


def test_jpeg_quality_of_paths_grey_and_other_encoders(tmp_path: Path, bird: np.ndarray) -> None:
    grey = tmp_path / "grey.jpg"
    Image.fromarray(bird).convert("L").save(grey, quality=33)
    assert jpeg_quality(grey) == 33  # one table only
    png = tmp_path / "x.png"
    Image.fromarray(bird).save(png)
    assert jpeg_quality(png) is None
    with pytest.raises(IRNError, match="no such file"):
        jpeg_quality(tmp_path / "missing.jpg")
    # Another encoder's tables (the IJG ones 7 % coarser): the nearest quality, not exact.
    ref = _jpeg(bird, quality=80).quantization
    tables = [[min(255, round(v * 1.07)) for v in ref[i]] for i in (0, 1)]
    im = _jpeg(bird, qtables=tables)
    codec = describe_codec(im)
    assert codec["quality_exact"] is False and 76 <= codec["quality"] <= 80


# --- the metadata in every format -----------------------------------------------------------


def _lr_image(bird: np.ndarray, alpha: bool = False) -> ImageData:
    meta = LRMetadata("irn_x4", "ab" * 32, 4, (301, 238), "palette", alpha, 3.5)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    text = {"Comment": "from the source <&>", **meta.to_text()}
    a = np.linspace(0, 255, bird.shape[0] * bird.shape[1]).astype(np.uint8) if alpha else None
    return ImageData(bird, a.reshape(bird.shape[:2]) if alpha else None, "rgb", icc, text)


@pytest.mark.parametrize("spec", FORMATS)
def test_metadata_travels_with_every_format(tmp_path: Path, bird: np.ndarray, spec: str) -> None:
    fmt = parse_lr_format(spec)
    lr = _lr_image(bird, alpha=fmt.holds_alpha)
    path = write_image(tmp_path / f"x_lr{fmt.extension}", lr, fmt)
    # planning reads it without decoding (JPEG XL adds the ICC profile's key)
    assert probe_image(path).text.items() >= lr.text.items()
    back = read_image(path)
    assert back.text.items() >= lr.text.items()
    assert back.text.keys() == lr.text.keys() or fmt.name == "jxl-lossless"
    assert LRMetadata.from_text(back.text) == LRMetadata.from_text(lr.text)
    if fmt.name != "jxl-lossless":  # JPEG XL: the plugin has no ICC slot; kept in the text
        assert back.icc_profile == lr.icc_profile
    assert back.lr_codec is not None and back.lr_codec["format"] == fmt.pil_format.lower()
    if spec in LOSSLESS:
        assert np.array_equal(back.rgb, lr.rgb)
        assert np.array_equal(back.alpha, lr.alpha)
    else:
        assert back.lr_codec["lossless"] is False
        assert not np.array_equal(back.rgb, lr.rgb)
        assert float(np.abs(back.rgb.astype(int) - lr.rgb).mean()) < 12
    if fmt.name == "jpeg":
        assert back.lr_codec["quality"] == 80 and back.alpha is None


def test_refusals_of_the_writer(tmp_path: Path, bird: np.ndarray) -> None:
    with pytest.raises(IRNError, match="JPEG cannot hold the alpha channel"):
        write_image(tmp_path / "a.jpg", _lr_image(bird, alpha=True), LRFormat("jpeg", 80))
    grey = ImageData(bird, kind="gray")
    with pytest.raises(IRNError, match="WebP has no greyscale mode"):
        write_image(tmp_path / "g.webp", grey, LRFormat("webp", 80))
    with pytest.raises(IRNError, match=r"must be named \*\.webp"):
        write_image(tmp_path / "x.png", grey, LRFormat("webp-lossless"))
    assert not list(tmp_path.iterdir())


def test_foreign_and_damaged_xmp() -> None:
    camera = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    assert text_from_xmp(camera) == {}
    packet = metadata_xmp({"irn-trt:model": "m"})
    assert text_from_xmp(packet) == {"irn-trt:model": "m"}
    broken = packet.replace(b'{"irn-trt:model":"m"}', b"{not json")
    with pytest.raises(IRNError, match="damaged irn-trt metadata"):
        LRMetadata.from_text(text_from_xmp(broken))


def test_plan_knows_the_lr_extension(tmp_path: Path) -> None:
    srcs = [
        Source(tmp_path / "pic.png", "roundtrip"),
        Source(tmp_path / "pic.jpg", "down"),
        Source(tmp_path / "x_lr.jpg", "up"),
    ]
    plan = plan_batch(srcs, tmp_path / "out", lr_extension=".jpg")
    assert plan.conflicts == []
    got = [sorted(p.name for p in job.outputs.values()) for job in plan.jobs]
    assert got == [["pic.png_lr.jpg", "pic_roundtrip.png"], ["pic.jpg_lr.jpg"], ["x_hr.png"]]
    # An LR that would replace a JPEG input of the batch is refused like any other.
    srcs = [Source(tmp_path / "a.png", "down"), Source(tmp_path / "a_lr.jpg", "up")]
    plan = plan_batch(srcs, tmp_path, lr_extension=".jpg")
    assert len(plan.conflicts) == 1 and "is an input of this batch" in plan.conflicts[0]


# --- irn-trt-run ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", FORMATS)
def test_down_then_up_in_each_format(
    capsys, tmp_path: Path, tmp_model_dir, bird_png: Path, spec: str
) -> None:
    fmt = parse_lr_format(spec)
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, tmp_model_dir, str(bird_png), "-o", str(out),
                             "--lr-format", spec, "--json", "-")  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    lr_path = out / f"bird_lr{fmt.extension}"
    (item,) = summary["items"]
    assert summary["lr_format"] == spec and item["outputs"] == [str(lr_path)]
    assert item["lr_bytes"] == lr_path.stat().st_size
    assert item["lr_bits_per_hr_pixel"] == pytest.approx(8 * item["lr_bytes"] / (76 * 60), 1e-5)
    # auto mode recognises the LR by its metadata and restores the original size
    code, stdout, err = _run(capsys, tmp_model_dir, str(lr_path), "-o", str(out), "--json", "-")
    assert code == 0, err
    (item,) = json.loads(stdout)["items"]
    assert item["mode"] == "up" and item["lr_bytes"] == lr_path.stat().st_size
    assert item["lr_codec"]["format"] == fmt.pil_format.lower()
    with Image.open(out / "bird_hr.png") as im:
        assert im.size == (76, 60)
    lossy_lines = [ln for ln in err.splitlines() if "lossy-compressed" in ln]
    if spec in LOSSLESS:
        assert lossy_lines == [] and item["warnings"] == []
    else:
        assert len(lossy_lines) == 1 and "no compression-restore graph" in lossy_lines[0]
        if fmt.name == "jpeg":
            assert "JPEG quality ~80" in lossy_lines[0]
            assert item["lr_codec"]["quality"] == 80 and item["lr_codec"]["quality_exact"]


def test_roundtrip_ups_what_was_stored(
    capsys, tmp_path: Path, tmp_model_dir, bird_png: Path
) -> None:
    psnr = {}
    for spec in ("png", "webp-lossless", "jpeg:30"):
        out = tmp_path / spec.replace(":", "")
        args = ("-o", str(out), "--mode", "roundtrip", "--lr-format", spec, "--json", "-")
        code, stdout, err = _run(capsys, tmp_model_dir, str(bird_png), *args)
        assert code == 0, err
        (item,) = json.loads(stdout)["items"]
        psnr[spec] = item["psnr"]
    assert psnr["webp-lossless"] == psnr["png"]  # the same LR pixels
    assert psnr["jpeg:30"] < psnr["png"]
    # the round trip upscaled the decoded JPEG file, exactly as a later `up` of it does
    code, _, err = _run(capsys, tmp_model_dir, str(tmp_path / "jpeg30" / "bird_lr.jpg"), "-o",
                        str(tmp_path / "up"))  # fmt: skip
    assert code == 0, err
    with (
        Image.open(tmp_path / "jpeg30" / "bird_roundtrip.png") as a,
        Image.open(tmp_path / "up" / "bird_hr.png") as b,
    ):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_jpeg_lr_without_metadata_is_a_stripped_lr(
    capsys, tmp_path: Path, tmp_model_dir, bird_png: Path
) -> None:
    out = tmp_path / "out"
    code, _, err = _run(capsys, tmp_model_dir, str(bird_png), "-o", str(out), "--lr-format",
                        "jpeg:90")  # fmt: skip
    assert code == 0, err
    src = tmp_path / "in"
    src.mkdir()
    with Image.open(out / "bird_lr.jpg") as im:
        im.save(src / "bird_lr.jpg", quality=90)  # re-saved by another tool: XMP gone
    code, _, err = _run(capsys, tmp_model_dir, str(src / "bird_lr.jpg"), "-o", str(tmp_path / "u"))
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err
    assert "named like an irn-trt output (_lr) but carries no irn-trt metadata" in errors[0]
    code, _, err = _run(capsys, tmp_model_dir, str(src / "bird_lr.jpg"), "-o",
                        str(tmp_path / "u"), "--mode", "up")  # fmt: skip
    assert code == 0, err
    assert "no irn-trt metadata" in err and "JPEG quality ~90" in err


def test_progressive_and_cmyk_jpegs(
    capsys, tmp_path: Path, tmp_model_dir, bird_png: Path, bird: np.ndarray
) -> None:
    out = tmp_path / "out"
    code, _, err = _run(capsys, tmp_model_dir, str(bird_png), "-o", str(out), "--lr-format",
                        "jpeg:70")  # fmt: skip
    assert code == 0, err
    src = tmp_path / "in"
    src.mkdir()
    with Image.open(out / "bird_lr.jpg") as im:  # the same LR, re-coded progressive
        im.save(src / "prog_lr.jpg", quality=70, progressive=True, xmp=im.info["xmp"])
    Image.fromarray(bird).convert("CMYK").save(src / "cmyk.jpg", quality=85)
    code, stdout, err = _run(capsys, tmp_model_dir, str(src / "prog_lr.jpg"), str(src / "cmyk.jpg"),
                             "-o", str(tmp_path / "o2"), "--json", "-")  # fmt: skip
    assert code == 0, err
    items = {Path(i["input"]).name: i for i in json.loads(stdout)["items"]}
    prog = items["prog_lr.jpg"]
    assert prog["mode"] == "up" and prog["lr_codec"]["progressive"] is True
    assert prog["lr_codec"]["quality"] == 70 and prog["lr_codec"]["quality_exact"]
    cmyk = items["cmyk.jpg"]
    assert cmyk["mode"] == "down" and any("CMYK input converted" in w for w in cmyk["warnings"])
    assert (tmp_path / "o2" / "prog_hr.png").is_file() and (
        tmp_path / "o2" / "cmyk_lr.png"
    ).is_file()


def test_alpha_kept_by_webp_refused_by_jpeg(
    capsys, tmp_path: Path, tmp_model_dir, bird: np.ndarray, bird_png: Path
) -> None:
    rgba = np.dstack([bird, np.full(bird.shape[:2], 90, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    out = tmp_path / "out"
    code, _, err = _run(capsys, tmp_model_dir, str(tmp_path / "cut.png"), str(bird_png), "-o",
                        str(out), "--lr-format", "jpeg:80")  # fmt: skip
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err
    assert "cut.png: has an alpha channel, which a jpeg:80 LR cannot hold" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["bird_lr.jpg"]  # the batch went on
    code, _, err = _run(capsys, tmp_model_dir, str(tmp_path / "cut.png"), "-o", str(out),
                        "--lr-format", "webp-lossless")  # fmt: skip
    assert code == 0, err
    code, _, err = _run(capsys, tmp_model_dir, str(out / "cut_lr.webp"), "-o", str(out))
    assert code == 0, err
    with Image.open(out / "cut_hr.png") as im:
        assert im.mode == "RGBA" and im.size == (76, 60)
        assert int(np.asarray(im)[:, :, 3].min()) == int(np.asarray(im)[:, :, 3].max()) == 90


@pytest.mark.parametrize("bad", ["jpeg:0", "jpeg:101", "gif"])
def test_bad_lr_format_is_a_usage_error(capsys, tmp_model_dir, bird_png: Path, bad: str) -> None:
    with pytest.raises(SystemExit) as exc:
        _run(capsys, tmp_model_dir, str(bird_png), "--lr-format", bad)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.splitlines()[-1].startswith("irn-trt-run: error: argument --lr-format:")


def test_named_output_must_match_the_format(
    capsys, tmp_path: Path, tmp_model_dir, bird_png: Path
) -> None:
    code, _, err = _run(capsys, tmp_model_dir, str(bird_png), "-o", str(tmp_path / "x.jpg"))
    assert code == 2 and "must be named *.png (or pass --lr-format" in err
    code, _, err = _run(capsys, tmp_model_dir, str(bird_png), "-o", str(tmp_path / "x.jpeg"),
                        "--lr-format", "jpeg:60")  # fmt: skip
    assert code == 0, err
    assert jpeg_quality(tmp_path / "x.jpeg") == 60


def test_formats_a_model_cannot_store_are_refused_up_front(tmp_model_dir) -> None:
    from dataclasses import replace
    from types import SimpleNamespace

    from irn_trt.runtime.cli import _check_model_lr_format

    m = tmp_model_dir.manifest
    irn_a = SimpleNamespace(manifest=replace(m, lr_layout="rgb+alpha-code"))
    colour = SimpleNamespace(manifest=replace(m, lr_layout="grey"))
    with pytest.raises(IRNError, match="alpha code in a PNG chunk"):
        _check_model_lr_format(irn_a, LRFormat("webp-lossless"))
    with pytest.raises(IRNError, match="WebP cannot store"):
        _check_model_lr_format(colour, LRFormat("webp", 90))
    irn_m = SimpleNamespace(manifest=SimpleNamespace(**{
        "model": "irn_m_x4", "lr_channels": 3, "task": "rescale", "side_code": lambda d: object()
    }))  # fmt: skip
    with pytest.raises(IRNError, match="latent code in a PNG chunk"):
        _check_model_lr_format(irn_m, LRFormat("jpeg", 90))
    _check_model_lr_format(irn_a, LRFormat("png"))
    _check_model_lr_format(colour, LRFormat("jpeg", 90))  # a greyscale JPEG is fine
