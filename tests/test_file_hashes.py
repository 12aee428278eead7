"""The per-user cache of graph-file digests: reused while a file is unchanged, never stale."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from irn_trt.runtime import file_hashes
from irn_trt.runtime.file_hashes import cached_file_sha256, hash_cache_path
from irn_trt.runtime.manifest import file_sha256


@pytest.fixture
def cache_home(monkeypatch, tmp_path: Path) -> Path:
    """An empty per-user cache and no digests remembered by this process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(file_hashes, "_memo", {})
    return tmp_path / "xdg"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _forget_in_process(monkeypatch) -> None:
    """As a new process: only the on-disk cache is left."""
    monkeypatch.setattr(file_hashes, "_memo", {})


def _no_hashing(monkeypatch) -> None:
    def fail(path: object) -> str:
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(file_hashes, "file_sha256", fail)


def test_digest_is_remembered_across_processes(cache_home, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(file_hashes, "RACY_S", 0.0)
    path = _write(tmp_path / "g.onnx", os.urandom(70_000))
    want = file_sha256(path)
    assert cached_file_sha256(path) == want
    doc = json.loads(hash_cache_path().read_text())
    assert doc["format"] == file_hashes.FORMAT
    assert doc["files"][str(path.resolve())]["sha256"] == want
    assert hash_cache_path() == cache_home / "irn-trt" / "hashes" / "sha256.json"
    _forget_in_process(monkeypatch)
    _no_hashing(monkeypatch)
    assert cached_file_sha256(path) == want  # read back, not hashed


@pytest.mark.parametrize("how", ["replaced", "rewritten in place"])
def test_a_changed_file_is_hashed_again(cache_home, monkeypatch, tmp_path, how) -> None:
    """Same size, same mtime, other content: the inode (replace) or the ctime (in place,
    which no user call can set back) tells the change."""
    monkeypatch.setattr(file_hashes, "RACY_S", 0.0)
    path = _write(tmp_path / "g.onnx", b"a" * 4096)
    old = cached_file_sha256(path)
    st = path.stat()
    if how == "replaced":  # what an atomic re-export does
        tmp = tmp_path / "new.onnx"
        tmp.write_bytes(b"b" * 4096)
        os.replace(tmp, path)
    else:
        # The kernel's timestamps are coarse (a few ms): wait for a later ctime tick, which
        # the racy rule (RACY_S, 2 s) otherwise covers.
        ctime = st.st_ctime_ns
        while path.stat().st_ctime_ns == ctime:
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        path.write_bytes(b"b" * 4096)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    _forget_in_process(monkeypatch)
    new = cached_file_sha256(path)
    assert new == file_sha256(path) != old


def test_a_freshly_written_file_is_not_remembered(cache_home, tmp_path) -> None:
    """Written within RACY_S of hashing: a second change could keep its timestamps."""
    path = tmp_path / "g.onnx"
    path.write_bytes(b"fresh")
    assert cached_file_sha256(path) == file_sha256(path)
    assert not hash_cache_path().exists()
    assert str(path.resolve()) not in file_hashes._memo


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '["a list"]',
        '{"format": "someone-else/1", "files": {}}',
        '{"format": "irn-trt-file-hashes/1", "files": {"PATH": {"stat": "x", "sha256": 5}}}',
    ],
)
def test_an_unreadable_or_foreign_cache_is_ignored(cache_home, monkeypatch, tmp_path, content):
    monkeypatch.setattr(file_hashes, "RACY_S", 0.0)
    path = _write(tmp_path / "g.onnx", b"graph")
    store = hash_cache_path()
    store.parent.mkdir(parents=True)
    store.write_text(content.replace("PATH", str(path.resolve())))
    assert cached_file_sha256(path) == file_sha256(path)
    # ... and replaced by a good one.
    assert json.loads(store.read_text())["files"][str(path.resolve())]["sha256"] == file_sha256(
        path
    )


def test_an_unwritable_cache_only_means_hashing(monkeypatch, tmp_path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(file_hashes, "_memo", {})
    monkeypatch.setattr(file_hashes, "RACY_S", 0.0)
    path = _write(tmp_path / "g.onnx", b"graph")
    assert cached_file_sha256(path) == file_sha256(path)


def test_the_cache_keeps_the_newest_entries(cache_home, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(file_hashes, "RACY_S", 0.0)
    monkeypatch.setattr(file_hashes, "MAX_ENTRIES", 3)
    paths = [_write(tmp_path / f"g{i}.onnx", bytes([i]) * 10) for i in range(5)]
    for p in paths:
        cached_file_sha256(p)
    kept = json.loads(hash_cache_path().read_text())["files"]
    assert list(kept) == [str(p.resolve()) for p in paths[2:]]
