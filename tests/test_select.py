"""`rxcurate select`: the RxRx3-core recipe, locked-down SQL, seeded hash-based sampling, the lockfile."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from pathlib import Path

import imagecodecs
import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rxcurate.cli import app
from rxcurate.errors import LockfileError, ManifestError, SourceError
from rxcurate.layout import LOCKFILE, read_lockfile
from rxcurate.manifest import load_manifest, parse_manifest
from rxcurate.select import run_selection, select
from rxcurate.source import read_metadata

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "manifests" / "rxrx3-core.yaml"
TINY3 = REPO / "tests" / "data" / "manifests" / "tiny-rxrx3.yaml"
TINY1 = REPO / "tests" / "data" / "manifests" / "tiny-rxrx1.yaml"
KEY_RE = re.compile(r"^(gene|compound)-\d{3}/Plate\d+/(A[A-F]|[A-Z])\d{2}_s1_[1-6]$")


def _manifest(tmp_path: Path, **changes) -> Path:
    doc = load_manifest(TINY3).raw
    doc = copy.deepcopy(doc)
    for dotted, value in changes.items():
        node = doc
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    p = tmp_path / "m.yaml"
    import yaml

    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


@pytest.fixture(scope="module")
def tiny_lock(tiny_rxrx3, tmp_path_factory):
    work = tmp_path_factory.mktemp("select")
    result = select(load_manifest(TINY3), source=tiny_rxrx3, workdir=work)
    return work, result


def test_rxrx3_core_recipe_on_the_tiny_screen(tiny_rxrx3):
    m = load_manifest(CORE)
    sel = run_selection(m, tiny_rxrx3)
    _, src = read_metadata(tiny_rxrx3)
    w = sel.wells
    assert list(w["well_id"]) == sorted(w["well_id"]) and w["well_id"].is_unique
    controls = w["treatment"].isin(["EMPTY_control", "CRISPR_control"])
    assert not w["gene"].str.startswith("BLINDED_").any()
    known = src[(src.perturbation_type == "CRISPR") & ~src.treatment.str.endswith("_control")
                & ~src.gene.str.startswith("BLINDED_")]
    assert set(known.well_id) <= set(w.well_id)
    compounds = src[(src.perturbation_type == "COMPOUND") & (src.treatment != "EMPTY_control")]
    assert set(compounds.well_id) <= set(w.well_id)  # all compounds at all concentrations
    assert w.loc[~controls & (w.perturbation_type == "COMPOUND"), "concentration"].nunique() == 8
    # controls: min(n, available) per (experiment, plate) for each control type
    for treatment, n in (("EMPTY_control", 10), ("CRISPR_control", 6)):
        have = src[src.treatment == treatment].groupby(["experiment_name", "plate"]).size()
        got = w[w.treatment == treatment].groupby(["experiment_name", "plate"]).size()
        assert (got.reindex(have.index, fill_value=0) == np.minimum(have, n)).all()
    assert sel.counts["sql"] == len(known) + len(compounds)


def test_lockfile_contents(tiny_rxrx3, tiny_lock):
    work, result = tiny_lock
    lock = read_lockfile(work, load_manifest(TINY3))
    t = lock.table.to_pandas()
    assert list(t["well_id"]) == sorted(t["well_id"])
    assert list(t.columns[:10]) == ["well_id", "experiment_name", "plate", "address", "gene", "treatment", "SMILES",
                                    "concentration", "perturbation_type", "cell_type"]
    assert (t["manifest_hash"] == load_manifest(TINY3).manifest_hash()).all()
    for _, row in t.sample(5, random_state=0).iterrows():
        assert len(row["keys"]) == len(row["images"]) == len(row["size"]) == 6
        assert list(row["keys"]) == sorted(row["keys"])
        for key, rel, size in zip(row["keys"], row["images"], row["size"], strict=True):
            assert KEY_RE.match(key)
            assert key.startswith(f"{row['experiment_name']}/Plate{row['plate']}/{row['address']}_s1_")
            assert rel == f"images/{row['experiment_name']}/Plate{row['plate']}/{row['address']}_s1_w{key[-1]}.png"
            assert (tiny_rxrx3 / rel).stat().st_size == size
    assert "sha256" not in t.columns  # select reads PNG headers only; compress hashes the bytes it encodes
    assert lock.image_shape == (96, 96) and lock.n_images == 6 * len(t)
    s = result.summary
    assert s["wells"] == len(t) and s["images"] == 6 * len(t)
    assert s["bytes_per_image"] == 512 and s["projected_bytes"] == 512 * s["images"]  # 64 * 64 / rate 8
    assert sum(s["by_perturbation_type"].values()) == len(t)


def test_select_is_deterministic(tiny_rxrx3, tiny_lock, tmp_path):
    work, _ = tiny_lock
    select(load_manifest(TINY3), source=tiny_rxrx3, workdir=tmp_path)
    assert (tmp_path / LOCKFILE).read_bytes() == (work / LOCKFILE).read_bytes()


def _metadata_only_source(root: Path, df: pd.DataFrame) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "metadata.csv", index=False, lineterminator="\n")
    return root


def test_sampling_is_stable_when_plates_are_added(tiny_rxrx3, tmp_path):
    _, md = read_metadata(tiny_rxrx3)
    doc = copy.deepcopy(load_manifest(CORE).raw)
    doc["select"]["sample"] = [{"name": "e", "where": "treatment = 'EMPTY_control'", "per": ["experiment_name",
                                "plate"], "n": 2}, {"name": "c", "where": "treatment = 'CRISPR_control'",
                                "per": ["experiment_name", "plate"], "n": 1, "seed": 5}]
    m = parse_manifest(doc, tmp_path / "m.yaml")
    assert (md[md.treatment == "EMPTY_control"].groupby(["experiment_name", "plate"]).size() > 2).all()
    base = run_selection(m, _metadata_only_source(tmp_path / "a", md))
    extra = md[md.experiment_name == "gene-001"].copy()
    extra["plate"] = extra["plate"] + 100
    extra["well_id"] = extra["experiment_name"] + "_" + extra["plate"].astype(str) + "_" + extra["address"]
    more = run_selection(m, _metadata_only_source(tmp_path / "b", pd.concat([md, extra], ignore_index=True)))
    old = more.wells[more.wells.plate < 100]
    assert list(old.well_id) == list(base.wells.well_id)  # existing plates keep exactly their draw
    added = more.wells[more.wells.plate >= 100]
    for treatment, n in (("EMPTY_control", 2), ("CRISPR_control", 1)):
        have = extra[extra.treatment == treatment].groupby("plate").size()
        got = added[added.treatment == treatment].groupby("plate").size()
        assert len(have) and (got.reindex(have.index, fill_value=0) == np.minimum(have, n)).all()
    # a re-run draws the same wells
    assert list(run_selection(m, tmp_path / "b").wells.well_id) == list(more.wells.well_id)


def test_sampling_depends_on_seed_and_draws_by_hash(tiny_rxrx3, tmp_path):
    _, md = read_metadata(tiny_rxrx3)
    doc = copy.deepcopy(load_manifest(TINY3).raw)
    doc["select"]["sql"] = "SELECT well_id FROM wells WHERE false"
    doc["select"]["sample"] = [{"name": "e", "where": "treatment = 'EMPTY_control'",
                                "per": ["experiment_name", "plate"], "n": 2, "seed": 0}]
    picks = {}
    for seed in (0, 1):
        doc["select"]["sample"][0]["seed"] = seed
        picks[seed] = list(run_selection(parse_manifest(doc, tmp_path / "m.yaml"), tiny_rxrx3).wells.well_id)
    assert picks[0] != picks[1]
    # the draw is the n smallest md5("<seed>:<well_id>") per group
    ctrl = md[md.treatment == "EMPTY_control"].copy()
    ctrl["h"] = [hashlib.md5(f"0:{w}".encode()).hexdigest() for w in ctrl.well_id]
    want = ctrl.sort_values(["h", "well_id"]).groupby(["experiment_name", "plate"]).head(2)
    assert sorted(want.well_id) == picks[0]


def test_declared_table_can_be_joined(tiny_rxrx3, tmp_path):
    _, md = read_metadata(tiny_rxrx3)
    genes = sorted(md.loc[md.perturbation_type == "CRISPR", "gene"].unique())[:3]
    (tmp_path / "tables").mkdir()
    pd.DataFrame({"symbol": genes}).to_csv(tmp_path / "tables" / "genes.csv", index=False)
    doc = copy.deepcopy(load_manifest(TINY3).raw)
    doc["tables"] = {"picked": {"path": "tables/genes.csv"}}
    doc["select"] = {"sql": "SELECT well_id FROM wells JOIN picked ON wells.gene = picked.symbol"}
    sel = run_selection(parse_manifest(doc, tmp_path / "m.yaml"), tiny_rxrx3)
    assert set(sel.wells.gene) == set(genes)
    assert sel.wells.well_id.tolist() == sorted(md.loc[md.gene.isin(genes), "well_id"])


@pytest.mark.parametrize("sql, fragment", [
    ("COPY (SELECT * FROM wells) TO '{out}/leak.csv'", "must be a SELECT statement (got COPY)"),
    ("ATTACH '{out}/x.duckdb' AS x", "must be a SELECT statement (got ATTACH)"),
    ("INSTALL httpfs", "must be a SELECT statement"),
    ("LOAD httpfs", "must be a SELECT statement"),
    ("SET enable_external_access = true", "must be a SELECT statement (got SET)"),
    ("CREATE TABLE t AS SELECT well_id FROM wells", "must be a SELECT statement (got CREATE)"),
    ("SELECT well_id FROM wells; SELECT well_id FROM wells", "exactly one SELECT statement, got 2"),
    ("SELECT well_id FROM read_csv('{src}/metadata.csv')", "tried to access a file"),
    ("SELECT well_id FROM '{src}/metadata.csv'", "tried to access a file"),
    ("SELECT * FROM glob('{out}/*')", "tried to access a file"),
    ("SELECT well_id FROM wells WHERE well_id IN (SELECT * FROM read_text('/etc/hostname'))", "tried to access"),
    ("SELECT well_id FROM wels", "select.sql failed"),
    ("SELEC well_id", "not valid SQL"),
    ("SELECT plate FROM wells", "must return a well_id column"),
    ("SELECT 'nope' AS well_id", "not wells of the source"),
    ("SELECT well_id FROM wells WHERE false", "selection is empty"),
])
def test_forbidden_or_bad_sql_is_rejected(tiny_rxrx3, tmp_path, sql, fragment):
    sql = sql.format(src=tiny_rxrx3, out=tmp_path)
    doc = copy.deepcopy(load_manifest(TINY3).raw)
    doc["select"] = {"sql": sql}
    m = parse_manifest(doc, tmp_path / "m.yaml")
    with pytest.raises(ManifestError) as exc:
        select(m, source=tiny_rxrx3, workdir=tmp_path / "w")
    assert fragment in str(exc.value)
    assert "select.sql" in str(exc.value) or "selection is empty" in str(exc.value)
    assert not (tmp_path / "leak.csv").exists() and not (tmp_path / "x.duckdb").exists()
    assert not (tmp_path / "w").exists()


def test_sampler_where_is_locked_down_too(tiny_rxrx3, tmp_path):
    doc = copy.deepcopy(load_manifest(TINY3).raw)
    where = f"well_id IN (SELECT * FROM read_text('{tiny_rxrx3}/synth.json'))"
    doc["select"]["sample"] = [{"name": "x", "where": where, "n": 1}]
    with pytest.raises(ManifestError, match=r"select.sample\[0\].where tried to access a file"):
        run_selection(parse_manifest(doc, tmp_path / "m.yaml"), tiny_rxrx3)
    doc["select"]["sample"] = [{"name": "x", "where": "true", "per": ["plat"], "n": 1}]
    with pytest.raises(ManifestError, match=r"select.sample\[0\].per: unknown column 'plat'.*experiment_name"):
        run_selection(parse_manifest(doc, tmp_path / "m.yaml"), tiny_rxrx3)


def test_layout_mismatch_and_bad_source(tiny_rxrx3, tmp_path):
    with pytest.raises(ManifestError, match="layout is 'rxrx1' but the source"):
        run_selection(load_manifest(TINY1), tiny_rxrx3)
    with pytest.raises(SourceError, match="does not exist"):
        run_selection(load_manifest(TINY3), tmp_path / "absent")
    bad = tmp_path / "bad"
    bad.mkdir()
    text = (tiny_rxrx3 / "metadata.csv").read_text().splitlines()
    text[5] = text[5].replace(",COMPOUND,", ",DRUG,")
    (bad / "metadata.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(SourceError, match="perturbation_type.*line 6"):
        run_selection(load_manifest(TINY3), bad)
    fields = text[7].split(",")
    fields[2] = "seven"  # plate
    text[7] = ",".join(fields)
    (bad / "metadata.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(SourceError, match="wrong type.*plate must be an integer"):
        run_selection(load_manifest(TINY3), bad)


def _copy_source(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def test_missing_or_wrong_depth_image_names_the_file(tiny_rxrx3, tmp_path):
    src = _copy_source(tiny_rxrx3, tmp_path / "src")
    first = run_selection(load_manifest(TINY3), src).wells.iloc[0]
    lock_rel = f"images/{first.experiment_name}/Plate{first.plate}/{first.address}_s1_w3.png"
    assert (src / lock_rel).is_file()
    (src / lock_rel).unlink()
    with pytest.raises(SourceError, match=re.escape(str(src / lock_rel)) + " is missing"):
        select(load_manifest(TINY3), source=src, workdir=tmp_path / "w")
    (src / lock_rel).write_bytes(imagecodecs.png_encode(np.zeros((96, 96), np.uint8)))
    with pytest.raises(SourceError, match=re.escape(str(src / lock_rel)) + r": 96x96, 8-bit"):
        select(load_manifest(TINY3), source=src, workdir=tmp_path / "w")
    assert not (tmp_path / "w" / LOCKFILE).exists()


def test_crop_must_fit(tiny_rxrx3, tmp_path):
    m = load_manifest(_manifest(tmp_path, transform__crop={"size": 128}))
    with pytest.raises(ManifestError, match=r"transform.crop .* does not fit the source images \(96x96\)"):
        select(m, source=tiny_rxrx3, workdir=tmp_path / "w")


def test_lockfile_checks(tiny_lock, tmp_path):
    work, _ = tiny_lock
    with pytest.raises(LockfileError, match="run rxcurate select"):
        read_lockfile(tmp_path)
    (tmp_path / LOCKFILE).write_bytes((work / LOCKFILE).read_bytes()[:-100])
    with pytest.raises(LockfileError, match="unreadable"):
        read_lockfile(tmp_path)
    t = pq.read_table(work / LOCKFILE)
    meta = t.schema.metadata
    edited = t.set_column(t.column_names.index("plate"), "plate", pc.add(t.column("plate"), 1))
    pq.write_table(edited.replace_schema_metadata(meta), tmp_path / LOCKFILE)
    with pytest.raises(LockfileError, match="modified after rxcurate select"):
        read_lockfile(tmp_path)
    other = parse_manifest({**load_manifest(TINY3).raw, "select": {"sql": "SELECT well_id FROM wells"}},
                           tmp_path / "other.yaml")
    with pytest.raises(LockfileError, match="different selection"):
        read_lockfile(work, other)


def test_rxrx1_selection_has_both_sites(tiny_rxrx1, tmp_path):
    result = select(load_manifest(TINY1), source=tiny_rxrx1, workdir=tmp_path)
    lock = read_lockfile(tmp_path)
    t = lock.table.to_pandas()
    assert "site" not in t.columns and "site_id" not in t.columns
    assert all(list(s) == [1, 2] for s in t["sites"])
    assert all(len(k) == 12 for k in t["keys"])
    assert t["keys"].iloc[0][0].endswith("_s1_1") and t["keys"].iloc[0][6].endswith("_s2_1")
    assert set(t.well_type) == {"treatment", "positive_control", "negative_control"}
    assert (t[t.well_type == "negative_control"].groupby(["experiment", "plate"]).size() == 1).all()
    assert result.summary["projection"].startswith("mean of")  # psnr mode: estimated from sample encodes
    assert result.summary["bytes_per_image"] > 0


def test_select_cli(tiny_rxrx3, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["select", str(TINY3), "--source", str(tiny_rxrx3), "--workdir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    r2 = runner.invoke(app, ["select", str(TINY3), "--source", str(tiny_rxrx3), "--workdir", str(tmp_path), "--json"])
    s = json.loads(r2.output)
    assert s["lockfile"] == str(tmp_path / LOCKFILE) and s["wells"] == read_lockfile(tmp_path).table.num_rows
    assert f"wells       {s['wells']:,} in 2 experiments" in r.output
    assert "projected" in r.output and "COMPOUND" in r.output
