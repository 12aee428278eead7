"""What an irn-trt LR PNG carries in its text chunks, so ``up`` can undo ``down``.

The same keys travel in the other LR formats as an XMP packet (``runtime/codecs.py``:
JPEG, WebP, JPEG XL), so they all read back into ``ImageData.text`` alike.

``down`` pads HR sizes that are not multiples of the scale; the original size
is stored here and ``up`` crops back to it. The model name and checkpoint hash
let ``up`` refuse an LR made by a different model (IRN's LR is only invertible
by the network that made it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import IRNError
from .manifest import ModelManifest
from .scales import format_scale, parse_scale
from .scales import lr_size as scaled_lr_size

__all__ = ["LRMetadata", "KEY_PREFIX"]

KEY_PREFIX = "irn-trt:"
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_KINDS = ("rgb", "gray", "palette")
#: Where an LR keeps the extra plane of its model (IRN-A's alpha code): nowhere (plain
#: IRN), a private PNG chunk (the default: viewers show the picture), or the PNG's alpha
#: channel (the paper's form: viewers show it half transparent).
CODE_STORAGES = ("none", "chunk", "png-alpha")


@dataclass(frozen=True)
class LRMetadata:
    model: str
    checkpoint_sha256: str
    scale: int
    original_size: tuple[int, int]  # (width, height) of the HR input
    kind: str = "rgb"  # colour kind of the HR input, restored by ``up``
    alpha: bool = False  # the LR's alpha channel was resized bicubically, not by IRN
    # The scale the user asked for when the model's integer ``scale`` ran with a bicubic
    # resize around it (``runtime/scales.py``); None: the model's own scale.
    requested_scale: float | None = None
    code: str = "none"  # one of CODE_STORAGES

    @classmethod
    def for_model(
        cls,
        manifest: ModelManifest,
        original_size: tuple[int, int],
        kind: str,
        alpha: bool,
        requested_scale: float | None = None,
        code: str = "none",
    ) -> LRMetadata:
        if requested_scale is not None and requested_scale == manifest.scale:
            requested_scale = None
        return cls(
            manifest.model,
            manifest.checkpoint_sha256,
            manifest.scale,
            original_size,
            kind,
            alpha,
            requested_scale,
            code,
        )

    @property
    def effective_scale(self) -> float:
        """HR size / LR size: the requested scale, else the model's."""
        return self.requested_scale if self.requested_scale is not None else float(self.scale)

    def to_text(self) -> dict[str, str]:
        w, h = self.original_size
        return (
            {
                f"{KEY_PREFIX}model": self.model,
                f"{KEY_PREFIX}checkpoint-sha256": self.checkpoint_sha256,
                f"{KEY_PREFIX}scale": str(self.scale),
                f"{KEY_PREFIX}original-size": f"{w}x{h}",
                f"{KEY_PREFIX}kind": self.kind,
                f"{KEY_PREFIX}alpha": "bicubic" if self.alpha else "none",
            }
            | (
                {f"{KEY_PREFIX}requested-scale": format_scale(self.requested_scale)}
                if self.requested_scale is not None
                else {}
            )
            | ({f"{KEY_PREFIX}code": self.code} if self.code != "none" else {})
        )

    @classmethod
    def from_text(cls, text: dict[str, str]) -> LRMetadata | None:
        """Parse the chunks; ``None`` if the image has no irn-trt metadata at all."""
        ours = {k[len(KEY_PREFIX) :]: v for k, v in text.items() if k.startswith(KEY_PREFIX)}
        if not ours:
            return None
        try:
            m = _SIZE.match(ours["original-size"])
            if m is None:
                raise ValueError(f"original-size {ours['original-size']!r}")
            kind = ours.get("kind", "rgb")
            if kind not in _KINDS:
                raise ValueError(f"kind {kind!r}")
            code = ours.get("code", "none")
            if code not in CODE_STORAGES:
                raise ValueError(f"code {code!r}")
            meta = cls(
                model=ours["model"],
                checkpoint_sha256=ours["checkpoint-sha256"],
                scale=int(ours["scale"]),
                original_size=(int(m.group(1)), int(m.group(2))),
                kind=kind,
                alpha=ours.get("alpha", "none") != "none",
                requested_scale=(
                    parse_scale(ours["requested-scale"]) if "requested-scale" in ours else None
                ),
                code=code,
            )
        except (KeyError, ValueError, IRNError) as exc:
            raise IRNError(f"damaged irn-trt metadata ({exc})") from None
        if meta.scale < 1 or min(meta.original_size) < 1 or meta.effective_scale > meta.scale:
            raise IRNError("damaged irn-trt metadata (scale/size out of range)")
        return meta

    def check_model(self, manifest: ModelManifest) -> None:
        """Refuse an LR made by another model: IRN's LR only inverts with its own network."""
        if (self.model, self.checkpoint_sha256, self.scale) != (
            manifest.model,
            manifest.checkpoint_sha256,
            manifest.scale,
        ):
            raise IRNError(
                f"LR downscaled by {self.model} x{self.scale} (checkpoint "
                f"{self.checkpoint_sha256[:12]}), but the model directory holds {manifest.model} "
                f"x{manifest.scale} (checkpoint {manifest.checkpoint_sha256[:12]}); "
                f"use the model that made it (--model / --model-dir)"
            )

    def check_lr_size(self, lr_size: tuple[int, int]) -> None:
        """The LR must be the padded original divided by the scale."""
        w, h = self.original_size
        want = scaled_lr_size(self.original_size, self.effective_scale)
        if tuple(lr_size) != want:
            raise IRNError(
                f"LR is {lr_size[0]}x{lr_size[1]} but its metadata says it was made from "
                f"{w}x{h} at x{format_scale(self.effective_scale)} (expected "
                f"{want[0]}x{want[1]}); was it resized?"
            )
