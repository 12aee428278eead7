"""``irn-trt-run`` end to end on ort-cpu with a real exported (random-weight) IRN x4.

Each scenario of the first-time-user report (issue 12) runs here as the exact
CLI call in a temp folder: nothing is lost, every failure is one line.
"""

from __future__ import annotations

import json
import os
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


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _save_lr(path: Path, meta: LRMetadata, size: tuple[int, int] = (10, 10)) -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for k, v in meta.to_text().items():
        info.add_text(k, v)
    Image.new("RGB", size, (90, 120, 30)).save(path, pnginfo=info)


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
    assert "example" in out.stdout and "--mode" in out.stdout and "--overwrite" in out.stdout


def test_roundtrip_then_down_up_restore_odd_sizes(
    capsys, tmp_path: Path, tmp_model_dir, odd_image: Path
) -> None:
    md = str(tmp_model_dir.path)
    out = tmp_path / "rt"
    code, stdout, err = _run(
        capsys, str(odd_image), "-o", str(out), "--mode", "roundtrip", "--model-dir", md,
        "--backend", "ort-cpu", "--json", "-",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)  # stdout is JSON only, even without --quiet
    assert "round trip Y-PSNR" in err  # the human line goes to stderr
    assert summary["backend"] == "ort-cpu" and summary["precision"] == "fp32"
    assert summary["failed"] == 0 and summary["tiles"] == 2  # one down tile, one up tile
    assert summary["outputs"] == [str(out / "bird_lr.png"), str(out / "bird_roundtrip.png")]
    item = summary["items"][0]
    assert item["psnr"] is not None and item["ssim"] is not None and item["megapixels"] > 0
    lr = read_image(out / "bird_lr.png")
    assert lr.size == (16, 12)  # ceil(61/4) x ceil(45/4)
    meta = LRMetadata.from_text(lr.text)
    assert meta is not None and meta.original_size == (61, 45)
    assert meta.checkpoint_sha256 == tmp_model_dir.manifest.checkpoint_sha256
    rt = read_image(out / "bird_roundtrip.png")
    assert rt.size == (61, 45)

    # auto: a plain image is downscaled, an irn-trt LR is upscaled to the original size;
    # each written path is printed on stdout.
    code, stdout, err = _ort(capsys, tmp_model_dir, str(odd_image), "-o", str(tmp_path / "a"))
    assert code == 0, err
    lr2 = tmp_path / "a" / "bird_lr.png"
    assert stdout.splitlines() == [str(lr2)]
    np.testing.assert_array_equal(read_image(lr2).rgb, lr.rgb)
    code, stdout, err = _ort(capsys, tmp_model_dir, str(lr2), "-o", str(tmp_path / "b"))
    assert code == 0, err
    assert stdout.splitlines() == [str(tmp_path / "b" / "bird_hr.png")]
    hr = read_image(tmp_path / "b" / "bird_hr.png")
    assert hr.size == (61, 45)
    np.testing.assert_array_equal(hr.rgb, rt.rgb)
    assert "warning" not in err


def test_batch_never_overwrites_its_own_inputs(
    capsys, tmp_path: Path, tmp_model_dir, odd_image: Path
) -> None:
    """Scenario 1: a.png and a_lr.png in one folder, -o that folder: refused, nothing touched."""
    folder = tmp_path / "shots"
    folder.mkdir()
    (folder / "a.png").write_bytes(odd_image.read_bytes())
    meta = LRMetadata.for_model(tmp_model_dir.manifest, (40, 40), "rgb", False)
    _save_lr(folder / "a_lr.png", meta)
    before = _tree(folder)
    code, stdout, err = _ort(capsys, tmp_model_dir, str(folder), "-o", str(folder))
    assert code == 2
    errors = _errors(err)
    assert any("a.png: output" in e and "a_lr.png is an input of this batch" in e for e in errors)
    assert "nothing was run or written" in errors[-1]
    assert _tree(folder) == before and stdout == ""


def test_colliding_names_get_distinct_outputs(
    capsys, tmp_path: Path, tmp_model_dir, odd_image: Path
) -> None:
    """Scenario 2: a/img.png + b/img.png and pic.png + pic.jpg: four inputs, four outputs."""
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "img.png").write_bytes(odd_image.read_bytes())
    (tmp_path / "pic.png").write_bytes(odd_image.read_bytes())
    with Image.open(odd_image) as im:
        im.save(tmp_path / "pic.jpg", quality=95)
    out = tmp_path / "out"
    names = ["a/img.png", "b/img.png", "pic.png", "pic.jpg"]
    code, stdout, err = _ort(
        capsys, tmp_model_dir, *[str(tmp_path / n) for n in names], "-o", str(out), "--json", "-"
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["files"] == 4 and summary["failed"] == 0
    want = ["a/img_lr.png", "b/img_lr.png", "pic.png_lr.png", "pic.jpg_lr.png"]
    assert summary["outputs"] == [str(out / w) for w in want]
    assert sorted(_tree(out)) == sorted(want)


def test_tiny_roundtrip_reports_psnr_only_and_the_batch_goes_on(
    capsys, tmp_path: Path, tmp_model_dir, odd_image: Path
) -> None:
    """Scenario 3: a side under 11 px in roundtrip mode: PSNR, no SSIM (said), no traceback."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 30, 3), np.uint8)).save(
        src / "tiny.png"
    )
    (src / "z.png").write_bytes(odd_image.read_bytes())
    out = tmp_path / "out"
    code, stdout, err = _ort(capsys, tmp_model_dir, str(src), "-o", str(out), "--mode",
                             "roundtrip", "--json", "-")  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    tiny, z = summary["items"]
    assert tiny["psnr"] > 0 and tiny["ssim"] is None and "SSIM not reported" in tiny["warnings"][0]
    assert z["ssim"] is not None
    assert sorted(_tree(out)) == sorted(
        ["tiny_lr.png", "tiny_roundtrip.png", "z_lr.png", "z_roundtrip.png"]
    )
    assert "Traceback" not in err


def test_output_equal_to_input_refused_before_any_work(
    capsys, tmp_path: Path, tmp_model_dir, odd_image: Path
) -> None:
    """Scenario 4: -o names the input in roundtrip mode: refused up front, no LR written."""
    src = tmp_path / "x.png"
    src.write_bytes(odd_image.read_bytes())
    (tmp_path / "x_lr.png").write_bytes(b"precious")
    before = _tree(tmp_path)
    code, _, err = _ort(capsys, tmp_model_dir, str(src), "-o", str(src), "--mode", "roundtrip")
    assert code == 2
    assert any("would overwrite the input" in e for e in _errors(err))
    assert any("x_lr.png exists (pass --overwrite" in e for e in _errors(err))
    assert _tree(tmp_path) == before


def test_json_target_checked_before_work(
    capsys, tmp_path: Path, tmp_model_dir, odd_image: Path
) -> None:
    """Scenario 5: --json at a folder or below a file: one line, exit 2, nothing written."""
    out = tmp_path / "out"
    for target, msg in ((tmp_path, "is a folder"), (odd_image / "s.json", "is a file")):
        code, _, err = _ort(capsys, tmp_model_dir, str(odd_image), "-o", str(out),
                            "--json", str(target))  # fmt: skip
        assert code == 2 and msg in err and "Traceback" not in err
        assert err.count("\n") == 1
    assert not out.exists()
    code, _, err = _ort(capsys, tmp_model_dir, str(odd_image), "-o", str(out),
                        "--json", str(tmp_path / "sub" / "s.json"))  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "sub" / "s.json").read_text())["outputs"] == [
        str(out / "bird_lr.png")
    ]


def test_unwritable_output_folder_refused_up_front(
    capsys, tmp_path: Path, tmp_model_dir, odd_image: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _ort(capsys, tmp_model_dir, str(odd_image), "-o", str(blocker / "out"))
    assert code == 2
    assert any(f"cannot create folder {blocker / 'out'}: {blocker} is a file" in e
               for e in _errors(err))  # fmt: skip


def test_existing_outputs_need_overwrite_or_skip(
    capsys, tmp_path: Path, tmp_model_dir, odd_image: Path
) -> None:
    out = tmp_path / "out"
    assert _ort(capsys, tmp_model_dir, str(odd_image), "-o", str(out))[0] == 0
    (out / "bird_lr.png").write_bytes(b"user edit")
    code, _, err = _ort(capsys, tmp_model_dir, str(odd_image), "-o", str(out))
    assert code == 2 and "exists (pass --overwrite" in err
    assert (out / "bird_lr.png").read_bytes() == b"user edit"
    code, stdout, err = _ort(capsys, tmp_model_dir, str(odd_image), "-o", str(out),
                             "--skip-existing", "--json", "-")  # fmt: skip
    assert code == 0 and json.loads(stdout)["skipped"] == 1
    assert (out / "bird_lr.png").read_bytes() == b"user edit"
    code, _, err = _ort(capsys, tmp_model_dir, str(odd_image), "-o", str(out), "--overwrite")
    assert code == 0, err
    assert read_image(out / "bird_lr.png").size == (16, 12)
    # A file the user named is theirs to replace.
    named = tmp_path / "named_lr.png"
    named.write_bytes(b"old")
    assert _ort(capsys, tmp_model_dir, str(odd_image), "-o", str(named))[0] == 0
    assert read_image(named).size == (16, 12)


def test_folder_scan_skips_its_own_output_folder(
    capsys, tmp_path: Path, tmp_model_dir, odd_image: Path
) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    (src / "p.png").write_bytes(odd_image.read_bytes())
    out = src / "out"
    assert _ort(capsys, tmp_model_dir, str(src), "-o", str(out))[0] == 0
    code, stdout, _ = _ort(capsys, tmp_model_dir, str(src), "-o", str(out), "--skip-existing",
                           "--json", "-")  # fmt: skip
    assert code == 0 and json.loads(stdout)["files"] == 1  # out/p_lr.png is not an input


def test_stripped_and_damaged_metadata(
    capsys, tmp_path: Path, tmp_model_dir, odd_image: Path
) -> None:
    """Scenario 6: a stripped LR is not downscaled again; damaged metadata never blocks down."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "x_lr.png").write_bytes(odd_image.read_bytes())  # looks like an LR, no metadata
    Image.open(odd_image).save(src / "bad.png", pnginfo=_damaged())
    out = tmp_path / "out"
    code, _, err = _ort(capsys, tmp_model_dir, str(src), "-o", str(out))
    assert code == 1
    errors = _errors(err)
    assert any("x_lr.png: named like an irn-trt output (_lr) but carries no" in e for e in errors)
    assert any("bad.png: damaged irn-trt metadata" in e and "--mode down" in e for e in errors)
    assert not out.exists() or not any(out.iterdir())
    code, _, err = _ort(capsys, tmp_model_dir, str(src), "-o", str(out), "--mode", "down")
    assert code == 0, err
    assert sorted(_tree(out)) == ["bad_lr.png", "x_lr_lr.png"]
    meta = LRMetadata.from_text(read_image(out / "bad_lr.png").text)
    assert meta is not None and meta.original_size == (61, 45)  # fresh, not the damaged one


def _damaged():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("irn-trt:model", "irn_x4")
    info.add_text("irn-trt:original-size", "banana")
    return info


def test_icc_profile_carried_and_cmyk_said(
    capsys, tmp_path: Path, tmp_model_dir, odd_image: Path
) -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with Image.open(odd_image) as im:
        im.save(tmp_path / "icc.png", icc_profile=icc)
        im.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    out = tmp_path / "out"
    code, stdout, err = _ort(capsys, tmp_model_dir, str(tmp_path / "icc.png"),
                             str(tmp_path / "cmyk.jpg"), "-o", str(out), "--mode", "roundtrip",
                             "--json", "-")  # fmt: skip
    assert code == 0, err
    for name in ("icc_lr.png", "icc_roundtrip.png"):
        with Image.open(out / name) as im:
            assert im.info.get("icc_profile") == icc
    (cmyk,) = [i for i in json.loads(stdout)["items"] if i["input"].endswith("cmyk.jpg")]
    assert any("CMYK input converted" in w for w in cmyk["warnings"])
    assert "CMYK input converted" in err


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
    json_path = tmp_path / "summary.json"
    code, _, err = _run(
        capsys, str(src / "text.png"), str(src / "trunc.png"), str(src / "one.png"),
        str(src / "missing.png"), str(good), "-o", str(out), "--mode", "down",
        "--model-dir", str(tmp_model_dir.path), "--backend", "ort-cpu", "--quiet",
        "--json", str(json_path),
    )  # fmt: skip
    assert code == 1
    errors = _errors(err)
    assert len(errors) == 4, err
    assert any("text.png: not an image" in e for e in errors)
    assert any("trunc.png: cannot read image" in e for e in errors)
    assert any("one.png: 1x1 is too small" in e for e in errors)
    assert any("missing.png: no such file" in e for e in errors)
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["good_lr.png"]  # the rest ran
    summary = json.loads(json_path.read_text())  # written although files failed
    assert summary["files"] == 5 and summary["failed"] == 4


def test_corrupt_graph_named_at_load(
    capsys, tmp_path: Path, tmp_model_dir, odd_image: Path
) -> None:
    import shutil

    md = tmp_path / "model"
    shutil.copytree(tmp_model_dir.path, md)
    graph = md / "down.fp32.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    code, _, err = _run(capsys, str(odd_image), "-o", str(tmp_path / "o"), "--model-dir",
                        str(md), "--backend", "ort-cpu", "--precision", "fp32")  # fmt: skip
    assert code == 2
    assert err.count("\n") == 1
    assert "down.fp32.onnx does not match the SHA-256" in err and "re-export" in err


def test_json_reports_startup_and_compiled_model_cache(
    capsys, monkeypatch, tmp_path: Path, tmp_model_dir, odd_image: Path
) -> None:
    """``--json`` says how long start-up and each graph's load took, and whether the
    compiled model came from the cache: the first run compiles, the second does not."""
    from irn_trt.runtime.backends import backend_class

    reason = backend_class("ov-cpu").probe()
    if reason is not None:
        pytest.skip(f"ov-cpu unavailable: {reason}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    md = str(tmp_model_dir.path)
    runs = []
    for name in ("first", "second"):
        code, _, err = _run(capsys, str(odd_image), "-o", str(tmp_path / name), "--model-dir", md,
                            "--backend", "ov-cpu", "--precision", "fp32", "--threads", "1",
                            "--quiet", "--json", str(tmp_path / f"{name}.json"))  # fmt: skip
        assert code == 0, err
        runs.append(json.loads((tmp_path / f"{name}.json").read_text()))
    first, second = runs
    assert first["model_from_cache"] == {"down": False}
    assert second["model_from_cache"] == {"down": True}
    for summary in runs:
        assert list(summary["model_load_s"]) == ["down"] and summary["model_load_s"]["down"] > 0
        if sys.platform.startswith("linux"):  # from the process's start, read in /proc
            assert summary["startup_s"] > summary["model_load_s"]["down"]
        else:
            assert summary["startup_s"] is None
    lr = "bird_lr.png"
    assert (tmp_path / "first" / lr).read_bytes() == (tmp_path / "second" / lr).read_bytes()
    # A round trip loads both graphs; ort-cpu keeps no compiled-model cache (null, not false).
    code, _, err = _ort(capsys, tmp_model_dir, str(odd_image), "-o", str(tmp_path / "rt"),
                        "--mode", "roundtrip", "--json", str(tmp_path / "rt.json"))  # fmt: skip
    assert code == 0, err
    rt = json.loads((tmp_path / "rt.json").read_text())
    assert list(rt["model_load_s"]) == ["down", "up"]
    assert rt["model_from_cache"] == {"down": None, "up": None}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tile", "0"], "--tile 0 must be a positive multiple of the scale 4 (HR px)"),
        (["--tile", "7"], "--tile 7 must be a positive multiple of the scale 4 (HR px)"),
        (["--overlap", "6"], "--overlap 6 must be a non-negative multiple of the scale 4 (HR px)"),
        (["--tile", "64", "--overlap", "32"], "--tile 64 must be larger than twice the overlap "
                                              "(32 HR px)"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
    ],
)  # fmt: skip
def test_flag_errors_in_the_flags_units(
    capsys, tmp_model_dir, odd_image: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    code, _, err = _ort(capsys, tmp_model_dir, str(odd_image), "-o", str(tmp_path), *flags)
    assert code == 2 and err.count("\n") == 1
    assert message in err


def test_bf16_on_a_cpu_without_it_is_a_usage_error(
    capsys, monkeypatch, tmp_model_dir, odd_image: Path, tmp_path: Path
) -> None:
    pytest.importorskip("openvino")
    from irn_trt.runtime.backends import ov_cpu

    monkeypatch.setattr(ov_cpu, "cpu_supports_bf16", lambda: False)  # as on an AVX2-only CPU
    for backend in ("ov-cpu", "auto"):
        code, _, err = _run(capsys, str(odd_image), "-o", str(tmp_path), "--model-dir",
                            str(tmp_model_dir.path), "--backend", backend,
                            "--precision", "bf16")  # fmt: skip
        assert code == 2 and "this CPU has no BF16 support" in err
        assert not any(tmp_path.iterdir())


def test_model_found_from_any_folder(
    capsys, monkeypatch, tmp_path: Path, tmp_model_dir, odd_image: Path, model_store: Path
) -> None:
    import shutil

    store = model_store
    shutil.copytree(tmp_model_dir.path, store / "irn_x4")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, stdout, err = _run(capsys, str(odd_image), "-o", "o", "--backend", "ort-cpu",
                             "--quiet", "--json", "-")  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["model_dir"] == str(store / "irn_x4")
    code, _, err = _run(capsys, str(odd_image), "--model", "irn_x2", "-o", "o2")
    assert code == 2 and err.count("\n") == 1
    assert "no exported model irn_x2" in err and str(store) in err and "irn-export" in err


def test_up_without_metadata_warns(capsys, tmp_path: Path, tmp_model_dir, odd_image: Path) -> None:
    code, _, err = _ort(capsys, tmp_model_dir, str(odd_image), "--mode", "up", "-o", str(tmp_path))
    assert code == 0
    assert "IRN is not super-resolution" in err
    assert read_image(tmp_path / "bird_hr.png").size == (61 * 4, 45 * 4)


def test_up_refuses_a_model_mismatch(capsys, tmp_path: Path, tmp_model_dir) -> None:
    meta = LRMetadata("irn_x4", "f" * 64, 4, (40, 40), "rgb", False)
    lr = tmp_path / "other_lr.png"
    _save_lr(lr, meta)
    code, _, err = _ort(capsys, tmp_model_dir, str(lr), "-o", str(tmp_path / "o"))
    assert code == 1
    (line,) = _errors(err)
    assert "other_lr.png: LR downscaled by irn_x4" in line and "ffffffffffff" in line
    assert not (tmp_path / "o" / "other_hr.png").exists()


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
    code, stdout, err = _ort(capsys, tmp_model_dir, str(src), str(tmp_path / "pa*.png"), "-o",
                             str(out), "--mode", "roundtrip", "--json", "-")  # fmt: skip
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


def test_no_progress_escape_codes_off_a_terminal(
    tmp_path: Path, tmp_model_dir, odd_image: Path
) -> None:
    """stderr is a pipe here: no bars, no carriage returns, just lines."""
    cmd = [sys.executable, "-m", "irn_trt.runtime.cli", str(odd_image), str(odd_image.parent),
           "-o", str(tmp_path / "o"), "--model-dir", str(tmp_model_dir.path),
           "--backend", "ort-cpu", "--mode", "roundtrip"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stderr and "\x1b[" not in res.stderr
    assert res.stdout.splitlines() == [
        str(tmp_path / "o" / "bird_lr.png"),
        str(tmp_path / "o" / "bird_roundtrip.png"),
    ]
