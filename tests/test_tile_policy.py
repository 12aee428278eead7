"""Tile policy: memory budget -> tile size (pure functions), default overlap, CLI flags."""

from __future__ import annotations

import json
import sys

import pytest
from irn_trt.runtime.api import Rescaler, default_tile_lr
from irn_trt.runtime.cli import main
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.manifest import MANIFEST_FILE, load_manifest
from irn_trt.runtime.memory import (
    DEFAULT_MAX_MEMORY_CAP,
    IMAGE_BYTES_PER_PX,
    PEAK_MODELS,
    budget_tile,
    default_max_memory,
    machine_memory,
    max_tile_pixels,
    parse_memory,
    tiles_by_budget,
)
from irn_trt.runtime.tiling import fit_tiles, plan_axis, plan_tiles

GIB = 1 << 30


@pytest.mark.parametrize(
    ("lr_h", "lr_w", "overlap", "max_px"),
    [(612, 1088, 19, 120_000), (747, 1328, 19, 200_000), (747, 1328, 120, 300_000),
     (100, 3000, 10, 20_000), (50, 60, 5, 400)],
)  # fmt: skip
def test_fit_tiles_fits_the_budget_with_the_least_compute(
    lr_h: int, lr_w: int, overlap: int, max_px: int
) -> None:
    th, tw = fit_tiles(lr_h, lr_w, overlap, max_px)
    assert th * tw <= max_px
    assert th > 2 * overlap and tw > 2 * overlap
    plan = plan_tiles(lr_h, lr_w, (th, tw), overlap)
    assert plan.tile_hw == (min(th, lr_h), min(tw, lr_w))
    computed = len(plan) * th * tw
    # No square tile within the budget computes fewer pixels.
    for edge in range(2 * overlap + 1, int(max_px**0.5) + 1):
        square = len(plan_axis(lr_h, edge, overlap)) * len(plan_axis(lr_w, edge, overlap))
        assert computed <= square * edge * edge


def test_an_image_within_the_budget_is_one_tile() -> None:
    assert fit_tiles(612, 1088, 19, 612 * 1088) is None
    assert fit_tiles(612, 1088, 19, 612 * 1088 - 1) is not None
    with pytest.raises(IRNError, match="overlap"):
        fit_tiles(612, 1088, 100, 150 * 150)  # tiles of at most 150 px cannot keep anything


def test_budget_tile_grows_with_the_budget_and_runs_4k_whole_when_it_fits() -> None:
    lr_h, lr_w = 612, 1088  # the 4352x2448 photo at x4
    hr_px = lr_h * lr_w * 16
    tiles = []
    for gib in (1, 2, 3, 4):
        tile = budget_tile("ov-cpu", "down", lr_h, lr_w, 4, 19, gib * GIB)
        assert tile is not None
        tiles.append(len(plan_tiles(lr_h, lr_w, tile, 19)))
        # The modelled peak of the chosen tile stays within the budget.
        m = PEAK_MODELS[("ov-cpu", "down")]
        assert m.base + m.per_px * tile[0] * tile[1] * 16 + IMAGE_BYTES_PER_PX * hr_px <= gib * GIB
    assert tiles == sorted(tiles, reverse=True) and tiles[0] > tiles[-1]
    assert budget_tile("ort-cpu", "up", lr_h, lr_w, 4, 19, 64 * GIB) is None
    with pytest.raises(IRNError, match="too small"):
        max_tile_pixels("ort-cpu", "down", 300 << 20, hr_px)


def test_default_budget_and_sizes() -> None:
    assert 0 < default_max_memory() <= min(DEFAULT_MAX_MEMORY_CAP, machine_memory() // 4)
    assert parse_memory("3G") == 3 * GIB
    assert parse_memory("2.5GiB") == int(2.5 * GIB)
    assert parse_memory("800M") == parse_memory("800") == 800 << 20
    for bad in ("", "three", "-1G", "0", "3X"):
        with pytest.raises(IRNError, match="--max-memory"):
            parse_memory(bad)
    assert tiles_by_budget("ov-cpu") and tiles_by_budget("ort-cpu")
    assert not tiles_by_budget("trt") and not tiles_by_budget("ort-cuda")


def test_rescaler_policy_per_backend(tmp_model_dir) -> None:
    from irn_trt.runtime.backends import backend_class

    m = tmp_model_dir.manifest
    assert m.effective_halo is None  # random weights: exact halo, as old manifests
    r = Rescaler.load(tmp_model_dir.path, backend="ort-cpu", max_memory=64 * GIB)
    assert r.overlap_lr == m.halo == m.overlap_halo
    assert r.count_tiles(2448, 4352) == 1  # fits: whole image, no overlap paid
    small = Rescaler.load(tmp_model_dir.path, backend="ort-cpu", max_memory=2 * GIB)
    n = small.count_tiles(2448, 4352)
    assert 1 < n < 100
    # GPU backends keep the fixed square default tile (static engine profiles).
    trt = backend_class("trt")
    assert r._tile(trt, "down", 612, 1088) == default_tile_lr(m.halo)
    exact = Rescaler.load(tmp_model_dir.path, backend="ort-cpu", overlap="exact")
    assert exact.overlap_lr == m.halo
    with pytest.raises(IRNError, match="exact"):
        Rescaler.load(tmp_model_dir.path, backend="ort-cpu", overlap="some")


def editable_copy(model_dir, dest):
    """``dest``: the graphs of ``model_dir`` linked, its manifest (returned as a dict) to be
    written by the test."""
    raw = json.loads((model_dir / MANIFEST_FILE).read_text())
    dest.mkdir()
    for f in model_dir.iterdir():
        if f.name != MANIFEST_FILE:
            (dest / f.name).symlink_to(f)
    return raw, dest


def test_effective_halo_is_the_default_overlap_and_old_manifests_load(
    tmp_model_dir, tmp_path
) -> None:
    raw, model = editable_copy(tmp_model_dir.path, tmp_path / "model")
    raw.pop("effective_halo", None)  # a manifest written before the field existed
    (model / MANIFEST_FILE).write_text(json.dumps(raw))
    assert load_manifest(model).overlap_halo == raw["halo"]
    raw["effective_halo"] = {"down": 15, "up": 17, "threshold_levels": 1e-6, "margin": 2}
    (model / MANIFEST_FILE).write_text(json.dumps(raw))
    r = Rescaler.load(model, backend="ort-cpu")
    assert r.overlap_lr == 17
    assert Rescaler.load(model, backend="ort-cpu", overlap="exact").overlap_lr == raw["halo"]
    raw["effective_halo"] = {"down": -1, "up": 17}
    (model / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(IRNError, match="effective_halo"):
        load_manifest(model)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--overlap", "wide", "'exact' or a number"), ("--overlap", "6", "multiple of the scale"),
     ("--max-memory", "lots", "--max-memory")],
)  # fmt: skip
def test_cli_flag_errors_are_one_line(
    capsys, tmp_model_dir, tmp_path, flag: str, value: str, message: str
) -> None:
    code = main(
        [str(tmp_path / "x.png"), "--model-dir", str(tmp_model_dir.path), "--backend",
         "ort-cpu", flag, value, "--quiet"]
    )  # fmt: skip
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code != 0
    assert len(err) == 1 and message in err[0], err


def test_cli_reports_the_memory_budget_that_planned_the_tiles(
    capsys, tmp_model_dir, tmp_path, set5_dir
) -> None:
    """--max-memory shows in the JSON summary, and a budget just above the model's base
    cost cuts the image into tiles; an explicit tile reports no budget."""
    from PIL import Image

    image = tmp_path / "baby.png"
    with Image.open(set5_dir / "baby.png") as im:
        im.convert("RGB").crop((0, 0, 512, 512)).save(image)
    summaries = {}
    runs = {
        "roomy": ["--max-memory", "8G"],
        "tight": ["--max-memory", "420M", "--overlap", "0"],
        "tiled": ["--tile", "64", "--overlap", "0"],
    }
    for name, flags in runs.items():
        code = main(
            [str(image), "-o", str(tmp_path / name), "--model-dir", str(tmp_model_dir.path),
             "--backend", "ort-cpu", "--quiet", "--json", str(tmp_path / f"{name}.json"), *flags]
        )  # fmt: skip
        assert code == 0, capsys.readouterr().err
        summaries[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert summaries["roomy"]["max_memory_mb"] == 8192 and summaries["roomy"]["tiles"] == 1
    assert summaries["tight"]["max_memory_mb"] == 420 and summaries["tight"]["tiles"] > 1
    assert summaries["tiled"]["max_memory_mb"] is None and summaries["tiled"]["tile"] == 64


def test_a_models_measured_slope_plans_its_tiles(tmp_model_dir, tmp_path) -> None:
    """A manifest's own peak slope replaces IRN x4's: a model that needs 4x the memory per
    pixel gets tiles of a quarter the area (OpenVINO scaled by IRN x4's ratio)."""
    from irn_trt.runtime.memory import MEASURED_SLOPE_MARGIN, bytes_per_hr_px

    irn = PEAK_MODELS[("ort-cpu", "up")].per_px
    assert bytes_per_hr_px("ort-cpu", "up") == irn
    assert bytes_per_hr_px("ort-cpu", "up", 4000) == 4000 * MEASURED_SLOPE_MARGIN
    ov_ratio = PEAK_MODELS[("ov-cpu", "up")].per_px / irn
    assert bytes_per_hr_px("ov-cpu", "up", 4000) == pytest.approx(4000 * 1.05 * ov_ratio)
    assert bytes_per_hr_px("ort-cpu", "up", 0) > 0  # a tiny graph's 0 is floored
    hr_px = 612 * 1088 * 16
    light = max_tile_pixels("ort-cpu", "down", 2 * GIB, hr_px)
    heavy = max_tile_pixels("ort-cpu", "down", 2 * GIB, hr_px, measured=3800)
    assert heavy == pytest.approx(light * 950 / (3800 * MEASURED_SLOPE_MARGIN), rel=1e-3)

    raw, model = editable_copy(tmp_model_dir.path, tmp_path / "model")
    budget = 2 * GIB
    tiles = {}
    for slope in (None, 950, 3800):
        raw["peak_bytes_per_hr_px"] = None if slope is None else {"down": slope, "up": slope}
        (model / MANIFEST_FILE).write_text(json.dumps(raw))
        assert load_manifest(model).peak_bytes_per_hr_px == raw["peak_bytes_per_hr_px"]
        r = Rescaler.load(model, backend="ort-cpu", max_memory=budget, overlap=0)
        tiles[slope] = r.count_tiles(2448, 4352)
    assert tiles[None] <= tiles[950] < tiles[3800]
    raw["peak_bytes_per_hr_px"] = {"down": 900}
    (model / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(IRNError, match="peak_bytes_per_hr_px.up"):
        load_manifest(model)


def test_the_exporter_measures_each_directions_peak_slope(tmp_path) -> None:
    """A real measurement (fresh ort-cpu processes at two sizes) of a tiny IRN_color and a
    tiny IRN x4: both directions recorded; IRN_color, whose blocks all run at full
    resolution, grows more per pixel (tiny models: about 600 against 190 B/px here)."""
    from conftest import tiny_config
    from irn_trt.export.api import ExportOptions, export_model
    from irn_trt.train.models import build_model, randomize_weights

    slopes = {}
    for name in ("irn_x4", "irn_color"):
        model = randomize_weights(build_model(tiny_config(name)), seed=1).eval()
        options = ExportOptions(precisions=("fp32",), measure_memory=True)
        manifest = export_model(model, tmp_path / name, options=options)
        slopes[name] = manifest.peak_bytes_per_hr_px
        assert load_manifest(tmp_path / name).peak_bytes_per_hr_px == slopes[name]
        assert all(isinstance(v, int) and v >= 0 for v in slopes[name].values())
    assert slopes["irn_color"]["down"] > max(100, slopes["irn_x4"]["down"])
    assert slopes["irn_color"]["up"] > max(100, slopes["irn_x4"]["up"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's VmHWM")
def test_a_childs_peak_rss_is_its_own() -> None:
    """ru_maxrss survives fork and exec (a child of a big process reads the parent's peak);
    peak_rss_bytes, which irn-trt-run's JSON and the memory probe use, does not."""
    import resource
    import subprocess

    import numpy as np

    ballast = np.ones(400 << 20, dtype=np.uint8)  # 400 MiB resident in this process
    # (ru_maxrss read in the same child gave 400+ MiB on Linux 6.18 here)
    code = "from irn_trt.runtime.memory import peak_rss_bytes; print(peak_rss_bytes())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ballast.sum() == ballast.size
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 > 400 << 20
    assert int(out.stdout) < 300 << 20


def test_memory_probe_stays_within_the_machine(tmp_path, monkeypatch, capsys) -> None:
    """The larger probe image shrinks to fit half the machine's memory; where even that is
    too small the export goes on without the field (one warning line), so the runtime
    keeps IRN x4's model."""
    from conftest import export_tiny
    from irn_trt.runtime import memory_probe

    model_dir = export_tiny("irn_x2", tmp_path / "m", seed=4)
    manifest = load_manifest(model_dir)
    graph = manifest.graph("down", "fp32")
    monkeypatch.setattr(memory_probe, "machine_memory", lambda: 300 << 20)
    with pytest.raises(RuntimeError, match="not enough memory"):
        memory_probe.measure_peak_slope(model_dir / graph.file, graph, 2, 2)

    from irn_trt.export.api import _measure_memory

    capsys.readouterr()
    assert _measure_memory(model_dir, manifest.graphs, 2, 2) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not measured (not enough memory" in err[0]
