"""``irn-trt-run`` end to end on ort-cpu with a real exported (random-weight) IRN x4."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import gpu_unavailable_reason
from irn_trt.runtime.cli import main
from irn_trt.runtime.image_io import read_image
from irn_trt.runtime.pngmeta import LRMetadata
from PIL import Image


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _ort(capsys, model, *args: str) -> tuple[int, str, str]:
    """Run on ort-cpu with the test model, quietly."""
    return _run(capsys, *args, "--model-dir", str(model.path), "--backend", "ort-cpu", "--quiet")


def _errors(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if "error:" in ln]


@pytest.fixture(scope="module")
def odd_image(tmp_path_factory, set5_dir: Path) -> Path:
    """A 61x45 crop: neither side divisible by the scale 4."""
    path = tmp_path_factory.mktemp("odd") / "bird.png"
    with Image.open(set5_dir / "bird.png") as im:
        im.convert("RGB").crop((10, 20, 71, 65)).save(path)
    return path


def test_help_has_an_example() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "irn_trt.runtime.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "example" in out.stdout and "--mode" in out.stdout and "--no-tile" in out.stdout


def test_roundtrip_then_down_up_restore_odd_sizes(
    capsys, tmp_path: Path, tmp_model_dir, odd_image: Path
) -> None:
    md = str(tmp_model_dir.path)
    out = tmp_path / "rt"
    code, stdout, err = _run(
        capsys, str(odd_image), "-o", str(out), "--mode", "roundtrip", "--model-dir", md,
        "--backend", "ort-cpu", "--json", "-", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["backend"] == "ort-cpu" and summary["precision"] == "fp32"
    assert summary["failed"] == 0 and summary["tiles"] == 2  # one down tile, one up tile
    item = summary["items"][0]
    assert item["psnr"] is not None and item["megapixels"] > 0
    lr = read_image(out / "bird_lr.png")
    assert lr.size == (16, 12)  # ceil(61/4) x ceil(45/4)
    meta = LRMetadata.from_text(lr.text)
    assert meta is not None and meta.original_size == (61, 45)
    assert meta.checkpoint_sha256 == tmp_model_dir.manifest.checkpoint_sha256
    rt = read_image(out / "bird_roundtrip.png")
    assert rt.size == (61, 45)

    # auto: a plain image is downscaled, an irn-trt LR is upscaled to the original size.
    code, _, err = _ort(capsys, tmp_model_dir, str(odd_image), "-o", str(tmp_path / "a"))
    assert code == 0, err
    lr2 = tmp_path / "a" / "bird_lr.png"
    np.testing.assert_array_equal(read_image(lr2).rgb, lr.rgb)
    code, _, err = _ort(capsys, tmp_model_dir, str(lr2), "-o", str(tmp_path / "b"))
    assert code == 0, err
    hr = read_image(tmp_path / "b" / "bird_hr.png")
    assert hr.size == (61, 45)
    np.testing.assert_array_equal(hr.rgb, rt.rgb)
    assert "warning" not in err


def test_up_without_metadata_warns(capsys, tmp_path: Path, tmp_model_dir, odd_image: Path) -> None:
    code, _, err = _ort(capsys, tmp_model_dir, str(odd_image), "--mode", "up", "-o", str(tmp_path))
    assert code == 0
    assert "IRN is not super-resolution" in err
    assert read_image(tmp_path / "bird_hr.png").size == (61 * 4, 45 * 4)


def test_up_refuses_a_model_mismatch(capsys, tmp_path: Path, tmp_model_dir) -> None:
    meta = LRMetadata("irn_x4", "f" * 64, 4, (40, 40), "rgb", False)
    lr = tmp_path / "other_lr.png"
    Image.new("RGB", (10, 10), (90, 120, 30)).save(lr, pnginfo=meta.to_pnginfo())
    code, _, err = _ort(capsys, tmp_model_dir, str(lr), "-o", str(tmp_path / "o"))
    assert code == 1
    (line,) = _errors(err)
    assert "downscaled by irn_x4" in line and "ffffffffffff" in line
    assert not (tmp_path / "o" / "other_hr.png").exists()


def test_bad_inputs_one_line_each_and_batch_goes_on(
    capsys, tmp_path: Path, tmp_model_dir, odd_image: Path, set5_dir: Path
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "text.png").write_text("not an image at all")
    data = (set5_dir / "bird.png").read_bytes()
    (src / "trunc.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (1, 1), (1, 2, 3)).save(src / "one.png")
    good = src / "good.png"
    good.write_bytes(odd_image.read_bytes())
    out = tmp_path / "out"
    code, _, err = _run(
        capsys, str(src / "text.png"), str(src / "trunc.png"), str(src / "one.png"),
        str(src / "missing.png"), str(good), "-o", str(out), "--mode", "down",
        "--model-dir", str(tmp_model_dir.path), "--backend", "ort-cpu", "--quiet",
    )  # fmt: skip
    assert code == 1
    errors = _errors(err)
    assert len(errors) == 4, err
    assert any("text.png: not an image" in e for e in errors)
    assert any("trunc.png: cannot read image" in e for e in errors)
    assert any("one.png: 1x1 is too small" in e for e in errors)
    assert any("missing.png: no such file" in e for e in errors)
    assert "Traceback" not in err
    assert (out / "good_lr.png").is_file()  # the rest of the batch was processed
    assert sorted(p.name for p in out.iterdir()) == ["good_lr.png"]


def test_missing_model_dir(capsys, tmp_path: Path, odd_image: Path) -> None:
    code, _, err = _run(capsys, str(odd_image), "--model-dir", str(tmp_path / "nope"))
    assert code == 2
    assert err.strip().count("\n") == 0 and "does not exist" in err


@pytest.mark.skipif(gpu_unavailable_reason() is None, reason="a GPU is present")
def test_backend_trt_without_gpu(capsys, tmp_model_dir, odd_image: Path, tmp_path: Path) -> None:
    code, _, err = _run(capsys, str(odd_image), "-o", str(tmp_path),
                        "--model-dir", str(tmp_model_dir.path), "--backend", "trt")  # fmt: skip
    assert code == 2
    assert err.strip().count("\n") == 0 and "backend trt cannot run here" in err


def test_never_overwrites_the_input(capsys, tmp_path: Path, tmp_model_dir, odd_image: Path) -> None:
    src = tmp_path / "x_lr.png"
    src.write_bytes(odd_image.read_bytes())
    before = src.read_bytes()
    code, _, err = _ort(capsys, tmp_model_dir, str(src), "-o", str(src), "--mode", "down")
    assert code == 1 and "would overwrite the input" in err
    assert src.read_bytes() == before


def test_folders_globs_and_colour_kinds(
    capsys, tmp_path: Path, tmp_model_dir, odd_image: Path
) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    with Image.open(odd_image) as im:
        im.convert("L").save(src / "gray.png")
        rgba = im.convert("RGBA")
        a = np.asarray(rgba).copy()
        a[..., 3] = np.linspace(0, 255, a.shape[1], dtype=np.uint8)[None]
        Image.fromarray(a, "RGBA").save(src / "sub" / "alpha.png")
        im.convert("P").save(tmp_path / "pal.png")
    out = tmp_path / "out"
    code, stdout, err = _run(
        capsys, str(src), str(tmp_path / "pa*.png"), "-o", str(out), "--mode", "roundtrip",
        "--model-dir", str(tmp_model_dir.path), "--backend", "ort-cpu", "--json", "-", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["files"] == 3
    with Image.open(out / "gray_roundtrip.png") as im:
        assert im.mode == "L" and im.size == (61, 45)
    with Image.open(out / "sub" / "alpha_lr.png") as im:
        assert im.mode == "RGBA" and im.size == (16, 12)
    with Image.open(out / "sub" / "alpha_roundtrip.png") as im:
        assert im.mode == "RGBA"
        alpha = np.asarray(im)[..., 3].astype(int)
        assert alpha[:, :5].mean() < 40 and alpha[:, -5:].mean() > 215
    assert "alpha channel resized with a bicubic filter" in err
    with Image.open(out / "pal_roundtrip.png") as im:
        assert im.mode == "P"
