"""The model zoo: exact parameter counts, invertibility, size checks."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from irn_trt.train.models import (
    IRNConfig,
    build_model,
    get_config,
    list_models,
)
from irn_trt.train.models import randomize_weights as randomize

PARAMS = {
    "irn_x2": 1_667_952,
    "irn_x4": 4_355_136,
    "irn_x8": 11_119_248,
    "irn_x3": 3_139_029,
    "irn_e_x4": 5_374_368,
}


def test_registry_lists_all_models() -> None:
    assert set(PARAMS) <= set(list_models())


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_learnable_parameter_count_is_exact(name: str) -> None:
    assert build_model(name).num_learnable_parameters() == PARAMS[name]


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_inverse_reproduces_input_on_non_square_input(name: str) -> None:
    # The entry's structure at tiny depth (conftest.tiny_config); full sizes: counts above.
    torch.manual_seed(0)
    model = build_model(tiny_config(name)).eval()
    randomize(model)
    s = model.scale
    x = torch.rand(2, 3, 4 * s, 7 * s)
    with torch.no_grad():
        y, z = model(x)
        assert y.shape == (2, 3, 4, 7)
        assert z.shape == (2, 3 * s * s - 3, 4, 7)
        rec = model.inverse(y, z)
    assert (rec - x).abs().max().item() < 1e-4


def test_fresh_model_downscales_to_the_box_average() -> None:
    # Every coupling block starts as the identity, so y is the Haar LL band: the 4x4 mean.
    model = build_model("irn_x4").eval()
    x = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        y, _ = model(x)
    expected = torch.nn.functional.avg_pool2d(x, 4)
    assert torch.allclose(y, expected, atol=1e-6)


def test_zero_latent_is_the_default() -> None:
    model = build_model("irn_x2").eval()
    randomize(model)
    y = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        a = model.inverse(y)
        b = model.inverse(y, torch.zeros(1, 9, 5, 6))
    assert torch.equal(a, b)


def test_size_not_divisible_by_scale_is_a_clear_error() -> None:
    model = build_model("irn_x4")
    with pytest.raises(ValueError, match="not divisible by the scale 4"):
        model(torch.rand(1, 3, 18, 16))


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="unknown model 'irn_x5'"):
        get_config("irn_x5")


def test_config_round_trips_through_dict() -> None:
    for name in PARAMS:
        cfg = get_config(name)
        assert IRNConfig.from_dict(cfg.to_dict()) == cfg
