"""irn-doctor on this machine (no GPU): the exact shape of its report, plain and --json,
and no traceback when a library is missing or broken; irn-doctor --gpu-check: a one-line
refusal without a GPU, and its whole pipeline run with CPU backends.

Stand-ins appear only where a library cannot load here: a fake ``cuda.bindings.runtime``
(cuda-python does not install here) and deliberately broken copies of libraries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from irn_trt.runtime.backends import AUTO_ORDER
from irn_trt.runtime.doctor import collect, format_report, parse_driver_version
from irn_trt.runtime.engine_cache import EngineCache, EngineKey
from trt_toy_models import make_toy_model_dir

REPO = Path(__file__).resolve().parents[1]

# The report's keys and the types of their values (None allowed where listed).
OPT = type(None)
SCHEMA: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "irn_trt": dict,
    "python": dict,
    "libraries": dict,
    "onnxruntime": dict,
    "cpu": dict,
    "openvino": dict,
    "cuda": dict,
    "gpus": list,
    "tensorrt_plugins": dict,
    "backends": dict,
    "caches": dict,
    "models": dict,
    "install": dict,
    "problems": list,
}
SECTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "irn_trt": {"version": (str, OPT), "location": str},
    "python": {"version": str, "executable": str, "platform": str},
    "onnxruntime": {
        "version": (str, OPT),
        "package": (str, OPT),
        "cuda_version": (str, OPT),
        "distributions": list,
        "providers": list,
        "device": (str, OPT),
        "error": (str, OPT),
    },
    "cpu": {"model": (str, OPT), "logical_cores": (int, OPT), "features": dict},
    "openvino": {"version": (str, OPT), "devices": list, "error": (str, OPT)},
    "cuda": {
        "driver_version": (str, OPT),
        "driver_cuda_version": (str, OPT),
        "cuda_python": (str, OPT),
        "device_count": (int, OPT),
        "error": (str, OPT),
    },
    "tensorrt_plugins": {"available": bool, "reason": (str, OPT)},
    "backends": {"auto": dict, "candidates": list},
    "caches": {"engines": dict, "ort_trt": dict, "openvino": dict},
    "models": {"search_path": list, "found": list},
    "install": {
        "distributions": dict,
        "cuda_majors": dict,
        "gpu_set": (str, OPT),
        "problems": list,
    },
}
LIBRARY = {
    "installed": bool,
    "distribution": (str, OPT),
    "version": (str, OPT),
    "error": (str, OPT),
}
CANDIDATE = {"name": str, "gpu": bool, "available": bool, "reason": (str, OPT)}
AUTO = {
    "backend": (str, OPT),
    "precision": (str, OPT),
    "model": (str, OPT),
    "reason": (str, OPT),
    "model_error": (str, OPT),
}
CACHE = {
    "path": str,
    "exists": bool,
    "bytes": int,
    "files": int,
    "entries": (int, OPT),
    "trusted": (bool, OPT),
    "problems": list,
}
MODEL = {
    "name": str,
    "path": str,
    "model": (str, OPT),
    "scale": (int, OPT),
    "precisions": list,
    "plugin_graphs": list,
    "error": (str, OPT),
}
OV_DEVICE = {
    "name": str,
    "full_name": (str, OPT),
    "capabilities": list,
    "bf16": bool,
    "amx": bool,
}
GPU = {
    "index": int,
    "name": str,
    "compute_capability": str,
    "memory_bytes": (int, OPT),
    "source": str,
}


def check_shape(obj: dict, schema: dict, where: str) -> None:
    assert set(obj) == set(schema), f"{where}: keys {sorted(obj)} != {sorted(schema)}"
    for key, kind in schema.items():
        assert isinstance(obj[key], kind), f"{where}.{key}: {obj[key]!r} is not {kind}"


def check_report(report: dict) -> None:
    check_shape(report, SCHEMA, "report")
    assert report["format"] == "irn-doctor/1"
    for section, schema in SECTIONS.items():
        check_shape(report[section], schema, section)
    assert list(report["libraries"]) == [
        "numpy", "pillow", "onnxruntime", "openvino", "tensorrt", "cuda-python", "triton",
        "torch", "onnx",
    ]  # fmt: skip
    for name, lib in report["libraries"].items():
        check_shape(lib, LIBRARY, f"libraries.{name}")
    assert all(isinstance(v, bool) for v in report["cpu"]["features"].values())
    assert {"avx2", "avx512_bf16", "amx_bf16"} <= set(report["cpu"]["features"])
    for dev in report["openvino"]["devices"]:
        check_shape(dev, OV_DEVICE, "openvino.devices[]")
    for gpu in report["gpus"]:
        check_shape(gpu, GPU, "gpus[]")
    check_shape(report["backends"]["auto"], AUTO, "backends.auto")
    for cand in report["backends"]["candidates"]:
        check_shape(cand, CANDIDATE, "backends.candidates[]")
        assert (cand["reason"] is None) == cand["available"]
    for name, cache in report["caches"].items():
        check_shape(cache, CACHE, f"caches.{name}")
    for root in report["models"]["search_path"]:
        check_shape(root, {"path": str, "exists": bool}, "models.search_path[]")
    for m in report["models"]["found"]:
        check_shape(m, MODEL, "models.found[]")
    assert all(isinstance(p, str) and "\n" not in p for p in report["problems"])


def run_doctor(args: list[str], env_extra: dict[str, str], pythonpath: list[Path] = ()):
    env = dict(os.environ, **env_extra)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "irn_trt.runtime.doctor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model search-path folder holding a real (toy) irn_x4 directory and a damaged one."""
    root = tmp_path_factory.mktemp("models")
    make_toy_model_dir(root / "irn_x4", model="irn_x4")
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text("{not json")
    return root


@pytest.fixture
def env(models_root: Path, tmp_path: Path) -> dict[str, str]:
    return {"IRN_TRT_MODELS": str(models_root), "XDG_CACHE_HOME": str(tmp_path / "cache")}


def test_json_report_shape_on_this_machine(env: dict[str, str], models_root: Path) -> None:
    res = run_doctor(["--json"], env)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    report = json.loads(res.stdout)  # the whole of stdout is the JSON document
    check_report(report)
    # What this machine is: no GPU stack, ONNX Runtime's CPU build, OpenVINO on the CPU.
    libs = report["libraries"]
    assert libs["tensorrt"]["installed"] is False and libs["cuda-python"]["installed"] is False
    assert libs["onnxruntime"]["installed"] and libs["numpy"]["version"]
    assert report["onnxruntime"]["package"] == "onnxruntime"
    assert "CPUExecutionProvider" in report["onnxruntime"]["providers"]
    assert report["gpus"] == [] and report["cuda"]["error"].startswith("cuda-python")
    cands = report["backends"]["candidates"]
    assert [c["name"] for c in cands] == list(AUTO_ORDER)
    trt = cands[0]
    assert trt["gpu"] and not trt["available"] and "tensorrt" in trt["reason"]
    assert {c["name"] for c in cands if c["available"]} >= {"ort-cpu"}
    auto = report["backends"]["auto"]
    first = next(c["name"] for c in cands if c["available"])
    assert auto["backend"] == first
    assert auto["model"] == str(models_root / "irn_x4")
    assert auto["precision"] in ("fp32", "bf16")  # the toy model has fp32 and fp16 graphs
    found = {m["name"]: m for m in report["models"]["found"]}
    assert found["irn_x4"]["scale"] == 4 and found["irn_x4"]["precisions"] == ["fp16", "fp32"]
    assert found["broken"]["error"] and found["broken"]["model"] is None
    assert report["models"]["search_path"][0] == {"path": str(models_root), "exists": True}
    assert report["caches"]["engines"]["path"] == str(
        Path(env["XDG_CACHE_HOME"]) / "irn-trt" / "engines"
    )
    assert report["caches"]["engines"]["exists"] is False
    assert report["install"] == {
        "distributions": {"onnxruntime": libs["onnxruntime"]["version"]}
        | ({"triton": libs["triton"]["version"]} if libs["triton"]["installed"] else {}),
        "cuda_majors": {},
        "gpu_set": None,
        "problems": [],
    }
    assert any("broken" in p for p in report["problems"])


def test_plain_report_matches_the_json(env: dict[str, str]) -> None:
    res = run_doctor([], env)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    text = res.stdout
    lines = text.splitlines()
    assert lines[0].startswith("irn-trt ") and lines[1].startswith("Python ")
    for header in ("Libraries", "Backends (auto tries them in this order)", "Caches",
                   "Models (search path, first match wins)", "Problems"):  # fmt: skip
        assert header in lines, header
    report = json.loads(run_doctor(["--json"], env).stdout)
    assert text.strip() == format_report(report).strip()
    for cand in report["backends"]["candidates"]:
        line = next(ln for ln in lines if ln.startswith(f"  {cand['name']} "))
        assert ("yes" in line) == cand["available"]
        if not cand["available"]:
            assert cand["reason"] in line
    assert f"auto picks {report['backends']['auto']['backend']}" in text
    assert "GPUs: none found; cuda-python is not installed" in text


def test_engine_cache_size_and_trust(env: dict[str, str], tmp_path: Path) -> None:
    key = EngineKey("irn_x4", "down", "fp16", "0" * 64, "10.16.1", "NVIDIA H200", "9.0",
                    "hr:1x4x4x3/4x1920x1920x3/4x1920x1920x3", 4 << 30, 3)  # fmt: skip
    ours = tmp_path / "ours"
    EngineCache(ours).store(key, b"plan" * 1000)
    report = collect(cache_dir=ours)
    engines = report["caches"]["engines"]
    check_shape(engines, CACHE, "caches.engines")
    assert engines["exists"] and engines["entries"] == 1 and engines["trusted"] is True
    assert engines["bytes"] >= 4000 and engines["files"] == 3  # marker, plan, entry.json
    assert report["caches"]["ort_trt"]["exists"] is False
    # A root irn-trt did not create (no marker) is not trusted, and the problem is listed.
    foreign = tmp_path / "foreign"
    (foreign / "something").mkdir(parents=True)
    report = collect(cache_dir=foreign)
    assert report["caches"]["engines"]["trusted"] is False
    assert any("no marker" in p for p in report["caches"]["engines"]["problems"])
    assert any("no marker" in p for p in report["problems"])


def _write_package(root: Path, dotted: str, body: str) -> None:
    parts = dotted.split(".")
    folder = root.joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, len(parts)):
        init = root.joinpath(*parts[:i], "__init__.py")
        if not init.exists():
            init.write_text("")
    (folder / "__init__.py").write_text(textwrap.dedent(body))


def test_broken_libraries_are_reported_not_raised(env: dict[str, str], tmp_path: Path) -> None:
    """Broken OpenVINO and ONNX Runtime, a TensorRT that prints to stdout and fails to load:
    one report, exit 0, JSON alone on stdout, each problem named."""
    fake = tmp_path / "fake"
    _write_package(
        fake, "openvino", 'raise OSError("libopenvino.so.2600: cannot open shared object file")'
    )
    _write_package(fake, "onnxruntime", "raise ImportError(\"cannot import name '_pybind_state'\")")
    _write_package(fake, "tensorrt", '''
        import os
        os.write(1, b"[TRT] chatter on fd 1\\n")
        print("[TRT] chatter on sys.stdout")
        raise OSError("libnvinfer.so.10: cannot open shared object file")
    ''')  # fmt: skip
    res = run_doctor(["--json"], env, [fake])
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "chatter on fd 1" in res.stderr and "chatter on sys.stdout" in res.stderr
    report = json.loads(res.stdout)
    check_report(report)
    libs = report["libraries"]
    assert "libopenvino.so" in libs["openvino"]["error"]
    assert "_pybind_state" in libs["onnxruntime"]["error"]
    assert libs["tensorrt"]["installed"] and "libnvinfer" in libs["tensorrt"]["error"]
    assert report["onnxruntime"]["error"] and report["openvino"]["error"]
    assert not any(c["available"] for c in report["backends"]["candidates"])
    assert report["backends"]["auto"]["backend"] is None
    problems = "\n".join(report["problems"])
    assert "openvino is installed but does not load" in problems
    assert "onnxruntime is installed but does not load" in problems
    assert "no backend can run here" in problems
    plain = run_doctor([], env, [fake])
    assert plain.returncode == 0 and "Traceback" not in plain.stderr
    assert "BROKEN" in plain.stdout and "auto picks nothing" in plain.stdout


FAKE_CUDART = """
    class _Prop:
        name = b"NVIDIA H200"
        major, minor = 9, 0
        totalGlobalMem = 150 << 30

    GPUS = {gpus}

    def cudaDriverGetVersion():
        return (0, 13000) if GPUS else (35, 0)

    def cudaGetDeviceCount():
        return (0, GPUS) if GPUS else (35, 0)

    def cudaGetErrorName(err):
        return 0, b"cudaErrorInsufficientDriver"

    def cudaGetDeviceProperties(i):
        return 0, _Prop()
"""


@pytest.mark.parametrize("gpus", [0, 1])
def test_cuda_python_boundary(env: dict[str, str], tmp_path: Path, gpus: int) -> None:
    """What cuda-python reports reaches the report (stand-in: it does not install here)."""
    fake = tmp_path / "fake"
    _write_package(fake, "cuda.bindings.runtime", FAKE_CUDART.format(gpus=gpus))
    res = run_doctor(["--json"], env, [fake])
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    report = json.loads(res.stdout)
    check_report(report)
    cuda = report["cuda"]
    if gpus:
        assert cuda["error"] is None and cuda["device_count"] == 1
        assert cuda["driver_cuda_version"] == "13.0"
        assert report["gpus"] == [{"index": 0, "name": "NVIDIA H200", "compute_capability": "9.0",
                                   "memory_bytes": 150 << 30, "source": "cuda-python"}]  # fmt: skip
        assert "GPU 0: NVIDIA H200 (compute capability 9.0" in format_report(report)
    else:
        assert cuda["error"] == "no usable CUDA driver/device (cudaErrorInsufficientDriver)"
        assert report["gpus"] == [] and cuda["device_count"] is None


def test_driver_version_parsing() -> None:
    proprietary = (
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
    )
    open_module = (
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build"
    )
    assert parse_driver_version(proprietary) == "535.183.01"
    assert parse_driver_version(open_module) == "580.65.06"
    assert parse_driver_version("580.65.06\n") == "580.65.06"  # nvidia-smi --query-gpu
    assert parse_driver_version("no driver here") is None


# --- --gpu-check -----------------------------------------------------------------------------
def test_gpu_check_refuses_in_one_line_without_a_gpu(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    res = run_doctor(["--gpu-check", "--out", str(out)], env)
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("irn-doctor: error: --gpu-check needs")
    assert "trt: tensorrt is not installed" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--configs", "trt:int8"], "write backend:precision"),
        (["--configs", "nope:fp16"], "unknown backend 'nope'"),
        (["--sizes", "1920"], "expected WxH"),
        (["--configs", "ort-cpu:fp32", "--repeats", "0"], "--repeats must be at least 1"),
    ],
)
def test_gpu_check_argument_errors(env: dict[str, str], args: list[str], message: str) -> None:
    res = run_doctor(["--gpu-check", *args], env)
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr


def test_gpu_check_pipeline_with_cpu_backends(env: dict[str, str], models_root: Path,
                                              set5_dir: Path, tmp_path: Path) -> None:  # fmt: skip
    """The whole --gpu-check pipeline, with OpenVINO standing in for TensorRT: real
    graphs, real Set5 crops, real timings; the report's shape and verdicts."""
    out = tmp_path / "report.json"
    args = ["--gpu-check", "--configs", "ov-cpu:fp32,ort-cpu:fp16", "--sizes", "96x64,64x48",
            "--repeats", "2", "--crop", "64", "--no-plugins", "--images", str(set5_dir),
            "--model-dir", str(models_root / "irn_x4"), "--out", str(out)]  # fmt: skip
    res = run_doctor(args, env)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "" and "Traceback" not in res.stderr
    assert "gpu-check: OK" in res.stderr
    report = json.loads(out.read_text())
    assert set(report) == {"format", "ok", "seconds", "time_limit_s", "environment", "model",
                           "images", "reference", "configs", "plugins", "problems"}  # fmt: skip
    assert report["format"] == "irn-trt-gpu-check/1" and report["ok"] is True
    assert report["problems"] == [] and report["plugins"] is None
    assert report["model"]["source"] == "given" and report["model"]["scale"] == 4
    assert report["images"]["source"] == str(set5_dir)
    assert [c["name"] for c in report["images"]["crops"]] == sorted(
        p.name for p in set5_dir.iterdir()
    )
    assert all(max(c["size"]) <= 64 and c["size"][0] % 4 == 0 for c in report["images"]["crops"])
    assert report["environment"]["gpus"] == []
    assert [c["config"] for c in report["configs"]] == ["ov-cpu:fp32", "ort-cpu:fp16"]
    for row in report["configs"]:
        assert row["ok"] is True and row["error"] is None and row["skipped"] is None
        acc = row["accuracy"]
        assert acc["ok"] is True and len(acc["crops"]) == 5
        assert acc["floor_db"] == {"fp32": 50.0, "fp16": 40.0}[row["precision"]]
        for crop in acc["crops"]:
            for key in ("down_psnr_db", "up_psnr_db"):
                assert crop[key] is None or crop[key] >= acc["floor_db"]
            assert isinstance(crop["roundtrip_y_psnr_db"], float)
        assert [t["size"] for t in row["timing"]] == ["96x64", "64x48"]
        for t in row["timing"]:
            assert t["down_s"] > 0 and t["up_s"] > 0 and t["tiles_down"] >= 1
            assert t["down_mp_per_s"] > 0
        assert set(row["first_call_s"]) == {"down", "up"}
    # ort-cpu against itself (the reference) is bit-identical: PSNR null (infinite).
    same = report["configs"][1]["accuracy"]
    assert same["min_down_psnr_db"] is None and same["min_up_psnr_db"] is None


def test_gpu_check_time_limit_skips_and_fails(env: dict[str, str], models_root: Path,
                                              set5_dir: Path) -> None:  # fmt: skip
    from irn_trt.runtime.gpu_check import CheckOptions, run_check

    opts = CheckOptions(configs=(("ort-cpu", "fp32"),), sizes=((64, 48),), images=set5_dir,
                        model_dir=models_root / "irn_x4", plugins=False, time_limit=1e-6,
                        crop=32)  # fmt: skip
    report = run_check(opts, log=lambda _: None)
    assert report["ok"] is False
    assert report["configs"][0]["skipped"] == "time limit reached"
    assert report["problems"] == ["ort-cpu:fp32: skipped (time limit reached)"]


@pytest.mark.slow
def test_gpu_check_writes_plugin_variants_of_the_real_graphs(tmp_model_dir, tmp_path) -> None:
    """The plugin step on the exported IRN graphs: variants written; the engine build
    refused in one line without TensorRT."""
    from irn_trt.runtime.gpu_check import _build_plugin_variants

    pytest.importorskip("onnx")
    result = _build_plugin_variants(tmp_model_dir.path, tmp_path, log=lambda _: None)
    assert result["error"] is None
    assert result["families"] == ["haar", "pack"]
    assert result["graphs"] == ["down.fp16.plugins.onnx", "down.fp32.plugins.onnx",
                                "up.fp16.plugins.onnx", "up.fp32.plugins.onnx"]  # fmt: skip
    assert result["skipped"].startswith("cannot build TensorRT engines here: tensorrt")
    assert not any(p.name.endswith(".plugins.onnx") for p in tmp_model_dir.path.iterdir())
