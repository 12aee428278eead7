"""The engine cache: keys, hits that never rebuild, mismatches and corrupt or foreign entries.

Plans here are opaque bytes (the cache never interprets them), so no GPU is needed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from conftest import SAMPLE_ENGINE_KEY as KEY
from irn_trt.runtime.engine_cache import (
    MARKER_FILE,
    CorruptCacheEntryError,
    EngineCache,
    EngineKey,
    default_cache_dir,
)
from irn_trt.runtime.errors import IRNError


class Recorder:
    """Collects warnings and counts builds."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.builds = 0

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def builder(self, plan: bytes):
        def build() -> bytes:
            self.builds += 1
            return plan

        return build


def test_every_key_field_changes_the_digest() -> None:
    digests = {KEY.digest()}
    for f in dataclasses.fields(EngineKey):
        value = getattr(KEY, f.name)
        changed = value + 1 if isinstance(value, int) else value + "'"
        digests.add(dataclasses.replace(KEY, **{f.name: changed}).digest())
    assert len(digests) == 1 + len(dataclasses.fields(EngineKey))
    assert KEY.entry_name().startswith("irn_x4-down-fp16-") and KEY.digest() == KEY.digest()


def test_hit_never_rebuilds(tmp_path: Path) -> None:
    rec = Recorder()
    cache = EngineCache(tmp_path / "engines", warn=rec.warn)
    assert cache.lookup(KEY) is None
    plan, built = cache.get_or_build(KEY, rec.builder(b"PLAN-1"))
    assert (plan, built, rec.builds) == (b"PLAN-1", True, 1)
    plan, built = cache.get_or_build(KEY, rec.builder(b"PLAN-2"))
    assert (plan, built, rec.builds) == (b"PLAN-1", False, 1)
    assert rec.warnings == []  # our own private cache: nothing to warn about
    # --rebuild builds regardless and replaces the entry
    plan, built = cache.get_or_build(KEY, rec.builder(b"PLAN-3"), rebuild=True)
    assert (plan, built, cache.lookup(KEY)) == (b"PLAN-3", True, b"PLAN-3")
    leftovers = [p.name for p in (tmp_path / "engines").rglob("*.tmp")]
    assert leftovers == []  # atomic writes leave no temporary files


def test_a_different_key_never_loads_another_engine(tmp_path: Path) -> None:
    rec = Recorder()
    cache = EngineCache(tmp_path, warn=rec.warn)
    cache.store(KEY, b"H100-ENGINE")
    for field, value in [
        ("gpu_name", "NVIDIA L4"),
        ("compute_capability", "8.9"),
        ("trt_version", "11.4.0.106"),
        ("precision", "fp32"),
        ("profile", "hr:1x4x4x3/2x512x512x3/2x512x512x3"),
        ("graph_sha256", "cd" * 32),
    ]:
        other = dataclasses.replace(KEY, **{field: value})
        assert cache.lookup(other) is None, field
    assert cache.lookup(KEY) == b"H100-ENGINE"


def test_entry_whose_stored_key_differs_is_corrupt(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path, warn=Recorder().warn)
    cache.store(KEY, b"ENGINE")
    meta_path = cache.entry_dir(KEY) / "entry.json"
    meta = json.loads(meta_path.read_text())
    meta["key"]["gpu_name"] = "NVIDIA L4"  # e.g. an entry copied from another machine
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CorruptCacheEntryError, match="stored key differs"):
        cache.lookup(KEY)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda e: (e / "engine.plan").write_bytes(b"ENGINX"), "does not match its recorded hash"),
        (lambda e: (e / "engine.plan").write_bytes(b"ENG"), "does not match its recorded hash"),
        (lambda e: (e / "engine.plan").unlink(), "engine.plan missing"),
        (lambda e: (e / "entry.json").unlink(), "entry.json missing"),
        (lambda e: (e / "entry.json").write_text("{not json"), "unreadable entry.json"),
        (lambda e: (e / "entry.json").write_text("[]"), "not an irn-trt entry"),
    ],
)
def test_corrupt_entries_are_reported_in_one_line_and_rebuilt(
    tmp_path: Path, damage, message: str
) -> None:
    rec = Recorder()
    cache = EngineCache(tmp_path, warn=rec.warn)
    cache.store(KEY, b"ENGINE")
    damage(cache.entry_dir(KEY))
    with pytest.raises(CorruptCacheEntryError, match=message) as info:
        cache.lookup(KEY)
    assert "\n" not in str(info.value)
    plan, built = cache.get_or_build(KEY, rec.builder(b"FRESH"))
    assert (plan, built, rec.builds) == (b"FRESH", True, 1)
    assert len(rec.warnings) == 1 and message in rec.warnings[0] and "rebuilding" in rec.warnings[0]
    assert cache.lookup(KEY) == b"FRESH"


def test_root_created_by_us_has_a_marker_and_is_private(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "new" / "engines")
    cache.store(KEY, b"ENGINE")
    marker = json.loads((cache.root / MARKER_FILE).read_text())
    assert marker["format"] == "irn-trt-engine-cache/1"
    if os.name == "posix":
        assert stat.S_IMODE(cache.root.stat().st_mode) & 0o077 == 0
    assert cache.trust_problems(KEY) == []


def test_foreign_cache_warns_before_an_engine_is_returned(tmp_path: Path) -> None:
    ours = EngineCache(tmp_path / "ours")
    ours.store(KEY, b"ENGINE")
    # Someone hands us a directory of engines: same layout, but not created by irn-trt.
    foreign_root = tmp_path / "downloaded"
    shutil.copytree(ours.entry_dir(KEY), foreign_root / KEY.entry_name())
    rec = Recorder()
    foreign = EngineCache(foreign_root, warn=rec.warn)
    assert foreign.lookup(KEY) == b"ENGINE"
    assert any("not created by irn-trt (no marker)" in w for w in rec.warnings)
    assert all("loading" in w and "executable" in w for w in rec.warnings)
    # Storing into a non-empty foreign root does not bless it with our marker.
    foreign.store(dataclasses.replace(KEY, opt_level=5), b"OTHER")
    assert not (foreign_root / MARKER_FILE).exists()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_cache_writable_by_others_warns(tmp_path: Path) -> None:
    rec = Recorder()
    cache = EngineCache(tmp_path / "engines", warn=rec.warn)
    cache.store(KEY, b"ENGINE")
    cache.root.chmod(0o777)
    try:
        assert cache.lookup(KEY) == b"ENGINE"
    finally:
        cache.root.chmod(0o700)
    assert any("writable by other users" in w for w in rec.warnings)


def test_cache_root_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(IRNError, match="not a directory"):
        EngineCache(tmp_path / "file").store(KEY, b"ENGINE")


def test_timing_cache_path_and_default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = EngineCache(tmp_path)
    path = cache.timing_cache_path("10.13.3.9", "NVIDIA GeForce RTX 4090", "8.9")
    assert path.parent == tmp_path / "timing"
    assert path.name == "10.13.3.9-NVIDIA_GeForce_RTX_4090-sm8.9.cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "irn-trt" / "engines"


def test_root_made_by_ort_trt_before_the_fix_gets_its_marker(tmp_path: Path) -> None:
    """ort-trt used to create ``<root>/ort-trt`` (marked) but not mark ``<root>``: every trt
    lookup then warned "not created by irn-trt". Such a root is ours and gets the marker."""
    root = tmp_path / "engines"
    EngineCache(root / "ort-trt").ensure_root()  # what the ort-trt backend alone did
    assert not (root / MARKER_FILE).exists()  # the state users are left with
    rec = Recorder()
    cache = EngineCache(root, warn=rec.warn)
    plan, built = cache.get_or_build(KEY, rec.builder(b"ENGINE"))
    assert (root / MARKER_FILE).is_file() and cache.trust_problems(KEY) == []
    assert cache.lookup(KEY) == b"ENGINE" and rec.warnings == []


@pytest.mark.parametrize(
    "intruder",
    [
        lambda root: (root / "notes.txt").write_text("x"),  # anything else in the root
        lambda root: (root / "ort-trt" / MARKER_FILE).unlink(),  # a sub-cache not ours
        lambda root: (root / "other").mkdir(),
    ],
)
def test_a_root_holding_anything_else_is_not_blessed(tmp_path: Path, intruder) -> None:
    root = tmp_path / "engines"
    EngineCache(root / "ort-trt").ensure_root()
    intruder(root)
    rec = Recorder()
    EngineCache(root, warn=rec.warn).store(KEY, b"ENGINE")
    assert not (root / MARKER_FILE).exists()
    assert EngineCache(root, warn=rec.warn).lookup(KEY) == b"ENGINE"
    assert any("not created by irn-trt (no marker)" in w for w in rec.warnings)
