"""Python API for embedding: ``Rescaler.load().downscale(img)`` / ``.upscale(lr)``.

Images are :class:`~irn_trt.runtime.image_io.ImageData` (RGB pixels, alpha,
colour kind, ICC profile, irn-trt LR metadata), as ``read_image`` gives and
``write_image`` takes: ``downscale`` returns an LR that carries its metadata and
``upscale`` reads it back, restoring the exact original size and colour kind.
Plain arrays work too: HxWx3 uint8 RGB (HxWx4 keeps an alpha plane, resized
with a classic bicubic filter since IRN only models RGB; HxW grey comes back
grey), with ``original_size`` passed by hand. Models whose manifest declares a side
code (IRN-M) return it with the LR (``ImageData.latent_code``) and take it back; they
need ``ImageData``. The backend is picked once
(``auto``: the fastest that can run here, falling back with a reason if it
fails to load) and sessions/engines load lazily on first use. ``close()`` (or
``with Rescaler.load(...) as r:``) releases them. GPU engines are shaped, built and
found with :class:`~irn_trt.runtime.options.EngineOptions`, the same object
``irn-build`` uses, so engines it built are the ones found here.
``upscale(lr, lr_jpeg_quality=Q)`` first restores a JPEG-decoded LR with the model's
compression restore module (:mod:`.restore`). Torch-free.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from .backends import AUTO_ORDER, Backend, BackendOptions, Candidate, candidates, get_spec
from .codecs import codec_label
from .errors import IRNError
from .file_hashes import cached_file_sha256
from .image_io import DAMAGED_LATENT_NOTE, ImageData, resize_alpha
from .manifest import (
    RESTORE_DIRECTION,
    GraphInfo,
    ModelManifest,
    TensorInfo,
    load_manifest,
)
from .memory import budget_tile, default_max_memory, tiles_by_budget
from .model_store import DEFAULT_MODEL, find_model_dir, find_model_for_scale
from .options import EngineOptions
from .pngmeta import KEY_PREFIX, LRMetadata
from .scales import format_scale, parse_scale, resize_exact
from .scales import lr_size as scaled_lr_size
from .tiling import (
    TileConfig,
    TilePlan,
    TileSize,
    pad_to_multiple,
    plan_tiles,
    run_tiled_planes,
)
from .trt_plan import format_wxh, parse_wxh

__all__ = [
    "ALPHA_RESIZED_NOTE",
    "NO_METADATA_NOTE",
    "PRECISIONS",
    "EngineOptions",
    "Selection",
    "Rescaler",
    "default_tile_lr",
    "select_backend",
    "text_with_metadata",
]

PRECISIONS = ("auto", "fp32", "fp16", "bf16")

Log = Callable[[str], None]


def _silent(_: str) -> None:
    return None


def default_tile_lr(halo: int, grid: int = 1) -> int:
    """Default tile edge in LR pixels: 256 (1024 HR at x4), larger if the halo would eat it.

    The kept core is tile - 2*halo; at least half the tile edge keeps the
    recomputed overlap below ~3x the work and memory stays fixed per tile. A
    multiple of ``grid`` (the side code's, IRN-M), where tiles must start and end.
    """
    return -(-max(256, 4 * halo) // grid) * grid


@dataclass(frozen=True)
class Selection:
    """The backend and precision in use, and why."""

    backend: str
    precision: str  # "fp32" | "fp16" | "bf16"
    reason: str
    skipped: tuple[str, ...] = ()  # "name: why not" for backends passed over

    def describe(self) -> str:
        text = f"backend {self.backend} ({self.precision}): {self.reason}"
        if self.skipped:
            text += "; skipped " + "; ".join(self.skipped)
        return text


def _graph_precision(precision: str) -> tuple[str, str | None]:
    """User precision -> (graph file precision, inference precision override)."""
    if precision == "bf16":
        return "fp32", "bf16"  # BF16 arithmetic on the FP32 graph (OpenVINO hint)
    return precision, None


def _default_precision(name: str, manifest: ModelManifest) -> str:
    """The backend's default precision among those the model directory has graphs for."""
    have = set(manifest.precisions("down")) & set(manifest.precisions("up"))
    spec = get_spec(name)
    if name == "ov-cpu" and "fp32" in have:
        from .backends.ov_cpu import bf16_by_default

        if bf16_by_default():
            return "bf16"
    for p in spec.precisions:
        if p != "bf16" and p in have:
            return p
    raise IRNError(f"model {manifest.model} has no graphs that {name} can run (has {sorted(have)})")


def _check_precision(name: str, precision: str, manifest: ModelManifest) -> None:
    """Refuse, before any work, a precision this backend, CPU or model directory cannot run."""
    spec = get_spec(name)
    if precision not in spec.precisions:
        raise IRNError(
            f"backend {name} does not run {precision} (choose from {', '.join(spec.precisions)})"
        )
    if precision == "bf16" and name == "ov-cpu":
        from .backends.ov_cpu import cpu_supports_bf16

        if not cpu_supports_bf16():
            raise IRNError(
                "--precision bf16: this CPU has no BF16 support (OpenVINO lists none); "
                "use --precision fp32"
            )
    graph_precision = _graph_precision(precision)[0]
    for direction in ("down", "up"):
        manifest.graph(direction, graph_precision)  # raises a clear error if missing


def select_backend(
    backend: str, precision: str, manifest: ModelManifest, order: tuple[str, ...] = AUTO_ORDER
) -> tuple[Selection, list[Candidate]]:
    """Pick the backend; returns the selection and the further usable candidates (fallbacks)."""
    if precision not in PRECISIONS:
        raise IRNError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if backend != "auto":
        cand = candidates((get_spec(backend).name,))[0]
        if cand.cls is None:
            raise IRNError(f"backend {backend} cannot run here: {cand.reason}")
        prec = _default_precision(backend, manifest) if precision == "auto" else precision
        _check_precision(backend, prec, manifest)
        return Selection(backend, prec, "requested"), []
    usable: list[Candidate] = []
    skipped: list[str] = []
    for cand in candidates(order):
        if cand.cls is None:
            skipped.append(f"{cand.name}: {cand.reason}")
        elif precision != "auto" and precision not in get_spec(cand.name).precisions:
            skipped.append(f"{cand.name}: does not run {precision}")
        else:
            usable.append(cand)
    if not usable:
        raise IRNError("no backend can run here: " + "; ".join(skipped))
    first = usable[0]
    prec = _default_precision(first.name, manifest) if precision == "auto" else precision
    _check_precision(first.name, prec, manifest)
    reason = "fastest available" if not skipped else "fastest available here"
    return Selection(first.name, prec, reason, tuple(skipped)), usable[1:]


class Rescaler:
    """Downscale / upscale uint8 images with one model directory and one backend."""

    def __init__(
        self,
        model_dir: Path,
        manifest: ModelManifest,
        selection: Selection,
        fallbacks: list[Candidate],
        requested_precision: str,
        tile_lr: TileSize | None,
        overlap_lr: int,
        threads: int | None,
        engine: EngineOptions,
        log: Log,
        output_scale: float | None = None,
        whole: bool = False,
        max_memory: int | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.manifest = manifest
        self.selection = selection
        self._fallbacks = list(fallbacks)
        self._requested_precision = requested_precision
        # Explicit --tile in LR px (an int: square; (h, w) otherwise); None: backend policy.
        self.tile_lr = tile_lr
        self.whole = whole  # --no-tile
        self.max_memory = max_memory or default_max_memory()  # bytes, CPU tile policy
        self.overlap_lr = overlap_lr
        self.threads = threads
        self.engine = engine  # GPU engine shape, build options, cache, device, plugins
        self._log = log
        #: HR size / LR size of ``downscale`` (the model's scale unless a smaller one was asked).
        self.output_scale = float(manifest.scale) if output_scale is None else output_scale
        self._backends: dict[str, Backend] = {}
        self._verified: set[str] = set()  # graph files whose SHA-256 matched the manifest
        self.tiles_run = 0  # tiles processed since load (for summaries)
        self.alpha_code = "chunk"  # where downscale keeps IRN-A's alpha code (see load)
        self.seconds = 0.0  # time spent in backends since load
        self.overlap_request: int | str | None = None  # load's ``overlap`` (restore.py)
        self.last_restore = None  # the RestoreChoice of the last upscale's restore step
        #: Per loaded graph (``down``, ``up``, ``restore.q<Q>``): seconds its load took
        #: (a failed backend and its fallback included) and whether the compiled model or
        #: engine came from a cache (None: the backend keeps no such cache).
        self.load_seconds: dict[str, float] = {}
        self.loaded_from_cache: dict[str, bool | None] = {}

    # --- construction ------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike[str] | None = None,
        backend: str = "auto",
        precision: str = "auto",
        tile: int | str | None = None,
        overlap: int | str | None = None,
        no_tile: bool = False,
        threads: int | None = None,
        batch: int | None = None,
        log: Log | None = None,
        model: str | None = None,
        scale: float | None = None,
        max_memory: int | None = None,
        options: EngineOptions | None = None,
        alpha_code: str = "chunk",
    ) -> Rescaler:
        """Open a model directory (cheap: nothing is compiled until the first image).

        ``model_dir`` is an ``irn-export`` output; without it, ``model`` is looked
        up in the model search path (``irn_trt.runtime.model_store``): by default
        ``irn_x4``, or with ``scale`` the model of the nearest integer scale at or
        above it. ``scale`` (in (1, 8], at most the model's) is the output scale:
        a scale below the model's runs with a bicubic resize around the model.
        ``tile`` and ``overlap`` are HR pixels and must be multiples of the scale;
        ``overlap="exact"`` is the full receptive field (the manifest's ``halo``),
        the default its effective halo where recorded. Without ``tile``, GPU
        backends (engine profile shapes) use :func:`default_tile_lr`, CPU backends
        whole images or the largest tiles whose modelled peak RSS fits ``max_memory``
        bytes (default :func:`irn_trt.runtime.memory.default_max_memory`);
        ``no_tile`` runs whole images. ``tile`` is one number (a square) or ``"WxH"``.
        ``options`` carries what GPU engines depend on (tile, batch, cache folder, device,
        builder settings, plugin graphs), as ``irn-build`` takes them; ``tile`` and
        ``batch`` are shorthands for its fields. ``alpha_code`` (IRN-A models): where
        ``downscale`` keeps the alpha code, ``"chunk"`` (a private PNG chunk: the LR
        looks like the picture everywhere) or ``"png-alpha"`` (the paper's RGBA PNG).
        Every problem with these arguments, the model directory or the precision is an
        ``IRNError`` here, before any image is touched.
        """
        engine = options or EngineOptions()
        if tile is not None:
            if engine.tile_hw is not None:
                raise IRNError("the tile is given twice (tile= and options.tile_hw)")
            w, h = (tile, tile) if isinstance(tile, int) else parse_wxh(str(tile), "--tile")
            engine = engine.with_tile((h, w))
        if batch is not None:
            if engine.batch is not None and engine.batch != batch:
                raise IRNError("the batch is given twice (batch= and options.batch)")
            if batch < 1:
                raise IRNError(f"--batch must be at least 1, got {batch}")
            engine = replace(engine, batch=batch)
        out_scale = None if scale is None else parse_scale(scale)
        if model_dir is not None:
            model_dir = Path(model_dir)
        elif model is None and out_scale is not None:
            model_dir = find_model_for_scale(out_scale)
        else:
            model_dir = find_model_dir(model or DEFAULT_MODEL)
        manifest = load_manifest(model_dir)
        if model is not None and manifest.model != model:
            raise IRNError(f"{model_dir} holds {manifest.model}, not the requested {model}")
        if alpha_code not in ("chunk", "png-alpha"):
            raise IRNError(f"--alpha-code {alpha_code!r} must be chunk or png-alpha")
        s = manifest.scale
        # HR tile sizes and offsets: multiples of the scale, and of the side code's grid
        # (IRN-M) times the scale; the messages name what the number is.
        m = manifest.tile_multiple
        what = f"the scale {s}" if m == s else f"{m} (the scale {s} x the side code's grid)"
        if out_scale is not None and out_scale > s:
            raise IRNError(
                f"--scale {format_scale(out_scale)} needs a model of scale {math.ceil(out_scale)} "
                f"or more; {manifest.model} is x{s}"
            )
        overlap_request = overlap
        if isinstance(overlap, str):
            if overlap != "exact":
                raise IRNError(f"--overlap {overlap!r} must be 'exact' or a number of HR pixels")
            overlap = manifest.halo * s
        if max_memory is not None and max_memory <= 0:
            raise IRNError(f"--max-memory must be positive, got {max_memory} bytes")
        tile_hw = engine.tile_hw
        if tile_hw is not None and (min(tile_hw) <= 0 or tile_hw[0] % m or tile_hw[1] % m):
            raise IRNError(
                f"--tile {engine.tile_text} must be a positive multiple of {what} (HR px)"
            )
        if overlap is not None and (overlap < 0 or overlap % m):
            raise IRNError(f"--overlap {overlap} must be a non-negative multiple of {what} (HR px)")
        if tile_hw is not None and no_tile:
            raise IRNError("--tile and --no-tile contradict each other")
        if threads is not None and threads < 1:
            raise IRNError(f"--threads must be at least 1, got {threads}")
        grid = manifest.lr_grid
        overlap_lr = -(-manifest.overlap_halo // grid) * grid if overlap is None else overlap // s
        tile_lr: TileSize | None = None
        if tile_hw is not None:
            th, tw = tile_hw[0] // s, tile_hw[1] // s
            tile_lr = th if th == tw else (th, tw)
            if min(th, tw) <= 2 * overlap_lr:
                raise IRNError(
                    f"--tile {engine.tile_text} must be larger than twice the overlap "
                    f"({overlap_lr * s} HR px{'' if overlap is not None else ', the model halo'})"
                )
        order = AUTO_ORDER
        if engine.plugins:
            # Plugin graphs use irn::* TensorRT plugins: only the trt backend runs them.
            if backend not in ("auto", "trt"):
                raise IRNError(f"--plugins graphs run on the trt backend only, not {backend}")
            order = ("trt",)
        selection, fallbacks = select_backend(backend, precision, manifest, order)
        rescaler = cls(
            model_dir,
            manifest,
            selection,
            fallbacks,
            precision,
            tile_lr,
            overlap_lr,
            threads,
            engine,
            log or _silent,
            float(s) if out_scale is None else out_scale,
            whole=no_tile,
            max_memory=max_memory,
        )
        rescaler.alpha_code = alpha_code
        rescaler.overlap_request = overlap_request
        for direction in ("down", "up"):  # a damaged graph is named now, not per image
            rescaler._verify_graph(rescaler._graph(direction))
        rescaler._log(selection.describe())
        return rescaler

    # --- backends ----------------------------------------------------------------------
    @property
    def scale(self) -> int:
        return self.manifest.scale

    def _options(self, cls: type[Backend]) -> BackendOptions:
        _, inference = _graph_precision(self.selection.precision)
        tile_hw = None
        fixed = self._fixed_tile_lr(cls)
        if fixed is not None:
            th, tw = _lr_hw(fixed)
            tile_hw = (th * self.scale, tw * self.scale)
        e = self.engine
        return BackendOptions(
            threads=self.threads,
            max_batch=e.batch_for(cls.benefits_from_batch),
            tile_hw=tile_hw,
            # The engine cache is for GPU engines; ov-cpu keeps its own compiled-model cache.
            cache_dir=e.cache_dir if get_spec(cls.name).gpu else None,
            verbose=e.verbose,
            inference_precision=inference,
            device=e.device,
            workspace_bytes=e.workspace_bytes,
            opt_level=e.opt_level,
        )

    @property
    def graph_precision(self) -> str:
        """The precision of the graph files in use (BF16 runs the FP32 graphs)."""
        return _graph_precision(self.selection.precision)[0]

    def _graph(self, direction: str, quality: int | None = None) -> GraphInfo:
        if direction == RESTORE_DIRECTION:  # the CRM graph of a JPEG quality (restore.py)
            assert quality is not None
            return self.manifest.restore_graph(quality, self.graph_precision).graph
        return self.engine.graph(self.manifest, direction, self.graph_precision)

    def _verify_graph(self, graph: GraphInfo) -> None:
        """The graph file must be the one the manifest names (hash), else re-export."""
        if graph.file in self._verified:
            return
        path = self.model_dir / graph.file
        if not path.is_file():
            raise IRNError(f"{path} is missing; re-export the model with irn-export")
        # Remembered per user while the file's size, times and inode are unchanged.
        if cached_file_sha256(path) != graph.sha256:
            raise IRNError(
                f"{path} does not match the SHA-256 in {self.model_dir / 'manifest.json'} "
                f"(damaged or replaced); re-export the model with irn-export"
            )
        self._verified.add(graph.file)

    def backend(self, direction: str, quality: int | None = None) -> Backend:
        """The loaded backend for ``down``, ``up`` or ``restore`` (with the graph's JPEG
        ``quality``); falls back (auto) if loading fails."""
        key = direction if quality is None else f"{direction}.q{quality}"
        be = self._backends.get(key)
        if be is not None:
            return be
        from .backends import backend_class

        t0 = time.perf_counter()
        while True:
            cls = backend_class(self.selection.backend)
            graph = self._graph(direction, quality)
            self._verify_graph(graph)
            be = cls(self.model_dir, self.manifest, graph, self._options(cls))
            try:
                be.load()  # a failed load frees what it had allocated (Backend.load)
            except Exception as exc:  # any load failure: fall back (auto) or report in one line
                with contextlib.suppress(Exception):  # its own error is the one to report
                    be.close()
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if not self._fallbacks:
                    raise IRNError(
                        f"backend {self.selection.backend} failed to load: {msg}"
                    ) from None
                nxt = self._fallbacks.pop(0)
                prec = self._requested_precision
                if prec == "auto" or prec not in get_spec(nxt.name).precisions:
                    prec = _default_precision(nxt.name, self.manifest)
                failed = self.selection.backend
                self._log(f"backend {failed} failed to load ({msg}); falling back to {nxt.name}")
                self.selection = Selection(
                    nxt.name,
                    prec,
                    f"fallback after {self.selection.backend} failed",
                    (*self.selection.skipped, f"{self.selection.backend}: {msg}"),
                )
                # The other direction's, loaded on the failed backend: release, then move on.
                self._close_backends(raise_errors=False)
                continue
            self._backends[key] = be
            self.load_seconds[key] = time.perf_counter() - t0
            self.loaded_from_cache[key] = be.loaded_from_cache
            return be

    def _close_backends(self, raise_errors: bool = True) -> None:
        backends = list(self._backends.values())
        self._backends.clear()
        errors = []
        for be in backends:
            try:
                be.close()
            except Exception as exc:  # noqa: BLE001 - close the others, report the first
                errors.append(exc)
        if errors and raise_errors:
            raise errors[0]

    def close(self) -> None:
        """Release every loaded backend (sessions, engines, GPU buffers); idempotent.

        The rescaler stays usable: the next image loads its backends again.
        """
        self._close_backends()

    def __enter__(self) -> Rescaler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- running -----------------------------------------------------------------------
    def _fixed_tile_lr(self, cls: type[Backend]) -> TileSize | None:
        """The tile (LR px) of ``--tile``, or the square default of a GPU (engine-shape) backend."""
        if self.whole:
            return None
        if self.tile_lr is None and not tiles_by_budget(cls.name):
            return default_tile_lr(self.manifest.halo, self.manifest.lr_grid)
        return self.tile_lr

    def _tile(self, cls: type[Backend], direction: str, lr_h: int, lr_w: int) -> TileSize | None:
        """The tile for one image: fixed (``--tile``, GPU) or fitted to the memory budget (CPU)."""
        if self.whole or self.tile_lr is not None or not tiles_by_budget(cls.name):
            return self._fixed_tile_lr(cls)
        return budget_tile(
            cls.name,
            direction,
            lr_h,
            lr_w,
            self.scale,
            self.overlap_lr,
            self.max_memory,
            self.manifest.lr_grid,
            (self.manifest.peak_bytes_per_hr_px or {}).get(direction),
        )

    def _tile_config(self, cls: type[Backend], direction: str, lr_h: int, lr_w: int) -> TileConfig:
        batch = self.engine.batch_for(cls.benefits_from_batch)
        tile = self._tile(cls, direction, lr_h, lr_w)
        return TileConfig(
            tile,
            self.overlap_lr,
            batch=batch,
            pad_to_tile=cls.fixed_shape,
            grid=self.manifest.lr_grid,
        )

    def _to_feed(self, x: np.ndarray) -> np.ndarray:
        """(B, h, w, C) uint8 -> the graph's input convention."""
        if self.manifest.io == "uint8":
            return np.ascontiguousarray(x)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)

    def _run_graph(self, be: Backend, xs: list[np.ndarray]) -> list[np.ndarray]:
        """(B, h, w, C) uint8 inputs -> every output as (B, h', w', C') uint8, through the
        graph's own I/O convention: the image, then (IRN-M) the side code, as the manifest
        declares them."""
        g = be.graph
        feeds = {g.inputs[0].name: self._to_feed(xs[0])}
        side = iter(xs[1:])
        for extra in g.inputs[1:]:
            if extra.lr_grid is not None:  # a side code (IRN-M): tiled like the image
                feeds[extra.name] = self._to_feed(next(side))
            else:  # the latent z (z policy "input"): zero, the best for PSNR
                n, h, w = xs[0].shape[:3]
                feeds[extra.name] = np.zeros((n, self.manifest.z_channels, h, w), extra.dtype)
        t0 = time.perf_counter()
        outs = be.run_all(feeds)
        self.seconds += time.perf_counter() - t0
        if self.manifest.io == "uint8":
            for out in outs:
                if out.dtype != np.uint8:
                    raise IRNError(f"{be.describe()} returned {out.dtype}, expected uint8")
            return outs
        return [
            np.clip(np.rint(np.asarray(out, dtype=np.float32) * 255.0), 0, 255)
            .astype(np.uint8)
            .transpose(0, 2, 3, 1)
            for out in outs
        ]

    def _rescale(
        self,
        direction: str,
        img: np.ndarray,
        on_tile: Callable[[int], None] | None,
        side: np.ndarray | None = None,
    ) -> list[np.ndarray]:
        """Run one direction, tiled: the image (and ``side``, the side code that ``up``
        takes) in, every output of the graph out (``down``: the LR, then its side code)."""
        be = self.backend(direction)
        s = self.scale
        in_per_lr, out_per_lr = (s, 1) if direction == "down" else (1, s)
        g = be.graph

        def ratio(t: TensorInfo, image: int) -> int | Fraction:
            return Fraction(1, t.lr_grid) if t.lr_grid is not None else image

        inputs: list[tuple[np.ndarray, int | Fraction]] = [(img, in_per_lr)]
        coded_in = [t for t in g.inputs[1:] if t.lr_grid is not None]
        if coded_in:
            if side is None:
                raise IRNError(f"{g.file} needs its side code ({coded_in[0].name})")
            inputs.append((side, ratio(coded_in[0], in_per_lr)))
        out_ratios = [ratio(t, out_per_lr) for t in g.outputs]

        def run_batch(xs: list[np.ndarray]) -> list[np.ndarray]:
            self.tiles_run += xs[0].shape[0]
            return self._run_graph(be, xs)

        lr_h, lr_w = img.shape[0] // in_per_lr, img.shape[1] // in_per_lr
        config = self._tile_config(type(be), direction, lr_h, lr_w)
        try:
            return run_tiled_planes(inputs, run_batch, out_ratios, config, on_tile)
        finally:
            be.release_memory()  # the other direction may run next: one peak at a time

    def tile_plan(self, height: int, width: int, direction: str = "down") -> TilePlan:
        """The tiles (LR px) an image of this size (input side of ``direction``) runs in."""
        from .backends import backend_class

        if direction == "down":
            lr_w, lr_h = scaled_lr_size((width, height), self.output_scale)
        else:
            lr_w, lr_h = width, height
        tile = self._tile(backend_class(self.selection.backend), direction, lr_h, lr_w)
        return plan_tiles(lr_h, lr_w, tile, self.overlap_lr, self.manifest.lr_grid)

    def count_tiles(self, height: int, width: int, direction: str = "down") -> int:
        """How many tiles an image of this size (input side of ``direction``) takes."""
        return len(self.tile_plan(height, width, direction))

    def run_graph(self, direction: str, planes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The ``direction`` graph called once on whole HWC uint8 planes, untiled.

        ``planes``: the image (``down``: H and W multiples of the scale, see
        :func:`~irn_trt.runtime.tiling.pad_to_multiple`), then what else the graph takes
        (IRN-M's side code for ``up``), as the graph's outputs come; returns every output
        as HWC uint8. No padding, metadata, resize or restore step: ``irn-bench``'s ``raw``
        baseline, the time the tiled paths are measured against.
        """
        be = self.backend(direction)
        try:
            outs = self._run_graph(be, [np.ascontiguousarray(p)[None] for p in planes])
        finally:
            # As after every tiled call (_rescale): each call starts from the same
            # allocator state, so the baseline is not favoured by memory kept warm.
            be.release_memory()
        return [out[0] for out in outs]

    def _alpha_code(
        self, img: ImageData, meta: LRMetadata | None, from_file: bool, notes: list[str]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """IRN-A: the LR's alpha code and its real alpha (if any), from wherever ``downscale``
        put them. A missing or damaged code falls back to the neutral code with a warning."""
        storage = meta.code if meta is not None else ("png-alpha" if not from_file else "none")
        if storage == "png-alpha" and img.alpha is not None:
            return img.alpha, None
        if meta is None and img.code is None and img.alpha is not None:
            # An RGBA LR whose text was stripped: most likely the paper's form.
            notes.append("no irn-trt metadata: reading the alpha channel as the alpha code")
            return img.alpha, None
        if storage == "chunk" and img.code is not None:
            return img.code, img.alpha
        if meta is None and not from_file:
            raise IRNError(f"{self.manifest.model} upscales an LR with an alpha code: pass HxWx4")
        where = {"chunk": "its alpha-code chunk", "png-alpha": "its alpha channel"}
        if storage in where:
            why = f"the LR lost {where[storage]} (re-saved by another tool?)"
        else:
            why = (
                f"an RGB image without irn-trt metadata has no alpha code for {self.manifest.model}"
            )
        notes.append(f"{why}: upscaling with the neutral code, expect a much blurrier result")
        return np.full(img.rgb.shape[:2], NEUTRAL_ALPHA_CODE, np.uint8), img.alpha

    def _restore_lr(
        self,
        img: ImageData,
        lr: np.ndarray,
        jpeg_quality: int | None,
        on_tile: Callable[[int], None] | None,
        notes: list[str],
    ) -> np.ndarray:
        """The step between reading an LR and ``up``: undo its compression where the model
        directory can. A JPEG LR (``jpeg_quality``, else the quality estimated when its file
        was read, ``img.lr_codec``) goes through the model's compression restore module
        (:func:`~irn_trt.runtime.restore.restore_lr`: that quality's CRM or the nearest,
        or none with a note); another lossy LR (WebP) gets one warning: IRN's inverse
        expects the exact LR it produced."""
        codec = img.lr_codec or {}
        lossy = codec.get("lossless") is False
        if jpeg_quality is None and lossy and codec.get("format") == "jpeg":
            jpeg_quality = codec.get("quality")
        if jpeg_quality is not None:
            from .restore import restore_lr

            return restore_lr(self, lr, int(jpeg_quality), on_tile, notes)
        if lossy:
            from .restore import NO_CRM_NOTE

            notes.append(NO_CRM_NOTE.format(what=codec_label(codec), model=self.manifest.model))
        return lr

    def _latent_code(self, img: ImageData, meta: LRMetadata | None, notes: list[str]) -> np.ndarray:
        """IRN-M: the LR's side code, checked against the grid the model expects. A missing,
        damaged or misfitting code gives the neutral code (every value 128, sigmoid(0): its
        decoder's z) with one warning; the model still upscales, less sharply."""
        info = self.manifest.side_code("up")
        assert info is not None and info.lr_grid is not None
        g = info.lr_grid
        w, h = img.size
        channels = next(d for d in info.shape if isinstance(d, int))
        want = (-(-h // g), -(-w // g), channels)
        code = img.latent_code
        if code is not None and code.shape == want:
            return code
        damaged = [n for n in img.notes if n.startswith(DAMAGED_LATENT_NOTE)]
        if code is not None:
            have, need = ("x".join(map(str, shape)) for shape in (code.shape, want))
            why = f"the LR's latent code is {have}, {self.manifest.model} needs {need} for it"
        elif damaged:
            why = ""  # read_image said it (the same line: shown once)
            notes.append(damaged[0])
        elif meta is None:
            why = (
                f"no irn-trt metadata and no latent code for {self.manifest.model} (not an LR "
                "made by irn-trt's down? IRN is not super-resolution)"
            )
        else:
            why = "the LR lost its latent-code chunk (re-saved by another tool?)"
        if why:
            notes.append(f"{why}: {_NEUTRAL_LATENT_NOTE}")
        return np.full(want, NEUTRAL_ALPHA_CODE, np.uint8)

    def downscale(
        self, image: ImageData | np.ndarray, on_tile: Callable[[int], None] | None = None
    ) -> ImageData | np.ndarray:
        """HR -> LR of ceil(W/s) x ceil(H/s) at the output scale; returns the type it was given.

        An :class:`ImageData` LR is RGB and carries irn-trt's metadata (model,
        checkpoint, original size, colour kind, requested scale) for :meth:`upscale`,
        plus the input's ICC profile and other text chunks. An array LR has the
        input's layout. A fractional output scale resizes the HR bicubically to
        the model's scale times the LR size first (``runtime/scales.py``).
        """
        img = image if isinstance(image, ImageData) else ImageData.from_array(image)
        s, out_scale = self.scale, self.output_scale
        w, h = img.size
        if min(w, h) < out_scale:
            need = math.ceil(out_scale)
            raise IRNError(
                f"{w}x{h} is too small to downscale (at least {need}x{need} at "
                f"x{format_scale(out_scale)})"
            )
        lw, lh = scaled_lr_size(img.size, out_scale)
        if out_scale == s:
            hr = pad_to_multiple(img.rgb, s, s)
        else:
            hr = resize_exact(img.rgb, (lw * s, lh * s))
        if self.manifest.task == "decolorize" and img.kind == "gray":
            raise IRNError("the image is already greyscale: there is no colour to decolorize")
        if self.manifest.lr_channels == 4 and img.alpha is not None:
            if self.alpha_code == "png-alpha":
                raise IRNError(
                    "the image has an alpha channel of its own, so the alpha code cannot be "
                    "the PNG's alpha: use --alpha-code chunk"
                )
            if not isinstance(image, ImageData):
                raise IRNError("pass ImageData to keep both an alpha channel and the alpha code")
        coded = self.manifest.side_code("down") is not None
        if coded and not isinstance(image, ImageData):
            raise IRNError(_ARRAY_LATENT_NOTE.format(model=self.manifest.model))
        lr, *side = self._rescale("down", hr, on_tile)
        latent = side[0] if coded else None
        kind = "rgb"
        code = None
        if self.manifest.lr_channels == 1:  # IRN_color: an 8-bit grey image (PNG mode L)
            lr, kind = np.repeat(lr, 3, axis=2), "gray"
        elif self.manifest.lr_channels == 4:  # IRN-A: colours + alpha code
            lr, code = np.ascontiguousarray(lr[:, :, :3]), np.ascontiguousarray(lr[:, :, 3])
        alpha = None
        notes = []
        if img.alpha is not None:
            src_alpha = img.alpha
            if out_scale == s:
                src_alpha = pad_to_multiple(img.alpha[:, :, None], s, s)[:, :, 0]
            if (lw, lh) == img.size:  # scale 1 (IRN_color): nothing to resize
                alpha = img.alpha
                notes.append(_ALPHA_KEPT_NOTE)
            else:
                alpha = resize_alpha(src_alpha, (lw, lh))
                notes.append(ALPHA_RESIZED_NOTE)
        # IRN-M's side code always goes to its private chunk; IRN-A's where asked.
        storage = self.alpha_code if code is not None else "none"
        storage = "chunk" if latent is not None else storage
        meta = LRMetadata.for_model(
            self.manifest,
            img.size,
            img.kind,
            alpha is not None,
            requested_scale=out_scale,
            code=storage,
        )
        text = text_with_metadata(img.text, meta)
        icc = img.icc_profile
        if kind == "gray" and icc is not None and icc[16:20] != b"GRAY":
            # A greyscale PNG may only carry a GRAY profile: keep the colour one for colorize.
            text[ICC_TEXT_KEY] = base64.b64encode(icc).decode("ascii")
            icc = None
        if storage == "png-alpha":  # the paper's form: the code is the PNG's alpha
            alpha, code = code, None
        out = ImageData(lr, alpha, kind, icc, text, notes, code=code, latent_code=latent)
        if isinstance(image, ImageData):
            return out
        if code is not None:  # arrays: the code as a 4th channel (real alpha refused above)
            return np.dstack([lr, code])
        return out.to_array() if kind == "gray" else replace(out, kind=img.kind).to_array()

    def upscale(
        self,
        image: ImageData | np.ndarray,
        original_size: tuple[int, int] | None = None,
        on_tile: Callable[[int], None] | None = None,
        lr_jpeg_quality: int | None = None,
    ) -> ImageData | np.ndarray:
        """LR -> HR; returns the type it was given.

        ``lr_jpeg_quality``: the LR was decoded from a JPEG of this quality; the model's
        compression restore module for it (or the nearest quality's, with a note) runs
        before ``up`` (:func:`~irn_trt.runtime.restore.restore_lr`). None: the quality
        estimated when the LR file was read (``ImageData.lr_codec``, set by
        :func:`~irn_trt.runtime.image_io.read_image` for JPEG files), else no restore step.

        An :class:`ImageData` LR made by :meth:`downscale` is checked against
        this model and restored to its original size, colour kind and scale (the
        LR's metadata decides the scale); one without metadata is upscaled by the
        output scale with a note (IRN is not super-resolution). For arrays,
        ``original_size`` (width, height) is the size to restore (default: the LR
        size times the output scale).
        """
        img = image if isinstance(image, ImageData) else ImageData.from_array(image)
        notes = []
        kind = img.kind
        out_scale = self.output_scale
        meta = LRMetadata.from_text(img.text) if isinstance(image, ImageData) else None
        coded = self.manifest.side_code("up") is not None
        if coded and not isinstance(image, ImageData):
            raise IRNError(_ARRAY_LATENT_NOTE.format(model=self.manifest.model))
        if meta is not None:
            meta.check_model(self.manifest)
            meta.check_lr_size(img.size)
            kind, original_size = meta.kind, meta.original_size
            out_scale = meta.effective_scale
        elif isinstance(image, ImageData) and not coded:  # IRN-M says it in _latent_code
            notes.append(
                _COLOUR_GUESS_NOTE if self.manifest.task == "decolorize" else NO_METADATA_NOTE
            )
        if self.manifest.lr_channels == 1:
            if img.kind != "gray":
                raise IRNError(
                    "colorize takes a greyscale image made by decolorize; this one is in "
                    "colour (decolorize it first: --mode down)"
                )
            kind = "rgb" if meta is None else kind
        w, h = img.size
        if original_size is None:
            original_size = (round(w * out_scale), round(h * out_scale))
        elif scaled_lr_size(original_size, out_scale) != (w, h):
            ow, oh = original_size
            raise IRNError(
                f"original size {ow}x{oh} does not match an LR of {w}x{h} at "
                f"x{format_scale(out_scale)}"
            )
        lr = img.rgb[:, :, :1] if self.manifest.lr_channels == 1 else img.rgb
        lr_alpha = img.alpha
        if self.manifest.lr_channels == 4:
            code, lr_alpha = self._alpha_code(img, meta, isinstance(image, ImageData), notes)
            lr = np.dstack([img.rgb, code])
        lr = self._restore_lr(img, lr, lr_jpeg_quality, on_tile, notes)
        latent = self._latent_code(img, meta, notes) if coded else None
        hr = self._rescale("up", lr, on_tile, side=latent)[0]
        ow, oh = original_size
        # Integer scale: crop the edge padding of downscale; fractional: resize back.
        hr = hr[:oh, :ow] if out_scale == self.scale else resize_exact(hr, original_size)
        alpha = None
        if lr_alpha is not None:
            same = img.size == tuple(original_size)
            alpha = lr_alpha if same else resize_alpha(lr_alpha, original_size)
            if meta is None or not meta.alpha:
                notes.append(_ALPHA_KEPT_NOTE if same else ALPHA_RESIZED_NOTE)
        text = text_with_metadata(img.text, None)
        icc = img.icc_profile
        if ICC_TEXT_KEY in img.text:  # the colour profile a decolorized LR kept aside
            with contextlib.suppress(ValueError):
                icc = base64.b64decode(img.text[ICC_TEXT_KEY], validate=True)
        out = ImageData(np.ascontiguousarray(hr), alpha, kind, icc, text, notes)
        return out if isinstance(image, ImageData) else out.to_array()


def _lr_hw(tile: TileSize) -> tuple[int, int]:
    return (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))


def tile_summary(rescaler: Rescaler) -> int | str | None:
    """The explicit tile in HR px as reported: one number (square) or ``"WxH"``."""
    if rescaler.tile_lr is None:
        return None
    th, tw = _lr_hw(rescaler.tile_lr)
    text = format_wxh((th * rescaler.scale, tw * rescaler.scale))
    return int(text) if text.isdigit() else text


def memory_budget_summary(rescaler: Rescaler | None) -> int | None:
    """The memory budget (MiB) that plans the tiles, as reported: ``None`` when an explicit
    tile is set, the backend keeps fixed tiles (GPU engines) or a server plans them (a
    client has no ``max_memory``)."""
    if getattr(rescaler, "max_memory", None) is None:
        return None
    if rescaler.tile_lr is not None or not tiles_by_budget(rescaler.selection.backend):
        return None
    return round(rescaler.max_memory / (1 << 20))


#: Notes shared with the server client (runtime/client.py), which writes the same files.
ALPHA_RESIZED_NOTE = "alpha channel resized with a bicubic filter (IRN rescales RGB only)"
#: Where a grey LR keeps its input's colour ICC profile (base64): a greyscale PNG may
#: only embed a GRAY profile, and colorize puts the colour one back.
ICC_TEXT_KEY = KEY_PREFIX + "icc-profile"
#: IRN-A's code value that means "no information": sigmoid(0) = 0.5 in 8 bits.
NEUTRAL_ALPHA_CODE = 128
_ALPHA_KEPT_NOTE = "alpha channel carried unchanged (the model converts the colour only)"
#: What an IRN-M upscale without its side code does (the end of one warning line).
_NEUTRAL_LATENT_NOTE = (
    "upscaling with the neutral latent code (z decoded from an all-128 code), "
    "expect a blurrier result"
)
_ARRAY_LATENT_NOTE = (
    "{model} keeps a latent code beside the LR: pass ImageData (ImageData.from_array) to "
    "downscale and upscale, the code travels in its latent_code"
)
_COLOUR_GUESS_NOTE = (
    "no irn-trt metadata: colorizing anyway, but the colours are a guess "
    "(only grey images made by irn-trt's decolorize restore their colours)"
)
NO_METADATA_NOTE = (
    "no irn-trt metadata: upscaling anyway, but IRN is not super-resolution "
    "(only LRs made by irn-trt's down reconstruct well)"
)


def text_with_metadata(text: dict[str, str], meta: LRMetadata | None) -> dict[str, str]:
    """The source's text chunks without irn-trt's own, plus ``meta``'s when given."""
    kept = {k: v for k, v in text.items() if not k.startswith(KEY_PREFIX)}
    return kept | (meta.to_text() if meta is not None else {})
