"""Build serialized TensorRT engines from the exported ONNX graphs (TensorRT 10.x / 11.x).

One strongly typed code path serves both majors: precision comes from the ONNX
tensor types (the FP16 graph builds an FP16 engine, the FP32 graph an FP32 one), so
no ``BuilderFlag.FP16`` and no weak typing. On 10.x we request
``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; on 11.x strong typing is always on
and the flag is deprecated, so we do not pass it. ``tensorrt`` is imported inside
functions only; everything decided before the import is in ``trt_plan.py``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .atomic import write_bytes_atomic
from .errors import IRNError
from .trt_plan import ProfileShapes, strongly_typed_flag_needed, trt_version_problem

__all__ = [
    "BuildSpec",
    "import_tensorrt",
    "tensorrt_unavailable_reason",
    "TrtLogSink",
    "make_logger",
    "build_engine",
]

Warn = Callable[[str], None]


@dataclass(frozen=True)
class BuildSpec:
    """What to build: one ONNX graph, one optimization profile, builder limits."""

    onnx_path: Path
    profiles: tuple[ProfileShapes, ...]
    workspace_bytes: int = 4 << 30
    opt_level: int = 3  # TensorRT's builder_optimization_level, 0..5 (3 = TensorRT's default)
    timing_cache: Path | None = None  # read before, written after the build
    verbose: bool = False


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or IRNError with a one-line reason."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError:
        raise IRNError("tensorrt is not installed (pip install 'irn-trt[gpu]')") from None
    except OSError as exc:  # bindings present, libnvinfer missing
        raise IRNError(f"tensorrt cannot load its libraries ({exc})") from None
    problem = trt_version_problem(trt.__version__)
    if problem:
        raise IRNError(problem)
    return trt


def tensorrt_unavailable_reason() -> str | None:
    """None when a supported tensorrt imports here, else why not (does not touch the GPU)."""
    try:
        import_tensorrt()
    except IRNError as exc:
        return str(exc)
    return None


class TrtLogSink:
    """Where TensorRT's messages go: stderr, filtered by severity (pure Python, no tensorrt).

    TensorRT's own ``trt.Logger`` prints to stdout, which breaks ``--json -``; this sink
    keeps stdout for results. Severities are TensorRT's ``ILogger.Severity`` values
    (0 INTERNAL_ERROR ... 4 VERBOSE: a smaller value is more severe).
    """

    LABELS = ("internal error", "error", "warning", "info", "verbose")
    WARNING = 2
    VERBOSE = 4

    def __init__(self, stream: TextIO | None = None) -> None:
        self.min_severity = self.WARNING
        self._stream = stream  # None: sys.stderr at the time of the message (pytest swaps it)

    def set_verbose(self, verbose: bool) -> None:
        self.min_severity = self.VERBOSE if verbose else self.WARNING

    def emit(self, severity: Any, msg: str) -> None:
        level = int(severity)
        if level > self.min_severity:
            return
        label = self.LABELS[level] if 0 <= level < len(self.LABELS) else f"severity {level}"
        stream = self._stream or sys.stderr
        print(f"[TensorRT] {label}: {msg}", file=stream, flush=True)


_logger: Any = None
_logger_lock = threading.Lock()


def make_logger(trt: Any, verbose: bool = False) -> Any:
    """The one TensorRT logger of this process (a ``trt.ILogger`` writing to stderr).

    TensorRT treats its logger as a process-wide singleton (builders and runtimes must
    share one; another draws a "logger differs" warning) and calls it until every object
    made with it is gone, so it is created once and never released. ``verbose`` sets its
    threshold for what follows (VERBOSE or WARNING): the latest caller decides.
    """
    global _logger
    with _logger_lock:
        if _logger is None:

            class StderrLogger(trt.ILogger):  # type: ignore[misc,name-defined]
                def __init__(self) -> None:
                    trt.ILogger.__init__(self)  # pybind11 needs the explicit base init
                    self.sink = TrtLogSink()

                def log(self, severity: Any, msg: str) -> None:
                    self.sink.emit(severity, msg)

            _logger = StderrLogger()
        _logger.sink.set_verbose(verbose)
        return _logger


def _network_flags(trt: Any) -> int:
    if not strongly_typed_flag_needed(trt.__version__):
        return 0  # 11.x: strongly typed is the only mode; the flag is deprecated and ignored
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise IRNError(f"TensorRT {trt.__version__} has no strongly typed networks")
    return 1 << int(flag)


def _load_timing_cache(config: Any, path: Path | None, warn: Warn) -> Any:
    """Attach the timing cache at ``path`` (or a new one) to ``config``; None if none works.

    ``createTimingCache`` is ``noexcept`` and returns nullptr (None in Python) on a blob it
    cannot read; the bindings may also raise. Both mean a corrupt file: start a new cache.
    """
    blob = b""
    if path is not None and path.is_file():
        blob = path.read_bytes()
    try:
        cache = config.create_timing_cache(blob)
        problem = None if cache is not None else "TensorRT could not read it"
    except Exception as exc:  # noqa: BLE001 - a bad timing cache only costs build time
        cache, problem = None, str(exc)
    if cache is None and blob:
        warn(f"timing cache {path} is unusable ({problem}); starting a new one")
    # ignore_mismatch=False: a cache from another device/version is rejected, not mixed in.
    if cache is not None and not config.set_timing_cache(cache, False):
        warn(f"timing cache {path} does not match this GPU/TensorRT; starting a new one")
        cache = None
    if cache is None:
        try:
            cache = config.create_timing_cache(b"")
        except Exception:  # noqa: BLE001
            cache = None
        if cache is None or not config.set_timing_cache(cache, False):
            warn("TensorRT could not create a timing cache; building without one")
            return None
    return cache


def build_engine(spec: BuildSpec, warn: Warn) -> bytes:
    """Parse ``spec.onnx_path`` and return a serialized engine (IRNError on any failure)."""
    trt = import_tensorrt()
    if not spec.onnx_path.is_file():
        raise IRNError(f"ONNX graph {spec.onnx_path} not found")
    logger = make_logger(trt, spec.verbose)
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # noqa: BLE001 - TypeError/RuntimeError without a CUDA device
        raise IRNError(f"TensorRT cannot create a builder (no usable GPU?): {exc}") from None
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external weight files relative to the graph.
    if not parser.parse_from_file(os.fspath(spec.onnx_path)):
        errors = [_parser_error_text(parser.get_error(i)) for i in range(parser.num_errors)]
        first = errors[0].splitlines()[0] if errors else "unknown error"
        raise IRNError(
            f"TensorRT's ONNX parser rejected {spec.onnx_path.name}: {first}"
            + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else "")
        )
    _check_profile_inputs(network, spec.profiles)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(spec.workspace_bytes))
    config.builder_optimization_level = int(spec.opt_level)
    profile = builder.create_optimization_profile()
    for p in spec.profiles:
        profile.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    timing = _load_timing_cache(config, spec.timing_cache, warn)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise IRNError(
            f"TensorRT failed to build an engine from {spec.onnx_path.name} "
            "(see the TensorRT log above; try a smaller --tile or a larger --workspace-gb)"
        )
    if spec.timing_cache is not None and timing is not None:
        _save_timing_cache(config, spec.timing_cache, warn)
    return bytes(plan)


def _save_timing_cache(config: Any, path: Path, warn: Warn) -> None:
    cache = config.get_timing_cache()
    data = cache.serialize() if cache is not None else None
    if data is None:
        warn(f"TensorRT returned no timing cache to save to {path}")
        return
    try:
        write_bytes_atomic(path, bytes(data))
    except OSError as exc:
        warn(f"could not save the timing cache {path}: {exc}")


def _parser_error_text(error: Any) -> str:
    """An IParserError as text: its node and description (``desc()``), else ``str()``."""
    desc = getattr(error, "desc", None)
    if not callable(desc):
        return str(error)
    node = getattr(error, "node_name", None)
    where = f"node {node()}: " if callable(node) and node() else ""
    return f"{where}{desc()}"


def _check_profile_inputs(network: Any, profiles: Sequence[ProfileShapes]) -> None:
    names = {network.get_input(i).name for i in range(network.num_inputs)}
    wanted = {p.name for p in profiles}
    if names != wanted:
        raise IRNError(f"network inputs {sorted(names)} differ from the profile's {sorted(wanted)}")
