"""Backend registry: lazy imports, ``auto`` selection with reasons, fallback on load failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import gpu_unavailable_reason
from irn_trt.runtime.api import Rescaler, select_backend
from irn_trt.runtime.backends import AUTO_ORDER, backend_class, backend_names, candidates, get_spec
from irn_trt.runtime.backends.base import Backend
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.manifest import file_sha256


def test_registry_imports_nothing_heavy() -> None:
    code = (
        "import sys, irn_trt.runtime.backends, irn_trt.runtime.api, irn_trt.runtime.cli\n"
        # tqdm and urllib (xml.sax.saxutils) cost every irn-trt-run's start-up; needed by few.
        "names = ('torch', 'onnxruntime', 'openvino', 'tensorrt', 'tqdm', 'urllib.request')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_registered_backend_resolves_to_its_class() -> None:
    assert set(backend_names()) == {"trt", "ort-trt", "ort-cuda", "ov-cpu", "ort-cpu"}
    assert AUTO_ORDER[-1] == "ort-cpu"  # the universal fallback comes last
    for name in backend_names():
        cls = backend_class(name)
        assert issubclass(cls, Backend) and cls.name == name
    with pytest.raises(IRNError, match="unknown backend"):
        get_spec("cuda-magic")


def test_auto_skips_unusable_backends_with_reasons(tmp_model_dir) -> None:
    manifest = tmp_model_dir.manifest
    sel, fallbacks = select_backend("auto", "auto", manifest)
    cands = {c.name: c for c in candidates()}
    usable = [n for n in AUTO_ORDER if cands[n].cls is not None]
    assert sel.backend == usable[0]
    assert [c.name for c in fallbacks] == usable[1:]
    for line in sel.skipped:
        name, _, reason = line.partition(": ")
        assert cands[name].cls is None and reason == cands[name].reason and "\n" not in reason
    if gpu_unavailable_reason() is not None:
        # No GPU here: the GPU backends are skipped, each with its reason.
        assert {"trt", "ort-trt", "ort-cuda"} <= {s.split(":")[0] for s in sel.skipped}
        assert sel.backend in ("ov-cpu", "ort-cpu")


@pytest.mark.skipif(gpu_unavailable_reason() is None, reason="a GPU is present")
def test_requesting_trt_without_gpu_is_one_line(tmp_model_dir) -> None:
    with pytest.raises(IRNError, match="backend trt cannot run here") as exc:
        select_backend("trt", "auto", tmp_model_dir.manifest)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("flags", "openvino_lists_bf16", "expected"),
    [
        ({"avx512f", "avx512_bf16"}, True, "fp32"),  # AVX512-BF16 alone: measured slower
        ({"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, True, "bf16"),
        ({"avx512f", "amx_bf16"}, False, "fp32"),  # OpenVINO must list BF16 as well
        (set(), False, "fp32"),
    ],
)
def test_ov_cpu_auto_precision_is_bf16_only_with_amx(
    tmp_model_dir, monkeypatch, flags, openvino_lists_bf16, expected
) -> None:
    from irn_trt.runtime.backends import ov_cpu

    if candidates_reason("ov-cpu") is not None:
        pytest.skip("openvino is not installed")
    monkeypatch.setattr(ov_cpu, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(ov_cpu, "cpu_supports_bf16", lambda: openvino_lists_bf16)
    sel, _ = select_backend("ov-cpu", "auto", tmp_model_dir.manifest)
    assert sel.precision == expected


def test_cpu_flags_reads_this_machine() -> None:
    from irn_trt.runtime.backends.ov_cpu import cpu_flags

    flags = cpu_flags()
    # Every x86-64 CPU has SSE2; elsewhere /proc/cpuinfo has no x86 flags line.
    assert "sse2" in flags or not any(f.startswith("sse") for f in flags)


def candidates_reason(name: str) -> str | None:
    return {c.name: c.reason for c in candidates()}[name]


def test_precision_checks(tmp_model_dir) -> None:
    m = tmp_model_dir.manifest
    with pytest.raises(IRNError, match="does not run bf16"):
        select_backend("ort-cpu", "bf16", m)
    with pytest.raises(IRNError, match="unknown precision"):
        select_backend("ort-cpu", "int3", m)
    sel, _ = select_backend("ort-cpu", "auto", m)
    assert sel.precision == "fp32"


def test_fallback_when_a_backend_fails_to_load(tmp_model_dir, monkeypatch) -> None:
    """A backend that probes fine but fails to load: auto moves on, saying why."""
    ov = backend_class("ov-cpu")
    if ov.probe() is not None:
        pytest.skip(f"ov-cpu unavailable: {ov.probe()}")

    def broken(self: Backend) -> None:
        raise RuntimeError("simulated compile failure\nwith a second line")

    monkeypatch.setattr(ov, "_load", broken)
    logs: list[str] = []
    r = Rescaler.load(
        tmp_model_dir.path, backend="auto", precision="fp32", log=logs.append, no_tile=True
    )
    if r.selection.backend != "ov-cpu":
        pytest.skip("auto picks a GPU backend here")
    be = r.backend("down")
    assert be.name == "ort-cpu" and r.selection.backend == "ort-cpu"
    assert any("ov-cpu failed to load (simulated compile failure)" in s for s in logs)
    assert all("\n" not in s for s in logs)
    # Without auto there is nothing to fall back to: one line, no traceback.
    r2 = Rescaler.load(tmp_model_dir.path, backend="ov-cpu", precision="fp32", no_tile=True)
    with pytest.raises(IRNError, match="backend ov-cpu failed to load: simulated compile failure$"):
        r2.backend("down")


def test_ov_cpu_second_load_uses_the_compiled_model_cache(tmp_model_dir, tmp_path) -> None:
    """The first load compiles and fills the cache; a second (fresh Core) loads the blob."""
    from irn_trt.runtime.backends.base import BackendOptions

    ov = backend_class("ov-cpu")
    if ov.probe() is not None:
        pytest.skip(f"ov-cpu unavailable: {ov.probe()}")
    m = tmp_model_dir.manifest
    graph = m.graph("down", "fp32")
    cache = tmp_path / "ov-cache"
    opts = BackendOptions(threads=1, cache_dir=cache, inference_precision="fp32")
    first = ov(tmp_model_dir.path, m, graph, opts)
    first.load()
    assert first.loaded_from_cache is False
    blobs = sorted(cache.rglob("*.blob"))
    assert blobs and all(b.stat().st_size > 0 for b in blobs)
    # One folder per graph content, named by the file's SHA-256.
    assert [b.parent.name for b in blobs] == [file_sha256(tmp_model_dir.path / graph.file)[:16]]
    second = ov(tmp_model_dir.path, m, graph, opts)
    second.load()
    assert second.loaded_from_cache is True
    assert sorted(cache.rglob("*.blob")) == blobs  # nothing recompiled or added
    x = {graph.inputs[0].name: np.full((1, 16, 16, 3), 128, dtype=np.uint8)}
    assert (first.run(x) == second.run(x)).all()
    # Another graph is another entry.
    other = ov(tmp_model_dir.path, m, m.graph("up", "fp32"), opts)
    other.load()
    assert other.loaded_from_cache is False and len(list(cache.rglob("*.blob"))) == len(blobs) + 1


def test_ov_cpu_cache_is_never_stale_after_a_same_size_rewrite(tmp_model_dir, tmp_path) -> None:
    """A graph rewritten in place with other weights, same size and mtime (OpenVINO's own
    key for a path would take the old compiled model): compiled again, new results."""
    from irn_trt.runtime.backends.base import BackendOptions
    from irn_trt.runtime.costs import conv_peak_onnx
    from irn_trt.runtime.manifest import GraphInfo, TensorInfo

    ov = backend_class("ov-cpu")
    if ov.probe() is not None:
        pytest.skip(f"ov-cpu unavailable: {ov.probe()}")
    shape = (1, 8, 16, 16)
    old, new = conv_peak_onnx(8, 16, 16, seed=0), conv_peak_onnx(8, 16, 16, seed=1)
    assert len(old) == len(new) and old != new
    path = tmp_path / "model" / "conv.onnx"
    path.parent.mkdir()
    path.write_bytes(old)
    st = path.stat()

    def backend(cache: Path | None) -> Backend:
        graph = GraphInfo(
            "peak", "fp32", path.name, file_sha256(path),
            (TensorInfo("x", "float32", shape, "NCHW"),),
            (TensorInfo("y", "float32", shape, "NCHW"),),
        )  # fmt: skip
        opts = BackendOptions(threads=1, cache_dir=cache, inference_precision="fp32")
        return ov(path.parent, tmp_model_dir.manifest, graph, opts)

    x = {"x": np.random.default_rng(0).random(shape, dtype=np.float32)}
    cache = tmp_path / "ov-cache"
    with backend(cache) as be:
        y_old = be.run(x)
        assert be.loaded_from_cache is False
    with path.open("r+b") as f:  # in place: same inode
        f.write(new)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    with backend(cache) as be:
        y_new = be.run(x)
        assert be.loaded_from_cache is False
    with backend(None) as be:  # no cache at all: what the new graph computes
        assert (be.run(x) == y_new).all() and not (y_new == y_old).all()


def test_ov_cpu_default_cache_is_per_user(tmp_model_dir, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    m = tmp_model_dir.manifest
    be = backend_class("ov-cpu")(tmp_model_dir.path, m, m.graph("down", "fp32"))
    assert be.cache_dir == tmp_path / "xdg" / "irn-trt" / "openvino" and be.cache_dir.is_dir()


# -- releasing what backends hold (close, context managers, fallbacks) ----------------------


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory: pytest.TempPathFactory):
    from trt_toy_models import make_toy_model_dir

    root = tmp_path_factory.mktemp("toy")
    make_toy_model_dir(root, scale=4, precisions=("fp32",))
    return root


def _held(be: Backend) -> list:
    """The library objects a CPU backend keeps while loaded (session / compiled model)."""
    names = ("_session", "_run_options", "_compiled", "_request")
    return [getattr(be, n) for n in names if getattr(be, n, None) is not None]


@pytest.mark.parametrize("name", ["ort-cpu", "ov-cpu"])
def test_cpu_backends_close_and_reload(toy_dir, name: str) -> None:
    from irn_trt.runtime.manifest import load_manifest

    cls = backend_class(name)
    if cls.probe() is not None:
        pytest.skip(f"{name} unavailable: {cls.probe()}")
    m = load_manifest(toy_dir)
    x = {"hr": np.random.default_rng(0).integers(0, 256, (1, 16, 24, 3), dtype=np.uint8)}
    with cls(toy_dir, m, m.graph("down", "fp32")) as be:
        first = be.run(x)
        assert be.loaded and _held(be)
    assert not be.loaded and _held(be) == []  # the with block released them
    be.close()  # idempotent
    assert (be.run(x) == first).all() and be.loaded  # loads again on demand
    be.close()
    assert _held(be) == []


def test_a_failed_cpu_load_keeps_nothing(toy_dir, tmp_path) -> None:
    import shutil

    from irn_trt.runtime.manifest import load_manifest

    bad = tmp_path / "model"
    shutil.copytree(toy_dir, bad)
    (bad / "down.fp32.onnx").write_bytes(b"not onnx")
    m = load_manifest(bad)
    be = backend_class("ort-cpu")(bad, m, m.graph("down", "fp32"))
    with pytest.raises(IRNError, match="ort-cpu cannot load"):
        be.load()
    assert not be.loaded and _held(be) == []


def test_rescaler_close_releases_its_backends(toy_dir) -> None:
    img = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    with Rescaler.load(toy_dir, backend="ort-cpu", precision="fp32") as r:
        lr = r.downscale(img)
        r.upscale(lr)
        loaded = list(r._backends.values())
        assert len(loaded) == 2 and all(be.loaded for be in loaded)
    assert r._backends == {} and not any(be.loaded or _held(be) for be in loaded)
    r.close()  # idempotent
    assert (r.downscale(img) == lr).all()  # still usable: loads again
    r.close()


def test_fallback_closes_the_backends_it_drops(toy_dir, monkeypatch) -> None:
    """A backend that loads for ``down`` but fails for ``up``: auto falls back to ort-cpu and
    closes the ``down`` backend it leaves behind; the failed one kept nothing either."""
    import irn_trt.runtime.backends as registry

    ov = registry.backend_class("ov-cpu")
    if ov.probe() is not None:
        pytest.skip(f"ov-cpu unavailable: {ov.probe()}")
    made: list[Backend] = []

    class FailsOnUp(ov):  # a real ov-cpu backend whose up graph fails after compiling
        def _load(self) -> None:
            made.append(self)
            super()._load()
            if self.graph.direction == "up":
                raise RuntimeError("simulated failure after compiling")

    real = registry.backend_class
    monkeypatch.setattr(
        registry, "backend_class", lambda name: FailsOnUp if name == "ov-cpu" else real(name)
    )
    logs: list[str] = []
    r = Rescaler.load(toy_dir, backend="auto", precision="fp32", log=logs.append)
    if r.selection.backend != "ov-cpu":
        pytest.skip("auto picks a GPU backend here")
    img = np.random.default_rng(2).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    lr = r.downscale(img)
    assert r.backend("down") is made[0] and made[0].loaded
    r.upscale(lr)  # up fails on ov-cpu: fall back
    assert r.selection.backend == "ort-cpu"
    assert any("ov-cpu failed to load (simulated failure" in s for s in logs)
    assert [be.graph.direction for be in made] == ["down", "up"]
    assert not any(be.loaded for be in made) and all(_held(be) == [] for be in made)
    assert {be.name for be in r._backends.values()} == {"ort-cpu"}
    r.close()


def test_engine_options_reach_the_backends_and_are_checked(toy_dir, tmp_path) -> None:
    from irn_trt.runtime.options import EngineOptions

    opts = EngineOptions(cache_dir=tmp_path / "eng", device=0, workspace_bytes=1 << 30, opt_level=1)
    r = Rescaler.load(toy_dir, backend="ort-cpu", tile="96x64", batch=2, options=opts)
    assert r.tile_lr == (16, 24) and r.engine.batch == 2  # "96x64": 96 wide, 64 high
    bo = r._options(backend_class("trt"))  # what a GPU backend would be given
    assert (bo.tile_hw, bo.max_batch, bo.cache_dir) == ((64, 96), 2, tmp_path / "eng")
    assert (bo.workspace_bytes, bo.opt_level) == (1 << 30, 1)
    assert r._options(backend_class("ort-cpu")).cache_dir is None  # engine cache is GPU-only
    with pytest.raises(IRNError, match="--tile 90x64 must be a positive multiple of the scale 4"):
        Rescaler.load(toy_dir, backend="ort-cpu", tile="90x64")
    with pytest.raises(IRNError, match="tile is given twice"):
        Rescaler.load(toy_dir, backend="ort-cpu", tile=64, options=EngineOptions(tile_hw=(64, 64)))
    with pytest.raises(IRNError, match="--plugins graphs run on the trt backend only"):
        Rescaler.load(toy_dir, backend="ort-cpu", options=EngineOptions(plugins=True))
    with pytest.raises(IRNError, match="--batch must be at least 1"):
        EngineOptions(batch=0)
    assert EngineOptions.from_dict(opts.to_dict()) == opts


def test_gpu_sessions_preload_the_pip_cuda_libraries() -> None:
    # onnxruntime-gpu's providers find the nvidia-* wheels only after preload_dlls();
    # a build without it, or a preload that fails, must not stop the load.
    from types import SimpleNamespace

    from irn_trt.runtime.backends.ort_gpu import _preload_gpu_libraries

    calls = []
    _preload_gpu_libraries(
        SimpleNamespace(preload_dlls=lambda: calls.append(1)), "CUDAExecutionProvider"
    )
    assert calls == [1]

    def broken() -> None:
        raise OSError("libcudnn.so.9: cannot open shared object file")

    _preload_gpu_libraries(SimpleNamespace(preload_dlls=broken), "CUDAExecutionProvider")
    _preload_gpu_libraries(SimpleNamespace(), "TensorrtExecutionProvider")  # old ORT, no TRT
