"""Reading images as uint8 RGB arrays, with one-line errors for bad files."""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from .atomic import atomic_path
from .codecs import (
    EXIF_XMP_TAG,
    LRFormat,
    describe_codec,
    jpeg_quality,
    jxl_available,
    metadata_xmp,
    text_from_xmp,
    xmp_of,
)
from .errors import IRNError
from .pngmeta import KEY_PREFIX

__all__ = [
    "CODE_CHUNK",
    "DAMAGED_LATENT_NOTE",
    "LATENT_CHUNK",
    "IMAGE_SUFFIXES",
    "decode_code_chunk",
    "decode_latent_chunk",
    "encode_code_chunk",
    "encode_latent_chunk",
    "read_rgb",
    "list_images",
    "ImageData",
    "ImageHeader",
    "KINDS",
    "jpeg_quality",
    "probe_image",
    "read_image",
    "output_format",
    "resize_alpha",
    "to_pil",
    "write_image",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff") + (
    (".jxl",) if jxl_available() else ()  # JPEG XL with the optional plugin (extra "jxl")
)


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array (EXIF orientation applied)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr16 = np.asarray(im, dtype=np.float64)
                arr = np.clip(np.round(arr16 / 257.0), 0, 255).astype(np.uint8)
                return np.repeat(arr[:, :, None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise IRNError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise IRNError(f"{path}: not an image file (or an unsupported format)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise IRNError(f"{path}: cannot read image ({exc})") from None


def list_images(folder: str | os.PathLike[str], recursive: bool = True) -> list[Path]:
    """All image files below ``folder`` (sorted), by suffix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IRNError(f"{folder}: not a folder")
    pattern = "**/*" if recursive else "*"
    files = [p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files)


# --- full image I/O for the runtime: alpha, colour modes, bit depth, ICC, metadata ------

_MODE_KIND = {
    "L": "gray",
    "LA": "gray",
    "1": "gray",
    "I;16": "gray",
    "I;16B": "gray",
    "I;16L": "gray",
    "I": "gray",
    "F": "gray",
    "P": "palette",
    "PA": "palette",
}
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
_WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
KINDS = ("rgb", "gray", "palette")


@dataclass
class ImageData:
    """An image as the runtime passes it around: RGB uint8 plus what is needed to write it back.

    ``Rescaler.downscale`` / ``upscale`` take and return this type, so colour
    handling lives here and in the Rescaler, not in each caller:
    ``kind`` is the colour kind to write back ("rgb", "gray", "palette");
    ``alpha`` is kept aside (IRN rescales RGB only); ``icc_profile`` travels
    to every output; ``text`` holds PNG text chunks (irn-trt's LR metadata among
    them; other formats carry them as XMP, ``runtime/codecs.py``); ``notes`` are
    one-line warnings for the user; ``lr_codec`` says how the file read was compressed
    (:func:`irn_trt.runtime.codecs.describe_codec`: format, ``lossless``, a JPEG's
    estimated ``quality``), None for images not read from a file. EXIF orientation is
    already applied to the pixels.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    kind: str = "rgb"
    icc_profile: bytes | None = None
    text: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: An extra 8-bit plane the model exchanges beside the colours (IRN-A's alpha code),
    #: stored in a private PNG chunk (``CODE_CHUNK``), never shown by viewers.
    code: np.ndarray | None = None
    lr_codec: dict[str, Any] | None = None
    #: IRN-M's side code of the LR: hxwxC 8-bit values on a grid coarser than the pixels
    #: (one per g x g px, h = ceil(H / g)), in its own private chunk (``LATENT_CHUNK``).
    latent_code: np.ndarray | None = None

    def __post_init__(self) -> None:
        rgb = self.rgb
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
            raise IRNError(f"expected a uint8 image, got {getattr(rgb, 'dtype', type(rgb))}")
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise IRNError(f"expected HxWx3 RGB pixels, got shape {rgb.shape}")
        if rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise IRNError(f"empty image ({rgb.shape[1]}x{rgb.shape[0]} pixels)")
        if self.alpha is not None and self.alpha.shape != rgb.shape[:2]:
            raise IRNError(f"alpha plane {self.alpha.shape} does not match {rgb.shape[:2]}")
        if self.kind not in KINDS:
            raise IRNError(f"unknown colour kind {self.kind!r} (one of {', '.join(KINDS)})")
        if self.code is not None and (
            self.code.shape != rgb.shape[:2] or self.code.dtype != np.uint8
        ):
            raise IRNError(f"code plane {self.code.shape} does not match {rgb.shape[:2]}")
        lc = self.latent_code
        if lc is not None and (
            lc.dtype != np.uint8
            or lc.ndim != 3
            or not 0 < lc.shape[0] <= rgb.shape[0]
            or not 0 < lc.shape[1] <= rgb.shape[1]
        ):
            raise IRNError(
                f"latent code {getattr(lc, 'shape', '?')} is not an hxwxC uint8 grid "
                f"over {rgb.shape[1]}x{rgb.shape[0]} px"
            )

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])

    @classmethod
    def from_array(cls, image: np.ndarray) -> ImageData:
        """HxW (grey), HxWx2 (grey + alpha), HxWx3 (RGB) or HxWx4 (RGBA) uint8 -> ImageData."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise IRNError(
                f"expected a uint8 numpy image, got {getattr(image, 'dtype', type(image))}"
            )
        if image.ndim == 2:
            return cls(np.repeat(image[:, :, None], 3, axis=2), kind="gray")
        if image.ndim == 3 and image.shape[2] == 2:  # grey + alpha, as to_array writes it
            grey, alpha = image[:, :, 0], np.ascontiguousarray(image[:, :, 1])
            return cls(np.repeat(grey[:, :, None], 3, axis=2), alpha=alpha, kind="gray")
        if image.ndim == 3 and image.shape[2] == 3:
            return cls(image)
        if image.ndim == 3 and image.shape[2] == 4:
            rgb = np.ascontiguousarray(image[:, :, :3])
            return cls(rgb, alpha=np.ascontiguousarray(image[:, :, 3]))
        raise IRNError(f"expected an HxW, HxWx2, HxWx3 or HxWx4 image, got shape {image.shape}")

    def to_array(self) -> np.ndarray:
        """The inverse of :meth:`from_array`: grey as HxW, alpha as a fourth channel."""
        if self.kind == "gray":
            y = self.rgb.astype(np.float32) @ _LUMA  # ITU-R 601, as PIL's RGB -> L
            gray = np.clip(np.rint(y), 0, 255).astype(np.uint8)
            return gray if self.alpha is None else np.dstack([gray, self.alpha])
        if self.alpha is not None:
            return np.concatenate([self.rgb, self.alpha[:, :, None]], axis=2)
        return self.rgb


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class ImageHeader:
    """What planning a batch needs of a file, read without decoding its pixels."""

    size: tuple[int, int]  # (width, height) after EXIF orientation
    text: dict[str, str]  # text chunks stored before the pixel data (irn-trt's are), or XMP's


def _open_errors(path: Path, exc: BaseException) -> IRNError:
    if isinstance(exc, FileNotFoundError):
        return IRNError(f"{path}: no such file")
    if isinstance(exc, IsADirectoryError):
        return IRNError(f"{path}: is a folder, not an image")
    if isinstance(exc, UnidentifiedImageError):
        return IRNError(f"{path}: not an image file (or an unsupported format)")
    if isinstance(exc, PermissionError):
        return IRNError(f"{path}: cannot read (permission denied)")
    return IRNError(f"{path}: cannot read image ({exc})")


_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def probe_image(path: str | os.PathLike[str]) -> ImageHeader:
    """Size and leading text chunks of an image file (no pixel decoding; one-line errors)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
            if orientation in (5, 6, 7, 8):  # EXIF says rotate by 90 degrees
                w, h = h, w
            text = {str(k): str(v) for k, v in im.info.items() if isinstance(v, str)}
            text |= text_from_xmp(xmp_of(im))
    except _READ_ERRORS as exc:
        raise _open_errors(path, exc) from None
    return ImageHeader((w, h), text)


def _source_bit_depth(im: Image.Image, path: Path) -> int:
    """Bits per sample of the file (PNG IHDR / TIFF tag); 8 when unknown."""
    if im.mode in _WIDE_GRAY_MODES:
        return 32 if im.mode in ("I", "F") and im.format == "TIFF" else 16
    if im.format == "PNG":
        with open(path, "rb") as fh:
            head = fh.read(25)
        return head[24] if len(head) == 25 else 8
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return int(max(bits))
    return 8


def _to_srgb(im: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[Image.Image, bytes]:
    """A CMYK (or other device-space) image -> sRGB, through its ICC profile when it has one."""
    from PIL import ImageCms

    srgb = ImageCms.createProfile("sRGB")
    srgb_bytes = ImageCms.ImageCmsProfile(srgb).tobytes()
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out = ImageCms.profileToProfile(im, src, srgb, outputMode="RGB")
            notes.append(f"{im.mode} input converted to sRGB through its ICC profile")
            return out, srgb_bytes
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: fall through to the plain conversion
    notes.append(f"{im.mode} input converted to RGB without colour management (no usable ICC)")
    return im.convert("RGB"), srgb_bytes


#: The private PNG chunks of an LR's side data: ancillary, private, not safe to copy (an
#: editor that changes the pixels must drop them: they belong to these pixels). IRN-A's
#: alpha code (one plane of the LR's size) and IRN-M's latent code (C planes on a grid).
CODE_CHUNK = b"irAC"
LATENT_CHUNK = b"irLC"
_CODE_HEADER = struct.Struct(">4sII")  # magic, width, height
_CODE_MAGIC = b"IRC1"  # irAC: one plane, zlib
_LATENT_MAGIC = b"IRL1"  # irLC: + channel count; values channels last, zlib
_LATENT_CHANNELS = struct.Struct(">B")
#: How the note about a damaged ``irLC`` chunk starts (the runtime looks for it).
DAMAGED_LATENT_NOTE = "damaged latent-code chunk"
#: Most channels a latent chunk may declare (bounds what a damaged chunk inflates to).
_MAX_LATENT_CHANNELS = 64


def _compress(planes: np.ndarray) -> bytes:
    return zlib.compress(np.ascontiguousarray(planes).tobytes(), 9)


def _decompress(data: bytes, size: int) -> bytes:
    # Bounded: a damaged (or hostile) chunk must not inflate beyond the planes' size.
    inflater = zlib.decompressobj()
    raw = inflater.decompress(data, size + 1)
    if len(raw) != size:
        raise ValueError(f"{len(raw)} bytes for {size}")
    if not inflater.eof:  # cut short: the stream's end (and its checksum) is missing
        raise ValueError("truncated")
    return raw


def encode_code_chunk(code: np.ndarray) -> bytes:
    """HxW uint8 plane -> the ``irAC`` chunk's payload (header + zlib-compressed rows)."""
    h, w = code.shape
    return _CODE_HEADER.pack(_CODE_MAGIC, w, h) + _compress(code)


def decode_code_chunk(payload: bytes, size: tuple[int, int]) -> np.ndarray:
    """The chunk's payload -> HxW uint8 plane of ``size`` (width, height); IRNError if damaged."""
    try:
        magic, w, h = _CODE_HEADER.unpack_from(payload)
        if magic != _CODE_MAGIC or (w, h) != tuple(size):
            raise ValueError(f"header {magic!r} {w}x{h} for a {size[0]}x{size[1]} image")
        raw = _decompress(payload[_CODE_HEADER.size :], w * h)
    except (struct.error, zlib.error, ValueError) as exc:
        raise IRNError(f"damaged alpha-code chunk ({exc})") from None
    return np.frombuffer(raw, dtype=np.uint8).reshape(h, w).copy()


def encode_latent_chunk(code: np.ndarray) -> bytes:
    """hxwxC uint8 latent code -> the ``irLC`` chunk's payload: header, then the values
    channels last (as the graph gives them), zlib level 9.

    Measured on Set5 (irn_m_x4 after a 300-step ``--stage code``, 9,032 code bytes): zlib 9
    channels last 1,616 B, planes one after another 1,773, with PNG's Up / Sub filters
    1,613 / 1,786, raw LZMA2 (preset 9e) 1,488, xz 1,944, bz2 2,365; the code as an RGBA
    PNG 1,832. zlib stays: within 8 % of LZMA, and PNG's own codec.
    """
    h, w, c = code.shape
    header = _CODE_HEADER.pack(_LATENT_MAGIC, w, h) + _LATENT_CHANNELS.pack(c)
    return header + _compress(code)


def decode_latent_chunk(payload: bytes, size: tuple[int, int]) -> np.ndarray:
    """The ``irLC`` payload of an LR of ``size`` (width, height) px -> hxwxC uint8.

    The grid must fit the image (at most its size; one value per whole number of
    px); the caller checks it against its model. IRNError if damaged.
    """
    try:
        magic, w, h = _CODE_HEADER.unpack_from(payload)
        (c,) = _LATENT_CHANNELS.unpack_from(payload, _CODE_HEADER.size)
        if magic != _LATENT_MAGIC or not (0 < w <= size[0] and 0 < h <= size[1]):
            raise ValueError(f"header {magic!r} {w}x{h} for a {size[0]}x{size[1]} image")
        if not 0 < c <= _MAX_LATENT_CHANNELS:
            raise ValueError(f"{c} channels")
        raw = _decompress(payload[_CODE_HEADER.size + _LATENT_CHANNELS.size :], w * h * c)
    except (struct.error, zlib.error, ValueError) as exc:
        raise IRNError(f"{DAMAGED_LATENT_NOTE} ({exc})") from None
    return np.frombuffer(raw, dtype=np.uint8).reshape(h, w, c).copy()


def read_image(path: str | os.PathLike[str]) -> ImageData:
    """Read any supported image for rescaling (EXIF orientation applied).

    Grayscale and palette images become RGB (``kind`` remembers them); an alpha
    channel is split off; more than 8 bits per sample are reduced to 8 with a note;
    CMYK becomes sRGB (colour-managed when the file has a profile) with a note;
    the ICC profile is kept for the outputs.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            text = {str(k): str(v) for k, v in getattr(im, "text", {}).items()}
            text |= text_from_xmp(xmp_of(im))  # JPEG / WebP / JPEG XL LRs keep it there
            lr_codec = describe_codec(im, path)
            icc = im.info.get("icc_profile") or None
            bits = _source_bit_depth(im, path)
            chunks = dict(c[:2] for c in getattr(im, "private_chunks", ()))
            im = ImageOps.exif_transpose(im)
            kind = _MODE_KIND.get(im.mode, "rgb")
            notes = []
            code = latent = None
            if CODE_CHUNK in chunks:
                try:
                    code = decode_code_chunk(chunks[CODE_CHUNK], im.size)
                except IRNError as exc:
                    notes.append(f"{exc}: ignored")
            if LATENT_CHUNK in chunks:
                try:
                    latent = decode_latent_chunk(chunks[LATENT_CHUNK], im.size)
                except IRNError as exc:
                    # The one line of this case: an IRN-M upscale repeats it (shown once).
                    notes.append(f"{exc}: ignored; upscaling with the neutral latent code")
            if bits > 8:
                notes.append(f"{bits}-bit input reduced to 8 bits per channel")
            has_alpha = im.mode in _ALPHA_MODES or (im.mode == "P" and "transparency" in im.info)
            alpha = None
            if im.mode in _WIDE_GRAY_MODES:
                wide = np.asarray(im, dtype=np.float64)
                if im.mode != "F":
                    wide = wide / 257.0  # 16-bit range -> 8-bit range
                else:
                    wide = wide * (255.0 if wide.max(initial=0.0) <= 1.0 else 1.0)
                gray = np.clip(np.round(wide), 0, 255).astype(np.uint8)
                rgb = np.repeat(gray[:, :, None], 3, axis=2)
            elif has_alpha:
                rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
                rgb, alpha = rgba[:, :, :3].copy(), rgba[:, :, 3].copy()
                if alpha.min() == 255:
                    alpha = None  # fully opaque: nothing to carry along
            elif im.mode in ("CMYK", "LAB", "YCbCr", "HSV"):
                im, icc = _to_srgb(im, icc if im.mode == "CMYK" else None, notes)
                rgb = np.asarray(im, dtype=np.uint8).copy()
            else:
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except _READ_ERRORS as exc:
        raise _open_errors(path, exc) from None
    return ImageData(
        rgb=rgb,
        alpha=alpha,
        kind=kind,
        icc_profile=icc,
        text=text,
        notes=notes,
        code=code,
        lr_codec=lr_codec,
        latent_code=latent,
    )


def resize_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an alpha plane to (width, height) with a classic bicubic filter (not IRN)."""
    return np.asarray(Image.fromarray(alpha, mode="L").resize(size, Image.Resampling.BICUBIC))


def to_pil(rgb: np.ndarray, alpha: np.ndarray | None = None, kind: str = "rgb") -> Image.Image:
    """Assemble an RGB(A) array back into a PIL image of the source colour ``kind``."""
    im = Image.fromarray(rgb, mode="RGB")
    if kind == "gray":
        im = im.convert("L")
        if alpha is not None:
            im.putalpha(Image.fromarray(alpha, mode="L"))
        return im
    if alpha is not None:
        im.putalpha(Image.fromarray(alpha, mode="L"))
    if kind == "palette":
        # Back to at most 256 colours, like the input (alpha kept in the palette).
        method = Image.Quantize.FASTOCTREE if alpha is not None else Image.Quantize.MEDIANCUT
        im = im.quantize(colors=256, method=method)
    return im


def output_format(path: str | os.PathLike[str]) -> str:
    """PIL's format name for an output path's suffix, or a one-line error."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or path.suffix.lower() not in IMAGE_SUFFIXES:
        raise IRNError(
            f"{path}: unknown output image format {path.suffix!r} "
            f"(use one of {', '.join(IMAGE_SUFFIXES)})"
        )
    return fmt


#: Where a file without an ICC slot (JPEG XL through its plugin) keeps the profile, base64;
#: the same key as ``api.ICC_TEXT_KEY``, which ``upscale`` restores from.
_ICC_TEXT_KEY = KEY_PREFIX + "icc-profile"
#: JPEG's XMP segment holds at most this many bytes of packet (65533 - its 29-byte header).
_JPEG_XMP_MAX = 65504


def write_image(
    path: str | os.PathLike[str], image: ImageData, lr_format: LRFormat | None = None
) -> Path:
    """Write ``image`` atomically; the format follows the suffix, or ``lr_format``.

    PNG keeps the text chunks (irn-trt's LR metadata) as text chunks, JPEG and WebP as
    an XMP packet, JPEG XL in EXIF's XMP tag (``runtime/codecs.py``); the ICC profile
    goes to every format that stores one. ``lr_format`` (``--lr-format``) sets the codec
    and its quality; the suffix must be its own. Without it JPEG is written at quality 95
    and WebP with Pillow's defaults, as before.
    """
    path = Path(path)
    if lr_format is not None:
        if not lr_format.accepts_suffix(path.suffix):
            raise IRNError(f"{path}: a {lr_format.spec} file must be named *{lr_format.extension}")
        fmt = lr_format.pil_format
    else:
        fmt = output_format(path)
    if lr_format is not None and image.alpha is not None and not lr_format.holds_alpha:
        raise IRNError(
            f"{path}: JPEG cannot hold the alpha channel; use --lr-format png, webp-lossless "
            "or webp:Q"
        )
    if lr_format is not None and image.kind == "gray" and not lr_format.holds_grey:
        raise IRNError(f"{path}: WebP has no greyscale mode; use --lr-format png or jpeg:Q")
    pil = to_pil(image.rgb, image.alpha, image.kind)
    if fmt == "JPEG" and pil.mode not in ("RGB", "L"):
        pil = pil.convert("RGB")  # JPEG has no alpha / palette
    if fmt == "JXL" and pil.mode not in ("RGB", "RGBA", "L", "LA"):
        pil = pil.convert("RGBA" if "A" in pil.mode or image.alpha is not None else "RGB")
    kwargs: dict[str, object] = dict(lr_format.save_options()) if lr_format else {}
    if image.code is not None and fmt != "PNG":
        raise IRNError(f"{path}: an LR with an alpha code must be a PNG (its code is a chunk)")
    if image.latent_code is not None and fmt != "PNG":
        raise IRNError(f"{path}: an LR with a latent code must be a PNG (its code is a chunk)")
    text = dict(image.text)
    if fmt == "JXL" and image.icc_profile and _ICC_TEXT_KEY not in text:
        text[_ICC_TEXT_KEY] = base64.b64encode(image.icc_profile).decode("ascii")
    if fmt == "PNG" and (text or image.code is not None or image.latent_code is not None):
        info = PngInfo()
        for k, v in text.items():
            info.add_text(k, v)
        if image.code is not None:
            info.add(CODE_CHUNK, encode_code_chunk(image.code))
        if image.latent_code is not None:
            info.add(LATENT_CHUNK, encode_latent_chunk(image.latent_code))
        kwargs["pnginfo"] = info
    elif text and fmt in ("JPEG", "WEBP", "JXL"):
        xmp = metadata_xmp(text)
        if fmt == "JPEG" and len(xmp) > _JPEG_XMP_MAX:
            raise IRNError(
                f"{path}: the metadata ({len(xmp)} bytes) does not fit JPEG's 64 KiB XMP "
                "segment; use --lr-format png"
            )
        if fmt == "JXL":
            exif = Image.Exif()
            exif[EXIF_XMP_TAG] = xmp
            kwargs["exif"] = exif.tobytes()
        else:
            kwargs["xmp"] = xmp
    if image.icc_profile and fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
        kwargs["icc_profile"] = image.icc_profile
    if fmt == "JPEG" and lr_format is None:
        kwargs["quality"] = 95
    try:
        with atomic_path(path) as tmp:
            pil.save(tmp, format=fmt, **kwargs)
    except OSError as exc:
        raise IRNError(f"{path}: cannot write ({exc})") from None
    return path
