"""Python API for embedding: ``Rescaler.load(model_dir).downscale(img)`` / ``.upscale(lr)``.

Arrays are HxWx3 uint8 RGB (HxWx4 keeps an alpha plane, resized with a classic
bicubic filter since IRN only models RGB; HxW grey comes back grey). Any size
works: ``downscale`` edge-pads to a multiple of the scale, ``upscale`` crops
back to ``original_size``. The backend is picked once (``auto``: the fastest
that can run here, falling back with a reason if it fails to load) and
sessions/engines load lazily on first use. Torch-free.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backends import AUTO_ORDER, Backend, BackendOptions, Candidate, candidates, get_spec
from .errors import IRNError
from .image_io import resize_alpha
from .manifest import GraphInfo, ModelManifest, load_manifest
from .memory import budget_tile, default_max_memory, tiles_by_budget
from .tiling import TileConfig, TileSize, pad_to_multiple, plan_tiles, run_tiled
from .trt_plan import DEFAULT_MAX_BATCH

__all__ = [
    "DEFAULT_MODEL_DIR",
    "PRECISIONS",
    "Selection",
    "Rescaler",
    "default_tile_lr",
    "select_backend",
]

DEFAULT_MODEL_DIR = Path("build/irn_x4")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

Log = Callable[[str], None]


def _silent(_: str) -> None:
    return None


def default_tile_lr(halo: int) -> int:
    """Default tile edge in LR pixels: 256 (1024 HR at x4), larger if the halo would eat it.

    The kept core is tile - 2*halo; at least half the tile edge keeps the
    recomputed overlap below ~3x the work and memory stays fixed per tile.
    """
    return max(256, 4 * halo)


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
    spec = get_spec(name)
    if precision not in spec.precisions:
        raise IRNError(
            f"backend {name} does not run {precision} (choose from {', '.join(spec.precisions)})"
        )
    manifest.graph("down", _graph_precision(precision)[0])  # raises a clear error if missing


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
        tile_lr: int | None,
        overlap_lr: int,
        threads: int | None,
        batch: int | None,
        log: Log,
        whole: bool = False,
        max_memory: int | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.manifest = manifest
        self.selection = selection
        self._fallbacks = list(fallbacks)
        self._requested_precision = requested_precision
        self.tile_lr = tile_lr  # explicit --tile (LR px); None: the backend's policy
        self.overlap_lr = overlap_lr
        self.whole = whole  # --no-tile
        self.max_memory = max_memory or default_max_memory()  # bytes, CPU tile policy
        self.threads = threads
        self._batch = batch
        self._log = log
        self._backends: dict[str, Backend] = {}
        self.tiles_run = 0  # tiles processed since load (for summaries)
        self.seconds = 0.0  # time spent in backends since load

    # --- construction ------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike[str] = DEFAULT_MODEL_DIR,
        backend: str = "auto",
        precision: str = "auto",
        tile: int | None = None,
        overlap: int | str | None = None,
        no_tile: bool = False,
        threads: int | None = None,
        batch: int | None = None,
        log: Log | None = None,
        max_memory: int | None = None,
    ) -> Rescaler:
        """Open a model directory (cheap: nothing is compiled until the first image).

        ``tile`` and ``overlap`` are HR pixels and must be multiples of the scale;
        ``overlap="exact"`` is the full receptive field (the manifest's ``halo``),
        the default its effective halo where recorded. Without ``tile``, GPU
        backends (engine profile shapes) use :func:`default_tile_lr`, CPU backends whole
        images or the largest tiles whose modelled peak RSS fits ``max_memory``
        bytes (default :func:`irn_trt.runtime.memory.default_max_memory`);
        ``no_tile`` runs whole images.
        """
        model_dir = Path(model_dir)
        if not model_dir.exists() and model_dir == DEFAULT_MODEL_DIR:
            raise IRNError(
                f"model directory {model_dir} does not exist: run `irn-export --scale 4` first "
                f"(or pass --model-dir)"
            )
        manifest = load_manifest(model_dir)
        s = manifest.scale
        if isinstance(overlap, str):
            if overlap != "exact":
                raise IRNError(f"--overlap {overlap!r} must be 'exact' or a number of HR pixels")
            overlap = manifest.halo * s
        if max_memory is not None and max_memory <= 0:
            raise IRNError(f"--max-memory must be positive, got {max_memory} bytes")
        for label, value in (("tile", tile), ("overlap", overlap)):
            if value is not None and (value < 0 or value % s):
                raise IRNError(
                    f"--{label} {value} must be a non-negative multiple of the scale {s}"
                )
        if tile is not None and no_tile:
            raise IRNError("--tile and --no-tile contradict each other")
        overlap_lr = manifest.overlap_halo if overlap is None else overlap // s
        tile_lr = None if tile is None else tile // s
        if tile_lr is not None:
            TileConfig(tile_lr, overlap_lr)  # validates tile > 2*overlap with a clear message
        selection, fallbacks = select_backend(backend, precision, manifest)
        log = log or _silent
        log(selection.describe())
        return cls(
            model_dir,
            manifest,
            selection,
            fallbacks,
            precision,
            tile_lr,
            overlap_lr,
            threads,
            batch,
            log,
            whole=no_tile,
            max_memory=max_memory,
        )

    # --- backends ----------------------------------------------------------------------
    @property
    def scale(self) -> int:
        return self.manifest.scale

    def _options(self, cls: type[Backend]) -> BackendOptions:
        _, inference = _graph_precision(self.selection.precision)
        batch = self._batch or (DEFAULT_MAX_BATCH if cls.benefits_from_batch else 1)
        tile_hw = None
        fixed = self._fixed_tile_lr(cls)
        if fixed is not None:
            tile_hw = (fixed * self.scale, fixed * self.scale)
        return BackendOptions(
            threads=self.threads,
            max_batch=batch,
            tile_hw=tile_hw,
            inference_precision=inference,
        )

    def _graph(self, direction: str) -> GraphInfo:
        return self.manifest.graph(direction, _graph_precision(self.selection.precision)[0])

    def backend(self, direction: str) -> Backend:
        """The loaded backend for ``down`` or ``up``; falls back (auto) if loading fails."""
        be = self._backends.get(direction)
        if be is not None:
            return be
        from .backends import backend_class

        while True:
            cls = backend_class(self.selection.backend)
            be = cls(self.model_dir, self.manifest, self._graph(direction), self._options(cls))
            try:
                be.load()
            except Exception as exc:  # any load failure: fall back (auto) or report in one line
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
                self._backends.clear()
                continue
            self._backends[direction] = be
            return be

    # --- running -----------------------------------------------------------------------
    def _fixed_tile_lr(self, cls: type[Backend]) -> int | None:
        """The square tile (LR px) of ``--tile``, or the default of a GPU (engine-shape) backend."""
        if self.whole:
            return None
        if self.tile_lr is None and not tiles_by_budget(cls.name):
            return default_tile_lr(self.manifest.halo)
        return self.tile_lr

    def _tile(self, cls: type[Backend], direction: str, lr_h: int, lr_w: int) -> TileSize | None:
        """The tile for one image: fixed (``--tile``, GPU) or fitted to the memory budget (CPU)."""
        if self.whole or self.tile_lr is not None or not tiles_by_budget(cls.name):
            return self._fixed_tile_lr(cls)
        return budget_tile(
            cls.name, direction, lr_h, lr_w, self.scale, self.overlap_lr, self.max_memory
        )

    def _tile_config(self, cls: type[Backend], direction: str, lr_h: int, lr_w: int) -> TileConfig:
        batch = self._batch or (DEFAULT_MAX_BATCH if cls.benefits_from_batch else 1)
        tile = self._tile(cls, direction, lr_h, lr_w)
        return TileConfig(tile, self.overlap_lr, batch=batch, pad_to_tile=cls.fixed_shape)

    def _run_graph(self, be: Backend, x: np.ndarray) -> np.ndarray:
        """(B, h, w, 3) uint8 -> (B, h', w', 3) uint8 through the graph's own I/O convention."""
        g = be.graph
        inp = g.inputs[0]
        if self.manifest.io == "uint8":
            feed = np.ascontiguousarray(x)
        else:
            feed = np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(
                255.0
            )
        feeds = {inp.name: feed}
        for extra in g.inputs[1:]:  # the latent z (z policy "input"): zero, the best for PSNR
            n, h, w = x.shape[0], x.shape[1], x.shape[2]
            feeds[extra.name] = np.zeros((n, self.manifest.z_channels, h, w), dtype=extra.dtype)
        t0 = time.perf_counter()
        out = be.run(feeds)
        self.seconds += time.perf_counter() - t0
        if self.manifest.io == "uint8":
            if out.dtype != np.uint8:
                raise IRNError(f"{be.describe()} returned {out.dtype}, expected uint8")
            return out
        out = np.clip(np.rint(np.asarray(out, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
        return out.transpose(0, 2, 3, 1)

    def _rescale(
        self, direction: str, img: np.ndarray, on_tile: Callable[[int], None] | None
    ) -> np.ndarray:
        be = self.backend(direction)
        s = self.scale
        in_per_lr, out_per_lr = (s, 1) if direction == "down" else (1, s)

        def run_batch(x: np.ndarray) -> np.ndarray:
            self.tiles_run += x.shape[0]
            return self._run_graph(be, x)

        lr_h, lr_w = img.shape[0] // in_per_lr, img.shape[1] // in_per_lr
        config = self._tile_config(type(be), direction, lr_h, lr_w)
        try:
            return run_tiled(img, run_batch, in_per_lr, out_per_lr, config, on_tile)
        finally:
            be.release_memory()  # the other direction may run next: one peak at a time

    def count_tiles(self, height: int, width: int, direction: str = "down") -> int:
        """How many tiles an image of this size (input side of ``direction``) takes."""
        from .backends import backend_class

        s = self.scale
        lr_h, lr_w = (-(-height // s), -(-width // s)) if direction == "down" else (height, width)
        tile = self._tile(backend_class(self.selection.backend), direction, lr_h, lr_w)
        return len(plan_tiles(lr_h, lr_w, tile, self.overlap_lr))

    def downscale(
        self, image: np.ndarray, on_tile: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """HR uint8 (HxWx3, HxWx4 or HxW) -> LR of ceil(H/s) x ceil(W/s), same layout."""
        rgb, alpha, gray = _split(image)
        h, w = rgb.shape[:2]
        lr = self._rescale("down", pad_to_multiple(rgb, self.scale, self.scale), on_tile)
        if alpha is not None:
            padded = pad_to_multiple(alpha[:, :, None], self.scale, self.scale)[:, :, 0]
            alpha = resize_alpha(padded, (lr.shape[1], lr.shape[0]))
        return _join(lr, alpha, gray)

    def upscale(
        self,
        image: np.ndarray,
        original_size: tuple[int, int] | None = None,
        on_tile: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """LR uint8 -> HR; ``original_size`` (width, height) crops the padding of ``downscale``."""
        rgb, alpha, gray = _split(image)
        h, w = rgb.shape[:2]
        hr = self._rescale("up", rgb, on_tile)
        if alpha is not None:
            alpha = resize_alpha(alpha, (hr.shape[1], hr.shape[0]))
        if original_size is not None:
            ow, oh = original_size
            if -(-ow // self.scale) != w or -(-oh // self.scale) != h:
                raise IRNError(
                    f"original size {ow}x{oh} does not match an LR of {w}x{h} at x{self.scale}"
                )
            hr = hr[:oh, :ow]
            alpha = alpha[:oh, :ow] if alpha is not None else None
        return _join(np.ascontiguousarray(hr), alpha, gray)


def _split(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, bool]:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise IRNError(f"expected a uint8 numpy image, got {getattr(image, 'dtype', type(image))}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2), None, True
    if image.ndim == 3 and image.shape[2] == 3:
        return image, None, False
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3]), np.ascontiguousarray(image[:, :, 3]), False
    raise IRNError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}")


def _join(rgb: np.ndarray, alpha: np.ndarray | None, gray: bool) -> np.ndarray:
    if gray:
        # ITU-R 601 luma, as PIL's RGB -> L conversion.
        y = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)
    if alpha is not None:
        return np.concatenate([rgb, alpha[:, :, None]], axis=2)
    return rgb
