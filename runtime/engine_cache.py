"""On-disk cache of serialized TensorRT engines (plans), safe against wrong or foreign entries.

Layout under the cache root::

    irn-trt-engine-cache.json            marker: written by us when we created the root
    <model>-<direction>-<precision>-<digest16>/
        engine.plan                      the serialized engine
        entry.json                       the full key + the plan's SHA-256 and size
    timing/<trt>-<gpu>-sm<cc>.cache      TensorRT timing caches (speed up later builds)
    ort-trt/                             the ort-trt backend's cache (ONNX Runtime's files),
                                         with its own marker

The entry's directory name is a digest of the whole :class:`EngineKey` (graph SHA-256,
TensorRT version, GPU name, compute capability, precision, profile, builder options),
and ``entry.json`` repeats the key in full: a lookup loads a plan only when the stored
key equals the wanted one and the plan's hash matches, so a hit never rebuilds and a
mismatch never loads a wrong engine. A corrupt entry (unreadable metadata, wrong key,
missing or altered plan) is reported in one line and rebuilt. Engines are executable
artefacts: before returning bytes from a root we did not create (no marker), or one
owned by another user or writable by others, a warning names the problem.
Pure Python (no tensorrt): tested on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .atomic import write_bytes_atomic, write_text_atomic
from .errors import IRNError

__all__ = [
    "CACHE_FORMAT",
    "MARKER_FILE",
    "EngineKey",
    "CorruptCacheEntryError",
    "EngineCache",
    "default_cache_dir",
    "user_cache_dir",
    "stderr_warning",
    "plugin_fingerprint_for",
]

CACHE_FORMAT = "irn-trt-engine-cache/1"
MARKER_FILE = "irn-trt-engine-cache.json"
PLAN_FILE = "engine.plan"
ENTRY_FILE = "entry.json"
#: Sub-caches irn-trt keeps below a cache root (each with its own marker).
SUBCACHES = ("ort-trt",)

Warn = Callable[[str], None]


def stderr_warning(message: str) -> None:
    """Default warning sink: one line on stderr."""
    print(f"irn-trt: warning: {message}", file=sys.stderr)


def user_cache_dir(kind: str) -> Path:
    """``$XDG_CACHE_HOME/irn-trt/<kind>`` (``~/.cache/irn-trt/<kind>``): per user, not per model.

    Model directories may be read-only or shared; compiled engines are per machine and
    per user. ``kind`` is ``engines`` (TensorRT plans) or ``openvino`` (compiled models).
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "irn-trt" / kind


def default_cache_dir() -> Path:
    """The TensorRT engine cache: ``$XDG_CACHE_HOME/irn-trt/engines``."""
    return user_cache_dir("engines")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on; two keys are equal iff an engine is reusable."""

    model: str
    direction: str
    precision: str  # the ONNX graph's precision: "fp16" | "fp32"
    graph_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str  # "8.9"
    profile: str  # trt_plan.profile_key(...)
    workspace_bytes: int
    opt_level: int
    hardware_compat: str = "none"
    # irn_trt.plugins.fingerprint() for graphs with TensorRT plugins (kernel sources, AOT
    # glue, Triton version and the driver that picks the PTX version: baked into the
    # engine); empty for native graphs.
    plugin_fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["plugin_fingerprint"]:
            del d["plugin_fingerprint"]  # native keys (and their cached entries) as before
        return d

    def digest(self) -> str:
        canon = json.dumps({"format": CACHE_FORMAT, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()

    def entry_name(self) -> str:
        return f"{_slug(self.model)}-{self.direction}-{self.precision}-{self.digest()[:16]}"


def plugin_fingerprint_for(plugins: Sequence[str], driver_version: int = 0) -> str:
    """The ``EngineKey.plugin_fingerprint`` of a graph using ``plugins`` ("" if native) on a
    machine whose CUDA driver reports ``driver_version`` (the kernels' PTX ISA follows it)."""
    if not any(plugins):
        return ""
    from irn_trt.plugins import fingerprint

    return fingerprint(driver_version=driver_version)


class CorruptCacheEntryError(IRNError):
    """A cache entry exists but cannot be trusted to be the engine for its key."""


class EngineCache:
    """An engine cache rooted at ``root`` (created on first store)."""

    def __init__(self, root: str | os.PathLike[str], warn: Warn = stderr_warning) -> None:
        self.root = Path(root)
        self.warn = warn

    # -- paths -------------------------------------------------------------------------
    def entry_dir(self, key: EngineKey) -> Path:
        return self.root / key.entry_name()

    def plan_path(self, key: EngineKey) -> Path:
        return self.entry_dir(key) / PLAN_FILE

    def timing_cache_path(self, trt_version: str, gpu_name: str, compute_capability: str) -> Path:
        name = f"{_slug(trt_version)}-{_slug(gpu_name)}-sm{_slug(compute_capability)}.cache"
        return self.root / "timing" / name

    # -- trust -------------------------------------------------------------------------
    def ensure_root(self) -> None:
        """Create the root (mode 0700) and our marker, unless it already exists.

        A root we would have created ourselves gets the marker too: an empty one, or one
        holding only irn-trt's own marked sub-caches (``ort-trt/``, which older versions
        created without marking the root above it, so every lookup warned).
        """
        if self.root.exists() and not self.root.is_dir():
            raise IRNError(f"engine cache {self.root} exists and is not a directory")
        if not self.root.exists():
            self.root.mkdir(parents=True, mode=0o700)
        if (self.root / MARKER_FILE).exists() or not self._holds_only_our_subcaches():
            return
        marker = {"format": CACHE_FORMAT, "writer": "irn-trt", "uid": _uid()}
        write_text_atomic(self.root / MARKER_FILE, json.dumps(marker, indent=2) + "\n")
        _private(self.root / MARKER_FILE)

    def _holds_only_our_subcaches(self) -> bool:
        children = list(self.root.iterdir())
        if not children:
            return True  # empty: as good as created now
        if _ownership_problems(self.root):
            return False
        for child in children:
            if child.name not in SUBCACHES or not child.is_dir() or child.is_symlink():
                return False
            if EngineCache(child, warn=self.warn).trust_problems():
                return False
        return True

    def trust_problems(self, key: EngineKey | None = None) -> list[str]:
        """Reasons not to trust plans under this root (empty list: it is ours and private)."""
        problems: list[str] = []
        marker = self.root / MARKER_FILE
        try:
            doc = json.loads(marker.read_text())
            if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT:
                problems.append(f"engine cache {self.root} has a marker irn-trt did not write")
        except FileNotFoundError:
            problems.append(f"engine cache {self.root} was not created by irn-trt (no marker)")
        except (OSError, ValueError):
            problems.append(f"engine cache {self.root} has an unreadable marker")
        paths = [self.root]
        if key is not None:
            paths += [self.entry_dir(key), self.plan_path(key)]
        for path in paths:
            problems += _ownership_problems(path)
        return problems

    # -- lookup / store ----------------------------------------------------------------
    def lookup(self, key: EngineKey) -> bytes | None:
        """The cached plan for ``key``: None on a miss, CorruptCacheEntryError if untrustworthy.

        Warns (through ``warn``) before returning a plan from a root we did not write.
        """
        entry = self.entry_dir(key)
        if not entry.exists():
            return None

        def corrupt(why: str) -> CorruptCacheEntryError:
            return CorruptCacheEntryError(f"engine cache entry {entry}: {why}")

        try:
            meta = json.loads((entry / ENTRY_FILE).read_text())
        except FileNotFoundError:
            raise corrupt(f"{ENTRY_FILE} missing") from None
        except (OSError, ValueError) as exc:
            raise corrupt(f"unreadable {ENTRY_FILE} ({type(exc).__name__})") from None
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
            raise corrupt("not an irn-trt entry")
        if meta.get("key") != key.to_dict():
            raise corrupt("its stored key differs from the wanted one")
        try:
            plan = (entry / PLAN_FILE).read_bytes()
        except OSError:
            raise corrupt(f"{PLAN_FILE} missing") from None
        if len(plan) != meta.get("plan_bytes") or _sha256(plan) != meta.get("plan_sha256"):
            raise corrupt(f"{PLAN_FILE} does not match its recorded hash")
        for problem in self.trust_problems(key):
            self.warn(f"{problem}; loading {entry.name} anyway (engines are executable code)")
        return plan

    def store(self, key: EngineKey, plan: bytes) -> Path:
        """Write ``plan`` for ``key`` atomically (plan first, metadata last = commit)."""
        if not plan:
            raise IRNError("refusing to cache an empty engine plan")
        self.ensure_root()
        entry = self.entry_dir(key)
        entry.mkdir(mode=0o700, exist_ok=True)
        write_bytes_atomic(entry / PLAN_FILE, plan)
        _private(entry / PLAN_FILE)
        meta = {
            "format": CACHE_FORMAT,
            "key": key.to_dict(),
            "plan_sha256": _sha256(plan),
            "plan_bytes": len(plan),
        }
        write_text_atomic(entry / ENTRY_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        _private(entry / ENTRY_FILE)
        return entry / PLAN_FILE

    def remove(self, key: EngineKey) -> None:
        shutil.rmtree(self.entry_dir(key), ignore_errors=True)

    def get_or_build(
        self, key: EngineKey, build: Callable[[], bytes], rebuild: bool = False
    ) -> tuple[bytes, bool]:
        """(plan, built): a valid cached plan, else ``build()``'s plan, stored.

        A corrupt entry is reported through ``warn`` and rebuilt, never loaded.
        """
        if not rebuild:
            try:
                plan = self.lookup(key)
            except CorruptCacheEntryError as exc:
                self.warn(f"{exc}; rebuilding it")
                self.remove(key)
                plan = None
            if plan is not None:
                return plan, False
        plan = build()
        self.store(key, plan)
        return plan, True


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _private(path: Path) -> None:
    """Owner-only permissions whatever the umask: engines are code; others must not swap them."""
    if os.name == "posix":
        path.chmod(0o600)


def _uid() -> int | None:
    return os.getuid() if hasattr(os, "getuid") else None


def _ownership_problems(path: Path) -> list[str]:
    """Owned by someone else, or writable by group/others (POSIX only)."""
    uid = _uid()
    if uid is None:
        return []
    try:
        st = path.stat()
    except OSError:
        return []
    problems = []
    if st.st_uid != uid:
        problems.append(f"{path} is owned by uid {st.st_uid}, not by you (uid {uid})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problems.append(f"{path} is writable by other users")
    return problems
