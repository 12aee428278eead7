"""``ov-cpu``: OpenVINO on the CPU, FP32 or BF16 (inference precision hint).

The fastest CPU path measured here (IRN x4 down, 960x544, 2 threads: ORT CPU
3.6 s, OpenVINO FP32 1.9 s, OpenVINO BF16 1.0 s on a CPU with AMX). BF16 needs a
CPU that OpenVINO reports as BF16-capable (AVX512-BF16 or AMX); it is the default
only with AMX (see :func:`bf16_by_default`).

Compiled models are cached (OpenVINO's ``CACHE_DIR`` property) under
``$XDG_CACHE_HOME/irn-trt/openvino`` (or ``BackendOptions.cache_dir``), so a second
process loads the compiled blob instead of compiling again. The graph is compiled from
its path, which lets OpenVINO skip reading and hashing the model on a cache hit (0.3 s
of a 0.8 s warm load of the x4 graph here); OpenVINO's key for such an entry does not
cover the file's content (a graph rewritten in place with the same size and mtime loaded
the old one in OpenVINO 2026.4), so each graph content gets its own folder, named by the
file's SHA-256 (:func:`~irn_trt.runtime.file_hashes.cached_file_sha256`, remembered while
the file is unchanged): a re-exported graph or another precision hint gets its own entry,
never a stale one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..engine_cache import user_cache_dir
from ..errors import IRNError
from ..file_hashes import cached_file_sha256
from .base import Backend

__all__ = ["OvCpuBackend", "bf16_by_default", "cpu_flags", "cpu_supports_bf16"]

_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_supports_bf16() -> bool:
    """Whether OpenVINO's CPU plugin lists BF16 among its optimisation capabilities."""
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # no OpenVINO, or no CPU plugin: no BF16
        return False


class OvCpuBackend(Backend):
    name = "ov-cpu"
    #: Whether the last load took the compiled model from OpenVINO's cache.
    loaded_from_cache: bool = False
    _compiled: Any = None
    _request: Any = None

    @classmethod
    def probe(cls) -> str | None:
        try:
            import openvino as ov
        except ImportError:
            return "openvino is not installed (pip install irn-trt[openvino])"
        try:
            # Asks the CPU plugin only: ``available_devices`` loads every plugin (GPU,
            # NPU), 0.1-0.2 s here and more where OpenCL finds GPUs.
            ov.Core().get_property("CPU", "FULL_DEVICE_NAME")
        except Exception as exc:  # no or a broken CPU plugin surfaces here
            return f"OpenVINO CPU plugin unusable ({type(exc).__name__})"
        return None

    def _load(self) -> None:
        import openvino as ov

        precision = self.options.inference_precision or self.graph.precision
        if precision not in _HINTS:
            raise IRNError(f"ov-cpu has no {precision} inference precision")
        if precision == "bf16" and not cpu_supports_bf16():
            raise IRNError("ov-cpu: this CPU has no BF16 support (use --precision fp32)")
        config: dict[str, str] = {
            # Always explicit: on AMX CPUs OpenVINO would otherwise pick BF16 by itself.
            "INFERENCE_PRECISION_HINT": _HINTS[precision] if precision != "fp16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        if self.options.threads:
            config["INFERENCE_NUM_THREADS"] = str(self.options.threads)
        core = ov.Core()
        try:
            cache = self._cache_entry()
            if cache is not None:
                config["CACHE_DIR"] = str(cache)
            self._compiled = core.compile_model(str(self.graph_path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long texts
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise IRNError(f"ov-cpu cannot load {self.graph_path}: {msg}") from None
        self.loaded_from_cache = cache is not None and bool(
            self._compiled.get_property("LOADED_FROM_CACHE")
        )
        self._request = self._compiled.create_infer_request()

    @property
    def cache_dir(self) -> Path | None:
        """Where compiled models are cached; None when that folder cannot be created."""
        path = self.options.cache_dir or user_cache_dir("openvino")
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError:
            return None  # read-only home, say: compile every time rather than fail
        return path

    def _cache_entry(self) -> Path | None:
        """This graph content's folder in the cache (named by the first 16 hex digits of
        the file's SHA-256); None when there is no cache folder.

        OpenVINO's key for an entry compiled from a path does not cover the file's
        content: without a folder per content, a graph rewritten at the same path could
        load the old one's compiled model.
        """
        root = self.cache_dir
        if root is None:
            return None
        entry = root / cached_file_sha256(self.graph_path)[:16]
        try:
            entry.mkdir(exist_ok=True, mode=0o700)
        except OSError:
            return None
        return entry

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        result = self._request.infer(feeds)
        return np.asarray(result[self._compiled.output(0)]).copy()

    def _run_all(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        # Outputs by index (OpenVINO's recommended way): the ONNX graph's order, which
        # is the manifest's (the exporter writes both from one list).
        result = self._request.infer(feeds)
        return [
            np.asarray(result[self._compiled.output(i)]).copy()
            for i in range(len(self.graph.outputs))
        ]

    def release_memory(self) -> None:
        # The infer request keeps the largest call's intermediate buffers until told.
        if self._loaded:
            self._compiled.release_memory()

    def _close(self) -> None:
        # The request holds the compiled model: drop it first.
        self._request = None
        self._compiled = None


#: BF16 is ov-cpu's default only where its Set5 round trip stays within 0.1 dB of FP32
#: and it is faster. Quality, shipped irn_x4 (Set5, z = 0, mod-crop, border 4, ov-cpu,
#: ``irn-bench --configs ov-cpu:fp32,ov-cpu:bf16 --quality ../shared/data/eval/Set5``):
#: FP32 34.985 dB, BF16 34.917 dB (-0.069). Speed: on a Xeon with AVX512-BF16 but no
#: AMX, 2 threads, six alternating FP32/BF16 pairs in one process, BF16 took 1.42x
#: FP32's time (down 480x272) and 1.41x (up 960x544), every pair 1.26-1.72x. OpenVINO's
#: fast BF16 path is AMX (its precision-control guide: AMX has no f32), so AMX-BF16 is
#: required (an earlier session measured BF16 faster, 5.0 vs 7.5 s, on a CPU whose
#: flags were not recorded).
BF16_WITHIN_QUALITY_BOUND = True


def bf16_by_default() -> bool:
    """Whether ``auto`` precision on ov-cpu means BF16 here: AMX-BF16, and OpenVINO lists BF16.

    AVX512-BF16 alone converts and computes slower than FP32 on these models (measured,
    see :data:`BF16_WITHIN_QUALITY_BOUND`); ``--precision bf16`` still runs it there.
    """
    return BF16_WITHIN_QUALITY_BOUND and "amx_bf16" in cpu_flags() and cpu_supports_bf16()
