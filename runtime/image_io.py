"""Reading images as uint8 RGB arrays, with one-line errors for bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import IRNError

__all__ = ["IMAGE_SUFFIXES", "read_rgb", "list_images"]

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
