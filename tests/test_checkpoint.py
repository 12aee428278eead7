"""Checkpoints: our safetensors format and the reference implementation's .pth layout."""

from __future__ import annotations

import json

import pytest
import torch
from irn_trt.runtime.errors import IRNError
from irn_trt.train.checkpoint import (
    checkpoint_sha256,
    import_reference_checkpoint,
    load_checkpoint,
    save_checkpoint,
    to_reference_state_dict,
)
from irn_trt.train.models import build_model, randomize_weights


@pytest.fixture
def model_x4():
    model = build_model("irn_x4").eval()
    randomize_weights(model, seed=3)
    return model


def test_save_load_round_trip(tmp_path, model_x4):
    save_checkpoint(model_x4, tmp_path / "ck", meta={"step": 7})
    loaded, config = load_checkpoint(tmp_path / "ck", expect_scale=4)
    assert config["model"] == "irn_x4" and config["meta"]["step"] == 7
    for key, value in model_x4.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    assert len(checkpoint_sha256(tmp_path / "ck")) == 64


def test_load_rejects_other_scale(tmp_path, model_x4):
    save_checkpoint(model_x4, tmp_path / "ck")
    with pytest.raises(IRNError, match="not scale 2"):
        load_checkpoint(tmp_path / "ck", expect_scale=2)


def test_truncated_weights_give_one_line_error(tmp_path, model_x4):
    save_checkpoint(model_x4, tmp_path / "ck")
    weights = tmp_path / "ck" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(IRNError, match="unreadable or corrupt") as err:
        load_checkpoint(tmp_path / "ck")
    assert "\n" not in str(err.value)


def test_config_of_another_architecture_names_the_mismatch(tmp_path, model_x4):
    save_checkpoint(model_x4, tmp_path / "ck")
    cfg_path = tmp_path / "ck" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["architecture"] = build_model("irn_x2").config.to_dict()
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(IRNError, match=r"does not match irn_x2: unexpected steps\.1\d\."):
        load_checkpoint(tmp_path / "ck")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(IRNError, match="no such file or directory"):
        load_checkpoint(tmp_path / "nothing")


@pytest.mark.parametrize("prefix", ["", "module."])
def test_reference_pth_loads_bit_identical(tmp_path, model_x4, prefix):
    ref = {prefix + k: v for k, v in to_reference_state_dict(model_x4).items()}
    assert "operations.0.haar_weights" in {k.removeprefix("module.") for k in ref}
    assert any(k.endswith("operations.17.H.conv5.bias") for k in ref)
    torch.save(ref, tmp_path / "IRN_x4.pth")
    imported = import_reference_checkpoint(tmp_path / "IRN_x4.pth", "irn_x4")
    x = torch.rand(1, 3, 32, 24)
    with torch.no_grad():
        y0, z0 = model_x4(x)
        y1, z1 = imported(x)
        assert torch.equal(y0, y1) and torch.equal(z0, z1)
        assert torch.equal(model_x4.inverse(y0, z0), imported.inverse(y1, z1))


def test_reference_pth_of_wrong_model_names_the_key(tmp_path, model_x4):
    torch.save(to_reference_state_dict(model_x4), tmp_path / "x4.pth")
    with pytest.raises(IRNError, match="does not match irn_x2: unexpected operations.9"):
        import_reference_checkpoint(tmp_path / "x4.pth", "irn_x2")


def test_truncated_reference_pth(tmp_path, model_x4):
    torch.save(to_reference_state_dict(model_x4), tmp_path / "x4.pth")
    data = (tmp_path / "x4.pth").read_bytes()
    (tmp_path / "bad.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(IRNError, match="not a loadable state dict") as err:
        import_reference_checkpoint(tmp_path / "bad.pth", "irn_x4")
    assert "\n" not in str(err.value)


def test_reference_pth_with_wrong_shape(tmp_path, model_x4):
    ref = to_reference_state_dict(model_x4)
    ref["operations.1.F.conv1.weight"] = torch.zeros(32, 9, 3, 1)
    torch.save(ref, tmp_path / "x4.pth")
    with pytest.raises(IRNError, match=r"operations|steps\.1\.f\.convs\.0\.weight has shape"):
        import_reference_checkpoint(tmp_path / "x4.pth", "irn_x4")
