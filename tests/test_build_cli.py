"""``irn-build``: arguments, one-line errors, and a clear refusal on a machine without a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import gpu_unavailable_reason
from irn_trt.runtime.build_cli import main
from trt_toy_models import make_toy_model_dir

NO_GPU = gpu_unavailable_reason() is not None


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    make_toy_model_dir(root, scale=4, precisions=("fp32",))
    return root


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("irn-build: error: ")
    return err[0]


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "example: irn-build build/irn_x4" in out and "--batch" in out and "WxH" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tile", "510x512"], "multiples of the scale (4)"),
        (["--tile", "big"], "expected WxH"),
        (["--batch", "0"], "--batch must be at least 1"),
        (["--batch", "2", "--max-batch", "3"], "--batch 2 and --max-batch 3 disagree"),
        (["--workspace-gb", "0"], "--workspace-gb must be positive"),
        (["--precision", "fp16"], "has no down.fp16 graph (has: down.fp32, up.fp32)"),
        (["--plugins", "--precision", "fp32"], "no down.fp32 plugin graph (export it with"),
    ],
)
def test_bad_arguments_fail_in_one_line_before_any_gpu_work(
    toy_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main([str(toy_dir), *args]) == 2
    assert message in one_error_line(capsys)


def test_missing_model_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope")]) == 2
    assert "does not exist (run irn-export first)" in one_error_line(capsys)
    assert main([str(tmp_path)]) == 2
    assert "manifest.json is missing" in one_error_line(capsys)


@pytest.mark.skipif(not NO_GPU, reason="a GPU stack is present: irn-build would build")
def test_without_a_gpu_irn_build_refuses_in_one_line(
    toy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    assert main([str(toy_dir), "--precision", "fp32", "--cache-dir", str(cache)]) == 2
    line = one_error_line(capsys)
    assert "cannot build TensorRT engines here: " in line
    assert not cache.exists()  # nothing written


@pytest.mark.skipif(not NO_GPU, reason="a GPU stack is present: irn-build would build")
def test_console_script_exits_non_zero_without_traceback(toy_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "irn_trt.runtime.build_cli",
            str(toy_dir),
            "--precision",
            "fp32",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("irn-build: error: cannot build TensorRT engines here")
