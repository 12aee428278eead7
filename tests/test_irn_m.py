"""IRN-M (seed 004, section 2.2) end to end: the export of its side code (down's second
output, up's second input), the halo its auto-encoder adds, the runtime that tiles the code
on its 1/4 grid and stores it in the LR PNG's private ``irLC`` chunk, the fallbacks when
the code is lost, and manifests from before side codes existed.

Real ONNX graphs in ONNX Runtime throughout; the models are registry structures at tiny
depth (``tiny_config``) with seeded random weights, so every part, the decoder included,
does something (a fresh decoder's last conv is zero: its z would be 0 whatever the code).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import SET5, run_cli, tiny_config
from irn_trt.export.api import ExportOptions, export_model
from irn_trt.export.halo import measure_halo, measure_receptive_field
from irn_trt.runtime.api import Rescaler
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.image_io import (
    LATENT_CHUNK,
    ImageData,
    decode_latent_chunk,
    encode_latent_chunk,
    read_image,
    write_image,
)
from irn_trt.runtime.manifest import MANIFEST_FILE, load_manifest
from irn_trt.runtime.metrics import psnr
from irn_trt.runtime.tiling import TileConfig, plan_axis, run_tiled_planes
from irn_trt.runtime.trt_plan import plan_bindings, profile_for_graph
from irn_trt.train.configs import IRNConfig, LatentCode, Stage
from irn_trt.train.models import build_model, quantize, randomize_weights
from PIL import Image
from PIL.PngImagePlugin import PngInfo


def _model(name: str, seed: int) -> torch.nn.Module:
    return randomize_weights(build_model(tiny_config(name)), seed=seed).eval()


def _torch_codes(model: torch.nn.Module, hr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's 8-bit LR and side code of an HR uint8 image (HxWxC each)."""
    x = torch.from_numpy(hr.transpose(2, 0, 1).copy()).float()[None] / 255
    with torch.no_grad():
        y, z = model(x)
        code = model.encode_latent(z)
    as_bytes = [
        torch.round(t[0] * 255).byte().permute(1, 2, 0).numpy() for t in (quantize(y), code)
    ]
    return as_bytes[0], as_bytes[1]


@pytest.fixture(scope="module")
def m_x2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """Tiny irn_m_x2, FP32 + FP16, verified on a noise image whose LR (23x19) is not on the
    code's grid."""
    model = _model("irn_m_x2", seed=11)
    out = tmp_path_factory.mktemp("irn_m") / "irn_m_x2"
    hr = np.random.default_rng(1).integers(0, 256, (46, 38, 3), dtype=np.uint8)
    export_model(model, out, options=ExportOptions(), verify_images=[("noise", hr)])
    return out, model


@pytest.fixture(scope="module")
def bird() -> np.ndarray:
    """A real crop whose x2 LR (75x65) is not a multiple of the code's grid either way."""
    return np.array(Image.open(SET5 / "bird.png").convert("RGB"))[40:190, 60:190]


# --- export ---------------------------------------------------------------------------


def test_export_declares_the_side_code_and_matches_pytorch(
    m_x2: tuple[Path, torch.nn.Module],
) -> None:
    path, model = m_x2
    m = load_manifest(path)
    assert m.lr_layout == "rgb+latent" and m.lr_grid == 4 and m.tile_multiple == 8
    assert m.halo % 4 == 0 and m.halo >= m.parity["halo_measured"]["up"]
    for precision in ("fp32", "fp16"):
        down, up = m.graph("down", precision), m.graph("up", precision)
        assert [t.name for t in down.outputs] == ["lr", "code"]
        assert [t.name for t in up.inputs] == ["lr", "code"]
        code = down.outputs[1]
        assert (code.dtype, code.layout, code.lr_grid) == ("uint8", "NHWC", 4)
        assert code.shape == ("N", "ceil(H/8)", "ceil(W/8)", 4) and up.inputs[1] == code
        assert m.side_code("down") == m.side_code("up") == code
    p = m.parity
    assert p["code_fp32_vs_torch"]["equal_fraction"] >= 0.999
    assert p["code_fp32_vs_torch"]["max_abs_diff"] <= 1
    assert p["code_fp16_vs_fp32"]["within1_fraction"] >= 0.99
    assert p["up_fp32_vs_torch"]["min_psnr_db"] >= 60
    assert "MaxPool" in p["ops"]["down.fp32"] and "DepthToSpace" in p["ops"]["up.fp32"]

    # The graphs themselves, on a real crop: the code on ceil(LR / 4), and up decodes z from
    # it (a different code gives a different HR: z = 0 is not what up uses).
    hr = np.array(Image.open(SET5 / "butterfly.png").convert("RGB"))[:54, :70]
    sess = {
        d: ort.InferenceSession(str(path / f"{d}.fp32.onnx"), providers=["CPUExecutionProvider"])
        for d in ("down", "up")
    }
    lr, code = sess["down"].run(None, {"hr": hr[None]})
    assert lr.shape == (1, 27, 35, 3) and code.shape == (1, 7, 9, 4)
    lr_t, code_t = _torch_codes(model, hr)
    assert np.abs(code[0].astype(int) - code_t).max() <= 1
    assert (code[0] == code_t).mean() > 0.99
    hr_up = sess["up"].run(None, {"lr": lr, "code": code})[0]
    neutral = sess["up"].run(None, {"lr": lr, "code": np.full_like(code, 128)})[0]
    assert hr_up.shape == (1, 54, 70, 3) and not np.array_equal(hr_up, neutral)
    with torch.no_grad():
        code_q = torch.from_numpy(code[0].transpose(2, 0, 1).copy()).float()[None] / 255
        lr_q = torch.from_numpy(lr[0].transpose(2, 0, 1).copy()).float()[None] / 255
        want = model.inverse(lr_q, model.decode_latent(code_q, 27, 35))
    want = torch.round(want.clamp(0, 1) * 255)[0].permute(1, 2, 0).byte().numpy()
    assert psnr(hr_up[0], want) >= 60


def test_export_refuses_a_z_policy_for_a_side_code(tmp_path: Path) -> None:
    with pytest.raises(IRNError, match="rebuilds z from its side code"):
        export_model(_model("irn_m_x2", 1), tmp_path / "m", options=ExportOptions(z_policy="input"))


def test_the_auto_encoder_widens_the_halo() -> None:
    stages = (Stage("haar", 2), Stage("haar", 1))
    plain, coded = IRNConfig("t", stages), IRNConfig("tm", stages, latent_code=LatentCode())
    chained, chained_plain = measure_halo(coded), measure_halo(plain)
    whole = measure_receptive_field(coded)
    # The chained estimate bounds the measured field of the whole passes...
    assert whole.down <= chained.down and whole.up <= chained.up
    # ...which the encoder (down: z -> code) and the decoder (up: code -> z) widen beyond
    # the plain IRN's (whose chained estimate bounds its own field).
    assert whole.down > chained_plain.down and whole.up > chained_plain.up
    assert chained.down - chained_plain.down == chained.up - chained_plain.up == 11


# --- tiling on the code's grid ----------------------------------------------------------


@pytest.mark.parametrize("length", [1, 7, 63, 64, 65, 130, 131, 257])
def test_grid_plans_align_tiles_and_end_on_the_image(length: int) -> None:
    spans = plan_axis(length, 32, 8, grid=4)
    assert spans[0].keep0 == 0 and spans[-1].keep1 == length
    for a, b in zip(spans, spans[1:], strict=False):
        assert a.keep1 == b.keep0 and a.keep1 % 4 == 0
    for sp in spans:
        assert sp.start % 4 == 0 and sp.start + sp.size <= length
        assert sp.size == 32 or sp.start + sp.size == length  # only the last is shorter
    with pytest.raises(IRNError, match="multiples of 4"):
        plan_axis(100, 30, 8, grid=4)


def test_planes_tile_like_the_whole_image() -> None:
    # A local operator with a 1/4-grid output: a 5x5 box sum, then 4x4 max cells (ceil).
    def op(xs: list[np.ndarray]) -> list[np.ndarray]:
        x = xs[0].astype(np.int64)
        p = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
        box = sum(
            p[:, dy : dy + x.shape[1], dx : dx + x.shape[2]] for dy in range(5) for dx in range(5)
        )
        h, w = -(-x.shape[1] // 4), -(-x.shape[2] // 4)
        cells = np.full((x.shape[0], h * 4, w * 4, x.shape[3]), -1, np.int64)
        cells[:, : x.shape[1], : x.shape[2]] = box
        code = cells.reshape(x.shape[0], h, 4, w, 4, -1).max(axis=(2, 4))
        return [(box % 256).astype(np.uint8), (code % 256).astype(np.uint8)]

    img = np.random.default_rng(3).integers(0, 256, (75, 65, 2), dtype=np.uint8)
    whole = op([img[None]])
    cfg = TileConfig(tile=24, overlap=4, grid=4, batch=3)
    tiled = run_tiled_planes([(img, 1)], op, [1, Fraction(1, 4)], cfg)
    assert tiled[1].shape == (19, 17, 2)
    for t, w in zip(tiled, whole, strict=True):
        np.testing.assert_array_equal(t, w[0])


def test_tiled_equals_untiled_with_the_code(
    m_x2: tuple[Path, torch.nn.Module], bird: np.ndarray
) -> None:
    path, _ = m_x2
    image = ImageData(bird)
    whole = Rescaler.load(path, backend="ort-cpu", precision="fp32", no_tile=True)
    # 64 LR px tiles (the halo is 24): 2 x 2 tiles with seams in both directions.
    tiled = Rescaler.load(path, backend="ort-cpu", precision="fp32", tile=128)
    lr_w, lr_t = whole.downscale(image), tiled.downscale(image)
    assert tiled.tiles_run == 4 and whole.tiles_run == 1
    assert lr_w.latent_code.shape == (19, 17, 4)  # ceil(75 / 4), ceil(65 / 4)
    assert psnr(lr_t.rgb, lr_w.rgb) >= 50
    assert (lr_t.latent_code == lr_w.latent_code).mean() >= 0.999
    assert np.abs(lr_t.latent_code.astype(int) - lr_w.latent_code).max() <= 1
    hr_w, hr_t = whole.upscale(lr_w), tiled.upscale(lr_w)
    assert hr_w.rgb.shape == bird.shape and psnr(hr_t.rgb, hr_w.rgb) >= 50
    # OpenVINO returns both outputs too, in the manifest's order.
    pytest.importorskip("openvino")
    ov = Rescaler.load(path, backend="ov-cpu", precision="fp32", tile=128)
    lr_ov = ov.downscale(image)
    assert (lr_ov.latent_code == lr_w.latent_code).mean() >= 0.999
    assert psnr(lr_ov.rgb, lr_w.rgb) >= 50 and psnr(ov.upscale(lr_w).rgb, hr_w.rgb) >= 50
    with pytest.raises(IRNError, match=r"multiple of 8 \(the scale 2 x the side code's grid\)"):
        Rescaler.load(path, backend="ort-cpu", tile=132)
    with pytest.raises(IRNError, match="side code's grid"):
        Rescaler.load(path, backend="ort-cpu", overlap=4)
    # Arrays have nowhere to keep the code: one line, not a silent loss.
    with pytest.raises(IRNError, match="pass ImageData"):
        whole.downscale(bird)
    with pytest.raises(IRNError, match="pass ImageData"):
        whole.upscale(lr_w.rgb)


# --- the LR file --------------------------------------------------------------------------


def test_chunk_round_trips_and_refuses_damage() -> None:
    code = np.random.default_rng(0).integers(0, 256, (7, 9, 4), dtype=np.uint8)
    payload = encode_latent_chunk(code)
    np.testing.assert_array_equal(decode_latent_chunk(payload, (35, 27)), code)
    for bad, size in [
        (payload[:-3], (35, 27)),  # truncated
        (payload, (8, 6)),  # a grid larger than the image
        (b"IRC1" + payload[4:], (35, 27)),  # an alpha-code header
    ]:
        with pytest.raises(IRNError, match="damaged latent-code chunk"):
            decode_latent_chunk(bad, size)


def test_file_round_trip_equals_the_in_memory_one(
    m_x2: tuple[Path, torch.nn.Module], bird: np.ndarray, tmp_path: Path
) -> None:
    path, _ = m_x2
    Image.fromarray(bird).save(tmp_path / "bird.png")
    model = ["--model-dir", str(path)]
    out = tmp_path / "rt"
    assert run_cli(str(tmp_path / "bird.png"), "-o", str(out), *model, "--mode", "roundtrip") == 0
    lr = Image.open(out / "bird_lr.png")
    lr.load()
    # A plain RGB PNG (viewers show the picture), the code in its private chunk.
    assert lr.mode == "RGB" and [c[0] for c in lr.private_chunks] == [LATENT_CHUNK]
    assert lr.text["irn-trt:code"] == "chunk" and lr.text["irn-trt:model"] == "irn_m_x2"
    assert run_cli(str(out / "bird_lr.png"), "-o", str(tmp_path / "up"), *model) == 0
    from_file = np.array(Image.open(tmp_path / "up" / "bird_hr.png"))
    np.testing.assert_array_equal(from_file, np.array(Image.open(out / "bird_roundtrip.png")))
    r = Rescaler.load(path, backend="ort-cpu")
    mem_lr = r.downscale(ImageData(bird))
    np.testing.assert_array_equal(read_image(out / "bird_lr.png").latent_code, mem_lr.latent_code)
    np.testing.assert_array_equal(r.upscale(mem_lr).rgb, from_file)
    # write_image / read_image keep the code as it was.
    write_image(tmp_path / "again.png", mem_lr)
    np.testing.assert_array_equal(
        read_image(tmp_path / "again.png").latent_code, mem_lr.latent_code
    )


def test_a_lost_or_damaged_code_falls_back_with_one_warning(
    m_x2: tuple[Path, torch.nn.Module],
    bird: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _ = m_x2
    r = Rescaler.load(path, backend="ort-cpu")
    lr = r.downscale(ImageData(bird))
    write_image(tmp_path / "bird_lr.png", lr)
    src = Image.open(tmp_path / "bird_lr.png")
    src.load()
    # The fallback: the decoder's z of the neutral code (every value 128).
    neutral = r.upscale(
        ImageData(lr.rgb, text=lr.text, latent_code=np.full_like(lr.latent_code, 128))
    )
    assert not np.array_equal(neutral.rgb, r.upscale(lr).rgb)

    def resave(name: str, chunk: bytes | None, text: bool = True) -> Path:
        info = PngInfo()
        for k, v in (src.text if text else {}).items():
            info.add_text(k, v)
        if chunk is not None:
            info.add(LATENT_CHUNK, chunk)
        path = tmp_path / f"{name}_lr.png"
        src.save(path, pnginfo=info)
        return path

    cases = {
        "stripped": (resave("stripped", None), "lost its latent-code chunk"),
        "damaged": (resave("damaged", b"IRL1garbage"), "damaged latent-code chunk"),
        "plain": (resave("plain", None, text=False), "no irn-trt metadata and no latent code"),
    }
    model = ["--model-dir", str(path), "--mode", "up"]
    for name, (file, words) in cases.items():
        capsys.readouterr()
        assert run_cli(str(file), "-o", str(tmp_path / "up"), *model) == 0
        err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
        assert len(err) == 1 and words in err[0] and "neutral latent code" in err[0], (name, err)
        up = np.array(Image.open(tmp_path / "up" / f"{name}_hr.png"))
        np.testing.assert_array_equal(up, neutral.rgb)


# --- manifests and GPU engine plans -----------------------------------------------------


def test_old_manifests_load_and_bad_grids_are_one_line(
    m_x2: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    from conftest import export_tiny

    plain = export_tiny("irn_x2", tmp_path / "irn_x2", seed=2)
    raw = json.loads((plain / MANIFEST_FILE).read_text())
    for g in raw["graphs"]:  # a manifest written before side codes existed
        for t in [*g["inputs"], *g["outputs"]]:
            t.pop("lr_grid")
    (plain / MANIFEST_FILE).write_text(json.dumps(raw))
    m = load_manifest(plain)
    assert m.lr_grid == 1 and m.side_code("down") is None and m.side_code("up") is None
    r = Rescaler.load(plain, backend="ort-cpu")
    hr = np.random.default_rng(0).integers(0, 256, (30, 22, 3), dtype=np.uint8)
    assert r.upscale(r.downscale(hr)).shape == hr.shape
    # A damaged side-code declaration is refused when the manifest loads.
    path, _ = m_x2
    raw = json.loads((path / MANIFEST_FILE).read_text())
    raw["graphs"][0]["outputs"][1]["lr_grid"] = 0
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(IRNError, match="lr_grid must be a positive integer"):
        load_manifest(bad)


def test_engine_plans_give_the_code_its_grid(m_x2: tuple[Path, torch.nn.Module]) -> None:
    m = load_manifest(m_x2[0])
    down = plan_bindings(m.graph("down", "fp16"), 2, {"hr": (2, 150, 130, 3)})
    assert [(b.name, b.shape, b.is_input) for b in down] == [
        ("hr", (2, 150, 130, 3), True),
        ("lr", (2, 75, 65, 3), False),
        ("code", (2, 19, 17, 4), False),
    ]
    up_graph = m.graph("up", "fp16")
    profiles = profile_for_graph(up_graph, m, (64, 64), max_batch=2)
    assert [(p.name, p.min, p.max) for p in profiles] == [
        ("lr", (1, 1, 1, 3), (2, 64, 64, 3)),
        ("code", (1, 1, 1, 4), (2, 16, 16, 4)),
    ]
    up = plan_bindings(up_graph, 2, {"lr": (1, 75, 65, 3), "code": (1, 19, 17, 4)})
    assert up[-1].shape == (1, 150, 130, 3)


def test_x4_code_grid_is_16_hr_px(tmp_path: Path) -> None:
    from conftest import export_tiny

    path = export_tiny("irn_m_x4", tmp_path / "irn_m_x4", seed=4)
    m = load_manifest(path)
    assert (m.tile_multiple, m.lr_grid, m.halo % 4) == (16, 4, 0)
    assert m.side_code("down").shape == ("N", "ceil(H/16)", "ceil(W/16)", 4)
    # An HR of 84x100: LR 21x25, code 6x7; the round trip restores the size.
    hr = np.array(Image.open(SET5 / "head.png").convert("RGB"))[100:184, 90:190]
    r = Rescaler.load(path, backend="ort-cpu")
    lr = r.downscale(ImageData(hr))
    assert lr.rgb.shape == (21, 25, 3) and lr.latent_code.shape == (6, 7, 4)
    assert r.upscale(lr).rgb.shape == hr.shape
    with pytest.raises(IRNError, match="multiple of 16"):
        Rescaler.load(path, backend="ort-cpu", tile=264)
