"""RxRx1-layout releases: metadata has one row per (well, site); every well-keyed consumer (embed, benchmarks, card,
validate) counts wells, and the whole `rxcurate release` publishes and validates on the tiny RxRx1 screen."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from rxcurate.benchmarks import evaluate
from rxcurate.cli import app, main
from rxcurate.embed import metadata_wells, run_embed
from rxcurate.errors import BenchmarkError, EmbedError

TINY1 = Path(__file__).resolve().parent / "data" / "manifests" / "tiny-rxrx1.yaml"
BENCHMARK = "rxrx1-batch-generalisation"
REPO_ID = "test/tiny-rxrx1"


def _manifest(dest: Path) -> Path:
    raw = yaml.safe_load(TINY1.read_text())
    raw.update(embeddings=[{"encoder": "baseline", "tile_size": 16}], benchmarks=[BENCHMARK],
               card={"repo_id": REPO_ID, "pretty_name": "Tiny RxRx1 (test)"})
    dest.write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest


@pytest.fixture(scope="module")
def released(tiny_rxrx1, tmp_path_factory):
    """The tiny RxRx1 release run once through the CLI (`rxcurate release --json`): (tmp root, CliRunner result)."""
    root = tmp_path_factory.mktemp("rxrx1-release")
    manifest = _manifest(root / "tiny-rxrx1.yaml")
    args = ["release", str(manifest), "--source", str(tiny_rxrx1), "--hub", str(root / "hub"), "--workdir",
            str(root / "w"), "--workers", "1", "--json"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RXCURATE_PROGRESS", "0")
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output[-3000:]
    return root, result


def test_metadata_wells_per_site_and_real_duplicates():
    per_site = pa.table({"well_id": ["b", "b", "a", "a"], "site": [1, 2, 2, 1]})
    assert metadata_wells(per_site) == ["a", "b"]
    with pytest.raises(EmbedError, match=r"well b site 2 appears more than once .*re-run rxcurate compress"):
        metadata_wells(pa.table({"well_id": ["b", "b", "a"], "site": [2, 2, 1]}))
    assert metadata_wells(pa.table({"well_id": ["c", "a"]})) == ["a", "c"]
    with pytest.raises(EmbedError, match=r"well_id a appears more than once \(one row per well"):
        metadata_wells(pa.table({"well_id": ["a", "c", "a"]}))


def test_release_publishes_validates_and_benchmarks(released):
    root, result = released
    summary = json.loads(result.stdout)
    assert summary["validation_ok"] is True and summary["status"]["validate"] == "passed"
    assert summary["target"] == f"local://{REPO_ID}" and summary["commit"]
    assert summary["status"]["publish"] == "published"
    w = root / "w"
    meta = pq.read_table(w / "metadata.parquet").to_pandas()
    wells = sorted(meta["well_id"].unique())
    assert len(meta) == 2 * len(wells)  # one metadata row per well and site
    emb = pq.read_table(w / "embeddings" / "baseline" / "embeddings.parquet").to_pandas()
    assert emb["well_id"].tolist() == wells  # one row per well, sorted
    info = json.loads((w / "embeddings" / "baseline" / "info.json").read_text())
    assert info["sites_per_well"] == {"min": 2, "max": 2} and info["wells"] == len(wells)
    res = json.loads((w / "benchmarks" / "results" / "baseline" / f"{BENCHMARK}.json").read_text())
    assert res["metrics"]["probe_wells"]["train"] > 0 and res["metrics"]["probe_wells"]["test"] > 0
    assert 0.0 <= res["metrics"]["corrected"]["accuracy"] <= 1.0
    assert summary["results"][BENCHMARK]["corrected/accuracy"] == res["metrics"]["corrected"]["accuracy"]
    rel = json.loads((w / "release.json").read_text())
    assert rel["counts"]["wells"] == len(wells) and rel["counts"]["metadata_rows"] == len(meta)
    assert rel["counts"]["embeddings"]["baseline"]["rows"] == len(wells)
    assert f"| wells | {len(wells)} |" in (w / "README.md").read_text()  # the card counts wells, not sites
    # the published version holds the result and validates again from the hub
    from rxcurate.publish.local import LocalHub
    from rxcurate.validate import validate

    published = LocalHub(root / "hub").list_files(REPO_ID, "0.1.0")
    assert f"benchmarks/results/baseline/{BENCHMARK}.json" in published
    assert validate(f"local://{REPO_ID}@0.1.0", hub=root / "hub").ok


def test_embed_refuses_duplicated_site_rows(released, tmp_path, capsys):
    root, _ = released
    w = tmp_path / "w"
    shutil.copytree(root / "w", w)
    shutil.rmtree(w / "embeddings")
    table = pq.read_table(w / "metadata.parquet")
    pq.write_table(pa.concat_tables([table, table.slice(3, 1)]), w / "metadata.parquet")
    well, site = table.column("well_id")[3].as_py(), table.column("site")[3].as_py()
    with pytest.raises(EmbedError, match=f"well {well} site {site} appears more than once"):
        run_embed(w, "baseline", tile=16, num_workers=0)
    # at the CLI: one line, exit 2, nothing written
    with pytest.raises(SystemExit) as exc:
        main(["embed", str(w), "--encoder", "baseline", "--tile", "16", "--num-workers", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "appears more than once" in err
    assert not (w / "embeddings").exists()


def test_benchmark_refuses_duplicated_site_rows(released):
    root, _ = released
    w = root / "w"
    meta = pd.read_parquet(w / "metadata.parquet")
    emb = pd.read_parquet(w / "embeddings" / "baseline" / "embeddings.parquet")
    ok = evaluate(BENCHMARK, emb, meta)  # per-site rows collapse to wells
    assert ok["metrics"]["probe_wells"]["train"] + ok["metrics"]["probe_wells"]["test"] <= len(emb)
    doubled = pd.concat([meta, meta.iloc[[5]]], ignore_index=True)
    with pytest.raises(BenchmarkError, match=rf"well '{meta['well_id'][5]}' site .* more than one row"):
        evaluate(BENCHMARK, emb, doubled)
