"""Reading images as uint8 RGB arrays, with one-line errors for bad files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from .atomic import atomic_path
from .errors import IRNError

__all__ = [
    "IMAGE_SUFFIXES",
    "read_rgb",
    "list_images",
    "ImageData",
    "read_image",
    "resize_alpha",
    "to_pil",
    "write_image",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


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


# --- full image I/O for the runtime: alpha, colour modes, bit depth, metadata --------

_MODE_KIND = {
    "L": "gray",
    "LA": "gray",
    "1": "gray",
    "I;16": "gray",
    "I;16B": "gray",
    "I;16L": "gray",
    "I": "gray",
    "P": "palette",
    "PA": "palette",
}


@dataclass
class ImageData:
    """An image as the runtime sees it: RGB uint8 plus what is needed to write it back.

    ``kind`` is the source colour kind ("rgb", "gray", "palette") so outputs can
    be converted back; ``alpha`` is kept aside (IRN only rescales RGB);
    ``notes`` are one-line warnings for the user; ``text`` the PNG text chunks.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    kind: str = "rgb"
    notes: list[str] = field(default_factory=list)
    text: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


def _source_bit_depth(im: Image.Image, path: Path) -> int:
    """Bits per sample of the file (PNG IHDR / TIFF tag); 8 when unknown."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return 16
    if im.format == "PNG":
        with open(path, "rb") as fh:
            head = fh.read(25)
        return head[24] if len(head) == 25 else 8
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return int(max(bits))
    return 8


def read_image(path: str | os.PathLike[str]) -> ImageData:
    """Read any supported image for rescaling (EXIF orientation applied).

    Grayscale and palette images become RGB (``kind`` remembers them); an alpha
    channel is split off; more than 8 bits per sample are reduced to 8 with a note.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            text = {str(k): str(v) for k, v in getattr(im, "text", {}).items()}
            bits = _source_bit_depth(im, path)
            im = ImageOps.exif_transpose(im)
            kind = _MODE_KIND.get(im.mode, "rgb")
            notes = []
            if bits > 8:
                notes.append(f"{bits}-bit input reduced to 8 bits per channel")
            has_alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
                im.mode == "P" and "transparency" in im.info
            )
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr16 = np.asarray(im, dtype=np.float64)
                gray = np.clip(np.round(arr16 / 257.0), 0, 255).astype(np.uint8)
                rgb = np.repeat(gray[:, :, None], 3, axis=2)
                alpha = None
            elif has_alpha:
                rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
                rgb, alpha = rgba[:, :, :3].copy(), rgba[:, :, 3].copy()
                if alpha.min() == 255:
                    alpha = None  # fully opaque: nothing to carry along
            else:
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
                alpha = None
    except FileNotFoundError:
        raise IRNError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise IRNError(f"{path}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise IRNError(f"{path}: not an image file (or an unsupported format)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise IRNError(f"{path}: cannot read image ({exc})") from None
    return ImageData(rgb=rgb, alpha=alpha, kind=kind, notes=notes, text=text)


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


def write_image(
    path: str | os.PathLike[str],
    image: Image.Image,
    pnginfo: PngInfo | None = None,
) -> Path:
    """Write ``image`` atomically; the format follows the suffix (PNG text only for PNG)."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise IRNError(f"{path}: unknown output image format {path.suffix!r}")
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")  # JPEG has no alpha / palette
    kwargs: dict[str, object] = {}
    if fmt == "PNG" and pnginfo is not None:
        kwargs["pnginfo"] = pnginfo
    if fmt == "JPEG":
        kwargs["quality"] = 95
    try:
        with atomic_path(path) as tmp:
            image.save(tmp, format=fmt, **kwargs)
    except OSError as exc:
        raise IRNError(f"{path}: cannot write ({exc})") from None
    return path
