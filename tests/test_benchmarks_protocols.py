"""The shipped default definitions reproduce the published RxRx3-core protocol.

compound-gene-activity is not in efaar_benchmarking 1.0, so its reference is written here from the published
semantics (the RxRx3-core notebook's compound_gene_benchmark): seeds 0..99, quantiles 0.5/0.75/0.95, the 8
concentrations, actives nM <= 1000, grey zone (1000, 10000] excluded, max(2 x actives, 20) negatives, |cosine|,
a concentration the compound lacks scoring AP 0 / AUC 0.5, the random baseline averaged over every compound.
With fixed negatives (every compound has exactly as many eligible negatives as it needs) rxcurate equals it to
1e-12; with sampled negatives, within Monte Carlo error. Results do not depend on PYTHONHASHSEED.
(Recall and post-processing are compared with efaar_benchmarking itself in test_efaar_reference.py.)
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from rxcurate.benchmarks import evaluate_map, load_definition
from rxcurate.benchmarks.compound_gene import conc_label
from rxcurate.source import RXRX3_CONCENTRATIONS_UM

ROOT = Path(__file__).resolve().parents[1]
CONCS = list(RXRX3_CONCENTRATIONS_UM)
QUANTILES = [0.5, 0.75, 0.95]


def _map_and_truth(fixed_negatives: bool, seed: int = 0):
    """40 genes, 10 compounds at the 8 concentrations (some (compound, concentration) rows missing) and a truth table.
    fixed_negatives: every compound lists all 30 truth genes with exactly max(2a, 20) of them eligible negatives."""
    rng = np.random.default_rng(seed)
    d = 16
    genes = np.array([f"G{i:03d}" for i in range(40)], dtype=object)
    gx = rng.normal(size=(len(genes), d))
    cpds = np.array([f"CMPD-{i:02d}" for i in range(10)], dtype=object)
    rows_p, rows_c, rows_x = list(genes), [np.nan] * len(genes), list(gx)
    truth = []
    pool = genes[:30]
    for ci, cpd in enumerate(cpds):
        n_act = 2 + ci % 4
        perm = rng.permutation(len(pool))
        act = pool[perm[:n_act]]
        if fixed_negatives:
            n_excl = len(pool) - n_act - max(2 * n_act, 20)
        else:
            n_excl = 2
        excl = pool[perm[n_act : n_act + n_excl]]
        rest = pool[perm[n_act + n_excl :]]
        truth += [(g, float(rng.uniform(10, 1000)), "IC50", "t", cpd) for g in act]
        truth += [(g, float(rng.uniform(1001, 10000)), "Ki", "t", cpd) for g in excl]
        if fixed_negatives or ci % 2:
            truth += [(g, float(rng.uniform(10001, 1e5)), "Kd", "t", cpd) for g in rest]
        target = gx[np.flatnonzero(genes == act[0])[0]]
        for k, c in enumerate(CONCS):
            if (ci + k) % 5 == 0:
                continue  # this compound lacks this concentration in the map
            rows_p.append(cpd)
            rows_c.append(c)
            rows_x.append(target * (k + 1) / 8 + rng.normal(size=d))
    frame = pd.DataFrame({"perturbation": rows_p, "concentration": rows_c})
    frame = pd.concat([frame, pd.DataFrame(np.asarray(rows_x), columns=[f"feature_{i}" for i in range(d)])], axis=1)
    table = pd.DataFrame(truth, columns=["gene_symbol", "nM_value", "measurement_type", "database", "treatment"])
    return frame, table


def _reference(frame: pd.DataFrame, table: pd.DataFrame, seeds: list[int]) -> dict:
    """The published semantics, literally: loops, sklearn metrics, Python's random for negatives and baseline."""
    is_gene = frame["concentration"].isna().to_numpy()
    x = frame[[c for c in frame.columns if c.startswith("feature_")]].to_numpy(dtype=float)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    gene_u = {p: u[i] for i, p in enumerate(frame["perturbation"]) if is_gene[i]}
    cpd_u = {(p, float(c)): u[i] for i, (p, c) in enumerate(zip(frame["perturbation"], frame["concentration"],
                                                                 strict=True)) if not is_gene[i]}
    map_cpds = sorted({p for p, _ in cpd_u})
    t = table[table["gene_symbol"].isin(gene_u) & table["treatment"].isin(map_cpds)]
    pool = sorted(set(t["gene_symbol"]))
    best = t.groupby(["treatment", "gene_symbol"])["nM_value"].min()
    per_seed = {k: {m: [] for m in ("ap", "auc", "bap", "bauc")} for k in [*CONCS, "max"]}
    for seed in seeds:
        rnd = random.Random(seed)
        vals = {k: {m: [] for m in ("ap", "auc", "bap", "bauc")} for k in [*CONCS, "max"]}
        for cpd in map_cpds:
            nm = best[cpd]
            act = sorted(g for g in pool if nm.get(g, np.inf) <= 1000)
            elig = sorted(g for g in pool if nm.get(g, np.inf) > 10000)
            n_neg = max(2 * len(act), 20)
            if not act or len(elig) < n_neg:
                continue
            neg = rnd.sample(elig, n_neg)
            targets = act + neg
            y = np.array([1] * len(act) + [0] * n_neg)
            base = np.array([rnd.random() for _ in targets])
            bap, bauc = average_precision_score(y, base), roc_auc_score(y, base)
            present = [c for c in CONCS if (cpd, c) in cpd_u]
            scores = {c: np.array([abs(cpd_u[(cpd, c)] @ gene_u[g]) for g in targets]) for c in present}
            scores["max"] = np.max([scores[c] for c in present], axis=0)
            for k in [*CONCS, "max"]:
                if k in scores:
                    vals[k]["ap"].append(average_precision_score(y, scores[k]))
                    vals[k]["auc"].append(roc_auc_score(y, scores[k]))
                else:
                    vals[k]["ap"].append(0.0)
                    vals[k]["auc"].append(0.5)
                vals[k]["bap"].append(bap)
                vals[k]["bauc"].append(bauc)
        for k, entry in vals.items():
            for m, v in entry.items():
                per_seed[k][m].append([np.mean(v), *np.quantile(v, QUANTILES)])
    return {k: {m: np.asarray(v) for m, v in entry.items()} for k, entry in per_seed.items()}  # [seed, stat]


NAMES = {"ap": "average_precision", "auc": "auc_roc", "bap": "baseline_average_precision",
         "bauc": "baseline_auc_roc"}
STATS = ["mean", "q0.5", "q0.75", "q0.95"]


def _ours(frame, table, tmp_path):
    path = tmp_path / "compound_gene_interactions.csv"
    table.to_csv(path, index=False)
    return evaluate_map("compound-gene-activity", frame, [path])["metrics"]


def test_compound_gene_default_equals_published_semantics_with_fixed_negatives(tmp_path):
    frame, table = _map_and_truth(fixed_negatives=True)
    ours = _ours(frame, table, tmp_path)
    assert ours["seeds"] == 100
    assert ours["counts"]["compounds_evaluated"] == 10
    ref = _reference(frame, table, list(range(100)))
    for k in [*CONCS, "max"]:
        label = "max" if k == "max" else conc_label(k)
        for m in ("ap", "auc"):  # negatives are fixed: every seed scores the same targets, exactly
            want = ref[k][m].mean(axis=0)
            got = [ours["concentrations"][label][NAMES[m]][s]["mean"] for s in STATS]
            np.testing.assert_allclose(got, want, atol=1e-12, rtol=0, err_msg=f"{label} {m}")
        for m in ("bap", "bauc"):  # the random baseline: within Monte Carlo error of the reference's own draws
            want = ref[k][m][:, 0].mean()
            err = 4 * np.sqrt(2) * ref[k][m][:, 0].std(ddof=1) / np.sqrt(100) + 1e-9
            assert abs(ours["concentrations"][label][NAMES[m]]["mean"]["mean"] - want) <= err, (label, m)
    # the baseline is one per compound: the same at every concentration
    b = {ours["concentrations"][conc_label(c)]["baseline_auc_roc"]["mean"]["mean"] for c in CONCS}
    assert len(b) == 1
    # empty concentrations count as AP 0 / AUC 0.5: a concentration with 2 of 10 compounds missing is pulled down
    assert ours["concentrations"][conc_label(CONCS[0])]["compounds"] == 8


def test_compound_gene_default_within_monte_carlo_error_with_sampled_negatives(tmp_path):
    frame, table = _map_and_truth(fixed_negatives=False, seed=1)
    ours = _ours(frame, table, tmp_path)
    ref = _reference(frame, table, list(range(100)))
    assert ours["counts"]["compounds_evaluated"] >= 8
    for k in [*CONCS, "max"]:
        label = "max" if k == "max" else conc_label(k)
        for m in NAMES:
            want = ref[k][m][:, 0].mean()
            err = 4 * np.sqrt(2) * ref[k][m][:, 0].std(ddof=1) / np.sqrt(100) + 1e-9
            got = ours["concentrations"][label][NAMES[m]]["mean"]
            assert abs(got["mean"] - want) <= err, (label, m, got["mean"], want, err)


def test_variant_keeps_the_earlier_semantics(tmp_path):
    frame, table = _map_and_truth(fixed_negatives=True)
    path = tmp_path / "cg.csv"
    table.to_csv(path, index=False)
    tvn = evaluate_map("compound-gene-activity-tvn", frame, [path])["metrics"]
    ref = _reference(frame, table, [0])
    label = conc_label(CONCS[0])
    # the variant averages only over compounds present at the concentration: it must differ from the published mean
    assert tvn["concentrations"][label]["average_precision"]["mean"]["mean"] != pytest.approx(ref[CONCS[0]]["ap"][0, 0])


SCRIPT = r"""
import json, sys
from rxcurate.benchmarks import evaluate
from rxcurate.benchmarks.synthetic import synthetic_rxrx3, write_synthetic
data = synthetic_rxrx3(n_genes=24, n_compounds=8, controls_per_experiment=16, gene_experiments=2,
                       compound_experiments=2, dim=12, seed=3)
paths = write_synthetic(data, sys.argv[1])
out = {}
for bid, truth in (("gene-gene-recall", [paths["relationships"]]), ("compound-gene-activity", [paths["compound_gene"]]),
                   ("perturbation-signal", None), ("gene-gene-recall-tvn", [paths["relationships"]]),
                   ("compound-gene-activity-tvn", [paths["compound_gene"]])):
    res = evaluate(bid, data["embeddings"], data["metadata"], truth)
    out[bid] = {"metrics": res["metrics"], "summary": res["summary"]}
print(json.dumps(out, sort_keys=True))
"""


def test_results_do_not_depend_on_the_hash_seed(tmp_path):
    outs = []
    for hs in ("0", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=hs)
        folder = tmp_path / f"h{hs}"
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(folder)], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(proc.stdout)
    assert outs[0] == outs[1]
    parsed = json.loads(outs[0])
    assert parsed["gene-gene-recall"]["summary"] and parsed["compound-gene-activity"]["summary"]


def test_default_definitions_follow_the_notebook_post_processing():
    for bid in ("gene-gene-recall", "compound-gene-activity"):
        d = load_definition(bid)
        assert d["postprocess"]["method"] == "pca_centerscale" and d["columns"]["batch"] == "experiment_name"
