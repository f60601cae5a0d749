"""gene-gene-recall on hand-built maps with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rxcurate.benchmarks import evaluate_map, load_definition
from rxcurate.errors import BenchmarkError

# the kernel tests use the gene-only-null variant (two threshold pairs); the default is tested in
# test_benchmarks_protocols.py and test_efaar_reference.py
TVN = "gene-gene-recall-tvn"


def _map(x, names, compounds=None):
    frame = pd.DataFrame({"perturbation": names, "concentration": np.nan})
    for i in range(x.shape[1]):
        frame[f"feature_{i}"] = x[:, i]
    if compounds is not None:
        frame = pd.concat([frame, compounds], ignore_index=True)
    return frame


def _write(tmp_path, name, pairs):
    p = tmp_path / f"{name}.csv"
    pd.DataFrame(pairs, columns=["entity1", "entity2"]).to_csv(p, index=False)
    return p


def _genes(n=30, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.array([f"G{i:02d}" if n <= 100 else f"G{i:03d}" for i in range(n)])


def test_most_similar_and_most_opposite_pairs_are_recalled(tmp_path):
    x, names = _genes()
    x[1] = x[0] + 1e-3
    x[3] = x[2] + 1e-3
    x[5] = -x[4]  # strongly anti-correlated: the lower tail counts too
    top = _write(tmp_path, "top", [("G01", "G00"), ("G02", "G03"), ("G04", "G05"), ("G00", "G01"), ("G07", "G07")])
    res = evaluate_map(TVN, _map(x, names), {"top": top})
    row = res["metrics"]["sources"]["top"]
    assert row["query_size"] == 3 and row["pairs"] == 3  # duplicates and the self pair removed
    assert row["recall_0.05_0.95"] == 1.0 and row["recall_0.1_0.9"] == 1.0
    assert res["metrics"]["null"]["size"] == 30 * 29 // 2
    assert res["summary"] == {"top/recall_0.05_0.95": 1.0, "top/recall_0.1_0.9": 1.0}


def brute_force_recall(c: np.ndarray, names, pairs) -> dict[tuple[float, float], float]:
    """The recall from the full sorted null of every upper-triangle cosine (what the fast kernel must equal)."""
    null = np.sort(c[np.triu_indices(len(c), 1)])
    idx = {n: i for i, n in enumerate(names)}
    uniq = sorted({tuple(sorted(p)) for p in pairs})
    q = np.array([c[idx[a], idx[b]] for a, b in uniq])
    left = np.searchsorted(null, q, "left") / len(null)
    right = np.searchsorted(null, q, "right") / len(null)
    return {(lo, hi): float(np.mean((right <= lo) | (left >= hi))) for lo, hi in [(0.05, 0.95), (0.1, 0.9)]}


def test_recall_equals_reference_computation(tmp_path):
    x, names = _genes(seed=3)
    rng = np.random.default_rng(5)
    pairs = [(names[i], names[j]) for i, j in rng.integers(0, 30, size=(40, 2)) if i != j]
    src = _write(tmp_path, "random", pairs)
    res = evaluate_map(TVN, _map(x, names), [src])
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = u @ u.T
    for (lo, hi), want in brute_force_recall(c, names, pairs).items():
        assert res["metrics"]["sources"]["random"][f"recall_{lo}_{hi}"] == pytest.approx(want)


def test_middle_of_the_null_is_not_recalled_and_sources_are_separate(tmp_path):
    rng = np.random.default_rng(0)
    names = np.array([f"G{i:02d}" for i in range(40)])
    x = rng.normal(size=(40, 12))
    x[1] = x[0] + 1e-3
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = u @ u.T
    iu = np.triu_indices(40, 1)
    mid = np.argsort(np.abs(c[iu]))[:10]  # the ten pairs closest to orthogonal
    mid_pairs = [(names[iu[0][k]], names[iu[1][k]]) for k in mid]
    res = evaluate_map(TVN, _map(x, names),
                       {"mid": _write(tmp_path, "mid", mid_pairs), "top": _write(tmp_path, "top", [("G00", "G01")])})
    assert res["metrics"]["sources"]["mid"]["recall_0.1_0.9"] == 0.0
    assert res["metrics"]["sources"]["top"]["recall_0.05_0.95"] == 1.0


def test_null_over_all_entities_includes_compounds(tmp_path):
    x, names = _genes(n=10)
    cpd = pd.DataFrame({"perturbation": ["C1", "C1"], "concentration": [0.1, 1.0]})
    for i in range(x.shape[1]):
        cpd[f"feature_{i}"] = [1.0, -1.0]
    defn = load_definition(TVN)
    src = _write(tmp_path, "s", [("G00", "G01")])
    genes_only = evaluate_map(defn, _map(x, names, cpd), [src])
    defn["parameters"]["null"] = "all"
    all_pairs = evaluate_map(defn, _map(x, names, cpd), [src])
    assert genes_only["metrics"]["null"]["size"] == 45
    assert all_pairs["metrics"]["null"]["size"] == 12 * 11 // 2


def test_empty_overlap_is_an_error(tmp_path):
    x, names = _genes(n=5)
    src = _write(tmp_path, "other", [("TP53", "MDM2"), ("G00", "X")])
    with pytest.raises(BenchmarkError, match="empty overlap with truth"):
        evaluate_map(TVN, _map(x, names), [src])


def test_source_without_overlap_is_reported_not_dropped(tmp_path):
    x, names = _genes(n=6)
    res = evaluate_map(TVN, _map(x, names),
                       [_write(tmp_path, "a", [("G00", "G01")]), _write(tmp_path, "b", [("TP53", "MDM2")])])
    assert res["metrics"]["sources"]["b"]["query_size"] == 0
    assert res["metrics"]["sources"]["b"]["recall_0.05_0.95"] is None


def test_truth_is_required(tmp_path):
    x, names = _genes(n=6)
    with pytest.raises(BenchmarkError, match="at least 1 truth file"):
        evaluate_map(TVN, _map(x, names), None)


def test_whole_map_recall_on_a_screened_size_map_equals_a_full_sort(tmp_path):
    """A map past the exact-path size (~135k null pairs: the float32 screen + exact recomputation decides), with
    tied rows, opposite rows and compound rows that form a dense upper tail: each threshold pair's recall equals
    EFAAR's rule on the fully sorted null of the whole similarity matrix."""
    rng = np.random.default_rng(8)
    x, names = _genes(n=280, d=16, seed=9)
    x[1], x[3], x[5] = x[0], -x[2], x[4]  # exact ties and opposites in the null and among the queries
    conc = [0.1, 1.0, 10.0]
    cx = 2.5 + rng.normal(size=(80 * len(conc), 16)) + 0.5 * x[rng.integers(0, 280, size=80 * len(conc))]
    cpd = pd.DataFrame({"perturbation": np.repeat([f"C{i:02d}" for i in range(80)], len(conc)),
                        "concentration": np.tile(conc, 80)})
    cpd = pd.concat([cpd, pd.DataFrame(cx, columns=[f"feature_{i}" for i in range(16)])], axis=1)
    pairs = [(names[i], names[j]) for i, j in rng.integers(0, 280, size=(600, 2)) if i != j]
    pairs += [("G000", "G001"), ("G002", "G003"), ("G004", "G005"), ("G001", "G006"), ("G000", "G006")]
    src = _write(tmp_path, "random", pairs)
    defn = load_definition(TVN)
    defn["parameters"]["null"] = "all"
    res = evaluate_map(defn, _map(x, names, cpd), [src])
    allx = np.concatenate([x, cx])
    u = allx / np.linalg.norm(allx, axis=1, keepdims=True)
    c = u @ u.T
    n = len(allx)
    assert res["metrics"]["null"]["size"] == n * (n - 1) // 2 > 100_000
    for (lo, hi), want in brute_force_recall(c, names, pairs).items():
        assert 0.0 < want < 1.0
        assert abs(res["metrics"]["sources"]["random"][f"recall_{lo}_{hi}"] - want) <= 1e-12
