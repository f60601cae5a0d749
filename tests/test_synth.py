"""Synthetic screens: formats, determinism, and planted biology that a simple feature can see."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import imagecodecs
import numpy as np
import pandas as pd
import pytest

from rxcurate.errors import SynthError
from rxcurate.source import ADDRESSES_1536, RXRX1_COLUMNS, RXRX3_COLUMNS, RXRX3_CONCENTRATIONS_UM, read_metadata
from rxcurate.synth import generate, make_design


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path, tiny_rxrx3):
    again = generate(tmp_path / "again", layout="rxrx3", preset="tiny", seed=0, workers=1)
    assert _tree_digest(again) == _tree_digest(tiny_rxrx3)  # serial run == parallel session fixture
    other = generate(tmp_path / "other", layout="rxrx3", preset="tiny", seed=1)
    a, b = _tree_digest(tiny_rxrx3), _tree_digest(other)
    assert a["metadata.csv"] != b["metadata.csv"]


def test_rxrx3_metadata_schema_and_domains(tiny_rxrx3):
    raw = pd.read_csv(tiny_rxrx3 / "metadata.csv", keep_default_na=False)
    assert list(raw.columns) == RXRX3_COLUMNS
    layout, md = read_metadata(tiny_rxrx3)
    assert layout.name == "rxrx3"
    assert md["well_id"].is_unique
    assert set(md["address"]) <= set(ADDRESSES_1536)
    assert (md["well_id"] == md["experiment_name"] + "_" + md["plate"].astype(str) + "_" + md["address"]).all()
    assert set(md["experiment_name"].str.replace(r"\d{3}$", "", regex=True)) == {"gene-", "compound-"}
    assert set(md["perturbation_type"]) == {"CRISPR", "COMPOUND"}
    assert set(md["cell_type"]) == {"HUVEC"}
    crispr = md[md.perturbation_type == "CRISPR"]
    ctrl = crispr.treatment.isin(["EMPTY_control", "CRISPR_control"])
    assert ctrl.any() and set(crispr.loc[ctrl, "treatment"]) == {"EMPTY_control", "CRISPR_control"}
    guides = crispr.loc[~ctrl]
    pattern_ok = (guides.gene + "_guide_" + guides.treatment.str.extract(r"_guide_(\d+)$")[0]) == guides.treatment
    assert pattern_ok.all()
    assert guides["concentration"].isna().all()
    assert guides["gene"].str.startswith("BLINDED_").any() and (~guides["gene"].str.startswith("BLINDED_")).any()
    cpd = md[(md.perturbation_type == "COMPOUND") & (md.treatment != "EMPTY_control")]
    assert set(cpd["concentration"]) == set(RXRX3_CONCENTRATIONS_UM)
    assert (cpd["SMILES"] != "").all() and (cpd["gene"] == "").all()
    # every compound at every concentration, replicated
    assert (cpd.groupby(["treatment", "concentration"]).size() >= 2).all()


def test_rxrx3_images_count_shape_dtype(tiny_rxrx3):
    files = sorted((tiny_rxrx3 / "images").rglob("*.png"))
    md = pd.read_csv(tiny_rxrx3 / "metadata.csv")
    assert len(files) == 6 * len(md)
    assert all(re.fullmatch(r"[A-Z]{1,2}\d\d_s1_w[1-6]\.png", f.name) for f in files)
    for f in files[:: max(1, len(files) // 20)]:
        img = imagecodecs.png_decode(f.read_bytes())
        assert img.dtype == np.uint16 and img.shape == (96, 96)
        assert img.max() > 1000  # cells are rendered above background


def test_rxrx1_layout(tiny_rxrx1):
    raw = pd.read_csv(tiny_rxrx1 / "metadata.csv")
    assert list(raw.columns) == RXRX1_COLUMNS
    layout, md = read_metadata(tiny_rxrx1)
    assert layout.name == "rxrx1"
    assert set(md.cell_type) == {"HEPG2", "HUVEC", "RPE", "U2OS"}
    assert md.groupby("cell_type")["experiment"].nunique().min() >= 2
    assert (md.groupby("well_id")["site"].apply(sorted).apply(tuple) == (1, 2)).all()
    assert set(md.well_type) == {"treatment", "negative_control", "positive_control"}
    assert set(md.dataset) == {"train", "test"}
    # a treatment siRNA appears in every experiment (learnable across batches)
    treat = md[md.well_type == "treatment"]
    assert (treat.groupby("sirna")["experiment"].nunique() == md.experiment.nunique()).all()
    f = tiny_rxrx1 / "images" / md.experiment[0] / f"Plate{md.plate[0]}" / f"{md.well[0]}_s1_w3.png"
    img = imagecodecs.png_decode(f.read_bytes())
    assert img.dtype == np.uint8 and img.shape == (64, 64)
    assert len(list((tiny_rxrx1 / "images").rglob("*.png"))) == 6 * len(md)


def test_truth_files_formats(tiny_rxrx3):
    rel = pd.read_csv(tiny_rxrx3 / "truth" / "relationships.csv")
    assert list(rel.columns) == ["entity1", "entity2"] and len(rel) > 10
    cgi = pd.read_csv(tiny_rxrx3 / "truth" / "compound_gene_interactions.csv")
    assert list(cgi.columns) == ["gene_symbol", "nM_value", "measurement_type", "database", "treatment"]
    assert (cgi.nM_value <= 1000).any() and (cgi.nM_value > 10000).any()
    md = pd.read_csv(tiny_rxrx3 / "metadata.csv", keep_default_na=False)
    assert set(cgi.treatment) <= set(md.treatment)
    assert set(rel.entity1) | set(rel.entity2) <= set(md.gene)


def test_full_metadata_preset_is_rxrx3_scale():
    d = make_design("rxrx3", "full-metadata", 0)
    md = d.metadata
    assert 2_000_000 <= len(md) <= 2_400_000
    assert 170 <= md.experiment_name.nunique() <= 190
    assert md.groupby(["experiment_name", "plate"]).size().max() <= 1536
    assert d.phenotype is None


@pytest.mark.parametrize(
    "kwargs,match",
    [({"layout": "rxrx9"}, "--layout"), ({"preset": "huge"}, "--preset"), ({"seed": -1}, "--seed")],
)
def test_bad_arguments_name_the_flag(tmp_path, kwargs, match):
    args = {"layout": "rxrx3", "preset": "tiny", "seed": 0} | kwargs
    with pytest.raises(SynthError, match=match):
        generate(tmp_path / "x", **args)


def test_refuses_non_empty_out(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(SynthError, match="--overwrite"):
        generate(tmp_path / "x", preset="tiny")
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


# --- planted biology ------------------------------------------------------------------------------------------

def _well_features(src: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-well log channel mean and 99th percentile, z-scored against the plate's EMPTY_control wells."""
    _, md = read_metadata(src)
    feats = np.zeros((len(md), 12))
    for i, r in enumerate(md.itertuples()):
        for c in range(6):
            p = src / "images" / r.experiment_name / f"Plate{r.plate}" / f"{r.address}_s1_w{c + 1}.png"
            img = imagecodecs.png_decode(p.read_bytes()).astype(np.float64)
            feats[i, 2 * c : 2 * c + 2] = np.log([img.mean(), np.percentile(img, 99)])
    plate = md.experiment_name + "/" + md.plate.astype(str)
    for key in plate.unique():
        m = (plate == key).to_numpy()
        ctrl = m & (md.treatment == "EMPTY_control").to_numpy()
        feats[m] = (feats[m] - feats[ctrl].mean(0)) / (feats[ctrl].std(0) + 1e-9)
    return md, feats


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


@pytest.fixture(scope="module")
def profiles(tiny_rxrx3):
    md, feats = _well_features(tiny_rxrx3)
    df = pd.DataFrame(feats, index=md.index)
    gene_mask = (md.perturbation_type == "CRISPR") & ~md.treatment.str.endswith("_control")
    genes = df[gene_mask].groupby(md.gene[gene_mask]).mean()
    cpd_mask = (md.perturbation_type == "COMPOUND") & (md.treatment != "EMPTY_control")
    cpds = df[cpd_mask].groupby([md.treatment[cpd_mask], md.concentration[cpd_mask]]).mean()
    return genes, cpds


def _module_auc(genes: pd.DataFrame, rel: pd.DataFrame) -> float:
    names = list(genes.index)
    pairs = {tuple(sorted(p)) for p in rel[["entity1", "entity2"]].itertuples(index=False)}
    pos, neg = [], []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            v = float(_cos(genes.iloc[i].to_numpy(), genes.iloc[j].to_numpy()))
            (pos if (names[i], names[j]) in pairs else neg).append(v)
    return _auc(np.array(pos), np.array(neg))


def test_planted_modules_visible_in_channel_means_and_shuffled_truth_at_chance(tiny_rxrx3, profiles):
    genes, _ = profiles
    rel = pd.read_csv(tiny_rxrx3 / "truth" / "relationships.csv")
    assert _module_auc(genes, rel) > 0.7
    rng = np.random.default_rng(0)
    names = np.array(genes.index)
    aucs = []
    for _ in range(20):
        perm = dict(zip(names, rng.permutation(names), strict=True))
        shuffled = rel.assign(entity1=rel.entity1.map(perm), entity2=rel.entity2.map(perm)).dropna()
        aucs.append(_module_auc(genes, shuffled))
    assert abs(np.mean(aucs) - 0.5) < 0.1


def _activity_auc(genes: pd.DataFrame, cpds: pd.DataFrame, cgi: pd.DataFrame) -> float:
    pos, neg = [], []
    for row in cgi.itertuples():
        if row.gene_symbol not in genes.index or 1000 < row.nM_value <= 10000:
            continue
        g = genes.loc[row.gene_symbol].to_numpy()
        score = float(np.max(np.abs(_cos(cpds.loc[row.treatment].to_numpy(), g[None, :]))))
        (pos if row.nM_value <= 1000 else neg).append(score)
    return _auc(np.array(pos), np.array(neg))


def test_planted_compound_targets_visible_and_shuffled_truth_at_chance(tiny_rxrx3, profiles):
    genes, cpds = profiles
    cgi = pd.read_csv(tiny_rxrx3 / "truth" / "compound_gene_interactions.csv")
    # 8 compounds, 12 channel-mean features: a coarse check (tests/test_benchmark_validity.py runs the real
    # select -> compress -> embed -> benchmark path; benchmarks/validity.py checks the demo-scale targets)
    assert _activity_auc(genes, cpds, cgi) > 0.7
    rng = np.random.default_rng(0)
    aucs = [_activity_auc(genes, cpds, cgi.assign(nM_value=rng.permutation(cgi.nM_value.to_numpy())))
            for _ in range(20)]
    assert abs(np.mean(aucs) - 0.5) < 0.12
