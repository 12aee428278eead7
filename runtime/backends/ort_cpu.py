"""``ort-cpu``: ONNX Runtime on the CPU, the universal fallback (always installed)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import IRNError
from .base import Backend

__all__ = ["OrtCpuBackend", "cpu_run_options", "cpu_session_options"]


def cpu_session_options(threads: int | None) -> Any:
    """The session options of ``ort-cpu`` (also used by the exporter's memory probe)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def cpu_run_options() -> Any:
    """Run options that give the arena's memory back after every call: otherwise each
    session keeps its largest call's activations (a round trip held down's while up ran:
    768^2 HR peaked at 1024 MiB instead of 668). Calls take seconds; re-allocating costs
    milliseconds."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


class OrtCpuBackend(Backend):
    name = "ort-cpu"
    _session: Any = None
    _run_options: Any = None

    @classmethod
    def probe(cls) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install 'irn-trt[cpu]')"
        return None

    def _load(self) -> None:
        import onnxruntime as ort

        if self.options.inference_precision not in (None, self.graph.precision):
            raise IRNError(
                f"ort-cpu cannot run {self.graph.precision} graphs in "
                f"{self.options.inference_precision}"
            )
        so = cpu_session_options(self.options.threads)
        try:
            self._session = ort.InferenceSession(
                str(self.graph_path), sess_options=so, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types for bad files
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise IRNError(f"ort-cpu cannot load {self.graph_path}: {msg}") from None
        self._run_options = cpu_run_options()

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run(None, feeds, self._run_options)[0]

    def _run_all(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = [t.name for t in self.graph.outputs]
        return list(self._session.run(names, feeds, self._run_options))

    def _close(self) -> None:
        # ONNX Runtime frees a session (and its arena) when the last reference goes.
        self._session = None
        self._run_options = None
