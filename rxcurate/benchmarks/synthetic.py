"""Small synthetic well-level embedding tables with planted biology, for tests and benchmark scripts.

Not a screen generator (``rxcurate synth`` renders images): these are embeddings directly, in the RxRx3 or RxRx1
metadata layout, with known truth and batch effects of known form:

- RxRx3: genes in modules share a phenotype direction; a compound at concentration c equals its target's
  knockout phenotype times a Hill factor (a compound identical to its target knockout at high dose); each experiment
  (one plate, or more for large designs) adds a shift and per-feature gains that TVN on controls removes.
- RxRx1: each siRNA has its own direction (modulated per cell type) under strong per-experiment shifts and gains.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rxcurate.io import atomic_path, atomic_write_text
from rxcurate.layout import EMBEDDINGS_FILE
from rxcurate.source import (
    ADDRESSES_384_INNER,
    ADDRESSES_1536,
    COMPOUND_GENE,
    RELATIONSHIPS,
    RXRX1_COLUMNS,
    RXRX3_COLUMNS,
    RXRX3_CONCENTRATIONS_UM,
    SOURCE_METADATA,
    truth_relpath,
)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _batch_effect(rng: np.random.Generator, x: np.ndarray, batch: np.ndarray, shift: float, gain: float) -> np.ndarray:
    out = x.copy()
    for b in np.unique(batch):
        rows = batch == b
        out[rows] = out[rows] * np.exp(rng.normal(scale=gain, size=x.shape[1])) + rng.normal(scale=shift,
                                                                                               size=x.shape[1])
    return out


def _frame(well_id: np.ndarray, x: np.ndarray) -> pd.DataFrame:
    cols = {f"feature_{i}": x[:, i].astype(np.float32) for i in range(x.shape[1])}
    return pd.DataFrame({"well_id": well_id, **cols})


def synthetic_rxrx3(
    *,
    n_genes: int = 48,
    module_size: int = 4,
    n_compounds: int = 24,
    concentrations: tuple[float, ...] = RXRX3_CONCENTRATIONS_UM,
    guides: int = 2,
    gene_replicates: int = 2,
    compound_replicates: int = 2,
    controls_per_experiment: int = 40,
    gene_experiments: int = 3,
    compound_experiments: int = 3,
    # the planted effects: feature dimension, biological signal, well noise, batch shift and gain
    dim: int = 32, signal: float = 3.0, noise: float = 0.6, batch_shift: float = 3.0, batch_gain: float = 0.2,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """``{"embeddings", "metadata", "relationships", "compound_gene"}`` frames in the RxRx3 layout."""
    rng = np.random.default_rng([seed, 33])
    genes = np.array([f"G{i:04d}" for i in range(n_genes)])
    module = np.arange(n_genes) // module_size
    n_mod = int(module.max()) + 1
    mod_dir = _unit(rng.normal(size=(n_mod, dim)))
    pheno = signal * _unit(mod_dir[module] + 0.3 * rng.normal(size=(n_genes, dim)) / np.sqrt(dim) * 3)

    cpds = np.array([f"CMPD-{i:04d}" for i in range(n_compounds)])
    if n_compounds:
        cpds[0] = "1,2-dimethyl-CMPD-0000"  # a name with a comma: CSV readers must honour quotes
    target = rng.integers(0, n_genes, size=n_compounds)
    ic50 = np.exp(rng.uniform(np.log(10), np.log(800), size=n_compounds))

    rows: list[dict] = []
    bio: list[np.ndarray] = []
    for e, chunk in enumerate(np.array_split(rng.permutation(n_genes), gene_experiments)):
        exp = f"gene-{e + 1:03d}"
        units = [(g, k) for g in np.sort(chunk) for k in range(1, guides + 1) for _ in range(gene_replicates)]
        for g, k in units:
            rows.append({"experiment_name": exp, "gene": genes[g], "treatment": f"{genes[g]}_guide_{k}",
                         "concentration": np.nan, "perturbation_type": "CRISPR"})
            bio.append(pheno[g] * rng.uniform(0.8, 1.0))
        for name in ["EMPTY_control"] * controls_per_experiment + ["CRISPR_control"] * 4:
            rows.append({"experiment_name": exp, "gene": name, "treatment": name, "concentration": np.nan,
                         "perturbation_type": "CRISPR"})
            bio.append(np.zeros(dim))
    conc = np.asarray(concentrations, dtype=float)
    for e, chunk in enumerate(np.array_split(rng.permutation(n_compounds), compound_experiments)):
        exp = f"compound-{e + 1:03d}"
        for c in np.sort(chunk):
            for k in range(len(conc)):
                hill = (conc[k] * 1000.0) ** 1.2 / ((conc[k] * 1000.0) ** 1.2 + ic50[c] ** 1.2)
                for _ in range(compound_replicates):
                    rows.append({"experiment_name": exp, "gene": "", "treatment": cpds[c],
                                 "concentration": conc[k], "perturbation_type": "COMPOUND"})
                    bio.append(hill * pheno[target[c]])
        for _ in range(controls_per_experiment):
            rows.append({"experiment_name": exp, "gene": "", "treatment": "EMPTY_control", "concentration": np.nan,
                         "perturbation_type": "COMPOUND"})
            bio.append(np.zeros(dim))
    meta = pd.DataFrame(rows)
    slot = meta.groupby("experiment_name").cumcount().to_numpy()
    meta["plate"] = slot // len(ADDRESSES_1536) + 1  # an experiment spills onto more 1536-well plates when needed
    meta["address"] = np.asarray(ADDRESSES_1536, dtype=object)[slot % len(ADDRESSES_1536)]
    meta["well_id"] = meta["experiment_name"] + "_" + meta["plate"].astype(str) + "_" + meta["address"]
    meta["SMILES"] = np.where(meta["perturbation_type"] == "COMPOUND", "CCO", "")
    meta["cell_type"] = "HUVEC"
    meta = meta[RXRX3_COLUMNS]
    x = np.asarray(bio) + noise * rng.normal(size=(len(meta), dim))
    x = _batch_effect(rng, x, meta["experiment_name"].to_numpy(), batch_shift, batch_gain)
    order = np.argsort(meta["well_id"].to_numpy(), kind="stable")
    meta = meta.iloc[order].reset_index(drop=True)
    x = x[order]

    rel = [(genes[i], genes[j]) for m in range(n_mod) for i in np.flatnonzero(module == m)
           for j in np.flatnonzero(module == m) if i < j]
    relationships = pd.DataFrame(rel, columns=["entity1", "entity2"])
    truth = []
    for c in range(n_compounds):
        truth.append((genes[target[c]], round(float(ic50[c]), 3), "IC50", "synthetic", cpds[c]))
        others = np.setdiff1d(np.arange(n_genes), [target[c]])
        grey = rng.choice(others)
        truth.append((genes[grey], 5000.0, "Ki", "synthetic", cpds[c]))
        for g in np.sort(rng.choice(np.setdiff1d(others, [grey]), size=min(len(others) - 1, 30), replace=False)):
            truth.append((genes[g], round(float(np.exp(rng.uniform(np.log(2e4), np.log(2e5)))), 3), "Kd",
                          "synthetic", cpds[c]))
    compound_gene = pd.DataFrame(truth, columns=["gene_symbol", "nM_value", "measurement_type", "database",
                                                 "treatment"])
    return {"embeddings": _frame(meta["well_id"].to_numpy(), x), "metadata": meta,
            "relationships": relationships, "compound_gene": compound_gene}


def synthetic_rxrx1(
    *,
    n_sirnas: int = 30,
    cell_types: tuple[str, ...] = ("HEPG2", "HUVEC"),
    experiments_per_cell_type: int = 4,
    test_experiments_per_cell_type: int = 1,
    negative_controls: int = 8,
    # the planted effects: feature dimension, biological signal, well noise, batch shift and gain
    dim: int = 32, signal: float = 3.0, noise: float = 0.6, batch_shift: float = 4.0, batch_gain: float = 0.3,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """``{"embeddings" (per well), "metadata" (per site, 2 sites)}`` in the RxRx1 layout."""
    rng = np.random.default_rng([seed, 11])
    sirnas = np.array([f"s{i:05d}" for i in range(n_sirnas)])
    vec = signal * _unit(rng.normal(size=(n_sirnas, dim)))
    mix = {ct: np.eye(dim) + 0.2 * rng.normal(size=(dim, dim)) / np.sqrt(dim) for ct in cell_types}
    rows, bio = [], []
    for ct in cell_types:
        for e in range(experiments_per_cell_type):
            exp = f"{ct}-{e + 1:02d}"
            dataset = "test" if e >= experiments_per_cell_type - test_experiments_per_cell_type else "train"
            ids = np.concatenate([rng.permutation(n_sirnas), np.full(negative_controls, -1)])
            for w, sid in enumerate(ids):
                well = ADDRESSES_384_INNER[w]
                wt = "negative_control" if sid < 0 else "treatment"
                rows.append((exp, 1, well, ct, dataset, wt, "EMPTY" if sid < 0 else sirnas[sid], int(sid)))
                bio.append(np.zeros(dim) if sid < 0 else vec[sid] @ mix[ct])
    wells = pd.DataFrame(rows, columns=["experiment", "plate", "well", "cell_type", "dataset", "well_type", "sirna",
                                        "sirna_id"])
    wells["well_id"] = wells["experiment"] + "_" + wells["plate"].astype(str) + "_" + wells["well"]
    x = np.asarray(bio) + noise * rng.normal(size=(len(wells), dim))
    x = _batch_effect(rng, x, wells["experiment"].to_numpy(), batch_shift, batch_gain)
    sites = wells.loc[wells.index.repeat(2)].reset_index(drop=True)
    sites["site"] = np.tile([1, 2], len(wells))
    sites["site_id"] = sites["well_id"] + "_" + sites["site"].astype(str)
    return {"embeddings": _frame(wells["well_id"].to_numpy(), x), "metadata": sites[RXRX1_COLUMNS]}


def write_synthetic(frames: dict[str, pd.DataFrame], folder: str | Path) -> dict[str, Path]:
    """Write the frames as files (metadata.csv, embeddings.parquet, truth/*.csv); returns their paths."""
    folder = Path(folder)
    out: dict[str, Path] = {}
    names = {"metadata": SOURCE_METADATA, "embeddings": EMBEDDINGS_FILE,
             "relationships": truth_relpath(RELATIONSHIPS), "compound_gene": truth_relpath(COMPOUND_GENE)}
    for key, frame in frames.items():
        path = folder / names[key]
        if path.suffix == ".parquet":
            with atomic_path(path) as tmp:
                frame.to_parquet(tmp, index=False)
        else:
            atomic_write_text(path, frame.to_csv(index=False))
        out[key] = path
    return out


def synthetic_map(
    *,
    n_genes: int = 735,
    module_size: int = 5,
    n_compounds: int = 1674,
    concentrations: tuple[float, ...] = RXRX3_CONCENTRATIONS_UM,
    dim: int = 384,
    truth_genes_per_compound: int = 40,
    noise: float = 2.0,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """A perturbation-level map (``perturbation, concentration, feature_*``) the size of RxRx3-core by default, with
    ``relationships`` (gene modules) and a ``compound_gene`` table (one potent target per compound, a grey-zone
    gene and inactive genes)."""
    rng = np.random.default_rng([seed, 77])
    genes = np.array([f"G{i:05d}" for i in range(n_genes)])
    module = np.arange(n_genes) // module_size
    pheno = _unit(rng.normal(size=(int(module.max()) + 1, dim)))[module] * 2.0 + rng.normal(size=(n_genes, dim)) * 0.1
    gene_x = pheno + noise * rng.normal(size=(n_genes, dim)) / np.sqrt(dim) * 4
    cpds = np.array([f"CMPD-{i:05d}" for i in range(n_compounds)])
    target = rng.integers(0, n_genes, size=n_compounds)
    ic50 = np.exp(rng.uniform(np.log(10), np.log(800), size=n_compounds))
    conc = np.asarray(concentrations, dtype=float)
    hill = (conc[None, :] * 1000.0) ** 1.2 / ((conc[None, :] * 1000.0) ** 1.2 + ic50[:, None] ** 1.2)
    cpd_x = hill[:, :, None] * pheno[target][:, None, :] + noise * rng.normal(size=(n_compounds, len(conc), dim)) / (
        np.sqrt(dim) / 4)
    x = np.concatenate([gene_x, cpd_x.reshape(-1, dim)])
    frame = pd.DataFrame(x.astype(np.float32), columns=[f"feature_{i}" for i in range(dim)])
    frame.insert(0, "concentration", np.concatenate([np.full(n_genes, np.nan), np.tile(conc, n_compounds)]))
    frame.insert(0, "perturbation", np.concatenate([genes, np.repeat(cpds, len(conc))]))
    iu = np.triu_indices(module_size, 1)
    rel = [(genes[m * module_size + i], genes[m * module_size + j]) for m in range(int(module.max()) + 1)
           for i, j in zip(*iu, strict=True) if m * module_size + j < n_genes]
    k = min(truth_genes_per_compound, n_genes - 2)
    others = np.argsort(rng.random((n_compounds, n_genes)), axis=1)[:, : k + 2]
    rows = []
    for c in range(n_compounds):
        rest = [g for g in others[c] if g != target[c]][: k + 1]
        rows.append((genes[target[c]], round(float(ic50[c]), 3), "IC50", "synthetic", cpds[c]))
        rows.append((genes[rest[0]], 5000.0, "Ki", "synthetic", cpds[c]))
        rows += [(genes[g], 50000.0, "Kd", "synthetic", cpds[c]) for g in rest[1:]]
    return {
        "map": frame,
        "relationships": pd.DataFrame(rel, columns=["entity1", "entity2"]),
        "compound_gene": pd.DataFrame(rows, columns=["gene_symbol", "nM_value", "measurement_type", "database",
                                                     "treatment"]),
    }
