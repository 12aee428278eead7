"""Backend registry: lazy imports, ``auto`` selection with reasons, fallback on load failure."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import gpu_unavailable_reason
from irn_trt.runtime.api import Rescaler, select_backend
from irn_trt.runtime.backends import AUTO_ORDER, backend_class, backend_names, candidates, get_spec
from irn_trt.runtime.backends.base import Backend
from irn_trt.runtime.errors import IRNError


def test_registry_imports_nothing_heavy() -> None:
    code = (
        "import sys, irn_trt.runtime.backends, irn_trt.runtime.api, irn_trt.runtime.cli\n"
        "names = ('torch', 'onnxruntime', 'openvino', 'tensorrt')\n"
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
    blobs = list(cache.iterdir())
    assert blobs and all(b.stat().st_size > 0 for b in blobs)
    second = ov(tmp_model_dir.path, m, graph, opts)
    second.load()
    assert second.loaded_from_cache is True
    assert list(cache.iterdir()) == blobs  # nothing recompiled or added
    x = {graph.inputs[0].name: np.full((1, 16, 16, 3), 128, dtype=np.uint8)}
    assert (first.run(x) == second.run(x)).all()
    # Another graph (as a re-export to the same path would be) is another entry.
    other = ov(tmp_model_dir.path, m, m.graph("up", "fp32"), opts)
    other.load()
    assert other.loaded_from_cache is False and len(list(cache.iterdir())) == len(blobs) + 1


def test_ov_cpu_default_cache_is_per_user(tmp_model_dir, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    m = tmp_model_dir.manifest
    be = backend_class("ov-cpu")(tmp_model_dir.path, m, m.graph("down", "fp32"))
    assert be.cache_dir == tmp_path / "xdg" / "irn-trt" / "openvino" and be.cache_dir.is_dir()
