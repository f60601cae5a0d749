"""Validate and align benchmark inputs: well-level embeddings + metadata, or a perturbation-level map."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rxcurate.benchmarks.metrics import isin
from rxcurate.benchmarks.postprocess import PerturbationMap, aggregate, entity_codes, postprocess
from rxcurate.benchmarks.readers import feature_columns, feature_matrix
from rxcurate.errors import BenchmarkError

# RxRx1 metadata has one row per site; these differ between the sites of a well and are dropped when deduplicating.
SITE_COLUMNS = ("site_id", "site")


def _examples(values: Any, n: int = 3) -> str:
    vals = list(dict.fromkeys(str(v) for v in values))
    more = f" (+{len(vals) - n} more)" if len(vals) > n else ""
    return ", ".join(repr(v) for v in vals[:n]) + more


@dataclass
class Wells:
    """Aligned well-level inputs, sorted by well id."""

    well_id: np.ndarray  # object
    x: np.ndarray  # float64 [n, d], raw embeddings
    meta: pd.DataFrame  # metadata rows aligned with x (reset index)
    perturbation: np.ndarray  # object
    concentration: np.ndarray  # float, NaN for genes and controls
    kind: np.ndarray  # object: gene | compound | control | excluded
    is_control: np.ndarray  # bool
    batch: np.ndarray  # object (str)
    embedding_rows: int

    @property
    def in_map(self) -> np.ndarray:
        return (self.kind == "gene") | (self.kind == "compound")


def required_columns(defn: dict[str, Any]) -> list[str]:
    cols = defn["columns"]
    need = [cols["well"], *cols["perturbation"], cols["batch"], defn["controls"]["column"]]
    for key in ("concentration", "perturbation_type"):
        if cols.get(key):
            need.append(cols[key])
    if defn["kind"] == "linear-probe":
        need += [cols["split"], defn["parameters"]["labels"]["column"]]
        if cols.get("cell_type"):
            need.append(cols["cell_type"])
    return list(dict.fromkeys(need))


def _dedupe_sites(meta: pd.DataFrame, well_col: str, need: list[str]) -> pd.DataFrame:
    """One row per well: per-site metadata (RxRx1) collapses when the well-level columns agree."""
    if not meta[well_col].duplicated().any():
        return meta
    if "site" in meta.columns and well_col != "site":
        twice = meta.duplicated(subset=[well_col, "site"])
        if twice.any():
            row = meta[twice].iloc[0]
            raise BenchmarkError(f"metadata: well {row[well_col]!r} site {row['site']!r} has more than one row; "
                                 "per-site metadata (RxRx1) needs one row per well and site (remove the duplicated "
                                 "rows)")
    meta = meta.drop(columns=[c for c in SITE_COLUMNS if c in meta.columns and c != well_col])
    nunique = meta[need].astype(str).groupby(meta[well_col].to_numpy()).nunique()
    conflict = nunique.columns[(nunique > 1).any(axis=0)].tolist()
    if conflict:
        col = conflict[0]
        well = nunique.index[(nunique[col] > 1).to_numpy()][0]
        raise BenchmarkError(f"metadata: well {well!r} has rows with different {col!r} values; per-site rows of one "
                             "well must agree on every well-level column (fix the metadata)")
    return meta.drop_duplicates(subset=[well_col], keep="first")


def _embedding_table(embeddings: pd.DataFrame, well_col: str) -> tuple[np.ndarray, np.ndarray, int]:
    if well_col not in embeddings.columns:
        raise BenchmarkError(f"embeddings lack the {well_col!r} column: expected {well_col}, "
                             "feature_0..feature_{d-1} (e.g. embeddings/baseline/embeddings.parquet)")
    cols = feature_columns(embeddings, "embeddings")
    wells = embeddings[well_col].astype(str)
    x = feature_matrix(embeddings, cols, "embeddings", wells)
    if wells.duplicated().any():
        # Several rows per well (e.g. per site): averaged, as the published RxRx3-core notebook does.
        codes, uniq = pd.factorize(wells, sort=True)
        x = aggregate(x, codes.astype(np.int64), len(uniq), "mean")
        return np.asarray(uniq, dtype=object), x, len(embeddings)
    order = np.argsort(wells.to_numpy(dtype=object), kind="stable")
    return wells.to_numpy(dtype=object)[order], x[order], len(embeddings)


def _perturbation(meta: pd.DataFrame, cols: list[str]) -> np.ndarray:
    out = np.full(len(meta), "", dtype=object)
    for c in reversed(cols):
        v = meta[c].fillna("").astype(str).str.strip().to_numpy(dtype=object)
        out = np.where(v != "", v, out)
    return out


def prepare_wells(defn: dict[str, Any], embeddings: pd.DataFrame, metadata: pd.DataFrame) -> Wells:
    """Validate embeddings and metadata against the definition and align them by well id."""
    cols = defn["columns"]
    well_col = cols["well"]
    if not isinstance(embeddings, pd.DataFrame) or not isinstance(metadata, pd.DataFrame):
        raise BenchmarkError("embeddings and metadata must be pandas DataFrames")
    need = required_columns(defn)
    missing = [c for c in need if c not in metadata.columns]
    if missing:
        raise BenchmarkError(f"metadata lacks column(s) {missing} that benchmark {defn['id']} needs (columns "
                             f"{need}); is it the right layout ({defn.get('layout', 'see columns')})?")
    if len(metadata) == 0 or len(embeddings) == 0:
        raise BenchmarkError("metadata and embeddings must not be empty")
    meta = metadata.copy()
    meta[well_col] = meta[well_col].astype(str)
    meta = _dedupe_sites(meta, well_col, need)
    meta = meta.sort_values(well_col, kind="stable").reset_index(drop=True)
    wells, x, n_rows = _embedding_table(embeddings, well_col)

    meta_wells = meta[well_col].to_numpy(dtype=object)
    no_emb = ~isin(meta_wells, wells)
    if no_emb.any():
        raise BenchmarkError(f"{int(no_emb.sum())} metadata well(s) have no embedding, e.g. "
                             f"{_examples(meta_wells[no_emb])}: embed every well of the metadata (missing wells)")
    no_meta = ~isin(wells, meta_wells)
    if no_meta.any():
        raise BenchmarkError(f"{int(no_meta.sum())} embedded well(s) are not in the metadata, e.g. "
                             f"{_examples(wells[no_meta])}: pass the metadata of the same release")
    if len(wells) < 2:
        raise BenchmarkError("at least 2 wells are needed")

    pert = _perturbation(meta, cols["perturbation"])
    empty = pert == ""
    if empty.any():
        raise BenchmarkError(f"{int(empty.sum())} well(s) have no perturbation in columns {cols['perturbation']}, "
                             f"e.g. {_examples(meta_wells[empty])} (unknown perturbation)")
    ctrl_col = defn["controls"]["column"]
    is_control = meta[ctrl_col].fillna("").astype(str).isin(defn["controls"]["values"]).to_numpy()
    if not is_control.any():
        raise BenchmarkError(f"no control wells: no metadata row has {ctrl_col} in {defn['controls']['values']} "
                             "(negative controls are needed for alignment and nulls)")

    kind = np.full(len(meta), "gene", dtype=object)
    type_col = cols.get("perturbation_type")
    if type_col:
        types = meta[type_col].fillna("").astype(str).to_numpy(dtype=object)
        ptypes = defn["perturbation_types"]
        is_gene = isin(types, ptypes["gene"])
        is_cpd = isin(types, ptypes["compound"])
        unknown = ~(is_gene | is_cpd)
        if unknown.any():
            raise BenchmarkError(f"unknown {type_col} value(s) {_examples(types[unknown])} (e.g. well "
                                 f"{meta_wells[unknown][0]!r}); known: {ptypes['gene'] + ptypes['compound']}")
        kind[is_cpd] = "compound"

    conc = np.full(len(meta), np.nan)
    conc_col = cols.get("concentration")
    if conc_col:
        raw = pd.to_numeric(meta[conc_col], errors="coerce").to_numpy(dtype=float)
        cpd = kind == "compound"
        bad = cpd & ~is_control & ~(np.isfinite(raw) & (raw > 0))
        bad &= ~isin(pert, defn.get("exclude_from_map", []))
        if bad.any():
            raise BenchmarkError(f"{int(bad.sum())} compound well(s) lack a positive {conc_col!r}, e.g. "
                                 f"{_examples(meta_wells[bad])}")
        conc = np.where(cpd, raw, np.nan)
    excluded = isin(pert, defn.get("exclude_from_map", []))
    allowed = defn.get("concentrations")
    if allowed:
        off = (kind == "compound") & ~np.isclose(conc[:, None], np.asarray(allowed)[None, :], rtol=1e-6).any(axis=1)
        excluded |= off
    kind[excluded] = "excluded"
    kind[is_control] = "control"
    conc[kind != "compound"] = np.nan
    return Wells(
        well_id=meta_wells,
        x=x,
        meta=meta,
        perturbation=pert,
        concentration=conc,
        kind=kind,
        is_control=is_control,
        batch=meta[cols["batch"]].fillna("").astype(str).to_numpy(dtype=object),
        embedding_rows=n_rows,
    )


def corrected_features(defn: dict[str, Any], wells: Wells, fit_controls: np.ndarray | None = None) -> np.ndarray:
    """The definition's post-processing of the raw well features, fitted on ``fit_controls`` (default: all
    control wells)."""
    pp = defn["postprocess"]
    ctrl = wells.is_control if fit_controls is None else fit_controls
    return postprocess(
        wells.x, pp["method"], ctrl, wells.batch, pp.get("fit_on", "controls"), pp.get("center", "batch")
    )


def build_map(defn: dict[str, Any], wells: Wells, x: np.ndarray) -> tuple[PerturbationMap, np.ndarray]:
    """Aggregate post-processed well features ``x`` to the perturbation map; also returns each well's map row
    (-1 for controls and excluded wells)."""
    member = wells.in_map
    if not member.any():
        raise BenchmarkError("no gene or compound wells remain after removing controls/excluded perturbations")
    codes, keys = entity_codes(wells.perturbation, wells.concentration, member)
    feats = aggregate(x, codes, len(keys), defn["postprocess"]["aggregate"])
    kinds = np.where(keys["c"].notna().to_numpy(), "compound", "gene").astype(object)
    m = PerturbationMap(keys["p"].to_numpy(dtype=object), keys["c"].to_numpy(dtype=float), kinds, feats)
    return m, codes


def map_from_frame(defn: dict[str, Any], frame: pd.DataFrame) -> PerturbationMap:
    """A third-party, already post-processed map: ``perturbation``, ``concentration`` (compounds), features."""
    if not isinstance(frame, pd.DataFrame) or "perturbation" not in frame.columns:
        raise BenchmarkError("the map needs a 'perturbation' column, a 'concentration' column for compounds (empty "
                             "for genes) and feature_0..feature_{d-1}")
    cols = feature_columns(frame, "map")
    pert = frame["perturbation"].fillna("").astype(str).str.strip().to_numpy(dtype=object)
    if (pert == "").any():
        raise BenchmarkError(f"map row {int(np.flatnonzero(pert == '')[0])} has an empty perturbation")
    x = feature_matrix(frame, cols, "map", pd.Series(pert))
    if "concentration" in frame.columns:
        conc = pd.to_numeric(frame["concentration"], errors="coerce").to_numpy(dtype=float)
        raw_bad = frame["concentration"].notna().to_numpy() & np.isnan(conc)
        if raw_bad.any():
            raise BenchmarkError(f"map: concentration {frame['concentration'][raw_bad].iloc[0]!r} is not a number")
    else:
        conc = np.full(len(frame), np.nan)
    keep = ~isin(pert, defn.get("exclude_from_map", []))
    pert, conc, x = pert[keep], conc[keep], x[keep]
    key = pd.DataFrame({"p": pert, "c": np.where(np.isnan(conc), -1.0, conc)})
    dup = key.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise BenchmarkError(f"map has duplicate rows for perturbation {pert[i]!r} (concentration {conc[i]}): one "
                             "row per perturbation and concentration")
    order = np.lexsort((key["c"].to_numpy(), pert.astype(str)))
    kinds = np.where(np.isnan(conc), "gene", "compound").astype(object)
    return PerturbationMap(pert[order], conc[order], kinds[order], x[order])


@dataclass
class Sites:
    """Aligned image-level (per-site) inputs of RxRx1, sorted by well id and site."""

    x: np.ndarray  # float64 [n, d]
    meta: pd.DataFrame  # one metadata row per (well, site), aligned with x
    embedding_rows: int


def prepare_sites(defn: dict[str, Any], embeddings: pd.DataFrame, metadata: pd.DataFrame) -> Sites:
    """Per-site embeddings (``well_id``, ``site``, features) aligned with per-site metadata (RxRx1 layout): the
    image-level inputs of rxrx1-wilds. Well-level embeddings (no ``site`` column) are an error: averaging the sites
    of a well would put the training image (site 1) into the in-distribution test (site 2)."""
    well_col = defn["columns"]["well"]
    need = [*required_columns(defn), "site"]
    missing = [c for c in need if c not in metadata.columns]
    if missing:
        raise BenchmarkError(f"metadata lacks column(s) {missing} that benchmark {defn['id']} needs (per-site RxRx1 "
                             "metadata: one row per well and site)")
    if "site" not in embeddings.columns or well_col not in embeddings.columns:
        raise BenchmarkError(f"benchmark {defn['id']} scores images: the embeddings need {well_col!r} and 'site' "
                             "columns (one row per well and site); well-level embeddings average the sites, so "
                             "site 1 (training) and site 2 (in-distribution test) would be the same vector")
    cols = feature_columns(embeddings, "embeddings")
    emb = embeddings.assign(**{well_col: embeddings[well_col].astype(str),
                               "site": pd.to_numeric(embeddings["site"], errors="coerce")})
    meta = metadata.assign(**{well_col: metadata[well_col].astype(str),
                              "site": pd.to_numeric(metadata["site"], errors="coerce")})
    for frame, what in ((emb, "embeddings"), (meta, "metadata")):
        dup = frame.duplicated(subset=[well_col, "site"])
        if dup.any():
            row = frame[dup].iloc[0]
            raise BenchmarkError(f"{what}: well {row[well_col]!r} site {row['site']!r} has more than one row")
    keys = [well_col, "site"]
    merged = meta.merge(emb[[*keys, *cols]], on=keys, how="outer", indicator=True, sort=False)
    for side, what in (("left_only", "metadata site(s) have no embedding"), ("right_only", "embedded site(s) are "
                                                                             "not in the metadata")):
        bad = merged["_merge"] == side
        if bad.any():
            raise BenchmarkError(f"{int(bad.sum())} {what}, e.g. {_examples(merged.loc[bad, well_col])}")
    merged = merged.sort_values(keys, kind="stable").reset_index(drop=True)
    x = feature_matrix(merged, cols, "embeddings", merged[well_col])
    return Sites(x=x, meta=merged.drop(columns=[*cols, "_merge"]), embedding_rows=len(embeddings))
