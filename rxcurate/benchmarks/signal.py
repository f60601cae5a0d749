"""perturbation-signal: replicate consistency and magnitude of each perturbation against control-based nulls.

Consistency = mean pairwise cosine similarity of a perturbation's wells; magnitude = energy distance
(2 E|X-Y| - E|X-X'| - E|Y-Y'|, V-statistics, as ``2 x geomloss.SamplesLoss("energy")``) between its wells and a
reference sample of control wells (at most ``max_controls``). p-values follow EFAAR_benchmarking: consistency
p = share of the null >= the value, magnitude p = share of the null > the value.

The null consists of negative-control pseudo-perturbations: for every replicate count n, ``null_samples`` sets of
n control wells drawn without replacement from one batch (batches weighted like the perturbations of that size).
Those null-pool controls (``null_fraction`` of each batch's controls, chosen with the seed) are held out of the
post-processing fit, so they are transformed exactly like perturbation wells; otherwise controls fitted in-sample
(per-batch scaling, TVN whitening) would look tighter than any perturbation and every p-value would be biased low.
With no biology the share of p < alpha is then about alpha.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rxcurate.benchmarks.metrics import mean_distance_to, mean_within_distance, unit_rows
from rxcurate.errors import BenchmarkError

CHUNK_ELEMS = 1 << 23  # gathered floats per null chunk (64 MiB)


def sample_without_replacement(rng: np.random.Generator, pool: int, n: int, samples: int) -> np.ndarray:
    """[samples, n] indices into range(pool), each row without repeats (vectorised)."""
    if n > pool:
        raise ValueError("n > pool")
    if n * n <= pool:  # duplicates are rare: draw with replacement, redraw the rows that repeat
        idx = rng.integers(0, pool, size=(samples, n))
        while True:
            s = np.sort(idx, axis=1)
            dup = (s[:, 1:] == s[:, :-1]).any(axis=1)
            if not dup.any():
                return idx
            idx[dup] = rng.integers(0, pool, size=(int(dup.sum()), n))
    keys = rng.random((samples, pool))
    return np.argsort(keys, axis=1, kind="stable")[:, :n]


def split_controls(
    is_control: np.ndarray, batch_codes: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Mask of the control wells held out as the null pool: ``floor(fraction x n_b)`` random controls of each batch
    (keeping at least 2 per batch for the fit)."""
    ctrl = np.flatnonzero(is_control)
    keys = rng.random(len(ctrl))
    order = ctrl[np.lexsort((keys, batch_codes[ctrl]))]  # controls grouped by batch, random order within
    b = batch_codes[order]
    n_b = np.bincount(b, minlength=int(batch_codes.max()) + 1)
    start = np.concatenate([[0], np.cumsum(n_b)[:-1]])
    rank = np.arange(len(order)) - start[b]
    hold = np.maximum(0, np.minimum(np.floor(n_b * fraction).astype(np.int64), n_b - 2))
    pool = np.zeros(len(is_control), dtype=bool)
    pool[order[rank < hold[b]]] = True
    return pool


def _consistency(u: np.ndarray) -> np.ndarray:
    """Mean pairwise cosine of unit rows, per group: u [G, n, d] -> [G]."""
    n = u.shape[1]
    s = u.sum(axis=1)
    return ((s * s).sum(axis=1) - n) / (n * (n - 1))


def _groups(codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by group (ascending row order within), each group's size and its start in that order."""
    order = np.argsort(codes, kind="stable")
    order = order[codes[order] >= 0]
    sizes = np.bincount(codes[order], minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return order, sizes, starts


def _null_indices(
    rng: np.random.Generator, n: int, n_null: int, ent_batches: np.ndarray, pool: np.ndarray, pool_batch: np.ndarray
) -> np.ndarray:
    """[<= n_null, n] well indices of batch-matched pseudo-perturbations (a sample falls back to the whole pool when
    its batch has fewer than n pool wells; samples that cannot be drawn at all are left out)."""
    want = ent_batches[rng.integers(0, len(ent_batches), size=n_null)]
    parts = []
    for b in np.unique(want):
        k = int((want == b).sum())
        members = pool[pool_batch == b]
        if len(members) < n:
            members = pool
        if len(members) < n:
            continue
        parts.append(members[sample_without_replacement(rng, len(members), n, k)])
    return np.concatenate(parts) if parts else np.zeros((0, n), dtype=np.int64)


def signal_table(
    x: np.ndarray,
    codes: np.ndarray,
    n_ent: int,
    batch_codes: np.ndarray,
    fit_controls: np.ndarray,
    null_pool: np.ndarray,
    params: dict[str, Any],
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Per map row (``n_ent`` perturbations): ``wells``, ``consistency``, ``magnitude`` and their p-values
    ``p_consistency`` / ``p_magnitude`` (NaN where undefined: too few wells, or no null of that size), plus
    ``controls`` (reference / null pool sizes). Arguments as :func:`perturbation_signal`."""
    n_null = int(params["null_samples"])
    min_c = int(params.get("min_wells_consistency", 2))
    min_m = int(params.get("min_wells_magnitude", 5))
    fit_idx = np.flatnonzero(fit_controls)
    pool = np.flatnonzero(null_pool)
    if len(fit_idx) < 2 or len(pool) < 2:
        raise BenchmarkError(f"perturbation-signal needs at least 2 reference and 2 held-out control wells, found "
                             f"{len(fit_idx)} and {len(pool)} (more negative controls, or parameters.null_fraction)")
    n_ref = min(int(params["max_controls"]), len(fit_idx))
    ref = np.sort(rng.choice(fit_idx, size=n_ref, replace=False))
    u = unit_rows(x, "post-processed embeddings")
    ref_x = x[ref]
    e_rr = float(mean_within_distance(ref_x[None])[0])

    order, sizes, starts = _groups(codes, n_ent)
    ent_batch = np.full(n_ent, -1, dtype=np.int64)
    has = sizes > 0
    ent_batch[has] = batch_codes[order[starts[has]]]  # the batch of each perturbation's first well
    consistency = np.full(n_ent, np.nan)
    magnitude = np.full(n_ent, np.nan)
    p_cons = np.full(n_ent, np.nan)
    p_mag = np.full(n_ent, np.nan)
    need_mag = (codes >= 0) & (sizes[np.maximum(codes, 0)] >= min_m)
    need_mag[pool] = True
    d_ref = np.full(len(x), np.nan)
    d_ref[need_mag] = mean_distance_to(x[need_mag], ref_x)

    for n in np.unique(sizes[sizes >= min_c]):
        n = int(n)
        ents = np.flatnonzero(sizes == n)
        idx = order[starts[ents][:, None] + np.arange(n)[None, :]]  # [G, n] wells of each perturbation
        consistency[ents] = _consistency(u[idx])
        do_mag = n >= min_m
        if do_mag:
            magnitude[ents] = 2.0 * d_ref[idx].mean(axis=1) - mean_within_distance(x[idx]) - e_rr
        null_idx = _null_indices(rng, n, n_null, ent_batch[ents], pool, batch_codes[pool])
        if len(null_idx) == 0:
            continue  # no null of this size: p-values stay undefined
        null_c = np.empty(len(null_idx))
        null_m = np.empty(len(null_idx))
        step = max(1, CHUNK_ELEMS // (n * x.shape[1]))
        for i0 in range(0, len(null_idx), step):  # chunks of null samples bound the memory of the gathered wells
            part = null_idx[i0 : i0 + step]
            null_c[i0 : i0 + step] = _consistency(u[part])
            if do_mag:
                null_m[i0 : i0 + step] = 2.0 * d_ref[part].mean(axis=1) - mean_within_distance(x[part]) - e_rr
        size = len(null_idx)
        p_cons[ents] = 1.0 - np.searchsorted(np.sort(null_c), consistency[ents], side="left") / size
        if do_mag:
            p_mag[ents] = 1.0 - np.searchsorted(np.sort(null_m), magnitude[ents], side="right") / size

    return {"wells": sizes, "consistency": consistency, "magnitude": magnitude, "p_consistency": p_cons,
            "p_magnitude": p_mag,
            "controls": {"reference": int(n_ref), "null_pool": int(len(pool)), "null_samples": n_null}}


def perturbation_signal(
    x: np.ndarray,
    codes: np.ndarray,
    kinds: np.ndarray,
    batch_codes: np.ndarray,
    fit_controls: np.ndarray,
    null_pool: np.ndarray,
    params: dict[str, Any],
    rng: np.random.Generator,
) -> dict[str, Any]:
    """``x``: post-processed well features; ``codes``: map row per well (-1 = not a perturbation); ``kinds``: the
    map rows' kinds (gene/compound); ``fit_controls`` / ``null_pool``: masks of the controls used to fit the
    post-processing and of the held-out controls."""
    alpha = float(params["alpha"])
    n_ent = len(kinds)
    t = signal_table(x, codes, n_ent, batch_codes, fit_controls, null_pool, params, rng)
    consistency, magnitude, p_cons, p_mag = t["consistency"], t["magnitude"], t["p_consistency"], t["p_magnitude"]
    out: dict[str, Any] = {"controls": t["controls"]}
    for group, sel in (("all", np.ones(n_ent, dtype=bool)), ("genes", kinds == "gene"),
                       ("compounds", kinds == "compound")):
        if group != "all" and not sel.any():
            continue
        out[group] = {"perturbations": int(sel.sum())}
        for name, values, pvals in (("consistency", consistency, p_cons), ("magnitude", magnitude, p_mag)):
            ev = sel & np.isfinite(pvals)
            out[group][name] = {
                "evaluated": int(ev.sum()),
                "share_significant": float((pvals[ev] < alpha).mean()) if ev.any() else None,
                "median": float(np.median(values[ev])) if ev.any() else None,
            }
    return out


def summary(metrics: dict[str, Any]) -> dict[str, float | None]:
    flat: dict[str, float | None] = {}
    for group in ("all", "genes", "compounds"):
        if group in metrics:
            for name in ("consistency", "magnitude"):
                flat[f"{group}/{name}/share_significant"] = metrics[group][name]["share_significant"]
                flat[f"{group}/{name}/median"] = metrics[group][name]["median"]
    return flat
