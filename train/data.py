"""Training data: images decoded once into memory, random augmented crops from there."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.image_io import list_images, read_rgb
from irn_trt.runtime.resize import imresize
from tqdm import tqdm

__all__ = ["CropSampler", "PairedCropSampler", "load_folders"]


def load_folders(
    folders: Sequence[str | os.PathLike[str]], min_size: int, progress: bool = True
) -> list[np.ndarray]:
    """Decode every image below ``folders`` (uint8 RGB), skipping those smaller than a crop."""
    files: list[Path] = []
    for folder in folders:
        files.extend(list_images(folder))
    if not files:
        raise IRNError(f"no training images found in {', '.join(map(str, folders))}")
    images = []
    for f in tqdm(files, desc="decode", unit="img", disable=not progress):
        img = read_rgb(f)
        if min(img.shape[:2]) >= min_size:
            images.append(img)
    if not images:
        raise IRNError(f"no training image is at least {min_size}x{min_size} pixels")
    return images


def _augment(rng: np.random.Generator, *patches: np.ndarray) -> list[np.ndarray]:
    """One random h-flip, v-flip and transpose, the same for every patch (contiguous)."""
    hflip, vflip, transpose = rng.integers(2, size=3)
    out = []
    for p in patches:
        if hflip:
            p = p[:, ::-1]
        if vflip:
            p = p[::-1]
        if transpose:
            p = p.transpose(1, 0, 2)
        out.append(np.ascontiguousarray(p))
    return out


def _nchw(batch: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) floats in [0, 1] -> float32 NCHW tensor."""
    return torch.from_numpy(batch.transpose(0, 3, 1, 2).astype(np.float32))


class CropSampler:
    """Random HR crops with h-flip, v-flip and transpose, plus their bicubic guidance LR.

    All randomness comes from one NumPy generator whose state is saved with the
    training state, so a resumed run draws the same crops as an uninterrupted one.
    """

    def __init__(self, images: Sequence[np.ndarray], crop: int, scale: int, seed: int) -> None:
        if crop % scale:
            raise IRNError(f"crop size {crop} is not a multiple of the scale {scale}")
        self.images = list(images)
        self.crop = crop
        self.scale = scale
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def _one(self) -> np.ndarray:
        img = self.images[int(self.rng.integers(len(self.images)))]
        h, w = img.shape[:2]
        top = int(self.rng.integers(h - self.crop + 1))
        left = int(self.rng.integers(w - self.crop + 1))
        (patch,) = _augment(self.rng, img[top : top + self.crop, left : left + self.crop])
        return patch

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(HR, guidance LR) as float32 NCHW tensors in [0, 1] (scale 1: the HR itself)."""
        hr = np.stack([self._one() for _ in range(size)]).astype(np.float64) / 255.0
        lr = hr if self.scale == 1 else np.stack([imresize(p, 1.0 / self.scale) for p in hr])
        return _nchw(hr), _nchw(lr)

    def state(self) -> str:
        return json.dumps(self.rng.bit_generator.state)

    def set_state(self, state: str) -> None:
        st: dict[str, Any] = json.loads(state)
        self.rng.bit_generator.state = st


class PairedCropSampler(CropSampler):
    """Aligned crops of HR images and of given LR images ``scale`` times smaller (the
    frozen rescaler's LRs of stage crm, ``--crm-loss hr``): the same offsets (multiples of
    ``scale``), flips and transpose on both. One generator, saved like CropSampler's."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        lr_images: Sequence[np.ndarray],
        crop: int,
        scale: int,
        seed: int,
    ) -> None:
        super().__init__(images, crop, scale, seed)
        self.lr_images = list(lr_images)
        for hr, lr in zip(self.images, self.lr_images, strict=True):
            if lr.shape[0] * scale > hr.shape[0] or lr.shape[1] * scale > hr.shape[1]:
                raise IRNError(f"LR {lr.shape} is not 1/{scale} of its HR {hr.shape}")

    def _pair(self) -> tuple[np.ndarray, np.ndarray]:
        i = int(self.rng.integers(len(self.images)))
        hr_img, lr_img = self.images[i], self.lr_images[i]
        s, lc = self.scale, self.crop // self.scale
        top = int(self.rng.integers(lr_img.shape[0] - lc + 1))
        left = int(self.rng.integers(lr_img.shape[1] - lc + 1))
        hr = hr_img[top * s : (top + lc) * s, left * s : (left + lc) * s]
        lr = lr_img[top : top + lc, left : left + lc]
        hr, lr = _augment(self.rng, hr, lr)
        return hr, lr

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(HR, LR) as float32 NCHW tensors in [0, 1]."""
        hrs, lrs = zip(*(self._pair() for _ in range(size)), strict=True)
        return _nchw(np.stack(hrs) / 255.0), _nchw(np.stack(lrs) / 255.0)
