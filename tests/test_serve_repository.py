"""``irn-serve --write-repository``: Triton model repositories for NVIDIA's Triton container.

The ``config.pbtxt`` files are parsed with the ``ModelConfig`` protobuf that tritonclient
ships (Triton's own schema: an unknown or misspelt field fails). The generated Python
models (the tiling BLS models and ``irn_trt.info``) then run in the real ``tritonserver``
of the PyTriton wheel; only the ``*_tile`` models are stand-ins there (that server has
no TensorRT or ONNX Runtime backend): Python models running irn-trt's own ort-cpu on
each tile, as the engine would on a GPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from irn_trt.runtime.errors import IRNError
from irn_trt.runtime.manifest import file_sha256
from irn_trt.runtime.serve_repository import _Enum, pbtxt, write_repository

_pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="serve extra missing")
from google.protobuf import text_format  # noqa: E402


def _parse(path: Path):  # type: ignore[no-untyped-def]
    return text_format.Parse(path.read_text(), _pb.ModelConfig())


def test_pbtxt_writes_protobuf_text() -> None:
    text = pbtxt({"name": "m", "max_batch_size": 2, "input": [{"name": "x", "dims": [-1, 3]}]})
    assert text == 'name: "m"\nmax_batch_size: 2\ninput {\n  name: "x"\n  dims: [ -1, 3 ]\n}\n'
    cfg = text_format.Parse(
        pbtxt({"name": "m", "instance_group": [{"kind": _Enum("KIND_GPU"), "count": 2}]}),
        _pb.ModelConfig(),
    )
    assert cfg.instance_group[0].kind == _pb.ModelInstanceGroup.KIND_GPU
    with pytest.raises(text_format.ParseError):  # the schema is enforced
        text_format.Parse(pbtxt({"name": "m", "max_batch": 2}), _pb.ModelConfig())


@pytest.mark.parametrize("kind", ["tensorrt_plan", "onnxruntime"])
def test_repository_configs_follow_tritons_schema(tmp_model_dir, tmp_path: Path, kind: str):
    out = tmp_path / "repo"
    m = tmp_model_dir.manifest
    files = write_repository(
        [tmp_model_dir.path], out, kind=kind, max_batch=4, instances=2, max_queue=16
    )
    assert {p.parent.name for p in files if p.name == "config.pbtxt"} == {
        "irn_x4.down_tile",
        "irn_x4.up_tile",
        "irn_x4.down",
        "irn_x4.up",
        "irn_trt.info",
    }
    for direction in ("down", "up"):
        tile = _parse(out / f"irn_x4.{direction}_tile" / "config.pbtxt")
        graph = m.graph(direction, "fp16")
        assert tile.name == f"irn_x4.{direction}_tile" and tile.max_batch_size == 4
        assert tile.platform == ("tensorrt_plan" if kind == "tensorrt_plan" else "onnxruntime_onnx")
        assert [i.name for i in tile.input] == [graph.inputs[0].name]
        assert [o.name for o in tile.output] == [graph.outputs[0].name]
        assert tile.input[0].data_type == _pb.TYPE_UINT8 and list(tile.input[0].dims) == [-1, -1, 3]
        assert tile.instance_group[0].kind == _pb.ModelInstanceGroup.KIND_GPU
        assert tile.instance_group[0].count == 2
        assert tile.dynamic_batching.default_queue_policy.max_queue_size == 16
        if kind == "onnxruntime":
            acc = tile.optimization.execution_accelerators.gpu_execution_accelerator[0]
            assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP32"
            onnx = out / f"irn_x4.{direction}_tile" / "1" / "model.onnx"
            assert file_sha256(onnx) == graph.sha256
        else:
            assert tile.default_model_filename == "model.plan"
        whole = _parse(out / f"irn_x4.{direction}" / "config.pbtxt")
        assert whole.backend == "python" and whole.max_batch_size == 4
        params = {k: v.string_value for k, v in whole.parameters.items()}
        assert params["tile_model"] == tile.name and params["tile_input"] == graph.inputs[0].name
        assert int(params["overlap_lr"]) == m.overlap_halo and int(params["scale"]) == 4
        assert (out / f"irn_x4.{direction}" / "1" / "irn_trt_tiling" / "tiling.py").is_file()
    info = _parse(out / "irn_trt.info" / "config.pbtxt")
    assert info.max_batch_size == 0 and info.input[0].data_type == _pb.TYPE_STRING
    payload = json.loads((out / "irn_trt.info" / "1" / "info.json").read_text())
    assert payload["models"]["irn_x4"]["manifest"]["checkpoint_sha256"] == m.checkpoint_sha256
    readme = (out / "README.md").read_text()
    assert ("trtexec" in readme) == (kind == "tensorrt_plan")
    with pytest.raises(IRNError, match="not an empty folder"):
        write_repository([tmp_model_dir.path], out, kind=kind)


# --- the generated Python models in the real tritonserver ---------------------------------

_STAND_IN = '''\
"""Stand-in for a TensorRT/ONNX Runtime tile model: irn-trt's ort-cpu on each tile."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        raw = json.loads(args["model_config"])["parameters"]
        p = {k: v["string_value"] for k, v in raw.items()}
        from irn_trt.runtime.api import Rescaler

        self.r = Rescaler.load(p["model_dir"], backend="ort-cpu", threads=1, no_tile=True)
        self.run = self.r.downscale if p["direction"] == "down" else self.r.upscale
        self.inp, self.out = p["input"], p["output"]

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, self.inp).as_numpy()
            y = np.stack([self.run(np.ascontiguousarray(t)) for t in x])
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.out, y)]))
        return responses
'''


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-block-per-stage random x4 (FP32): cheap enough for many small tiles."""
    from conftest import tiny_config
    from irn_trt.export.api import ExportOptions, export_model
    from irn_trt.train.models import build_model, randomize_weights

    out = tmp_path_factory.mktemp("tiny_x4") / "model"
    model = randomize_weights(build_model(tiny_config("irn_x4")), 0, 0.005).eval()
    export_model(model, out, options=ExportOptions(precisions=("fp32",)))
    return out


def _standalone_tritonserver(repo: Path, work: Path) -> tuple[subprocess.Popen, dict[str, int]]:
    """PyTriton's tritonserver binary on ``repo``, as PyTriton prepares it (its stub for this
    Python copied into the Python backend), on free loopback ports."""
    from irn_trt.runtime.serve import free_port, stub_environment
    from pytriton.utils.distribution import get_libs_path, get_root_module_path, get_stub_path

    dist = work / "tritonserver"
    shutil.copytree(
        get_root_module_path() / "tritonserver",
        dist,
        ignore=shutil.ignore_patterns("python_backend_stubs"),
    )
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    shutil.copy(get_stub_path(version), dist / "backends" / "python" / "triton_python_backend_stub")
    env = stub_environment()
    env["LD_LIBRARY_PATH"] += os.pathsep + str(get_libs_path())
    # As PyTriton does: the stub's Python is this environment's (its bin/ first on PATH).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    ports = {name: free_port() for name in ("http", "grpc", "metrics")}
    cmd = [
        str(dist / "bin" / "tritonserver"),
        f"--model-repository={repo}",
        f"--backend-directory={dist / 'backends'}",
        "--http-address=127.0.0.1",
        f"--http-port={ports['http']}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={ports['grpc']}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={ports['metrics']}",
        "--exit-timeout-secs=10",
    ]
    log = open(work / "tritonserver.log", "wb")  # noqa: SIM115 - the process keeps it
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), ports


@pytest.mark.slow
def test_generated_python_models_tile_like_the_runtime(tiny_model_dir: Path, tmp_path: Path):
    """The BLS models tile whole images with irn-trt's tiler and call the tile models;
    through the real Triton server (Python backend) the result is the local tiled run."""
    import urllib.request

    from irn_trt.runtime.api import Rescaler
    from irn_trt.runtime.bench import synthetic_image
    from irn_trt.runtime.client import RemoteRescaler
    from irn_trt.runtime.manifest import load_manifest

    repo = tmp_path / "repo"
    tile_hr = 128
    write_repository([tiny_model_dir], repo, kind="onnxruntime", tile_hr=tile_hr, max_batch=1)
    m = load_manifest(tiny_model_dir)
    u8 = _Enum("TYPE_UINT8")
    for direction in ("down", "up"):
        folder = repo / f"{m.model}.{direction}_tile"
        cfg = _parse(folder / "config.pbtxt")
        graph = m.graph(direction, "fp32")
        params = {
            "model_dir": str(tiny_model_dir),
            "direction": direction,
            "input": graph.inputs[0].name,
            "output": graph.outputs[0].name,
        }
        stand_in = {
            "name": cfg.name,
            "backend": "python",
            "max_batch_size": cfg.max_batch_size,
            "input": [{"name": graph.inputs[0].name, "data_type": u8, "dims": [-1, -1, 3]}],
            "output": [{"name": graph.outputs[0].name, "data_type": u8, "dims": [-1, -1, 3]}],
            "parameters": [{"key": k, "value": {"string_value": v}} for k, v in params.items()],
        }
        (folder / "config.pbtxt").write_text(pbtxt(stand_in))
        _parse(folder / "config.pbtxt")  # still Triton's schema
        (folder / "1" / "model.onnx").unlink()
        (folder / "1" / "model.py").write_text(_STAND_IN)

    proc, ports = _standalone_tritonserver(repo, tmp_path)
    try:
        url = f"http://127.0.0.1:{ports['http']}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "tritonserver.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "tritonserver.log").read_text()[-3000:]
            time.sleep(0.5)
        img = synthetic_image(136, 160, seed=3)
        with Rescaler.load(tiny_model_dir, backend="ort-cpu", threads=1, tile=tile_hr) as local:
            want_lr = local.downscale(img)
            want_hr = local.upscale(want_lr)
        for server in (url, f"grpc://127.0.0.1:{ports['grpc']}"):
            with RemoteRescaler.connect(server) as rr:
                assert rr.selection.backend == "ort-trt" and rr.overlap_lr == m.overlap_halo
                lr = rr.downscale(img)
                assert np.array_equal(lr, want_lr), server
                assert np.array_equal(rr.upscale(lr), want_hr), server
                with pytest.raises(IRNError, match="too small to downscale"):
                    rr.infer("down", np.zeros((1, 2, 2, 3), np.uint8))
    finally:
        proc.terminate()
        proc.wait(60)


def test_repository_refuses_what_it_cannot_serve(tmp_model_dir, tmp_path: Path) -> None:
    m = dataclasses.replace(tmp_model_dir.manifest, io="float32")
    d = tmp_path / "f32"
    d.mkdir()
    from irn_trt.runtime.manifest import write_manifest

    write_manifest(d, m)
    with pytest.raises(IRNError, match="uint8"):
        write_repository([d], tmp_path / "repo")
    with pytest.raises(IRNError, match="--repo-tile"):
        write_repository([tmp_model_dir.path], tmp_path / "repo2", tile_hr=64)


def test_irn_serve_write_repository_cli(tmp_model_dir, tmp_path: Path, capsys) -> None:
    from irn_trt.runtime import serve

    out = tmp_path / "models"
    argv = [str(tmp_model_dir.path), "--write-repository", str(out), "--repo-kind", "onnxruntime"]
    assert serve.main([*argv, "--max-batch-size", "2", "--instances", "3"]) == 0
    printed = capsys.readouterr().out.split()
    assert str(out / "irn_x4.down_tile" / "1" / "model.onnx") in printed
    cfg = _parse(out / "irn_x4.down_tile" / "config.pbtxt")
    assert cfg.max_batch_size == 2 and cfg.instance_group[0].count == 3
