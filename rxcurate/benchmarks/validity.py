"""Is a benchmark measuring biology? Score embeddings against the real truth and against a gene-shuffled copy.

Shuffling relabels every gene of the truth tables with another gene of the map (one seeded permutation shared
by all tables), which keeps each table's structure (pair counts, degrees, actives per compound) but breaks its
link to the images: a benchmark that measures biology falls to chance on the shuffled truth.

Public API::

    shuffle_truth(frames, genes, seed) -> dict[str, DataFrame]
    validity(embeddings, metadata, truth_files, seed=0) -> dict   # headline metrics, true vs shuffled
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from rxcurate.benchmarks.readers import PathLike, read_compound_gene, read_relationships
from rxcurate.benchmarks.runner import evaluate
from rxcurate.errors import BenchmarkError

RELATIONSHIPS = "relationships"
COMPOUND_GENE = "compound_gene_interactions"
CONTROL_MARKERS = ("EMPTY_control", "CRISPR_control")


def map_genes(metadata: pd.DataFrame) -> np.ndarray:
    """Sorted gene symbols of the perturbed (non-control) CRISPR wells."""
    if "gene" not in metadata.columns:
        raise BenchmarkError("metadata has no 'gene' column: pass the release's metadata.parquet (RxRx3 layout)")
    genes = metadata.loc[metadata.get("perturbation_type", pd.Series("CRISPR", index=metadata.index)) == "CRISPR",
                         "gene"]
    genes = genes.dropna().astype(str)
    return np.array(sorted(set(genes) - set(CONTROL_MARKERS) - {""}), dtype=object)


def shuffle_truth(frames: Mapping[str, pd.DataFrame], genes: np.ndarray, seed: int) -> dict[str, pd.DataFrame]:
    """Relabel the genes of ``frames`` (``relationships`` and/or ``compound_gene_interactions``) with a seeded
    permutation of ``genes``; genes outside ``genes`` keep their names."""
    if len(genes) < 2:
        raise BenchmarkError(f"need at least 2 genes in the map to shuffle the truth, got {len(genes)}")
    order = np.sort(np.asarray(genes, dtype=object))
    perm = dict(zip(order, order[np.random.default_rng(seed).permutation(len(order))], strict=True))
    out: dict[str, pd.DataFrame] = {}
    for name, frame in frames.items():
        f = frame.copy()
        cols = ["entity1", "entity2"] if name == RELATIONSHIPS else ["gene_symbol"]
        for col in cols:
            f[col] = f[col].map(lambda g: perm.get(g, g))
        out[name] = f
    return out


def _headline(results: dict, benchmark: str) -> dict[str, float]:
    m = results["metrics"]
    if benchmark == "gene-gene-recall":
        return {f"{src}/{k}": float(v) for src, row in sorted(m["sources"].items())
                for k, v in row.items() if k.startswith("recall_")}
    mx = m["concentrations"]["max"]
    return {"auc_roc_max_mean": float(mx["auc_roc"]["mean"]["mean"]),
            "random_baseline_auc_roc_max_mean": float(mx["baseline_auc_roc"]["mean"]["mean"]),
            "average_precision_max_mean": float(mx["average_precision"]["mean"]["mean"]),
            "compounds_evaluated": float(m["counts"]["compounds_evaluated"])}


def validity(embeddings: pd.DataFrame, metadata: pd.DataFrame, truth_files: Mapping[str, PathLike],
             seed: int = 0) -> dict:
    """Headline metrics of gene-gene-recall and compound-gene-activity with the real truth and with the
    gene-shuffled truth (``seed``). ``truth_files`` maps ``relationships`` / ``compound_gene_interactions`` to
    files; a benchmark whose truth is missing is skipped."""
    unknown = sorted(set(truth_files) - {RELATIONSHIPS, COMPOUND_GENE})
    if unknown:
        raise BenchmarkError(f"unknown truth name(s) {unknown}: use {RELATIONSHIPS!r} and/or {COMPOUND_GENE!r}")
    frames: dict[str, pd.DataFrame] = {}
    if RELATIONSHIPS in truth_files:
        frames[RELATIONSHIPS] = read_relationships(truth_files[RELATIONSHIPS])
    if COMPOUND_GENE in truth_files:
        frames[COMPOUND_GENE] = read_compound_gene(truth_files[COMPOUND_GENE])
    shuffled = shuffle_truth(frames, map_genes(metadata), seed)
    out: dict = {"shuffle_seed": seed, "benchmarks": {}}
    with tempfile.TemporaryDirectory(prefix="rxcurate-validity-") as tmp:
        for label, tables in (("true", frames), ("shuffled", shuffled)):
            for name, frame in tables.items():
                frame.to_csv(Path(tmp) / f"{label}-{name}.csv", index=False)
        for benchmark, name in (("gene-gene-recall", RELATIONSHIPS), ("compound-gene-activity", COMPOUND_GENE)):
            if name not in frames:
                continue
            row = {}
            for label in ("true", "shuffled"):
                res = evaluate(benchmark, embeddings, metadata, {name: Path(tmp) / f"{label}-{name}.csv"})
                row[label] = _headline(res, benchmark)
            out["benchmarks"][benchmark] = row
    return out
