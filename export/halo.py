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

IRN-M (seed 004) has a second output (down: the side code of z) and input (up),
one value per ``g`` x ``g`` LR px (:func:`~.api.code_grid`). Its auto-encoder
widens the field: the encoder's reach adds to down's, the decoder's to up's
(measured the same way, on the code's grid: a distance is counted from a code
value's nearest LR px). The whole passes then have several tensors
(:func:`_reach_planes`); every halo is rounded up to a multiple of ``g``, since
tiles start and end on that grid.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

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
    "round_up",
    "measure_restore_effective_halo",
    "measure_restore_halo",
]


def round_up(value: int, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple``."""
    return -(-value // multiple) * multiple


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


def _interval(col: int, ratio: Fraction) -> tuple[int, int]:
    """The LR px (first, last) that column ``col`` covers in a tensor of ``ratio`` px / LR px."""
    return math.floor(col / ratio), math.ceil((col + 1) / ratio) - 1


def _reach_planes(
    fn: Callable[..., Sequence[torch.Tensor]],
    inputs: Sequence[tuple[tuple[int, ...], Fraction]],
    perturbed: int,
    lr_col: int,
    out_ratios: Sequence[Fraction],
    seed: int,
) -> tuple[int, bool]:
    """:func:`_reach` for passes with several inputs / outputs on different grids.

    ``inputs``: (shape, px per LR px) of each of ``fn``'s inputs (random values);
    the column(s) of input ``perturbed`` that cover LR px ``lr_col`` change. ``fn``
    returns a sequence of tensors with ``out_ratios`` px per LR px. The radius is
    the farthest distance (LR px) from the changed input's LR px to a changed
    output's nearest LR px; also whether a change reached an end of its tensor.
    """
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.rand(shape, generator=gen, dtype=torch.float64) for shape, _ in inputs]
    ratio = inputs[perturbed][1]
    first = math.floor(lr_col * ratio)
    last = max(first + 1, math.ceil((lr_col + 1) * ratio))
    tangent = torch.zeros_like(xs[perturbed])
    tangent[..., first:last] = 1.0
    src = (_interval(first, ratio)[0], _interval(last - 1, ratio)[1])
    flushed = torch.set_flush_denormal(True)  # see _reach
    try:
        with forward_ad.dual_level():
            args = list(xs)
            args[perturbed] = forward_ad.make_dual(xs[perturbed], tangent)
            outs = [forward_ad.unpack_dual(o).tangent for o in fn(*args)]
    finally:
        if flushed:
            torch.set_flush_denormal(False)
    radius, edge = 0, False
    for dout, r in zip(outs, out_ratios, strict=True):
        if dout is None:
            continue
        changed = (dout != 0).any(dim=(0, 1, 2)).nonzero().flatten().tolist()
        for col in changed:
            lo, hi = _interval(col, r)
            radius = max(radius, lo - src[1], src[0] - hi)
        if changed and (min(changed) == 0 or max(changed) == dout.shape[-1] - 1):
            edge = True
    return radius, edge


def _code_reach(net: Rescaler, seed: int, width: int) -> tuple[int, int]:
    """IRN-M: how far (LR px) the encoder (z -> code) and the decoder (code -> z) reach.

    One cell-high strip ``width`` LR px wide; the worst over a cell's px positions.
    """
    ae = net.latent_code
    assert ae is not None
    g = ae.factor
    zc, cc = ae.latent_channels, ae.code_channels
    centre = round_up(width // 2, g)
    enc = dec = 0
    for k in range(g):
        r_e, edge_e = _reach_planes(
            lambda z: [ae.encode_logits(z, smooth_pool=True)],
            [((1, zc, g, width), Fraction(1))],
            0,
            centre + k,
            [Fraction(1, g)],
            seed,
        )
        r_d, edge_d = _reach_planes(
            lambda c: [ae.decode(c, g, width)],
            [((1, cc, 1, width // g), Fraction(1, g))],
            0,
            centre + k,
            [Fraction(1)],
            seed,
        )
        if edge_e or edge_d:
            raise RuntimeError(f"the side code's auto-encoder reaches farther than {centre} px")
        enc, dec = max(enc, r_e), max(dec, r_d)
    return enc, dec


def _probe_config(config: ModelConfig) -> ModelConfig:
    """``config`` with narrow convolutions: the same kernels, strides and depths, so the
    same receptive field, at a fraction of the cost."""
    probe = replace(config, growth=min(config.growth, PROBE_GROWTH))
    if isinstance(probe, (FGRNConfig, CRMConfig)):
        probe = replace(probe, features=min(probe.features, PROBE_FEATURES))
    elif probe.latent_code is not None:
        code = probe.latent_code
        probe = replace(probe, latent_code=replace(code, hidden=min(code.hidden, PROBE_GROWTH)))
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
    ae = net.latent_code
    if ae is not None:
        # IRN-M: down gives the LR and the code (before its sigmoid and rounding: both are
        # monotonic, so they change nothing about where a change reaches; averaged, not
        # max-pooled: the same windows, but every input has a derivative), up takes both.
        def down(x: torch.Tensor) -> list[torch.Tensor]:
            y, z = net(x)
            return [y, ae.encode_logits(z, smooth_pool=True)]

        def up(y: torch.Tensor, code: torch.Tensor) -> list[torch.Tensor]:
            return [net.inverse(y, ae.decode(code, y.shape[2], y.shape[3]))]

        return down, up
    return (lambda x: net(x)[0]), net.inverse


def _plane_ratios(net: Rescaler) -> dict[str, Fraction]:
    """Px per LR px of the passes' tensors: HR, LR and (IRN-M) the side code."""
    ratios = {"hr": Fraction(net.scale), "lr": Fraction(1)}
    if getattr(net, "latent_code", None) is not None:
        ratios["code"] = Fraction(1, net.latent_code.factor)
    return ratios


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
    down, up = -(-down_hr // s), -(-up_hr // s)
    if net.latent_code is not None:
        # z -> code adds the encoder's reach to down's; code -> z the decoder's to up's.
        enc, dec = _code_reach(net, seed, width)
        down, up = down + enc, up + dec
    return Halo(down=down, up=up)


def measure_receptive_field(
    config: ModelConfig, seed: int = 0, start_width: int = 64, max_width: int = 4096
) -> Halo:
    """Receptive-field radius (LR pixels) of the whole down and up passes of ``config``.

    ``start_width`` is the first strip width in LR pixels; it doubles while the
    change reaches the strip's ends (up to ``max_width``). Exact but slow for deep
    models (minutes for x8 on two cores): the export uses :func:`measure_halo`.
    """
    net = _probe_model(_probe_config(config), seed)
    if getattr(net, "latent_code", None) is not None:
        return _code_model_receptive_field(net, seed, start_width, max_width)
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


def _code_model_receptive_field(net: Rescaler, seed: int, width: int, max_width: int) -> Halo:
    """:func:`measure_receptive_field` of an IRN-M probe: down's LR and code, up's two inputs."""
    s, g = net.scale, net.latent_code.factor
    (down, up), ratios = _smooth_passes(net), _plane_ratios(net)
    rows = g  # one code row
    zc = net.latent_code.code_channels
    while True:
        centre = round_up(width // 2, g)
        r_down = r_up = 0
        edge = False
        for k in range(g):  # the worst position within a code cell
            r, e = _reach_planes(
                down,
                [((1, net.in_channels, rows * s, width * s), ratios["hr"])],
                0,
                centre + k,
                [ratios["lr"], ratios["code"]],
                seed,
            )
            r_down, edge = max(r_down, r), edge or e
            up_inputs = [
                ((1, net.lr_channels, rows, width), ratios["lr"]),
                ((1, zc, rows // g, width // g), ratios["code"]),
            ]
            for which in (0, 1):
                r, e = _reach_planes(up, up_inputs, which, centre + k, [ratios["hr"]], seed)
                r_up, edge = max(r_up, r), edge or e
        if not edge:
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


def _strips(
    planes: Sequence[torch.Tensor], ratios: Sequence[Fraction], cut: int, span: int, grid: int
) -> dict[str, list[torch.Tensor]]:
    """Two strips from the centre of the (1, C, h, w) ``planes`` (one image and, IRN-M, its
    side code, ``ratios`` px per LR px), ``cut + span`` LR px long.

    "h" is wide (for the left/right edges); "v" is tall, stored transposed (for
    the top/bottom edges), so both are cut along their last axis. Strips start on
    the side code's ``grid`` (LR px), so every plane is cut at whole values.
    """
    n = cut + span
    rows = max(1, min(16, span // 2))
    lr_h = math.floor(planes[0].shape[-2] / ratios[0])
    lr_w = math.floor(planes[0].shape[-1] / ratios[0])
    r0, c0 = _round_down((lr_h - rows) // 2, grid), _round_down((lr_w - rows) // 2, grid)
    t0, l0 = _round_down((lr_h - n) // 2, grid), _round_down((lr_w - n) // 2, grid)

    def cols(a: int, b: int, r: Fraction) -> slice:
        return slice(int(a * r), math.ceil(b * r))

    return {
        "h": [
            p[..., cols(r0, r0 + rows, r), cols(l0, l0 + n, r)]
            for p, r in zip(planes, ratios, strict=True)
        ],
        "v": [
            p[..., cols(t0, t0 + n, r), cols(c0, c0 + rows, r)].transpose(-1, -2)
            for p, r in zip(planes, ratios, strict=True)
        ],
    }


def _round_down(value: int, multiple: int) -> int:
    return value // multiple * multiple


def _edge_profile(
    fn: Callable[..., Sequence[torch.Tensor]],
    strips: dict[str, list[torch.Tensor]],
    cut: int,
    span: int,
    in_ratios: Sequence[Fraction],
    out_ratios: Sequence[Fraction],
) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
    """Largest output change (levels) per LR px of distance from a tile edge, all four sides.

    A tile edge is made by cutting ``cut`` LR px off one end of a strip (every input
    plane at its own ``in_ratios`` px per LR px); the cut strip's outputs are compared
    with the uncut one's over the ``span`` LR px next to the edge (a coarse output's
    change counts at every LR px its value covers). Also returns the uncut strips'
    outputs.
    """
    worst = torch.zeros(span, dtype=torch.float64)
    fulls: dict[str, list[torch.Tensor]] = {}

    def per_lr_px(diff: torch.Tensor, r: Fraction) -> torch.Tensor:
        """(columns,) -> (span,): the largest change over the columns covering each LR px."""
        spans = [(math.floor(i * r), math.ceil((i + 1) * r)) for i in range(span)]
        return torch.stack([diff[a:b].max() for a, b in spans])

    for kind, strip in strips.items():

        def run(ts: list[torch.Tensor], kind: str = kind) -> list[torch.Tensor]:
            if kind == "v":  # stored transposed: run upright, return transposed
                return [o.transpose(-1, -2) for o in fn(*[t.transpose(-1, -2) for t in ts])]
            return list(fn(*ts))

        full = fulls[kind] = run(strip)
        for side in ("left", "right"):
            if side == "left":
                part = run([t[..., int(cut * r) :] for t, r in zip(strip, in_ratios, strict=True)])
                refs = [f[..., int(cut * r) :] for f, r in zip(full, out_ratios, strict=True)]
            else:
                part = run(
                    [t[..., : math.ceil(span * r)] for t, r in zip(strip, in_ratios, strict=True)]
                )
                part = [p.flip(-1) for p in part]
                refs = [
                    f[..., : math.ceil(span * r)].flip(-1)
                    for f, r in zip(full, out_ratios, strict=True)
                ]
            for p, ref, r in zip(part, refs, out_ratios, strict=True):
                n = math.ceil(span * r)
                diff = (p[..., :n] - ref[..., :n]).abs().amax(dim=(0, 1, 2)) * 255.0
                worst = torch.maximum(worst, per_lr_px(diff, r))
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
    edge beyond which no output (down: the LR before quantisation, and IRN-M's
    side code; up: the HR from the strip's quantised LR, z = 0, or IRN-M's z
    decoded from its quantised code) changes by ``threshold`` levels or more,
    plus ``margin``, rounded up to the side code's grid. Where the change has not
    faded within ``span`` LR px (or no image is large enough), the exact field is
    used. Float64 on the CPU: about 20 s per image for irn_x4 on one core.
    """
    s = model.scale
    net = copy.deepcopy(model).to(torch.float64).eval()
    ae = getattr(net, "latent_code", None)
    grid = ae.factor if ae is not None else 1
    cut, span = round_up(cut, grid), round_up(span, grid)
    n_hr = (cut + span) * s
    down_prof = torch.zeros(span, dtype=torch.float64)
    up_prof = torch.zeros(span, dtype=torch.float64)
    used = 0
    ratios = _plane_ratios(net)
    hr_r, lr_r = [ratios["hr"]], [ratios["lr"]]
    if ae is not None:
        down_out = up_in = [ratios["lr"], ratios["code"]]

        def down(x: torch.Tensor) -> list[torch.Tensor]:
            y, z = net(x)
            return [y, ae.encode(z)]

        def up(y: torch.Tensor, code: torch.Tensor) -> list[torch.Tensor]:
            return [net.inverse(y, ae.decode(code, y.shape[2], y.shape[3]))]

    else:
        down_out = up_in = lr_r
        plain_down, plain_up = _smooth_passes(net)

        def down(x: torch.Tensor) -> list[torch.Tensor]:
            return [plain_down(x)]

        def up(y: torch.Tensor) -> list[torch.Tensor]:
            return [plain_up(y)]

    with torch.no_grad():
        for img in images:
            h, w = img.shape[:2]
            if min(h, w) < n_hr:
                continue
            x = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1)[None]
            strips = _strips([x.to(torch.float64) / 255.0], hr_r, cut, span, grid)
            prof, outs = _edge_profile(down, strips, cut, span, hr_r, down_out)
            down_prof = torch.maximum(down_prof, prof)
            # What up reads: the strips' 8-bit outputs (LR and side code).
            quantised = {
                k: [torch.round(v.clamp(0.0, 1.0) * 255.0) / 255.0 for v in vs]
                for k, vs in outs.items()
            }
            prof, _ = _edge_profile(up, quantised, cut, span, up_in, hr_r)
            up_prof = torch.maximum(up_prof, prof)
            used += 1

    d, d_ok = _fade_radius(down_prof, exact.down, used, threshold, margin, grid)
    u, u_ok = _fade_radius(up_prof, exact.up, used, threshold, margin, grid)
    return EffectiveHalo(d, u, threshold, margin, measured=d_ok and u_ok)


def _fade_radius(
    profile: torch.Tensor, exact_r: int, used: int, threshold: float, margin: int, grid: int = 1
) -> tuple[int, bool]:
    """Distance past which ``profile`` stays below ``threshold``, plus ``margin``, capped at
    ``exact_r``, both rounded up to ``grid`` (a side code's, else 1); ``(exact_r, False)``
    when nothing was measured or the change never faded."""
    span = profile.numel()
    above = (profile >= threshold).nonzero().flatten()
    if used == 0 or (above.numel() and int(above.max()) == span - 1):
        return round_up(exact_r, grid), False
    r = int(above.max()) + 1 if above.numel() else 0
    return min(round_up(r + margin, grid), round_up(exact_r, grid)), True


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
            one = [Fraction(1)]  # the CRM keeps the LR's size: one plane at 1 px per LR px
            strips = _strips([x.to(torch.float64) / 255.0], one, cut, span, 1)
            restore = _restore_pass(net, quality)
            p, _ = _edge_profile(lambda t, f=restore: (f(t),), strips, cut, span, one, one)
            prof = torch.maximum(prof, p)
            used += 1
    return _fade_radius(prof, exact, used, threshold, margin)
