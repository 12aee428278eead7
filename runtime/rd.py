"""``irn-rd``: a rate-distortion table of IRN's LR storage against plain JPEG (torch-free).

For a folder of HR images and an exported model directory, each *row* is one way of
storing an image, measured over the folder: the mean RGB PSNR and Y PSNR of what comes
back, against the bits per HR pixel of the stored file (8 x the file's bytes / the HR
pixels; the table gives the folder's total). Row kinds (:data:`ROW_KINDS`):

- ``hr-jpeg``: the HR image as a JPEG (``--hr-qualities``);
- ``bicubic-jpeg``: MATLAB-bicubic down by the scale, JPEG, bicubic up (``--qualities``);
- ``irn-jpeg``: IRN down, the LR as an irn-trt JPEG (metadata included), IRN up of the
  decoded LR without any compression restore (``--qualities``);
- ``irn-jpeg-crm``: the same, routed through the model's compression-restore graphs
  before up; only measured when the model directory declares them;
- ``irn-png``, ``irn-webp-lossless`` (and ``irn-jxl-lossless`` with the JPEG XL
  plugin): IRN down, the LR losslessly, IRN up.

The protocol is the seed's (IRN paper section 4.4) with irn-eval's geometry: each HR
image is cropped to a multiple of the scale (``modcrop``), PSNR is measured after
shaving a border of ``scale`` pixels, RGB PSNR over the three channels of the uint8
images, Y PSNR on BT.601 studio-range luma (``runtime/metrics.py``), averaged per image.
JPEG is Pillow's (libjpeg defaults: 4:2:0, baseline, no optimisation) at IJG quality Q.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from .api import PRECISIONS, Rescaler
from .atomic import write_json_atomic, write_text_atomic
from .backends import backend_names
from .codecs import LRFormat, jpeg_roundtrip, jxl_available
from .errors import IRNError, cli_entry
from .image_io import ImageData, list_images, read_image, read_rgb, write_image
from .metrics import psnr, rgb_to_y, shave
from .model_store import DEFAULT_MODEL, MODELS_ENV
from .resize import imresize, modcrop

if TYPE_CHECKING:
    from .manifest import ModelManifest

__all__ = [
    "ROW_KINDS",
    "RDRow",
    "RowKind",
    "build_parser",
    "declares_restore",
    "jpeg_bytes_at_psnr",
    "lossless_vs_jpeg",
    "main",
    "measure",
    "render_svg",
    "render_table",
]

PROG = "irn-rd"
DEFAULT_QUALITIES = (50, 75, 90)
DEFAULT_HR_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 98)


@dataclass(frozen=True)
class RowKind:
    """One way of storing an image: what it is, and whether it sweeps a JPEG quality."""

    name: str
    label: str
    lossy: bool
    lr_format: str | None = None  # the irn-trt --lr-format of IRN rows (lossless ones)


ROW_KINDS: dict[str, RowKind] = {
    k.name: k
    for k in (
        RowKind("hr-jpeg", "HR JPEG", lossy=True),
        RowKind("bicubic-jpeg", "bicubic + JPEG + bicubic", lossy=True),
        RowKind("irn-jpeg", "IRN + JPEG (no restore)", lossy=True),
        RowKind("irn-jpeg-crm", "IRN + JPEG + CRM", lossy=True),
        RowKind("irn-png", "IRN + PNG", lossy=False, lr_format="png"),
        RowKind("irn-webp-lossless", "IRN + WebP lossless", False, "webp-lossless"),
        RowKind("irn-jxl-lossless", "IRN + JPEG XL lossless", False, "jxl-lossless"),
    )
}


@dataclass
class RDRow:
    """One row of the table: a kind at one quality, over the whole folder."""

    kind: str
    quality: int | None
    total_bytes: int = 0
    hr_pixels: int = 0
    psnr_rgb: list[float] = field(default_factory=list)  # per image, in folder order
    psnr_y: list[float] = field(default_factory=list)
    bytes_per_image: list[int] = field(default_factory=list)

    @property
    def label(self) -> str:
        base = ROW_KINDS[self.kind].label
        return base if self.quality is None else f"{base} q{self.quality}"

    @property
    def bpp(self) -> float:
        """Bits per HR pixel of the folder: 8 x total bytes / total HR pixels."""
        return 8.0 * self.total_bytes / self.hr_pixels if self.hr_pixels else float("nan")

    @property
    def mean_psnr_rgb(self) -> float:
        return float(np.mean(self.psnr_rgb)) if self.psnr_rgb else float("nan")

    @property
    def mean_psnr_y(self) -> float:
        return float(np.mean(self.psnr_y)) if self.psnr_y else float("nan")

    def add(self, out: np.ndarray, ref: np.ndarray, nbytes: int, border: int) -> None:
        a, b = shave(out, border), shave(ref, border)
        self.psnr_rgb.append(psnr(a, b))
        self.psnr_y.append(psnr(rgb_to_y(a), rgb_to_y(b)))
        self.total_bytes += nbytes
        self.bytes_per_image.append(nbytes)
        self.hr_pixels += ref.shape[0] * ref.shape[1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d |= {
            "label": self.label,
            "bpp": round(self.bpp, 6),
            "mean_psnr_rgb": round(self.mean_psnr_rgb, 4),
            "mean_psnr_y": round(self.mean_psnr_y, 4),
        }
        d["psnr_rgb"] = [round(v, 4) for v in self.psnr_rgb]
        d["psnr_y"] = [round(v, 4) for v in self.psnr_y]
        return d


def declares_restore(manifest: ModelManifest) -> bool:
    """Whether the model directory has compression-restore graphs (graphs other than
    down / up), which make the ``irn-jpeg-crm`` rows measurable."""
    return bool(manifest.restore_qualities())


def _stored(lr: ImageData, fmt: LRFormat, folder: Path) -> tuple[ImageData, int]:
    """Write the LR as irn-trt does (metadata included), read it back: (LR read, bytes)."""
    path = folder / f"lr{fmt.extension}"
    write_image(path, lr, fmt)
    return read_image(path), path.stat().st_size


def measure(
    images: Sequence[tuple[str, np.ndarray]],
    rescaler: Rescaler,
    qualities: Sequence[int] = DEFAULT_QUALITIES,
    hr_qualities: Sequence[int] = DEFAULT_HR_QUALITIES,
    kinds: Sequence[str] | None = None,
    on_image: Callable[[str], None] | None = None,
) -> list[RDRow]:
    """Every row of ``kinds`` (default: all that can run here) over ``images`` (name, HxWx3
    uint8 HR). ``irn-jpeg-crm`` needs restore graphs (:func:`declares_restore`)."""
    s = rescaler.scale
    kinds = list(kinds) if kinds is not None else available_kinds(rescaler.manifest)
    for k in kinds:
        if k not in ROW_KINDS:
            raise IRNError(f"unknown row kind {k!r} (one of {', '.join(ROW_KINDS)})")
    if "irn-jpeg-crm" in kinds and not declares_restore(rescaler.manifest):
        raise IRNError(f"{rescaler.manifest.model} declares no compression-restore graphs")
    rows: dict[tuple[str, int | None], RDRow] = {}

    def row(kind: str, q: int | None) -> RDRow:
        return rows.setdefault((kind, q), RDRow(kind, q))

    with tempfile.TemporaryDirectory(prefix="irn-rd-") as tmp:
        folder = Path(tmp)
        for name, full in images:
            hr = modcrop(full, s)
            if min(hr.shape[:2]) < 2 * s + 1:
                raise IRNError(f"{name}: {full.shape[1]}x{full.shape[0]} is too small for x{s}")
            h, w = hr.shape[:2]
            if "hr-jpeg" in kinds:
                for q in hr_qualities:
                    out, nbytes = jpeg_roundtrip(hr, q)
                    row("hr-jpeg", q).add(out, hr, nbytes, s)
            if "bicubic-jpeg" in kinds:
                small = imresize(hr, output_shape=(h // s, w // s))
                for q in qualities:
                    dec, nbytes = jpeg_roundtrip(small, q)
                    row("bicubic-jpeg", q).add(imresize(dec, output_shape=(h, w)), hr, nbytes, s)
            irn = [k for k in kinds if k.startswith("irn-")]
            if irn:
                lr = rescaler.downscale(ImageData(hr))
                assert isinstance(lr, ImageData)
                lossless_up: np.ndarray | None = None
                for k in irn:
                    kind = ROW_KINDS[k]
                    if kind.lossy:
                        for q in qualities:
                            back, nbytes = _stored(lr, LRFormat("jpeg", q), folder)
                            if k == "irn-jpeg":  # decoded pixels only: nothing routes a restore
                                back = replace(back, lr_codec=None)
                            up = rescaler.upscale(back)
                            assert isinstance(up, ImageData)
                            row(k, q).add(up.rgb, hr, nbytes, s)
                        continue
                    back, nbytes = _stored(lr, LRFormat(str(kind.lr_format)), folder)
                    if not np.array_equal(back.rgb, lr.rgb):
                        raise IRNError(f"{name}: the {kind.lr_format} LR did not come back exact")
                    if lossless_up is None:  # the same pixels: one inverse serves every codec
                        up = rescaler.upscale(back)
                        assert isinstance(up, ImageData)
                        lossless_up = up.rgb
                    row(k, None).add(lossless_up, hr, nbytes, s)
            if on_image is not None:
                on_image(name)
    order = {k: i for i, k in enumerate(ROW_KINDS)}
    return sorted(rows.values(), key=lambda r: (order[r.kind], r.quality or 0))


def available_kinds(manifest: ModelManifest) -> list[str]:
    """The row kinds this model directory and this install can measure."""
    kinds = list(ROW_KINDS)
    if not declares_restore(manifest):
        kinds.remove("irn-jpeg-crm")
    if not jxl_available():
        kinds.remove("irn-jxl-lossless")
    return kinds


def _unavailable(manifest: ModelManifest) -> dict[str, str]:
    why = {}
    if not declares_restore(manifest):
        why["irn-jpeg-crm"] = f"{manifest.model} declares no compression-restore graphs"
    if not jxl_available():
        why["irn-jxl-lossless"] = "the JPEG XL plugin is not installed (extra jxl)"
    return why


def jpeg_bytes_at_psnr(rows: Sequence[RDRow], target: float) -> float | None:
    """HR JPEG's total bytes at mean RGB PSNR ``target``, interpolated on its curve
    (log bytes linear in PSNR between the two neighbouring qualities); None outside it."""
    pts = sorted((r.mean_psnr_rgb, math.log(r.total_bytes)) for r in rows if r.kind == "hr-jpeg")
    for (p0, b0), (p1, b1) in zip(pts, pts[1:], strict=False):
        if p0 <= target <= p1:
            t = 0.0 if p1 == p0 else (target - p0) / (p1 - p0)
            return math.exp(b0 + t * (b1 - b0))
    return None


def lossless_vs_jpeg(rows: Sequence[RDRow]) -> list[dict[str, Any]]:
    """Each lossless IRN row against HR JPEG at the same mean RGB PSNR (the seed's table 14)."""
    out = []
    for r in rows:
        if ROW_KINDS[r.kind].lossy or r.kind == "hr-jpeg":
            continue
        jpeg = jpeg_bytes_at_psnr(rows, r.mean_psnr_rgb)
        out.append(
            {
                "row": r.kind,
                "mean_psnr_rgb": round(r.mean_psnr_rgb, 4),
                "total_bytes": r.total_bytes,
                "hr_jpeg_bytes_at_same_psnr": None if jpeg is None else round(jpeg),
                "saving": None if jpeg is None else round(1.0 - r.total_bytes / jpeg, 4),
            }
        )
    return out


def render_table(rows: Sequence[RDRow]) -> str:
    lines = [
        f"{'row':<38} {'bpp':>7} {'RGB PSNR':>9} {'Y PSNR':>8} {'bytes':>10}",
        "-" * 76,
    ]
    for r in rows:
        lines.append(
            f"{r.label:<38} {r.bpp:7.4f} {r.mean_psnr_rgb:9.2f} {r.mean_psnr_y:8.2f} "
            f"{r.total_bytes:10d}"
        )
    return "\n".join(lines)


def _comparison_lines(comparisons: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for c in comparisons:
        label = ROW_KINDS[c["row"]].label
        if c["hr_jpeg_bytes_at_same_psnr"] is None:
            lines.append(f"{label}: {c['mean_psnr_rgb']:.2f} dB is outside HR JPEG's curve")
            continue
        lines.append(
            f"{label}: {c['total_bytes']} bytes at {c['mean_psnr_rgb']:.2f} dB RGB; HR JPEG "
            f"at the same PSNR {c['hr_jpeg_bytes_at_same_psnr']} bytes "
            f"({100 * c['saving']:+.1f} % saved)"
        )
    return lines


# --- SVG plot -------------------------------------------------------------------------------

_COLOURS = {
    "hr-jpeg": "#1f77b4",
    "bicubic-jpeg": "#7f7f7f",
    "irn-jpeg": "#d62728",
    "irn-jpeg-crm": "#2ca02c",
    "irn-png": "#9467bd",
    "irn-webp-lossless": "#ff7f0e",
    "irn-jxl-lossless": "#8c564b",
}


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo if hi > lo else 1.0
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_svg(rows: Sequence[RDRow], title: str) -> str:
    """Two panels (RGB PSNR and Y PSNR against bits per HR pixel), one series per kind."""
    width, height, pw, ph = 980, 500, 380, 320
    left, top = 70, 50
    kinds = [k for k in ROW_KINDS if any(r.kind == k for r in rows)]
    xs = [r.bpp for r in rows]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{_esc(title)}</text>',
    ]
    for panel, (attr, name) in enumerate((("mean_psnr_rgb", "RGB"), ("mean_psnr_y", "Y"))):
        ys = [getattr(r, attr) for r in rows]
        x0, x1 = 0.0, max(xs) * 1.05 if xs else 1.0
        y0, y1 = (min(ys) - 0.5, max(ys) + 0.5) if ys else (0.0, 1.0)
        ox = left + panel * (pw + 90)

        def px(x: float, ox: float = ox, x0: float = x0, x1: float = x1) -> float:
            return ox + (x - x0) / (x1 - x0) * pw

        def py(y: float, y0: float = y0, y1: float = y1) -> float:
            return top + ph - (y - y0) / (y1 - y0) * ph

        parts.append(
            f'<rect x="{ox}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>'
        )
        for t in _ticks(x0, x1):
            parts.append(
                f'<line x1="{px(t):.1f}" y1="{top + ph}" x2="{px(t):.1f}" y2="{top + ph + 4}" '
                f'stroke="#333"/><text x="{px(t):.1f}" y="{top + ph + 17}" '
                f'text-anchor="middle">{t:g}</text>'
            )
        for t in _ticks(y0, y1):
            parts.append(
                f'<line x1="{ox - 4}" y1="{py(t):.1f}" x2="{ox + pw}" y2="{py(t):.1f}" '
                f'stroke="#ddd"/><text x="{ox - 7}" y="{py(t) + 4:.1f}" '
                f'text-anchor="end">{t:g}</text>'
            )
        parts.append(
            f'<text x="{ox + pw / 2}" y="{top + ph + 36}" text-anchor="middle">'
            "bits per HR pixel</text>"
            f'<text transform="translate({ox - 48},{top + ph / 2}) rotate(-90)" '
            f'text-anchor="middle">{name} PSNR (dB)</text>'
        )
        for k in kinds:
            pts = sorted((r.bpp, getattr(r, attr)) for r in rows if r.kind == k)
            colour = _COLOURS[k]
            if len(pts) > 1:
                coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
                parts.append(
                    f'<polyline points="{coords}" fill="none" stroke="{colour}" '
                    'stroke-width="1.5"/>'
                )
            for x, y in pts:
                parts.append(
                    f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}">'
                    f"<title>{_esc(ROW_KINDS[k].label)}: {x:.3f} bpp, {y:.2f} dB</title></circle>"
                )
    for i, k in enumerate(kinds):  # legend below the panels, three entries a line
        x, y = left + 290 * (i % 3), top + ph + 60 + 18 * (i // 3)
        parts.append(
            f'<rect x="{x}" y="{y}" width="10" height="10" fill="{_COLOURS[k]}"/>'
            f'<text x="{x + 15}" y="{y + 9}">{_esc(ROW_KINDS[k].label)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# --- CLI ------------------------------------------------------------------------------------


def _qualities(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give qualities like 50,75,90") from None
    if not values or any(not 1 <= v <= 100 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: qualities must be whole numbers in 1..100")
    return sorted(set(values))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Rate-distortion table of storing images through IRN's LR (lossless, "
        "or JPEG) against HR JPEG and bicubic + JPEG: mean RGB and Y PSNR against bits per "
        "HR pixel (8 x bytes of the stored file / HR pixels; irn-trt LRs include their "
        "metadata). Protocol (the IRN paper's compression experiments, irn-eval's geometry): "
        "each HR image is cropped to a multiple of the scale, PSNR is measured after shaving "
        "a border of `scale` pixels, RGB PSNR over the three 8-bit channels and Y PSNR on "
        "BT.601 studio-range luma, averaged over the images; JPEG is Pillow's at IJG quality "
        "Q (4:2:0, baseline). Rows of IRN + JPEG + CRM appear when the model directory "
        "declares compression-restore graphs.",
        epilog="examples:\n"
        "  irn-rd ../shared/data/eval/Set14                       # default model (irn_x4)\n"
        "  irn-rd ../shared/data/eval/Set14 --model irn_x2 --json rd.json --plot rd.svg\n"
        "  irn-rd photos/ --model-dir build/irn_x4 --qualities 30,50,75,90 --backend ort-cpu\n"
        "\n"
        "row kinds: "
        + ", ".join(ROW_KINDS)
        + "\nmodel search path (--model): $IRN_TRT_MODELS, the checkout's build/, "
        "~/.local/share/irn-trt/models",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", type=Path, help="folder of HR images")
    model = p.add_mutually_exclusive_group()
    model.add_argument(
        "--model",
        help=f"exported model in the search path (default: {DEFAULT_MODEL}; ${MODELS_ENV})",
    )
    model.add_argument("--model-dir", type=Path, help="an irn-export output directory")
    p.add_argument(
        "--qualities",
        type=_qualities,
        default=list(DEFAULT_QUALITIES),
        help="JPEG qualities of the LR rows (default: 50,75,90)",
    )
    p.add_argument(
        "--hr-qualities",
        type=_qualities,
        default=list(DEFAULT_HR_QUALITIES),
        help="JPEG qualities of the HR JPEG curve (default: "
        + ",".join(map(str, DEFAULT_HR_QUALITIES))
        + ")",
    )
    p.add_argument(
        "--rows",
        help="comma list of row kinds to measure (default: every kind this model and "
        "install can run)",
    )
    p.add_argument(
        "--backend",
        choices=["auto", *backend_names()],
        default="auto",
        help="inference backend (default: auto = the fastest that works here)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="precision (default: fp32, the reference numbers; auto: the backend's default)",
    )
    p.add_argument("--threads", type=int, help="CPU threads for CPU backends")
    p.add_argument("--json", metavar="FILE", help="write the rows and comparisons as JSON")
    p.add_argument("--plot", metavar="FILE.svg", help="write an SVG plot of both PSNRs vs bpp")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no table on stdout")
    return p


@cli_entry(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for target, suffix in ((args.json, None), (args.plot, ".svg")):
        if target and Path(target).is_dir():
            raise IRNError(f"{target} is a folder; give a file path")
        if target and suffix and Path(target).suffix.lower() != suffix:
            raise IRNError(f"--plot {target}: the plot is an SVG, name it *.svg")
    files = list_images(args.folder)
    if not files:
        raise IRNError(f"no images in {args.folder}")
    rescaler = Rescaler.load(
        args.model_dir,
        model=args.model,
        backend=args.backend,
        precision=args.precision,
        threads=args.threads,
    )
    with rescaler:
        manifest = rescaler.manifest
        if manifest.task != "rescale" or manifest.lr_channels != 3:
            raise IRNError(f"{manifest.model}: irn-rd measures plain IRN models (RGB LR)")
        kinds = None
        if args.rows:
            kinds = [k.strip() for k in args.rows.split(",") if k.strip()]
        images = [(f.name, read_rgb(f)) for f in files]
        bar = tqdm(total=len(images), desc="images", unit="img", disable=args.quiet)
        with bar:
            rows = measure(
                images,
                rescaler,
                args.qualities,
                args.hr_qualities,
                kinds,
                on_image=lambda _: bar.update(),
            )
        selection = rescaler.selection.describe()
    comparisons = lossless_vs_jpeg(rows)
    title = f"{manifest.model} (x{manifest.scale}) on {args.folder.name}: {len(images)} images"
    if not args.quiet:
        print(title)
        print(render_table(rows))
        for line in _comparison_lines(comparisons):
            print(line)
    if args.json:
        doc = {
            "model": manifest.model,
            "scale": manifest.scale,
            "model_dir": str(rescaler.model_dir),
            "backend": selection,
            "folder": str(args.folder),
            "images": [name for name, _ in images],
            "protocol": {
                "crop": "modcrop to a multiple of the scale",
                "border": manifest.scale,
                "psnr_rgb": "over the three uint8 channels, mean over images",
                "psnr_y": "BT.601 studio-range Y, mean over images",
                "bpp": "8 x total bytes of the stored files / total HR pixels",
                "jpeg": "Pillow, IJG quality, libjpeg defaults (4:2:0, baseline)",
            },
            "rows": [r.to_dict() for r in rows],
            "unavailable": _unavailable(manifest),
            "lossless_vs_hr_jpeg": comparisons,
        }
        write_json_atomic(args.json, doc)
    if args.plot:
        write_text_atomic(args.plot, render_svg(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
