"""Vectorised metric kernels against straightforward reference computations (scikit-learn, loops)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from rxcurate.benchmarks.metrics import (
    mean_distance_to,
    mean_within_distance,
    ranking_metrics,
    recall_at,
    unit_rows,
    upper_triangle_null_counts,
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


def _recall_reference(null, query, lower, upper):
    """EFAAR_benchmarking compute_recall, written as a loop."""
    s = np.sort(null)
    hits = 0
    for q in query:
        left = np.searchsorted(s, q, side="left") / len(s)
        right = np.searchsorted(s, q, side="right") / len(s)
        hits += (right <= lower) or (left >= upper)
    return hits / len(query)


def test_recall_and_blocked_null_counts_match_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(57, 6))
    u = unit_rows(x, "x")
    qi, qj = rng.integers(0, 57, size=(2, 40))
    keep = qi != qj
    qi, qj = qi[keep], qj[keep]
    values, below, at_or_below, n = upper_triangle_null_counts(u, qi, qj, block=10)
    sims = u @ u.T
    null = sims[np.triu_indices(len(u), k=1)]
    assert n == len(null) == 57 * 56 // 2
    assert np.allclose(values, sims[qi, qj])
    # each query is one of the null values, bit for bit, whichever block computed it
    queries = values
    assert (below < at_or_below).all()
    assert (np.abs(below - np.searchsorted(np.sort(null), queries, "left")) <= 1).all()
    for lo, hi in [(0.05, 0.95), (0.1, 0.9)]:
        assert recall_at(below, at_or_below, n, lo, hi) == pytest.approx(_recall_reference(null, queries, lo, hi))


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
