"""Rewrite native IRN ONNX graphs into their TensorRT-plugin variants.

:func:`apply_plugins` finds, in a graph written by ``irn-export``, the native
subgraphs each plugin replaces and swaps them for one custom node in the
``irn`` domain (op type = plugin name, plus the ``plugin_namespace`` and
``aot`` attributes TensorRT's ONNX parser reads to pick the AOT
implementation). Tensor names at the boundaries are kept, so everything else
in the graph is untouched; the nodes left without consumers are removed.

Patterns (all exact: a rewrite never changes what is computed beyond the
rounding of the fused arithmetic, see ``reference.py``):

- ``haar``: a stride-2 2x2 ``Conv`` whose weight is the Haar analysis /4
  (-> ``haar_down``), or a ``ConvTranspose`` with the plain Haar weight
  (-> ``haar_up``); back-to-back levels (IRN_E) fuse into one node.
- ``pack``: ``[Cast fp32] -> Clip(0, 1) -> Mul 255 -> Round -> Transpose NHWC``
  before the output's ``Cast uint8`` (-> ``pack_rgb8``); ``unpack``: ``Transpose
  NCHW -> Div 255 [-> Cast fp16]`` after the input's ``Cast fp32`` (->
  ``unpack_rgb8``). The uint8 Casts stay native: TensorRT plugin tensors cannot be
  UINT8 (``PluginTensorDesc`` does not support it; its ONNX parser takes UINT8 only
  as network input or output).
- ``gaussian``: ``RandomNormalLike -> [Mul t] -> [Cast]`` feeding the latent
  ``Concat`` (-> ``gaussian_z``, seeded).

The graphs stay loadable by ``onnx`` (the domain is declared) but only
TensorRT, or :mod:`irn_trt.plugins.onnx_reference`, can run them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from irn_trt.runtime.errors import IRNError
from onnx import TensorProto, helper, numpy_helper

from .geometry import MAX_HAAR_LEVELS
from .reference import haar_signs
from .trt_plugins import PLUGIN_NAMESPACE

__all__ = [
    "PLUGIN_FAMILIES",
    "PluginRewriteError",
    "parse_plugin_list",
    "apply_plugins",
    "plugin_ops",
]

#: What ``--plugins`` accepts, and the ops each family introduces.
PLUGIN_FAMILIES: dict[str, tuple[str, ...]] = {
    "haar": ("haar_down", "haar_up"),
    "pack": ("pack_rgb8", "unpack_rgb8"),
    "gaussian": ("gaussian_z",),
}
PLUGIN_OPSET_VERSION = 1


class PluginRewriteError(IRNError):
    """A requested plugin cannot be applied to this graph (one line, as every IRNError)."""


def parse_plugin_list(text: str) -> frozenset[str]:
    """``"haar,pack"`` -> {"haar", "pack"}; unknown or empty names raise PluginRewriteError."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = sorted(set(names) - set(PLUGIN_FAMILIES))
    if unknown or not names:
        raise PluginRewriteError(
            f"unknown plugin(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(PLUGIN_FAMILIES)}"
        )
    return frozenset(names)


def plugin_ops(model: onnx.ModelProto) -> tuple[str, ...]:
    """Sorted ``irn::<op>`` ids of the plugin nodes in ``model`` (for the manifest)."""
    ops = {n.op_type for n in model.graph.node if n.domain == PLUGIN_NAMESPACE}
    return tuple(f"{PLUGIN_NAMESPACE}::{op}" for op in sorted(ops))


# ---------------------------------------------------------------------------------


@dataclass
class _Graph:
    """Producer/consumer/constant lookups over a GraphProto (rebuilt after each rewrite)."""

    model: onnx.ModelProto

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        g = self.model.graph
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.inits = {t.name: t for t in g.initializer}
        self.outputs = {o.name for o in g.output}

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def sole_consumer(self, name: str) -> onnx.NodeProto | None:
        """The one node reading ``name``, if exactly one does and it is not a graph output."""
        users = self.consumers.get(name, [])
        if len(users) == 1 and name not in self.outputs:
            return users[0]
        return None


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _scalar(value: np.ndarray | None) -> float | None:
    if value is None or value.size != 1:
        return None
    return float(value.reshape(()))


def _plugin_node(op: str, inputs: list[str], outputs: list[str], **attrs: object) -> onnx.NodeProto:
    return helper.make_node(
        op,
        inputs,
        outputs,
        name=f"{PLUGIN_NAMESPACE}_{op}_{outputs[0]}".replace("/", "_"),
        domain=PLUGIN_NAMESPACE,
        plugin_namespace=PLUGIN_NAMESPACE,
        aot=1,
        **attrs,
    )


def _replace(g: _Graph, old: list[onnx.NodeProto], new: onnx.NodeProto) -> None:
    """Put ``new`` where the first of ``old`` was; drop ``old``."""
    nodes = g.model.graph.node
    ids = {id(n) for n in old}
    index = min(i for i, n in enumerate(nodes) if id(n) in ids)
    keep = [n for n in nodes if id(n) not in ids]
    keep.insert(index, new)
    del nodes[:]
    nodes.extend(keep)
    g.refresh()


# ---- haar ---------------------------------------------------------------------------


def _haar_weight(channels: int) -> np.ndarray:
    """(4C, C, 2, 2) dense Haar filters: output k*C + c sees channel c through filter k."""
    signs = haar_signs(1).astype(np.float64)  # (4, 2, 2)
    w = np.zeros((4 * channels, channels, 2, 2))
    for k in range(4):
        for c in range(channels):
            w[k * channels + c, c] = signs[k]
    return w


def _is_haar(g: _Graph, node: onnx.NodeProto, op: str, gain: float) -> bool:
    if node.op_type != op or len(node.input) < 2:
        return False
    w = g.const(node.input[1])
    if w is None or w.ndim != 4 or w.shape[2:] != (2, 2) or w.shape[0] != 4 * w.shape[1]:
        return False
    if len(node.input) > 2 and node.input[2]:
        bias = g.const(node.input[2])
        if bias is None or np.any(bias):
            return False
    if list(_attr(node, "strides", [1, 1])) != [2, 2] or int(_attr(node, "group", 1)) != 1:
        return False
    if any(_attr(node, "pads", [0, 0, 0, 0])) or any(_attr(node, "output_padding", [0, 0])):
        return False
    if list(_attr(node, "dilations", [1, 1])) != [1, 1]:
        return False
    if _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return False
    return np.array_equal(w.astype(np.float64), _haar_weight(w.shape[1]) * gain)


def _rewrite_haar(g: _Graph) -> int:
    """Replace Haar Conv / ConvTranspose chains; returns the number of plugin nodes made."""
    made = 0
    for op, plugin, gain in (("Conv", "haar_down", 0.25), ("ConvTranspose", "haar_up", 1.0)):
        while True:
            start = next(
                (
                    n
                    for n in g.model.graph.node
                    if _is_haar(g, n, op, gain)
                    # start of a chain: not fed by another Haar of the same kind
                    and not (
                        (p := g.producer.get(n.input[0])) is not None
                        and _is_haar(g, p, op, gain)
                        and g.sole_consumer(p.output[0]) is n
                    )
                ),
                None,
            )
            if start is None:
                break
            chain = [start]
            while len(chain) < MAX_HAAR_LEVELS:
                nxt = g.sole_consumer(chain[-1].output[0])
                if nxt is None or not _is_haar(g, nxt, op, gain):
                    break
                chain.append(nxt)
            node = _plugin_node(plugin, [start.input[0]], [chain[-1].output[0]], levels=len(chain))
            _replace(g, chain, node)
            made += 1
    return made


# ---- pack / unpack --------------------------------------------------------------------


def _next(g: _Graph, node: onnx.NodeProto, op: str) -> onnx.NodeProto | None:
    nxt = g.sole_consumer(node.output[0])
    return nxt if nxt is not None and nxt.op_type == op else None


def _is_const_input(g: _Graph, node: onnx.NodeProto, data: str, value: float) -> bool:
    """``node`` is binary with ``data`` as one operand and the scalar ``value`` as the other."""
    others = [i for i in node.input if i != data]
    return len(node.input) == 2 and len(others) == 1 and _scalar(g.const(others[0])) == value


def _rewrite_pack(g: _Graph) -> int:
    made = 0
    for cast in [n for n in g.model.graph.node if n.op_type == "Cast"]:
        if int(_attr(cast, "to", 0)) != TensorProto.UINT8:
            continue
        tr = g.producer.get(cast.input[0])
        if tr is None or tr.op_type != "Transpose" or list(_attr(tr, "perm", [])) != [0, 2, 3, 1]:
            continue
        rnd = g.producer.get(tr.input[0])
        mul = g.producer.get(rnd.input[0]) if rnd is not None else None
        clip = g.producer.get(mul.input[0] if mul is not None else "")
        if mul is not None and clip is None:
            clip = g.producer.get(mul.input[1])
        if rnd is None or rnd.op_type != "Round" or mul is None or mul.op_type != "Mul":
            continue
        if clip is None or clip.op_type != "Clip":
            continue
        if not _is_const_input(g, mul, clip.output[0], 255.0):
            continue
        lo = _scalar(g.const(clip.input[1])) if len(clip.input) > 1 else None
        hi = _scalar(g.const(clip.input[2])) if len(clip.input) > 2 else None
        if (lo, hi) != (0.0, 1.0):
            continue
        chain = [clip, mul, rnd, tr]  # the Cast to uint8 stays: no UINT8 plugin outputs
        if g.sole_consumer(tr.output[0]) is not cast or any(
            g.sole_consumer(a.output[0]) is not b for a, b in zip(chain, chain[1:], strict=False)
        ):
            continue
        source = clip.input[0]
        widen = g.producer.get(source)
        if (
            widen is not None
            and widen.op_type == "Cast"
            and int(_attr(widen, "to", 0)) == TensorProto.FLOAT
            and g.sole_consumer(source) is clip
        ):
            chain.insert(0, widen)  # the kernel widens FP16 to FP32 itself: exact
            source = widen.input[0]
        _replace(g, chain, _plugin_node("pack_rgb8", [source], [tr.output[0]]))
        made += 1
    return made


def _rewrite_unpack(g: _Graph) -> int:
    made = 0
    for graph_input in g.model.graph.input:
        if graph_input.type.tensor_type.elem_type != TensorProto.UINT8:
            continue
        cast = g.sole_consumer(graph_input.name)
        if cast is None or cast.op_type != "Cast":
            continue
        if int(_attr(cast, "to", 0)) != TensorProto.FLOAT:
            continue
        tr = _next(g, cast, "Transpose")
        if tr is None or list(_attr(tr, "perm", [])) != [0, 3, 1, 2]:
            continue
        div = _next(g, tr, "Div")
        if div is None or div.input[0] != tr.output[0]:
            continue
        if _scalar(g.const(div.input[1])) != 255.0:
            continue
        chain = [tr, div]  # the Cast from uint8 stays: no UINT8 plugin inputs
        fp16 = 0
        narrow = _next(g, div, "Cast")
        if narrow is not None and int(_attr(narrow, "to", 0)) == TensorProto.FLOAT16:
            chain.append(narrow)  # divide in FP32, round once to FP16: what the kernel does
            fp16 = 1
        node = _plugin_node("unpack_rgb8", [cast.output[0]], [chain[-1].output[0]], fp16=fp16)
        _replace(g, chain, node)
        made += 1
    return made


# ---- gaussian -------------------------------------------------------------------------


def _latent_channels(g: _Graph, rnl: onnx.NodeProto) -> int:
    """Channel count of the RandomNormalLike template: (N, Z, h, w) built by a Concat."""
    template = g.producer.get(rnl.input[0])
    if template is None or template.op_type != "ConstantOfShape":
        raise PluginRewriteError("gaussian: RandomNormalLike template is not a ConstantOfShape")
    shape = g.producer.get(template.input[0])
    if shape is None or shape.op_type != "Concat" or len(shape.input) != 4:
        raise PluginRewriteError("gaussian: latent shape is not an (N, Z, h, w) Concat")
    channels = g.const(shape.input[1])
    if channels is None or channels.size != 1:
        raise PluginRewriteError("gaussian: latent channel count is not a constant")
    return int(channels.reshape(()))


def _rewrite_gaussian(g: _Graph, seed: int) -> int:
    made = 0
    for rnl in [n for n in g.model.graph.node if n.op_type == "RandomNormalLike"]:
        if float(_attr(rnl, "mean", 0.0)) != 0.0:
            raise PluginRewriteError("gaussian: RandomNormalLike with a non-zero mean")
        scale = np.float32(_attr(rnl, "scale", 1.0))
        chain = [rnl]
        mul = _next(g, rnl, "Mul")
        if mul is not None:
            t = _scalar(g.const(next(i for i in mul.input if i != rnl.output[0])))
            if t is None:
                raise PluginRewriteError("gaussian: temperature is not a constant scalar")
            scale = np.float32(scale * np.float32(t))
            chain.append(mul)
        cast = _next(g, chain[-1], "Cast")
        if cast is not None:
            chain.append(cast)
        concat = g.sole_consumer(chain[-1].output[0])
        if (
            concat is None
            or concat.op_type != "Concat"
            or list(concat.input[1:]) != [chain[-1].output[0]]
        ):
            raise PluginRewriteError("gaussian: noise does not feed the latent Concat(y, z)")
        node = _plugin_node(
            "gaussian_z",
            [concat.input[0]],
            [chain[-1].output[0]],
            channels=_latent_channels(g, rnl),
            seed=int(seed),
            scale=float(scale),
        )
        _replace(g, chain, node)
        made += 1
    return made


# ---- driver ---------------------------------------------------------------------------


def _prune(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nobody reads, then unused initializers and value_info."""
    g = model.graph
    needed = {o.name for o in g.output}
    keep: list[onnx.NodeProto] = []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    produced = {o for n in g.node for o in n.output}
    infos = [v for v in g.value_info if v.name in produced]
    del g.value_info[:]
    g.value_info.extend(infos)


def apply_plugins(model: onnx.ModelProto, plugins: Iterable[str], seed: int = 0) -> onnx.ModelProto:
    """A copy of ``model`` with the requested plugin families (``haar``/``pack``/``gaussian``).

    Raises :class:`PluginRewriteError` when a requested family finds nothing to
    replace (e.g. ``pack`` on a float-io graph, ``gaussian`` without ``--z
    gaussian``), so a plugin request never silently does nothing. ``seed``
    (0 <= seed < 2^31) is the ``gaussian_z`` seed baked into the engine.
    """
    wanted = set(plugins)
    unknown = wanted - set(PLUGIN_FAMILIES)
    if unknown:
        raise PluginRewriteError(f"unknown plugin(s): {', '.join(sorted(unknown))}")
    if not 0 <= seed < 2**31:
        raise PluginRewriteError(f"gaussian seed must be in [0, 2^31), got {seed}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = _Graph(out)
    if "haar" in wanted and _rewrite_haar(g) == 0:
        raise PluginRewriteError("haar: no Haar Conv/ConvTranspose found in the graph")
    if "pack" in wanted and _rewrite_pack(g) + _rewrite_unpack(g) == 0:
        raise PluginRewriteError("pack: no uint8 pack/unpack found (it needs --io uint8)")
    if "gaussian" in wanted and _rewrite_gaussian(g, seed) == 0:
        raise PluginRewriteError("gaussian: no RandomNormalLike found (it needs --z gaussian)")
    _prune(out)
    if not any(o.domain == PLUGIN_NAMESPACE for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(PLUGIN_NAMESPACE, PLUGIN_OPSET_VERSION))
    return out
