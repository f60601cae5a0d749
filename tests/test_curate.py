"""Phenotype-consistency curation (select.filters, rxcurate.curate) on synthetic RxRx3 screens with planted
biology: genes in a module (truth/relationships.csv) have a phenotype, the other genes have none."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from rxcurate.cli import app, main
from rxcurate.curate import keep_mask, replicate_consistency
from rxcurate.errors import CompressError, ManifestError
from rxcurate.io import sha256_file
from rxcurate.layout import CANDIDATES, COMPARISON, CURATION, LOCK_META_KEY, PHENOSTATS, SOURCE_HINT, read_lockfile
from rxcurate.manifest import load_manifest, parse_manifest
from rxcurate.pipeline import run_select
from rxcurate.select import select

TINY = Path(__file__).resolve().parent / "data" / "manifests" / "tiny-rxrx3.yaml"
# Every non-blinded knockout and every control of the gene experiment: the candidates.
GENES_SQL = ("SELECT well_id FROM wells WHERE perturbation_type = 'CRISPR' AND NOT starts_with(gene, 'BLINDED_')")


def _raw(p_below: float = 0.05, **filt) -> dict:
    raw = yaml.safe_load(TINY.read_text())
    raw["select"] = {"sql": GENES_SQL, "filters": [{"stat": "replicate_consistency", "embeddings": "baseline",
                                                    "p_below": p_below, "apply_to": ["CRISPR"], **filt}]}
    raw["embeddings"] = [{"encoder": "baseline", "tile_size": 32}]
    return raw


def _write(path: Path, raw: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _scores(stats: pd.DataFrame, source: Path) -> tuple[float, float, float]:
    """(precision, recall, share of null genes dropped) of the filter against the planted truth."""
    rel = pd.read_csv(source / "truth" / "relationships.csv")
    active = set(rel["entity1"]) | set(rel["entity2"])
    is_active = stats["perturbation"].isin(active).to_numpy()
    passed = stats["passed"].to_numpy()
    assert is_active.any() and (~is_active).any(), "the screen needs both planted active and null genes"
    tp = int((passed & is_active).sum())
    precision = tp / max(1, int(passed.sum()))
    recall = tp / int(is_active.sum())
    null_dropped = float((~passed[~is_active]).mean())
    return precision, recall, null_dropped


@pytest.fixture(scope="module")
def curated(tiny_rxrx3, tmp_path_factory) -> tuple[Path, Path]:
    """(manifest, workdir) of a filtered selection on the tiny screen."""
    base = tmp_path_factory.mktemp("curated")
    manifest = _write(base / "m.yaml", _raw())
    run_select(load_manifest(manifest), source=tiny_rxrx3, workdir=base / "w")
    return manifest, base / "w"


def test_filter_keeps_planted_actives_and_drops_nulls_on_tiny(curated, tiny_rxrx3):
    manifest, work = curated
    stats = pd.read_parquet(work / PHENOSTATS)
    assert set(stats["perturbation_type"]) == {"CRISPR"} and stats["perturbation"].is_unique
    assert (stats["wells"] == 4).all()  # tiny: 2 guides x 2 replicates per gene
    precision, recall, null_dropped = _scores(stats, tiny_rxrx3)
    # tiny (4 wells per gene, 6 held-out controls) has power but a coarse null: bounds measured 1.0 / 0.61 / 1.0
    assert precision >= 0.9, precision
    assert recall >= 0.5, recall
    assert null_dropped >= 0.8, null_dropped

    lock = read_lockfile(work, load_manifest(manifest))
    wells = lock.table.to_pandas()
    ctrl = wells["treatment"].isin(["EMPTY_control", "CRISPR_control"])
    source = pd.read_csv(tiny_rxrx3 / "metadata.csv")
    gene_plates = source[source["perturbation_type"] == "CRISPR"]
    assert ctrl.sum() == gene_plates["treatment"].isin(["EMPTY_control", "CRISPR_control"]).sum()  # all kept
    assert set(wells.loc[~ctrl, "gene"]) == set(stats.loc[stats["passed"], "perturbation"])
    cand = read_lockfile(work / CANDIDATES)
    assert cand.table.num_rows > lock.table.num_rows
    assert set(wells["well_id"]) <= set(cand.table.column("well_id").to_pylist())

    report = json.loads((work / CURATION).read_text())
    crispr = report["by_perturbation_type"]["CRISPR"]
    assert crispr["perturbations"]["kept"] == int(stats["passed"].sum())
    assert crispr["perturbations"]["dropped"] == int((~stats["passed"]).sum())
    assert crispr["wells"]["kept"] + crispr["controls"]["kept"] == lock.table.num_rows
    assert sum(e["kept"] for e in report["by_experiment"].values()) == lock.table.num_rows
    info = lock.info["curation"]
    assert info["phenostats_sha256"] == sha256_file(work / PHENOSTATS) == report["phenostats"]["sha256"]
    assert info["candidates_content_hash"] == cand.content_hash
    assert info["kept_wells"] == lock.table.num_rows


def test_filter_is_deterministic_and_lockfile_has_no_machine_path(curated, tiny_rxrx3, tmp_path):
    manifest, work = curated
    again = tmp_path / "again"
    run_select(load_manifest(manifest), source=tiny_rxrx3, workdir=again)
    for name in (PHENOSTATS, "lockfile.parquet", CURATION):
        assert (again / name).read_bytes() == (work / name).read_bytes(), name
    data = (again / "lockfile.parquet").read_bytes()
    for path in {str(tiny_rxrx3), str(tiny_rxrx3.resolve()), str(tmp_path)}:
        assert path.encode() not in data
    assert b"source_root" not in pq.read_schema(again / "lockfile.parquet").metadata[LOCK_META_KEY]
    # the root select read is remembered locally (never published) and offered to later stages
    assert json.loads((again / SOURCE_HINT).read_text())["source_root"] == str(tiny_rxrx3.resolve())
    assert read_lockfile(again).info["source_root"] == str(tiny_rxrx3.resolve())


def test_other_seed_changes_the_null_not_the_format(curated, tiny_rxrx3):
    _, work = curated
    emb = pd.read_parquet(work / CANDIDATES / "embeddings" / "baseline" / "embeddings.parquet")
    meta = pd.read_parquet(work / CANDIDATES / "metadata.parquet")
    a = replicate_consistency(emb, meta, seed=0)
    b = replicate_consistency(emb, meta, seed=0)
    c = replicate_consistency(emb, meta, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert list(a["perturbation"]) == list(c["perturbation"])
    assert not np.allclose(a["p_value"], c["p_value"], equal_nan=True)  # a different null draw
    stats = pd.read_parquet(work / PHENOSTATS)
    np.testing.assert_array_equal(stats["p_value"].to_numpy(), a["p_value"].to_numpy())


def test_keep_mask_semantics():
    wells = pd.DataFrame({
        "perturbation_type": ["CRISPR", "CRISPR", "CRISPR", "COMPOUND", "COMPOUND", "COMPOUND"],
        "gene": ["A", "B", "EMPTY_control", "", "", "EMPTY_control"],
        "treatment": ["A_guide_1", "B_guide_1", "EMPTY_control", "C1", "C1", "EMPTY_control"],
        "concentration": [np.nan, np.nan, np.nan, 1.0, 10.0, np.nan],
    })
    stats = pd.DataFrame({"perturbation_type": ["CRISPR", "CRISPR", "COMPOUND", "COMPOUND"],
                          "perturbation": ["A", "B", "C1", "C1"], "concentration": [np.nan, np.nan, 1.0, 10.0],
                          "passed": [True, False, False, True]})
    spec = parse_manifest(_raw(apply_to=["CRISPR", "COMPOUND"]), "m.yaml").filters[0]
    assert keep_mask(wells, (spec,), [stats]).tolist() == [True, False, True, False, True, True]
    crispr_only = dataclasses.replace(spec, apply_to=("CRISPR",))
    assert keep_mask(wells, (crispr_only,), [stats[:2]]).tolist() == [True, False, True, True, True, True]
    no_ctrl = dataclasses.replace(spec, keep_controls=False)
    assert keep_mask(wells, (no_ctrl,), [stats]).tolist() == [True, False, False, False, True, False]


@pytest.mark.parametrize("change, match", [
    ({"p_below": 0}, r"select\.filters\[0\]\.p_below"),
    ({"p_below": 1.5}, r"select\.filters\[0\]\.p_below"),
    ({"stat": "magic"}, r"select\.filters\[0\]\.stat.*replicate_consistency"),
    ({"apply_to": ["SIRNA"]}, r"select\.filters\[0\]\.apply_to\[0\].*CRISPR"),
    ({"apply_to": []}, r"select\.filters\[0\]\.apply_to"),
    ({"keep_controls": "yes"}, r"select\.filters\[0\]\.keep_controls"),
    ({"threshold": 0.1}, r"select\.filters\[0\].*unknown key 'threshold'"),
    ({"embeddings": "openphenom"}, r"select\.filters\[0\]\.embeddings: 'openphenom' is not an entry.*baseline"),
    ({"embeddings": "timm-vit/8"}, r"select\.filters\[0\]\.embeddings.*e\.g\. embeddings: baseline"),
])
def test_bad_filter_specs_name_the_field(change, match):
    raw = _raw()
    raw["select"]["filters"][0].update(change)
    with pytest.raises(ManifestError, match=match):
        parse_manifest(raw, "m.yaml")


def test_missing_fields_layout_and_embeddings_list():
    raw = _raw()
    del raw["select"]["filters"][0]["p_below"]
    with pytest.raises(ManifestError, match=r"select\.filters\[0\]\.p_below: required.*e\.g\. p_below: 0\.01"):
        parse_manifest(raw, "m.yaml")
    raw = _raw()
    del raw["embeddings"]
    with pytest.raises(ManifestError, match=r"not an entry of the manifest's embeddings list.*add embeddings"):
        parse_manifest(raw, "m.yaml")
    raw = _raw()
    raw["layout"] = "rxrx1"
    raw["select"]["sql"] = "SELECT well_id FROM wells"
    with pytest.raises(ManifestError, match=r"select\.filters needs layout rxrx3"):
        parse_manifest(raw, "m.yaml")
    # filters are part of the selection hash; manifests without filters keep theirs
    a, b = parse_manifest(_raw(0.05), "m.yaml"), parse_manifest(_raw(0.01), "m.yaml")
    assert a.selection_hash() != b.selection_hash()
    plain = _raw()
    del plain["select"]["filters"]
    assert "filters" not in parse_manifest(plain, "m.yaml").selection_section()["select"]


def test_cli_bad_filter_exits_2_with_one_line(tmp_path, tiny_rxrx3, capsys):
    raw = _raw()
    raw["select"]["filters"][0]["embeddings"] = "nope"
    manifest = _write(tmp_path / "bad.yaml", raw)
    with pytest.raises(SystemExit) as exc:
        main(["select", str(manifest), "--source", str(tiny_rxrx3), "--workdir", str(tmp_path / "w")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert "select.filters[0].embeddings" in err
    assert not (tmp_path / "w").exists()  # no partial output


def test_select_help_explains_filters():
    res = CliRunner().invoke(app, ["select", "--help"])
    assert res.exit_code == 0 and "select.filters" in res.output and "phenostats.parquet" in res.output


def test_unknown_block_folder_is_named_and_writes_no_lockfile(curated, tiny_rxrx3, tmp_path):
    _, work = curated
    w = tmp_path / "w"
    shutil.copytree(work / CANDIDATES, w / CANDIDATES)  # the candidates' stages are up to date: only the check runs
    manifest = _write(tmp_path / "m.yaml", _raw(embeddings="baseline/block08"))
    with pytest.raises(ManifestError, match=r"select\.filters\[0\]\.embeddings: block folder 'block08'"):
        run_select(load_manifest(manifest), source=tiny_rxrx3, workdir=w)
    assert not (w / "lockfile.parquet").exists() and not (w / PHENOSTATS).exists()


def test_select_without_filters_records_no_path_and_compress_asks_for_source(tiny_rxrx3, tmp_path):
    from rxcurate.compress import compress

    m = load_manifest(TINY)
    w = tmp_path / "w"
    (w).mkdir()
    (w / PHENOSTATS).write_bytes(b"stale")  # of an earlier filtered selection: must not survive
    select(m, source=tiny_rxrx3, workdir=w)
    assert not (w / PHENOSTATS).exists()
    assert str(tiny_rxrx3.resolve()).encode() not in (w / "lockfile.parquet").read_bytes()
    (w / SOURCE_HINT).unlink()
    assert "source_root" not in read_lockfile(w, m).info
    with pytest.raises(CompressError, match="--source"):
        compress(m, workdir=w)


def test_bigger_screen_recovers_nearly_all_actives(tmp_path, monkeypatch):
    """A slightly bigger screen than tiny (3 replicates per guide, 24 empty controls per plate): the filter then
    finds every planted active gene at p < 0.05 and keeps no null gene. (More replicates alone do not help: with 8
    wells per gene and a null pool of 12 controls the pseudo-perturbations overlap, the null is too narrow and null
    genes pass: the pool must be well above a perturbation's size; curation.json records both.)"""
    from rxcurate.synth import PRESETS, generate

    preset = dataclasses.replace(PRESETS["rxrx3"]["tiny"], name="tiny-curation", gene_replicates=3,
                                 empty_controls_per_plate=24, wells_per_plate=140, n_blinded_genes=0, n_compounds=2)
    monkeypatch.setitem(PRESETS["rxrx3"], "tiny-curation", preset)
    source = generate(tmp_path / "src", layout="rxrx3", preset="tiny-curation", seed=0)
    manifest = _write(tmp_path / "m.yaml", _raw())
    run_select(load_manifest(manifest), source=source, workdir=tmp_path / "w")
    stats = pd.read_parquet(tmp_path / "w" / PHENOSTATS)
    assert (stats["wells"] == 6).all()
    precision, recall, null_dropped = _scores(stats, source)
    assert precision >= 0.9, precision  # measured 1.0 (synth seed 1: 0.94)
    assert recall >= 0.9, recall  # measured 1.0
    assert null_dropped >= 0.8, null_dropped  # measured 1.0 (synth seed 1: 0.86)
    report = json.loads((tmp_path / "w" / CURATION).read_text())
    assert report["null"] == [{"filter": 0, "null_pool": 24, "max_wells": 6, "reference": 24, "null_samples": 1000}]


def test_release_with_filter_is_valid_and_card_cites_the_stats(tiny_rxrx3, tmp_path, monkeypatch):
    monkeypatch.setenv("RXCURATE_PROGRESS", "0")
    raw = _raw()
    raw["select"]["sql"] = GENES_SQL.replace("perturbation_type = 'CRISPR' AND ", "")  # genes, compounds, controls
    raw["select"]["filters"][0]["apply_to"] = ["CRISPR", "COMPOUND"]
    raw.update(version="0.1.0", benchmarks=["gene-gene-recall", "perturbation-signal"],
               card={"repo_id": "test/tiny-curated", "pretty_name": "Tiny curated"})
    manifest = _write(tmp_path / "m.yaml", raw)
    args = ["release", str(manifest), "--source", str(tiny_rxrx3), "--hub", str(tmp_path / "hub"),
            "--workdir", str(tmp_path / "w"), "--workers", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "validate: passed" in res.output, res.output
    w = tmp_path / "w"
    release = json.loads((w / "release.json").read_text())
    assert {PHENOSTATS, CURATION, COMPARISON} <= set(release["files"])
    card = (w / "README.md").read_text()
    assert "Phenotype-consistency curation" in card
    assert f"[`{PHENOSTATS}`]({PHENOSTATS})" in card and sha256_file(w / PHENOSTATS)[:16] in card
    comp = json.loads((w / COMPARISON).read_text())
    assert set(comp["benchmarks"]) == {"gene-gene-recall", "perturbation-signal"}
    assert comp["wells"]["curated"] < comp["wells"]["candidates"]
    for pair in comp["benchmarks"].values():
        assert pair["candidates"] and pair["curated"] and set(pair["candidates"]) == set(pair["curated"])
    # curation raises the share of significant perturbations (nulls are dropped)
    sig = "all/consistency/share_significant"
    ps = comp["benchmarks"]["perturbation-signal"]
    assert ps["curated"][sig] > ps["candidates"][sig]
    # the published lockfile carries no machine path
    repo = tmp_path / "hub" / "datasets" / "test" / "tiny-curated"
    blob = subprocess.run(["git", "-C", str(repo), "show", "v0.1.0:lockfile.parquet"], capture_output=True,
                          check=True).stdout
    assert str(tiny_rxrx3.resolve()).encode() not in blob and str(tmp_path).encode() not in blob
    # a second run finds everything up to date (curation included) and publishes nothing
    refs = subprocess.run(["git", "-C", str(repo), "show-ref"], capture_output=True, text=True, check=True).stdout
    stats = (w / PHENOSTATS).read_bytes()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "select: up to date" in again.output
    assert subprocess.run(["git", "-C", str(repo), "show-ref"], capture_output=True, text=True,
                          check=True).stdout == refs
    assert (w / PHENOSTATS).read_bytes() == stats


def test_example_manifest_uses_the_filter():
    m = load_manifest(Path(__file__).resolve().parents[1] / "manifests" / "rxrx3-core-curated.yaml")
    assert [(f.stat, f.embeddings, f.p_below, f.keep_controls) for f in m.filters] == [
        ("replicate_consistency", "baseline", 0.01, True)]
    assert m.filters[0].apply_to == ("COMPOUND", "CRISPR")
