"""compound-gene-activity: zero-shot drug-target interaction from |cosine(compound, gene knockout)|.

Per compound: actives are genes with nM_value <= active_nM (the smallest value when a pair has several),
genes with active_nM < nM_value <= excluded_nM are excluded, and max(negatives_per_active x actives,
min_negatives) negatives are drawn from the table's other genes. Only genes and compounds present in the map take
part. Sampling uses one ``numpy.random.default_rng(seed)`` per seed over compounds and genes in sorted order (never
Python hash or set order); all compounds of a seed are sampled and scored at once.

``parameters.empty_concentration`` / ``parameters.baseline`` select the published semantics ("zero": a concentration
a compound lacks scores AP 0 / AUC 0.5 and every evaluated compound is averaged; "per_compound": one random-score
baseline per compound, averaged over every evaluated compound) or rxcurate's earlier ones (the defaults: skip,
per_concentration).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rxcurate.benchmarks.metrics import isin, ranking_metrics, unit_rows
from rxcurate.benchmarks.postprocess import PerturbationMap
from rxcurate.errors import BenchmarkError

METRICS = ("average_precision", "auc_roc", "baseline_average_precision", "baseline_auc_roc")


def conc_label(c: float) -> str:
    return repr(float(c))


def _stat_names(quantiles: list[float]) -> list[str]:
    return ["mean"] + [f"q{q}" for q in quantiles]


def _sample_negatives(
    rng: np.random.Generator, eligible: np.ndarray, n_neg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, a uniform random subset of ``n_neg[i]`` eligible columns (sorted by their random key)."""
    keys = rng.random(eligible.shape)
    keys[~eligible] = np.inf
    k = int(n_neg.max())
    if k < keys.shape[1]:
        cand = np.argpartition(keys, k - 1, axis=1)[:, :k]
    else:
        cand = np.broadcast_to(np.arange(keys.shape[1]), keys.shape).copy()
    order = np.argsort(np.take_along_axis(keys, cand, axis=1), axis=1, kind="stable")
    neg = np.take_along_axis(cand, order, axis=1)[:, :k]
    return neg, np.arange(k)[None, :] < n_neg[:, None]


def _summarise(values: np.ndarray, valid: np.ndarray, quantiles: list[float]) -> np.ndarray:
    """[n_seeds, n_compounds, n_cols] -> [n_seeds, n_stats, n_cols]: mean and quantiles over the valid compounds
    of each column (NaN for a column without any)."""
    out = np.full((values.shape[0], 1 + len(quantiles), values.shape[2]), np.nan)
    for k in range(values.shape[2]):
        v = values[:, valid[:, k], k]
        if v.shape[1]:
            out[:, 0, k] = v.mean(axis=1)
            if quantiles:
                out[:, 1:, k] = np.quantile(v, quantiles, axis=1).T
    return out


def compound_gene_activity(
    m: PerturbationMap, table: pd.DataFrame, params: dict[str, Any], seeds: list[int]
) -> dict[str, Any]:
    gene_rows = np.flatnonzero(m.kind == "gene")
    cpd_rows = np.flatnonzero(m.kind == "compound")
    if len(cpd_rows) == 0 or len(gene_rows) == 0:
        raise BenchmarkError(f"compound-gene-activity needs gene and compound perturbations in the map (found "
                             f"{len(gene_rows)} genes, {len(cpd_rows)} compound rows): is this an RxRx3 screen?")
    gene_index = pd.Index(m.perturbation[gene_rows])
    map_cpds = np.unique(m.perturbation[cpd_rows].astype(str))
    t_all = table
    t = table[table["gene_symbol"].isin(gene_index) & table["treatment"].isin(map_cpds)]
    n_cpd_truth = int(t_all["treatment"].nunique())
    if t.empty:
        truth_cpds = [str(v) for v in t_all["treatment"].unique()[:3]]
        raise BenchmarkError(f"no compound-gene pair of the truth table has both its compound and gene in the map "
                             f"(empty overlap with truth; truth compounds e.g. {truth_cpds}, map compounds e.g. "
                             f"{map_cpds[:3].tolist()})")
    pool = np.unique(t["gene_symbol"].to_numpy(dtype=str))
    cpds = np.unique(t["treatment"].to_numpy(dtype=str))
    best = t.groupby(["treatment", "gene_symbol"], sort=True)["nM_value"].min()
    ci = pd.Index(cpds).get_indexer(best.index.get_level_values(0))
    gi = pd.Index(pool).get_indexer(best.index.get_level_values(1))
    nm = np.full((len(cpds), len(pool)), np.inf)
    nm[ci, gi] = best.to_numpy()
    active = nm <= params["active_nM"]
    eligible = nm > params["excluded_nM"]
    n_act = active.sum(axis=1)
    n_neg = np.maximum(params["negatives_per_active"] * n_act, params["min_negatives"])
    ok = (n_act > 0) & (eligible.sum(axis=1) >= n_neg)
    counts = {
        "compounds_in_truth": n_cpd_truth,
        "compounds_in_map_and_truth": int(len(cpds)),
        "compounds_evaluated": int(ok.sum()),
        "compounds_without_actives": int((n_act == 0).sum()),
        "compounds_too_few_negatives": int(((n_act > 0) & ~ok).sum()),
        "genes_in_pool": int(len(pool)),
        "genes_in_map": int(len(gene_index)),
    }
    if not ok.any():
        raise BenchmarkError(f"no compound can be evaluated: of {len(cpds)} compounds in map and truth, "
                             f"{counts['compounds_without_actives']} have no active gene (nM_value <= "
                             f"{params['active_nM']}) in the map and {counts['compounds_too_few_negatives']} have "
                             "fewer "
                             f"than max({params['negatives_per_active']} x actives, {params['min_negatives']}) "
                             "eligible negative genes")
    cpds, active, eligible, n_act, n_neg = cpds[ok], active[ok], eligible[ok], n_act[ok], n_neg[ok]

    # |cosine| of every (compound, concentration) with every pool gene; NaN where the concentration is absent
    concs = np.unique(m.concentration[cpd_rows])
    u = unit_rows(m.features, "map", m.perturbation)
    u_pool = u[gene_rows[gene_index.get_indexer(pool)]]
    in_eval = isin(m.perturbation[cpd_rows].astype(str), cpds)
    rows = cpd_rows[in_eval]
    r_c = pd.Index(cpds).get_indexer(m.perturbation[rows].astype(str))
    r_k = np.searchsorted(concs, m.concentration[rows])
    n_k = len(concs) + 1
    sims = np.full((len(cpds), n_k, len(pool)), np.nan)
    sims[r_c, r_k] = np.abs(u[rows] @ u_pool.T)
    sims[:, -1] = np.nanmax(sims[:, :-1], axis=1)
    row_valid = ~np.isnan(sims[:, :, 0])  # [n_cpd, n_k]
    sims = np.ascontiguousarray(sims.transpose(0, 2, 1))  # [n_cpd, n_pool, n_k]: a target's scores are contiguous

    zero_empty = params.get("empty_concentration", "skip") == "zero"
    per_compound_baseline = params.get("baseline", "per_concentration") == "per_compound"
    a_max = int(n_act.max())
    act_idx = np.argsort(~active, axis=1, kind="stable")[:, :a_max]  # active columns first, in pool order
    act_mask = np.arange(a_max)[None, :] < n_act[:, None]
    qs = list(params["quantiles"])
    per_compound = np.empty((len(METRICS), len(seeds), len(cpds), n_k))
    n_c = np.arange(len(cpds))[:, None]
    for si, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        neg_idx, neg_mask = _sample_negatives(rng, eligible, n_neg)
        targets = np.concatenate([act_idx, neg_idx], axis=1)
        mask = np.concatenate([act_mask, neg_mask], axis=1)
        labels = np.concatenate([act_mask, np.zeros_like(neg_mask)], axis=1)
        width = targets.shape[1]
        scores = sims[n_c, targets].transpose(0, 2, 1)  # [n_cpd, n_k, width]
        full_mask = np.broadcast_to(mask[:, None, :], scores.shape) & row_valid[:, :, None]
        full_labels = np.broadcast_to(labels[:, None, :], scores.shape)
        flat = (-1, width)
        ap, auc = ranking_metrics(scores.reshape(flat), full_labels.reshape(flat), full_mask.reshape(flat))
        if per_compound_baseline:  # one random ranking per compound, the same for every concentration (EFAAR)
            bap, bauc = ranking_metrics(rng.random(mask.shape), labels, mask)
            bap, bauc = np.repeat(bap, n_k), np.repeat(bauc, n_k)
        else:
            base = rng.random(scores.shape)
            bap, bauc = ranking_metrics(base.reshape(flat), full_labels.reshape(flat), full_mask.reshape(flat))
        for mi, values in enumerate((ap, auc, bap, bauc)):
            per_compound[mi, si] = values.reshape(len(cpds), n_k)
    if zero_empty:  # a concentration the compound lacks scores AP 0 / AUC 0.5 (EFAAR's compound_gene_benchmark)
        empty = ~row_valid
        for mi, fill in enumerate((0.0, 0.5, 0.0, 0.5)):
            per_compound[mi][:, empty] = np.where(np.isnan(per_compound[mi][:, empty]), fill,
                                                  per_compound[mi][:, empty])
    scored = np.ones_like(row_valid) if zero_empty else row_valid
    valid = [scored, scored] + [np.ones_like(row_valid) if per_compound_baseline else scored] * 2
    per_seed = np.stack([_summarise(v, ok_k, qs) for v, ok_k in zip(per_compound, valid, strict=True)],
                        axis=1)  # [seeds, metric, stat, k]

    labels_k = [conc_label(c) for c in concs] + ["max"]
    stats = _stat_names(qs)
    mean = per_seed.mean(axis=0)
    std = per_seed.std(axis=0, ddof=1) if len(seeds) > 1 else np.full_like(mean, np.nan)
    by_conc: dict[str, Any] = {}
    for k, label in enumerate(labels_k):
        entry: dict[str, Any] = {"compounds": int(row_valid[:, k].sum())}
        for mi, metric in enumerate(METRICS):
            entry[metric] = {
                stat: {"mean": _num(mean[mi, si, k]), "std": _num(std[mi, si, k])} for si, stat in enumerate(stats)
            }
        by_conc[label] = entry
    return {"counts": counts, "seeds": len(seeds), "concentrations": by_conc}


def _num(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def summary(metrics: dict[str, Any]) -> dict[str, float | None]:
    flat: dict[str, float | None] = {}
    for label, entry in metrics["concentrations"].items():
        for metric in METRICS:
            for stat, value in entry[metric].items():
                flat[f"{label}/{metric}/{stat}"] = value["mean"]
    return flat
