"""Every CLI answers --help and argument errors without importing torch or onnx.

Those imports take seconds; a user who mistypes a flag should not wait for them.
The check is structural (which modules got imported), not a timing.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CLIS = {
    "irn-trt-run": "irn_trt.runtime.cli",
    "irn-export": "irn_trt.export.cli",
    "irn-train": "irn_trt.train.cli",
    "irn-eval": "irn_trt.train.eval_cli",
    "irn-build": "irn_trt.runtime.build_cli",
    "irn-bench": "irn_trt.runtime.bench",
    "irn-doctor": "irn_trt.runtime.doctor",
    "irn-serve": "irn_trt.runtime.serve",
    "irn-serve-bench": "irn_trt.runtime.serve_bench",
    "irn-rd": "irn_trt.runtime.rd",
}

_PROBE = """
import sys
import {module} as cli
try:
    cli.main({argv!r})
except SystemExit:
    pass
names = ("torch", "onnx", "onnxruntime", "openvino", "tensorrt")
heavy = sorted(m for m in names if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


@pytest.mark.parametrize("prog", sorted(CLIS))
@pytest.mark.parametrize("argv", [["--help"], ["--no-such-flag"]])
def test_help_and_usage_errors_stay_light(prog: str, argv: list[str]) -> None:
    code = _PROBE.format(module=CLIS[prog], argv=argv)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "HEAVY=", res.stdout
    if argv == ["--help"]:
        assert "example" in res.stdout
    else:
        assert "unrecognized arguments" in res.stderr or "error" in res.stderr
