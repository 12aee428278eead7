"""One set of engine options for ``irn-build``, ``irn-trt-run``, ``irn-bench`` and ``Rescaler``.

A TensorRT engine is found again only when everything in its cache key matches: the HR
tile and the batch (its optimization profile), the builder's workspace and optimization
level, the graph (native or plugin variant), the GPU, and the cache folder it was put
in. All of these live in :class:`EngineOptions`; the three CLIs add the same flags with
:func:`add_engine_arguments` and read them back with :func:`engine_options_from_args`,
so the same flags give the same engine in every tool.

Sizes are written WxH everywhere (width first, as image sizes are usually given):
``--tile 1024x512`` is 1024 HR px wide and 512 high; one number is a square. Importing
it loads nothing heavy (not even NumPy), so every CLI's ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import IRNError

if TYPE_CHECKING:
    from .manifest import GraphInfo, ModelManifest

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_WORKSPACE_BYTES",
    "DEFAULT_OPT_LEVEL",
    "EngineOptions",
    "add_engine_arguments",
    "engine_options_from_args",
    "select_graph",
]

DEFAULT_WORKSPACE_BYTES = 4 << 30
DEFAULT_OPT_LEVEL = 3  # TensorRT's builder_optimization_level default
#: Tiles per call irn-trt-run gives backends that benefit from batching (the GPU ones), and
#: so irn-build's default: its engines are the ones irn-trt-run looks up.
DEFAULT_MAX_BATCH = 4


def select_graph(
    manifest: ModelManifest, direction: str, precision: str, plugins: bool = False
) -> GraphInfo:
    """The native graph, or with ``plugins`` the plugin variant (irn-export --plugins)."""
    if not plugins:
        return manifest.graph(direction, precision)
    for g in manifest.graphs:
        if g.direction == direction and g.precision == precision and g.plugins:
            return g
    raise IRNError(
        f"model {manifest.model} has no {direction}.{precision} plugin graph "
        "(export it with irn-export --plugins)"
    )


@dataclass(frozen=True)
class EngineOptions:
    """How engines are shaped, built and found again (see the module docstring)."""

    #: HR tile (height, width); None: GPU backends use the default tile
    #: (``api.default_tile_lr`` times the scale), CPU backends fit tiles to their memory budget.
    tile_hw: tuple[int, int] | None = None
    #: Tiles per call; None: DEFAULT_MAX_BATCH on backends that batch (GPU), else 1.
    batch: int | None = None
    #: The engine cache (TensorRT plans; ort-trt keeps its own below it). None: the default.
    cache_dir: Path | None = None
    device: int = 0  # CUDA device index
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    opt_level: int = DEFAULT_OPT_LEVEL
    plugins: bool = False  # run/build the plugin graph variants (trt backend only)
    verbose: bool = False  # TensorRT's verbose log (on stderr)

    def __post_init__(self) -> None:
        if self.tile_hw is not None:
            object.__setattr__(self, "tile_hw", (int(self.tile_hw[0]), int(self.tile_hw[1])))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        if self.batch is not None and self.batch < 1:
            raise IRNError(f"--batch must be at least 1, got {self.batch}")
        if self.workspace_bytes <= 0:
            raise IRNError(f"--workspace-gb must be positive, got {self.workspace_bytes / 2**30:g}")
        if not 0 <= self.opt_level <= 5:
            raise IRNError(f"--opt-level must be 0..5, got {self.opt_level}")
        if self.device < 0:
            raise IRNError(f"--device must be a CUDA device index (0 or more), got {self.device}")

    @property
    def tile_text(self) -> str | None:
        """The tile as a user writes it (``"1024"`` square, ``"1024x512"`` WxH)."""
        if self.tile_hw is None:
            return None
        h, w = self.tile_hw
        return str(w) if w == h else f"{w}x{h}"

    def batch_for(self, benefits_from_batch: bool) -> int:
        """Tiles per call for a backend: ``batch``, else its default."""
        if self.batch is not None:
            return self.batch
        return DEFAULT_MAX_BATCH if benefits_from_batch else 1

    def graph(self, manifest: ModelManifest, direction: str, precision: str) -> GraphInfo:
        return select_graph(manifest, direction, precision, self.plugins)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (irn-bench hands the options to its child processes)."""
        d = asdict(self)
        d["tile_hw"] = list(self.tile_hw) if self.tile_hw else None
        d["cache_dir"] = str(self.cache_dir) if self.cache_dir else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineOptions:
        d = dict(d)
        if d.get("tile_hw") is not None:
            d["tile_hw"] = tuple(d["tile_hw"])
        return cls(**d)

    def with_tile(self, tile_hw: tuple[int, int] | None) -> EngineOptions:
        return replace(self, tile_hw=tile_hw)


_GROUP_TITLE = "engine options (the same in irn-build, irn-trt-run and irn-bench)"


def add_engine_arguments(
    parser: argparse.ArgumentParser, tile: bool = True, deprecated_max_batch: bool = False
) -> argparse._ArgumentGroup:
    """Add the shared flags: --tile, --batch, --cache-dir, --device, --workspace-gb,
    --opt-level, --plugins. irn-build's engines are found by irn-trt-run and irn-bench
    when they are given the same values (the defaults are the same everywhere)."""
    from .engine_cache import default_cache_dir

    g = parser.add_argument_group(_GROUP_TITLE)
    if tile:
        g.add_argument(
            "--tile",
            metavar="WxH",
            help="HR tile, width x height or one number for a square, multiples of the scale "
            "(default: GPU backends a square of max(256, 4 x the model's halo) LR px, 1920 HR "
            "px for irn_x4; CPU backends fit tiles to --max-memory)",
        )
    g.add_argument(
        "--batch",
        type=int,
        help=f"tiles per call; GPU engines are built for it (default: {DEFAULT_MAX_BATCH} on "
        "GPU backends, 1 on CPU ones)",
    )
    if deprecated_max_batch:
        # Old irn-build spelling; kept so scripts keep working (a warning says to move).
        g.add_argument("--max-batch", type=int, dest="max_batch", help=argparse.SUPPRESS)
    g.add_argument(
        "--cache-dir",
        type=Path,
        help=f"engine cache (default: {default_cache_dir()})",
    )
    g.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    g.add_argument(
        "--workspace-gb",
        type=float,
        default=DEFAULT_WORKSPACE_BYTES / 2**30,
        help="TensorRT builder workspace limit in GiB (default 4)",
    )
    g.add_argument(
        "--opt-level",
        type=int,
        default=DEFAULT_OPT_LEVEL,
        choices=range(6),
        metavar="{0..5}",
        help=f"TensorRT builder optimization level (default {DEFAULT_OPT_LEVEL})",
    )
    g.add_argument(
        "--plugins",
        action="store_true",
        help="use the plugin graph variants (irn-export --plugins; trt backend only)",
    )
    return g


def engine_options_from_args(
    args: argparse.Namespace,
    tile_multiple: int | None = None,
    verbose: bool = False,
    prog: str = "irn-trt",
) -> EngineOptions:
    """:class:`EngineOptions` from :func:`add_engine_arguments`' flags.

    With ``tile_multiple`` the tile is checked here (irn-build knows its manifest);
    without, only its syntax (``Rescaler.load`` checks it against the model's scale).
    """
    from .trt_plan import parse_tile, parse_wxh

    batch = args.batch
    max_batch = getattr(args, "max_batch", None)
    if max_batch is not None:
        if batch is not None and batch != max_batch:
            raise IRNError(f"--batch {batch} and --max-batch {max_batch} disagree")
        print(f"{prog}: warning: --max-batch is deprecated, use --batch", file=sys.stderr)
        batch = max_batch
    if args.workspace_gb <= 0:
        raise IRNError(f"--workspace-gb must be positive, got {args.workspace_gb:g}")
    text = getattr(args, "tile", None)
    tile_hw = None
    if text is not None:
        if tile_multiple is not None:
            tile_hw = parse_tile(text, tile_multiple)
        else:
            w, h = parse_wxh(text, "--tile")
            tile_hw = (h, w)
    return EngineOptions(
        tile_hw=tile_hw,
        batch=batch,
        cache_dir=args.cache_dir,
        device=args.device,
        workspace_bytes=int(args.workspace_gb * (1 << 30)),
        opt_level=args.opt_level,
        plugins=args.plugins,
        verbose=verbose,
    )
