"""Shared pieces of the training tests: tiny image folders cut from the shared data.

The crops are written to pytest's tmp directory (never into the repository), so
a training step takes milliseconds and the tests stay within seconds.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from irn_trt.runtime.image_io import list_images, read_rgb
from irn_trt.train.trainer import TrainConfig
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"
TRAIN = SHARED / "data" / "train"
SET5 = SHARED / "data" / "eval" / "Set5"


def write_crops(out: Path, sources: list[Path], size: int, per_image: int) -> Path:
    """``per_image`` evenly spaced ``size`` x ``size`` crops of each source, as PNGs in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for i, src in enumerate(sources):
        img = read_rgb(src)
        h, w = img.shape[:2]
        for k in range(per_image):
            top = (h - size) * k // max(per_image - 1, 1)
            left = (w - size) * (per_image - 1 - k) // max(per_image - 1, 1)
            Image.fromarray(img[top : top + size, left : left + size]).save(out / f"{i}_{k}.png")
    return out


def tiny_train_folder(out: Path, size: int = 96) -> Path:
    """Four crops from two training images of different kinds (a photo and a T91 image)."""
    photos = [p for p in list_images(TRAIN) if "bsds500" in p.parts][:1]
    t91 = [p for p in list_images(TRAIN) if "t91" in p.parts][:1]
    sources = photos + t91
    if len(sources) < 2:
        raise RuntimeError(f"shared training data missing under {TRAIN}")
    return write_crops(out, sources, size, per_image=2)


def tiny_val_folder(out: Path, size: int = 48) -> Path:
    """One crop of one Set5 image (validation only, never trained on)."""
    return write_crops(out, [SET5 / "baby.png"], size, per_image=1)


def tiny_config(**overrides: object) -> TrainConfig:
    """irn_x2 on 32-pixel crops, batch 2, no periodic checkpoints or validation."""
    cfg = TrainConfig(
        model="irn_x2",
        crop=32,
        batch=2,
        iterations=1000,
        milestones=(500,),
        checkpoint_every=0,
        val_every=0,
        seed=3,
    )
    return replace(cfg, **overrides)


def straight_and_split_runs(cfg: TrainConfig, root: Path, images: list[np.ndarray]) -> tuple:
    """Four steps in one go (``root/straight``) and two + a resumed two (``root/split``):
    returns (straight, first half, resumed second half) trainers."""
    from irn_trt.train.trainer import Trainer

    straight = Trainer(cfg, root / "straight", progress=False)
    straight.run(images, max_steps=4)
    first = Trainer(cfg, root / "split", progress=False)
    first.run(images, max_steps=2)
    second = Trainer(cfg, root / "split", progress=False)
    second.resume()
    assert second.step == 2
    second.run(images, max_steps=2)
    return straight, first, second


def read_log(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's ``log.csv``."""
    with (run_dir / "log.csv").open() as fh:
        return list(csv.DictReader(fh))


def load_images(folder: Path) -> list[np.ndarray]:
    return [read_rgb(p) for p in list_images(folder)]


def params_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
