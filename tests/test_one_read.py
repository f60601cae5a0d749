"""One read of each selected source image per release (issue 17): select reads PNG headers and records sizes (the
lockfile) and mtimes (the local ``.source.json``); compress reads each image once, refuses one changed since select,
and records the sha256 of the bytes it read (``image_digests.parquet``, ``source_sha256``); ``inspect --verify``
re-hashes explicitly."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import rxcurate.compress as C
from rxcurate.cli import main
from rxcurate.errors import CompressError
from rxcurate.layout import CHECKSUMS, DATA_DIR, IMAGE_DIGESTS, LOCKFILE, SOURCE_HINT, SOURCE_SHA256, read_lockfile
from rxcurate.manifest import load_manifest
from rxcurate.select import select
from rxcurate.synth import generate

REPO = Path(__file__).resolve().parents[1]
TINY3 = REPO / "tests" / "data" / "manifests" / "tiny-rxrx3.yaml"
PROC_IO = Path("/proc/self/io")


def _rchar() -> int:
    for line in PROC_IO.read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("/proc/self/io has no rchar line")


def _images(work: Path) -> list[str]:
    return [p for paths in read_lockfile(work).table.column("images").to_pylist() for p in paths]


def _run(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as ei:
        main(list(args))
    return int(ei.value.code or 0), capsys.readouterr().err


def _assert_no_output(w: Path) -> None:
    assert not (w / DATA_DIR).exists() or not any((w / DATA_DIR).iterdir())
    for name in (CHECKSUMS, IMAGE_DIGESTS, "metadata.csv", "compression_report.json"):
        assert not (w / name).exists()


@pytest.fixture
def selected(tiny_rxrx3, tmp_path):
    """A private copy of the tiny screen and a workdir selected from it (the tiny recipe)."""
    src = tmp_path / "src"
    shutil.copytree(tiny_rxrx3, src)
    w = tmp_path / "w"
    select(load_manifest(TINY3), source=src, workdir=w)
    return src, w


@pytest.mark.skipif(not PROC_IO.is_file(), reason="/proc/self/io is not available on this system")
def test_select_and_compress_read_each_selected_source_byte_once(tiny_rxrx3, tmp_path):
    m = load_manifest(TINY3)
    w = tmp_path / "w"
    before = _rchar()
    select(m, source=tiny_rxrx3, workdir=w)
    C.compress(m, workdir=w, workers=1)  # workers=1: encoded in this process, so /proc/self/io sees its reads
    read = _rchar() - before
    selected = sum(int(n) for sizes in read_lockfile(w).table.column("size").to_pylist() for n in sizes)
    assert selected == sum((tiny_rxrx3 / rel).stat().st_size for rel in _images(w))
    assert read <= 1.5 * selected, f"select + compress read {read:,} bytes for {selected:,} bytes of source images"
    assert (w / CHECKSUMS).is_file()


def test_lockfile_is_byte_identical_for_two_generated_copies_of_a_screen(tiny_rxrx3, tmp_path):
    """The lockfile records sizes, not mtimes: a screen generated again (other mtimes) gives the same bytes; the
    mtimes are local (the never-published source hint)."""
    m = load_manifest(TINY3)
    again = generate(tmp_path / "again", layout="rxrx3", preset="tiny", seed=0)
    a, b = tmp_path / "a", tmp_path / "b"
    select(m, source=tiny_rxrx3, workdir=a)
    select(m, source=again, workdir=b)
    rel = _images(a)[0]
    assert (tiny_rxrx3 / rel).stat().st_mtime_ns != (again / rel).stat().st_mtime_ns
    assert (a / LOCKFILE).read_bytes() == (b / LOCKFILE).read_bytes()
    assert json.loads((a / SOURCE_HINT).read_text())["fingerprints"] != json.loads(
        (b / SOURCE_HINT).read_text())["fingerprints"]


def _same_size_edit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    st = path.stat()
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a later mtime, whatever the clock
    assert path.stat().st_size == st.st_size


@pytest.mark.parametrize("change", ["same size, later mtime", "other size"])
def test_source_changed_after_select_is_refused_at_compress(selected, capsys, change):
    src, w = selected
    path = src / _images(w)[7]
    if change == "other size":
        path.write_bytes(path.read_bytes() + b"\0")
    else:
        _same_size_edit(path)
    with pytest.raises(C.SourceChangedError, match=str(path) + ": source image changed since rxcurate select"):
        C.compress(load_manifest(TINY3), workdir=w, workers=1)
    _assert_no_output(w)
    code, err = _run(capsys, "compress", str(TINY3), "--workdir", str(w), "--workers", "1")
    assert code == 2
    assert str(path) in err and "rerun rxcurate select" in err and "Traceback" not in err
    _assert_no_output(w)


def test_changed_source_is_refused_even_in_skip_mode(tiny_rxrx3, tmp_path):
    import yaml

    doc = load_manifest(TINY3).raw
    doc["transform"]["on_error"] = "skip"
    (mpath := tmp_path / "skip.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    m = load_manifest(mpath)
    src = tmp_path / "src"
    shutil.copytree(tiny_rxrx3, src)
    w = tmp_path / "w"
    select(m, source=src, workdir=w)
    _same_size_edit(src / _images(w)[0])
    with pytest.raises(CompressError, match="changed since rxcurate select"):
        C.compress(m, workdir=w, workers=1)
    _assert_no_output(w)


def test_compress_records_the_sha256_of_every_source_image(selected, capsys):
    src, w = selected
    C.compress(load_manifest(TINY3), workdir=w, workers=1)
    t = pq.read_table(w / IMAGE_DIGESTS).to_pydict()
    lock = read_lockfile(w).table
    by_key = dict(zip((k for ks in lock.column("keys").to_pylist() for k in ks), _images(w), strict=True))
    assert sorted(t["__key__"]) == sorted(by_key)
    for key, sha in zip(t["__key__"], t[SOURCE_SHA256], strict=True):
        assert sha == hashlib.sha256((src / by_key[key]).read_bytes()).hexdigest()
    # the explicit full-hash pass agrees, then finds a later same-size edit compress can no longer see
    assert C.verify_source_digests(w, src) == {"images": len(by_key), "digests_compared": len(by_key),
                                               "hashed_bytes": sum((src / r).stat().st_size for r in by_key.values())}
    code, _ = _run(capsys, "inspect", str(src), "--verify", str(w))
    assert code == 0
    edited = src / _images(w)[3]
    _same_size_edit(edited)
    with pytest.raises(CompressError, match=str(edited) + ": sha256 differs"):
        C.verify_source_digests(w, src)
    code, err = _run(capsys, "inspect", str(src), "--verify", str(w))
    assert code == 2 and str(edited) in err and "Traceback" not in err


def test_without_select_mtimes_compress_checks_sizes(selected, tmp_path):
    """A lockfile taken elsewhere (no source hint) still compresses from a copy of the screen: sizes are checked."""
    src, w = selected
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy2(w / LOCKFILE, elsewhere / LOCKFILE)
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)  # other mtimes
    m = load_manifest(TINY3)
    res = C.compress(m, source=copy, workdir=elsewhere, workers=1)
    assert res.report["skipped_wells"] == [] and (elsewhere / CHECKSUMS).is_file()
    bigger = copy / _images(w)[2]
    bigger.write_bytes(bigger.read_bytes() + b"\0")
    with pytest.raises(CompressError, match="bytes, the lockfile records"):
        C.compress(m, source=copy, workdir=elsewhere, workers=1, force=True)
