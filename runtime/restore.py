"""The restore step: a JPEG-decoded LR through the model's compression restore module (CRM)
before ``up`` (seed 000, section 3.5). Torch-free.

``Rescaler.upscale(lr, lr_jpeg_quality=Q)`` calls :func:`restore_lr`: the manifest picks
the restore graph for quality Q (that quality's, else the nearest, with a one-line note;
:meth:`~irn_trt.runtime.manifest.ModelManifest.restore_graph`), the rescaler's backend
runs it (the same backend and precision as down / up, loaded lazily and kept like them)
through the one tiling engine (:mod:`.tiling`) at one LR pixel in, one out, with the
CRM's own overlap: its effective halo (or its exact receptive field where none was
measured, or with ``overlap="exact"``; an overlap given in HR pixels applies as LR pixels,
at most the CRM's field). Tiles: an explicit ``tile`` as for down / up; GPU backends
their square default engine tile; CPU backends whole LRs up to
:data:`RESTORE_MAX_TILE_PX` LR pixels, else the fewest tiles of at most that size (a
fixed bound, not a measured memory model as for down / up).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .errors import IRNError
from .manifest import RESTORE_DIRECTION, RestoreChoice, RestoreInfo
from .memory import tiles_by_budget
from .tiling import TileConfig, fit_tiles, plan_tiles, run_tiled

if TYPE_CHECKING:
    from .api import Rescaler

__all__ = [
    "RESTORE_MAX_TILE_PX",
    "NO_CRM_NOTE",
    "count_restore_tiles",
    "restore_lr",
    "restore_overlap",
]

#: CPU backends: LR pixels of the largest restore tile (an LR of a 4K HR at x4 is 0.5 MP).
RESTORE_MAX_TILE_PX = 1024 * 1024

#: The one line for a lossy LR the model cannot restore (``what``: ``JPEG quality ~75``...).
NO_CRM_NOTE = (
    "the LR was lossy-compressed ({what}) and {model} has no compression-restore graph for "
    "it, so quality suffers (IRN's inverse expects the exact LR: store LRs losslessly, or "
    "export a CRM with irn-export --crm)"
)


def restore_overlap(rescaler: Rescaler, info: RestoreInfo) -> int:
    """The tile overlap (LR px) of a CRM under the rescaler's ``overlap`` setting."""
    requested = rescaler.overlap_request
    if requested is None:
        return info.overlap_halo
    if requested == "exact":
        return info.halo
    return min(int(requested) // rescaler.scale, info.halo)


def _tile_config(rescaler: Rescaler, cls: type, h: int, w: int, overlap: int) -> TileConfig:
    """The restore step's tiling for an ``h`` x ``w`` LR on backend class ``cls``."""
    tile = rescaler._fixed_tile_lr(cls)
    if tile is None and not rescaler.whole and tiles_by_budget(cls.name):
        tile = fit_tiles(h, w, overlap, RESTORE_MAX_TILE_PX)
    batch = rescaler.engine.batch_for(cls.benefits_from_batch)
    return TileConfig(tile, overlap, batch=batch, pad_to_tile=cls.fixed_shape)


def count_restore_tiles(rescaler: Rescaler, lr_h: int, lr_w: int, quality: int) -> int:
    """How many tiles the restore step takes for an ``lr_h`` x ``lr_w`` LR (0: no CRM)."""
    from .backends import backend_class

    manifest = rescaler.manifest
    if not manifest.restore_qualities():
        return 0
    choice = manifest.restore_graph(quality, rescaler.graph_precision)
    overlap = restore_overlap(rescaler, choice.restorer)
    config = _tile_config(rescaler, backend_class(rescaler.selection.backend), lr_h, lr_w, overlap)
    return len(plan_tiles(lr_h, lr_w, config.tile, overlap))


def restore_lr(
    rescaler: Rescaler,
    lr: np.ndarray,
    quality: int,
    on_tile: Callable[[int], None] | None = None,
    notes: list[str] | None = None,
) -> np.ndarray:
    """Restore an HxWx3 uint8 LR decoded from a JPEG of ``quality`` with the model's CRM.

    A model directory without a CRM returns ``lr`` unchanged with a note; a quality
    without its own CRM uses the nearest one, with a note. ``rescaler.last_restore``
    records the choice (None when nothing ran).
    """
    manifest = rescaler.manifest
    rescaler.last_restore = None
    if manifest.lr_channels != 3 or lr.ndim != 3 or lr.shape[2] != 3:
        raise IRNError(
            f"{manifest.model}: the JPEG restore step takes an RGB LR, not "
            f"{lr.shape[2] if lr.ndim == 3 else 1} channels"
        )
    if not manifest.restore_qualities():
        if notes is not None:
            notes.append(NO_CRM_NOTE.format(what=f"JPEG quality ~{quality}", model=manifest.model))
        return lr
    choice: RestoreChoice = manifest.restore_graph(quality, rescaler.graph_precision)
    if choice.note and notes is not None:
        notes.append(choice.note)
    be = rescaler.backend(RESTORE_DIRECTION, choice.quality)
    overlap = restore_overlap(rescaler, choice.restorer)
    config = _tile_config(rescaler, type(be), lr.shape[0], lr.shape[1], overlap)

    def run_batch(x: np.ndarray) -> np.ndarray:
        rescaler.tiles_run += x.shape[0]
        return rescaler._run_graph(be, [x])[0]

    try:
        out = run_tiled(lr, run_batch, 1, 1, config, on_tile)
    finally:
        be.release_memory()
    rescaler.last_restore = choice
    return out
