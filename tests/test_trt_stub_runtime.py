"""The TensorRT path on the CPU, against stand-ins at the tensorrt / cuda-python boundary.

``tests/trt_stub.py`` replaces only the two libraries that cannot load here; everything
of ours runs for real: irn-build, the engine cache, the builder calls, the one stderr
logger, the trt backend's bindings and pinned copies, irn-trt-run, and every release
path (``close``, failed loads, the plugin engine runner). Engines "run" their ONNX
graph in ONNX Runtime, so outputs are compared with the ort-cpu backend's.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import trt_stub
from irn_trt.runtime import trt_builder
from irn_trt.runtime.backends import BackendOptions
from irn_trt.runtime.backends.ort_cpu import OrtCpuBackend
from irn_trt.runtime.backends.ort_gpu import OrtTensorRTBackend
from irn_trt.runtime.backends.trt import TensorRTBackend
from irn_trt.runtime.build_cli import main as irn_build
from irn_trt.runtime.cli import main as irn_trt_run
from irn_trt.runtime.engine_cache import MARKER_FILE, EngineCache
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.image_io import read_image, write_image
from irn_trt.runtime.manifest import load_manifest
from irn_trt.runtime.trt_builder import BuildSpec, TrtLogSink, build_engine, make_logger
from irn_trt.runtime.trt_plan import ProfileShapes
from trt_toy_models import make_toy_model_dir

TILE = (32, 64)  # HR (H, W): non-square, so an HxW / WxH mix-up cannot pass


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("toy")
    make_toy_model_dir(root, scale=4, precisions=("fp32",))
    return root, load_manifest(root)


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> trt_stub.Stub:
    return trt_stub.install(monkeypatch)


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# -- item 7: one logger, on stderr --------------------------------------------------------


def test_log_sink_filters_by_severity_and_never_writes_stdout() -> None:
    out = io.StringIO()
    sink = TrtLogSink(out)
    for severity in range(5):  # INTERNAL_ERROR .. VERBOSE
        sink.emit(severity, f"m{severity}")
    assert out.getvalue().splitlines() == [
        "[TensorRT] internal error: m0",
        "[TensorRT] error: m1",
        "[TensorRT] warning: m2",
    ]
    sink.set_verbose(True)
    sink.emit(4, "detail")
    assert out.getvalue().endswith("[TensorRT] verbose: detail\n")


def test_one_stderr_logger_for_builder_runtime_and_plugin_runner(
    stub: trt_stub.Stub, toy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, m = toy
    g = m.graph("down", "fp32")
    shape = (1, 32, 32, 3)
    spec = BuildSpec(root / g.file, (ProfileShapes("hr", shape, shape, shape),))
    plan = build_engine(spec, warn=lambda msg: None)
    backend = TensorRTBackend(root, m, g, BackendOptions(cache_dir=tmp_path, tile_hw=TILE))
    backend.load()
    backend.close()
    from irn_trt.plugins.trt_engine import EngineRunner

    with EngineRunner(plan) as runner:
        x = {"hr": rgb(32, 32)[None]}
        got = runner.run(x)["lr"]
    want = OrtCpuBackend(root, m, g).run(x)
    assert np.array_equal(got, want)
    loggers = stub.stats.loggers  # every Builder, OnnxParser and Runtime got one
    assert len(loggers) >= 5 and all(lg is loggers[0] for lg in loggers)
    assert isinstance(loggers[0], stub.trt.ILogger) and loggers[0] is make_logger(stub.trt)
    out, err = capsys.readouterr()
    assert "stub builder" not in out  # TensorRT's warnings never reach stdout
    assert "[TensorRT] warning: stub builder: this engine runs on ONNX Runtime" in err
    assert "[TensorRT] info" not in err  # below the default threshold
    make_logger(stub.trt, verbose=True).log(stub.trt.ILogger.INFO, "now shown")
    assert "[TensorRT] info: now shown" in capsys.readouterr().err


# -- item 10: one set of options, irn-build's engines are irn-trt-run's ------------------------


def test_engine_built_by_irn_build_is_a_cache_hit_for_irn_trt_run(
    stub: trt_stub.Stub, toy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = toy
    cache = tmp_path / "engines"
    engine_flags = ["--tile", "64x32", "--batch", "2", "--cache-dir", str(cache),
                    "--workspace-gb", "1", "--opt-level", "2"]  # fmt: skip
    assert irn_build([str(root), "--precision", "fp32", *engine_flags, "--json", "--quiet"]) == 0
    built = json.loads(capsys.readouterr().out)["engines"]
    assert [e["built"] for e in built] == [True, True] and stub.stats.builds == 2
    assert built[0]["profile"] == "hr:1x4x4x3/2x32x64x3/2x32x64x3"  # 64 wide, 32 high

    image = tmp_path / "photo.png"
    write_image(image, read_image_array(rgb(72, 136)))
    out = tmp_path / "out"
    run = [str(image), "-o", str(out), "--model-dir", str(root), "--backend", "trt",
           "--precision", "fp32", "--mode", "roundtrip", "--quiet", "--json", "-"]  # fmt: skip
    assert irn_trt_run([*run, *engine_flags]) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["backend"] == "trt" and summary["failed"] == 0
    assert summary["tile"] == "64x32"
    assert stub.stats.builds == 2  # both engines came from irn-build's cache entries
    assert stub.cudart.live() == 0  # irn-trt-run released every buffer and stream
    assert stub.cudart.copies > 0 and stub.cudart.pageable_copies == 0  # pinned staging

    # The same images through ort-cpu, with the same tiles: identical bytes.
    ref = tmp_path / "ref"
    cpu = [str(image), "-o", str(ref), "--model-dir", str(root), "--backend", "ort-cpu",
           "--precision", "fp32", "--mode", "roundtrip", "--quiet", "--tile", "64x32"]  # fmt: skip
    assert irn_trt_run(cpu) == 0
    for name in ("photo_lr.png", "photo_roundtrip.png"):
        assert np.array_equal(read_image(out / name).rgb, read_image(ref / name).rgb), name

    # Another batch is another profile: a miss, never irn-build's engine.
    other = [*engine_flags[:2], "--batch", "1", *engine_flags[4:]]
    assert irn_trt_run([*run, "--overwrite", *other]) == 0
    assert stub.stats.builds == 4


def read_image_array(arr: np.ndarray):  # noqa: ANN201 - ImageData
    from irn_trt.runtime.image_io import ImageData

    return ImageData.from_array(arr)


def test_deprecated_max_batch_still_builds_the_same_engine(
    stub: trt_stub.Stub, toy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = toy
    base = [str(root), "--precision", "fp32", "--direction", "down", "--tile", "64x32",
            "--cache-dir", str(tmp_path), "--json", "--quiet"]  # fmt: skip
    assert irn_build([*base, "--batch", "2"]) == 0
    first = json.loads(capsys.readouterr().out)["engines"][0]
    assert irn_build([*base, "--max-batch", "2"]) == 0
    out, err = capsys.readouterr()
    second = json.loads(out)["engines"][0]
    assert "--max-batch is deprecated, use --batch" in err
    assert second["engine"] == first["engine"] and second["built"] is False


# -- item 8: every path releases what it allocated ------------------------------------------


def test_trt_backend_close_releases_everything_and_is_idempotent(
    stub: trt_stub.Stub, toy, tmp_path: Path
) -> None:
    root, m = toy
    g = m.graph("down", "fp32")
    opts = BackendOptions(cache_dir=tmp_path, tile_hw=TILE, max_batch=2)
    x = {"hr": np.stack([rgb(32, 64, 1), rgb(32, 64, 2)])}
    with TensorRTBackend(root, m, g, opts) as be:
        got = be.run(x)
        assert (
            be.loaded and stub.cudart.live() == 2 * 2 + 1
        )  # 2 tensors x (device, pinned) + stream
        assert len(stub.cudart.host) == 2
    assert not be.loaded and stub.cudart.live() == 0
    be.close()  # again: nothing to do, no error
    assert np.array_equal(got, OrtCpuBackend(root, m, g).run(x))
    assert np.array_equal(be.run(x), got)  # a closed backend loads again
    assert be.built is False  # ... from the cache
    be.close()
    assert stub.cudart.live() == 0


@pytest.mark.parametrize("failure", ["context", "address", "malloc"])
def test_a_failed_trt_load_frees_what_it_had_allocated(
    stub: trt_stub.Stub, toy, tmp_path: Path, failure: str
) -> None:
    root, m = toy
    if failure == "context":
        stub.stats.fail_context = True
        message = "could not create an execution context"
    elif failure == "address":
        stub.stats.reject_address = True
        message = "rejected the buffer address"
    else:
        stub.cudart.fail_malloc_after = 1
        message = "cudaMalloc failed: cudaErrorMemoryAllocation"
    be = TensorRTBackend(root, m, m.graph("down", "fp32"), BackendOptions(cache_dir=tmp_path))
    with pytest.raises(IRNError, match=message):
        be.load()
    assert not be.loaded and stub.cudart.live() == 0
    assert be._engine is None and be._context is None and be._runtime is None


def test_plugin_engine_runner_refuses_a_missing_context_and_frees(stub: trt_stub.Stub, toy) -> None:
    from irn_trt.plugins.trt_engine import EngineRunner

    root, m = toy
    shape = (1, 32, 32, 3)
    spec = BuildSpec(
        root / m.graph("down", "fp32").file, (ProfileShapes("hr", shape, shape, shape),)
    )
    plan = build_engine(spec, warn=lambda msg: None)
    stub.stats.fail_context = True
    with pytest.raises(IRNError, match="could not create an execution context"):
        EngineRunner(plan)
    assert stub.cudart.live() == 0
    stub.stats.fail_context = False
    runner = EngineRunner(plan)
    runner.run({"hr": rgb(32, 32)[None]})
    assert stub.cudart.live() > 0
    runner.close()
    runner.close()
    assert stub.cudart.live() == 0


def test_irn_build_releases_cuda_when_a_build_fails(
    stub: trt_stub.Stub, toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from irn_trt.runtime import cuda_util

    closed = []
    real_close = cuda_util.CudaRuntime.close
    monkeypatch.setattr(
        cuda_util.CudaRuntime, "close", lambda self: (closed.append(1), real_close(self))[1]
    )

    def broken(spec: BuildSpec, warn) -> bytes:  # noqa: ANN001
        raise IRNError("TensorRT failed to build an engine from down.fp32.onnx")

    monkeypatch.setattr("irn_trt.runtime.backends.trt.build_engine", broken)
    code = irn_build([str(root_of(toy)), "--precision", "fp32", "--cache-dir", str(tmp_path)])
    assert code == 2 and "failed to build" in capsys.readouterr().err
    assert closed == [1]


def root_of(toy) -> Path:  # noqa: ANN001
    return toy[0]


# -- item 11: timing cache that TensorRT cannot read -----------------------------------------


def test_unreadable_timing_cache_is_replaced_not_fatal(stub: trt_stub.Stub, toy, tmp_path: Path):
    root, m = toy
    timing = tmp_path / "timing.cache"
    timing.write_bytes(b"garbage from an older TensorRT")
    stub.stats.timing_blob_readable = False  # createTimingCache -> nullptr -> None
    shape = (1, 8, 8, 3)
    spec = BuildSpec(
        root / m.graph("down", "fp32").file,
        (ProfileShapes("hr", shape, shape, shape),),
        timing_cache=timing,
    )
    warnings: list[str] = []
    assert build_engine(spec, warnings.append).startswith(trt_stub.PLAN_MAGIC)
    assert len(warnings) == 1 and "is unusable" in warnings[0] and "new one" in warnings[0]
    assert stub.stats.timing_caches_made[-1] == b""  # a fresh cache was made and used
    assert timing.read_bytes().startswith(b"timing:")  # and saved over the bad file


def test_builds_without_a_timing_cache_when_none_can_be_made(
    stub: trt_stub.Stub, toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, m = toy
    shape = (1, 8, 8, 3)
    spec = BuildSpec(
        root / m.graph("down", "fp32").file,
        (ProfileShapes("hr", shape, shape, shape),),
        timing_cache=tmp_path / "t.cache",
    )
    monkeypatch.setattr(trt_builder, "_load_timing_cache", trt_builder._load_timing_cache)
    real = stub.trt.Builder.create_builder_config

    def config_without_timing(self):  # noqa: ANN001, ANN202
        cfg = real(self)
        cfg.create_timing_cache = lambda blob: None
        return cfg

    monkeypatch.setattr(stub.trt.Builder, "create_builder_config", config_without_timing)
    warnings: list[str] = []
    assert build_engine(spec, warnings.append).startswith(trt_stub.PLAN_MAGIC)
    assert warnings == ["TensorRT could not create a timing cache; building without one"]
    assert not (tmp_path / "t.cache").exists()


# -- item 9: ort-trt first, then trt: no warning about our own cache -------------------------


def test_trt_after_ort_trt_finds_a_marked_cache(stub: trt_stub.Stub, toy, tmp_path: Path) -> None:
    root, m = toy
    cache = tmp_path / "engines"
    warnings: list[str] = []
    opts = BackendOptions(cache_dir=cache, tile_hw=TILE)
    OrtTensorRTBackend(root, m, m.graph("down", "fp32"), opts, warn=warnings.append).providers()
    assert (cache / MARKER_FILE).is_file() and (cache / "ort-trt" / MARKER_FILE).is_file()
    for _ in range(2):  # build, then load from the cache
        with TensorRTBackend(root, m, m.graph("down", "fp32"), opts, warn=warnings.append) as be:
            be.load()
    assert be.built is False
    assert warnings == [], warnings
    assert EngineCache(cache).trust_problems() == []
