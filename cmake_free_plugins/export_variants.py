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

__all__ = ["plugin_file_name", "families_for", "add_plugin_variants"]


def plugin_file_name(native_file: str) -> str:
    """``down.fp16.onnx`` -> ``down.fp16.plugins.onnx``."""
    stem = native_file[: -len(".onnx")] if native_file.endswith(".onnx") else native_file
    return f"{stem}.plugins.onnx"


def families_for(manifest: ModelManifest, direction: str, plugins: Iterable[str]) -> set[str]:
    """The requested families that apply to one direction; one-line errors for impossible ones.

    ``gaussian`` samples z, so it only concerns the up graph and needs ``--z gaussian``;
    ``pack`` converts uint8 images, so it needs ``--io uint8``.
    """
    wanted = set(plugins)
    if "gaussian" in wanted and manifest.z_policy != "gaussian":
        raise PluginRewriteError(
            f"--plugins gaussian needs --z gaussian (this export uses --z {manifest.z_policy})"
        )
    if "pack" in wanted and manifest.io != "uint8":
        raise PluginRewriteError(
            f"--plugins pack needs --io uint8 (this export uses {manifest.io})"
        )
    if direction == "down":
        wanted.discard("gaussian")
    return wanted


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
