"""Measure the receptive field of a model's down and up passes (the tiling halo).

The halo is a property of the architecture, not of the trained weights (a
weight that happens to be zero, as in a fresh model, would hide a path), so it
is measured on a float64 model of the same architecture with perturbed
weights. The width of the dense blocks (``growth``) does not change which
pixels reach which, so the probe uses a narrow one: same stages, blocks,
kernels and strides, a fraction of the cost. We perturb one column of
the input (forward-mode AD: the exact first-order change) and see how far the
output changes. A 3x3 conv reaches as far along a row as along a diagonal, so
one wide strip a few pixels high gives the radius in both directions; the
strip widens until the change no longer reaches its ends.

A CRM (compression restore module) works at the LR's resolution, before ``up``;
its halo is measured the same way on its own (:func:`measure_restore_halo`,
:func:`measure_restore_effective_halo`), in LR pixels.

FGRN (seed 002) rounds its representation to 8 bits between the encoder and the
flow module (and after the flow module's inverse); a rounding has no derivative
and hides small changes, so its passes are measured without those two roundings
(:func:`_smooth_passes`): how far a change reaches the values that get rounded.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from irn_trt.train.models import (
    CompressionRestorer,
    CRMConfig,
    FGRNConfig,
    FlowGuidedRescaler,
    ModelConfig,
    Rescaler,
    build_model,
)
from irn_trt.train.modules import CouplingBlock
from torch.autograd import forward_ad

__all__ = [
    "EFFECTIVE_HALO_THRESHOLD",
    "EffectiveHalo",
    "Halo",
    "measure_effective_halo",
    "measure_halo",
    "measure_receptive_field",
    "measure_restore_effective_halo",
    "measure_restore_halo",
]


@dataclass(frozen=True)
class Halo:
    """Receptive-field radii in LR pixels; ``halo`` is what tiling needs."""

    down: int
    up: int

    @property
    def halo(self) -> int:
        return max(self.down, self.up)


def _reach(
    fn: Callable[[torch.Tensor], torch.Tensor],
    in_shape: tuple[int, int, int, int],
    in_cols: slice,
    out_per_lr: int,
    centre: int,
    seed: int,
) -> tuple[int, bool]:
    """Farthest output column (in LR pixels from ``centre``) that a change of ``in_cols`` moves."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(in_shape, generator=gen, dtype=torch.float64)
    tangent = torch.zeros_like(x)
    tangent[..., in_cols] = 1.0
    # Subnormal intermediates (saturated sigmoids) make float64 math ~5x slower;
    # the outputs' changes stay far above that range (checked: same radii).
    flushed = torch.set_flush_denormal(True)
    try:
        with forward_ad.dual_level():
            out = fn(forward_ad.make_dual(x, tangent))
            dout = forward_ad.unpack_dual(out).tangent
    finally:
        if flushed:
            torch.set_flush_denormal(False)
    changed = (dout != 0).any(dim=(0, 1, 2)).nonzero().flatten()
    if changed.numel() == 0:
        return 0, False
    lr_cols = changed // out_per_lr
    radius = int((lr_cols - centre).abs().max())
    width_lr = out.shape[-1] // out_per_lr
    touches_edge = bool(lr_cols.min() == 0 or lr_cols.max() == width_lr - 1)
    return radius, touches_edge


def _probe_config(config: ModelConfig) -> ModelConfig:
    """``config`` with narrow convolutions: the same kernels, strides and depths, so the
    same receptive field, at a fraction of the cost."""
    probe = replace(config, growth=min(config.growth, PROBE_GROWTH))
    if isinstance(probe, (FGRNConfig, CRMConfig)):
        probe = replace(probe, features=min(probe.features, PROBE_FEATURES))
    return probe


def _smooth_passes(
    net: Rescaler,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """The down (HR -> LR before quantisation) and up (LR -> HR) passes to measure.

    FGRN's without the two roundings of its representation (see the module docstring).
    """
    if isinstance(net, FlowGuidedRescaler):
        return (
            lambda x: net.fgm(net.encoder(x)),
            lambda y: net.decoder(net.fgm.inverse(y)),
        )
    return (lambda x: net(x)[0]), net.inverse


def _probe_model(config: ModelConfig, seed: int) -> Rescaler:
    """Float64 model with LeCun-normal weights (std 1/sqrt(fan_in)) and small biases.

    Unit-gain convs keep the perturbation far from the float64 underflow range
    (tiny weights make it decay into subnormals, which is both slow and, once
    flushed, blind to the field's edge).
    """
    net = build_model(config).to(torch.float64).eval()
    gen = torch.Generator().manual_seed(seed)
    for name, param in sorted(net.named_parameters(), key=lambda kv: kv[0]):
        param.requires_grad_(False)
        noise = torch.randn(param.shape, generator=gen, dtype=torch.float64)
        if name.endswith(".weight") and param.ndim == 4:
            param.copy_(noise / param[0].numel() ** 0.5)
        elif name.endswith(".bias"):
            param.copy_(noise * 0.1)
        else:  # the IRN_LD matrix: keep it invertible, close to its init
            param.add_(noise * 0.02)
    return net


#: Dense-block width of the probe model (the real models use 32).
PROBE_GROWTH = 4
#: Residual-block width of an FGRN probe model (the real ones use 64).
PROBE_FEATURES = 4


@functools.lru_cache(maxsize=16)
def measure_halo(config: ModelConfig, seed: int = 0, width: int = 64) -> Halo:
    """The tiling halo of ``config``: per-block receptive fields, measured and chained.

    FGRN: the whole passes' field (:func:`measure_receptive_field`), cheap at its
    narrow probe width. IRN: each coupling block's radius (forward and inverse, in pixels of its own
    resolution) is measured on a ``width``-wide strip; the radii of a chain add
    up, scaled by the block's resolution relative to the HR image, and the
    downsamplers (kernel == stride) add none. The sum, rounded up to LR pixels,
    bounds the whole pass's field from above (a test checks it against
    :func:`measure_receptive_field`); it takes a second instead of minutes.
    """
    if isinstance(config, FGRNConfig):
        return measure_receptive_field(config, seed)
    net = _probe_model(_probe_config(config), seed)
    channels, res = net.in_channels, 1
    down_hr = up_hr = 0
    c = width // 2
    for step in net.steps:
        if isinstance(step, CouplingBlock):
            shape = (1, channels, 1, width)
            r_fwd, edge_f = _reach(step, shape, slice(c, c + 1), 1, c, seed)
            r_inv, edge_i = _reach(step.inverse, shape, slice(c, c + 1), 1, c, seed)
            if edge_f or edge_i:
                raise RuntimeError(f"a coupling block reaches farther than {c} pixels")
            down_hr += r_fwd * res
            up_hr += r_inv * res
        else:
            res *= getattr(step, "factor", 1)  # pointwise steps (IRN-A's) have none
            channels = step.out_channels
    s = net.scale
    return Halo(down=-(-down_hr // s), up=-(-up_hr // s))


def measure_receptive_field(
    config: ModelConfig, seed: int = 0, start_width: int = 64, max_width: int = 4096
) -> Halo:
    """Receptive-field radius (LR pixels) of the whole down and up passes of ``config``.

    ``start_width`` is the first strip width in LR pixels; it doubles while the
    change reaches the strip's ends (up to ``max_width``). Exact but slow for deep
    models (minutes for x8 on two cores): the export uses :func:`measure_halo`.
    """
    net = _probe_model(_probe_config(config), seed)
    s = net.scale
    rows_lr = 1
    down, up = _smooth_passes(net)
    width = start_width
    while True:
        c = width // 2
        r_down, edge_d = _reach(
            down,
            (1, net.in_channels, rows_lr * s, width * s),
            slice(c * s, (c + 1) * s),
            1,
            c,
            seed,
        )
        r_up, edge_u = _reach(up, (1, net.lr_channels, rows_lr, width), slice(c, c + 1), s, c, seed)
        if not (edge_d or edge_u):
            return Halo(down=r_down, up=r_up)
        if width >= max_width:
            raise RuntimeError(f"receptive field wider than {max_width} LR pixels")
        width *= 2


#: An output change smaller than this (in 8-bit levels, i.e. 1/255 of the [0, 1]
#: range) flips a rounded byte only if the exact value lies within it of a
#: rounding boundary: at most ~1e-6 of the bytes next to a seam, and far below
#: the FP32 noise of the graphs themselves (~3e-5 levels, measured).
EFFECTIVE_HALO_THRESHOLD = 1e-6
#: LR px added to the measured distance: other content than the probe's can reach
#: a pixel farther (measured on the shipped irn_x4: 17/17 on Set5 baby, up to 18
#: on the 4K photos); the change shrinks about 3-4x per LR px out there.
EFFECTIVE_HALO_MARGIN = 2


@dataclass(frozen=True)
class EffectiveHalo:
    """Tile overlap (LR px) past which a tile edge changes no output by ``threshold`` levels.

    ``down`` and ``up`` include ``margin``; ``measured`` is False where the
    change did not fade within the probe (then they are the exact field).
    """

    down: int
    up: int
    threshold: float  # in 8-bit levels
    margin: int
    measured: bool

    @property
    def halo(self) -> int:
        return max(self.down, self.up)

    def to_dict(self) -> dict[str, int | float | bool]:
        return {
            "down": self.down,
            "up": self.up,
            "threshold_levels": self.threshold,
            "margin": self.margin,
            "measured": self.measured,
        }


def _strips(x: torch.Tensor, cut: int, span: int, s_in: int) -> dict[str, torch.Tensor]:
    """Two strips from the centre of (1, C, h, w) ``x``, ``cut + span`` LR px long.

    "h" is wide (for the left/right edges); "v" is tall, stored transposed (for
    the top/bottom edges), so both are cut along their last axis.
    """
    n = cut + span
    rows = max(1, min(16, span // 2))
    h, w = x.shape[-2] // s_in, x.shape[-1] // s_in
    r0, c0 = (h - rows) // 2, (w - rows) // 2
    t0, l0 = (h - n) // 2, (w - n) // 2
    return {
        "h": x[..., r0 * s_in : (r0 + rows) * s_in, l0 * s_in : (l0 + n) * s_in],
        "v": x[..., t0 * s_in : (t0 + n) * s_in, c0 * s_in : (c0 + rows) * s_in].transpose(-1, -2),
    }


def _edge_profile(
    fn: Callable[[torch.Tensor], torch.Tensor],
    strips: dict[str, torch.Tensor],
    cut: int,
    span: int,
    s_in: int,
    s_out: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Largest output change (levels) per LR px of distance from a tile edge, all four sides.

    A tile edge is made by cutting ``cut`` LR px off one end of a strip (``s_in``
    input px per LR px); the cut strip's output is compared with the uncut one's
    over the ``span`` LR px next to the edge (``s_out`` output px per LR px).
    Also returns the uncut strips' outputs.
    """
    worst = torch.zeros(span, dtype=torch.float64)
    fulls: dict[str, torch.Tensor] = {}
    for kind, strip in strips.items():

        def run(t: torch.Tensor, kind: str = kind) -> torch.Tensor:
            if kind == "v":  # stored transposed: run upright, return transposed
                return fn(t.transpose(-1, -2)).transpose(-1, -2)
            return fn(t)

        full = fulls[kind] = run(strip)
        for side in ("left", "right"):
            if side == "left":
                part = run(strip[..., cut * s_in :])
                ref = full[..., cut * s_out :]
            else:
                part = run(strip[..., : span * s_in]).flip(-1)
                ref = full[..., : span * s_out].flip(-1)
            diff = (part - ref).abs().amax(dim=(0, 1, 2)) * 255.0
            worst = torch.maximum(worst, diff.reshape(span, s_out).amax(dim=1))
    return worst, fulls


def measure_effective_halo(
    model: Rescaler,
    images: Sequence[np.ndarray],
    exact: Halo,
    threshold: float = EFFECTIVE_HALO_THRESHOLD,
    cut: int = 24,
    span: int = 40,
    margin: int = EFFECTIVE_HALO_MARGIN,
) -> EffectiveHalo:
    """The overlap (LR px) that tiles of the *trained* ``model`` need, per direction.

    ``exact`` (the receptive field) bounds how far a change can go at all; with
    trained weights it fades long before. In the centre of each HR uint8 image
    (at least ``(cut + span) * scale`` px square), a tile edge is simulated by
    cutting ``cut`` LR px off each side of a strip in turn (float64, so rounding
    noise does not hide the tail); the result is the smallest distance from the
    edge beyond which no output (down: the LR before quantisation; up: the HR
    from the strip's quantised LR, z = 0) changes by ``threshold`` levels or
    more, plus ``margin``. Where the change has not faded within ``span`` LR px
    (or no image is large enough), the exact field is used. Float64 on the
    CPU: about 20 s per image for irn_x4 on one core.
    """
    s = model.scale
    net = copy.deepcopy(model).to(torch.float64).eval()
    n_hr = (cut + span) * s
    down_prof = torch.zeros(span, dtype=torch.float64)
    up_prof = torch.zeros(span, dtype=torch.float64)
    used = 0
    down, up = _smooth_passes(net)

    with torch.no_grad():
        for img in images:
            h, w = img.shape[:2]
            if min(h, w) < n_hr:
                continue
            x = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1)[None]
            strips = _strips(x.to(torch.float64) / 255.0, cut, span, s)
            prof, lrs = _edge_profile(down, strips, cut, span, s, 1)
            down_prof = torch.maximum(down_prof, prof)
            lr_strips = {k: torch.round(v.clamp(0.0, 1.0) * 255.0) / 255.0 for k, v in lrs.items()}
            prof, _ = _edge_profile(up, lr_strips, cut, span, 1, s)
            up_prof = torch.maximum(up_prof, prof)
            used += 1

    d, d_ok = _fade_radius(down_prof, exact.down, used, threshold, margin)
    u, u_ok = _fade_radius(up_prof, exact.up, used, threshold, margin)
    return EffectiveHalo(d, u, threshold, margin, measured=d_ok and u_ok)


def _fade_radius(
    profile: torch.Tensor, exact_r: int, used: int, threshold: float, margin: int
) -> tuple[int, bool]:
    """Distance past which ``profile`` stays below ``threshold``, plus ``margin``, capped at
    ``exact_r``; ``(exact_r, False)`` when nothing was measured or the change never faded."""
    span = profile.numel()
    above = (profile >= threshold).nonzero().flatten()
    if used == 0 or (above.numel() and int(above.max()) == span - 1):
        return exact_r, False
    r = int(above.max()) + 1 if above.numel() else 0
    return min(r + margin, exact_r), True


def _restore_pass(net: CompressionRestorer, quality: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: net(x, quality if net.config.conditioned else None)


@functools.lru_cache(maxsize=16)
def measure_restore_halo(
    config: CRMConfig, seed: int = 0, start_width: int = 64, max_width: int = 4096
) -> int:
    """Receptive-field radius (LR px) of a CRM: a strip as wide as needed, one column
    perturbed (the probe model of :func:`measure_receptive_field`, narrow convolutions)."""
    net = _probe_model(_probe_config(config), seed)
    assert isinstance(net, CompressionRestorer)
    fn = _restore_pass(net, 50)
    width = start_width
    while True:
        c = width // 2
        r, edge = _reach(fn, (1, net.in_channels, 1, width), slice(c, c + 1), 1, c, seed)
        if not edge:
            return r
        if width >= max_width:
            raise RuntimeError(f"receptive field wider than {max_width} LR pixels")
        width *= 2


def measure_restore_effective_halo(
    crm: CompressionRestorer,
    lr_images: Sequence[tuple[int, np.ndarray]],
    exact: int,
    threshold: float = EFFECTIVE_HALO_THRESHOLD,
    cut: int = 24,
    span: int = 40,
    margin: int = EFFECTIVE_HALO_MARGIN,
) -> tuple[int, bool]:
    """The tile overlap (LR px) the *trained* ``crm`` needs: :func:`measure_effective_halo`'s
    procedure on its input, (quality, JPEG-decoded LR uint8) pairs at least ``cut + span``
    px square. Returns (overlap, measured); unmeasured: the exact field ``exact``."""
    net = copy.deepcopy(crm).to(torch.float64).eval()
    prof = torch.zeros(span, dtype=torch.float64)
    used = 0
    with torch.no_grad():
        for quality, img in lr_images:
            if min(img.shape[:2]) < cut + span:
                continue
            x = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1)[None]
            strips = _strips(x.to(torch.float64) / 255.0, cut, span, 1)
            p, _ = _edge_profile(_restore_pass(net, quality), strips, cut, span, 1, 1)
            prof = torch.maximum(prof, p)
            used += 1
    return _fade_radius(prof, exact, used, threshold, margin)
