"""``irn-serve --write-repository DIR``: a Triton model repository for NVIDIA's Triton container.

On a GPU cluster the models run inside NVIDIA's own Triton image, without Python
packages of ours. Per exported model this writes:

* ``<model>.down_tile`` / ``<model>.up_tile``: the graphs on fixed-size tiles, as
  ``tensorrt_plan`` (a TensorRT engine, built on the target GPU with the container's
  TensorRT: the command is in the repository's README.md) or ``onnxruntime_onnx`` with
  the TensorRT execution accelerator (the ONNX file is copied in); GPU instance groups
  and a dynamic batcher that merges the tiles of concurrent images.
* ``<model>.down`` / ``<model>.up``: Python-backend (BLS) models taking whole images,
  the same tensors as ``irn-serve`` (``image`` -> ``result``, UINT8 [batch, h, w, 3]).
  They tile with irn-trt's own tiler (``runtime/tiling.py`` and ``errors.py`` are copied
  beside ``model.py``: NumPy is all they need) and call the tile models.
* ``irn_trt.info``: what ``irn_trt.runtime.client`` asks first, so ``irn-trt-run --server``
  and ``RemoteRescaler`` work against this deployment as against ``irn-serve``.

Every ``config.pbtxt`` uses only fields of Triton's ``ModelConfig`` protobuf
(``tests/test_serve_repository.py`` parses them with the schema tritonclient ships).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .api import default_tile_lr
from .errors import IRNError
from .manifest import GraphInfo, ModelManifest, load_manifest

__all__ = ["REPO_KINDS", "pbtxt", "write_repository"]

REPO_KINDS = ("tensorrt_plan", "onnxruntime")
INFO_MODEL = "irn_trt.info"
INPUT = "image"
OUTPUT = "result"
TILING_PACKAGE = "irn_trt_tiling"


class _Enum(str):
    """A protobuf enum value: written without quotes."""


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, _Enum):
        return str(v)
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))  # a quoted string, escapes included


def pbtxt(fields: dict[str, Any], indent: int = 0) -> str:
    """Protobuf text format of nested dicts: a dict is a message, a list of dicts a
    repeated message, a list of scalars a repeated scalar."""
    pad = "  " * indent
    lines: list[str] = []
    for key, value in fields.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key} {{\n{pbtxt(value, indent + 1)}{pad}}}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines.append(f"{pad}{key} {{\n{pbtxt(item, indent + 1)}{pad}}}")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


def _params(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": {"string_value": str(v)}} for k, v in values.items()]


def _tensor(name: str, dims: list[int]) -> dict[str, Any]:
    return {"name": name, "data_type": _Enum("TYPE_UINT8"), "dims": dims}


def check_rgb_layout(manifest: ModelManifest, model_dir: Path) -> None:
    """Refuse, in one line, a model whose LR is more than one RGB image: irn-serve's tensors
    are ``[batch, h, w, 3]`` RGB both ways (IRN_color's grey image, IRN-A's alpha code
    and IRN-M's side code have no place in them yet)."""
    if manifest.lr_layout != "rgb":
        what = {
            "grey": "its LR is a 1-channel grey image",
            "rgb+alpha-code": "its LR carries a 4th channel (the alpha code)",
            "rgb+latent": "its LR travels with a side code (a second tensor)",
        }.get(manifest.lr_layout, f"its LR layout is {manifest.lr_layout}")
        raise IRNError(
            f"{model_dir}: {manifest.model} cannot be served yet: {what}, and irn-serve "
            "exchanges RGB images only; run it locally with irn-trt-run"
        )


def _check_manifest(manifest: ModelManifest, model_dir: Path) -> None:
    if manifest.io != "uint8":
        raise IRNError(f"{model_dir}: the repository needs uint8 graphs (irn-export --io uint8)")
    check_rgb_layout(manifest, model_dir)
    if manifest.z_policy == "input":
        raise IRNError(f"{model_dir}: graphs with a z input are not served (export with --z zero)")


def _tile_graph(manifest: ModelManifest, direction: str, kind: str) -> GraphInfo:
    """The strongly typed FP16 graph where there is one (its own types set the precision,
    as irn-trt's trt and ort-trt backends use it), else FP32."""
    have = manifest.precisions(direction)
    return manifest.graph(direction, "fp16" if "fp16" in have else "fp32")


def _tile_config(
    name: str,
    kind: str,
    graph: GraphInfo,
    max_batch: int,
    instances: int,
    max_queue: int,
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": name,
        "platform": "tensorrt_plan" if kind == "tensorrt_plan" else "onnxruntime_onnx",
        "max_batch_size": max_batch,
        "input": [_tensor(graph.inputs[0].name, [-1, -1, 3])],
        "output": [_tensor(graph.outputs[0].name, [-1, -1, 3])],
        "instance_group": [{"kind": _Enum("KIND_GPU"), "count": instances}],
        "dynamic_batching": {
            "max_queue_delay_microseconds": 500,
            "default_queue_policy": {"max_queue_size": max_queue},
        },
        "default_model_filename": "model.plan" if kind == "tensorrt_plan" else "model.onnx",
    }
    if kind == "onnxruntime":
        cfg["optimization"] = {
            "execution_accelerators": {
                "gpu_execution_accelerator": [
                    {
                        "name": "tensorrt",
                        "parameters": [
                            # FP32 mode: the FP16 graph's own types decide (strongly typed).
                            {"key": "precision_mode", "value": "FP32"},
                            {"key": "max_workspace_size_bytes", "value": str(4 << 30)},
                            {"key": "trt_engine_cache_enable", "value": "1"},
                            {
                                "key": "trt_engine_cache_path",
                                "value": f"/tmp/irn-trt-engines/{name}",
                            },
                        ],
                    }
                ]
            }
        }
    return cfg


def _whole_config(
    name: str, params: dict[str, Any], max_batch: int, instances: int, max_queue: int
) -> dict[str, Any]:
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": max_batch,
        "input": [_tensor(INPUT, [-1, -1, 3])],
        "output": [_tensor(OUTPUT, [-1, -1, 3])],
        "instance_group": [{"kind": _Enum("KIND_CPU"), "count": instances}],
        "dynamic_batching": {"default_queue_policy": {"max_queue_size": max_queue}},
        "parameters": _params(params),
    }


_WHOLE_MODEL_PY = '''\
"""Whole images through irn-trt's tiler and the {tile_kind} tile models (generated by irn-serve)."""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from {package}.tiling import TileConfig, pad_to_multiple, run_tiled  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        raw = json.loads(args["model_config"]).get("parameters", {{}})
        p = {{k: v["string_value"] for k, v in raw.items()}}
        self.direction = p["direction"]
        self.scale = int(p["scale"])
        self.tile_model = p["tile_model"]
        self.tile_input = p["tile_input"]
        self.tile_output = p["tile_output"]
        self.max_pixels = int(p["max_pixels"])
        self.config = TileConfig(
            int(p["tile_lr"]), int(p["overlap_lr"]), batch=int(p["tile_batch"]), pad_to_tile=True
        )

    def _tiles(self, stack):
        request = pb_utils.InferenceRequest(
            model_name=self.tile_model,
            requested_output_names=[self.tile_output],
            inputs=[pb_utils.Tensor(self.tile_input, np.ascontiguousarray(stack))],
        )
        response = request.exec()
        if response.has_error():
            raise RuntimeError(response.error().message())
        return pb_utils.get_output_tensor_by_name(response, self.tile_output).as_numpy()

    def _image(self, image):
        s = self.scale
        if self.direction == "down":
            return run_tiled(pad_to_multiple(image, s, s), self._tiles, s, 1, self.config)
        return run_tiled(image, self._tiles, 1, s, self.config)

    def _check(self, batch):
        if batch.ndim != 4 or batch.shape[-1] != 3 or min(batch.shape[1:3]) < 1:
            raise ValueError(f"expected [batch, height, width, 3] RGB, got {{list(batch.shape)}}")
        h, w = batch.shape[1:3]
        s = self.scale
        pixels = h * w * (s * s if self.direction == "up" else 1)
        if pixels > self.max_pixels:
            raise ValueError(
                f"image {{w}}x{{h}}: {{pixels / 1e6:.1f}} MP is above this server's limit of "
                f"{{self.max_pixels / 1e6:.1f}} MP per image; send it in tiles"
            )
        if self.direction == "down" and min(h, w) < s:
            raise ValueError(f"{{w}}x{{h}} is too small to downscale (at least {{s}}x{{s}})")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                batch = pb_utils.get_input_tensor_by_name(request, "{input}").as_numpy()
                self._check(batch)
                out = np.stack([self._image(np.ascontiguousarray(x)) for x in batch])
                tensors = [pb_utils.Tensor("{output}", out)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # one request's error, in one line the client shows
                error = pb_utils.TritonError(f"IRNError: {{exc}}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        return responses
'''

_INFO_MODEL_PY = '''\
"""What this repository serves, for irn_trt.runtime.client (generated by irn-serve)."""

import os

import numpy as np
import triton_python_backend_utils as pb_utils

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "info.json"), "rb") as f:
    PAYLOAD = f.read()


class TritonPythonModel:
    def execute(self, requests):
        out = np.array([PAYLOAD], dtype=np.object_)
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("info", out)])
            for _ in requests
        ]
'''


def _write(path: Path, text: str, written: list[Path]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    written.append(path)


def _trtexec_line(
    graph: GraphInfo, manifest: ModelManifest, tile_lr: int, batch: int, dest: str
) -> str:
    s = manifest.scale
    name = graph.inputs[0].name
    if graph.direction == "down":
        smallest, tile = s, tile_lr * s
    else:
        smallest, tile = 1, tile_lr
    shape = f"{tile}x{tile}x3"
    return (
        f"trtexec --onnx={graph.file} --stronglyTyped --saveEngine={dest} "
        f"--minShapes={name}:1x{smallest}x{smallest}x3 --optShapes={name}:{batch}x{shape} "
        f"--maxShapes={name}:{batch}x{shape}"
    )


def write_repository(
    model_dirs: Sequence[Path],
    out: Path,
    kind: str = REPO_KINDS[0],
    tile_hr: int | None = None,
    max_batch: int = 8,
    instances: int = 1,
    max_queue: int = 64,
    max_pixels: int = 16 * 1024 * 1024,
) -> list[Path]:
    """Write the repository for ``model_dirs`` to ``out`` (new or empty); returns the files."""
    if kind not in REPO_KINDS:
        raise IRNError(f"--repo-kind {kind!r}: choose from {', '.join(REPO_KINDS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise IRNError(f"--write-repository {out}: exists and is not an empty folder")
    src_dir = Path(__file__).resolve().parent
    written: list[Path] = []
    info_models: dict[str, Any] = {}
    readme: list[str] = []
    names_seen: set[str] = set()
    manifests = [(Path(d), load_manifest(d)) for d in model_dirs]
    for model_dir, m in manifests:
        _check_manifest(m, model_dir)
        if m.model in names_seen:
            raise IRNError(f"two model directories hold {m.model}; give one")
        names_seen.add(m.model)
    for model_dir, m in manifests:
        s = m.scale
        tile_lr = default_tile_lr(m.halo) if tile_hr is None else tile_hr // s
        if tile_hr is not None and (tile_hr % s or tile_lr <= 2 * m.overlap_halo):
            raise IRNError(
                f"--repo-tile {tile_hr} must be a multiple of {s} above twice the overlap "
                f"({2 * m.overlap_halo * s} HR px) for {m.model}"
            )
        names = {"down": f"{m.model}.down", "up": f"{m.model}.up"}
        precision = "fp32"
        for direction in ("down", "up"):
            graph = _tile_graph(m, direction, kind)
            precision = graph.precision
            tile_name = f"{m.model}.{direction}_tile"
            tile_dir = out / tile_name
            cfg = _tile_config(tile_name, kind, graph, max_batch, instances, max_queue)
            _write(tile_dir / "config.pbtxt", pbtxt(cfg), written)
            (tile_dir / "1").mkdir(parents=True, exist_ok=True)
            if kind == "onnxruntime":
                shutil.copyfile(model_dir / graph.file, tile_dir / "1" / "model.onnx")
                written.append(tile_dir / "1" / "model.onnx")
            else:
                readme.append(
                    _trtexec_line(graph, m, tile_lr, max_batch, f"{tile_name}/1/model.plan")
                )
            params = {
                "direction": direction,
                "scale": s,
                "tile_lr": tile_lr,
                "overlap_lr": m.overlap_halo,
                "tile_batch": max_batch,
                "tile_model": tile_name,
                "tile_input": graph.inputs[0].name,
                "tile_output": graph.outputs[0].name,
                "max_pixels": max_pixels,
            }
            whole_dir = out / names[direction]
            cfg = _whole_config(names[direction], params, max_batch, instances, max_queue)
            _write(whole_dir / "config.pbtxt", pbtxt(cfg), written)
            text = _WHOLE_MODEL_PY.format(
                tile_kind=kind, package=TILING_PACKAGE, input=INPUT, output=OUTPUT
            )
            _write(whole_dir / "1" / "model.py", text, written)
            pkg = whole_dir / "1" / TILING_PACKAGE
            _write(pkg / "__init__.py", "", written)
            for module in ("tiling.py", "errors.py"):
                _write(pkg / module, (src_dir / module).read_text(), written)
        info_models[m.model] = {
            "manifest": m.to_dict(),
            "models": names,
            "backend": "trt" if kind == "tensorrt_plan" else "ort-trt",
            "precision": precision,
            "backend_reason": f"Triton {kind} tile models, tiled by {m.model}.down/.up (BLS)",
            "overlap_lr": m.overlap_halo,
            "max_pixels": max_pixels,
        }
    info = {"server": "triton-repository", "max_batch": max_batch, "max_pixels": max_pixels}
    info["models"] = info_models
    info_cfg = {
        "name": INFO_MODEL,
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "query", "data_type": _Enum("TYPE_STRING"), "dims": [1]}],
        "output": [{"name": "info", "data_type": _Enum("TYPE_STRING"), "dims": [1]}],
        "instance_group": [{"kind": _Enum("KIND_CPU"), "count": 1}],
    }
    _write(out / INFO_MODEL / "config.pbtxt", pbtxt(info_cfg), written)
    _write(out / INFO_MODEL / "1" / "model.py", _INFO_MODEL_PY, written)
    _write(out / INFO_MODEL / "1" / "info.json", json.dumps(info, sort_keys=True), written)
    _write(out / "README.md", _readme(kind, readme, manifests), written)
    return written


def _readme(kind: str, trtexec: list[str], manifests: list[tuple[Path, ModelManifest]]) -> str:
    models = ", ".join(m.model for _, m in manifests)
    text = [
        f"# Triton model repository for {models} (written by irn-serve --write-repository)",
        "",
        "Serve it with NVIDIA's Triton container (Python backend included), e.g.",
        "",
        "    docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 \\",
        "      -v $PWD:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\",
        "      tritonserver --model-repository=/models",
        "",
        "and talk to it like irn-serve: `irn-trt-run photo.jpg --server http://HOST:8000`.",
    ]
    if kind == "tensorrt_plan":
        text += [
            "",
            "The `*_tile` models need TensorRT engines built on the target GPU with the",
            "TensorRT version of the Triton container (a plan only loads in the TensorRT that",
            "built it): in the model directory, inside the matching",
            "`nvcr.io/nvidia/tensorrt:<yy.mm>-py3` image (same <yy.mm>), run",
            "",
            *(f"    {line}" for line in trtexec),
            "",
            "(with the output paths pointing into this repository).",
        ]
    return "\n".join(text) + "\n"
