"""Run a benchmark definition on embeddings (or a perturbation-level map) and produce the results object;
compare a re-run with published results."""

from __future__ import annotations

import fnmatch
import math
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy
import sklearn

import rxcurate.benchmarks.batch_generalisation as batch_generalisation
import rxcurate.benchmarks.compound_gene as compound_gene
import rxcurate.benchmarks.gene_gene as gene_gene
import rxcurate.benchmarks.signal as signal
from rxcurate import __version__
from rxcurate.benchmarks.definitions import definition_checksum, load_definition
from rxcurate.benchmarks.inputs import build_map, corrected_features, map_from_frame, prepare_sites, prepare_wells
from rxcurate.benchmarks.postprocess import PerturbationMap
from rxcurate.benchmarks.postprocess import postprocess as postprocess_features
from rxcurate.benchmarks.readers import read_compound_gene, read_relationships, read_table
from rxcurate.errors import BenchmarkError
from rxcurate.io import atomic_write_json, sha256_file
from rxcurate.schemas import schema_problem

PathLike = str | os.PathLike[str]
SCHEMA_VERSION = 1
SUMMARIES = {
    "gene-gene-recall": gene_gene.summary,
    "compound-gene-activity": compound_gene.summary,
    "perturbation-signal": signal.summary,
    "linear-probe": batch_generalisation.probe_summary,
}


def library_versions() -> dict[str, str]:
    return {
        "rxcurate": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
    }


def seed_list(defn: dict[str, Any]) -> list[int]:
    s = defn["seeds"]
    return list(range(int(s["start"]), int(s["start"]) + int(s["count"])))


def _clean(obj: Any) -> Any:
    """numpy scalars -> Python; NaN/inf -> None (results are strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def _truth_items(truth: Mapping[str, PathLike] | list[PathLike] | None) -> list[tuple[str, Path]]:
    if truth is None:
        return []
    if isinstance(truth, Mapping):
        items = [(str(k), Path(v)) for k, v in truth.items()]
    else:
        items = [(Path(p).stem, Path(p)) for p in truth]
    names = [n for n, _ in items]
    for name in names:
        if not name or "/" in name or name != name.strip():
            raise BenchmarkError(f"truth source name {name!r} is invalid: use a plain name such as CORUM "
                                 "(--truth CORUM=annotations/CORUM.txt)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise BenchmarkError(f"truth source name(s) {dup} given twice: name them explicitly, e.g. --truth "
                             f"{dup[0]}_2=PATH")
    return sorted(items)


def _read_truth(defn: dict[str, Any], truth: Mapping[str, PathLike] | list[PathLike] | None
                ) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    spec = defn["inputs"]["truth"]
    items = _truth_items(truth)
    lo, hi = spec["min_files"], spec.get("max_files")
    if len(items) < lo or (hi is not None and len(items) > hi):
        want = f"exactly {lo}" if hi == lo else f"at least {lo}" + (f" and at most {hi}" if hi is not None else "")
        example = {"relationships": "--truth CORUM=annotations/CORUM.txt",
                   "compound_gene": "--truth truth/compound_gene_interactions.csv"}.get(spec["format"], "no --truth")
        raise BenchmarkError(f"benchmark {defn['id']} needs {want} truth file(s) of format {spec['format']}, got "
                             f"{len(items)} (e.g. {example})")
    reader = {"relationships": read_relationships, "compound_gene": read_compound_gene}.get(spec["format"])
    frames: dict[str, pd.DataFrame] = {}
    prov: dict[str, Any] = {}
    for name, path in items:
        if reader is None:
            break
        frames[name] = reader(path)
        prov[name] = {"file": path.name, "sha256": sha256_file(path), "rows": int(len(frames[name]))}
    return frames, prov


def _score_map(defn: dict[str, Any], m: PerturbationMap, truth: dict[str, pd.DataFrame]) -> dict[str, Any]:
    kind = defn["kind"]
    if kind == "gene-gene-recall":
        return gene_gene.gene_gene_recall(m, truth, defn["parameters"])
    if kind == "compound-gene-activity":
        table = pd.concat([truth[k] for k in sorted(truth)], ignore_index=True)  # one file, unless max_files > 1
        return compound_gene.compound_gene_activity(m, table, defn["parameters"], seed_list(defn))
    raise BenchmarkError(f"benchmark {defn['id']} ({kind}) needs well-level embeddings and metadata, not a map "
                         "(drop --map; pass --embeddings and --metadata)")


def _finish(defn: dict[str, Any], metrics: dict[str, Any], inputs: dict[str, Any], postprocess: Any) -> dict[str, Any]:
    metrics = _clean(metrics)
    summary = _clean(SUMMARIES[defn["kind"]](metrics))
    for pattern in defn["metrics"]:
        if not any(fnmatch.fnmatchcase(k, pattern) for k in summary):
            raise BenchmarkError(f"benchmark {defn['id']}: results report no metric matching {pattern!r} (reported: "
                                 f"{sorted(summary)[:6]}); fix the definition's metrics list")
    results = {
        "schema_version": SCHEMA_VERSION,
        "benchmark": {
            "id": defn["id"],
            "version": defn["version"],
            "kind": defn["kind"],
            "checksum": definition_checksum(defn),
            "tolerance": defn["tolerance"],
        },
        "metrics": metrics,
        "summary": summary,
        "provenance": {
            "inputs": inputs,
            "seeds": dict(defn["seeds"]),
            "postprocess": postprocess,
            "versions": library_versions(),
        },
    }
    validate_results(results)
    return results


def headline(results: Mapping[str, Any]) -> dict[str, Any]:
    """The headline metrics of a results object: its summary entries matching its definition's ``metrics``
    patterns (e.g. ``max/auc_roc/mean`` for compound-gene-activity), in the order of the patterns."""
    try:
        patterns = load_definition(results["benchmark"]["id"])["metrics"]
    except (BenchmarkError, KeyError, TypeError):
        patterns = ["*"]
    summary = results.get("summary") or {}
    out: dict[str, Any] = {}
    for pattern in patterns:
        out.update({k: summary[k] for k in sorted(summary) if k not in out and fnmatch.fnmatchcase(k, pattern)})
    return out


def validate_results(results: Any, what: str = "benchmark results") -> None:
    """Schema-check a results object (raises BenchmarkError naming the field)."""
    problem = schema_problem(results, "results", what)
    if problem:
        raise BenchmarkError(problem)


def evaluate(
    definition: dict[str, Any] | PathLike,
    embeddings: pd.DataFrame,
    metadata: pd.DataFrame,
    truth: Mapping[str, PathLike] | list[PathLike] | None = None,
) -> dict[str, Any]:
    """Evaluate well-level ``embeddings`` (well_id + feature_*) with their ``metadata``: post-process, aggregate
    and score as the definition says. ``truth`` maps source names to files (or is a list of files, named by stem).
    Returns the schema-valid results object; identical inputs give identical results."""
    defn = load_definition(definition)
    frames, truth_prov = _read_truth(defn, truth)
    if defn["kind"] == "linear-probe" and "wilds" in defn["parameters"]:
        return _evaluate_wilds(defn, embeddings, metadata, truth_prov)
    wells = prepare_wells(defn, embeddings, metadata)
    kind = defn["kind"]
    seed = seed_list(defn)[0]
    if kind == "perturbation-signal":
        rng = np.random.default_rng(seed)
        batch_codes = pd.factorize(pd.Series(wells.batch, dtype=object), sort=True)[0].astype(np.int64)
        pool = signal.split_controls(wells.is_control, batch_codes, defn["parameters"].get("null_fraction", 0.5), rng)
        fit = wells.is_control & ~pool
        x = corrected_features(defn, wells, fit)
    else:
        x = corrected_features(defn, wells)
    if kind == "linear-probe":
        cols, params = defn["columns"], defn["parameters"]
        meta = wells.meta
        use = meta[params["labels"]["column"]].fillna("").astype(str).isin(params["labels"]["values"]).to_numpy()
        metrics = batch_generalisation.linear_probe(
            {"uncorrected": wells.x, "corrected": x},
            wells.perturbation,
            meta[cols["split"]].fillna("").astype(str).to_numpy(dtype=object),
            meta[cols["cell_type"]].fillna("").astype(str).to_numpy(dtype=object) if cols.get("cell_type") else None,
            use,
            params,
            seed,
        )
    else:
        m, codes = build_map(defn, wells, x)
        if kind == "perturbation-signal":
            metrics = signal.perturbation_signal(x, codes, m.kind, batch_codes, fit, pool, defn["parameters"], rng)
        else:
            metrics = _score_map(defn, m, frames)
        metrics["map"] = {"genes": int((m.kind == "gene").sum()), "compound_rows": int((m.kind == "compound").sum())}
    metrics["wells"] = {
        "total": int(len(wells.well_id)),
        "controls": int(wells.is_control.sum()),
        "embedding_rows": int(wells.embedding_rows),
        "features": int(wells.x.shape[1]),
    }
    inputs = {
        "embeddings": {"file": None, "sha256": None, "rows": int(wells.embedding_rows)},
        "metadata": {"file": None, "sha256": None, "rows": int(len(metadata))},
        "truth": truth_prov,
    }
    return _finish(defn, metrics, inputs, dict(defn["postprocess"]))


def _evaluate_wilds(defn: dict[str, Any], embeddings: pd.DataFrame, metadata: pd.DataFrame,
                    truth_prov: dict[str, Any]) -> dict[str, Any]:
    """rxrx1-wilds: the WILDS split on image (site) embeddings."""
    sites = prepare_sites(defn, embeddings, metadata)
    cols, params, pp = defn["columns"], defn["parameters"], defn["postprocess"]
    meta = sites.meta

    def text(col: str) -> np.ndarray:
        return meta[col].fillna("").astype(str).to_numpy(dtype=object)

    batch = text(cols["batch"])
    is_control = meta[defn["controls"]["column"]].fillna("").astype(str).isin(defn["controls"]["values"]).to_numpy()
    corrected = postprocess_features(sites.x, pp["method"], is_control, batch, pp.get("fit_on", "controls"),
                                     pp.get("center", "batch"))
    use = meta[params["labels"]["column"]].fillna("").astype(str).isin(params["labels"]["values"]).to_numpy()
    metrics = batch_generalisation.wilds_probe(
        {"uncorrected": sites.x, "corrected": corrected}, text(cols["perturbation"][0]), batch,
        text(cols["cell_type"]), text(cols["split"]), meta["site"].to_numpy(dtype=np.int64), use, params,
        seed_list(defn)[0])
    metrics["wells"] = {"total": int(meta[cols["well"]].nunique()), "controls": int(is_control.sum()),
                        "embedding_rows": int(sites.embedding_rows), "features": int(sites.x.shape[1])}
    inputs = {
        "embeddings": {"file": None, "sha256": None, "rows": int(sites.embedding_rows)},
        "metadata": {"file": None, "sha256": None, "rows": int(len(metadata))},
        "truth": truth_prov,
    }
    return _finish(defn, metrics, inputs, dict(pp))


def evaluate_map(
    definition: dict[str, Any] | PathLike,
    map_frame: pd.DataFrame,
    truth: Mapping[str, PathLike] | list[PathLike] | None = None,
) -> dict[str, Any]:
    """Score an already post-processed perturbation-level map (``perturbation``, ``concentration`` for compounds,
    features) without post-processing, as the published benchmark code scores third-party maps."""
    defn = load_definition(definition)
    if not defn["inputs"]["map"]:
        raise BenchmarkError(f"benchmark {defn['id']} ({defn['kind']}) needs well-level embeddings and metadata, not "
                             "a map (drop --map; pass --embeddings and --metadata)")
    frames, truth_prov = _read_truth(defn, truth)
    m = map_from_frame(defn, map_frame)
    metrics = _score_map(defn, m, frames)
    metrics["map"] = {"genes": int((m.kind == "gene").sum()), "compound_rows": int((m.kind == "compound").sum())}
    inputs = {"map": {"file": None, "sha256": None, "rows": int(len(map_frame))}, "truth": truth_prov}
    return _finish(defn, metrics, inputs, None)


def evaluate_files(
    benchmark_id: str | PathLike | dict[str, Any],
    embeddings_path: PathLike | None,
    metadata_path: PathLike | None,
    truth_paths: Mapping[str, PathLike] | list[PathLike] | None,
    out_path: PathLike | None,
    *,
    map_path: PathLike | None = None,
) -> dict[str, Any]:
    """File-level wrapper: read the inputs, evaluate, add the inputs' file names and sha256, and write the results
    JSON atomically to ``out_path`` (when given). Nothing is written when anything fails."""
    defn = load_definition(benchmark_id)
    if map_path is not None:
        if embeddings_path is not None or metadata_path is not None:
            raise BenchmarkError("give either --map or --embeddings with --metadata, not both")
        if not defn["inputs"]["map"]:
            raise BenchmarkError(f"benchmark {defn['id']} ({defn['kind']}) needs well-level embeddings and metadata, "
                                 "not a map (drop --map; pass --embeddings and --metadata)")
        frame = read_table(map_path, "map")
        results = evaluate_map(defn, frame, truth_paths)
        results["provenance"]["inputs"]["map"] = _file_entry(map_path, len(frame))
    else:
        if embeddings_path is None or metadata_path is None:
            raise BenchmarkError("pass --embeddings and --metadata (well-level), or --map for a perturbation-level map")
        emb = read_table(embeddings_path, "embeddings")
        meta = read_table(metadata_path, "metadata")
        results = evaluate(defn, emb, meta, truth_paths)
        inputs = results["provenance"]["inputs"]
        inputs["embeddings"] = _file_entry(embeddings_path, inputs["embeddings"]["rows"])
        inputs["metadata"] = _file_entry(metadata_path, inputs["metadata"]["rows"])
    validate_results(results)
    if out_path is not None:
        atomic_write_json(out_path, results)
    return results


def _file_entry(path: PathLike, rows: int) -> dict[str, Any]:
    return {"file": Path(path).name, "sha256": sha256_file(path), "rows": int(rows)}


def flatten(obj: Any, prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """The leaves of a nested mapping keyed by their joined paths (``a/b/c``), keys sorted."""
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k in sorted(obj):
            out.update(flatten(obj[k], f"{prefix}{sep}{k}" if prefix else str(k), sep))
        return out
    return {prefix: obj}


def _tolerance_for(path: str, tolerance: float | Mapping[str, Any]) -> float:
    if not isinstance(tolerance, Mapping):
        return float(tolerance)
    for pattern in sorted(tolerance.get("metrics", {}) or {}):
        if fnmatch.fnmatchcase(path, pattern):
            return float(tolerance["metrics"][pattern])
    return float(tolerance.get("default", 0.0))


def compare_results(
    published: dict[str, Any], rerun: dict[str, Any], tolerance: float | Mapping[str, Any] | None = None
) -> list[str]:
    """Problems that stop ``rerun`` from reproducing ``published`` (empty list = reproduced).

    Checks the benchmark id, version and definition checksum, the sha256 of every input, and every metric: numbers
    within an absolute tolerance (``tolerance``: a number, or ``{"default": x, "metrics": {glob: y}}`` matched
    against ``group/metric`` paths; default: the published results' own tolerance), everything else exactly.
    """
    problems: list[str] = []
    for res, label in ((published, "published"), (rerun, "re-run")):
        try:
            validate_results(res, f"{label} results")
        except BenchmarkError as exc:
            problems.append(str(exc))
    if problems:
        return problems
    tol = published["benchmark"]["tolerance"] if tolerance is None else tolerance
    for key in ("id", "version", "checksum"):
        a, b = published["benchmark"][key], rerun["benchmark"][key]
        if a != b:
            problems.append(f"benchmark {key} differs: published {a!r}, re-run {b!r}")
    pin, rin = published["provenance"]["inputs"], rerun["provenance"]["inputs"]
    for key in ("embeddings", "metadata", "map"):
        a, b = (pin.get(key) or {}).get("sha256"), (rin.get(key) or {}).get("sha256")
        if (key in pin) != (key in rin) or a != b:
            problems.append(f"input {key} differs: published sha256 {a}, re-run sha256 {b}")
    for name in sorted(set(pin["truth"]) | set(rin["truth"])):
        a, b = (pin["truth"].get(name) or {}).get("sha256"), (rin["truth"].get(name) or {}).get("sha256")
        if a != b:
            problems.append(f"truth {name!r} differs: published sha256 {a}, re-run sha256 {b}")
    pub, new = flatten(published["metrics"]), flatten(rerun["metrics"])
    for path in sorted(set(pub) | set(new)):
        if path not in new:
            problems.append(f"metric {path} is missing from the re-run")
            continue
        if path not in pub:
            problems.append(f"metric {path} is not in the published results")
            continue
        a, b = pub[path], new[path]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
        if numeric:
            t = _tolerance_for(path, tol)
            if abs(float(a) - float(b)) > t:
                problems.append(f"metric {path}: published {a}, re-run {b} (|difference| {abs(a - b):.3g} > "
                                f"tolerance {t:g})")
        elif a != b:
            problems.append(f"metric {path}: published {a!r}, re-run {b!r}")
    return problems
