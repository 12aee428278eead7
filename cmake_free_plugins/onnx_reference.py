"""Run plugin-variant ONNX graphs on the CPU, each ``irn`` node by its NumPy reference.

ONNX Runtime cannot run the ``irn`` custom ops, and TensorRT needs a GPU. Two
ways to evaluate a rewritten graph here, both computing every ``irn`` node
with :mod:`irn_trt.plugins.reference`:

- :func:`run_split` cuts the graph at the custom nodes and runs the native
  pieces in ONNX Runtime, so it differs from ONNX Runtime on the native graph
  only by what the plugins compute differently (the check CI relies on);
- :func:`run_with_references` runs everything in ``onnx.reference`` (ONNX's
  Python evaluator, with one ``OpRun`` per plugin): no ONNX Runtime involved,
  slow (NumPy convolutions), for small images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from . import reference as ref
from .trt_plugins import PLUGIN_NAMESPACE

__all__ = ["PLUGIN_OP_RUNS", "plugin_boundaries", "run_with_references", "run_split"]


class HaarDown(OpRun):
    op_domain = PLUGIN_NAMESPACE

    def _run(self, x, levels=None, plugin_namespace=None, aot=None):  # noqa: ARG002
        return (ref.haar_down_ref(x, int(levels)),)


class HaarUp(OpRun):
    op_domain = PLUGIN_NAMESPACE

    def _run(self, y, levels=None, plugin_namespace=None, aot=None):  # noqa: ARG002
        return (ref.haar_up_ref(y, int(levels)),)


class PackRgb8(OpRun):
    op_domain = PLUGIN_NAMESPACE

    def _run(self, x, plugin_namespace=None, aot=None):  # noqa: ARG002
        return (ref.pack_rgb8_ref(x),)


class UnpackRgb8(OpRun):
    op_domain = PLUGIN_NAMESPACE

    def _run(self, u, fp16=None, plugin_namespace=None, aot=None):  # noqa: ARG002
        return (ref.unpack_rgb8_ref(u, np.float16 if fp16 else np.float32),)


class GaussianZ(OpRun):
    op_domain = PLUGIN_NAMESPACE

    def _run(self, like, channels=None, seed=None, scale=None, plugin_namespace=None, aot=None):  # noqa: ARG002
        n, _, h, w = like.shape
        z = ref.gaussian_z_ref((n, int(channels), h, w), int(seed), float(scale))
        return (z.astype(like.dtype),)


# onnx.reference finds an implementation by class name == op type.
HaarDown.__name__ = "haar_down"
HaarUp.__name__ = "haar_up"
PackRgb8.__name__ = "pack_rgb8"
UnpackRgb8.__name__ = "unpack_rgb8"
GaussianZ.__name__ = "gaussian_z"

PLUGIN_OP_RUNS: tuple[type[OpRun], ...] = (HaarDown, HaarUp, PackRgb8, UnpackRgb8, GaussianZ)


def run_with_references(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of ``model`` on ``feeds``, ``irn`` nodes computed by the NumPy references."""
    session = ReferenceEvaluator(model, new_ops=list(PLUGIN_OP_RUNS))
    return list(session.run(None, feeds))


def _reference_impl(node: onnx.NodeProto) -> Callable[..., tuple[np.ndarray, ...]]:
    cls = next((c for c in PLUGIN_OP_RUNS if c.__name__ == node.op_type), None)
    if cls is None:
        raise ValueError(f"no reference for custom op {node.domain}::{node.op_type}")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return lambda *inputs: cls._run(None, *inputs, **attrs)  # type: ignore[arg-type]


def _native_segment(
    model: onnx.ModelProto,
    nodes: list[onnx.NodeProto],
    known: dict[str, np.ndarray],
    wanted: set[str],
) -> onnx.ModelProto:
    """A model of ``nodes`` reading the ``known`` tensors, returning those in ``wanted``.

    Only tensors needed later are outputs, so ONNX Runtime fuses inside the
    segment exactly as it does in the whole graph.
    """
    produced = {o for n in nodes for o in n.output}
    inits = {t.name for t in model.graph.initializer}
    inputs = sorted(
        {i for n in nodes for i in n.input if i and i not in produced and i not in inits}
    )
    graph = helper.make_graph(
        nodes,
        "segment",
        [
            helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(known[name].dtype), known[name].shape
            )
            for name in inputs
        ],
        [onnx.ValueInfoProto(name=o) for n in nodes for o in n.output if o in wanted],
        initializer=[
            t for t in model.graph.initializer if t.name in {i for n in nodes for i in n.input}
        ],
    )
    opsets = [o for o in model.opset_import if o.domain != PLUGIN_NAMESPACE]
    return helper.make_model(graph, opset_imports=opsets, ir_version=model.ir_version)


def plugin_boundaries(model: onnx.ModelProto) -> frozenset[str]:
    """Names of the tensors the ``irn`` nodes of ``model`` read and write."""
    return frozenset(
        t for n in model.graph.node if n.domain == PLUGIN_NAMESPACE for t in [*n.input, *n.output]
    )


def run_split(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    cuts: frozenset[str] = frozenset(),
    threads: int = 2,
) -> list[np.ndarray]:
    """Outputs of ``model``: native pieces in ONNX Runtime (CPU), ``irn`` nodes in NumPy.

    Tensors in ``cuts`` also end a piece. Running the *native* graph with
    ``cuts=plugin_boundaries(plugin_graph)`` splits it where the plugin graph is
    split, so ONNX Runtime fuses the same way in both (FP16 kernels round
    differently when fused) and any difference left is the plugins' own.
    """
    import onnxruntime as ort

    known = dict(feeds)
    inits = {t.name for t in model.graph.initializer}
    pending = list(model.graph.node)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    while pending:
        # the longest run of native nodes computable from what is known
        segment: list[onnx.NodeProto] = []
        reachable = set(known) | inits | {""}
        for node in pending:
            if node.domain != PLUGIN_NAMESPACE and all(i in reachable for i in node.input):
                segment.append(node)
                reachable.update(o for o in node.output if o not in cuts)
        if segment:
            rest = [n for n in pending if all(n is not m for m in segment)]
            wanted = {i for n in rest for i in n.input} | {o.name for o in model.graph.output}
            sub = _native_segment(model, segment, known, wanted)
            sess = ort.InferenceSession(sub.SerializeToString(), options, ["CPUExecutionProvider"])
            names = [o.name for o in sub.graph.output]
            feeds_in = {i.name: known[i.name] for i in sub.graph.input}
            known.update(zip(names, sess.run(names, feeds_in), strict=True))
        ready = [
            n for n in pending
            if n.domain == PLUGIN_NAMESPACE and all(i in known for i in n.input)
        ]  # fmt: skip
        for node in ready:
            outs = _reference_impl(node)(*(known[i] for i in node.input))
            known.update(zip(node.output, outs, strict=True))
        done = {id(n) for n in segment} | {id(n) for n in ready}
        if not done:
            raise ValueError("graph has nodes whose inputs are never computed")
        pending = [n for n in pending if id(n) not in done]
    return [known[o.name] for o in model.graph.output]
