"""``irn-rd`` (issue 15, item 4): the rate-distortion table on two small real crops with the
real exported x4 (random weights) in ONNX Runtime: every row kind, JSON, a valid SVG."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import centre_crop
from irn_trt.runtime.api import Rescaler
from irn_trt.runtime.codecs import jxl_available
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.image_io import ImageData, read_rgb
from irn_trt.runtime.metrics import psnr, shave
from irn_trt.runtime.rd import RDRow, jpeg_bytes_at_psnr, lossless_vs_jpeg, main, measure
from PIL import Image

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def crops(tmp_path_factory, set5_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("rd_crops")
    for name, (h, w) in (("baby.png", (64, 72)), ("butterfly.png", (50, 66))):
        Image.fromarray(centre_crop(read_rgb(set5_dir / name), h, w)).save(folder / name)
    return folder


def test_irn_rd_json_table_and_svg(capsys, tmp_path: Path, tmp_model_dir, crops: Path) -> None:
    js, svg = tmp_path / "rd.json", tmp_path / "rd.svg"
    code = main([str(crops), "--model-dir", str(tmp_model_dir.path), "--backend", "ort-cpu",
                 "--qualities", "50,90", "--hr-qualities", "10,50,90", "--json", str(js),
                 "--plot", str(svg)])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(js.read_text())
    kinds = {r["kind"] for r in doc["rows"]}
    lossless = {"irn-png", "irn-webp-lossless"} | (
        {"irn-jxl-lossless"} if jxl_available() else set()
    )
    assert kinds == {"hr-jpeg", "bicubic-jpeg", "irn-jpeg"} | lossless
    assert "irn-jpeg-crm" in doc["unavailable"]  # no restore graphs: the row is not faked
    assert doc["images"] == ["baby.png", "butterfly.png"]
    rows = {(r["kind"], r["quality"]): r for r in doc["rows"]}
    assert sorted(q for k, q in rows if k == "hr-jpeg") == [10, 50, 90]
    assert sorted(q for k, q in rows if k == "irn-jpeg") == [50, 90]
    # the crops are cropped to a multiple of 4: 64x72 and 48x64 HR pixels
    for r in doc["rows"]:
        assert r["hr_pixels"] == 64 * 72 + 48 * 64
        assert r["total_bytes"] == sum(r["bytes_per_image"])
        assert r["bpp"] == pytest.approx(8 * r["total_bytes"] / r["hr_pixels"], abs=1e-6)
        assert r["mean_psnr_rgb"] == pytest.approx(np.mean(r["psnr_rgb"]), abs=1e-3)
    hr = [rows["hr-jpeg", q] for q in (10, 50, 90)]  # more bits, more PSNR
    assert hr[0]["bpp"] < hr[1]["bpp"] < hr[2]["bpp"]
    assert hr[0]["mean_psnr_rgb"] < hr[1]["mean_psnr_rgb"] < hr[2]["mean_psnr_rgb"]
    # lossless LRs give identical reconstructions; their files differ in size only
    png, webp = rows["irn-png", None], rows["irn-webp-lossless", None]
    assert png["psnr_rgb"] == webp["psnr_rgb"] and png["total_bytes"] != webp["total_bytes"]
    assert rows["irn-jpeg", 90]["bpp"] > rows["irn-jpeg", 50]["bpp"]
    assert {c["row"] for c in doc["lossless_vs_hr_jpeg"]} == lossless
    # stdout: a title, the table with every row, the comparison lines
    assert all(r["label"] in out for r in doc["rows"]) and "IRN + JPEG (no restore) q50" in out
    assert "HR JPEG at the same PSNR" in out or "outside HR JPEG's curve" in out
    # the plot: valid SVG, two panels, one line per swept kind per panel, every point
    root = ET.fromstring(svg.read_text())
    assert root.tag == f"{SVG}svg"
    assert len(root.findall(f"{SVG}polyline")) == 2 * 3
    assert len(root.findall(f"{SVG}circle")) == 2 * len(rows)


def test_irn_png_row_is_the_runtime_round_trip(tmp_model_dir, crops: Path) -> None:
    """The irn-png row's PSNR is the runtime's down/up measured with the border = scale."""
    images = [(p.name, read_rgb(p)) for p in sorted(crops.iterdir())][:1]
    with Rescaler.load(tmp_model_dir.path, backend="ort-cpu", precision="fp32") as r:
        (row,) = measure(images, r, kinds=["irn-png"])
        hr = images[0][1][:64, :72]
        up = r.upscale(r.downscale(ImageData(hr)))
        assert isinstance(up, ImageData)
        assert row.psnr_rgb[0] == pytest.approx(psnr(shave(up.rgb, 4), shave(hr, 4)), abs=1e-9)
        with pytest.raises(IRNError, match="declares no compression-restore graphs"):
            measure(images, r, kinds=["irn-jpeg-crm"])
        with pytest.raises(IRNError, match="unknown row kind"):
            measure(images, r, kinds=["irn-gif"])


def _row(kind: str, q: int | None, nbytes: int, db: float) -> RDRow:
    return RDRow(kind, q, total_bytes=nbytes, hr_pixels=1000, psnr_rgb=[db], psnr_y=[db])


def test_lossless_against_the_jpeg_curve() -> None:
    rows = [_row("hr-jpeg", 50, 1000, 30.0), _row("hr-jpeg", 90, 4000, 34.0)]
    # log-bytes interpolation: half way in PSNR is the geometric mean of the sizes
    assert jpeg_bytes_at_psnr(rows, 32.0) == pytest.approx(2000.0)
    assert jpeg_bytes_at_psnr(rows, 35.0) is None
    rows += [_row("irn-png", None, 1500, 32.0), _row("irn-webp-lossless", None, 900, 36.0)]
    got = {c["row"]: c for c in lossless_vs_jpeg(rows)}
    assert got["irn-png"]["hr_jpeg_bytes_at_same_psnr"] == 2000
    assert got["irn-png"]["saving"] == pytest.approx(0.25)
    assert got["irn-webp-lossless"]["saving"] is None  # outside the curve: not extrapolated
    assert math.isclose(rows[0].bpp, 8.0)


def test_bad_arguments_are_one_line(capsys, tmp_path: Path, tmp_model_dir, crops: Path) -> None:
    md = ["--model-dir", str(tmp_model_dir.path), "--backend", "ort-cpu"]
    assert main([str(tmp_path / "none"), *md]) == 2
    assert capsys.readouterr().err.strip() == f"irn-rd: error: {tmp_path / 'none'}: not a folder"
    assert main([str(crops), *md, "--plot", str(tmp_path / "x.png")]) == 2
    assert "the plot is an SVG" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(crops), *md, "--qualities", "0,50"])
    assert exc.value.code == 2 and "1..100" in capsys.readouterr().err
