"""Plugin engines are cached under a key that covers what they embed beyond the ONNX graph.

An AOT plugin engine carries PTX compiled from the kernel sources by the AOT glue and
one Triton version; the graph's SHA-256 covers none of them. ``irn_trt.plugins.
fingerprint()`` hashes them, and the engine-cache key of a plugin graph includes it, so
an edited kernel or another Triton is a cache miss (a rebuild), never stale PTX.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import metadata
from pathlib import Path

import irn_trt.plugins
import pytest
from conftest import SAMPLE_ENGINE_KEY as KEY
from irn_trt.plugins import FINGERPRINT_SOURCES, fingerprint
from irn_trt.runtime.engine_cache import EngineCache, plugin_fingerprint_for

PLUGIN_DIR = Path(irn_trt.plugins.__file__).parent


def _sources() -> dict[str, bytes]:
    return {name: (PLUGIN_DIR / name).read_bytes() for name in FINGERPRINT_SOURCES}


def test_fingerprint_covers_kernel_sources_glue_and_triton_version() -> None:
    sources = _sources()
    assert set(sources) == {"kernels.py", "geometry.py", "aot.py", "trt_plugins.py"}
    base = fingerprint(sources, "3.9.0")
    assert len(base) == 64 and base == fingerprint(dict(reversed(sources.items())), "3.9.0")
    # the defaults are this installation's files and Triton
    try:
        installed = metadata.version("triton")
    except metadata.PackageNotFoundError:
        installed = "absent"
    assert fingerprint() == fingerprint(sources, installed)
    changed = set()
    for name, data in sources.items():
        # one character of the text (e.g. a constant in a kernel) is enough
        edited = data.replace(b"1024", b"1025", 1) if b"1024" in data else data + b"#"
        assert edited != data
        changed.add(fingerprint({**sources, name: edited}, "3.9.0"))
    changed.add(fingerprint(sources, "3.9.1"))
    changed.add(fingerprint(sources, "absent"))
    assert base not in changed and len(changed) == len(sources) + 2


def test_only_plugin_graphs_get_a_fingerprint_in_their_key() -> None:
    assert plugin_fingerprint_for(()) == ""
    assert plugin_fingerprint_for(("irn::haar_down",)) == fingerprint()
    # a native key's dict (hence its digest and on-disk entry) is as before the field existed
    assert "plugin_fingerprint" not in KEY.to_dict()
    fp1 = fingerprint(_sources(), "3.9.0")
    fp2 = fingerprint(_sources(), "3.10.0")
    k1, k2 = replace(KEY, plugin_fingerprint=fp1), replace(KEY, plugin_fingerprint=fp2)
    assert k1.to_dict()["plugin_fingerprint"] == fp1
    assert len({KEY.digest(), k1.digest(), k2.digest()}) == 3
    assert len({KEY.entry_name(), k1.entry_name(), k2.entry_name()}) == 3


def test_new_triton_or_kernel_is_a_cache_miss(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "engines", warn=lambda m: pytest.fail(m))
    sources = _sources()
    old = replace(KEY, plugin_fingerprint=fingerprint(sources, "3.9.0"))
    cache.store(old, b"plan built with triton 3.9.0")
    assert cache.lookup(old) == b"plan built with triton 3.9.0"
    new_triton = replace(KEY, plugin_fingerprint=fingerprint(sources, "3.10.0"))
    edited = {**sources, "kernels.py": sources["kernels.py"] + b"\n# edited\n"}
    new_kernel = replace(KEY, plugin_fingerprint=fingerprint(edited, "3.9.0"))
    built = []
    for key in (new_triton, new_kernel):
        assert cache.lookup(key) is None
        plan, was_built = cache.get_or_build(key, lambda: built.append(1) or b"rebuilt")
        assert was_built and plan == b"rebuilt"
    assert len(built) == 2 and cache.lookup(old) == b"plan built with triton 3.9.0"


def test_engine_key_of_a_plugin_graph_carries_the_fingerprint(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from irn_trt.runtime.backends.trt import TrtBuildOptions, engine_key
    from irn_trt.runtime.cuda_util import GpuInfo
    from irn_trt.runtime.manifest import load_manifest
    from irn_trt.runtime.trt_plan import profile_for_graph
    from trt_toy_models import make_toy_model_dir

    make_toy_model_dir(tmp_path, scale=4, z_channels=5)
    m = load_manifest(tmp_path)
    native = m.graph("down", "fp16")
    plugged = replace(native, plugins=("irn::haar_down", "irn::pack_rgb8"))
    prof = profile_for_graph(native, m, (64, 64), 1)
    gpu = GpuInfo("NVIDIA H100 80GB HBM3", "9.0", 80 << 30, driver_version=12090)
    k_native = engine_key(m, native, native.sha256, "10.13.3", gpu, prof, TrtBuildOptions())
    k_plugged = engine_key(m, plugged, native.sha256, "10.13.3", gpu, prof, TrtBuildOptions())
    assert k_native.plugin_fingerprint == ""
    assert k_plugged.plugin_fingerprint == fingerprint(driver_version=12090)
    assert k_plugged.digest() != k_native.digest()
    # Another driver picks another PTX ISA for the kernels: another engine; a native
    # graph's key does not depend on the driver.
    older = replace(gpu, driver_version=12060)
    assert engine_key(m, plugged, native.sha256, "10.13.3", older, prof, TrtBuildOptions()) != (
        k_plugged
    )
    assert engine_key(m, native, native.sha256, "10.13.3", older, prof, TrtBuildOptions()) == (
        k_native
    )
