"""Phenotype-consistency curation (``select.filters``): keep the perturbations whose replicates agree.

Semantics (also in docs/curation.md):

1. The manifest's SQL and samplers give the *candidate* wells. With ``select.filters`` present (rxrx3 layout),
   ``select`` writes the candidates' lockfile to ``<workdir>/.candidates/`` and the pipeline
   (:func:`rxcurate.pipeline.curate_candidates`) runs the real stages there: ``compress`` (the manifest's transform)
   and ``embed`` (the manifest's embeddings entry each filter names). Both are resumable and skip themselves when up
   to date, so a rerun after an interruption loses and repeats nothing. Then :func:`curate` (this stage) computes
   the statistic from the candidates' embeddings and writes the curated lockfile into ``<workdir>``.
2. Per perturbation (a gene over all its guides; a compound at each concentration) the statistic is computed from
   that embedding set. ``replicate_consistency`` is the perturbation-signal benchmark's consistency statistic
   (:func:`rxcurate.benchmarks.signal.signal_table`): the mean pairwise cosine of the perturbation's post-processed
   (TVN) wells, with a p-value against size- and batch-matched pseudo-perturbations drawn from negative-control
   wells held out of the post-processing fit. The draw uses the filter's ``seed`` (numpy ``default_rng``), so the
   same manifest and seed give byte-identical ``phenostats.parquet``.
3. ``phenostats.parquet`` (next to the lockfile, published with the release) holds one row per filter and
   perturbation of the filtered types: wells, consistency, p_value, magnitude, p_magnitude, p_below, passed. A
   perturbation passes when ``p_value < p_below``; one without a p-value (fewer than 2 wells, or no null of its
   size) does not pass.
4. The final lockfile keeps a well when, for every filter: it is a control (``EMPTY_control``/``CRISPR_control``)
   and ``keep_controls`` is true; or its perturbation type is not in ``apply_to``; or its perturbation passed. Its
   metadata ``rxcurate.lockfile`` records ``curation``: the filters, the candidates' content hash and the sha256 of
   ``phenostats.parquet`` and ``curation.json``.
5. ``curation.json`` reports the wells and perturbations kept and dropped, by perturbation type and by experiment.
   ``rxcurate release`` also evaluates the release benchmarks on the candidates and writes
   ``curation_comparison.json`` (candidates vs curated); the card cites all three files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rxcurate.benchmarks import signal
from rxcurate.benchmarks.definitions import definition_checksum, load_definition
from rxcurate.benchmarks.inputs import build_map, corrected_features, prepare_wells
from rxcurate.errors import LockfileError, ManifestError
from rxcurate.io import atomic_path, atomic_write_json, sha256_file
from rxcurate.layout import (
    CANDIDATES,
    COMPARISON,
    CURATION,
    LOCKFILE,
    METADATA_PARQUET,
    PHENOSTATS,
    Lockfile,
    content_hash,
    embedding_set_name,
    read_lockfile,
    source_fingerprints,
    write_lockfile,
    write_source_fingerprints,
    write_source_hint,
)
from rxcurate.manifest import FilterSpec, Manifest, filter_embedding_entry
from rxcurate.progress import log

DEFINITION = "perturbation-signal"
# Each filter statistic and the metric of the DEFINITION benchmark it is: a release curated on a statistic scores that
# metric on the very perturbations the filter kept, so the card flags it (card.py reads curation.json's statistic).
STAT_METRICS = {"replicate_consistency": "consistency"}
CONTROLS = ("EMPTY_control", "CRISPR_control")
STATS_SCHEMA = pa.schema([
    ("filter", pa.int32()), ("stat", pa.string()), ("embeddings", pa.string()), ("perturbation_type", pa.string()),
    ("perturbation", pa.string()), ("concentration", pa.float64()), ("wells", pa.int64()),
    ("consistency", pa.float64()), ("p_value", pa.float64()), ("magnitude", pa.float64()),
    ("p_magnitude", pa.float64()), ("p_below", pa.float64()), ("passed", pa.bool_()),
])


# ---------------------------------------------------------------------------------------------------- compute
def replicate_consistency(embeddings: pd.DataFrame, metadata: pd.DataFrame, *, seed: int = 0,
                          definition: str | dict[str, Any] = DEFINITION) -> pd.DataFrame:
    """Per perturbation: perturbation_type, perturbation, concentration (NaN for genes), wells, consistency,
    p_value (consistency vs the control null), magnitude, p_magnitude; sorted by type, perturbation, concentration.

    The post-processing, null pool and p-values are those of the perturbation-signal benchmark, drawn with ``seed``.
    """
    defn = load_definition(definition)
    params = defn["parameters"]
    wells = prepare_wells(defn, embeddings, metadata)
    rng = np.random.default_rng(seed)
    batch_codes = pd.factorize(pd.Series(wells.batch, dtype=object), sort=True)[0].astype(np.int64)
    pool = signal.split_controls(wells.is_control, batch_codes, params.get("null_fraction", 0.5), rng)
    fit = wells.is_control & ~pool
    x = corrected_features(defn, wells, fit)
    m, codes = build_map(defn, wells, x)
    t = signal.signal_table(x, codes, len(m.kind), batch_codes, fit, pool, params, rng)
    types = defn.get("perturbation_types") or {"gene": ["gene"], "compound": ["compound"]}
    frame = pd.DataFrame({
        "perturbation_type": np.where(m.kind == "gene", types["gene"][0], types["compound"][0]).astype(object),
        "perturbation": m.perturbation.astype(str),
        "concentration": m.concentration.astype(float),
        "wells": np.asarray(t["wells"], dtype=np.int64),
        "consistency": t["consistency"],
        "p_value": t["p_consistency"],
        "magnitude": t["magnitude"],
        "p_magnitude": t["p_magnitude"],
    })
    order = np.lexsort((frame["concentration"].fillna(-1.0).to_numpy(), frame["perturbation"].to_numpy(),
                        frame["perturbation_type"].to_numpy()))
    frame = frame.iloc[order].reset_index(drop=True)
    frame.attrs["controls"] = dict(t["controls"])  # reference / null_pool sizes, null_samples
    return frame


def filter_table(stats: pd.DataFrame, spec: FilterSpec, index: int) -> pd.DataFrame:
    """The rows of ``stats`` of the filter's perturbation types, with the filter's columns and ``passed``."""
    out = stats[stats["perturbation_type"].isin(spec.apply_to)].reset_index(drop=True).copy()
    out.insert(0, "filter", np.int32(index))
    out.insert(1, "stat", spec.stat)
    out.insert(2, "embeddings", spec.embeddings)
    out["p_below"] = float(spec.p_below)
    out["passed"] = (out["p_value"] < spec.p_below).fillna(False).astype(bool)
    return out


def _well_keys(wells: pd.DataFrame) -> pd.Series:
    """``type|perturbation|concentration`` of each well (gene for CRISPR, treatment for compounds)."""
    ptype = wells["perturbation_type"].astype(str)
    gene = wells["gene"].fillna("").astype(str)
    pert = gene.where(gene != "", wells["treatment"].astype(str))
    conc = pd.to_numeric(wells["concentration"], errors="coerce").fillna(-1.0)
    return ptype + "|" + pert + "|" + conc.map(repr)


def _stat_keys(stats: pd.DataFrame) -> pd.Series:
    conc = stats["concentration"].fillna(-1.0)
    return stats["perturbation_type"].astype(str) + "|" + stats["perturbation"].astype(str) + "|" + conc.map(repr)


def keep_mask(wells: pd.DataFrame, filters: tuple[FilterSpec, ...], tables: list[pd.DataFrame]) -> np.ndarray:
    """Which wells (rows of ``wells``: perturbation_type, gene, treatment, concentration) the filters keep."""
    is_ctrl = wells["treatment"].astype(str).isin(CONTROLS).to_numpy()
    keys = _well_keys(wells)
    keep = np.ones(len(wells), dtype=bool)
    for spec, table in zip(filters, tables, strict=True):
        if not spec.keep_controls:
            keep &= ~is_ctrl
        applies = ~is_ctrl & wells["perturbation_type"].astype(str).isin(spec.apply_to).to_numpy()
        passed = set(_stat_keys(table[table["passed"]]))
        keep &= ~applies | keys.isin(passed).to_numpy()
    return keep


def curation_report(wells: pd.DataFrame, keep: np.ndarray) -> dict[str, Any]:
    """Wells (and perturbations) kept and dropped, in total, by perturbation type and by experiment."""
    w = wells.assign(_keep=keep, _key=_well_keys(wells),
                     _ctrl=wells["treatment"].astype(str).isin(CONTROLS).to_numpy())

    def counts(part: pd.DataFrame) -> dict[str, int]:
        return {"candidates": int(len(part)), "kept": int(part["_keep"].sum()), "dropped": int((~part["_keep"]).sum())}

    by_type: dict[str, Any] = {}
    for ptype, part in sorted(w.groupby("perturbation_type", sort=True), key=lambda kv: str(kv[0])):
        perts = part[~part["_ctrl"]]
        kept_perts = perts.groupby("_key", sort=True)["_keep"].any()
        by_type[str(ptype)] = {
            "wells": counts(perts), "controls": counts(part[part["_ctrl"]]),
            "perturbations": {"candidates": int(len(kept_perts)), "kept": int(kept_perts.sum()),
                              "dropped": int((~kept_perts).sum())},
        }
    by_exp = {str(k): counts(part) for k, part in sorted(w.groupby("experiment_name", sort=True),
                                                         key=lambda kv: str(kv[0]))}
    return {"wells": counts(w), "by_perturbation_type": by_type, "by_experiment": by_exp}


# ---------------------------------------------------------------------------------------------------- I/O
def write_stats(dest: Path, tables: list[pd.DataFrame]) -> None:
    """Write ``phenostats.parquet`` atomically with a fixed schema (same rows -> same bytes)."""
    frame = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=STATS_SCHEMA.names)
    table = pa.Table.from_pandas(frame[STATS_SCHEMA.names], schema=STATS_SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata(None)
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def filter_entry(manifest: Manifest, spec: FilterSpec, index: int) -> tuple[dict[str, Any], str | None]:
    """The manifest ``embeddings`` entry a filter names, and its block folder (None: the final embeddings)."""
    found = filter_embedding_entry(manifest.embeddings, spec.embeddings)
    if found is None:  # parse_manifest checked this; a programmatic Manifest may not have been
        raise ManifestError(f"{manifest.path}: select.filters[{index}].embeddings: {spec.embeddings!r} is not an "
                            f"entry of the manifest's embeddings list")
    return found


def filter_embeddings(manifest: Manifest, spec: FilterSpec, index: int, paths: list[Path]) -> Path:
    """Of the embedding sets ``paths`` that embed made for the filter's entry (final first, then its blocks), the
    one the filter reads."""
    entry, block = filter_entry(manifest, spec, index)
    if block is None:
        return paths[0]
    for p in paths[1:]:
        if p.parent.name == block:
            return p
    made = ", ".join(p.parent.name for p in paths[1:]) or "none (add blocks: [...] to the entry)"
    raise ManifestError(f"{manifest.path}: select.filters[{index}].embeddings: block folder {block!r} is not produced "
                        f"by the {entry['encoder']} entry (its blocks: {made}); e.g. embeddings: "
                        f"{embedding_set_name(str(entry['encoder']))}")


def curated_table(candidates: pa.Table, keep: np.ndarray) -> pa.Table:
    """The candidate rows where ``keep``, with the column types select builds (lists of ``item``: the Arrow schema
    stored in the Parquet file, hence the lockfile's bytes, are those of a lockfile select writes)."""
    table = candidates.filter(pa.array(np.asarray(keep, dtype=bool)))
    schema = pa.schema([pa.field(f.name, pa.list_(f.type.value_type) if pa.types.is_list(f.type) else f.type)
                        for f in table.schema])
    return table.cast(schema).combine_chunks()


def curation_current(workdir: Path, manifest: Manifest, candidates: Lockfile) -> dict[str, Any] | None:
    """The ``curation`` record of ``<workdir>/lockfile.parquet`` when it was curated from these candidates with
    these filters and its statistic table and report are unchanged; else None."""
    try:
        lock = read_lockfile(workdir, manifest)
    except LockfileError:
        return None
    rec = lock.info.get("curation")
    if not isinstance(rec, dict) or rec.get("candidates_content_hash") != candidates.content_hash \
            or rec.get("filters") != [f.to_dict() for f in manifest.filters]:
        return None
    stats, report = workdir / PHENOSTATS, workdir / CURATION
    if not stats.is_file() or not report.is_file() or sha256_file(stats) != rec.get("phenostats_sha256") \
            or sha256_file(report) != rec.get("report_sha256"):
        return None
    return rec


def curate(manifest: Manifest, workdir: Path, source: Path, embeddings: list[Path]) -> dict[str, Any]:
    """Run the filters on the candidates of ``<workdir>/.candidates`` (compressed and embedded there; ``embeddings``
    holds each filter's embedding set): write ``phenostats.parquet``, ``curation.json`` and the curated
    ``lockfile.parquet`` into ``workdir``. Returns the ``curation`` record (also in the lockfile's metadata)."""
    cand = workdir / CANDIDATES
    lock = read_lockfile(cand, manifest)
    table, info = lock.table, {k: v for k, v in lock.info.items() if k != "source_root"}
    (workdir / COMPARISON).unlink(missing_ok=True)  # of other filters; rxcurate release writes it anew
    metadata = pd.read_parquet(cand / METADATA_PARQUET)
    tables, null = [], []
    for i, (spec, path) in enumerate(zip(manifest.filters, embeddings, strict=True)):
        stats = replicate_consistency(pd.read_parquet(path), metadata, seed=spec.seed)
        tables.append(filter_table(stats, spec, i))
        max_wells = int(stats["wells"].max()) if len(stats) else 0
        null.append({"filter": i, **stats.attrs["controls"], "max_wells": max_wells})
        if stats.attrs["controls"]["null_pool"] < 2 * max_wells:
            log(f"curation: warning: filters[{i}]: the null pool has {stats.attrs['controls']['null_pool']} held-out "
                f"negative controls for perturbations of up to {max_wells} wells; with fewer than twice as many the "
                "null is too narrow and p-values too small: select more EMPTY_control wells")
    wells = table.select(["well_id", "experiment_name", "perturbation_type", "gene", "treatment",
                          "concentration"]).to_pandas()
    keep = keep_mask(wells, manifest.filters, tables)
    report = curation_report(wells, keep)
    kept_perts = sum(t["perturbations"]["kept"] for t in report["by_perturbation_type"].values())
    if not keep.any() or kept_perts == 0:
        worst = ", ".join(f"filters[{i}].p_below: {f.p_below}" for i, f in enumerate(manifest.filters))
        raise ManifestError(f"{manifest.path}: select.filters kept no perturbation of the {len(wells):,} candidate "
                            f"wells ({worst}); raise p_below (e.g. p_below: 0.05), or check the embedding set "
                            f"(see {cand})")
    stats_path = workdir / PHENOSTATS
    write_stats(stats_path, tables)
    defn = load_definition(DEFINITION)
    report = {
        "filters": [f.to_dict() for f in manifest.filters],
        "statistic": {"benchmark": DEFINITION, "version": defn["version"], "checksum": definition_checksum(defn),
                      "metrics": sorted({STAT_METRICS[f.stat] for f in manifest.filters})},
        "phenostats": {"file": PHENOSTATS, "sha256": sha256_file(stats_path),
                       "rows": int(sum(len(t) for t in tables))},
        "candidates_content_hash": info["content_hash"],
        "null": null,
        **report,
    }
    atomic_write_json(workdir / CURATION, report)
    w = report["wells"]
    log(f"curation: kept {w['kept']:,} of {w['candidates']:,} candidate wells (" + ", ".join(
        f"{k}: {v['perturbations']['kept']}/{v['perturbations']['candidates']} perturbations"
        for k, v in report["by_perturbation_type"].items()) + f"); {PHENOSTATS}, {CURATION}")
    record = {"filters": report["filters"], "candidates_content_hash": info["content_hash"],
              "candidate_wells": w["candidates"], "kept_wells": w["kept"],
              "phenostats_sha256": report["phenostats"]["sha256"], "report_sha256": sha256_file(workdir / CURATION)}
    kept = curated_table(table, keep)
    info.update(content_hash=content_hash(kept), n_wells=kept.num_rows,
                n_images=int(sum(len(k) for k in kept.column("keys").to_pylist())), curation=record)
    write_lockfile(workdir / LOCKFILE, kept, info)
    # select's mtime_ns fingerprints of the candidates' images (local, never published), for the wells kept
    mtimes = source_fingerprints(cand, lock.content_hash, source)
    if mtimes is None:
        write_source_hint(workdir, source)
    else:
        it = iter(mtimes)
        per_well = [[next(it) for _ in keys] for keys in table.column("keys").to_pylist()]
        kept_mtimes = [m for well, k in zip(per_well, keep, strict=True) if k for m in well]
        write_source_fingerprints(workdir, source, info["content_hash"], kept_mtimes)
    return record


# ---------------------------------------------------------------------------------------------------- comparison
def write_comparison(workdir: Path, embeddings: str, candidates: dict[str, Any], curated: dict[str, Any],
                     wells: dict[str, int]) -> dict[str, Any]:
    """``curation_comparison.json``: per benchmark, the headline metrics of the candidate set and the curated set."""
    doc = {"embeddings": embeddings, "wells": wells,
           "benchmarks": {bid: {"candidates": candidates.get(bid), "curated": curated.get(bid)}
                          for bid in sorted(set(candidates) | set(curated))}}
    atomic_write_json(workdir / COMPARISON, doc)
    return doc
