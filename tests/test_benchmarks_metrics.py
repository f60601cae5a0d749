"""Vectorised metric kernels against straightforward reference computations (scikit-learn, loops)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from rxcurate.benchmarks.metrics import (
    mean_distance_to,
    mean_within_distance,
    null_tail_flags,
    pair_cosines,
    ranking_metrics,
    tail_counts,
    triangle_order_statistics,
    unit_rows,
)
from rxcurate.errors import BenchmarkError


def test_ranking_metrics_match_sklearn_with_ties_and_masks():
    rng = np.random.default_rng(0)
    rows, width = 60, 25
    scores = np.round(rng.random((rows, width)), 1)  # many ties
    labels = rng.random((rows, width)) < 0.3
    mask = rng.random((rows, width)) < 0.8
    labels[:, 0], mask[:, :2], labels[:, 1] = True, True, False  # every row has a positive and a negative
    ap, auc = ranking_metrics(scores, labels, mask)
    for r in range(rows):
        y, s = labels[r][mask[r]], scores[r][mask[r]]
        assert ap[r] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert auc[r] == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_ranking_metrics_known_answers_and_undefined_rows():
    scores = np.array([[0.9, 0.8, 0.3, 0.2], [0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5], [1, 2, 3, 4]])
    labels = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    ap, auc = ranking_metrics(scores, labels, np.ones_like(labels))
    assert ap[0] == 1.0 and auc[0] == 1.0
    assert auc[1] == 0.0 and ap[1] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert auc[2] == 0.5 and ap[2] == 0.25  # all tied: precision at the single threshold
    assert np.isnan(ap[3]) and np.isnan(auc[3])  # no positive


def _recall_flags_reference(null, query, lower, upper):
    """EFAAR_benchmarking compute_recall's per-query test, written as a loop over a fully sorted null."""
    s = np.sort(null)
    out = []
    for q in query:
        left = np.searchsorted(s, q, side="left") / len(s)
        right = np.searchsorted(s, q, side="right") / len(s)
        out.append(bool((right <= lower) or (left >= upper)))
    return np.array(out)


def _all_pairs(u):
    i, j = np.triu_indices(len(u), k=1)
    return i, j, pair_cosines(u, i, j)


def test_tail_counts_solve_efaars_float_divisions():
    for n in [1, 2, 3, 7, 20, 100, 101, 999, 1000, 269745]:
        counts = np.arange(n + 1)
        for lower, upper in [(0.05, 0.95), (0.1, 0.9), (0.0, 1.0), (1 / 3, 2 / 3), (0.25, 0.75), (0.5, 0.5)]:
            k_lo, k_hi = tail_counts(n, lower, upper)
            assert ((counts / n <= lower) == (counts <= k_lo)).all(), (n, lower)
            assert ((counts / n >= upper) == (counts >= k_hi)).all(), (n, upper)


def test_pair_cosines_are_symmetric_and_independent_of_the_batch():
    rng = np.random.default_rng(3)
    u = unit_rows(rng.normal(size=(40, 17)), "x")
    i, j = rng.integers(0, 40, size=(2, 500))
    one = pair_cosines(u, i, j)
    assert (one == pair_cosines(u, j, i)).all()
    assert (one == pair_cosines(u, i, j, chunk=7)).all()
    assert (one[123:124] == pair_cosines(u, i[123:124], j[123:124])).all()
    assert np.allclose(one, (u @ u.T)[i, j], atol=1e-14)


def _maps():
    rng = np.random.default_rng(11)
    smooth = rng.normal(size=(120, 9))
    grid = rng.integers(-1, 2, size=(150, 3)).astype(float)  # most similarities tie, exactly
    grid[np.abs(grid).sum(axis=1) == 0] = [1.0, 0.0, 0.0]
    dup = rng.normal(size=(90, 6))
    dup[30:60] = dup[:30]  # duplicate rows: tied values at many ranks
    dup[60:70] = -dup[:10]
    shifted = rng.normal(size=(130, 12)) + np.r_[3.0, np.zeros(11)]  # a dense upper tail, as compound rows give
    return {"smooth": smooth, "grid": grid, "duplicates": dup, "shifted": shifted}


@pytest.mark.parametrize("name", ["smooth", "grid", "duplicates", "shifted"])
def test_order_statistics_equal_a_full_sort(name):
    u = unit_rows(_maps()[name], "x")
    _, _, vals = _all_pairs(u)
    ordered = np.sort(vals)
    n = len(vals)
    ranks = sorted({0, 1, n // 20, n // 20 + 1, n // 2, n - n // 20 - 1, n - 2, n - 1})
    want = [float(ordered[r]) for r in ranks]
    assert triangle_order_statistics(u, ranks) == want  # small map: every pair computed exactly
    # the screened path (float32 pass + exact recomputation), with small blocks, with brackets so narrow that
    # they miss and are widened (spread 0) or sit on an edge and are re-centred, and with brackets holding more
    # pairs than their cap (narrowed by histogram; ties that cannot be split are kept whatever the cap)
    for kw in [dict(block_elems=500), dict(block_elems=64, sample=64), dict(spread=0.0, sample=32),
               dict(spread=0.0, sample=5000, block_elems=1000), dict(cap=40), dict(cap=7, block_elems=300),
               dict(cap=40, spread=0.0, sample=32)]:
        assert triangle_order_statistics(u, ranks, exact_pairs=0, **kw) == want, kw


@pytest.mark.parametrize("name", ["smooth", "grid", "duplicates", "shifted"])
def test_tail_flags_equal_efaars_rule_on_the_full_null(name):
    u = unit_rows(_maps()[name], "x")
    i, j, vals = _all_pairs(u)
    rng = np.random.default_rng(5)
    pick = rng.choice(len(vals), size=300, replace=False)
    qi, qj = i[pick], j[pick]
    qi[::2], qj[::2] = qj[::2].copy(), qi[::2].copy()  # either order of a pair
    ordered = np.sort(vals)
    n = len(vals)
    # queries exactly at the thresholds: the pairs holding the boundary order statistics
    k_lo, k_hi = tail_counts(n, 0.05, 0.95)
    for r in (k_lo, k_hi - 1):
        at = np.flatnonzero(vals == ordered[r])[:3]
        qi, qj = np.r_[qi, i[at]], np.r_[qj, j[at]]
    thresholds = [(0.05, 0.95), (0.1, 0.9), (0.0, 1.0), (0.5, 0.5)]
    for kw in [{}, dict(exact_pairs=0, block_elems=700, sample=300), dict(exact_pairs=0, spread=0.0, sample=50),
               dict(exact_pairs=0, cap=25)]:
        values, flags, size = null_tail_flags(u, qi, qj, thresholds, **kw)
        assert size == n == len(u) * (len(u) - 1) // 2
        assert (values == pair_cosines(u, np.minimum(qi, qj), np.maximum(qi, qj))).all()
        for t, (lo, hi) in enumerate(thresholds):
            assert (flags[t] == _recall_flags_reference(vals, values, lo, hi)).all(), (kw, lo, hi)
        assert 0 < flags[0].sum() < len(values)  # not a degenerate comparison


def test_distance_kernels_match_loops():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(11, 5))
    ref = np.array([[np.linalg.norm(p - q) for q in b] for p in a]).mean(axis=1)
    assert np.allclose(mean_distance_to(a, b, block=3), ref)
    groups = rng.normal(size=(4, 6, 5))
    within = [np.mean([[np.linalg.norm(p - q) for q in g] for p in g]) for g in groups]
    assert np.allclose(mean_within_distance(groups, max_elems=40), within)


def test_zero_vectors_have_no_cosine():
    with pytest.raises(BenchmarkError, match="'g2' has an all-zero feature vector"):
        unit_rows(np.array([[1.0, 0.0], [0.0, 0.0]]), "map", np.array(["g1", "g2"]))
