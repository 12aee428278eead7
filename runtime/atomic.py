"""Atomic file writes: a reader never sees a half-written output. And the one JSON text
form of every report (strict JSON: parsers other than Python's reject NaN / Infinity)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "json_text",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; restore at once
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it into place only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    # mkstemp creates 0600; outputs get the usual permissions (0666 minus the umask).
    os.chmod(tmp, 0o666 & ~_umask())
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_text(doc: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """``doc`` as strict JSON text ending in a newline. A non-finite float (the PSNR of two
    identical images is +inf) becomes null: Python would write ``Infinity``, which jq's
    older releases, JavaScript and most other parsers reject."""
    return json.dumps(_finite(doc), indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n"


def write_json_atomic(target: str | os.PathLike[str], doc: Any, *, sort_keys: bool = False) -> None:
    """``doc`` written atomically to ``target`` as indented strict JSON (see json_text)."""
    write_text_atomic(target, json_text(doc, sort_keys=sort_keys))
