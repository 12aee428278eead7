"""Checkpoints: safetensors weights plus a JSON config naming the registry entry.

A checkpoint is a directory holding ``model.safetensors`` and ``config.json``.
Nothing here unpickles arbitrary objects: safetensors for our own files, and
``torch.load(weights_only=True)`` for the reference implementation's ``.pth``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from irn_trt.runtime.atomic import atomic_path, write_text_atomic
from irn_trt.runtime.errors import IRNError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .configs import config_from_dict
from .models import InvertibleRescaler, IRNConfig, Rescaler, build_model, get_config

__all__ = [
    "CHECKPOINT_FORMAT",
    "WEIGHTS_FILE",
    "CONFIG_FILE",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_config",
    "checkpoint_sha256",
    "default_checkpoint",
    "to_reference_state_dict",
    "from_reference_state_dict",
    "import_reference_checkpoint",
]

CHECKPOINT_FORMAT = "irn-trt-checkpoint/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def default_checkpoint(model_name: str = "irn_x4") -> Path:
    """The shipped checkpoint directory ``weights/<model_name>`` of this repository."""
    env = os.environ.get("IRN_TRT_WEIGHTS")
    root = Path(env) if env else Path(__file__).resolve().parent.parent / "weights"
    return root / model_name


def save_checkpoint(
    model: Rescaler, directory: str | os.PathLike[str], meta: dict[str, Any] | None = None
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (each atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": CHECKPOINT_FORMAT})
    config = {
        "format": CHECKPOINT_FORMAT,
        "model": model.config.name,
        "architecture": model.config.to_dict(),
        "meta": meta or {},
    }
    write_text_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory


def _checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if path.is_file() and path.name in (WEIGHTS_FILE, CONFIG_FILE):
        path = path.parent
    if not path.exists():
        raise IRNError(f"checkpoint {path}: no such file or directory")
    if path.is_file():
        raise IRNError(
            f"checkpoint {path}: expected a directory with {WEIGHTS_FILE} and {CONFIG_FILE} "
            f"(import a reference .pth with --reference-pth)"
        )
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (path / name).is_file():
            raise IRNError(f"checkpoint {path}: {name} is missing")
    return path


def read_checkpoint_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint directory."""
    directory = _checkpoint_dir(path)
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IRNError(f"checkpoint {directory}: {CONFIG_FILE} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != CHECKPOINT_FORMAT:
        raise IRNError(f"checkpoint {directory}: {CONFIG_FILE} is not an irn-trt checkpoint config")
    return config


def checkpoint_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the weights file (identifies a checkpoint in manifests and PNG metadata)."""
    directory = _checkpoint_dir(path)
    return hashlib.sha256((directory / WEIGHTS_FILE).read_bytes()).hexdigest()


def _check_state_dict(state: dict[str, torch.Tensor], model: Rescaler, source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(
                f"missing {missing[0]}" + (f" (+{len(missing) - 1} more)" * (len(missing) > 1))
            )
        if unexpected:
            parts.append(
                f"unexpected {unexpected[0]}"
                + (f" (+{len(unexpected) - 1} more)" * (len(unexpected) > 1))
            )
        raise IRNError(f"{source} does not match {model.config.name}: {'; '.join(parts)}")
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise IRNError(
                f"{source} does not match {model.config.name}: {key} has shape "
                f"{tuple(state[key].shape)}, expected {tuple(ref.shape)}"
            )


def load_checkpoint(
    path: str | os.PathLike[str], expect_scale: int | None = None
) -> tuple[Rescaler, dict[str, Any]]:
    """Load a checkpoint directory (any model family); returns the model (eval mode) and its
    config dict."""
    directory = _checkpoint_dir(path)
    config = read_checkpoint_config(directory)
    try:
        arch = config_from_dict(config["architecture"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IRNError(
            f"checkpoint {directory}: architecture in {CONFIG_FILE} is invalid ({exc})"
        ) from None
    if expect_scale is not None and arch.scale != expect_scale:
        raise IRNError(
            f"checkpoint {directory} is {arch.name} (scale {arch.scale}), not scale {expect_scale}"
        )
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise IRNError(
            f"checkpoint {directory}: {WEIGHTS_FILE} is unreadable or corrupt ({exc})"
        ) from None
    model = build_model(arch)
    _check_state_dict(state, model, f"checkpoint {directory}")
    model.load_state_dict(state)
    model.eval()
    return model, config


# --- the reference implementation's layout --------------------------------------------

_OUR_KEY = re.compile(r"^steps\.(\d+)\.([fgh])\.convs\.(\d)\.(weight|bias)$")
_REF_KEY = re.compile(r"^operations\.(\d+)\.([FGH])\.conv(\d)\.(weight|bias)$")


def _reference_haar_weights(channels: int) -> torch.Tensor:
    # Reference layout: grouped conv weight (4C, 1, 2, 2), filter k of channel c at c*4 + k.
    from .modules import _haar_filters

    dense = _haar_filters(channels)  # (4C, C, 2, 2), row k*C + c
    out = torch.zeros(4 * channels, 1, 2, 2)
    for c in range(channels):
        for k in range(4):
            out[c * 4 + k, 0] = dense[k * channels + c, c]
    return out


def to_reference_state_dict(model: InvertibleRescaler) -> dict[str, torch.Tensor]:
    """Our weights under the reference implementation's key names (Haar models only)."""
    from .modules import HaarDownsampling

    out: dict[str, torch.Tensor] = {}
    for i, step in enumerate(model.steps):
        if isinstance(step, HaarDownsampling):
            out[f"operations.{i}.haar_weights"] = _reference_haar_weights(step.channels)
        elif not hasattr(step, "f"):
            raise IRNError(f"{model.config.name} has no reference-implementation layout")
    for key, value in model.state_dict().items():
        m = _OUR_KEY.match(key)
        if not m:
            raise IRNError(f"{model.config.name} has no reference-implementation layout ({key})")
        i, sub, k, kind = m.groups()
        out[f"operations.{i}.{sub.upper()}.conv{int(k) + 1}.{kind}"] = value.detach().clone()
    return out


def from_reference_state_dict(
    state: dict[str, torch.Tensor], model: InvertibleRescaler, source: str = "reference checkpoint"
) -> dict[str, torch.Tensor]:
    """Convert a reference state dict (optionally ``module.``-prefixed) to our key names."""
    from .modules import HaarDownsampling

    converted: dict[str, torch.Tensor] = {}
    for raw_key, value in state.items():
        key = raw_key[len("module.") :] if raw_key.startswith("module.") else raw_key
        if key.endswith(".haar_weights"):
            i = int(key.split(".")[1])
            step = model.steps[i] if i < len(model.steps) else None
            if not isinstance(step, HaarDownsampling):
                raise IRNError(f"{source} does not match {model.config.name}: unexpected {key}")
            expected = _reference_haar_weights(step.channels)
            if tuple(value.shape) != tuple(expected.shape) or not torch.equal(
                value.float(), expected
            ):
                raise IRNError(f"{source}: {key} is not the fixed Haar filter bank")
            continue
        m = _REF_KEY.match(key)
        if not m:
            raise IRNError(f"{source} does not match {model.config.name}: unexpected {key}")
        i, sub, k, kind = m.groups()
        converted[f"steps.{i}.{sub.lower()}.convs.{int(k) - 1}.{kind}"] = value
    _check_state_dict(converted, model, source)
    return converted


def import_reference_checkpoint(pth: str | os.PathLike[str], model_name: str) -> InvertibleRescaler:
    """Load a reference ``.pth`` state dict (``weights_only=True``) into a registry model."""
    pth = Path(pth)
    if not pth.is_file():
        raise IRNError(f"{pth}: no such file")
    try:
        state = torch.load(pth, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt/pickled files
        raise IRNError(
            f"{pth}: not a loadable state dict ({type(exc).__name__}: {exc})".splitlines()[0]
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IRNError(f"{pth}: not a state dict of tensors")
    config = get_config(model_name)
    if not isinstance(config, IRNConfig):
        raise IRNError(f"{model_name}: the reference implementation's layout is IRN's only")
    model = InvertibleRescaler(config)
    model.load_state_dict(from_reference_state_dict(state, model, str(pth)))
    model.eval()
    return model
