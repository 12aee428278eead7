"""SHA-256 of large files (ONNX graphs), remembered across runs while a file is unchanged.

Every model load checks its graph files against the manifest's SHA-256 (two 17 MB files
for IRN x4 FP32, about 0.1 s a run). :func:`cached_file_sha256` keeps each digest in
``$XDG_CACHE_HOME/irn-trt/hashes/sha256.json`` under the file's resolved path, with the
file's size, mtime_ns, ctime_ns, inode and device: any write or replacement changes the
ctime or the inode (ctime cannot be set back by a user), so a changed file is hashed
again. A file changed less than :data:`RACY_S` before it was hashed is not remembered:
timestamps have a granularity, and a second change within it could leave them equal
(git's "racy" index entries). The cache is best effort: a missing, unreadable or
unwritable file means hashing as before, never an error.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .atomic import write_text_atomic
from .engine_cache import user_cache_dir
from .manifest import file_sha256

__all__ = ["FORMAT", "cached_file_sha256", "hash_cache_path"]

FORMAT = "irn-trt-file-hashes/1"
#: Files remembered (the most recently hashed); a few models' graphs, a small JSON file.
MAX_ENTRIES = 64
#: A file whose mtime or ctime is this recent when hashed is hashed again next time.
RACY_S = 2.0

# This process's digests (same key and rule), so a graph checked by the Rescaler and
# then by its backend is looked up once.
_memo: dict[str, tuple[list[int], str]] = {}


def hash_cache_path() -> Path:
    """Where the digests are kept: ``$XDG_CACHE_HOME/irn-trt/hashes/sha256.json``."""
    return user_cache_dir("hashes") / "sha256.json"


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _load(path: Path) -> dict[str, dict]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return {}
    files = doc.get("files")
    return files if isinstance(files, dict) else {}


def _valid_sha(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def cached_file_sha256(path: str | os.PathLike[str]) -> str:
    """The file's SHA-256 (hex), from the cache when the file is unchanged, else computed.

    Raises ``OSError`` like :func:`irn_trt.runtime.manifest.file_sha256` for a file that
    cannot be read.
    """
    path = Path(path).resolve()
    name = str(path)
    st = path.stat()
    key = _stat_key(st)
    memo = _memo.get(name)
    if memo is not None and memo[0] == key:
        return memo[1]
    store = hash_cache_path()
    files = _load(store)
    entry = files.get(name)
    if isinstance(entry, dict) and entry.get("stat") == key and _valid_sha(entry.get("sha256")):
        _memo[name] = (key, entry["sha256"])
        return entry["sha256"]
    started = time.time_ns()
    sha = file_sha256(path)
    settled = started - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_S * 1e9
    if settled and _stat_key(path.stat()) == key:  # and unchanged while it was read
        _memo[name] = (key, sha)
        files.pop(name, None)
        files[name] = {"stat": key, "sha256": sha}  # newest last; the oldest go first
        for old in list(files)[: max(0, len(files) - MAX_ENTRIES)]:
            del files[old]
        try:
            store.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_text_atomic(store, json.dumps({"format": FORMAT, "files": files}) + "\n")
        except OSError:
            pass  # read-only home, say: hash every time rather than fail
    return sha
