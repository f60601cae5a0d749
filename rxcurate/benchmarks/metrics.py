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


def tail_counts(n_null: int, lower: float, upper: float) -> tuple[int, int]:
    """EFAAR_benchmarking's ``compute_recall`` tests, solved for counts: a query with ``c_le`` null values at or
    below it and ``c_lt`` strictly below it is recalled iff ``c_le / n_null <= lower`` or ``c_lt / n_null >= upper``,
    i.e. iff ``c_le <= k_lo`` or ``c_lt >= k_hi`` for the (k_lo, k_hi) returned (the same float divisions)."""
    n = float(n_null)
    k_lo = min(n_null, max(0, int(np.floor(lower * n))))
    while k_lo + 1 <= n_null and (k_lo + 1) / n <= lower:
        k_lo += 1
    while k_lo >= 0 and k_lo / n > lower:
        k_lo -= 1  # -1: no count passes
    k_hi = min(n_null + 1, max(0, int(np.ceil(upper * n))))
    while k_hi >= 1 and (k_hi - 1) / n >= upper:
        k_hi -= 1
    while k_hi <= n_null and k_hi / n < upper:
        k_hi += 1  # n_null + 1: no count passes
    return k_lo, k_hi


def pair_cosines(u: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``u[i[k]] . u[j[k]]`` for each k: one fixed float64 sum of the elementwise products per pair (symmetric in
    i and j, and bit-identical whatever else is computed alongside), in chunks of ``chunk`` pairs."""
    i, j = np.asarray(i, dtype=np.intp), np.asarray(j, dtype=np.intp)
    out = np.empty(len(i))
    for k0 in range(0, len(i), chunk):
        out[k0 : k0 + chunk] = (u[i[k0 : k0 + chunk]] * u[j[k0 : k0 + chunk]]).sum(axis=1)
    return out


def _screen_margin(dim: int) -> float:
    """1.25 times a rigorous bound on |float32 dot product of the float32-rounded unit rows - float64 ``pair_cosines``|:
    rounding the inputs (2 * 2^-24) plus the dot product's own error (dim * 2^-24 in any summation order, FMA or
    not) and the float64 one; every |value| sum is <= 1 for unit rows."""
    g = (dim + 3) * 2.0**-24
    return 1.25 * (g / max(1e-3, 1.0 - g) + dim * 2.0**-52)


_BINS = 1024  # histogram of a bracket holding more than its cap of pairs
_LIMIT = 1.5  # |float32 cosine of unit rows| <= 1 + 2.3e-5 * dim / 384: a bracket never needs to reach further


def _histogram(vals: np.ndarray, lo: float, hi: float) -> np.ndarray:
    b = np.floor((vals.astype(np.float64) - lo) * (_BINS / (hi - lo))).astype(np.int64)
    return np.bincount(np.clip(b, 0, _BINS - 1), minlength=_BINS)


def _scan_triangle(u32: np.ndarray, cuts: list[tuple[float, float]], block_elems: int, caps: list[float]):
    """One float32 pass over the pairs i < j of ``u32`` in row blocks (about ``block_elems`` products each, in
    reused buffers; the full matrix is never held). For each cut (lo, hi): how many values are < lo, and the pairs
    (as codes i * n + j) and values with lo <= value < hi, or, once more than the cut's cap of them turned up, only
    their histogram over ``_BINS`` equal bins of [lo, hi) (memory stays bounded)."""
    n = len(u32)
    rows = max(1, min(n, block_elems // max(1, n)))
    below = np.zeros(len(cuts), dtype=np.int64)
    found: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in cuts]
    lims = [(np.float32(lo), np.float32(hi)) for lo, hi in cuts]
    buf = np.empty(rows * n, dtype=np.float32)
    sub = 1 << 16  # elementwise work in cache-sized pieces: all cuts while a piece is in L2
    lt, ge = np.empty(sub, dtype=bool), np.empty(sub, dtype=bool)
    tri: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def bands(vals: np.ndarray) -> list[np.ndarray]:
        hits: list[list[np.ndarray]] = [[] for _ in lims]
        for s0 in range(0, len(vals), sub):
            piece = vals[s0 : s0 + sub]
            less, inside = lt[: len(piece)], ge[: len(piece)]
            for k, (lo, hi) in enumerate(lims):
                np.less(piece, hi, out=less)
                np.greater_equal(piece, lo, out=inside)
                np.logical_and(less, inside, out=inside)
                idx = np.flatnonzero(inside)
                below[k] += np.count_nonzero(less) - len(idx)
                if len(idx):
                    hits[k].append(idx + s0)
        return [np.concatenate(h) if h else np.zeros(0, dtype=np.intp) for h in hits]

    hists: list[np.ndarray | None] = [None] * len(cuts)
    kept = [0] * len(cuts)

    def keep(k: int, codes: np.ndarray, vals: np.ndarray) -> None:
        hist = hists[k]
        if hist is not None:
            hist += _histogram(vals, *cuts[k])
            return
        found[k].append((codes, vals))
        kept[k] += len(vals)
        if kept[k] > caps[k]:  # too many to hold: count them by bin from now on
            hists[k] = sum((_histogram(v, *cuts[k]) for _, v in found[k]), np.zeros(_BINS, dtype=np.int64))
            found[k] = []

    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        a = u32[i0:i1]
        w = i1 - i0
        if w not in tri:
            tri[w] = np.triu_indices(w, k=1)
        ti, tj = tri[w]
        square = (a @ a.T)[ti, tj]
        for k, idx in enumerate(bands(square)):
            keep(k, (i0 + ti[idx]) * n + (i0 + tj[idx]), square[idx])
        if i1 < n:
            width = n - i1
            rect = buf[: w * width]
            np.matmul(a, u32[i1:].T, out=rect.reshape(w, width))
            for k, idx in enumerate(bands(rect)):
                # flat index r * width + c of pair (i0 + r, i1 + c): code = flat + r * (n - width) + i0 * n + i1
                keep(k, idx + (idx // width) * (n - width) + (i0 * n + i1), rect[idx])
    out = []
    for k in range(len(cuts)):
        parts = found[k] or [(np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32))]
        codes, vals = (np.concatenate(c) for c in zip(*parts, strict=True))
        out.append((int(below[k]), codes, vals, hists[k]))
    return out


def triangle_order_statistics(u: np.ndarray, ranks: list[int], block_elems: int = 1 << 23, sample: int = 40_000,
                              exact_pairs: int = 50_000, spread: float = 6.0, cap: int = 1 << 23,
                              seed: int = 0) -> list[float]:
    """The ``ranks``-th smallest (0-based) ``pair_cosines(u, i, j)`` over all pairs i < j of the unit rows ``u``,
    exactly, without sorting (or holding) the ~n^2/2 values.

    Maps with at most ``exact_pairs`` pairs: all values, then ``np.partition``. Larger ones: a uniform sample of
    ``sample`` pairs brackets each rank (sample quantiles +-``spread`` binomial standard deviations), one float32
    pass over the upper triangle counts the values below each bracket and keeps the pairs inside it, and only the
    pairs whose float32 value lies within a rigorous rounding bound of the rank's float32 value are recomputed in
    float64; a bracket that missed (the sample is random; the result never is) is widened and scanned again, one
    that holds more than ``cap`` pairs (huge maps) is narrowed to the bins of its histogram around the rank.
    """
    n = len(u)
    n_pairs = n * (n - 1) // 2
    if not ranks:
        return []
    if n_pairs <= exact_pairs:
        ii, jj = np.triu_indices(n, k=1)
        vals = pair_cosines(u, ii, jj)
        return [float(v) for v in np.partition(vals, ranks)[ranks]]
    u32 = u.astype(np.float32)
    m = _screen_margin(u.shape[1])
    rng = np.random.default_rng(seed)
    si = rng.integers(0, n, size=sample)
    sj = rng.integers(0, n - 1, size=sample)
    sj += sj >= si  # uniform over the pairs {i, j}, i != j
    z = np.sort(np.concatenate([(u32[si[k : k + 512]] * u32[sj[k : k + 512]]).sum(axis=1)
                                for k in range(0, sample, 512)]))

    def sample_cut(r: int, widen: float) -> tuple[float, float]:
        p = (r + 0.5) / n_pairs
        half = widen * (spread * np.sqrt(sample * p * (1.0 - p)) + 1.0)
        lo_s, hi_s = int(np.floor(p * sample - half)), int(np.ceil(p * sample + half))
        # 3m beyond the sample values: a rank on a sample value (ties) is not on the bracket's edge
        return (float(z[lo_s]) - 3 * m if lo_s >= 0 else -_LIMIT, float(z[hi_s]) + 3 * m if hi_s < sample else _LIMIT)

    result: dict[int, float] = {}
    cuts = {r: sample_cut(r, 1.0) for r in set(ranks)}
    tries = {r: 0 for r in cuts}
    caps = {r: float(cap) for r in cuts}
    while cuts:
        order = sorted(cuts)
        used = [(float(np.float32(cuts[r][0])), float(np.float32(cuts[r][1]))) for r in order]  # as compared
        scans = _scan_triangle(u32, used, block_elems, [caps[r] for r in order])
        retry: dict[int, tuple[float, float]] = {}
        for r, (lo, hi), (c0, codes, bv, hist) in zip(order, used, scans, strict=True):
            tries[r] += 1
            widen = 4.0 ** tries[r] if tries[r] < 4 else np.inf
            total = len(bv) if hist is None else int(hist.sum())
            if not c0 <= r < c0 + total:  # the sample's bracket missed the rank
                retry[r] = sample_cut(r, widen) if np.isfinite(widen) else (-_LIMIT, _LIMIT)
                continue
            if hist is not None:  # too many pairs to keep: the bins around the rank's (binning is exact to 1 bin)
                at = int(np.searchsorted(c0 + np.cumsum(hist), r, side="right"))
                w = (hi - lo) / _BINS
                retry[r] = (lo + (at - 1) * w - 3 * m, lo + (at + 2) * w + 3 * m)
                if hi - lo <= 64 * m:  # ties too many to split: keep them all
                    caps[r] = np.inf
                continue
            v = bv.astype(np.float64)
            t32 = float(np.partition(v, r - c0)[r - c0])  # the rank's float32 value: the exact one is within m
            if t32 - 2 * m < lo or t32 + 2 * m >= hi:  # too close to the bracket's edge to be settled: re-centre
                retry[r] = (min(lo, t32 - 3 * m), max(hi, t32 + 3 * m))
                continue
            # every value differs from its exact one by < m, so the exact rank-r value lies in [t32 - m, t32 + m];
            # pairs whose exact value can be in that window are within 2m of t32 (all inside the bracket)
            near = np.abs(v - t32) <= 2 * m
            f = pair_cosines(u, codes[near] // n, codes[near] % n)
            a, b = t32 - m, t32 + m
            n_lt = c0 + int(np.count_nonzero(v < t32 - 2 * m)) + int(np.count_nonzero(f < a))
            window = np.sort(f[(f >= a) & (f <= b)])
            if not n_lt <= r < n_lt + len(window):  # cannot happen with a rigorous margin; never guess
                retry[r] = (-_LIMIT, _LIMIT)
                continue
            result[r] = float(window[r - n_lt])
        cuts = retry
    return [result[r] for r in ranks]


def null_tail_flags(u: np.ndarray, qi: np.ndarray, qj: np.ndarray, thresholds: list[tuple[float, float]],
                    **kwargs: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """For each query pair (qi[k], qj[k]) and threshold pair (lower, upper): is its cosine similarity in the tails
    of the null of all pairs i < j of the unit rows ``u``, as EFAAR_benchmarking's ``compute_recall`` decides
    (percentile rank: share of null values at or below it <= lower, or share strictly below it >= upper)?

    Only the null's order statistics at the tail boundaries are needed (``tail_counts``); they are computed exactly
    (``triangle_order_statistics``) from the same per-pair values as the queries', so a query pair ranks against
    its own null value. Returns (query values, flags [thresholds, queries], null size).
    """
    n = len(u)
    n_null = n * (n - 1) // 2
    values = pair_cosines(u, np.minimum(qi, qj), np.maximum(qi, qj))
    bounds = [tail_counts(n_null, min(lo, hi), max(lo, hi)) for lo, hi in thresholds]
    need = sorted({k for k, _ in bounds if 0 <= k < n_null} | {k - 1 for _, k in bounds if 1 <= k <= n_null})
    stat = dict(zip(need, triangle_order_statistics(u, need, **kwargs), strict=True))
    flags = np.zeros((len(thresholds), len(values)), dtype=bool)
    for t, (k_lo, k_hi) in enumerate(bounds):
        # c_le <= k_lo  <=>  fewer than k_lo + 1 null values are <= q  <=>  q < the (k_lo)-th smallest
        low = np.ones(len(values), bool) if k_lo >= n_null else (values < stat[k_lo]) if k_lo >= 0 else False
        # c_lt >= k_hi  <=>  at least k_hi null values are < q  <=>  the (k_hi - 1)-th smallest < q
        high = np.ones(len(values), bool) if k_hi <= 0 else (values > stat[k_hi - 1]) if k_hi <= n_null else False
        flags[t] = low | high
    return values, flags, n_null


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
