"""compound-gene-activity on hand-built maps: known answers, sampling rules, seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from rxcurate.benchmarks import evaluate_map, load_definition
from rxcurate.benchmarks.compound_gene import _sample_negatives
from rxcurate.errors import BenchmarkError

CONCS = (0.1, 1.0, 10.0)


def _setup(tmp_path, n_genes=40, d=16, seed=0, identical=True):
    """Genes with random phenotypes; compound Cj targets gene j (nM 100) and at 10 uM equals its knockout."""
    rng = np.random.default_rng(seed)
    genes = [f"G{i:02d}" for i in range(n_genes)]
    g = rng.normal(size=(n_genes, d))
    rows = [{"perturbation": n, "concentration": np.nan, **{f"feature_{k}": v[k] for k in range(d)}}
            for n, v in zip(genes, g, strict=True)]
    truth = []
    for j in range(5):
        for c in CONCS:
            v = g[j] if (identical and c == 10.0) else rng.normal(size=d)
            rows.append({"perturbation": f"C{j}", "concentration": c, **{f"feature_{k}": v[k] for k in range(d)}})
        truth.append((genes[j], 100.0, "IC50", "db", f"C{j}"))
        truth.append((genes[(j + 1) % n_genes], 5000.0, "IC50", "db", f"C{j}"))  # grey zone: never a negative
        for k in range(10, n_genes):
            truth.append((genes[k], 50000.0, "Kd", "db", f"C{j}"))
    path = tmp_path / "cgi.csv"
    pd.DataFrame(truth, columns=["gene_symbol", "nM_value", "measurement_type", "database", "treatment"]).to_csv(
        path, index=False)
    return pd.DataFrame(rows), path


def _defn(seeds=5, **params):
    d = load_definition("compound-gene-activity")
    d["seeds"]["count"] = seeds
    d["parameters"].update(params)
    return d


def test_compound_identical_to_its_target_knockout_is_ranked_first(tmp_path):
    frame, truth = _setup(tmp_path)
    res = evaluate_map(_defn(), frame, [truth])
    conc = res["metrics"]["concentrations"]
    for label in ("10.0", "max"):
        assert conc[label]["average_precision"]["mean"]["mean"] == 1.0
        assert conc[label]["auc_roc"]["q0.5"]["mean"] == 1.0
        assert conc[label]["compounds"] == 5
    assert conc["0.1"]["auc_roc"]["mean"]["mean"] < 1.0  # random phenotypes at low dose
    counts = res["metrics"]["counts"]
    # the pool is every gene of the table: G00..G05 (actives, grey zone) and G10..G39
    assert counts["compounds_evaluated"] == 5 and counts["genes_in_pool"] == 36
    assert res["summary"]["max/auc_roc/mean"] == 1.0


def test_random_baseline_sits_at_chance(tmp_path):
    frame, truth = _setup(tmp_path, n_genes=200)
    res = evaluate_map(_defn(seeds=40), frame, [truth])
    auc = res["metrics"]["concentrations"]["max"]["baseline_auc_roc"]["mean"]
    assert abs(auc["mean"] - 0.5) < 0.06 and auc["std"] > 0
    ap = res["metrics"]["concentrations"]["max"]["baseline_average_precision"]["mean"]["mean"]
    n = 21  # 1 active + max(2 x 1, 20) negatives: a random ranking puts the active at rank r with AP 1/r
    assert abs(ap - sum(1 / r for r in range(1, n + 1)) / n) < 0.04


def test_seeds_are_deterministic_and_matter(tmp_path):
    frame, truth = _setup(tmp_path, identical=False)
    a = evaluate_map(_defn(seeds=3), frame, [truth])
    b = evaluate_map(_defn(seeds=3), frame.sample(frac=1, random_state=1), [truth])
    assert a["metrics"] == b["metrics"]  # row order of the map does not matter
    shifted = _defn(seeds=3)
    shifted["seeds"]["start"] = 7
    c = evaluate_map(shifted, frame, [truth])
    assert c["metrics"] != a["metrics"]


def test_truth_row_order_does_not_matter(tmp_path):
    frame, truth = _setup(tmp_path, identical=False)
    shuffled = tmp_path / "shuffled.csv"
    pd.read_csv(truth).sample(frac=1, random_state=3).to_csv(shuffled, index=False)
    a = evaluate_map(_defn(seeds=2), frame, [truth])
    b = evaluate_map(_defn(seeds=2), frame, [shuffled])
    assert a["metrics"] == b["metrics"]


def test_scores_match_sklearn_when_the_negatives_are_forced(tmp_path):
    # 34 eligible genes per compound (the 36 of the table minus its active and its grey-zone gene) and
    # min_negatives 34: every seed draws all of them, so the targets are known
    frame, truth = _setup(tmp_path, identical=False)
    res = evaluate_map(_defn(seeds=2, min_negatives=34), frame, [truth])
    pool = sorted(set(pd.read_csv(truth)["gene_symbol"]))
    feats = frame.filter(like="feature_").to_numpy()
    u = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    names = frame["perturbation"].to_numpy()
    gene_idx = {n: i for i, n in enumerate(names[:40])}
    aps, aucs = [], []
    for j in range(5):
        targets = [f"G{j:02d}"] + [g for g in pool if g not in (f"G{j:02d}", f"G{j + 1:02d}")]
        y = np.array([1] + [0] * 34)
        assert len(targets) == 35
        rows = np.flatnonzero(names == f"C{j}")
        s = np.abs(u[rows] @ u[[gene_idx[t] for t in targets]].T).max(axis=0)
        aps.append(average_precision_score(y, s))
        aucs.append(roc_auc_score(y, s))
    got = res["metrics"]["concentrations"]["max"]
    assert got["average_precision"]["mean"]["mean"] == pytest.approx(np.mean(aps))
    assert got["auc_roc"]["mean"]["mean"] == pytest.approx(np.mean(aucs))
    assert got["auc_roc"]["q0.5"]["mean"] == pytest.approx(np.quantile(aucs, 0.5))
    assert got["auc_roc"]["mean"]["std"] == 0.0  # identical across seeds


def test_too_few_negatives_skips_the_compound_and_none_left_is_an_error(tmp_path):
    frame, truth = _setup(tmp_path)
    res = evaluate_map(_defn(seeds=1, min_negatives=34), frame, [truth])
    assert res["metrics"]["counts"]["compounds_evaluated"] == 5
    with pytest.raises(BenchmarkError, match="no compound can be evaluated"):
        evaluate_map(_defn(seeds=1, min_negatives=35), frame, [truth])
    # a compound without any active gene is skipped, the others still count
    table = pd.read_csv(truth)
    table.loc[table["treatment"] == "C0", "nM_value"] = table.loc[table["treatment"] == "C0", "nM_value"] + 20000
    edited = tmp_path / "edited.csv"
    table.to_csv(edited, index=False)
    res = evaluate_map(_defn(seeds=1), frame, [edited])
    assert res["metrics"]["counts"]["compounds_without_actives"] == 1
    assert res["metrics"]["counts"]["compounds_evaluated"] == 4


def test_sampling_draws_only_eligible_genes_uniformly():
    rng = np.random.default_rng(0)
    eligible = np.zeros((3, 12), dtype=bool)
    eligible[0, 2:10] = True
    eligible[1, :] = True
    eligible[2, [0, 5, 11]] = True
    n_neg = np.array([4, 6, 3])
    counts = np.zeros((3, 12))
    for _ in range(2000):
        neg, mask = _sample_negatives(rng, eligible, n_neg)
        assert mask.sum(axis=1).tolist() == [4, 6, 3]
        for r in range(3):
            chosen = neg[r][mask[r]]
            assert len(set(chosen.tolist())) == n_neg[r] and eligible[r, chosen].all()
            counts[r, chosen] += 1
    assert np.allclose(counts[0, 2:10] / 2000, 0.5, atol=0.05)
    assert np.allclose(counts[1] / 2000, 0.5, atol=0.05)
    assert (counts[2, [0, 5, 11]] == 2000).all()


def test_empty_overlap_and_missing_compounds(tmp_path):
    frame, _ = _setup(tmp_path)
    other = tmp_path / "other.csv"
    other.write_text("gene_symbol,nM_value,treatment\nTP53,10,nutlin\n")
    with pytest.raises(BenchmarkError, match="empty overlap with truth"):
        evaluate_map(_defn(seeds=1), frame, [other])
    genes_only = frame[frame["concentration"].isna()]
    with pytest.raises(BenchmarkError, match="needs gene and compound perturbations"):
        evaluate_map(_defn(seeds=1), genes_only, [other])
