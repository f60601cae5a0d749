"""Consumers on the Hugging Face cache (issue 15), against olah serving a local hub over the Hub's HTTP API:
huggingface_hub and pandas read the published files as they would from the Hub; `rxcurate pull` of an hf:// target
stores each file once (in the HF cache, nothing in the rxcurate cache but its small verification record), prints
the snapshot folder on stdout, accepts ORG/NAME and hf://datasets/ORG/NAME@REV, repairs a corrupted cache file and
pins the version offline; `rxcurate.load` reads from the snapshot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from release_fixture import REPO_ID, two_version_hub

from rxcurate.consume.pull import CACHE_RECORD, part_files, pull
from rxcurate.errors import PullError
from rxcurate.io import sha256_file
from rxcurate.publish.local import LocalHub

HF_FOLDER = "datasets--" + REPO_ID.replace("/", "--")
RXCURATE = [sys.executable, "-c", "from rxcurate.cli import main; main()"]


@pytest.fixture(scope="module")
def hub(built, tmp_path_factory) -> Path:
    """A hub with versions 0.1.0 and 0.2.0 of the tiny release (0.2.0 differs only in its version)."""
    return two_version_hub(built[1], tmp_path_factory.mktemp("hfcache-hub"))


def _release(hub: Path, version: str) -> dict:
    return json.loads(LocalHub(hub).read_file(REPO_ID, version, "release.json"))


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) if folder.exists() else []


def _env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(tmp_path / "hf"), RXCURATE_CACHE=str(tmp_path / "rx"),
               RXCURATE_PROGRESS="0", HF_HUB_DISABLE_TELEMETRY="1", **extra)
    return env


def test_hf_hub_download_of_a_shard_reads_back_the_published_table(olah_endpoint, hub, built, tmp_path):
    from huggingface_hub import hf_hub_download

    shard = part_files(_release(hub, "0.1.0"), "images")[1]
    got = hf_hub_download(REPO_ID, filename=shard, repo_type="dataset", revision="v0.1.0", endpoint=olah_endpoint,
                          cache_dir=tmp_path / "hf")
    assert pq.read_table(got).equals(pq.read_table(built[1] / shard))
    assert sha256_file(got) == _release(hub, "0.1.0")["files"][shard]["sha256"]


def test_pandas_reads_hf_paths_through_the_hub_api(olah_endpoint, hub, built, tmp_path):
    """pandas' hf:// (huggingface_hub's HfFileSystem via fsspec) at a pinned tag, in a fresh interpreter. olah 0.5.4's
    mirror answers a Range request with the whole file (200), so pyarrow's footer read of a bare hf://...parquet gets
    the wrong bytes from olah (the Hub honours Range); the Parquet file is read whole through fsspec's simplecache,
    the CSV (read from its start) directly."""
    code = ("import sys, pandas as pd; ep = sys.argv[1]; "
            "pd.read_parquet('simplecache::' + sys.argv[2], storage_options={'hf': {'endpoint': ep}})"
            ".to_parquet(sys.argv[4]); "
            "pd.read_csv(sys.argv[3], storage_options={'endpoint': ep}).to_parquet(sys.argv[5])")
    out_pq, out_csv = tmp_path / "meta.parquet", tmp_path / "meta-csv.parquet"
    base = f"hf://datasets/{REPO_ID}@v0.1.0"
    r = subprocess.run([sys.executable, "-c", code, olah_endpoint, f"{base}/metadata.parquet", f"{base}/metadata.csv",
                        str(out_pq), str(out_csv)], capture_output=True, text=True, timeout=300,
                       env=_env(tmp_path, olah_endpoint))
    assert r.returncode == 0, r.stderr[-2000:]
    pd.testing.assert_frame_equal(pd.read_parquet(out_pq), pd.read_parquet(built[1] / "metadata.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(out_csv), pd.read_csv(built[1] / "metadata.csv"))


def test_pull_stores_each_file_once_in_the_hf_cache_and_load_reads_it(olah_endpoint, hub, built, tmp_path):
    import imagecodecs

    import rxcurate

    rx, hf = tmp_path / "rx", tmp_path / "hf"
    release = _release(hub, "0.1.0")
    res = pull(f"hf://datasets/{REPO_ID}@v0.1.0", "images,metadata", cache=rx, cache_dir=hf, endpoint=olah_endpoint)
    commit = LocalHub(hub).commit_of(REPO_ID, "0.1.0")
    assert res.version == "0.1.0" and res.folder == hf / HF_FOLDER / "snapshots" / commit
    wanted = [f for f in res.files if f != "release.json"]
    assert sorted(res.fetched) == sorted(wanted)
    # one copy: the HF cache's blobs are exactly the pulled files' contents (+ release.json), each once (files with
    # equal bytes, here metadata.csv and metadata_rxrx3_core.csv, share one blob)
    blobs = _files(hf / HF_FOLDER / "blobs")
    contents = {release["files"][f]["sha256"] for f in wanted} | {
        sha256_file(res.folder / "release.json")}
    assert len(blobs) == len(contents) and {sha256_file(b) for b in blobs} == contents
    assert sum(b.stat().st_size for b in blobs) == sum({release["files"][f]["sha256"]: release["files"][f]["size"]
                                                        for f in wanted}.values()) + len(
        LocalHub(hub).read_file(REPO_ID, "0.1.0", "release.json"))
    for rel in wanted:
        assert (res.folder / rel).is_symlink() and sha256_file(res.folder / rel) == release["files"][rel]["sha256"]
    # nothing but the verification record in the rxcurate cache
    assert [p.name for p in _files(rx)] == [CACHE_RECORD]
    # load reads the snapshot where it lies: no new file anywhere
    before = {p: p.stat().st_mtime_ns for p in _files(tmp_path)}
    meta = rxcurate.load(f"hf://{REPO_ID}", "0.1.0", "metadata", cache=rx, cache_dir=hf, endpoint=olah_endpoint)
    pd.testing.assert_frame_equal(meta, pd.read_parquet(built[1] / "metadata.parquet"))
    ds = rxcurate.load(f"hf://{REPO_ID}@{commit[:10]}", part="images", cache=rx, cache_dir=hf,
                       endpoint=olah_endpoint)
    assert ds.num_rows == release["counts"]["images"]
    first = pq.read_table(built[1] / res.files[1]).slice(0, 1).to_pylist()[0]
    assert ds[0]["__key__"] == first["__key__"] and ds[0]["jp2"].dtype == np.uint8
    np.testing.assert_array_equal(ds[0]["jp2"], imagecodecs.jpeg2k_decode(first["jp2"]["bytes"]))
    wells = rxcurate.load(f"hf://{REPO_ID}@0.1.0", part="wells", cache=rx, cache_dir=hf, endpoint=olah_endpoint)
    array, row = next(iter(wells))
    assert array.shape[0] == 6 and "well_id" in row
    stream = rxcurate.load(f"hf://{REPO_ID}@0.1.0", part="images", streaming=True, cache=rx, cache_dir=hf,
                           endpoint=olah_endpoint)
    assert sum(1 for _ in stream) == release["counts"]["images"]
    after = {p: p.stat().st_mtime_ns for p in _files(tmp_path)}
    assert {p for p in after if p.name != CACHE_RECORD} == {p for p in before if p.name != CACHE_RECORD}
    assert all(after[p] == before[p] for p in before if p.name != CACHE_RECORD)


def test_cli_prints_the_snapshot_path_and_accepts_hub_forms(olah_endpoint, hub, tmp_path):
    env = _env(tmp_path, olah_endpoint)
    commit = LocalHub(hub).commit_of(REPO_ID, "0.1.0")
    newest = LocalHub(hub).commit_of(REPO_ID, "0.2.0")
    snapshots = tmp_path / "hf" / HF_FOLDER / "snapshots"
    for target, want, note in [(REPO_ID, newest, "resolved to version 0.2.0"),
                               (f"hf://datasets/{REPO_ID}@v0.1.0", commit, None),
                               (f"hf://datasets/{REPO_ID}@0.1.0", commit, None),
                               (f"{REPO_ID}@{commit[:7]}", commit, "is version 0.1.0"),
                               (f"hf://{REPO_ID}@0.2.0", newest, None)]:
        r = subprocess.run([*RXCURATE, "pull", target, "--parts", "metadata"], capture_output=True, text=True,
                           timeout=300, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout == f"{snapshots / want}\n", (target, r.stdout)  # the path alone, like `hf download`
        assert "file(s) verified" in r.stderr and (note is None or note in r.stderr), r.stderr
        assert (Path(r.stdout.strip()) / "metadata.parquet").is_file()
    # the second pull of a version downloaded nothing: each blob once
    blobs = _files(tmp_path / "hf" / HF_FOLDER / "blobs")
    assert len(blobs) == len({sha256_file(p) for p in blobs})
    r = subprocess.run([*RXCURATE, "pull", f"{REPO_ID}@0.1.0", "--parts", "metadata", "--json"],
                       capture_output=True, text=True, timeout=300, env=env)
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["ok"] and not doc["fetched"] and Path(doc["folder"]) == snapshots / commit
    for bad, needle in [(f"{REPO_ID}@one", "neither a semantic version"), ("hf://datasets/x", "<org>/<name>"),
                        (f"{REPO_ID}@abcdef1", "no published version's tag points at commit abcdef1")]:
        r = subprocess.run([*RXCURATE, "pull", bad], capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 2 and r.stdout == "" and needle in r.stderr, r.stderr
        assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_a_corrupted_hf_cache_file_is_reported_and_refetched(olah_endpoint, hub, tmp_path, capsys):
    rx, hf = tmp_path / "rx", tmp_path / "hf"
    res = pull(f"hf://{REPO_ID}@0.1.0", "images", cache=rx, cache_dir=hf, endpoint=olah_endpoint)
    shard = res.folder / res.files[2]
    good = sha256_file(shard)
    blob = Path(os.path.realpath(shard))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    again = pull(f"hf://{REPO_ID}@0.1.0", "images", cache=rx, cache_dir=hf, endpoint=olah_endpoint)
    assert again.repaired == [res.files[2]] and again.fetched == [res.files[2]]
    assert sha256_file(shard) == good and "is corrupted" in capsys.readouterr().err
    assert len(_files(hf / HF_FOLDER / "blobs")) == len(res.files)  # 5 shards + release.json: replaced in place


def test_a_corrupt_download_is_refused_and_removed_from_the_cache(olah_endpoint, hub, tmp_path, monkeypatch):
    from rxcurate.publish import hf as hfmod

    real = hfmod.snapshot_download

    def tampering(*args, **kwargs):
        folder = Path(real(*args, **kwargs))
        (folder / "metadata.csv").resolve().write_bytes(b"not the published bytes")
        return str(folder)

    monkeypatch.setattr(hfmod, "snapshot_download", tampering)
    hf = tmp_path / "hf"
    with pytest.raises(PullError, match="metadata.csv does not match its sha256.*removed from the Hugging Face cache"):
        pull(f"hf://{REPO_ID}@0.1.0", "metadata", cache=tmp_path / "rx", cache_dir=hf, endpoint=olah_endpoint)
    snap = hf / HF_FOLDER / "snapshots" / LocalHub(hub).commit_of(REPO_ID, "0.1.0")
    assert not (snap / "metadata.csv").exists()


def test_offline_pull_pins_the_requested_version_from_the_cache(olah_endpoint, hub, tmp_path):
    """HF_HUB_OFFLINE=1 load_dataset(repo, revision=tag) silently returns the newest version; a pull pins the tag's
    commit (recorded by huggingface_hub as refs/v<version>) and reads that snapshot."""
    env = _env(tmp_path, olah_endpoint)
    for v in ("0.1.0", "0.2.0"):
        r = subprocess.run([*RXCURATE, "pull", f"{REPO_ID}@{v}", "--parts", "metadata"], capture_output=True,
                           text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
    offline = _env(tmp_path, "http://127.0.0.1:9", HF_HUB_OFFLINE="1")
    r = subprocess.run([*RXCURATE, "pull", f"{REPO_ID}@0.1.0", "--parts", "metadata", "--json"], capture_output=True,
                       text=True, timeout=300, env=offline)
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["version"] == "0.1.0", r.stderr[-2000:]
    assert doc["commit"] == LocalHub(hub).commit_of(REPO_ID, "0.1.0") and not doc["fetched"]
    r = subprocess.run([*RXCURATE, "pull", f"{REPO_ID}@0.1.0", "--parts", "images"], capture_output=True, text=True,
                       timeout=300, env=offline)
    assert r.returncode == 2 and "HF_HUB_OFFLINE" in r.stderr and "Traceback" not in r.stderr, r.stderr
