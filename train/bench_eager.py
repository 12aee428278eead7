"""PyTorch eager baseline for ``irn-bench`` (run as its child process).

Kept in ``irn_trt.train`` so that torch never enters the runtime's import graph:
``irn-bench --torch-checkpoint DIR`` starts ``python -m irn_trt.train.bench_eager``.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F
from irn_trt.runtime.bench import bench_image, child_main, measure_peak, time_median
from irn_trt.runtime.costs import PEAK_CHANNELS, conv_macs
from irn_trt.runtime.manifest import load_manifest

from .checkpoint import checkpoint_sha256, load_checkpoint
from .evaluate import evaluate_model, load_image_set, summarize
from .models import quantize

__all__ = ["measure_eager"]


def measure_eager(args: dict) -> dict:
    """Time down/up of the checkpoint in eager FP32 (same image and repeats as the runtime)."""
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    model, _ = load_checkpoint(args["checkpoint"])
    manifest = load_manifest(args["model_dir"])
    hr = bench_image(args["image"], args["height"], args["width"])
    x = torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1))).float().div(255.0)[None]
    mp = hr.shape[0] * hr.shape[1] / 1e6
    res: dict = {
        "precision": "fp32",
        "checkpoint_matches_model_dir": checkpoint_sha256(args["checkpoint"])
        == manifest.checkpoint_sha256,
    }
    with torch.inference_mode():
        lr = quantize(model(x)[0])  # warm-up
        if "down" in args["directions"]:
            t, _ = time_median(lambda: quantize(model(x)[0]), args["repeat"])
            res["down_s"], res["down_mp_per_s"] = round(t, 4), round(mp / t, 4)
        if "up" in args["directions"]:
            model.inverse(lr)
            t, _ = time_median(lambda: model.inverse(lr), args["repeat"])
            res["up_s"], res["up_mp_per_s"] = round(t, 4), round(mp / t, 4)
        # The reference peak on the same backend: the 3x3 conv irn-bench runs elsewhere.
        ph, pw = args["peak_hw"]
        px = torch.rand(1, PEAK_CHANNELS, ph, pw, generator=torch.Generator().manual_seed(0))
        pk = torch.randn(PEAK_CHANNELS, PEAK_CHANNELS, 3, 3) * 0.02
        peak = measure_peak(
            lambda: F.conv2d(px, pk, padding=1),
            conv_macs(PEAK_CHANNELS, ph, pw),
            max(args["repeat"], 3),
        )
        res["peak_gflop_per_s"] = round(peak, 2)
    if args["quality"]:
        res["quality_y_psnr"] = round(
            summarize(evaluate_model(model, load_image_set(args["quality"]))).psnr, 4
        )
    return res


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--child":
        sys.exit("usage: python -m irn_trt.train.bench_eager --child JSON (started by irn-bench)")
    sys.exit(child_main(sys.argv[2], measure_eager))
