"""Where exported model directories live, so a model is found from any folder.

``irn-export`` writes ``<root>/<model>/`` into the first root of the search
path; ``irn-trt-run --model NAME`` (and ``Rescaler.load(model=NAME)``) looks
through every root in order. The search path, first to last:

1. the folders in ``IRN_TRT_MODELS`` (separated like ``PATH``);
2. ``build/`` of the irn-trt checkout this package runs from (an editable install);
3. ``irn-trt/models`` in the user data folder (``$XDG_DATA_HOME``, default
   ``~/.local/share``), for installs without a checkout.

The current folder is deliberately not on it: the same command finds the same
model wherever it is run. An explicit ``--model-dir`` bypasses the search. Torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import IRNError
from .manifest import MANIFEST_FILE
from .scales import models_for_scale

__all__ = [
    "DEFAULT_MODEL",
    "MODELS_ENV",
    "model_search_path",
    "export_root",
    "find_model_dir",
    "find_model_for_scale",
]

DEFAULT_MODEL = "irn_x4"
MODELS_ENV = "IRN_TRT_MODELS"


def _checkout_build() -> Path | None:
    """``build/`` of the source checkout when the package runs from one (editable install)."""
    repo = Path(__file__).resolve().parents[1]
    return repo / "build" if (repo / "pyproject.toml").is_file() else None


def _user_models() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "irn-trt" / "models"


def model_search_path() -> list[Path]:
    """The folders searched for ``<model>/manifest.json``, first match wins."""
    roots = [Path(p).expanduser() for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    checkout = _checkout_build()
    if checkout is not None:
        roots.append(checkout)
    roots.append(_user_models())
    return roots


def export_root() -> Path:
    """Where ``irn-export`` writes by default: the first folder of the search path."""
    return model_search_path()[0]


def find_model_dir(model: str = DEFAULT_MODEL) -> Path:
    """The model directory of ``model`` (an irn-export output), or a one-line error."""
    roots = model_search_path()
    for root in roots:
        if (root / model / MANIFEST_FILE).is_file():
            return root / model
    searched = ", ".join(str(r) for r in roots)
    raise IRNError(
        f"no exported model {model} in the model search path ({searched}): run "
        f"`irn-export --model {model}` (writes {export_root() / model}), or pass --model-dir"
    )


def find_model_for_scale(scale: float) -> Path:
    """The exported ``irn_x<n>`` of the smallest integer scale n >= ``scale`` (spec: ceil(s)).

    A fractional scale runs that model with a bicubic resize around it; when
    ceil(s) has no exported model, the next larger one that has serves.
    """
    names = models_for_scale(scale)
    for name in names:
        for root in model_search_path():
            if (root / name / MANIFEST_FILE).is_file():
                return root / name
    raise IRNError(
        f"no exported model for x{scale:g}: none of {', '.join(names)} is in the model search "
        f"path ({', '.join(str(r) for r in model_search_path())}); run `irn-export --model "
        f"{names[0]}`, or pass --model / --model-dir"
    )
