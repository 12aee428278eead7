"""Which GPU and PTX ISA version the plugin kernels are compiled for (no GPU needed).

Triton gets an explicit ``GPUTarget`` built from the device's compute capability
(``target=None`` would build its C driver stub with gcc), and a PTX ISA version the
driver can JIT: Triton 3.9's default (8.8 for sm_80..89, 9.4 from sm_90 on) needs a
CUDA 12.9 / 13.4 driver. The device query is the only stand-in here; the kernels are
compiled for real by Triton and ptxas.
"""

from __future__ import annotations

import importlib.util
import re

import pytest
from irn_trt.plugins import aot
from irn_trt.runtime.errors import IRNError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None,
    reason="triton is not installed (pip install 'irn-trt[plugins]')",
)


def _cuda(version: str) -> int:
    """ "12.9" -> 12090, as cudaDriverGetVersion reports it."""
    major, minor = (int(p) for p in version.split("."))
    return 1000 * major + 10 * minor


@pytest.mark.parametrize(
    ("major", "minor", "arch"), [(7, 5, 75), (8, 0, 80), (8, 6, 86), (9, 0, 90), (12, 0, 120)]
)
def test_gpu_target_from_compute_capability(major: int, minor: int, arch: int) -> None:
    from triton.backends.compiler import GPUTarget

    target = aot.gpu_target(major, minor)
    assert isinstance(target, GPUTarget)
    assert (target.backend, target.arch, target.warp_size) == ("cuda", arch, 32)


def test_gpu_target_rejects_nonsense() -> None:
    with pytest.raises(IRNError, match="invalid compute capability"):
        aot.gpu_target(8, 10)
    with pytest.raises(IRNError, match="invalid compute capability"):
        aot.gpu_target(0, 0)


# PTX ISA release history (NVIDIA's table, as cuda-python's _ptx_utils encodes it).
@pytest.mark.parametrize(
    ("cuda", "isa"),
    [
        ("11.0", 70), ("11.8", 78), ("12.0", 80), ("12.4", 84), ("12.5", 85),
        ("12.6", 85), ("12.7", 86), ("12.8", 87), ("12.9", 88), ("13.0", 90),
        ("13.1", 91), ("13.4", 94),
    ],
)  # fmt: skip
def test_ptx_isa_of_a_cuda_version(cuda: str, isa: int) -> None:
    assert aot.ptx_isa_for_cuda(_cuda(cuda)) == isa


# (sm, driver CUDA, Triton's own PTX for that sm) -> chosen PTX, or the refusal's words.
# Triton 3.9: 88 for sm_80..89 (ptxas 12.9), 94 for sm_90+ (ptxas 13.4).
PTX_DECISIONS = [
    (80, "11.8", 88, 78),
    (80, "12.0", 88, 80),
    (80, "12.4", 88, 84),
    (80, "12.6", 88, 85),
    (80, "12.8", 88, 87),
    (80, "12.9", 88, 88),
    (80, "13.0", 88, 88),  # never above what Triton's ptxas knows
    (86, "11.1", 88, 71),
    (86, "11.0", 88, "sm_86 plugin kernels need PTX ISA 7.1"),
    (89, "12.2", 88, 82),
    (90, "11.8", 94, "sm_90 plugin kernels need PTX ISA 8.0"),  # Triton targets sm_90a
    (90, "12.0", 94, 80),
    (90, "12.8", 94, 87),
    (90, "12.9", 94, 88),
    (90, "13.0", 94, 90),
    (90, "13.4", 94, 94),
    (90, "13.5", 94, 94),
    (100, "12.6", 94, "sm_100 plugin kernels need PTX ISA 8.6"),
    (100, "12.8", 94, 87),
    (120, "12.8", 94, 87),
    (121, "12.8", 94, "sm_121 plugin kernels need PTX ISA 8.8"),
    (130, "13.4", 94, 94),  # unknown architecture: Triton's own version or nothing
    (130, "13.0", 94, "sm_130 plugin kernels need PTX ISA 9.4"),
    (90, "13.0", 78, "this Triton writes PTX ISA up to 7.8 but sm_90 needs 8.0"),
]


@pytest.mark.parametrize(("arch", "driver", "triton_ptx", "want"), PTX_DECISIONS)
def test_ptx_version_follows_the_driver(arch, driver, triton_ptx, want) -> None:
    if isinstance(want, int):
        assert aot.choose_ptx_version(arch, _cuda(driver), triton_ptx) == want
        return
    with pytest.raises(IRNError, match=re.escape(want)) as info:
        aot.choose_ptx_version(arch, _cuda(driver), triton_ptx)
    assert "\n" not in str(info.value)
    if "driver" in str(info.value):
        assert f"CUDA {driver}" in str(info.value) and "update the driver" in str(info.value)


def test_without_triton_default_the_driver_decides() -> None:
    assert aot.choose_ptx_version(80, _cuda("12.4")) == 84
    with pytest.raises(IRNError, match="too old"):
        aot.ptx_isa_for_cuda(_cuda("9.2"))


class _NoDriver:
    """Triton's driver must not be consulted: it would compile its C stub with gcc."""

    def __getattr__(self, name: str):
        raise AssertionError(f"Triton's driver was asked for {name}")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("cc", "driver", "target", "version"),
    [((8, 6), "12.4", "sm_86", "8.4"), ((9, 0), "12.9", "sm_90a", "8.8")],
)
def test_local_gpu_compiles_with_explicit_target_and_driver_ptx(
    monkeypatch: pytest.MonkeyPatch, cc, driver: str, target: str, version: str
) -> None:
    from triton.runtime.driver import driver as triton_driver

    monkeypatch.setattr(aot, "local_device", lambda device=0: (*cc, _cuda(driver)))
    monkeypatch.setattr(triton_driver, "_active", _NoDriver())
    kernel = aot.compile_kernel(aot.pack_rgb8_spec("float16"))  # arch=None: "this GPU"
    assert kernel.target == target
    assert re.search(rf"^\.version {re.escape(version)}$", kernel.ptx, re.MULTILINE)
    assert "fma.rn" not in kernel.ptx


def test_too_old_driver_is_one_line_before_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    # LLVM aborts the whole process on a PTX version below the target's minimum,
    # so the refusal has to come first.
    monkeypatch.setattr(aot, "local_device", lambda device=0: (9, 0, _cuda("11.8")))
    with pytest.raises(IRNError, match="supports CUDA 11.8 .* need PTX ISA 8.0"):
        aot.compile_kernel(aot.haar_down_spec(1))
    with pytest.raises(IRNError, match="sm_86 needs PTX ISA 7.1 or newer, not 7.0"):
        aot.compile_kernel(aot.haar_down_spec(1), arch=86, ptx_version=70)
