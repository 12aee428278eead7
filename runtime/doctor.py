"""``irn-doctor``: what this machine can run, and why not, in one report.

The report covers versions (Python, NumPy, ONNX Runtime and its providers, OpenVINO and
its devices, TensorRT, cuda-python, the NVIDIA driver, Triton), the GPUs and their compute
capability, which backend ``auto`` picks and why every other one is passed over (the
registry's own probes, ``runtime.backends.candidates``), the engine caches (location,
size, trust state) and the model directories of the search path. It also checks that the
installed GPU packages form one consistent set (see ``install_problems``).

Collecting never raises: a library that is missing or broken is reported as such, in one
line. Libraries that print while loading cannot reach stdout either (file descriptor 1
points at stderr while the report is collected), so ``--json`` output is JSON only.
``--gpu-check`` runs the GPU acceptance check of ``runtime/gpu_check.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata as metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from packaging.version import InvalidVersion, Version

from .atomic import json_text
from .errors import IRNError, cli_entry

__all__ = [
    "REPORT_FORMAT",
    "GPU_EXTRAS",
    "MIN_DRIVER",
    "collect",
    "cuda_major_of",
    "install_problems",
    "parse_driver_version",
    "format_report",
    "build_parser",
    "main",
]

PROG = "irn-doctor"
REPORT_FORMAT = "irn-doctor/1"

#: The extras that install one consistent GPU set (pyproject.toml), by CUDA major.
GPU_EXTRAS = {12: "gpu-cu12", 13: "gpu-cu13"}

#: Oldest Linux driver per CUDA major: TensorRT's documented minimum for its CUDA 12 pip
#: wheels (r535; cuda-python's own is 525.60.13) and cuda-python's for CUDA 13 (580.65).
MIN_DRIVER = {12: (535, 0), 13: (580, 65)}

#: Triton 3.9 emits PTX ISA 8.8, which a driver older than CUDA 12.9's (R575) cannot load.
TRITON_PTX_DRIVER = (575, 0)

# Distributions whose versions the report lists (name as on PyPI -> import name).
_LIBRARIES: dict[str, str] = {
    "numpy": "numpy",
    "pillow": "PIL",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "tensorrt": "tensorrt",
    "cuda-python": "cuda.bindings",
    "triton": "triton",
    "torch": "torch",
    "onnx": "onnx",
}
# Imported to check that they load; torch and onnx only by metadata (slow, train-only).
_IMPORT_CHECKED = ("numpy", "pillow", "onnxruntime", "openvino", "tensorrt", "cuda-python")
# The distributions that install the ``tensorrt`` module (the metapackage first).
_TRT_DISTS = (
    "tensorrt",
    "tensorrt-cu13",
    "tensorrt-cu12",
    "tensorrt-cu13-bindings",
    "tensorrt-cu12-bindings",
)
# Which distributions can provide each library's module (the first installed one is shown).
_PROVIDERS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime"),
    "tensorrt": _TRT_DISTS,
    "cuda-python": ("cuda-python", "cuda-bindings"),
}
# The distributions the install check looks at (CUDA-specific ones, both ONNX Runtime builds).
_CUDA_DISTS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
    "tensorrt-cu12",
    "tensorrt-cu13",
    "tensorrt-cu12-libs",
    "tensorrt-cu13-libs",
    "tensorrt-cu12-bindings",
    "tensorrt-cu13-bindings",
    "cuda-python",
    "cuda-bindings",
    "triton",
)

T = TypeVar("T")


# --- small helpers ---------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _guard(fn: Callable[[], T], default: T) -> tuple[T, str | None]:
    """``fn()``, or ``default`` and the one-line error: a broken library never aborts."""
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001 - the report names whatever went wrong
        return default, _one_line(exc)


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - broken metadata: treat as absent
        return None


def _installed(names: Sequence[str]) -> dict[str, str]:
    """The installed distributions among ``names``: name -> version."""
    found = {}
    for name in names:
        v = _dist_version(name)
        if v is not None:
            found[name] = v
    return found


def _parse_version(text: str | None) -> Version | None:
    if not text:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        m = re.match(r"\d+(\.\d+)*", text)
        return Version(m.group(0)) if m else None


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Point fd 1 (and ``sys.stdout``) at stderr: library chatter must not corrupt the report."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 (embedded interpreters): Python-level redirect only
        saved = None
    if saved is not None:
        os.dup2(2, 1)
    old = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = old
        if saved is not None:
            with contextlib.suppress(OSError):
                sys.stderr.flush()
            os.dup2(saved, 1)
            os.close(saved)


# --- pure checks (tested with real metadata texts) -------------------------------------------
def parse_driver_version(text: str) -> str | None:
    """The driver version in ``/proc/driver/nvidia/version`` or ``nvidia-smi`` output."""
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    if m:
        return m.group(1)
    m = re.search(r"^\s*(\d{3,}\.\d+(?:\.\d+)?)\s*$", text, re.MULTILINE)
    return m.group(1) if m else None


def _driver_tuple(version: str | None) -> tuple[int, int] | None:
    if not version:
        return None
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return None


def cuda_major_of(name: str, version: str, requires: Sequence[str] = ()) -> int | None:
    """The CUDA major a distribution is built for (None: not CUDA-specific or unknown).

    ``tensorrt-cuNN*`` carry it in their names, ``cuda-python`` / ``cuda-bindings`` in
    their major version. ``onnxruntime-gpu`` names it in its ``cuda`` extra
    (``nvidia-cuda-runtime-cu12~=12.0`` up to 1.26, ``nvidia-cuda-runtime~=13.0`` /
    ``-cu13`` from 1.27, as PyPI's wheels declare); without that extra, by version:
    PyPI's builds are CUDA 12 from 1.19 (ONNX Runtime's docs) and CUDA 13 from 1.27.
    """
    key = name.lower().replace("_", "-")
    m = re.match(r"tensorrt-cu(\d+)", key)
    if m:
        return int(m.group(1))
    v = _parse_version(version)
    if key in ("cuda-python", "cuda-bindings"):
        return v.major if v is not None else None
    if key == "onnxruntime-gpu":
        for req in requires:
            r = req.replace(" ", "").lower()
            if not r.startswith("nvidia-cuda-runtime"):
                continue
            m = re.match(r"nvidia-cuda-runtime-cu(\d+)", r)
            if m:
                return int(m.group(1))
            m = re.search(r"[~=<>]=?(\d+)", r)
            if m:
                return int(m.group(1))
        if v is None:
            return None
        if v >= Version("1.27"):
            return 13
        return 12 if v >= Version("1.19") else 11
    return None


def install_problems(
    dists: Mapping[str, str],
    majors: Mapping[str, int],
    ort_loaded: tuple[str, str] | None = None,
    ort_providers: Sequence[str] = (),
    driver_version: str | None = None,
) -> list[str]:
    """One line per way the installed packages fight each other or the driver.

    ``dists``: installed distribution -> version; ``majors``: distribution -> CUDA
    major (:func:`cuda_major_of`); ``ort_loaded``: the ``onnxruntime`` module's own
    ``(package_name, cuda_version)``, which names the build that was really imported.
    """
    problems: list[str] = []
    fix = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'irn-trt[gpu-cu12]'"
    if "onnxruntime" in dists and "onnxruntime-gpu" in dists:
        loaded = f" (the files now loaded are {ort_loaded[0]}'s)" if ort_loaded else ""
        problems.append(
            "onnxruntime and onnxruntime-gpu are both installed and share the onnxruntime "
            f"module{loaded}; keep one: {fix} (or gpu-cu13), or 'irn-trt[cpu]' without a GPU"
        )
    elif "onnxruntime-gpu" in dists and ort_loaded and ort_loaded[0] == "onnxruntime":
        problems.append(
            f"onnxruntime-gpu is installed but the loaded onnxruntime module is the CPU build "
            f"(files of a removed onnxruntime remain); reinstall: {fix}"
        )
    if (
        "onnxruntime-gpu" in dists
        and ort_providers
        and ("CUDAExecutionProvider" not in ort_providers)
    ):
        problems.append(
            f"onnxruntime-gpu is installed but onnxruntime lists no CUDAExecutionProvider "
            f"(providers: {', '.join(ort_providers)}); reinstall: {fix}"
        )
    trt_flavours = [d for d in ("tensorrt-cu12", "tensorrt-cu13") if d in dists]
    if len(trt_flavours) > 1:
        problems.append(
            "tensorrt-cu12 and tensorrt-cu13 are both installed and share the tensorrt module; "
            "uninstall both and install one set: pip install 'irn-trt[gpu-cu12]' or "
            "'irn-trt[gpu-cu13]'"
        )
    by_major: dict[int, list[str]] = {}
    for name, major in sorted(majors.items()):
        by_major.setdefault(major, []).append(f"{name} {dists.get(name, '?')}")
    if len(by_major) > 1:
        parts = "; ".join(f"CUDA {m}: {', '.join(n)}" for m, n in sorted(by_major.items()))
        problems.append(
            f"GPU packages are built for different CUDA majors ({parts}); install one set: "
            "pip install 'irn-trt[gpu-cu12]' (driver >= 535) or 'irn-trt[gpu-cu13]' "
            "(driver >= 580.65)"
        )
    driver = _driver_tuple(driver_version)
    if driver is not None:
        for major in sorted(by_major):
            need = MIN_DRIVER.get(major)
            if need is not None and driver < need:
                other = GPU_EXTRAS.get(12) if major > 12 else None
                hint = f"; use 'irn-trt[{other}]' instead" if other else ""
                problems.append(
                    f"driver {driver_version} is too old for the CUDA {major} packages "
                    f"({', '.join(by_major[major])}): they need {need[0]}.{need[1]:02d} or "
                    f"newer{hint}"
                )
        triton = _parse_version(dists.get("triton"))
        if triton is not None and triton >= Version("3.9") and driver < TRITON_PTX_DRIVER:
            problems.append(
                f"triton {dists['triton']} emits PTX that driver {driver_version} cannot load "
                "(needs R575, CUDA 12.9, or newer): TensorRT plugin engines will not build"
            )
    trt_version = next((dists[d] for d in _TRT_DISTS if d in dists), None)
    trt_v = _parse_version(trt_version)
    if trt_v is not None and trt_v.major >= 11 and "onnxruntime-gpu" in dists:
        problems.append(
            f"TensorRT {trt_version} with onnxruntime-gpu: ONNX Runtime's TensorRT provider "
            "links TensorRT 10 (libnvinfer.so.10), so ort-trt cannot run; the trt backend can"
        )
    return problems


# --- collectors ------------------------------------------------------------------------------
def _irn_trt_info() -> dict[str, Any]:
    return {
        "version": _dist_version("irn-trt"),
        "location": str(Path(__file__).resolve().parents[1]),
    }


def _python_info() -> dict[str, Any]:
    return {
        "version": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
    }


def _module_present(module: str) -> bool:
    """Whether ``module`` can be found (without importing it; its parents may be imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False
    except Exception:  # noqa: BLE001 - a parent that fails to import: the module is there
        return True


def _libraries() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, module in _LIBRARIES.items():
        dists = _installed(_PROVIDERS.get(name, (name,)))
        dist = next(iter(dists), None)
        entry: dict[str, Any] = {
            "installed": bool(dists),
            "distribution": dist,
            "version": dists.get(dist) if dist else None,
            "error": None,
        }
        if name in _IMPORT_CHECKED:
            mod, err = _guard(lambda module=module: importlib.import_module(module), None)
            if mod is not None:
                entry["installed"] = True
                entry["version"] = entry["version"] or getattr(mod, "__version__", None)
            elif dists or _module_present(module):  # there, but does not import: broken
                entry["installed"] = True
                entry["error"] = err
        out[name] = entry
    return out


def _onnxruntime_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "version": None,
        "package": None,
        "cuda_version": None,
        "distributions": sorted(_installed(("onnxruntime", "onnxruntime-gpu"))),
        "providers": [],
        "device": None,
        "error": None,
    }

    def read() -> None:
        import onnxruntime as ort

        info["version"] = getattr(ort, "__version__", None)
        # Module attributes of the build that was imported (ORT's own validation data).
        info["package"] = getattr(ort, "package_name", None) or None
        info["cuda_version"] = getattr(ort, "cuda_version", None) or None
        info["providers"] = list(ort.get_available_providers())
        info["device"] = ort.get_device()

    _, info["error"] = _guard(read, None)
    if info["error"] and info["error"].startswith("ModuleNotFoundError"):
        info["error"] = "not installed (pip install 'irn-trt[cpu]', or a gpu-cu12/gpu-cu13 set)"
    return info


def _cpu_info() -> dict[str, Any]:
    from .backends.ov_cpu import cpu_flags

    model, flags = None, cpu_flags()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
                break
    features = {
        f: f in flags
        for f in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
    }
    return {
        "model": model or platform.processor() or None,
        "logical_cores": os.cpu_count(),
        "features": features,
    }


def _openvino_info(cpu_features: Mapping[str, bool]) -> dict[str, Any]:
    info: dict[str, Any] = {"version": None, "devices": [], "error": None}

    def read() -> None:
        import openvino as ov

        info["version"] = getattr(ov, "__version__", None) or ov.get_version()
        core = ov.Core()
        for name in core.available_devices:
            dev: dict[str, Any] = {"name": name, "full_name": None, "capabilities": []}
            dev["full_name"], _ = _guard(
                lambda n=name: str(core.get_property(n, "FULL_DEVICE_NAME")), None
            )
            caps, _ = _guard(
                lambda n=name: list(core.get_property(n, "OPTIMIZATION_CAPABILITIES")), []
            )
            dev["capabilities"] = [str(c) for c in caps]
            dev["bf16"] = "BF16" in dev["capabilities"]
            # OpenVINO has no AMX property: the CPU flags tell (AMX-BF16 = its fastest BF16).
            dev["amx"] = bool(name == "CPU" and cpu_features.get("amx_bf16"))
            info["devices"].append(dev)

    _, info["error"] = _guard(read, None)
    if info["error"] and info["error"].startswith("ModuleNotFoundError"):
        info["error"] = "not installed (pip install 'irn-trt[openvino]')"
    return info


def _import_cudart() -> Any | None:
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except Exception:  # noqa: BLE001 - missing or broken: try the next layout
            continue
    return None


def _driver_from_proc() -> str | None:
    try:
        return parse_driver_version(Path("/proc/driver/nvidia/version").read_text())
    except OSError:
        return None


def _nvidia_smi_gpus() -> tuple[list[dict[str, Any]], str | None]:
    """GPUs and driver as nvidia-smi reports them (no CUDA context, no Python bindings)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return [], None
    fields = "index,name,compute_cap,memory.total,driver_version"
    try:
        res = subprocess.run(
            [exe, f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return [], None
    if res.returncode != 0:
        return [], None
    gpus, driver = [], None
    for line in res.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue
        mem = int(float(parts[3]) * (1 << 20)) if re.match(r"^[\d.]+$", parts[3]) else None
        gpus.append(
            {
                "index": int(parts[0]) if parts[0].isdigit() else len(gpus),
                "name": parts[1],
                "compute_capability": parts[2],
                "memory_bytes": mem,
                "source": "nvidia-smi",
            }
        )
        driver = driver or parts[4]
    return gpus, driver


def _cuda_info() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The driver, what cuda-python sees, and the GPUs (cuda-python first, else nvidia-smi)."""
    info: dict[str, Any] = {
        "driver_version": _driver_from_proc(),
        "driver_cuda_version": None,
        "cuda_python": _dist_version("cuda-python") or _dist_version("cuda-bindings"),
        "device_count": None,
        "error": None,
    }
    gpus: list[dict[str, Any]] = []
    cudart = _import_cudart()
    if cudart is None:
        info["error"] = "cuda-python is not installed (pip install 'irn-trt[gpu-cu12]')"
    else:

        def read() -> None:
            err, version = cudart.cudaDriverGetVersion()
            if int(err) == 0 and version:
                info["driver_cuda_version"] = f"{version // 1000}.{(version % 1000) // 10}"
            err, count = cudart.cudaGetDeviceCount()
            if int(err) != 0:
                _, name = cudart.cudaGetErrorName(err)
                name = name.decode() if isinstance(name, bytes) else str(name)
                info["error"] = f"no usable CUDA driver/device ({name})"
                return
            info["device_count"] = int(count)
            for i in range(int(count)):
                err, prop = cudart.cudaGetDeviceProperties(i)
                if int(err) != 0:
                    continue
                name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
                gpus.append(
                    {
                        "index": i,
                        "name": name.rstrip("\x00"),
                        "compute_capability": f"{prop.major}.{prop.minor}",
                        "memory_bytes": int(prop.totalGlobalMem),
                        "source": "cuda-python",
                    }
                )

        _, err = _guard(read, None)
        info["error"] = info["error"] or err
    smi_gpus, smi_driver = _nvidia_smi_gpus()
    info["driver_version"] = info["driver_version"] or smi_driver
    if not gpus:
        gpus = smi_gpus
    return info, gpus


def _plugins_info() -> dict[str, Any]:
    """Whether TensorRT's Python plugin API (AOT, >= 10.9) is usable for irn::* plugins."""

    def read() -> str | None:
        from irn_trt.plugins.trt_plugins import tensorrt_plugin_api_reason

        return tensorrt_plugin_api_reason()

    reason, err = _guard(read, None)
    reason = reason or err
    return {"available": reason is None, "reason": reason}


def _model_dirs() -> dict[str, Any]:
    from .manifest import MANIFEST_FILE, load_manifest
    from .model_store import model_search_path

    roots = model_search_path()
    found = []
    for root in roots:
        if not root.is_dir():
            continue
        for sub in sorted(p for p in root.iterdir() if (p / MANIFEST_FILE).is_file()):
            entry: dict[str, Any] = {
                "name": sub.name,
                "path": str(sub),
                "model": None,
                "scale": None,
                "precisions": [],
                "plugin_graphs": [],
                "error": None,
            }
            try:
                m = load_manifest(sub)
            except Exception as exc:  # noqa: BLE001 - a damaged manifest is a finding
                entry["error"] = _one_line(exc)
            else:
                entry["model"] = m.model
                entry["scale"] = m.scale
                entry["precisions"] = sorted(set(m.precisions("down")) & set(m.precisions("up")))
                entry["plugin_graphs"] = sorted(g.file for g in m.graphs if g.plugins)
            found.append(entry)
    return {
        "search_path": [{"path": str(r), "exists": r.is_dir()} for r in roots],
        "found": found,
    }


def _dir_usage(root: Path) -> tuple[int, int]:
    """(bytes, files) under ``root`` (symlinks not followed)."""
    total = files = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            with contextlib.suppress(OSError):
                total += (Path(dirpath) / n).lstat().st_size
                files += 1
    return total, files


def _cache_info(root: Path, engines: bool) -> dict[str, Any]:
    from .engine_cache import EngineCache

    info: dict[str, Any] = {
        "path": str(root),
        "exists": root.is_dir(),
        "bytes": 0,
        "files": 0,
        "entries": None,
        "trusted": None,
        "problems": [],
    }
    if not info["exists"]:
        return info
    info["bytes"], info["files"] = _dir_usage(root)
    if engines:
        info["entries"] = sum(1 for p in root.glob("*/entry.json") if p.is_file())
        problems, err = _guard(lambda: list(EngineCache(root).trust_problems()), [])
        info["problems"] = problems if err is None else [err]
        info["trusted"] = not info["problems"]
    return info


def _caches(cache_dir: Path | None) -> dict[str, Any]:
    from .engine_cache import default_cache_dir, user_cache_dir

    engines = cache_dir or default_cache_dir()
    return {
        "engines": _cache_info(engines, engines=True),
        "ort_trt": _cache_info(engines / "ort-trt", engines=True),
        "openvino": _cache_info(user_cache_dir("openvino"), engines=False),
    }


def _backends(model_dir: Path | None, model: str | None) -> dict[str, Any]:
    """Every backend's probe in ``auto`` order, and what ``auto`` picks for a model."""
    from .api import select_backend
    from .backends import AUTO_ORDER, candidates, get_spec
    from .manifest import load_manifest
    from .model_store import DEFAULT_MODEL, find_model_dir

    cands = candidates(AUTO_ORDER)
    rows = [
        {
            "name": c.name,
            "gpu": get_spec(c.name).gpu,
            "available": c.cls is not None,
            "reason": c.reason,
        }
        for c in cands
    ]
    auto: dict[str, Any] = {
        "backend": None,
        "precision": None,
        "model": None,
        "reason": None,
        "model_error": None,
    }
    first = next((c for c in cands if c.cls is not None), None)
    try:
        path = model_dir if model_dir is not None else find_model_dir(model or DEFAULT_MODEL)
        manifest = load_manifest(path)
    except IRNError as exc:
        auto["backend"] = first.name if first else None
        auto["reason"] = (
            "first available in auto order (no model found: the precision depends on it)"
            if first
            else "no backend can run here"
        )
        auto["model_error"] = str(exc)
        return {"auto": auto, "candidates": rows}
    auto["model"] = str(path)
    try:
        sel, _ = select_backend("auto", "auto", manifest)
    except IRNError as exc:
        auto["reason"] = str(exc)
    else:
        auto.update(backend=sel.backend, precision=sel.precision, reason=sel.reason)
    return {"auto": auto, "candidates": rows}


def collect(
    model_dir: str | os.PathLike[str] | None = None,
    model: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The whole report as plain JSON-able values (never raises for a broken library)."""
    report: dict[str, Any] = {"format": REPORT_FORMAT}
    report["irn_trt"] = _irn_trt_info()
    report["python"] = _python_info()
    report["libraries"], err = _guard(_libraries, {})
    report["onnxruntime"] = _onnxruntime_info()
    report["cpu"] = _cpu_info()
    report["openvino"] = _openvino_info(report["cpu"]["features"])
    (report["cuda"], report["gpus"]), cuda_err = _guard(_cuda_info, ({"error": "unavailable"}, []))
    report["tensorrt_plugins"] = _plugins_info()
    md = Path(model_dir) if model_dir is not None else None
    report["backends"], be_err = _guard(
        lambda: _backends(md, model),
        {
            "auto": {
                "backend": None,
                "precision": None,
                "model": None,
                "reason": None,
                "model_error": None,
            },
            "candidates": [],
        },
    )
    report["caches"], cache_err = _guard(
        lambda: _caches(Path(cache_dir) if cache_dir is not None else None), {}
    )
    report["models"], models_err = _guard(_model_dirs, {"search_path": [], "found": []})
    dists = _installed(_CUDA_DISTS)
    majors: dict[str, int] = {}
    for name, version in dists.items():
        requires = _guard(lambda n=name: list(metadata.requires(n) or []), [])[0]
        major = cuda_major_of(name, version, requires)
        ort = report["onnxruntime"]
        built = re.match(r"(\d+)\.", ort.get("cuda_version") or "")
        if name == "onnxruntime-gpu" and ort.get("package") == name and built:
            major = int(built.group(1))  # the imported build says what it links
        if major is not None:
            majors[name] = major
    ort = report["onnxruntime"]
    loaded = (ort["package"], ort["cuda_version"] or "") if ort.get("package") else None
    problems = install_problems(
        dists, majors, loaded, ort.get("providers") or (), report["cuda"].get("driver_version")
    )
    sets = sorted(set(majors.values()))
    report["install"] = {
        "distributions": dists,
        "cuda_majors": majors,
        "gpu_set": GPU_EXTRAS.get(sets[0]) if len(sets) == 1 else ("mixed" if sets else None),
        "problems": problems,
    }
    summary = list(problems)
    for label, e in (
        ("libraries", err),
        ("cuda", cuda_err),
        ("backends", be_err),
        ("caches", cache_err),
        ("models", models_err),
    ):
        if e:
            summary.append(f"could not inspect {label}: {e}")
    for name, lib in report["libraries"].items():
        if lib.get("error"):
            summary.append(f"{name} is installed but does not load: {lib['error']}")
    if not any(c["available"] for c in report["backends"]["candidates"]):
        summary.append("no backend can run here: pip install 'irn-trt[cpu]' (or a GPU set)")
    for key in ("engines", "ort_trt"):
        for p in report["caches"].get(key, {}).get("problems", []):
            summary.append(p)
    for m in report["models"]["found"]:
        if m["error"]:
            summary.append(f"model directory {m['path']}: {m['error']}")
    report["problems"] = summary
    return report


# --- text output -----------------------------------------------------------------------------
def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def format_report(report: Mapping[str, Any]) -> str:
    """The human-readable report (``irn-doctor`` without ``--json``)."""
    lines: list[str] = []
    add = lines.append
    irn, py = report["irn_trt"], report["python"]
    add(f"irn-trt {irn['version'] or '(not installed)'} at {irn['location']}")
    add(f"Python {py['version']} ({py['executable']}) on {py['platform']}")
    add("")
    add("Libraries")
    for name, lib in report["libraries"].items():
        if lib.get("error"):
            state = f"{lib.get('version') or '?'} BROKEN: {lib['error']}"
        elif lib.get("installed"):
            state = lib.get("version") or "?"
            if lib.get("distribution") and lib["distribution"] != name:
                state += f" ({lib['distribution']})"
        else:
            state = "not installed"
        add(f"  {name:<12} {state}")
    ort = report["onnxruntime"]
    if ort.get("version"):
        build = ort.get("package") or "?"
        if ort.get("cuda_version"):
            build += f", CUDA {ort['cuda_version']}"
        add(f"  onnxruntime build {build}; providers: {', '.join(ort['providers']) or 'none'}")
    ov = report["openvino"]
    for dev in ov.get("devices", []):
        caps = ", ".join(dev["capabilities"]) or "?"
        extra = f"; BF16 {'yes' if dev.get('bf16') else 'no'}"
        if dev["name"] == "CPU":
            extra += f", AMX {'yes' if dev.get('amx') else 'no'}"
        add(f"  openvino device {dev['name']} ({dev.get('full_name') or '?'}): {caps}{extra}")
    plugins = report["tensorrt_plugins"]
    add(
        "  tensorrt.plugin: "
        + ("usable (AOT plugins)" if plugins["available"] else f"no: {plugins['reason']}")
    )
    add("")
    cpu = report["cpu"]
    feats = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu["features"].items())
    add(f"CPU: {cpu['model'] or '?'}, {cpu['logical_cores']} logical cores; {feats}")
    cuda = report["cuda"]
    add(
        f"NVIDIA driver: {cuda.get('driver_version') or 'not found'}"
        + (f" (CUDA {cuda['driver_cuda_version']})" if cuda.get("driver_cuda_version") else "")
        + f"; cuda-python {cuda.get('cuda_python') or 'not installed'}"
    )
    if report["gpus"]:
        for g in report["gpus"]:
            mem = f", {_size(g['memory_bytes'])}" if g.get("memory_bytes") else ""
            add(
                f"GPU {g['index']}: {g['name']} (compute capability {g['compute_capability']}{mem})"
            )
    else:
        add(f"GPUs: none found; {cuda.get('error') or 'no NVIDIA driver'}")
    add("")
    be = report["backends"]
    auto = be["auto"]
    add("Backends (auto tries them in this order)")
    for c in be["candidates"]:
        mark = "<- auto" if c["name"] == auto.get("backend") else ""
        state = "yes" if c["available"] else f"no: {c['reason']}"
        add(f"  {c['name']:<9} {state} {mark}".rstrip())
    if auto.get("backend"):
        prec = f" ({auto['precision']})" if auto.get("precision") else ""
        model = f" for {auto['model']}" if auto.get("model") else ""
        add(f"  auto picks {auto['backend']}{prec}{model}: {auto.get('reason')}")
    else:
        add(f"  auto picks nothing: {auto.get('reason')}")
    add("")
    add("Caches")
    for key, c in report["caches"].items():
        if not c["exists"]:
            add(f"  {key:<9} {c['path']}: not created yet")
            continue
        text = f"  {key:<9} {c['path']}: {_size(c['bytes'])} in {c['files']} files"
        if c.get("entries") is not None:
            text += f", {c['entries']} engines"
        if c.get("trusted") is not None:
            text += ", trusted" if c["trusted"] else ", NOT trusted"
        add(text)
    add("")
    add("Models (search path, first match wins)")
    for r in report["models"]["search_path"]:
        add(f"  {r['path']}{'' if r['exists'] else ' (missing)'}")
    for m in report["models"]["found"]:
        if m["error"]:
            add(f"  found {m['name']} at {m['path']}: {m['error']}")
        else:
            extra = (
                f"; plugin graphs: {', '.join(m['plugin_graphs'])}" if m["plugin_graphs"] else ""
            )
            add(
                f"  found {m['name']} at {m['path']}: x{m['scale']}, "
                f"{'+'.join(m['precisions'])}{extra}"
            )
    if not report["models"]["found"]:
        add("  no exported model found (irn-export --scale 4)")
    add("")
    inst = report["install"]
    add(f"GPU install set: {inst['gpu_set'] or 'none'}")
    if report["problems"]:
        add("Problems")
        for p in report["problems"]:
            add(f"  - {p}")
    else:
        add("No problems found.")
    return "\n".join(lines)


# --- CLI ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Report what this machine can run: library versions, GPUs, which backend "
        "auto picks and why the others cannot run, the engine caches and the exported models. "
        "With --gpu-check, run the GPU acceptance check (needs an NVIDIA GPU and a gpu-cu12 / "
        "gpu-cu13 install).",
        epilog="example: irn-doctor\n"
        "         irn-doctor --json > doctor.json      # attach to a bug report\n"
        "         irn-doctor --gpu-check --out gpu-check.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON (stdout: only it)")
    p.add_argument("--model-dir", type=Path, help="model directory for the auto choice")
    p.add_argument("--model", help="model name in the search path (default irn_x4)")
    p.add_argument("--cache-dir", type=Path, help="engine cache to inspect (default: the user's)")
    g = p.add_argument_group("GPU check (--gpu-check)")
    g.add_argument(
        "--gpu-check",
        action="store_true",
        help="build FP16/FP32 engines, compare them with ONNX Runtime CPU on Set5 crops, time "
        "1080p and 4K, build the plugin variants; writes one JSON report",
    )
    g.add_argument(
        "--out",
        default="irn-gpu-check.json",
        help="report file (default irn-gpu-check.json; '-' for stdout)",
    )
    g.add_argument(
        "--configs",
        default="trt:fp16,trt:fp32",
        help="backend:precision list to check (default trt:fp16,trt:fp32)",
    )
    g.add_argument(
        "--sizes",
        default="1920x1080,3840x2160",
        help="WxH frames to time (default 1920x1080,3840x2160)",
    )
    g.add_argument("--images", type=Path, help="folder of test images (default: Set5 of ../shared)")
    g.add_argument(
        "--crop", type=int, default=256, help="edge of the test crops in HR px (default 256)"
    )
    g.add_argument("--repeats", type=int, default=3, help="timed runs per size (median; default 3)")
    g.add_argument("--no-plugins", action="store_true", help="skip building the plugin variants")
    g.add_argument(
        "--time-limit",
        type=float,
        default=450.0,
        help="seconds after which remaining steps are skipped (default 450)",
    )
    return p


@cli_entry(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.gpu_check:
        from .gpu_check import run_from_args

        return run_from_args(args)
    with _stdout_to_stderr():
        report = collect(args.model_dir, args.model, args.cache_dir)
    if args.json:
        sys.stdout.write(json_text(report))
    else:
        print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
