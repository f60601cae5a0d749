"""rxcurate.io: atomic writes honour the umask; the sha256 cache re-hashes a changed file."""

from __future__ import annotations

import os
import stat

import pytest

from rxcurate import io


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        io.atomic_write_text(tmp_path / "a.txt", "x")
        io.atomic_write_json(tmp_path / "sub" / "b.json", {"a": 1})
        with io.atomic_path(tmp_path / "c.bin") as tmp:
            tmp.write_bytes(b"c")
    finally:
        os.umask(old)
    for p in (tmp_path / "a.txt", tmp_path / "sub" / "b.json", tmp_path / "c.bin"):
        assert stat.S_IMODE(p.stat().st_mode) == mode, p


def test_current_umask_reads_without_changing_it():
    old = os.umask(0o027)
    try:
        assert io.current_umask() == 0o027
        assert io.current_umask() == 0o027
    finally:
        os.umask(old)


def test_sha256_cache_sees_rewrites_and_in_place_edits(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"one")
    first = io.sha256_file(p)
    assert first == io.sha256_bytes(b"one") and io.sha256_file(p) == first
    io.atomic_write_bytes(p, b"two")  # new inode
    assert io.sha256_file(p) == io.sha256_bytes(b"two")
    st = p.stat()
    with open(p, "r+b") as f:  # same size, same inode, flipped byte
        f.write(b"T")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    assert io.sha256_file(p) == io.sha256_bytes(b"Two")
