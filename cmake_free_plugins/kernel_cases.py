"""Seeded test cases for the plugin kernels, runnable in Triton's interpreter or on a GPU.

Triton decides at import time whether ``@triton.jit`` compiles or interprets
(``TRITON_INTERPRET=1``), so one process cannot both interpret the kernels
and compile them to PTX. The tests therefore run this module in a child
process and compare what it saved with the NumPy references themselves::

    TRITON_INTERPRET=1 python -m irn_trt.plugins.kernel_cases out.npz          # CPU
    python -m irn_trt.plugins.kernel_cases out.npz --device cuda               # GPU

``out.npz`` holds ``<case>/input``, ``<case>/output`` and the case's
parameters; :data:`CASES` says how each output must relate to its reference.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import reference as ref

__all__ = ["KernelCase", "CASES", "case_by_name", "pack_ties", "run_cases", "main"]


def _images(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return rng.random(shape, dtype=np.float32).astype(dtype)


def _dyadic(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Multiples of 1/256 in [-1, 1]: every Haar sum of them is exact in float32."""
    return (rng.integers(-256, 257, shape) / 256.0).astype(dtype)


def _subbands(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Haar subbands of a random 3-channel image: what haar_up meets in IRN (no wild values)."""
    n, kc, h, w = shape
    levels = int(round(np.log(kc // 3) / np.log(4)))
    side = 1 << levels
    image = rng.random((n, 3, h * side, w * side), dtype=np.float32)
    return ref.haar_down_ref(image, levels).astype(dtype)


def pack_ties() -> np.ndarray:
    """float32 x_k (k = 0..254) with float32(x_k * 255) == k + 0.5 exactly: rounding ties."""
    ties = np.zeros(255, np.float32)
    for k in range(255):
        v = np.float32((k + 0.5) / 255.0)
        while v * np.float32(255.0) != np.float32(k + 0.5):
            v = np.nextafter(v, np.float32(1.0 if v * 255 < k + 0.5 else 0.0), dtype=np.float32)
        ties[k] = v
    return ties


def _pack_input(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Values in [-0.1, 1.1], the first ones replaced by exact rounding ties."""
    x = (rng.random(shape, dtype=np.float32) * 1.2 - 0.1).astype(np.float32).reshape(-1)
    ties = pack_ties()
    x[: min(ties.size, x.size)] = ties[: x.size]
    return x.reshape(shape).astype(dtype)


@dataclass(frozen=True)
class KernelCase:
    """One kernel run: input builder, the launch (by name), the NumPy reference."""

    name: str
    kernel: str  # launch helper in irn_trt.plugins.kernels
    shape: tuple[int, ...]
    dtype: str  # input storage type
    make: Callable[[np.random.Generator, tuple[int, ...], type], np.ndarray]
    params: dict[str, float | int] = field(default_factory=dict)
    exact: bool = False  # integer output, or float output that must match bit for bit
    seed: int = 0

    def make_input(self) -> np.ndarray:
        return self.make(np.random.default_rng(self.seed), self.shape, np.dtype(self.dtype).type)

    def reference(self, x: np.ndarray) -> np.ndarray:
        p = self.params
        if self.kernel == "launch_haar_down":
            return ref.haar_down_ref(x, int(p["levels"]))
        if self.kernel == "launch_haar_up":
            return ref.haar_up_ref(x, int(p["levels"]))
        if self.kernel == "launch_pack_rgb8":
            return ref.pack_rgb8_ref(x)
        if self.kernel == "launch_unpack_rgb8":
            return ref.unpack_rgb8_ref(x, np.float16 if p.get("fp16") else np.float32)
        if self.kernel == "launch_gaussian_z":
            n, _, h, w = x.shape
            shape = (n, int(p["channels"]), h, w)
            return ref.gaussian_z_ref(shape, int(p["seed"]), float(p["scale"])).astype(x.dtype)
        raise ValueError(f"unknown kernel {self.kernel}")


def _bytes(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Byte values 0..255 as float32: what unpack_rgb8 reads after the native uint8 Cast."""
    return rng.integers(0, 256, shape).astype(np.float32)


def _build_cases() -> tuple[KernelCase, ...]:
    cases: list[KernelCase] = []
    # Odd LR sizes (5 x 7 blocks), batch 2, totals not multiples of the block size.
    for levels in (1, 2, 3):
        side = 1 << levels
        hr = (2, 3, side * 5, side * 7)
        lr = (2, 3 * 4**levels, 5, 7)
        p = {"levels": levels}
        cases += [
            KernelCase(f"haar_down_L{levels}_fp32", "launch_haar_down", hr, "float32", _images, p),
            KernelCase(
                f"haar_down_L{levels}_dyadic", "launch_haar_down", hr, "float32", _dyadic, p, True
            ),
            KernelCase(f"haar_up_L{levels}_fp32", "launch_haar_up", lr, "float32", _subbands, p),
            KernelCase(
                f"haar_up_L{levels}_dyadic", "launch_haar_up", lr, "float32", _dyadic, p, True
            ),
        ]
    cases += [
        # IRN x4's second level sees 12 channels; FP16 storage as in FP16 engines.
        KernelCase("haar_down_L1_c12_fp16", "launch_haar_down", (3, 12, 6, 10), "float16",
                   _images, {"levels": 1}),
        KernelCase("haar_up_L2_fp16", "launch_haar_up", (2, 48, 3, 5), "float16", _subbands,
                   {"levels": 2}),
        KernelCase("pack_rgb8_fp32", "launch_pack_rgb8", (2, 3, 17, 23), "float32", _pack_input,
                   exact=True),
        KernelCase("pack_rgb8_fp16", "launch_pack_rgb8", (3, 3, 9, 13), "float16", _pack_input,
                   exact=True),
        KernelCase("unpack_rgb8_fp32", "launch_unpack_rgb8", (2, 17, 23, 3), "float32", _bytes,
                   exact=True),
        KernelCase("unpack_rgb8_fp16", "launch_unpack_rgb8", (3, 9, 13, 3), "float32", _bytes,
                   {"fp16": 1}, exact=True),
        KernelCase("gaussian_z_seed0", "launch_gaussian_z", (2, 3, 5, 7), "float32", _images,
                   {"channels": 45, "seed": 0, "scale": 1.0}),
        KernelCase("gaussian_z_seed12345_t08", "launch_gaussian_z", (3, 3, 11, 13), "float32",
                   _images, {"channels": 45, "seed": 12345, "scale": 0.8}),
    ]  # fmt: skip
    return tuple(cases)


CASES: tuple[KernelCase, ...] = _build_cases()


def case_by_name(name: str) -> KernelCase:
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(name)


def _launch(case: KernelCase, x: np.ndarray, device: str) -> np.ndarray:
    import torch

    from . import kernels

    t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    p = case.params
    if case.kernel in ("launch_haar_down", "launch_haar_up"):
        out = getattr(kernels, case.kernel)(t, int(p["levels"]))
    elif case.kernel == "launch_pack_rgb8":
        out = kernels.launch_pack_rgb8(t)
    elif case.kernel == "launch_unpack_rgb8":
        out = kernels.launch_unpack_rgb8(t, torch.float16 if p.get("fp16") else torch.float32)
    else:
        out = kernels.launch_gaussian_z(t, int(p["channels"]), int(p["seed"]), float(p["scale"]))
    if device == "cuda":
        torch.cuda.synchronize()
    return out.cpu().numpy()


def run_cases(device: str = "cpu", names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Run the (selected) cases; returns ``{"<case>/input": ..., "<case>/output": ...}``."""
    results: dict[str, np.ndarray] = {}
    for case in CASES:
        if names and case.name not in names:
            continue
        x = case.make_input()
        results[f"{case.name}/input"] = x
        results[f"{case.name}/output"] = _launch(case, x, device)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m irn_trt.plugins.kernel_cases",
        description="Run the plugin kernels on seeded inputs and save inputs and outputs.",
        epilog="example: TRITON_INTERPRET=1 python -m irn_trt.plugins.kernel_cases /tmp/k.npz",
    )
    parser.add_argument("out", type=Path, help="where to write the .npz")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--case", action="append", help="run only this case (repeatable)")
    args = parser.parse_args(argv)
    results = run_cases(args.device, args.case)
    with open(args.out, "wb") as fh:  # a scratch file for the caller, not a user artefact
        np.savez(fh, **results)
    print(f"{len(results) // 2} cases -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
