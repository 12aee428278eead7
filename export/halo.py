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
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from irn_trt.train.models import InvertibleRescaler, IRNConfig
from irn_trt.train.modules import CouplingBlock
from torch.autograd import forward_ad

__all__ = ["Halo", "measure_halo", "measure_receptive_field"]


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


def _probe_model(config: IRNConfig, seed: int) -> InvertibleRescaler:
    """Float64 model with LeCun-normal weights (std 1/sqrt(fan_in)) and small biases.

    Unit-gain convs keep the perturbation far from the float64 underflow range
    (tiny weights make it decay into subnormals, which is both slow and, once
    flushed, blind to the field's edge).
    """
    net = InvertibleRescaler(config).to(torch.float64).eval()
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


@functools.lru_cache(maxsize=16)
def measure_halo(config: IRNConfig, seed: int = 0, width: int = 64) -> Halo:
    """The tiling halo of ``config``: per-block receptive fields, measured and chained.

    Each coupling block's radius (forward and inverse, in pixels of its own
    resolution) is measured on a ``width``-wide strip; the radii of a chain add
    up, scaled by the block's resolution relative to the HR image, and the
    downsamplers (kernel == stride) add none. The sum, rounded up to LR pixels,
    bounds the whole pass's field from above (a test checks it against
    :func:`measure_receptive_field`); it takes a second instead of minutes.
    """
    probe = replace(config, growth=min(config.growth, PROBE_GROWTH))
    net = _probe_model(probe, seed)
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
            res *= step.factor
            channels = step.out_channels
    s = net.scale
    return Halo(down=-(-down_hr // s), up=-(-up_hr // s))


def measure_receptive_field(
    config: IRNConfig, seed: int = 0, start_width: int = 64, max_width: int = 4096
) -> Halo:
    """Receptive-field radius (LR pixels) of the whole down and up passes of ``config``.

    ``start_width`` is the first strip width in LR pixels; it doubles while the
    change reaches the strip's ends (up to ``max_width``). Exact but slow for deep
    models (minutes for x8 on two cores): the export uses :func:`measure_halo`.
    """
    probe = replace(config, growth=min(config.growth, PROBE_GROWTH))
    net = _probe_model(probe, seed)
    s = net.scale
    rows_lr = 1

    def down(x: torch.Tensor) -> torch.Tensor:
        return net(x)[0]

    def up(y: torch.Tensor) -> torch.Tensor:
        return net.inverse(y)

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
        r_up, edge_u = _reach(up, (1, net.in_channels, rows_lr, width), slice(c, c + 1), s, c, seed)
        if not (edge_d or edge_u):
            return Halo(down=r_down, up=r_up)
        if width >= max_width:
            raise RuntimeError(f"receptive field wider than {max_width} LR pixels")
        width *= 2
