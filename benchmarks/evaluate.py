"""Speed of the benchmarks at RxRx3-core scale (and of the well-level pipeline at a chosen scale), in one run.

    .venv/bin/python benchmarks/evaluate.py [--genes 735] [--compounds 1674] [--dim 384] [--seeds 100]
                                            [--wells 75800] [--rxrx1-sirnas 300] [--out FILE]

Builds synthetic inputs with planted biology (rxcurate.benchmarks.synthetic) and times:
- ``map``: gene-gene-recall and compound-gene-activity (``--seeds`` seeds) on a perturbation-level map of
  ``--genes`` genes and ``--compounds`` compounds x 8 concentrations, ``--dim`` features (RxRx3-core: 735, 1674, 384),
  scored with ``evaluate_map`` as a third-party map would be;
- ``wells``: the well-level path on about ``--wells`` wells (validation + TVN + aggregation + scoring) for
  gene-gene-recall and perturbation-signal (RxRx3-core has ~222k wells);
- ``rxrx1``: rxrx1-batch-generalisation (two logistic-regression probes) on ``--rxrx1-sirnas`` siRNAs, 4 cell types.

Each entry reports seconds and the headline metrics (a sanity check that the planted signal is found). Goal:
compound-gene-activity with 100 seeds in seconds, not minutes. Results go to benchmarks/results/evaluate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rxcurate import __version__  # noqa: E402
from rxcurate.benchmarks import evaluate, evaluate_map, library_versions, load_definition  # noqa: E402
from rxcurate.benchmarks.synthetic import synthetic_map, synthetic_rxrx1, synthetic_rxrx3  # noqa: E402
from rxcurate.io import atomic_write_json  # noqa: E402

GOALS = {"compound_gene_activity_100_seeds_seconds": 30.0}


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t0, 3)


def _pick(summary: dict, keys: list[str]) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items() if k in keys}


def bench_map(args, tmp: Path) -> dict:
    data, t_build = _timed(lambda: synthetic_map(n_genes=args.genes, n_compounds=args.compounds, dim=args.dim))
    rel, cgi = tmp / "relationships.csv", tmp / "compound_gene_interactions.csv"
    data["relationships"].to_csv(rel, index=False)
    data["compound_gene"].to_csv(cgi, index=False)
    ggr, t_ggr = _timed(lambda: evaluate_map("gene-gene-recall", data["map"], {"synthetic": rel}))
    defn = load_definition("compound-gene-activity")
    defn["seeds"]["count"] = args.seeds
    cga, t_cga = _timed(lambda: evaluate_map(defn, data["map"], [cgi]))
    return {
        "genes": args.genes, "compounds": args.compounds, "concentrations": 8, "dim": args.dim,
        "map_rows": len(data["map"]), "truth_rows": len(data["compound_gene"]), "build_seconds": t_build,
        "gene_gene_recall": {"seconds": t_ggr, "summary": ggr["summary"]},
        "compound_gene_activity": {
            "seconds": t_cga, "seeds": args.seeds, "seconds_per_seed": round(t_cga / args.seeds, 4),
            "compounds_evaluated": cga["metrics"]["counts"]["compounds_evaluated"],
            "summary": _pick(cga["summary"], ["max/auc_roc/mean", "max/average_precision/mean",
                                              "max/baseline_auc_roc/mean", "max/baseline_average_precision/mean"]),
        },
    }


def bench_wells(args, tmp: Path) -> dict:
    # wells = genes x 6 guides x 4 + compounds x 8 x 3 + 60 experiments x 300 controls = 75,800 at scale 1
    # (RxRx3-core's 735 genes and 1,674 compounds, with fewer replicate and control wells than its ~222k)
    scale = args.wells / 75800
    kw = dict(n_genes=max(10, int(735 * scale) // 5 * 5), module_size=5, n_compounds=max(2, int(1674 * scale)),
              guides=6, gene_replicates=4, compound_replicates=3, controls_per_experiment=300, dim=args.dim,
              gene_experiments=max(1, round(30 * scale)), compound_experiments=max(1, round(30 * scale)))
    data, t_build = _timed(lambda: synthetic_rxrx3(**kw))
    rel = tmp / "rel_wells.csv"
    data["relationships"].to_csv(rel, index=False)
    ggr, t_ggr = _timed(lambda: evaluate("gene-gene-recall", data["embeddings"], data["metadata"], [rel]))
    sig, t_sig = _timed(lambda: evaluate("perturbation-signal", data["embeddings"], data["metadata"]))
    return {
        "wells": len(data["metadata"]), "dim": args.dim, "build_seconds": t_build,
        "gene_gene_recall": {"seconds": t_ggr, "summary": ggr["summary"]},
        "perturbation_signal": {"seconds": t_sig, "summary": _pick(sig["summary"], [
            "all/consistency/share_significant", "all/magnitude/share_significant"])},
    }


def bench_rxrx1(args) -> dict:
    data, t_build = _timed(lambda: synthetic_rxrx1(n_sirnas=args.rxrx1_sirnas, cell_types=("HEPG2", "HUVEC", "RPE",
                                                                                          "U2OS"), dim=args.dim))
    res, t = _timed(lambda: evaluate("rxrx1-batch-generalisation", data["embeddings"], data["metadata"]))
    return {"wells": len(data["embeddings"]), "sirnas": args.rxrx1_sirnas, "dim": args.dim, "build_seconds": t_build,
            "seconds": t, "summary": _pick(res["summary"], ["corrected/accuracy", "uncorrected/accuracy"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--genes", type=int, default=735)
    ap.add_argument("--compounds", type=int, default=1674)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--wells", type=int, default=75800, help="approximate well count of the well-level run (0: skip)")
    ap.add_argument("--rxrx1-sirnas", type=int, default=300, help="siRNAs of the RxRx1 probe run (0: skip)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "evaluate.json")
    args = ap.parse_args()
    np.random.default_rng(0)
    result: dict = {
        "benchmark": "evaluate",
        "rxcurate": __version__,
        "versions": library_versions(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "goals": GOALS,
    }
    with tempfile.TemporaryDirectory() as tmp:
        result["map"] = bench_map(args, Path(tmp))
        if args.wells:
            result["wells"] = bench_wells(args, Path(tmp))
    if args.rxrx1_sirnas:
        result["rxrx1"] = bench_rxrx1(args)
    cga = result["map"]["compound_gene_activity"]
    result["goals_met"] = {"compound_gene_activity_100_seeds_seconds":
                           cga["seconds"] * 100 / cga["seeds"] <= GOALS["compound_gene_activity_100_seeds_seconds"]}
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
