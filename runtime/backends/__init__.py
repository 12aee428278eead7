"""Backend registry: names -> modules imported lazily, and ``auto`` selection.

Importing this package imports no inference library: each backend module is
imported only when that backend is asked for (or probed by ``auto``), so a
machine without TensorRT or OpenVINO never touches them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import IRNError
from .base import Backend, BackendOptions

__all__ = [
    "Backend",
    "BackendOptions",
    "BackendSpec",
    "BACKENDS",
    "AUTO_ORDER",
    "backend_names",
    "get_spec",
    "backend_class",
    "Candidate",
    "candidates",
]


@dataclass(frozen=True)
class BackendSpec:
    """Where a backend lives and which precisions it runs (first = its default)."""

    name: str
    module: str  # module below irn_trt.runtime.backends
    precisions: tuple[str, ...]
    gpu: bool


BACKENDS: tuple[BackendSpec, ...] = (
    BackendSpec("trt", "trt", ("fp16", "fp32"), gpu=True),
    BackendSpec("ort-trt", "ort_gpu", ("fp16", "fp32"), gpu=True),
    BackendSpec("ort-cuda", "ort_gpu", ("fp16", "fp32"), gpu=True),
    BackendSpec("ov-cpu", "ov_cpu", ("fp32", "bf16", "fp16"), gpu=False),
    BackendSpec("ort-cpu", "ort_cpu", ("fp32", "fp16"), gpu=False),
)

#: ``auto`` tries these in order of expected speed (GPU first, then the CPU paths).
AUTO_ORDER: tuple[str, ...] = tuple(s.name for s in BACKENDS)


def backend_names() -> list[str]:
    return [s.name for s in BACKENDS]


def get_spec(name: str) -> BackendSpec:
    for spec in BACKENDS:
        if spec.name == name:
            return spec
    raise IRNError(f"unknown backend {name!r} (choose from: auto, {', '.join(backend_names())})")


def backend_class(name: str) -> type[Backend]:
    """Import the backend's module and return its class (the Backend subclass named ``name``)."""
    spec = get_spec(name)
    try:
        module = importlib.import_module(f"{__name__}.{spec.module}")
    except ImportError as exc:
        raise IRNError(f"backend {name} is unavailable: {exc}") from None
    for obj in vars(module).values():
        if (
            isinstance(obj, type)
            and issubclass(obj, Backend)
            and getattr(obj, "name", None) == name
        ):
            return obj
    raise IRNError(f"backend {name} is unavailable: {spec.module} defines no {name} backend")


@dataclass(frozen=True)
class Candidate:
    """One backend considered by ``auto``: its class, or the one-line reason it cannot run."""

    name: str
    cls: type[Backend] | None
    reason: str | None


def candidates(
    names: tuple[str, ...] = AUTO_ORDER,
    probe: Callable[[type[Backend]], str | None] | None = None,
) -> list[Candidate]:
    """Probe backends in order (cheaply: no engine/session is created)."""
    out = []
    for name in names:
        try:
            cls = backend_class(name)
        except IRNError as exc:
            out.append(
                Candidate(name, None, str(exc).removeprefix(f"backend {name} is unavailable: "))
            )
            continue
        try:
            reason = probe(cls) if probe is not None else cls.probe()
        except Exception as exc:  # a probe must never crash selection
            reason = f"probe failed ({type(exc).__name__}: {exc})"
        out.append(Candidate(name, None if reason else cls, reason))
    return out
