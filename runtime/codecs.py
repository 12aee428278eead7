"""LR file formats: the codec that stores an LR, how irn-trt's metadata travels in it, and
what a file that arrives says about its compression. Torch-free (Pillow only).

``irn-trt-run --lr-format`` takes one of :data:`LR_FORMAT_CHOICES`: ``png`` (the
default), ``webp-lossless``, ``jpeg:Q`` and ``webp:Q`` (Q in 1..100) and, with the
optional ``pillow-jxl-plugin`` (extra ``jxl``), ``jxl-lossless``. The LR metadata
(:class:`~irn_trt.runtime.pngmeta.LRMetadata`'s text: model, checkpoint, scale,
original size, colour kind, requested scale...) is PNG text chunks in a PNG and an XMP
packet (one ``irntrt:text`` property holding the text as JSON) in the others: JPEG's
APP1 XMP segment, WebP's ``XMP `` chunk, and for JPEG XL the EXIF ``XMLPacket`` tag
(the plugin reads EXIF back but not XMP boxes). ICC profiles use each format's own slot.

A JPEG that arrives is recognised: :func:`jpeg_quality` estimates its IJG quality from
its quantisation tables, and :func:`describe_codec` records format, losslessness and
quality as ``ImageData.lr_codec``, which a compression-restore step routes on.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import IRNError
from .pngmeta import KEY_PREFIX

__all__ = [
    "ANNEX_K_CHROMA",
    "ANNEX_K_LUMA",
    "EXIF_XMP_TAG",
    "LR_FORMAT_CHOICES",
    "LRFormat",
    "codec_label",
    "describe_codec",
    "ijg_quant_tables",
    "JPEG_SUBSAMPLING",
    "jpeg_quality",
    "jpeg_roundtrip",
    "jxl_available",
    "metadata_xmp",
    "parse_lr_format",
    "text_from_xmp",
    "xmp_of",
]

try:  # registers Pillow's JXL opener and saver; optional (extra "jxl")
    import pillow_jxl  # noqa: F401

    _JXL = True
except ImportError:
    _JXL = False


def jxl_available() -> bool:
    """True when JPEG XL files can be read and written here (``pillow-jxl-plugin``)."""
    return _JXL


LR_FORMAT_CHOICES = ("png", "webp-lossless", "jpeg:Q", "webp:Q", "jxl-lossless")
_LOSSLESS = {"png": "PNG", "webp-lossless": "WEBP", "jxl-lossless": "JXL"}
_LOSSY = {"jpeg": "JPEG", "webp": "WEBP"}
_EXTENSIONS = {"PNG": ".png", "WEBP": ".webp", "JPEG": ".jpg", "JXL": ".jxl"}


@dataclass(frozen=True)
class LRFormat:
    """One ``--lr-format`` value: the codec and, for lossy ones, its quality."""

    name: str  # "png" | "webp-lossless" | "jxl-lossless" | "jpeg" | "webp"
    quality: int | None = None  # 1..100 for jpeg / webp

    @property
    def spec(self) -> str:
        """As the user writes it: ``png``, ``jpeg:75``."""
        return self.name if self.quality is None else f"{self.name}:{self.quality}"

    @property
    def pil_format(self) -> str:
        return _LOSSLESS.get(self.name) or _LOSSY[self.name]

    @property
    def extension(self) -> str:
        """The suffix of files in this format (``.jpg`` for JPEG)."""
        return _EXTENSIONS[self.pil_format]

    def accepts_suffix(self, suffix: str) -> bool:
        """Whether a file named ``*<suffix>`` may hold this format (``.jpeg`` for JPEG too)."""
        suffix = suffix.lower()
        return suffix == self.extension or (self.pil_format == "JPEG" and suffix == ".jpeg")

    @property
    def lossless(self) -> bool:
        return self.name in _LOSSLESS

    @property
    def holds_alpha(self) -> bool:
        return self.pil_format != "JPEG"

    @property
    def holds_grey(self) -> bool:
        """Whether a greyscale image comes back greyscale (WebP stores RGB only)."""
        return self.pil_format != "WEBP"

    def save_options(self) -> dict[str, Any]:
        """Pillow ``save`` keywords of the pixels (metadata and ICC are added by the writer)."""
        if self.name == "webp-lossless":
            # exact: keep the colours under fully transparent pixels (IRN needs them all);
            # method 6 at effort 80: 0.3 % smaller than the default method 4 on Set14 LRs.
            return {"lossless": True, "exact": True, "quality": 80, "method": 6}
        if self.name == "jxl-lossless":
            return {"lossless": True}
        if self.name == "jpeg":
            return {"quality": self.quality, "subsampling": JPEG_SUBSAMPLING}  # baseline
        if self.name == "webp":
            return {"quality": self.quality}
        return {}


def parse_lr_format(text: str) -> LRFormat:
    """``png``, ``webp-lossless``, ``jxl-lossless``, ``jpeg:Q`` or ``webp:Q`` (Q 1..100)."""
    raw = str(text).strip().lower()
    choices = ", ".join(LR_FORMAT_CHOICES)
    if raw in _LOSSLESS:
        if raw == "jxl-lossless" and not _JXL:
            raise IRNError(
                "--lr-format jxl-lossless needs the JPEG XL plugin: pip install 'irn-trt[jxl]'"
            )
        return LRFormat(raw)
    name, sep, q = raw.partition(":")
    if name in _LOSSY:
        if not sep:
            raise IRNError(f"--lr-format {text}: give a quality, e.g. {name}:75")
        if not re.fullmatch(r"\d{1,3}", q) or not 1 <= int(q) <= 100:
            raise IRNError(f"--lr-format {text}: the quality must be a whole number in 1..100")
        return LRFormat(name, int(q))
    raise IRNError(f"--lr-format {text!r} is not one of {choices} (Q in 1..100)")


# --- metadata as XMP ---------------------------------------------------------------------

_NS = "urn:irn-trt:lr-metadata:1"
_TEXT_TAG = f"{{{_NS}}}text"
#: The EXIF / TIFF tag that holds an XMP packet (XMLPacket, 700).
EXIF_XMP_TAG = 0x02BC
_MAX_XMP = 1 << 20  # larger packets are not ours: not parsed


def metadata_xmp(text: dict[str, str]) -> bytes:
    """The text chunks as an XMP packet (one ``irntrt:text`` property, JSON inside)."""
    # html.escape without quotes is xml.sax.saxutils.escape (& < >), which imports urllib.
    data = json.dumps(text, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    payload = html.escape(data, quote=False)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:irntrt="{_NS}">'
        f"<irntrt:text>{payload}</irntrt:text>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="r"?>'
    ).encode()


def text_from_xmp(xmp: bytes | str | None) -> dict[str, str]:
    """The text chunks of an XMP packet written by :func:`metadata_xmp`; ``{}`` if it holds
    none (another tool's XMP). A packet with our property but unreadable content gives one
    irn-trt key, so that :meth:`LRMetadata.from_text` reports the metadata as damaged."""
    if not xmp or len(xmp) > _MAX_XMP:
        return {}
    data = xmp.encode("utf-8") if isinstance(xmp, str) else bytes(xmp)
    if _NS.encode() not in data:
        return {}
    import xml.etree.ElementTree as ET  # only for our own packets: not on every image's path

    try:
        root = ET.fromstring(data.strip(b"\x00"))
        values = [el.text or "" for el in root.iter(_TEXT_TAG)]
        values += [el.attrib[_TEXT_TAG] for el in root.iter() if _TEXT_TAG in el.attrib]
        if not values:
            return {}
        parsed = json.loads(values[0])
        if not isinstance(parsed, dict):
            raise ValueError("not an object")
        return {str(k): str(v) for k, v in parsed.items()}
    except (ET.ParseError, ValueError) as exc:
        return {f"{KEY_PREFIX}xmp": f"unreadable ({exc})"}


def xmp_of(im: Image.Image) -> bytes | None:
    """The XMP packet of an opened image: JPEG / WebP / AVIF ``info["xmp"]``, else EXIF 700."""
    xmp = im.info.get("xmp")
    if xmp:
        return xmp.encode("utf-8") if isinstance(xmp, str) else bytes(xmp)
    if im.format == "JXL" and "exif" in im.info:
        try:
            value = im.getexif().get(EXIF_XMP_TAG)
        except (OSError, ValueError, SyntaxError):
            return None
        if isinstance(value, (bytes, str)):
            return value.encode("utf-8") if isinstance(value, str) else value
    return None


# --- what a file that arrives says about its compression --------------------------------

#: ITU-T T.81 Annex K, table K.1 (luminance), natural (row-major) order.
ANNEX_K_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
#: ITU-T T.81 Annex K, table K.2 (chrominance), natural order.
ANNEX_K_CHROMA = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
) + (99,) * 32  # fmt: skip


#: Chroma subsampling of every JPEG irn-trt writes, trains on and measures (Pillow's
#: default, named so a change of default cannot change the data).
JPEG_SUBSAMPLING = "4:2:0"


def jpeg_roundtrip(img: np.ndarray, quality: int) -> tuple[np.ndarray, int]:
    """Encode an HxWx3 uint8 image with Pillow at ``quality`` (4:2:0) and decode it.

    Returns the decoded HxWx3 uint8 image and the size of the JPEG file in bytes.
    """
    if not 1 <= quality <= 100:
        raise IRNError(f"JPEG quality {quality} is not in 1..100")
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise IRNError(f"JPEG round trip takes HxWx3 uint8, got {img.dtype} {img.shape}")
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=JPEG_SUBSAMPLING)
    size = buf.tell()
    buf.seek(0)
    with Image.open(buf) as decoded:
        out = np.array(decoded.convert("RGB"))  # a writable copy
    return out, size


def _ijg_table(base: tuple[int, ...], quality: int) -> tuple[int, ...]:
    """libjpeg's ``jpeg_set_quality`` scaling of a base table (force_baseline: <= 255)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(min(255, max(1, (b * scale + 50) // 100)) for b in base)


_IJG = {q: (_ijg_table(ANNEX_K_LUMA, q), _ijg_table(ANNEX_K_CHROMA, q)) for q in range(1, 101)}


def ijg_quant_tables(quality: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The luminance and chrominance tables (64 values, natural order) that libjpeg (and
    so Pillow, which asks for baseline tables) writes at ``quality`` 1..100."""
    if not 1 <= quality <= 100:
        raise IRNError(f"JPEG quality {quality} is not in 1..100")
    return _IJG[quality]


def _estimate_quality(tables: dict[int, Any]) -> tuple[int, bool] | None:
    """(IJG quality, exact) of quantisation tables in natural order (Pillow's
    ``Image.quantization``); exact when table 0 (and table 1 where present) equal the
    IJG scaling of Annex K at that quality, else the nearest in log-ratio."""
    luma = tables.get(0)
    if luma is None or len(luma) != 64:
        return None
    chroma = tables.get(1)
    have = [tuple(int(v) for v in luma)]
    if chroma is not None and len(chroma) == 64:
        have.append(tuple(int(v) for v in chroma))
    for q in range(100, 0, -1):
        if all(h == ref for h, ref in zip(have, _IJG[q], strict=False)):
            return q, True

    def cost(q: int) -> float:
        return sum(
            abs(math.log(max(a, 1)) - math.log(b))
            for h, ref in zip(have, _IJG[q], strict=False)
            for a, b in zip(h, ref, strict=True)
        )

    return min(range(1, 101), key=cost), False


#: Pillow opens camera JPEGs with a multi-picture index as MPO (a JPEG subclass).
_JPEG_FORMATS = ("JPEG", "MPO")


def _quality_of(im: Image.Image) -> tuple[int, bool] | None:
    tables = getattr(im, "quantization", None)
    if im.format not in _JPEG_FORMATS or not tables:
        return None
    return _estimate_quality(tables)


def jpeg_quality(source: str | os.PathLike[str] | Image.Image) -> int | None:
    """The IJG quality (1..100) a JPEG was written at, from its quantisation tables.

    Exact for files written by libjpeg / Pillow with ``quality=Q`` (standard tables,
    baseline or progressive); the nearest IJG quality for other encoders. ``None`` for a
    file that is not a JPEG. A path is opened (headers only, no pixel decoding).
    """
    if isinstance(source, Image.Image):
        found = _quality_of(source)
        return None if found is None else found[0]
    path = Path(source)
    try:
        with Image.open(path) as im:
            found = _quality_of(im)
    except FileNotFoundError:
        raise IRNError(f"{path}: no such file") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise IRNError(f"{path}: cannot read image ({exc})") from None
    return None if found is None else found[0]


def _webp_lossless(path: Path) -> bool | None:
    """True for a VP8L (lossless) WebP, False for VP8 (lossy), None if unknown."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
                return None
            for _ in range(64):  # the image chunk comes within the first few
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                kind, size = chunk[:4], int.from_bytes(chunk[4:], "little")
                if kind == b"VP8L":
                    return True
                if kind == b"VP8 ":
                    return False
                fh.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None
    return None


_LOSSLESS_FORMATS = {"PNG", "BMP", "QOI", "PPM"}


def describe_codec(im: Image.Image, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What an opened file says about its compression, as ``ImageData.lr_codec``:

    ``{"format": "jpeg", "lossless": False, "quality": 75, "quality_exact": True,
    "progressive": False}``; ``{"format": "webp", "lossless": True}``; ``{"format": "png",
    "lossless": True}``. ``lossless`` is None where the file does not say (TIFF, JPEG XL).
    """
    fmt = "jpeg" if im.format in _JPEG_FORMATS else (im.format or "unknown").lower()
    info: dict[str, Any] = {"format": fmt, "lossless": None}
    if im.format in _JPEG_FORMATS:
        info["lossless"] = False
        found = _quality_of(im)
        info["quality"] = None if found is None else found[0]
        info["quality_exact"] = None if found is None else found[1]
        info["progressive"] = bool(im.info.get("progressive") or im.info.get("progression"))
    elif im.format == "WEBP" and path is not None:
        info["lossless"] = _webp_lossless(Path(path))
    elif im.format in _LOSSLESS_FORMATS:
        info["lossless"] = True
    return info


def codec_label(codec: dict[str, Any] | None) -> str:
    """``JPEG quality ~75``, ``lossy WebP``: for messages."""
    if not codec:
        return "an unknown format"
    fmt = str(codec.get("format", "?"))
    if fmt == "jpeg":
        q = codec.get("quality")
        return "JPEG" + (f" quality ~{q}" if q is not None else "")
    name = {"webp": "WebP", "jxl": "JPEG XL"}.get(fmt, fmt.upper())
    return f"lossy {name}" if codec.get("lossless") is False else name
