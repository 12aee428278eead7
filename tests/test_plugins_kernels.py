"""Triton kernels of the irn::* plugins: interpreter runs vs NumPy, and AOT PTX for sm_80/sm_90.

Triton picks interpret-or-compile when it is imported, so the interpreter runs
happen in a child process (``TRITON_INTERPRET=1``) that saves inputs and
outputs; the comparisons with the references happen here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from irn_trt.plugins.kernel_cases import CASES, KernelCase

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None,
    reason="triton is not installed (pip install 'irn-trt[plugins]')",
)


def _run_cases(out: Path, *extra: str, interpret: bool) -> dict[str, np.ndarray]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    cmd = [sys.executable, "-m", "irn_trt.plugins.kernel_cases", str(out), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    return _run_cases(tmp_path_factory.mktemp("interp") / "cases.npz", interpret=True)


def _check(case: KernelCase, results: dict[str, np.ndarray]) -> None:
    x, out = results[f"{case.name}/input"], results[f"{case.name}/output"]
    expected = case.reference(x)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    if case.exact:
        np.testing.assert_array_equal(out, expected)
    else:
        np.testing.assert_allclose(out.astype(np.float64), expected, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_kernel_in_interpreter_matches_reference(
    case: KernelCase, interpreted: dict[str, np.ndarray]
) -> None:
    _check(case, interpreted)


@pytest.mark.slow
def test_interpreter_cases_cover_batches_and_odd_sizes(interpreted: dict[str, np.ndarray]) -> None:
    # every case runs batch > 1 on an odd image (or odd grid of Haar blocks)
    for case in CASES:
        x = interpreted[f"{case.name}/input"]
        if case.kernel == "launch_unpack_rgb8":
            hw = x.shape[1:3]
        elif case.kernel == "launch_haar_down":
            side = 1 << int(case.params["levels"])
            hw = (x.shape[2] // side, x.shape[3] // side)
        else:
            hw = x.shape[2:4]
        assert x.shape[0] > 1 and all(d % 2 for d in hw), (case.name, x.shape)
    # seeds matter: the two gaussian cases differ where they overlap
    a = interpreted["gaussian_z_seed0/output"].reshape(-1)[:1000]
    b = interpreted["gaussian_z_seed12345_t08/output"].reshape(-1)[:1000]
    assert not np.allclose(a, b / 0.8)


def _aot_specs() -> list:
    from irn_trt.plugins import aot

    return [
        aot.haar_down_spec(1),
        aot.haar_down_spec(2, "float16"),
        aot.haar_up_spec(1),
        aot.haar_up_spec(3),
        aot.pack_rgb8_spec("float16"),
        aot.unpack_rgb8_spec(),
        aot.gaussian_z_spec(seed=12345, scale=0.8),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("spec", _aot_specs(), ids=lambda s: s.label())
def test_aot_compiles_to_ptx_without_a_gpu(spec, arch: int) -> None:
    from irn_trt.plugins.aot import compile_kernel

    kernel = compile_kernel(spec, arch)
    assert kernel.target == ("sm_90a" if arch == 90 else f"sm_{arch}")
    assert kernel.name == spec.kernel
    assert re.search(rf"\.visible \.entry {kernel.name}\(", kernel.ptx)
    # TensorRT passes inputs, the extra int32 scalars and outputs in this order; Triton
    # appends scratch pointers after them, unused as no kernel asks for scratch memory
    runtime_args = [t for t in spec.signature.values() if t != "constexpr"]
    params = re.findall(rf"\.param \.(\w+)[^\n]*?{kernel.name}_param_(\d+)", kernel.ptx)
    assert len(params) >= len(runtime_args)
    for (ptx_type, _), triton_type in zip(params, runtime_args, strict=False):
        assert ptx_type == ("u64" if triton_type.startswith("*") else "u32"), params
    assert kernel.threads == 128 and kernel.shared >= 0 and kernel.scratch_bytes == 0
    if spec.kernel == "pack_rgb8_kernel":
        # the 1.5*2^23 rounding must stay an add then a subtract (no FMA contraction)
        assert "fma.rn" not in kernel.ptx


@pytest.mark.gpu
def test_kernels_on_gpu_match_reference(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the launch helpers take torch tensors")
    results = _run_cases(tmp_path / "cuda.npz", "--device", "cuda", interpret=False)
    for case in CASES:
        _check(case, results)
