"""Write the plugin variants of a model directory's graphs (``irn-export --plugins``).

For every native graph ``<direction>.<precision>.onnx`` of the manifest, writes
``<direction>.<precision>.plugins.onnx`` with the requested plugin families,
and adds it to the manifest as a :class:`GraphInfo` whose ``plugins`` lists
the ``irn::*`` ops it needs. The native graphs and their entries stay as they
are: they remain the default, and the only graphs ONNX Runtime can run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import onnx
from irn_trt.runtime.atomic import write_bytes_atomic
from irn_trt.runtime.manifest import GraphInfo, ModelManifest, file_sha256

from .onnx_rewrite import PluginRewriteError, apply_plugins, plugin_ops

__all__ = ["plugin_file_name", "check_plugin_request", "families_for", "add_plugin_variants"]


def plugin_file_name(native_file: str) -> str:
    """``down.fp16.onnx`` -> ``down.fp16.plugins.onnx``."""
    stem = native_file[: -len(".onnx")] if native_file.endswith(".onnx") else native_file
    return f"{stem}.plugins.onnx"


def check_plugin_request(
    plugins: Iterable[str], io: str, z_policy: str, has_haar: bool = True
) -> None:
    """One-line errors for plugin requests an export cannot satisfy (checked before exporting).

    ``gaussian`` samples z, so it needs ``--z gaussian``; ``pack`` converts uint8
    images, so it needs ``--io uint8``; ``haar`` needs a model with Haar levels
    (IRN_LD x3 has none).
    """
    wanted = set(plugins)
    if "gaussian" in wanted and z_policy != "gaussian":
        raise PluginRewriteError(
            f"--plugins gaussian needs --z gaussian (this export uses --z {z_policy})"
        )
    if "pack" in wanted and io != "uint8":
        raise PluginRewriteError(f"--plugins pack needs --io uint8 (this export uses {io})")
    if "haar" in wanted and not has_haar:
        raise PluginRewriteError("--plugins haar needs a model with Haar levels (not IRN_LD x3)")


def families_for(manifest: ModelManifest, direction: str, plugins: Iterable[str]) -> set[str]:
    """The requested families that apply to one direction (``gaussian``: up graphs only)."""
    wanted = set(plugins)
    has_haar = _has_haar(manifest.architecture)
    check_plugin_request(wanted, manifest.io, manifest.z_policy, has_haar=has_haar)
    if direction == "down":
        wanted.discard("gaussian")
    return wanted


def _has_haar(architecture: dict) -> bool:
    stages = architecture.get("stages")
    if not stages:  # unknown architecture: let the graph rewrite decide
        return True
    return any(st.get("downsampler") == "haar" for st in stages)


def add_plugin_variants(
    model_dir: str | Path, manifest: ModelManifest, plugins: Iterable[str], seed: int = 0
) -> ModelManifest:
    """Write the plugin graph beside each native graph; return the manifest listing both.

    ``seed`` is the ``gaussian_z`` seed baked into the up graphs. The caller
    writes the returned manifest (``write_manifest``).
    """
    model_dir = Path(model_dir)
    requested = frozenset(plugins)
    families_for(manifest, "up", requested)  # impossible requests fail before any file is read
    native = [g for g in manifest.graphs if not g.plugins]
    variants: list[GraphInfo] = []
    for graph in native:
        families = families_for(manifest, graph.direction, requested)
        if not families:
            continue
        model = onnx.load(model_dir / graph.file)
        try:
            rewritten = apply_plugins(model, families, seed=seed)
        except PluginRewriteError as exc:
            raise PluginRewriteError(f"{graph.file}: {exc}") from None
        target = model_dir / plugin_file_name(graph.file)
        write_bytes_atomic(target, rewritten.SerializeToString())
        variants.append(
            dataclasses.replace(
                graph,
                file=target.name,
                sha256=file_sha256(target),
                plugins=plugin_ops(rewritten),
            )
        )
    return dataclasses.replace(manifest, graphs=(*native, *variants))
