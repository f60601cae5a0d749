"""RxRx3-core drop-in and well-level access (issue 15).

An rxrx3-layout release also publishes ``metadata_rxrx3_core.csv`` and, with an openphenom embedding set,
``OpenPhenom_rxrx3_core_embeddings.parquet`` at the repo root; a consumer script written only against
recursionpharma/rxrx3-core's documented file names and columns runs unchanged in a checkout of a published tiny
release. ``rxcurate.load(..., part="wells")`` / :class:`rxcurate.consume.wells.Wells` yield (6, H, W) uint8 wells.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import imagecodecs
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from release_fixture import REPO_ID, copy_release, rehash

import rxcurate
from rxcurate.assemble import assemble
from rxcurate.consume.pull import pull
from rxcurate.consume.wells import Wells
from rxcurate.embed import run_embed
from rxcurate.manifest import load_manifest
from rxcurate.publish import publish
from rxcurate.validate import validate_folder

TARGET = f"local://{REPO_ID}"
METADATA = "metadata_rxrx3_core.csv"
EMBEDDINGS = "OpenPhenom_rxrx3_core_embeddings.parquet"

# Written against recursionpharma/rxrx3-core's README only: its file names, its columns, load_dataset for images.
CONSUMER = textwrap.dedent('''
    import os

    import numpy as np
    import pandas as pd
    from datasets import load_dataset

    COLUMNS = ["well_id", "experiment_name", "plate", "address", "gene", "treatment", "SMILES", "concentration",
               "perturbation_type", "cell_type"]
    meta = pd.read_csv("metadata_rxrx3_core.csv")
    assert list(meta.columns) == COLUMNS, list(meta.columns)
    assert meta["well_id"].is_unique
    controls = meta["treatment"].isin(["EMPTY_control", "CRISPR_control"])
    compounds = meta[(meta["perturbation_type"] == "COMPOUND") & ~controls]
    assert len(compounds) and compounds["gene"].isna().all(), compounds["gene"].unique()  # NULL, not ""
    assert compounds["SMILES"].notna().all() and compounds["concentration"].notna().all()
    crispr = meta[(meta["perturbation_type"] == "CRISPR") & ~controls]
    assert len(crispr) and crispr["gene"].notna().all() and crispr["concentration"].isna().all()

    emb = pd.read_parquet("OpenPhenom_rxrx3_core_embeddings.parquet")
    features = [c for c in emb.columns if c != "well_id"]
    assert emb.columns[0] == "well_id" and features == [f"feature_{i}" for i in range(len(features))]
    assert emb["well_id"].is_unique and set(emb["well_id"]) == set(meta["well_id"])  # one row per well

    ds = load_dataset(os.getcwd(), split="train")  # as load_dataset("recursionpharma/rxrx3-core", split="train")
    assert {"__key__", "jp2"} <= set(ds.column_names)
    keys = set(ds["__key__"])
    want = {f"{w.experiment_name}/Plate{w.plate}/{w.address}_s1_{ch}" for w in meta.itertuples() for ch in range(1, 7)}
    assert keys == want, len(keys ^ want)
    for row in ds.select(range(0, len(ds), max(1, len(ds) // 24))):
        img = row["jp2"]
        if isinstance(img, dict):  # raw {bytes, path}
            import imagecodecs
            arr = imagecodecs.jpeg2k_decode(img["bytes"])
        else:  # datasets' Image feature: a PIL image
            arr = np.asarray(img)
        assert arr.ndim == 2 and arr.dtype == np.uint8, (arr.shape, arr.dtype)
    print("consumer ok", len(meta), len(ds), len(features))
''')


@pytest.fixture(scope="module")
def openphenom_release(built, tmp_path_factory) -> Path:
    """The tiny release plus an openphenom set (random weights), reassembled."""
    folder = copy_release(built[1], tmp_path_factory.mktemp("rxrx3-core") / "release")
    run_embed(folder, "openphenom", tile=32, num_workers=0, allow_random=True, device="cpu")
    assemble(load_manifest(built[0]), folder)
    return folder


@pytest.fixture(scope="module")
def hub(openphenom_release, tmp_path_factory) -> Path:
    hub = tmp_path_factory.mktemp("rxrx3-core-hub") / "hub"
    publish(openphenom_release, "local", hub=hub)
    return hub


def _decode_key(folder: Path, key: str) -> np.ndarray:
    for shard in sorted((folder / "data").glob("train-*.parquet")):
        t = pq.read_table(shard, filters=[("__key__", "==", key)])
        if t.num_rows:
            return imagecodecs.jpeg2k_decode(t.column("jp2")[0].as_py()["bytes"])
    raise AssertionError(f"{key} not in the shards")


def test_baseline_release_publishes_the_metadata_file_only(release):
    doc = json.loads((release / "release.json").read_text())
    assert METADATA in doc["files"] and EMBEDDINGS not in doc["files"]  # no openphenom set
    assert not (release / EMBEDDINGS).exists()
    meta = pd.read_csv(release / METADATA)
    parquet = pd.read_parquet(release / "metadata.parquet")
    assert list(meta.columns) == list(parquet.columns) and len(meta) == len(parquet)
    assert (parquet.loc[meta["gene"].isna(), "gene"] == "").all()  # rxcurate's '' is the real file's NULL
    assert f"`{METADATA}`" in (release / "README.md").read_text()
    rep = validate_folder(release, rerun=False)
    assert rep.ok, [f for f in rep.failures]
    assert any(f.check == "rxrx3-core" and f.file == METADATA and f.ok for f in rep.findings)


def test_openphenom_file_is_the_openphenom_set(openphenom_release):
    folder = openphenom_release
    doc = json.loads((folder / "release.json").read_text())
    assert {METADATA, EMBEDDINGS} <= set(doc["files"])
    assert doc["files"][EMBEDDINGS] == doc["files"]["embeddings/openphenom/embeddings.parquet"]
    assert f"`{EMBEDDINGS}`" in (folder / "README.md").read_text()
    rep = validate_folder(folder, rerun=False)
    assert rep.ok, [f for f in rep.failures]


def test_consumer_script_runs_unchanged_in_a_published_checkout(hub, tmp_path):
    checkout = pull(f"{TARGET}@0.1.0", "all", hub=hub, cache=tmp_path / "cache", dest=tmp_path / "checkout").folder
    assert (checkout / METADATA).is_file() and (checkout / EMBEDDINGS).is_file()
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    res = subprocess.run([sys.executable, str(script)], cwd=checkout, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "consumer ok" in res.stdout


def test_validate_catches_tampered_drop_in_files(openphenom_release, tmp_path):
    folder = copy_release(openphenom_release, tmp_path / "r")
    meta = pd.read_csv(folder / METADATA)
    meta.loc[0, "treatment"] = "OTHER"
    meta.to_csv(folder / METADATA, index=False)
    rehash(folder, METADATA)
    emb = pd.read_parquet(folder / EMBEDDINGS)
    emb.iloc[0, 1] = 0.5
    emb.to_parquet(folder / EMBEDDINGS, index=False)
    rehash(folder, EMBEDDINGS)
    bad = {f.file for f in validate_folder(folder, rerun=False).failures if f.check == "rxrx3-core"}
    assert bad == {METADATA, EMBEDDINGS}


def test_validate_requires_the_drop_in_files(openphenom_release, tmp_path):
    folder = copy_release(openphenom_release, tmp_path / "r")
    doc = json.loads((folder / "release.json").read_text())
    for name in (METADATA, EMBEDDINGS):
        (folder / name).unlink()
        del doc["files"][name]
    (folder / "release.json").write_text(json.dumps(doc, sort_keys=True, indent=2) + "\n")
    bad = {f.file for f in validate_folder(folder, rerun=False).failures if f.check == "rxrx3-core"}
    assert bad == {METADATA, EMBEDDINGS}


def test_reassembling_without_openphenom_removes_the_stale_copy(openphenom_release, built, tmp_path):
    folder = copy_release(openphenom_release, tmp_path / "r")
    shutil.rmtree(folder / "embeddings" / "openphenom")
    assemble(load_manifest(built[0]), folder)
    assert not (folder / EMBEDDINGS).exists()
    assert EMBEDDINGS not in json.loads((folder / "release.json").read_text())["files"]


# --------------------------------------------------------------------------------------------------- wells
def test_wells_are_six_channel_uint8_equal_to_their_keys(release):
    wells = Wells(release)
    meta = pd.read_parquet(release / "metadata.parquet")
    h, w = json.loads((release / "release.json").read_text())["image"]["shape"]
    seen = []
    for array, row in wells:
        assert array.shape == (6, h, w) and array.dtype == np.uint8
        seen.append(row["well_id"])
        if len(seen) <= 8:  # decode the individual keys of a few wells
            for ch in range(1, 7):
                key = f"{row['experiment_name']}/Plate{row['plate']}/{row['address']}_s1_{ch}"
                np.testing.assert_array_equal(array[ch - 1], _decode_key(release, key))
    assert sorted(seen) == sorted(meta["well_id"]) and len(seen) == len(wells)
    first = meta.set_index("well_id").loc[seen[0]]
    assert next(iter(wells))[1]["treatment"] == first["treatment"]


def test_wells_every_well_equals_its_keys(release):
    """All wells, against a decode of every shard row by key."""
    by_key = {}
    for shard in sorted((release / "data").glob("train-*.parquet")):
        t = pq.read_table(shard)
        for k, cell in zip(t.column("__key__").to_pylist(), t.column("jp2").to_pylist(), strict=True):
            by_key[k] = imagecodecs.jpeg2k_decode(cell["bytes"])
    n = 0
    for array, row in Wells(release):
        prefix = f"{row['experiment_name']}/Plate{row['plate']}/{row['address']}_s1"
        np.testing.assert_array_equal(array, np.stack([by_key[f"{prefix}_{c}"] for c in range(1, 7)]))
        n += 1
    assert n * 6 == len(by_key)


def test_torch_wrapper_yields_the_same_wells(release):
    torch = pytest.importorskip("torch")
    wells = Wells(release)
    want = {row["well_id"]: array for array, row in wells}
    ds = wells.torch()
    assert isinstance(ds, torch.utils.data.IterableDataset) and len(ds) == len(want)
    got = list(ds)
    assert [w for _, w in got] == list(want)
    for tensor, well in got:
        assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == want[well].shape
        np.testing.assert_array_equal(tensor.numpy(), want[well])
    workers = list(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2))
    assert sorted(w for _, w in workers) == sorted(want)  # each well once across workers


def test_rxcurate_load_wells_from_a_published_version(hub, tmp_path):
    wells = rxcurate.load(f"{TARGET}@0.1.0", part="wells", hub=hub, cache=tmp_path / "cache")
    assert isinstance(wells, Wells)
    array, row = next(iter(wells))
    assert array.shape[0] == 6 and array.dtype == np.uint8 and array.ndim == 3
    assert set(row) >= {"well_id", "experiment_name", "plate", "address", "gene", "treatment"}


def test_hf_hub_download_of_the_drop_in_files_over_the_hub_api(olah_endpoint, hub, tmp_path):
    """As rxrx3-core's README: hf_hub_download(repo, filename=...) then pandas (served by olah from the hub)."""
    from huggingface_hub import hf_hub_download

    got = {name: hf_hub_download(REPO_ID, name, repo_type="dataset", revision="v0.1.0", endpoint=olah_endpoint,
                                 cache_dir=tmp_path / "hf") for name in (METADATA, EMBEDDINGS)}
    meta, emb = pd.read_csv(got[METADATA]), pd.read_parquet(got[EMBEDDINGS])
    assert len(meta) == len(emb) and set(meta["well_id"]) == set(emb["well_id"])
    compounds = meta[(meta["perturbation_type"] == "COMPOUND") & ~meta["treatment"].str.endswith("_control")]
    assert compounds["gene"].isna().all()


def test_rxrx1_wells_per_site_and_no_drop_in_files(tiny_rxrx1, tmp_path, monkeypatch):
    """RxRx1 rows are sites: Wells(folder, site=s) yields that site's images and row; no rxrx3-core files."""
    import yaml
    from typer.testing import CliRunner

    from rxcurate.cli import app

    raw = yaml.safe_load((Path(__file__).parent / "data" / "manifests" / "tiny-rxrx1.yaml").read_text())
    raw.update(embeddings=[{"encoder": "baseline", "tile_size": 16}], benchmarks=[],
               card={"repo_id": "test/tiny-rxrx1", "pretty_name": "Tiny RxRx1 (test)"})
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv("RXCURATE_PROGRESS", "0")
    folder = tmp_path / "w"
    res = CliRunner().invoke(app, ["release", str(tmp_path / "m.yaml"), "--source", str(tiny_rxrx1), "--hub",
                                   str(tmp_path / "hub"), "--workdir", str(folder), "--workers", "1"])
    assert res.exit_code == 0, res.output[-2000:]
    assert not (folder / METADATA).exists() and not (folder / EMBEDDINGS).exists()
    channels = json.loads((folder / "release.json").read_text())["image"]["channels"]
    for site in (1, 2):
        wells = list(Wells(folder, site=site))
        assert wells and all(r["site"] == site and a.shape[0] == len(channels) and a.dtype == np.uint8
                             for a, r in wells)
        a, r = wells[0]
        key = f"{r['experiment']}/Plate{r['plate']}/{r['well']}_s{site}_{channels[0]}"
        np.testing.assert_array_equal(a[0], _decode_key(folder, key))
