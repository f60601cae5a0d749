"""`rxcurate pull` and `rxcurate.load`: every part of every version from a local hub, verified against release.json;
cached by version (second pull fetches nothing), corrupted cache files re-fetched, unknown target/version/part
errors listing what exists, datasets/pandas loading (also streaming, one shard at a time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from release_fixture import REPO_ID, build_release, two_version_hub
from typer.testing import CliRunner

from rxcurate.cli import app, main
from rxcurate.consume.pull import CACHE_RECORD, available_parts, part_files, pull
from rxcurate.errors import PullError
from rxcurate.io import sha256_file
from rxcurate.publish.local import LocalHub

runner = CliRunner()
TARGET = f"local://{REPO_ID}"


@pytest.fixture(scope="session")
def built(tiny_rxrx3, tmp_path_factory):
    return build_release(tiny_rxrx3, tmp_path_factory.mktemp("tiny-release"))


@pytest.fixture(scope="module")
def hub(built, tmp_path_factory) -> Path:
    """A hub with versions 0.1.0 and 0.2.0 of the tiny release."""
    return two_version_hub(built[1], tmp_path_factory.mktemp("pull-hub"))


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def _cached_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
            and not p.relative_to(folder).as_posix().startswith(".")}


def test_each_part_of_each_version_is_fetched_alone_and_verified(hub, tmp_path):
    release = json.loads(LocalHub(hub).read_file(REPO_ID, "0.1.0", "release.json"))
    parts = available_parts(release)
    assert {"images", "metadata", "embeddings", "benchmarks", "card", "lockfile", "polaris",
            "embeddings/baseline"} <= set(parts)
    for version in ("0.1.0", "0.2.0"):
        release = json.loads(LocalHub(hub).read_file(REPO_ID, version, "release.json"))
        for part in parts:
            cache = tmp_path / f"c-{version}-{part.replace('/', '_')}"
            res = pull(f"{TARGET}@{version}", part, hub=hub, cache=cache)
            assert res.version == version and res.folder == cache / "local" / REPO_ID / version
            want = set(part_files(release, part))
            assert want and _cached_files(res.folder) == want | {"release.json"}  # only what was asked
            assert json.loads((res.folder / "release.json").read_text())["version"] == version
            for rel in want - {"README.md"}:
                assert sha256_file(res.folder / rel) == release["files"][rel]["sha256"]
            assert sorted(res.fetched) == sorted(want) and not res.cached


def test_latest_resolves_to_the_newest_version_and_says_so(hub, cache, capsys):
    assert pull(f"{TARGET}@latest", "metadata", hub=hub, cache=cache).version == "0.2.0"
    assert pull(TARGET, "metadata", hub=hub, cache=cache).version == "0.2.0"
    with pytest.raises(SystemExit) as exc:
        main(["pull", f"{TARGET}@latest", "--hub", str(hub), "--cache", str(cache), "--parts", "metadata"])
    assert exc.value.code == 0
    out = capsys.readouterr()
    assert "resolved to version 0.2.0" in out.err and "@0.2.0" in out.err
    assert out.out == f"{cache / 'local' / REPO_ID / '0.2.0'}\n"  # stdout: the folder alone, like `hf download`


def test_second_pull_comes_from_the_cache(hub, cache):
    first = pull(f"{TARGET}@0.1.0", "images,metadata", hub=hub, cache=cache)
    second = pull(f"{TARGET}@0.1.0", "images,metadata", hub=hub, cache=cache)
    assert first.fetched and not second.fetched and sorted(second.cached) == sorted(first.fetched)
    record = json.loads((first.folder / CACHE_RECORD).read_text())
    assert record["commit"] == LocalHub(hub).commit_of(REPO_ID, "0.1.0")


def test_corrupted_cache_file_is_detected_and_refetched(hub, cache):
    res = pull(f"{TARGET}@0.1.0", "images,embeddings/baseline", hub=hub, cache=cache)
    shard = res.folder / "data" / "train-00001-of-00005.parquet"
    good = sha256_file(shard)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    emb = res.folder / "embeddings" / "baseline" / "embeddings.parquet"
    emb.write_bytes(emb.read_bytes()[:-10])  # truncated
    again = pull(f"{TARGET}@0.1.0", "images,embeddings/baseline", hub=hub, cache=cache)
    assert sorted(again.repaired) == sorted(["data/train-00001-of-00005.parquet",
                                             "embeddings/baseline/embeddings.parquet"])
    assert sha256_file(shard) == good and sorted(again.fetched) == sorted(again.repaired)


def test_verify_rehashes_a_file_whose_size_and_mtime_were_kept(hub, cache):
    res = pull(f"{TARGET}@0.1.0", "metadata", hub=hub, cache=cache)
    path = res.folder / "metadata.csv"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[5] = ord("X") if data[5] != ord("X") else ord("Y")
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = pull(f"{TARGET}@0.1.0", "metadata", hub=hub, cache=cache, verify=True)
    assert again.repaired == ["metadata.csv"]
    assert sha256_file(path) == json.loads((res.folder / "release.json").read_text())["files"]["metadata.csv"][
        "sha256"]


def test_corrupt_download_is_refused_and_nothing_is_cached(hub, cache, monkeypatch):
    def garbage(self, repo_id, version, relpath, dest):
        Path(dest).write_bytes(b"not the published bytes")

    monkeypatch.setattr(LocalHub, "copy_file", garbage)
    with pytest.raises(PullError, match="metadata.csv does not match its sha256"):
        pull(f"{TARGET}@0.1.0", "metadata", hub=hub, cache=cache)
    folder = cache / "local" / REPO_ID / "0.1.0"
    assert not (folder / "metadata.csv").exists() and not list(folder.glob(".metadata*"))


@pytest.mark.parametrize("target, parts, needles", [
    (f"{TARGET}@9.9.9", "metadata", ["no version 9.9.9", "0.1.0, 0.2.0"]),
    ("local://test/missing", "metadata", ["does not exist", REPO_ID]),
    (f"{TARGET}@0.1.0", "images,embeddings/nope", ["no part 'embeddings/nope'", "embeddings/baseline", "images"]),
    (f"{TARGET}@0.1.0", "pictures", ["no part 'pictures'", "metadata"]),
    (f"{TARGET}@one", "metadata", ["neither a semantic version", "@0.1.0", "commit"]),
    ("rxcurate/x@", "metadata", ["names no version", "@latest"]),
    ("hf://models/a/b", "metadata", ["dataset repositories", "hf://datasets/<org>/<name>"]),
    (f"{TARGET}@abcdef1", "metadata", ["no published version's tag points at commit abcdef1", "0.1.0 = "]),
])
def test_unknown_target_version_or_part_lists_what_exists(hub, cache, capsys, target, parts, needles):
    with pytest.raises(SystemExit) as exc:
        main(["pull", target, "--parts", parts, "--hub", str(hub), "--cache", str(cache)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1
    for n in needles:
        assert n in err, err
    assert not (cache / "local" / REPO_ID / "0.1.0" / "data").exists()


def test_json_error_is_one_object(hub, cache):
    r = runner.invoke(app, ["pull", f"{TARGET}@7.0.0", "--hub", str(hub), "--cache", str(cache), "--json"])
    doc = json.loads(r.stdout)
    assert r.exit_code == 2 and doc["ok"] is False and "0.1.0, 0.2.0" in doc["errors"][0]
    assert len(r.stdout.strip().splitlines()) == 1


def test_dest_gets_verified_copies(hub, cache, tmp_path):
    dest = tmp_path / "out"
    r = runner.invoke(app, ["pull", f"{TARGET}@0.1.0", "--parts", "metadata,benchmarks", "--dest", str(dest),
                            "--hub", str(hub), "--cache", str(cache), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["version"] == "0.1.0" and Path(doc["folder"]) == dest
    release = json.loads((dest / "release.json").read_text())
    for rel in doc["files"][1:]:
        assert sha256_file(dest / rel) == release["files"][rel]["sha256"]


def test_load_metadata_embeddings_and_images(hub, cache, built):
    import imagecodecs
    import pandas as pd
    import pyarrow.parquet as pq

    import rxcurate

    meta = rxcurate.load(TARGET, "0.1.0", "metadata", hub=hub, cache=cache)
    assert isinstance(meta, pd.DataFrame)
    pd.testing.assert_frame_equal(meta, pd.read_parquet(built[1] / "metadata.parquet"))
    emb = rxcurate.load(TARGET, "0.1.0", "embeddings/baseline", hub=hub, cache=cache)
    pd.testing.assert_frame_equal(emb, rxcurate.load(TARGET, "0.1.0", "embeddings", hub=hub, cache=cache))
    assert len(emb) == len(meta) and emb.columns[0] == "well_id"
    ds = rxcurate.load(f"{TARGET}@0.1.0", part="images", hub=hub, cache=cache)
    import datasets

    assert isinstance(ds, datasets.Dataset)
    release = json.loads(LocalHub(hub).read_file(REPO_ID, "0.1.0", "release.json"))
    assert ds.num_rows == release["counts"]["images"]
    first = pq.read_table(built[1] / "data" / "train-00000-of-00005.parquet").slice(0, 1).to_pylist()[0]
    row = ds[0]
    assert row["__key__"] == first["__key__"]
    assert row["jp2"].dtype == np.uint8 and row["jp2"].shape == tuple(release["image"]["shape"])
    np.testing.assert_array_equal(row["jp2"], imagecodecs.jpeg2k_decode(first["jp2"]["bytes"]))
    with pytest.raises(PullError, match="pins @0.1.0"):
        rxcurate.load(f"{TARGET}@0.1.0", "0.2.0", "metadata", hub=hub, cache=cache)
    with pytest.raises(PullError, match="cannot be loaded"):
        rxcurate.load(TARGET, "0.1.0", "polaris", hub=hub, cache=cache)


def test_large_image_loads_go_through_the_arrow_cache(hub, cache, monkeypatch):
    """Above RXCURATE_LOAD_IN_MEMORY_BYTES the shards are not read into RAM: datasets' memory-mapped Arrow cache,
    same rows and decoded images as the in-memory load."""
    import rxcurate

    small = rxcurate.load(TARGET, "0.1.0", "images", hub=hub, cache=cache)
    monkeypatch.setenv("RXCURATE_LOAD_IN_MEMORY_BYTES", "1")
    big = rxcurate.load(TARGET, "0.1.0", "images", hub=hub, cache=cache)
    assert big.cache_files and small.num_rows == big.num_rows and not small.cache_files
    for i in (0, big.num_rows - 1):
        assert big[i]["__key__"] == small[i]["__key__"]
        np.testing.assert_array_equal(big[i]["jp2"], small[i]["jp2"])


def test_streaming_fetches_one_shard_at_a_time(hub, cache):
    import rxcurate

    it = rxcurate.load(TARGET, "0.1.0", "images", streaming=True, hub=hub, cache=cache)
    first = next(iter(it))
    assert first["jp2"].dtype == np.uint8 and first["jp2"].ndim == 2
    data = cache / "local" / REPO_ID / "0.1.0" / "data"
    assert sorted(p.name for p in data.iterdir() if not p.name.startswith(".")) == ["train-00000-of-00005.parquet"]
    keys = [r["__key__"] for r in it]
    assert len(keys) == len(set(keys)) and len(list((data).glob("train-*.parquet"))) == 5
    assert keys == sorted(keys)


def test_import_rxcurate_stays_light():
    code = "import sys, rxcurate; assert callable(rxcurate.load); print('datasets' in sys.modules, " \
           "'rxcurate.consume.pull' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_pull_help():
    r = runner.invoke(app, ["pull", "--help"])
    assert r.exit_code == 0 and "--parts" in r.output and "release.json" in r.output and "@latest" in r.output


# ------------------------------------------------------------------------------------------------ hf:// over HTTP
def test_pull_and_load_hf_target_over_http(olah_endpoint, hub, tmp_path):
    import rxcurate

    cache, hf = tmp_path / "cache", tmp_path / "hf"
    res = pull(f"hf://{REPO_ID}@latest", "metadata,embeddings/baseline,card", cache=cache, cache_dir=hf,
               endpoint=olah_endpoint)
    commit = LocalHub(hub).commit_of(REPO_ID, "0.2.0")
    assert res.version == "0.2.0" and res.commit == commit
    assert res.folder == hf / "datasets--test--tiny-rxrx3" / "snapshots" / commit  # the HF cache's snapshot
    assert sorted(res.fetched) == sorted(res.files[1:])
    local = pull(f"{TARGET}@0.2.0", "metadata,embeddings/baseline,card", hub=hub, cache=tmp_path / "c2")
    for rel in res.files:
        assert (res.folder / rel).read_bytes() == (local.folder / rel).read_bytes()
    again = pull(f"hf://{REPO_ID}@0.2.0", "metadata", cache=cache, cache_dir=hf, endpoint=olah_endpoint)
    assert not again.fetched and sorted(again.cached) == sorted(again.files[1:])
    emb = rxcurate.load(f"hf://{REPO_ID}", "0.1.0", "embeddings/baseline", cache=cache, cache_dir=hf,
                        endpoint=olah_endpoint)
    assert len(emb) == len(rxcurate.load(TARGET, "0.1.0", "metadata", hub=hub, cache=cache))
    with pytest.raises(PullError, match=r"no version 9\.9\.9 \(published: 0\.1\.0, 0\.2\.0\)"):
        pull(f"hf://{REPO_ID}@9.9.9", cache=cache, cache_dir=hf, endpoint=olah_endpoint)


def test_both_hubs_answer_the_read_api_alike(olah_endpoint, hub, tmp_path):
    from rxcurate.publish.hf import HfHub

    local, remote = LocalHub(hub), HfHub(endpoint=olah_endpoint, cache_dir=tmp_path / "hf")
    assert remote.list_versions(REPO_ID) == local.list_versions(REPO_ID) == ["0.1.0", "0.2.0"]
    assert remote.commit_of(REPO_ID, "latest") == local.commit_of(REPO_ID, "0.2.0")
    files = local.list_files(REPO_ID, "0.1.0")
    assert {k: v for k, v in remote.list_files(REPO_ID, "0.1.0").items() if k in files} == files
    assert remote.read_file(REPO_ID, "0.1.0", "release.json") == local.read_file(REPO_ID, "0.1.0", "release.json")
