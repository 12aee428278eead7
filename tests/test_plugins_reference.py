"""The NumPy references of the irn::* plugins against the model code and published vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from irn_trt.plugins import reference as ref
from irn_trt.plugins.kernel_cases import pack_ties
from irn_trt.train.models import quantize
from irn_trt.train.modules import HaarDownsampling, _haar_filters


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_haar_down_ref_is_the_model_haar_composed(levels: int) -> None:
    rng = np.random.default_rng(levels)
    side = 1 << levels
    x = rng.random((2, 3, side * 3, side * 5), dtype=np.float32)
    t = torch.from_numpy(x).double()
    channels = 3
    for _ in range(levels):
        t = HaarDownsampling(channels).double()(t)
        channels *= 4
    got = ref.haar_down_ref(x.astype(np.float64), levels)
    np.testing.assert_allclose(got, t.numpy(), rtol=0, atol=1e-12)
    # and the inverse composes the model's inverses, coarsest level first
    back = torch.from_numpy(got)
    for _ in range(levels):
        channels //= 4
        back = HaarDownsampling(channels).double().inverse(back)
    np.testing.assert_allclose(ref.haar_up_ref(got, levels), back.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.numpy(), x, rtol=0, atol=1e-6)


def test_haar_signs_level_one_are_the_spec_filters() -> None:
    # Spec: k0 = [[1,1],[1,1]], k1 = [[1,-1],[1,-1]], k2 = [[1,1],[-1,-1]], k3 = [[1,-1],[-1,1]]
    expected = _haar_filters(1)[:, 0].numpy()
    np.testing.assert_array_equal(ref.haar_signs(1), expected)


def test_haar_rejects_sizes_not_divisible() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        ref.haar_down_ref(np.zeros((1, 3, 6, 8), np.float32), 2)
    with pytest.raises(ValueError, match="multiple of 16"):
        ref.haar_up_ref(np.zeros((1, 12, 2, 2), np.float32), 2)


def test_pack_ref_is_quantize_then_nhwc_bytes() -> None:
    rng = np.random.default_rng(1)
    x = (rng.random((2, 3, 7, 9), dtype=np.float32) * 1.4 - 0.2).astype(np.float32)
    levels = torch.round(quantize(torch.from_numpy(x)) * 255.0).to(torch.uint8)
    packed = ref.pack_rgb8_ref(x)  # byte values in float32: the Cast to uint8 stays native
    assert packed.dtype == np.float32
    np.testing.assert_array_equal(packed.astype(np.uint8), levels.permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(packed, packed.astype(np.uint8))  # integers: the Cast is exact
    # exact ties round half to even, like ONNX Round: k + 0.5 -> k if k is even, else k + 1
    ties = pack_ties()
    k = np.arange(255)
    got = ref.pack_rgb8_ref(ties.reshape(1, 1, 1, -1)).reshape(-1)
    np.testing.assert_array_equal(got, k + (k % 2))


def test_unpack_ref_roundtrips_pack() -> None:
    rng = np.random.default_rng(2)
    u = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    x = ref.unpack_rgb8_ref(u.astype(np.float32))  # what the plugin reads: the Cast's output
    assert x.shape == (2, 3, 5, 7) and x.dtype == np.float32
    np.testing.assert_array_equal(x, (u.astype(np.float32) / np.float32(255)).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(ref.unpack_rgb8_ref(u), x)
    np.testing.assert_array_equal(ref.pack_rgb8_ref(x), u)
    assert ref.unpack_rgb8_ref(u, np.float16).dtype == np.float16
    with pytest.raises(ValueError, match="uint8"):
        ref.unpack_rgb8_ref(u.astype(np.int32))


@pytest.mark.parametrize(
    ("counter", "key", "expected"),
    [
        # Known-answer vectors published with Random123 (kat_vectors, philox4x32 10 rounds).
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        (
            (0xFFFFFFFF,) * 4,
            (0xFFFFFFFF, 0xFFFFFFFF),
            (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
        ),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_philox_known_answers(counter: tuple, key: tuple, expected: tuple) -> None:
    got = ref.philox4x32_10(tuple(np.array([c], np.uint32) for c in counter), key)
    assert tuple(int(w[0]) for w in got) == expected


def test_gaussian_ref_is_seeded_standard_normal() -> None:
    z = ref.gaussian_z_ref((4, 45, 32, 32), seed=7, scale=1.0)
    assert z.dtype == np.float32
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1.0) < 0.01
    np.testing.assert_array_equal(z, ref.gaussian_z_ref((4, 45, 32, 32), seed=7))
    assert not np.array_equal(z, ref.gaussian_z_ref((4, 45, 32, 32), seed=8))
    # counter-based: element i depends only on (seed, i), not on the shape it sits in
    flat = ref.gaussian_z_ref((z.size,), seed=7)
    np.testing.assert_array_equal(flat, z.reshape(-1))
    half = ref.gaussian_z_ref((4, 45, 32, 32), seed=7, scale=0.5)
    np.testing.assert_allclose(half, z * np.float32(0.5), rtol=1e-6)


def test_plugin_package_imports_neither_torch_nor_triton() -> None:
    # The exporter and the torch-free runtime import these modules.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import irn_trt.plugins, irn_trt.plugins.onnx_rewrite, irn_trt.plugins.trt_plugins\n"
        "import irn_trt.plugins.aot, irn_trt.plugins.reference, irn_trt.runtime.backends.trt\n"
        "print(sorted(m for m in ('torch', 'triton', 'tensorrt') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_prepare_tensorrt_is_a_no_op_for_native_graphs_and_one_line_otherwise() -> None:
    from irn_trt.plugins import prepare_tensorrt_for, tensorrt_plugin_api_reason
    from irn_trt.runtime.errors import IRNError

    prepare_tensorrt_for(())  # native graph: nothing to register, nothing imported
    reason = tensorrt_plugin_api_reason()
    if reason is None:
        pytest.skip("tensorrt.plugin is available here (covered by the gpu tests)")
    with pytest.raises(IRNError, match="irn::haar_down") as err:
        prepare_tensorrt_for(("irn::haar_down",))
    assert "\n" not in str(err.value)
