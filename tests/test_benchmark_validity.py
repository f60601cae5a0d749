"""Benchmarks measure biology: on the tiny synthetic screen, run through the real stages (select, compress,
baseline embed), the planted truth scores far above chance and a gene-shuffled truth falls to chance.

The demo-scale figures (targets: compound-gene AUC >= 0.8, recall >= 0.5) come from benchmarks/validity.py; tiny
has 4 plates and a handful of compounds, hence the looser bounds here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from rxcurate.benchmarks.validity import map_genes, shuffle_truth, validity
from rxcurate.errors import BenchmarkError

TINY = "tests/data/manifests/tiny-rxrx3.yaml"


@pytest.fixture(scope="module")
def tiny_all_wells(tiny_rxrx3, tmp_path_factory):
    """Every non-blinded well of the tiny screen, full 96x96 images, baseline embeddings (48 px tiles)."""
    from pathlib import Path

    from rxcurate.compress import compress
    from rxcurate.embed import run_embed
    from rxcurate.manifest import load_manifest
    from rxcurate.select import select

    base = tmp_path_factory.mktemp("validity")
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / TINY).read_text())
    raw["select"] = {"sql": "SELECT well_id FROM wells WHERE NOT starts_with(gene, 'BLINDED_')"}
    raw["transform"]["crop"] = {"size": 96}
    (base / "m.yaml").write_text(yaml.safe_dump(raw))
    m = load_manifest(base / "m.yaml")
    folder = base / "release"
    select(m, source=tiny_rxrx3, workdir=folder)
    compress(m, source=tiny_rxrx3, workdir=folder, workers=1)
    run_embed(folder, "baseline", device="cpu", num_workers=0, tile=48)
    emb = pd.read_parquet(folder / "embeddings" / "baseline" / "embeddings.parquet")
    meta = pd.read_parquet(folder / "metadata.parquet")
    truth = {"relationships": tiny_rxrx3 / "truth" / "relationships.csv",
             "compound_gene_interactions": tiny_rxrx3 / "truth" / "compound_gene_interactions.csv"}
    return emb, meta, truth


def test_planted_truth_beats_chance_and_shuffled_truth_falls_to_chance(tiny_all_wells):
    emb, meta, truth = tiny_all_wells
    out = validity(emb, meta, truth, seed=0)
    ggr = out["benchmarks"]["gene-gene-recall"]
    cga = out["benchmarks"]["compound-gene-activity"]
    # chance for recall at (0.05, 0.95) is 0.1
    assert ggr["true"]["relationships/recall_0.05_0.95"] >= 0.35
    assert ggr["shuffled"]["relationships/recall_0.05_0.95"] <= 0.2
    assert cga["true"]["compounds_evaluated"] >= 3
    assert cga["true"]["auc_roc_max_mean"] >= 0.75
    assert abs(cga["true"]["random_baseline_auc_roc_max_mean"] - 0.5) < 0.1
    assert cga["shuffled"]["auc_roc_max_mean"] <= 0.65
    assert cga["true"]["auc_roc_max_mean"] - cga["shuffled"]["auc_roc_max_mean"] >= 0.25
    # deterministic
    assert validity(emb, meta, truth, seed=0) == out


def test_shuffle_truth_is_a_seeded_permutation_of_map_genes():
    rel = pd.DataFrame({"entity1": ["A", "A", "C"], "entity2": ["B", "X", "D"]})
    cgi = pd.DataFrame({"gene_symbol": ["A", "D", "X"], "nM_value": [10.0, 20000.0, 5.0], "treatment": ["c1"] * 3})
    genes = np.array(["D", "C", "B", "A"], dtype=object)
    a = shuffle_truth({"relationships": rel, "compound_gene_interactions": cgi}, genes, seed=3)
    b = shuffle_truth({"relationships": rel, "compound_gene_interactions": cgi}, genes, seed=3)
    pd.testing.assert_frame_equal(a["relationships"], b["relationships"])
    # one permutation shared by all tables; genes outside the map (X) keep their names
    perm = dict(zip(rel["entity1"], a["relationships"]["entity1"], strict=True))
    perm |= dict(zip(rel["entity2"], a["relationships"]["entity2"], strict=True))
    assert perm["X"] == "X"
    assert sorted(perm[g] for g in "ABCD") == list("ABCD")
    assert list(a["compound_gene_interactions"]["gene_symbol"]) == [perm["A"], perm["D"], "X"]
    moved = [shuffle_truth({"relationships": rel}, genes, seed=s)["relationships"]["entity1"].tolist()
             for s in range(6)]
    assert len({tuple(x) for x in moved}) > 1  # the seed matters


def test_validity_errors_name_the_fix():
    meta = pd.DataFrame({"well_id": ["w1"], "gene": ["A"], "perturbation_type": ["CRISPR"]})
    with pytest.raises(BenchmarkError, match="at least 2 genes"):
        shuffle_truth({}, map_genes(meta), seed=0)
    with pytest.raises(BenchmarkError, match="unknown truth name"):
        validity(pd.DataFrame(), meta, {"corum": "x.csv"})
    with pytest.raises(BenchmarkError, match="'gene' column"):
        map_genes(pd.DataFrame({"well_id": ["w1"]}))
