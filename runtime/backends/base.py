"""The one small interface every inference backend implements.

A backend runs one ONNX graph of a model directory (see ``runtime/manifest.py``)
on NumPy arrays. It loads lazily: constructing a backend is cheap and never
touches a GPU or compiles anything; the first ``run`` does. ``probe`` says,
without loading anything heavy, whether the backend can work on this machine.
``close`` (or the end of a ``with`` block) releases what loading created, as
Polygraphy's runners do; a closed backend loads again on its next ``run``.
"""

from __future__ import annotations

import abc
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..manifest import GraphInfo, ModelManifest

__all__ = ["BackendOptions", "Backend"]


@dataclass(frozen=True)
class BackendOptions:
    """Settings shared by all backends; each uses those that apply to it."""

    threads: int | None = None  # CPU threads (None: the backend's default)
    max_batch: int = 1  # tiles per call the backend may be given
    tile_hw: tuple[int, int] | None = None  # HR tile shape (H, W) for static/profile shapes
    cache_dir: Path | None = None  # engine / compiled-model cache (trt, ort-trt, ov-cpu)
    verbose: bool = False
    device: int = 0  # CUDA device (GPU backends)
    # TensorRT builder settings (trt, ort-trt): part of an engine's cache key.
    workspace_bytes: int = 4 << 30
    opt_level: int = 3  # builder_optimization_level, 0..5 (3: TensorRT's default)
    # Arithmetic precision when it differs from the graph's ("bf16": OpenVINO's
    # inference precision hint on an FP32 graph); None: the graph's own precision.
    inference_precision: str | None = None


class Backend(abc.ABC):
    """Runs one graph. Subclasses set ``name`` and implement ``probe``, ``_load``, ``_run``."""

    name: ClassVar[str]
    #: Whether several tiles per call make it faster (the tiler then batches).
    benefits_from_batch: ClassVar[bool] = False
    #: Whether every call must get exactly the tile shape (static engines): the
    #: tiler then pads images smaller than a tile and crops the result back.
    fixed_shape: ClassVar[bool] = False
    #: Whether the last load took the compiled model / engine from a cache; None for
    #: backends that keep no such cache (their load always starts from the graph).
    loaded_from_cache: bool | None = None

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        manifest: ModelManifest,
        graph: GraphInfo,
        options: BackendOptions | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.manifest = manifest
        self.graph = graph
        self.options = options or BackendOptions()
        self._loaded = False

    @property
    def graph_path(self) -> Path:
        return self.model_dir / self.graph.file

    @classmethod
    @abc.abstractmethod
    def probe(cls) -> str | None:
        """``None`` if this backend can run here, else a one-line reason why not."""

    @abc.abstractmethod
    def _load(self) -> None:
        """Create the session/engine (called once, on first use)."""

    @abc.abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run the graph; return its (first) output."""

    def _run_all(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the graph; return every output in the manifest's order (default: :meth:`_run`'s,
        for graphs with one output). Backends override it for graphs with a second output
        (IRN-M's side code)."""
        return [self._run(feeds)]

    def _close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what ``_load`` created, also after a ``_load`` that failed half-way."""

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        if self._loaded:
            return
        try:
            self._load()
        except BaseException:
            # A failed load frees what it allocated before the error (its own error wins).
            with contextlib.suppress(Exception):
                self._close()
            raise
        self._loaded = True

    def close(self) -> None:
        """Release sessions, engines and buffers (idempotent); the next ``run`` loads again."""
        try:
            self._close()
        finally:
            self._loaded = False

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.load()
        return self._run(feeds)

    def run_all(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output of the graph, in the order of ``graph.outputs``."""
        self.load()
        outs = self._run_all(feeds)
        if len(outs) != len(self.graph.outputs):
            raise RuntimeError(
                f"{self.describe()} returned {len(outs)} outputs, the graph has "
                f"{len(self.graph.outputs)}"
            )
        return outs

    def release_memory(self) -> None:
        """Free the working memory a backend keeps between calls (default: nothing kept).

        The runtime calls it after each image and direction, so a round trip's
        peak is one direction's, not both held at once.
        """
        return None

    def describe(self) -> str:
        return f"{self.name} ({self.graph.direction}.{self.graph.precision})"
