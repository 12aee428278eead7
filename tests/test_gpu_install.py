"""The install sets of pyproject.toml: one CUDA major per GPU set, no CPU wheel shadowing a GPU one.

``onnxruntime`` and ``onnxruntime-gpu`` install the same module, so the base install must
not pull either and no GPU set may pull the CPU wheel. Within a GPU set, tensorrt-cuNN,
cuda-python and onnxruntime-gpu must all be built for the same CUDA major N.

Resolving the GPU sets with ``pip install --dry-run`` is not quick here (the TensorRT
libraries are stubs that download from NVIDIA's index, and onnxruntime-gpu is a 255 MB
wheel), so those are checked by parsing the pins against what the published wheels
declare (``cuda_major_of``, fed below with their real metadata lines). The CPU set is
resolved for real with ``pip install --dry-run --report`` (slow test).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from irn_trt.runtime.doctor import GPU_EXTRAS, MIN_DRIVER, cuda_major_of, install_problems
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
NAME = PROJECT["name"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]

# Versions on PyPI when this was written (pip index versions, Oct 2026).
ORT_GPU_RELEASES = [
    "1.17.0", "1.17.1", "1.18.0", "1.18.1", "1.19.0", "1.19.2", "1.20.0", "1.20.2",
    "1.21.0", "1.21.1", "1.22.0", "1.23.0", "1.23.2", "1.24.1", "1.24.4", "1.25.0",
    "1.25.1", "1.26.0", "1.27.0", "1.28.0", "1.29.0", "1.30.0", "1.31.0", "1.31.1",
]  # fmt: skip
CUDA_PYTHON_RELEASES = [
    "12.6.0", "12.6.2.post1", "12.8.0", "12.9.0", "12.9.10", "13.0.0", "13.0.3", "13.1.1",
    "13.2.0", "13.3.1", "13.4.4",
]  # fmt: skip
# The `cuda` extra of real onnxruntime-gpu wheels (their METADATA, read from the wheels).
ORT_GPU_CUDA_EXTRA = {
    "1.23.2": 'nvidia-cuda-runtime-cu12~=12.0; extra == "cuda"',
    "1.26.0": 'nvidia-cuda-runtime-cu12~=12.0; extra == "cuda"',
    "1.27.0": 'nvidia-cuda-runtime-cu13~=13.0; extra == "cuda"',
    "1.31.1": 'nvidia-cuda-runtime~=13.0; extra == "cuda"',
}


def closure(extra: str) -> list[Requirement]:
    """The requirements an extra brings, self-references (irn-trt[x]) expanded."""
    out: list[Requirement] = []
    todo, seen = [extra], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in EXTRAS[name]:
            req = Requirement(text)
            if req.name == NAME:
                todo.extend(req.extras)
            else:
                out.append(req)
    return out


def by_name(extra: str) -> dict[str, Requirement]:
    return {r.name: r for r in closure(extra)}


def test_base_install_pulls_no_onnxruntime_wheel() -> None:
    names = {Requirement(t).name for t in PROJECT["dependencies"]}
    assert not names & {"onnxruntime", "onnxruntime-gpu"}
    assert "onnxruntime" in by_name("cpu")


# ids without the bare word "gpu": conftest skips items whose keywords contain it.
@pytest.mark.parametrize("extra", sorted(EXTRAS), ids=lambda e: f"extra={e}")
def test_only_the_cpu_extra_pulls_the_cpu_onnxruntime(extra: str) -> None:
    names = set(by_name(extra))
    if extra == "cpu":
        assert names == {"onnxruntime"}
    else:
        assert "onnxruntime" not in names, f"{extra} would shadow onnxruntime-gpu"


@pytest.mark.parametrize(("major", "extra"), sorted(GPU_EXTRAS.items()), ids=["cu12", "cu13"])
def test_gpu_sets_pin_one_cuda_major(major: int, extra: str) -> None:
    reqs = by_name(extra)
    assert set(reqs) == {f"tensorrt-cu{major}", "cuda-python", "onnxruntime-gpu"}
    # cuda-python: every allowed release is of this major, and some exist.
    allowed = [v for v in CUDA_PYTHON_RELEASES if reqs["cuda-python"].specifier.contains(v)]
    assert allowed and {cuda_major_of("cuda-python", v) for v in allowed} == {major}
    # onnxruntime-gpu: every allowed PyPI release is built for this major.
    ort = reqs["onnxruntime-gpu"]
    allowed = [v for v in ORT_GPU_RELEASES if ort.specifier.contains(v)]
    assert allowed and {cuda_major_of("onnxruntime-gpu", v) for v in allowed} == {major}
    assert {"cuda", "cudnn"} <= ort.extras  # its CUDA/cuDNN wheels, same major
    # TensorRT: the AOT plugins need 10.9; ONNX Runtime's TensorRT provider links
    # libnvinfer.so.10, so the set stays on TensorRT 10.
    trt = reqs[f"tensorrt-cu{major}"].specifier
    assert trt.contains("10.16.1.11") and not trt.contains("11.0.0.114")
    assert not trt.contains("10.8.0.43")
    assert cuda_major_of(f"tensorrt-cu{major}", "10.16.1.11") == major
    assert major in MIN_DRIVER


def test_gpu_alias_is_one_of_the_sets() -> None:
    targets = [Requirement(t) for t in EXTRAS["gpu"]]
    assert len(targets) == 1 and targets[0].name == NAME
    assert set(targets[0].extras) <= set(GPU_EXTRAS.values())
    assert len(targets[0].extras) == 1


def test_onnxruntime_gpu_cuda_major_from_real_wheel_metadata() -> None:
    for version, line in ORT_GPU_CUDA_EXTRA.items():
        want = 12 if Version(version) < Version("1.27") else 13
        assert cuda_major_of("onnxruntime-gpu", version, [line]) == want
        assert cuda_major_of("onnxruntime-gpu", version) == want  # the version rule agrees
    assert cuda_major_of("onnxruntime-gpu", "1.18.1") == 11
    assert cuda_major_of("onnxruntime", "1.32.0") is None  # the CPU build has no CUDA
    assert cuda_major_of("tensorrt_cu13_libs", "10.13.2.6") == 13


def test_install_problems_name_each_conflict() -> None:
    gpu12 = {"tensorrt-cu12": "10.16.1.11", "cuda-python": "12.9.10", "onnxruntime-gpu": "1.26.0"}
    majors12 = {n: cuda_major_of(n, v) for n, v in gpu12.items()}
    assert install_problems(gpu12, majors12, ("onnxruntime-gpu", "12.8"), ["CUDAExecutionProvider"],
                            "580.65.06") == []  # fmt: skip
    # cuda-python>=12 resolving to 13 next to CUDA 12 TensorRT (the reported bug).
    mixed = {**gpu12, "cuda-python": "13.0.1"}
    problems = install_problems(mixed, {**majors12, "cuda-python": 13})
    assert len(problems) == 1 and "different CUDA majors" in problems[0]
    assert "cuda-python 13.0.1" in problems[0] and "gpu-cu12" in problems[0]
    # Both ONNX Runtime wheels: the module belongs to whichever was written last.
    both = {**gpu12, "onnxruntime": "1.32.0"}
    problems = install_problems(both, majors12, ("onnxruntime", ""), ["CPUExecutionProvider"])
    assert any("both installed" in p and "pip uninstall -y onnxruntime" in p for p in problems)
    assert any("no CUDAExecutionProvider" in p for p in problems)
    # Only the GPU wheel, but the CPU build's files remain (a removed onnxruntime).
    problems = install_problems(gpu12, majors12, ("onnxruntime", ""), [])
    assert len(problems) == 1 and "loaded onnxruntime module is the CPU build" in problems[0]
    # A CUDA 13 set on a driver older than 580.65.
    gpu13 = {"tensorrt-cu13": "10.16.1.11", "cuda-python": "13.4.4", "onnxruntime-gpu": "1.31.1"}
    majors13 = {n: cuda_major_of(n, v) for n, v in gpu13.items()}
    problems = install_problems(gpu13, majors13, None, (), "575.57.08")
    assert len(problems) == 1 and "too old for the CUDA 13" in problems[0]
    assert "gpu-cu12" in problems[0]
    assert install_problems(gpu13, majors13, None, (), "580.65.06") == []
    # Triton's PTX needs R575; TensorRT 11 leaves ort-trt without its libnvinfer.so.10.
    problems = install_problems({**gpu12, "triton": "3.9.0"}, majors12, None, (), "570.86.10")
    assert len(problems) == 1 and "triton 3.9.0" in problems[0]
    problems = install_problems({**gpu13, "tensorrt-cu13": "11.4.0.106"}, majors13)
    assert len(problems) == 1 and "libnvinfer.so.10" in problems[0]
    two_trt = {**gpu12, "tensorrt-cu13": "10.16.1.11"}
    problems = install_problems(two_trt, {**majors12, "tensorrt-cu13": 13})
    assert any("share the tensorrt module" in p for p in problems)


def _install_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if "pip install" in ln and "[" in ln]


def test_ci_installs_an_onnxruntime() -> None:
    """CI installs from the repo's files: its set must bring ONNX Runtime (the CPU build)."""
    # The first install is the main environment (README's test command); a later one
    # adds the serve extra in an environment of its own.
    line = _install_lines(REPO / ".ci" / "run")[0]
    extras = re.search(r"\.\[([a-z0-9,\- ]+)\]", line).group(1).split(",")
    assert "onnxruntime" in {r.name for e in extras for r in closure(e.strip())}


def test_readme_install_lines_never_mix_cpu_and_gpu_sets() -> None:
    lines = _install_lines(REPO / "README.md")
    assert lines
    found_gpu = set()
    for line in lines:
        for extras in re.findall(r"(?:\.|irn-trt)\[([a-z0-9,\- ]+)\]", line):
            names = {e.strip() for e in extras.split(",")}
            assert names <= set(EXTRAS), line
            gpu = names & (set(GPU_EXTRAS.values()) | {"gpu"})
            assert not ("cpu" in names and gpu), line
            assert len(gpu) <= 1, line
            found_gpu |= gpu
    assert found_gpu >= set(GPU_EXTRAS.values())  # both sets are documented
    first = next(ln for ln in lines if "-e" in ln)
    extras = re.search(r"\.\[([a-z0-9,\- ]+)\]", first).group(1).split(",")
    assert "onnxruntime" in {r.name for e in extras for r in closure(e.strip())}


@pytest.mark.slow
def test_cpu_set_resolves_with_pip_dry_run(tmp_path: Path) -> None:
    """A fresh CPU machine: the README's runtime extras resolve to the CPU onnxruntime only."""
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--report", str(report), f"{REPO}[cpu,openvino]"]  # fmt: skip
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip("pip could not resolve within 5 minutes (no package index reachable?)")
    if res.returncode != 0:
        pytest.skip(f"pip cannot resolve here: {res.stderr.strip().splitlines()[-1:]}")
    names = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert {"irn-trt", "onnxruntime", "openvino", "numpy", "pillow"} <= names
    assert "onnxruntime-gpu" not in names
