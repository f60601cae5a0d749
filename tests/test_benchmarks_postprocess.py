"""Batch correction on controls and aggregation to the perturbation map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import linalg
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from rxcurate.benchmarks import load_definition
from rxcurate.benchmarks.inputs import build_map, corrected_features, map_from_frame, prepare_wells
from rxcurate.benchmarks.postprocess import aggregate, centerscale, pca_centerscale_on_controls, tvn_on_controls
from rxcurate.benchmarks.synthetic import synthetic_rxrx3
from rxcurate.errors import BenchmarkError


def _data(seed=0, n=300, d=6, batches=3):
    rng = np.random.default_rng(seed)
    batch = np.repeat([f"b{i}" for i in range(batches)], n // batches)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    for i in range(batches):
        x[batch == f"b{i}"] = x[batch == f"b{i}"] * rng.uniform(0.5, 2, d) + rng.normal(scale=5, size=d)
    ctrl = rng.random(n) < 0.4
    return x, ctrl, batch


def _cos(y):
    u = y / np.linalg.norm(y, axis=1, keepdims=True)
    return u @ u.T


def test_centerscale_per_batch_standardises_each_batchs_controls():
    x, ctrl, batch = _data()
    y = centerscale(x, ctrl, batch)
    for b in np.unique(batch):
        c = y[(batch == b) & ctrl]
        assert np.allclose(c.mean(axis=0), 0, atol=1e-12) and np.allclose(c.std(axis=0), 1)
        ref = StandardScaler().fit(x[(batch == b) & ctrl]).transform(x[batch == b])
        assert np.allclose(y[batch == b], ref)


def test_pca_centerscale_matches_sklearn_reference():
    x, ctrl, batch = _data(1)
    y = pca_centerscale_on_controls(x, ctrl, batch)
    z = PCA().fit(x[ctrl]).transform(x)
    for b in np.unique(batch):
        rows = batch == b
        z[rows] = StandardScaler().fit(z[rows & ctrl]).transform(z[rows])
    assert np.allclose(np.abs(y), np.abs(z), atol=1e-8)  # equal up to the sign of each PCA axis


@pytest.mark.parametrize("center", ["global", "batch"])
def test_tvn_matches_the_efaar_recipe(center):
    x, ctrl, batch = _data(2)
    y = tvn_on_controls(x, ctrl, batch, center=center)
    z = StandardScaler().fit(x[ctrl]).transform(x)
    z = PCA().fit(z[ctrl]).transform(z)
    if center == "global":
        z = StandardScaler().fit(z[ctrl]).transform(z)
    else:
        z = centerscale(z, ctrl, batch)
    for b in np.unique(batch):
        rows = batch == b
        cov = np.cov(z[rows & ctrl], rowvar=False, ddof=1) + 0.5 * np.eye(z.shape[1])
        z[rows] = z[rows] @ np.real(linalg.fractional_matrix_power(cov, -0.5))
    assert np.allclose(_cos(y), _cos(z), atol=1e-8)  # identical geometry (PCA axis signs are arbitrary)


def test_tvn_removes_batch_shifts_and_gains_of_controls():
    x, ctrl, batch = _data(3)
    y = tvn_on_controls(x, ctrl, batch)
    means = np.array([y[(batch == b) & ctrl].mean(axis=0) for b in np.unique(batch)])
    assert np.allclose(means, 0, atol=1e-10)
    # whitening by (C + 0.5 I)^(-1/2) leaves each batch's controls with covariance C (C + 0.5 I)^(-1): eigenvalues
    # l / (l + 0.5) in (0, 1), whatever each batch's gains were
    for b in np.unique(batch):
        ev = np.linalg.eigvalsh(np.cov(y[(batch == b) & ctrl], rowvar=False))
        assert (ev > 0).all() and (ev < 1).all()
    assert not np.allclose(x[ctrl & (batch == "b0")].mean(axis=0), x[ctrl & (batch == "b1")].mean(axis=0), atol=1)


def test_pca_with_fewer_controls_than_dimensions_drops_degenerate_axes():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 10))
    ctrl = np.zeros(40, dtype=bool)
    ctrl[:5] = True
    y = pca_centerscale_on_controls(x, ctrl, np.array(["a"] * 40))
    assert y.shape == (40, 4) and np.isfinite(y).all()


def test_batches_without_controls_are_errors():
    x, ctrl, batch = _data()
    ctrl[batch == "b1"] = False
    with pytest.raises(BenchmarkError, match="batch 'b1' has no control wells"):
        centerscale(x, ctrl, batch)
    with pytest.raises(BenchmarkError, match="batch 'b1'"):
        tvn_on_controls(x, ctrl, batch)


def test_aggregate_mean_and_median():
    x = np.arange(12, dtype=float).reshape(6, 2)
    x[4] = [20, 21]
    codes = np.array([1, 0, 1, -1, 1, 0])  # code 1: rows 0, 2, 4; code 0: rows 1, 5; row 3 ignored
    assert np.allclose(aggregate(x, codes, 2, "mean"), [[6, 7], [8, 9]])
    assert np.allclose(aggregate(x, codes, 2, "median"), [[6, 7], [4, 5]])


def test_map_aggregates_guides_per_gene_and_compounds_per_concentration():
    data = synthetic_rxrx3(n_genes=8, n_compounds=3, concentrations=(0.1, 1.0), controls_per_experiment=12,
                           gene_experiments=2, compound_experiments=1, dim=8)
    defn = load_definition("gene-gene-recall-tvn")
    defn["postprocess"]["method"] = "none"
    meta = data["metadata"].copy()
    meta.loc[meta["concentration"] == 1.0, "concentration"] = 2.0  # not a published concentration: dropped
    wells = prepare_wells(defn, data["embeddings"], meta)
    m, codes = build_map(defn, wells, corrected_features(defn, wells))
    genes = m.perturbation[m.kind == "gene"]
    assert sorted(genes) == [f"G{i:04d}" for i in range(8)]  # guides merged, controls removed
    assert set(m.concentration[m.kind == "compound"]) == {0.1}
    g0 = m.perturbation.tolist().index("G0000")
    rows = (meta.sort_values("well_id")["gene"] == "G0000").to_numpy()
    assert rows.sum() == 4  # 2 guides x 2 replicates
    assert np.allclose(m.features[g0], wells.x[rows].mean(axis=0))
    assert (codes[wells.is_control] == -1).all()
    # a third-party map round-trips through map_from_frame
    m2 = map_from_frame(defn, m.to_frame().iloc[::-1])
    assert (m2.perturbation == m.perturbation).all() and np.allclose(m2.features, m.features)


def test_map_frame_errors():
    defn = load_definition("gene-gene-recall")
    frame = pd.DataFrame({"perturbation": ["A", "A"], "concentration": [np.nan, np.nan], "feature_0": [1.0, 2.0]})
    with pytest.raises(BenchmarkError, match="duplicate rows for perturbation 'A'"):
        map_from_frame(defn, frame)
    with pytest.raises(BenchmarkError, match="feature_1 is missing"):
        map_from_frame(defn, pd.DataFrame({"perturbation": ["A"], "feature_0": [1.0], "feature_2": [1.0]}))
