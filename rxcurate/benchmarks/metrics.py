"""Vectorised metric kernels: tie-aware average precision / ROC AUC over many rankings at once, null-percentile
recall, cosine helpers and energy-distance building blocks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rxcurate.errors import BenchmarkError


def isin(values: np.ndarray, allowed: Any) -> np.ndarray:
    """Hash-based membership test (``np.isin`` is quadratic on object arrays of strings)."""
    return np.array(pd.Series(np.asarray(values, dtype=object)).isin(list(allowed)), dtype=bool)


def unit_rows(x: np.ndarray, what: str, names: np.ndarray | None = None) -> np.ndarray:
    """Rows scaled to unit L2 norm; a zero row (cosine undefined) is an error naming it."""
    if x.ndim == 2 and x.shape[1] == 0 and len(x):
        raise BenchmarkError(f"{what}: no feature is left (every feature is constant across the control wells, so "
                             "post-processing removed them all): submit embeddings that vary between wells")
    with np.errstate(over="ignore", under="ignore"):  # such rows are rescaled below
        norms = np.linalg.norm(x, axis=1)
    odd = ~(np.isfinite(norms) & (norms > np.finfo(np.float64).tiny))
    if not odd.any():
        return x / norms[:, None]
    # rows whose squares under- or overflow (|values| ~1e-160 or ~1e160): scale each by its largest |value| first
    peak = np.max(np.abs(x[odd]), axis=1, initial=0.0)  # initial: a map with no feature left is all-zero too
    zero = np.zeros(len(x), dtype=bool)
    zero[np.flatnonzero(odd)[peak == 0]] = True
    if zero.any():
        i = int(np.flatnonzero(zero)[0])
        name = repr(str(names[i])) if names is not None else f"row {i}"
        raise BenchmarkError(f"{what}: {name} has an all-zero feature vector, so its cosine similarity is undefined")
    out = x / np.where(odd, 1.0, norms)[:, None]
    scaled = x[odd] / peak[:, None]
    out[odd] = scaled / np.linalg.norm(scaled, axis=1)[:, None]
    return out


def ranking_metrics(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average precision and ROC AUC of each row of ``scores`` [R, L] (higher = more likely positive).

    ``labels`` marks positives, ``mask`` the entries that take part (others are ignored). Ties are handled like
    scikit-learn (``average_precision_score`` steps over distinct thresholds; ``roc_auc_score`` = Mann-Whitney with
    average ranks), so the result does not depend on the order of tied entries. Rows without a positive or a
    negative give NaN.
    """
    scores = np.asarray(scores, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    pos = np.asarray(labels, dtype=bool) & mask
    r, n = scores.shape
    s = np.where(mask, scores, -np.inf)
    order = np.argsort(-s, axis=1)  # any order within ties: the tie groups below make the result order-free
    s = np.take_along_axis(s, order, axis=1)
    y = np.take_along_axis(pos, order, axis=1).astype(np.float64)
    n_valid = mask.sum(axis=1).astype(np.float64)
    n_pos = y.sum(axis=1)
    n_neg = n_valid - n_pos
    cols = np.arange(n)
    change = s[:, 1:] != s[:, :-1]
    true_col = np.ones((r, 1), dtype=bool)
    is_end = np.concatenate([change, true_col], axis=1)
    is_start = np.concatenate([true_col, change], axis=1)
    group_end = np.minimum.accumulate(np.where(is_end, cols, n)[:, ::-1], axis=1)[:, ::-1]
    group_start = np.maximum.accumulate(np.where(is_start, cols, 0), axis=1)
    tp_at_end = np.take_along_axis(np.cumsum(y, axis=1), group_end, axis=1)
    precision = tp_at_end / (group_end + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (precision * y).sum(axis=1) / n_pos
        rank_asc = n_valid[:, None] - (group_start + group_end) / 2.0
        auc = ((rank_asc * y).sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    bad = (n_pos == 0) | (n_neg == 0)
    ap[bad] = np.nan
    auc[bad] = np.nan
    return ap, auc


def null_rank_counts(sorted_null: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query: how many null values are strictly below it, and how many are at or below it."""
    return (np.searchsorted(sorted_null, queries, side="left"), np.searchsorted(sorted_null, queries, side="right"))


def recall_at(below: np.ndarray, at_or_below: np.ndarray, n_null: int, lower: float, upper: float) -> float:
    """Share of queries in the tails of the null: percentile rank (right) <= lower or (left) >= upper, as in
    EFAAR_benchmarking's ``compute_recall``."""
    left = below / n_null
    right = at_or_below / n_null
    return float(np.mean((right <= lower) | (left >= upper)))


def _triangle_blocks(u: np.ndarray, block: int):
    """Yield (i0, i1, sims) with sims = u[i0:i1] @ u[i0:].T, the same products on every call."""
    for i0 in range(0, len(u), block):
        i1 = min(len(u), i0 + block)
        yield i0, i1, u[i0:i1] @ u[i0:].T


def upper_triangle_null_counts(
    u: np.ndarray, qi: np.ndarray, qj: np.ndarray, block: int = 2048
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Cosine similarities of the query pairs (qi[k], qj[k]) and their rank counts among the similarities of all
    pairs i < j of the unit rows ``u`` (the null), computed in row blocks so the full matrix is never held.

    Query values are read from the very products that form the null, so a query pair ranks against its own null
    value exactly (as when both come from one similarity matrix). Returns (values, below, at_or_below, null size).
    """
    lo, hi = np.minimum(qi, qj), np.maximum(qi, qj)
    values = np.empty(len(lo))
    for i0, i1, sims in _triangle_blocks(u, block):
        sel = (lo >= i0) & (lo < i1)
        values[sel] = sims[lo[sel] - i0, hi[sel] - i0]
    below = np.zeros(len(lo), dtype=np.int64)
    at_or_below = np.zeros(len(lo), dtype=np.int64)
    total = 0
    for i0, i1, sims in _triangle_blocks(u, block):
        upper = np.arange(i0, len(u))[None, :] > np.arange(i0, i1)[:, None]
        vals = np.sort(sims[upper])
        total += len(vals)
        b, a = null_rank_counts(vals, values)
        below += b
        at_or_below += a
    return values, below, at_or_below, total


def mean_distance_to(x: np.ndarray, ref: np.ndarray, block: int = 4096) -> np.ndarray:
    """Mean Euclidean distance of every row of ``x`` to the rows of ``ref``."""
    out = np.empty(len(x))
    ref_sq = (ref * ref).sum(axis=1)
    for i0 in range(0, len(x), block):
        xb = x[i0 : i0 + block]
        d2 = (xb * xb).sum(axis=1)[:, None] + ref_sq[None, :] - 2.0 * (xb @ ref.T)
        out[i0 : i0 + block] = np.sqrt(np.maximum(d2, 0.0)).mean(axis=1)
    return out


def mean_within_distance(groups: np.ndarray, max_elems: int = 1 << 24) -> np.ndarray:
    """Mean pairwise Euclidean distance (all ordered pairs incl. the zero diagonal, a V-statistic) within each
    group of ``groups`` [G, n, d]."""
    g, n, _ = groups.shape
    out = np.empty(g)
    step = max(1, max_elems // max(1, n * n))
    for i0 in range(0, g, step):
        b = groups[i0 : i0 + step]
        sq = (b * b).sum(axis=2)
        d2 = sq[:, :, None] + sq[:, None, :] - 2.0 * np.einsum("gid,gjd->gij", b, b)
        d = np.sqrt(np.maximum(d2, 0.0))
        idx = np.arange(n)
        d[:, idx, idx] = 0.0
        out[i0 : i0 + step] = d.mean(axis=(1, 2))
    return out
