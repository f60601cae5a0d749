"""Synthetic screen designs with planted biology (pure compute, no I/O).

Biology lives in a latent phenotype space of ``N_LATENT`` dimensions that the renderer turns into image
properties: cell count, cell size, six per-channel intensities and six per-channel textures.

RxRx3: genes form modules (complexes/pathways) sharing a phenotype direction; some genes have none.
Compounds have 0-3 target genes with potencies (nM); a compound's phenotype at concentration c is the
Hill-weighted sum of its targets' knockout phenotypes plus a toxicity direction at high dose.
RxRx1: every siRNA has its own phenotype, modulated per cell type, under strong per-experiment batch effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rxcurate.source import (
    ADDRESSES_384_INNER,
    ADDRESSES_1536,
    COMPOUND_GENE,
    RELATIONSHIPS,
    RXRX1_CELL_TYPES,
    RXRX1_COLUMNS,
    RXRX3_COLUMNS,
    RXRX3_CONCENTRATIONS_UM,
)
from rxcurate.synth.presets import Rxrx1Preset, Rxrx3Preset

N_LATENT = 14  # 0 count, 1 size, 2..7 channel intensity, 8..13 channel texture
N_CHANNELS = 6
# Toxicity at high dose: fewer, larger, dimmer cells.
TOX_DIRECTION = np.array([-1.2, 0.6, -0.3, -0.2, -0.2, -0.3, -0.2, -0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3])


@dataclass
class Design:
    """Metadata plus everything the renderer needs, row-aligned with ``metadata``."""

    layout: str
    metadata: pd.DataFrame
    phenotype: np.ndarray | None  # [n_rows, N_LATENT] float64 (per row = per well / per site)
    gain: np.ndarray | None  # [n_rows, 6] multiplicative channel gain (experiment x plate x well jitter)
    offset: np.ndarray | None  # [n_rows, 6] additive channel offset (fraction of full background)
    illum: np.ndarray | None  # [n_rows, 3] illumination gradient (amplitude, direction x, direction y)
    truth: dict[str, pd.DataFrame] = field(default_factory=dict)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _hill(conc_nm: np.ndarray, ic50_nm: np.ndarray | float, n: float = 1.2) -> np.ndarray:
    return conc_nm**n / (conc_nm**n + ic50_nm**n)


def _fake_smiles(rng: np.random.Generator, n: int) -> list[str]:
    pieces = np.array(["C", "CC", "O", "N", "c1ccccc1", "C(=O)", "Cl", "F", "C(C)", "S", "c1ccncc1"])
    out = []
    for _ in range(n):
        k = int(rng.integers(4, 10))
        out.append("".join(pieces[rng.integers(0, len(pieces), size=k)]) + "C")
    return out


def _plates(
    rng: np.random.Generator, n_units: int, replicates: int, capacity: int
) -> list[np.ndarray]:
    """Shuffle ``replicates`` copies of units 0..n-1 and split them evenly over as few plates as fit."""
    units = np.tile(np.arange(n_units), replicates)
    units = units[rng.permutation(len(units))]
    n_plates = max(1, -(-len(units) // capacity))
    return np.array_split(units, n_plates)


def rxrx3_design(preset: Rxrx3Preset, seed: int) -> Design:
    rng = np.random.default_rng([seed, 3])
    p = preset
    n_genes = p.n_known_genes + p.n_blinded_genes
    known_idx = rng.permutation(p.n_known_genes)
    symbols = np.array(
        [f"G{1000 + i:04d}" for i in known_idx] + [f"BLINDED_{i + 1:05d}" for i in range(p.n_blinded_genes)]
    )

    # --- genes: modules and null genes -------------------------------------------------------------------
    module_dirs = _unit(rng.normal(size=(p.n_modules, N_LATENT)))
    gene_module = np.full(n_genes, -1)
    order = rng.permutation(p.n_known_genes)
    pos = 0
    for m in range(p.n_modules):
        size = int(rng.integers(p.module_size[0], p.module_size[1] + 1))
        members = order[pos : pos + size]
        gene_module[members] = m
        pos += size
        if pos >= p.n_known_genes:
            break
    if p.n_blinded_genes:  # half of the blinded genes join random modules
        b = np.arange(p.n_known_genes, n_genes)
        joins = rng.random(len(b)) < 0.5
        gene_module[b[joins]] = rng.integers(0, p.n_modules, size=int(joins.sum()))
    strength = rng.uniform(1.5, 2.1, size=n_genes)
    private = rng.normal(size=(n_genes, N_LATENT)) * 0.07
    gene_pheno = np.zeros((n_genes, N_LATENT))
    has = gene_module >= 0
    gene_pheno[has] = strength[has, None] * _unit(module_dirs[gene_module[has]] + private[has])

    # --- compounds: targets, potencies, toxicity ---------------------------------------------------------
    active_genes = np.flatnonzero(has[: p.n_known_genes])
    n_cpd = p.n_compounds
    cpd_names = np.array([f"CMPD-{i + 1:04d}" for i in range(n_cpd)])
    smiles = _fake_smiles(rng, n_cpd)
    is_active = rng.random(n_cpd) < 0.7
    tox_ic50 = np.exp(rng.uniform(np.log(5000), np.log(200000), size=n_cpd))
    truth_rows: list[tuple[str, float, str, str, str]] = []
    targets: list[list[tuple[int, float]]] = []
    measure = np.array(["IC50", "Ki", "Kd", "EC50"])
    known_all = np.arange(p.n_known_genes)
    for c in range(n_cpd):
        tg: list[tuple[int, float]] = []
        if is_active[c] and len(active_genes):
            k = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))  # mostly selective compounds
            genes = rng.choice(active_genes, size=min(k, len(active_genes)), replace=False)
            for j, g in enumerate(genes):
                lo, hi = (10, 800) if j == 0 else (50, 8000)  # later targets may fall into the grey zone
                tg.append((int(g), float(np.exp(rng.uniform(np.log(lo), np.log(hi))))))
        targets.append(tg)
        taken = {g for g, _ in tg}
        others = np.array([g for g in known_all if g not in taken])
        n_neg = min(len(others), max(25, 3 * len(tg)))
        negs = np.sort(rng.choice(others, size=n_neg, replace=False))
        for g, nm in tg:
            truth_rows.append((symbols[g], round(nm, 3), str(rng.choice(measure)), "synthetic", cpd_names[c]))
        for g in negs:
            nm = float(np.exp(rng.uniform(np.log(20000), np.log(200000))))
            truth_rows.append((symbols[g], round(nm, 3), str(rng.choice(measure)), "synthetic", cpd_names[c]))
    cgi = pd.DataFrame(truth_rows, columns=["gene_symbol", "nM_value", "measurement_type", "database", "treatment"])
    cgi = cgi.sort_values(["treatment", "gene_symbol"], kind="stable").reset_index(drop=True)

    rel = []
    for m in range(p.n_modules):
        members = np.flatnonzero(gene_module == m)
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                rel.append((symbols[members[i]], symbols[members[j]]))
    relationships = pd.DataFrame(rel, columns=["entity1", "entity2"]).sort_values(
        ["entity1", "entity2"], kind="stable"
    ).reset_index(drop=True)

    # --- plate layout ------------------------------------------------------------------------------------
    frames: list[pd.DataFrame] = []
    phen_parts: list[np.ndarray] = []
    exp_ids: list[np.ndarray] = []
    plate_keys: list[np.ndarray] = []
    ctrl_n = p.empty_controls_per_plate + p.crispr_controls_per_plate
    gene_chunks = np.array_split(rng.permutation(n_genes), p.gene_experiments)
    n_exp = 0
    n_plate = 0
    want_pheno = p.image_size is not None
    for e, genes in enumerate(gene_chunks):
        exp = f"gene-{e + 1:03d}"
        unit_gene = np.repeat(np.sort(genes), p.guides_per_gene)
        unit_guide = np.tile(np.arange(1, p.guides_per_gene + 1), len(genes))
        eff = rng.uniform(0.7, 1.0, size=len(unit_gene))
        for pl, units in enumerate(_plates(rng, len(unit_gene), p.gene_replicates, p.wells_per_plate - ctrl_n)):
            g = unit_gene[units]
            treat = np.char.add(np.char.add(symbols[g], "_guide_"), unit_guide[units].astype(str))
            ctrl = np.array(
                ["EMPTY_control"] * p.empty_controls_per_plate + ["CRISPR_control"] * p.crispr_controls_per_plate
            )
            n = len(units) + len(ctrl)
            addr = np.asarray(ADDRESSES_1536)[np.sort(rng.permutation(len(ADDRESSES_1536))[:n])]
            slots = rng.permutation(n)  # which address each well takes
            frames.append(pd.DataFrame({
                "experiment_name": exp, "plate": pl + 1, "address": addr[slots],
                "gene": np.concatenate([symbols[g], ctrl]), "treatment": np.concatenate([treat, ctrl]),
                "SMILES": "", "concentration": np.nan, "perturbation_type": "CRISPR",
            }))
            if want_pheno:
                phen_parts.append(np.concatenate([gene_pheno[g] * eff[units, None], np.zeros((len(ctrl), N_LATENT))]))
            exp_ids.append(np.full(n, n_exp))
            plate_keys.append(np.full(n, n_plate))
            n_plate += 1
        n_exp += 1

    conc = np.asarray(RXRX3_CONCENTRATIONS_UM)
    cpd_chunks = np.array_split(np.arange(n_cpd), p.compound_experiments)
    cpd_pheno = np.zeros((n_cpd, len(conc), N_LATENT))
    for c in range(n_cpd):
        for g, nm in targets[c]:
            cpd_pheno[c] += _hill(conc * 1000.0, nm)[:, None] * gene_pheno[g][None, :]
        cpd_pheno[c] += 1.0 * _hill(conc * 1000.0, tox_ic50[c])[:, None] * TOX_DIRECTION[None, :]
    for e, cpds in enumerate(cpd_chunks):
        exp = f"compound-{e + 1:03d}"
        unit_c = np.repeat(cpds, len(conc))
        unit_k = np.tile(np.arange(len(conc)), len(cpds))
        for pl, units in enumerate(
            _plates(rng, len(unit_c), p.compound_replicates, p.wells_per_plate - p.empty_controls_per_plate)
        ):
            cc, kk = unit_c[units], unit_k[units]
            n_ctrl = p.empty_controls_per_plate
            n = len(units) + n_ctrl
            addr = np.asarray(ADDRESSES_1536)[np.sort(rng.permutation(len(ADDRESSES_1536))[:n])]
            slots = rng.permutation(n)
            frames.append(pd.DataFrame({
                "experiment_name": exp, "plate": pl + 1, "address": addr[slots],
                "gene": np.concatenate([np.full(len(units), ""), np.full(n_ctrl, "EMPTY_control")]),
                "treatment": np.concatenate([cpd_names[cc], np.full(n_ctrl, "EMPTY_control")]),
                "SMILES": np.concatenate([np.asarray(smiles)[cc], np.full(n_ctrl, "")]),
                "concentration": np.concatenate([conc[kk], np.full(n_ctrl, np.nan)]),
                "perturbation_type": "COMPOUND",
            }))
            if want_pheno:
                phen_parts.append(np.concatenate([cpd_pheno[cc, kk], np.zeros((n_ctrl, N_LATENT))]))
            exp_ids.append(np.full(n, n_exp))
            plate_keys.append(np.full(n, n_plate))
            n_plate += 1
        n_exp += 1

    md = pd.concat(frames, ignore_index=True)
    md["cell_type"] = "HUVEC"
    md["well_id"] = md["experiment_name"] + "_" + md["plate"].astype(str) + "_" + md["address"]
    addr_rank = {a: i for i, a in enumerate(ADDRESSES_1536)}
    sort_key = md["address"].map(addr_rank)
    order_idx = np.lexsort((sort_key.to_numpy(), md["plate"].to_numpy(), md["experiment_name"].to_numpy()))
    md = md.iloc[order_idx].reset_index(drop=True)[RXRX3_COLUMNS]
    exp_idx = np.concatenate(exp_ids)[order_idx]
    plate_idx = np.concatenate(plate_keys)[order_idx]

    design = Design("rxrx3", md, None, None, None, None,
                    truth={RELATIONSHIPS: relationships, COMPOUND_GENE: cgi})
    if want_pheno:
        phen = np.concatenate(phen_parts)[order_idx]
        phen = phen + rng.normal(scale=0.12, size=phen.shape)  # biological well-to-well variability
        design.phenotype = phen
        design.gain, design.offset, design.illum = _nuisance(rng, exp_idx, plate_idx, n_exp, n_plate,
                                                             exp_sd=0.15, plate_sd=0.08)
    return design


def _nuisance(
    rng: np.random.Generator, exp_idx: np.ndarray, plate_idx: np.ndarray, n_exp: int, n_plate: int,
    exp_sd: float, plate_sd: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch effects: per-experiment and per-plate channel gains/offsets, a per-plate illumination gradient."""
    exp_gain = np.exp(rng.normal(scale=exp_sd, size=(n_exp, N_CHANNELS)))
    plate_gain = np.exp(rng.normal(scale=plate_sd, size=(n_plate, N_CHANNELS)))
    exp_off = rng.normal(scale=0.15, size=(n_exp, N_CHANNELS))
    plate_off = rng.normal(scale=0.05, size=(n_plate, N_CHANNELS))
    well_gain = np.exp(rng.normal(scale=0.03, size=(len(exp_idx), N_CHANNELS)))
    gain = exp_gain[exp_idx] * plate_gain[plate_idx] * well_gain
    offset = exp_off[exp_idx] + plate_off[plate_idx]
    angle = rng.uniform(0, 2 * np.pi, size=n_plate)
    amp = rng.uniform(0.05, 0.2, size=n_plate)
    illum = np.stack([amp, np.cos(angle), np.sin(angle)], axis=1)[plate_idx]
    return gain, offset, illum


def rxrx1_design(preset: Rxrx1Preset, seed: int) -> Design:
    rng = np.random.default_rng([seed, 1])
    p = preset
    n_types = len(RXRX1_CELL_TYPES)
    sirna_names = np.array([f"s{v:05d}" for v in np.sort(rng.choice(90000, size=p.n_sirnas + p.n_positive_controls,
                                                                       replace=False) + 10000)])
    sirna_names = sirna_names[rng.permutation(len(sirna_names))]
    sirna_vec = _unit(rng.normal(size=(p.n_sirnas + p.n_positive_controls, N_LATENT)))
    sirna_vec[: p.n_sirnas] *= rng.uniform(0.8, 1.3, size=(p.n_sirnas, 1))
    sirna_vec[p.n_sirnas :] *= 2.0
    ct_mix = np.eye(N_LATENT)[None] + 0.35 * rng.normal(size=(n_types, N_LATENT, N_LATENT)) / np.sqrt(N_LATENT)
    neg_id = p.n_sirnas + p.n_positive_controls

    rows = []
    phen = []
    exp_idx = []
    plate_idx = []
    n_exp = 0
    n_plate = 0
    for t, ct in enumerate(RXRX1_CELL_TYPES):
        for e in range(p.experiments_per_cell_type):
            exp = f"{ct}-{e + 1:02d}"
            dataset = "test" if e == p.experiments_per_cell_type - 1 else "train"
            chunks = np.array_split(rng.permutation(p.n_sirnas), p.plates_per_experiment)
            for pl, sir in enumerate(chunks):
                ids = np.concatenate([np.sort(sir), np.arange(p.n_sirnas, neg_id),
                                      np.full(p.negative_controls_per_plate, neg_id)])
                n = len(ids)
                addr = np.asarray(ADDRESSES_384_INNER)[np.sort(rng.permutation(len(ADDRESSES_384_INNER))[:n])]
                slots = rng.permutation(n)
                for i, sid in enumerate(ids):
                    if sid < p.n_sirnas:
                        wt = "treatment"
                    else:
                        wt = "positive_control" if sid < neg_id else "negative_control"
                    name = "EMPTY" if sid == neg_id else sirna_names[sid]
                    vec = np.zeros(N_LATENT) if sid == neg_id else sirna_vec[sid] @ ct_mix[t]
                    well = addr[slots[i]]
                    for site in (1, 2):
                        rows.append((exp, pl + 1, well, site, ct, dataset, wt, name, int(sid)))
                        phen.append(vec)
                        exp_idx.append(n_exp)
                        plate_idx.append(n_plate)
                n_plate += 1
            n_exp += 1
    md = pd.DataFrame(rows, columns=["experiment", "plate", "well", "site", "cell_type", "dataset", "well_type",
                                     "sirna", "sirna_id"])
    md["well_id"] = md["experiment"] + "_" + md["plate"].astype(str) + "_" + md["well"]
    md["site_id"] = md["well_id"] + "_" + md["site"].astype(str)
    addr_rank = {a: i for i, a in enumerate(ADDRESSES_384_INNER)}
    order_idx = np.lexsort((md["site"].to_numpy(), md["well"].map(addr_rank).to_numpy(), md["plate"].to_numpy(),
                            md["experiment"].to_numpy()))
    md = md.iloc[order_idx].reset_index(drop=True)[RXRX1_COLUMNS]
    phen_arr = np.asarray(phen)[order_idx]
    # biological variability, drawn per site
    phen_arr = phen_arr + rng.normal(scale=0.12, size=phen_arr.shape)
    gain, offset, illum = _nuisance(rng, np.asarray(exp_idx)[order_idx], np.asarray(plate_idx)[order_idx], n_exp,
                                    n_plate, exp_sd=0.3, plate_sd=0.08)
    return Design("rxrx1", md, phen_arr, gain, offset, illum)
