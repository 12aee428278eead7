"""TensorRT planning logic that needs no GPU: dtypes, profiles, bindings, versions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from irn_trt.runtime.backends.trt import (
    TrtBuildOptions,
    describe_engine_io,
    engine_device_memory,
    engine_key,
)
from irn_trt.runtime.cuda_util import GpuInfo
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.manifest import load_manifest
from irn_trt.runtime.trt_plan import (
    DEFAULT_MAX_BATCH,
    TRT_TO_NUMPY,
    TensorSpec,
    allocation_bytes,
    check_engine_io,
    default_hr_tile,
    format_wxh,
    graph_tile_hw,
    known_accuracy_issues,
    numpy_dtype_for_trt,
    output_shape,
    parse_tile,
    parse_wxh,
    plan_bindings,
    profile_for_graph,
    profile_for_hr_tile,
    profile_key,
    strongly_typed_flag_needed,
    trt_name_for_numpy,
    trt_version_problem,
)
from trt_toy_models import make_toy_model_dir


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("toy")
    make_toy_model_dir(root, scale=4, z_channels=5)
    return root, load_manifest(root)


# -- dtype mapping ----------------------------------------------------------------------
def test_dtype_mapping_round_trips_for_every_numpy_type() -> None:
    mapped = {k: v for k, v in TRT_TO_NUMPY.items() if v is not None}
    assert {"FLOAT", "HALF", "UINT8", "INT32"} <= set(mapped)
    for trt_name, np_name in mapped.items():
        assert numpy_dtype_for_trt(trt_name) == np.dtype(np_name)
        assert trt_name_for_numpy(np_name) == trt_name
    assert numpy_dtype_for_trt("DataType.HALF") == np.float16  # str() of the enum member


@pytest.mark.parametrize("name", ["BF16", "FP8", "INT4"])
def test_dtypes_without_numpy_equivalent_are_refused(name: str) -> None:
    with pytest.raises(IRNError, match="no NumPy equivalent"):
        numpy_dtype_for_trt(name)


def test_unknown_dtypes_are_refused() -> None:
    with pytest.raises(IRNError, match="unknown TensorRT data type"):
        numpy_dtype_for_trt("COMPLEX")
    with pytest.raises(IRNError, match="no TensorRT equivalent"):
        trt_name_for_numpy(np.complex64)


# -- tiles and profiles -----------------------------------------------------------------
def test_parse_tile_is_width_by_height() -> None:
    # Every size flag is WxH (width first): 512 wide, 384 high -> (H, W) = (384, 512).
    assert parse_tile("512x384", 4) == (384, 512)
    assert parse_tile("256", 4) == (256, 256)
    assert parse_wxh("1920x1080", "--size") == (1920, 1080)
    assert format_wxh((384, 512)) == "512x384" and format_wxh((256, 256)) == "256"
    for bad in ("abc", "0x8", "4x4x4", "-8x8"):
        with pytest.raises(IRNError, match="tile"):
            parse_tile(bad, 4)
    with pytest.raises(IRNError, match="expected WxH"):
        parse_tile("big", 4)
    with pytest.raises(IRNError, match="multiples of the scale"):
        parse_tile("510x512", 4)


def test_profile_covers_tile_and_smaller_images(toy) -> None:
    _, m = toy
    down, up = m.graph("down", "fp16"), m.graph("up", "fp16")
    assert graph_tile_hw(down, 4, (512, 384)) == (512, 384)
    assert graph_tile_hw(up, 4, (512, 384)) == (128, 96)
    (hr,) = profile_for_graph(down, m, (512, 384), max_batch=3)
    assert (hr.name, hr.min, hr.opt, hr.max) == (
        "hr",
        (1, 4, 4, 3),
        (3, 512, 384, 3),
        (3, 512, 384, 3),
    )
    lr, z = profile_for_graph(up, m, (128, 96), max_batch=2)
    assert (lr.min, lr.max) == ((1, 1, 1, 3), (2, 128, 96, 3))
    assert (z.name, z.min, z.max) == ("z", (1, 5, 1, 1), (2, 5, 128, 96))  # NCHW z
    assert hr.covers((1, 64, 64, 3)) and hr.covers((3, 512, 384, 3))
    assert not hr.covers((4, 512, 384, 3)) and not hr.covers((1, 516, 384, 3))
    assert not hr.covers((1, 64, 64))
    with pytest.raises(IRNError, match="max batch"):
        profile_for_graph(down, m, (512, 512), max_batch=0)


def test_default_tile_and_batch_are_irn_trt_runs(toy) -> None:
    from irn_trt.runtime.api import default_tile_lr

    _, m = toy
    edge = default_tile_lr(m.halo) * m.scale
    assert default_hr_tile(m) == (edge, edge) and edge % m.scale == 0
    assert DEFAULT_MAX_BATCH >= 1


def test_profile_for_hr_tile_divides_the_up_graphs_tile(toy) -> None:
    _, m = toy
    down, up = m.graph("down", "fp16"), m.graph("up", "fp16")
    (hr,) = profile_for_hr_tile(down, m, (512, 384), max_batch=2)
    lr, _ = profile_for_hr_tile(up, m, (512, 384), max_batch=2)
    assert hr.max == (2, 512, 384, 3) and lr.max == (2, 128, 96, 3)
    edge = default_hr_tile(m)[0]
    (hr_default,) = profile_for_hr_tile(down, m)
    assert hr_default.max == (1, edge, edge, 3)
    with pytest.raises(IRNError, match="not a multiple of the scale"):
        profile_for_hr_tile(up, m, (510, 512))


def test_profile_key_is_canonical_and_distinguishes_profiles(toy) -> None:
    _, m = toy
    up = m.graph("up", "fp32")
    a = profile_for_graph(up, m, (128, 128), 1)
    assert profile_key(a) == profile_key(tuple(reversed(a)))  # order-independent
    assert profile_key(a) == "lr:1x1x1x3/1x128x128x3/1x128x128x3,z:1x5x1x1/1x5x128x128/1x5x128x128"
    assert profile_key(profile_for_graph(up, m, (128, 128), 2)) != profile_key(a)
    assert profile_key(profile_for_graph(up, m, (64, 128), 1)) != profile_key(a)


# -- binding plans ----------------------------------------------------------------------
def test_binding_plan_for_down_and_up(toy) -> None:
    _, m = toy
    down, up = m.graph("down", "fp16"), m.graph("up", "fp32")
    plan = plan_bindings(down, 4, {"hr": (2, 64, 96, 3)})
    assert [(b.name, b.dtype, b.shape, b.is_input) for b in plan] == [
        ("hr", "uint8", (2, 64, 96, 3), True),
        ("lr", "uint8", (2, 16, 24, 3), False),
    ]
    assert [b.nbytes for b in plan] == [2 * 64 * 96 * 3, 2 * 16 * 24 * 3]
    plan = plan_bindings(up, 4, {"lr": (1, 16, 8, 3), "z": (1, 5, 16, 8)})
    assert {b.name: b.nbytes for b in plan} == {"lr": 384, "z": 5 * 16 * 8 * 4, "hr": 64 * 32 * 3}
    with pytest.raises(IRNError, match="missing"):
        plan_bindings(up, 4, {"lr": (1, 16, 8, 3)})
    with pytest.raises(IRNError, match="not a multiple of the scale"):
        output_shape(down, 4, (1, 30, 32, 3))


def test_allocation_is_the_plan_at_the_profile_maximum(toy) -> None:
    _, m = toy
    down = m.graph("down", "fp32")
    profiles = profile_for_graph(down, m, (512, 512), max_batch=2)
    assert allocation_bytes(down, 4, profiles) == {"hr": 2 * 512 * 512 * 3, "lr": 2 * 128 * 128 * 3}


def test_engine_io_must_match_the_graph(toy) -> None:
    _, m = toy
    down = m.graph("down", "fp16")
    good = (
        TensorSpec("hr", "uint8", (-1, -1, -1, 3), True),
        TensorSpec("lr", "uint8", (-1, -1, -1, 3), False),
    )
    check_engine_io(good, down)
    wrong_dtype = (good[0], replace(good[1], dtype="float16"))
    with pytest.raises(IRNError, match="does not match down.fp16.onnx"):
        check_engine_io(wrong_dtype, down)
    with pytest.raises(IRNError, match="rebuild"):
        check_engine_io(good[:1], down)


class _Named:
    """Stands in for a TensorRT enum member (only ``.name`` is read)."""

    def __init__(self, name: str) -> None:
        self.name = name


class _FakeEngine:
    """Minimal stand-in for ICudaEngine's name-based I/O queries (the only fake here)."""

    num_io_tensors = 2
    device_memory_size_v2 = 1234

    def get_tensor_name(self, i: int) -> str:
        return ["hr", "lr"][i]

    def get_tensor_mode(self, name: str) -> _Named:
        return _Named("INPUT" if name == "hr" else "OUTPUT")

    def get_tensor_dtype(self, name: str) -> _Named:
        return _Named("UINT8")

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, -1, -1, 3)


def test_engine_io_description_and_device_memory() -> None:
    specs = describe_engine_io(_FakeEngine())
    assert specs == (
        TensorSpec("hr", "uint8", (-1, -1, -1, 3), True),
        TensorSpec("lr", "uint8", (-1, -1, -1, 3), False),
    )
    assert engine_device_memory(_FakeEngine()) == 1234

    class Legacy:
        device_memory_size = 99

    assert engine_device_memory(Legacy()) == 99


# -- versions and keys ------------------------------------------------------------------
def test_version_policy_compares_versions_not_strings() -> None:
    assert "too old" in trt_version_problem("8.6.1")
    assert trt_version_problem("10.0.1.6") is None and trt_version_problem("11.4.0.106") is None
    assert strongly_typed_flag_needed("10.13.3.9") and strongly_typed_flag_needed("10.9")
    assert not strongly_typed_flag_needed("11.0.0") and not strongly_typed_flag_needed("11.4.0.106")
    assert known_accuracy_issues("11.1.0.106") and "4813" in known_accuracy_issues("11.1.0.106")[0]
    # 4813 and 4846 are open with no fixed release: every 11.x from 11.1 on is flagged.
    assert known_accuracy_issues("11.2.1.2") and known_accuracy_issues("11.4.0.106")
    assert known_accuracy_issues("10.13.3") == [] and known_accuracy_issues("11.0.0.114") == []


def test_accuracy_warning_stops_at_the_fixed_release(monkeypatch: pytest.MonkeyPatch) -> None:
    from irn_trt.runtime import trt_plan
    from packaging.version import Version

    monkeypatch.setattr(trt_plan, "ACCURACY_ISSUES_FIXED_IN", Version("11.3"))
    assert known_accuracy_issues("11.2.1.2")
    # "11.10" > "11.3" as versions (a string comparison would say the opposite).
    assert known_accuracy_issues("11.3.0") == [] and known_accuracy_issues("11.10.0") == []
    with pytest.raises(IRNError, match="cannot parse"):
        trt_version_problem("ten")


def test_engine_key_reflects_graph_gpu_profile_and_builder(toy) -> None:
    root, m = toy
    g = m.graph("down", "fp16")
    prof = profile_for_graph(g, m, (512, 512), 1)
    gpu = GpuInfo("NVIDIA H100 80GB HBM3", "9.0", 80 << 30)
    k = engine_key(m, g, g.sha256, "10.13.3", gpu, prof, TrtBuildOptions())
    assert (k.model, k.direction, k.precision, k.compute_capability) == (
        "toy_x4",
        "down",
        "fp16",
        "9.0",
    )
    assert k.graph_sha256 == g.sha256 and k.profile == profile_key(prof)
    other = engine_key(
        m,
        g,
        g.sha256,
        "10.13.3",
        replace(gpu, name="NVIDIA L4", compute_capability="8.9"),
        prof,
        TrtBuildOptions(),
    )
    assert other.digest() != k.digest()
    assert (
        engine_key(m, g, g.sha256, "10.13.3", gpu, prof, TrtBuildOptions(opt_level=5)).digest()
        != k.digest()
    )
    assert Path(root / g.file).is_file()


def test_float_io_graphs_use_nchw_profiles(toy) -> None:
    from irn_trt.runtime.manifest import GraphInfo, TensorInfo

    _, m = toy
    hr = TensorInfo("hr", "float32", ("N", 3, "H", "W"), "NCHW")
    lr = TensorInfo("lr", "float32", ("N", 3, "h", "w"), "NCHW")
    down = GraphInfo("down", "fp16", "down.fp16.onnx", "", (hr,), (lr,))
    fm = replace(m, io="float32", scale=2, graphs=(down,))
    (p,) = profile_for_graph(down, fm, (256, 128), max_batch=4)
    assert (p.min, p.max) == ((1, 3, 2, 2), (4, 3, 256, 128))
    plan = plan_bindings(down, 2, {"hr": (4, 3, 256, 128)})
    assert [b.shape for b in plan] == [(4, 3, 256, 128), (4, 3, 128, 64)]
    assert plan[0].nbytes == 4 * 3 * 256 * 128 * 4
    bad = GraphInfo("down", "fp16", "x.onnx", "", (replace(hr, layout="NCTW"),), (lr,))
    with pytest.raises(IRNError, match="unsupported layout"):
        profile_for_graph(bad, fm, (256, 128))
