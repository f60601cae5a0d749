"""Polaris artifacts of a release: the compound-gene activity task as a Polaris (polaris-lib 0.13, format version 1)
dataset of ``(treatment, gene_symbol, active)`` pairs and a single-task benchmark, saved in ``<release>/polaris/``.

Written by the core WITHOUT polaris-lib (it pins pyarrow < 18 and cannot share rxcurate's environment): the JSON
documents follow polaris-lib's own serialisation field by field, and their ``md5sum`` checksums are computed the way
polaris-lib computes them (dataset: md5 of the row-order-free sum of ``pandas.util.hash_pandas_object`` over the
columns in sorted order; benchmark: md5 over the dataset checksum, sorted target/input columns, sorted metric strings
and the split). ``tests/with_polaris/`` checks them against stock polaris-lib in ``.venv-polaris`` (``make
install-polaris``): polaris-lib recomputes the same checksums on what it loads. (polaris-lib 0.13 does not compare
a local JSON's md5sum on load; :func:`check_artifacts`, run by validate, does.)

Aligned with the official ``recursion/rxrx-compound-gene-activity-benchmark`` on the Polaris Hub: single task,
input columns ``treatment`` and ``gene_symbol``, target ``active``, zero-shot (every pair in the test set, empty train
set), main metric ``pr_auc`` grouped by ``treatment`` with mean aggregation and ``on_error: ignore`` (per-compound
average precision averaged over compounds), plus ``roc_auc`` grouped the same way (per-compound AUC-ROC).

Pairs follow the release's ``compound-gene-activity`` benchmark definition and its published truth table: for each
compound of the release, actives are genes of the release with ``nM_value <= active_nM`` (the smallest value of the
pair), genes with ``active_nM < nM_value <= excluded_nM`` are left out, and ``max(negatives_per_active x actives,
min_negatives)`` negatives are drawn with the definition's first seed (``numpy.random.default_rng``, compounds and
candidate genes in sorted order) from the other genes of the truth table present in the release; a compound
without actives or without enough candidates is skipped. This is one seed of the benchmark's sampling, frozen.

Locations: stock polaris-lib resolves the paths inside benchmark.json against the CURRENT directory, so relative
paths load only from inside ``polaris/``. The documents therefore name their files by the release's own Hub URL,
``hf://datasets/<repo_id>@v<version>/polaris/<file>`` (known from the manifest before publishing, so the bytes stay
reproducible): ``polaris.load_benchmark("hf://datasets/<repo_id>@v<version>/polaris/benchmark.json")`` and
``polaris.load_benchmark("<any copy>/polaris/benchmark.json")`` work from any working directory wherever the Hub is
reachable (for the local hub through olah, ``HF_ENDPOINT``). Offline, :func:`load_benchmark` (polaris-lib needed)
loads a local copy by pointing the documents at its files.

``predictions.parquet`` holds the release's own baseline predictions for the pairs: ``y_prob`` = the largest
``|cosine|`` over the compound's concentrations between the compound and the gene knockout in the compound-gene
definition's map of the default embedding set; ``rxcurate.json`` records the scores rxcurate computes for them.

Uploading: the Polaris Hub stopped accepting dataset and benchmark uploads in May 2025 (polaris-lib 0.13 raises
``PolarisDeprecatedError``); what it still accepts is results. ``publish --to polaris://OWNER/BENCHMARK`` evaluates
the predictions with polaris-lib against the local benchmark, checks polaris-lib's scores equal rxcurate's, and
uploads them as results of ``OWNER/BENCHMARK`` (e.g. ``polaris://recursion/rxrx-compound-gene-activity-benchmark``).
Without polaris-lib or without credentials it uploads nothing and raises :class:`PublishError` (exit 2) naming what
was not uploaded and why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from rxcurate.benchmarks.inputs import build_map, corrected_features, prepare_wells
from rxcurate.benchmarks.readers import read_compound_gene
from rxcurate.errors import BenchmarkError, PublishError
from rxcurate.io import atomic_write_json, current_umask, read_json, sha256_file
from rxcurate.layout import (
    BENCHMARKS_DIR,
    EMBEDDINGS_DIR,
    POLARIS_DIR,
    POLARIS_INFO,
    POLARIS_PREDICTIONS,
    POLARIS_TABLE,
    release_files,
)
from rxcurate.layout import POLARIS_BENCHMARK as BENCHMARK_JSON

TABLE = POLARIS_TABLE
INFO_JSON = POLARIS_INFO
PREDICTIONS = POLARIS_PREDICTIONS
TASK = "compound-gene-activity"
OFFICIAL = "recursion/rxrx-compound-gene-activity-benchmark"
POLARIS_VERSION = "0.13.0"  # the polaris-lib release whose format these documents follow
INPUT_COLS = ["treatment", "gene_symbol"]
TARGET_COL = "active"
GROUPED = {"aggregation": "mean", "default": None, "group_by": "treatment", "on_error": "ignore"}
METRICS = [{"config": GROUPED, "kind": "grouped", "label": label, "name": f"{label}_grouped"}
           for label in ("pr_auc", "roc_auc")]
MAIN_METRIC = "pr_auc_grouped"
METRIC_NAMES = [m["name"] for m in METRICS]
ANNOTATIONS = {
    "treatment": ("str", "Compound name as in the release metadata (treatment)."),
    "gene_symbol": ("str", "Gene knocked out in the release (metadata gene)."),
    "active": ("int64", "1: nM_value <= active_nM; 0: sampled negative."),
}
POLARIS_LICENSES = ("CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "CC-BY-ND-4.0",
                    "CC-BY-NC-ND-4.0", "CC0-1.0")  # polaris-lib 0.13's SupportedLicenseType


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence polaris-lib's deprecation warnings and INFO logs (checksums, empty train set)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import polaris  # noqa: F401 - heavy optional dependency (rxcurate[polaris]); configures its logger

    loggers = [logging.getLogger(n) for n in ("polaris", "httpx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


def slug(text: str, suffix: str = "") -> str:
    """A polaris name: letters, digits, '_' or '-', 4..64 characters."""
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")
    s = (s[: 64 - len(suffix)] + suffix) if suffix else s[:64]
    return s if len(s) >= 4 else (s + "-task")[:64]


def hub_url(repo_id: str, version: str, name: str) -> str:
    """The release file ``polaris/<name>`` on the Hub at the version's tag (fsspec's hf:// syntax)."""
    return f"hf://datasets/{repo_id}@v{version}/{POLARIS_DIR}/{name}"


# --------------------------------------------------------------------------------------------------- pairs
def activity_pairs(truth: pd.DataFrame, compounds: list[str], genes: list[str], *, active_nM: float,
                   excluded_nM: float, negatives_per_active: int, min_negatives: int, seed: int) -> pd.DataFrame:
    """``treatment, gene_symbol, active, nM_value`` pairs (see the module doc); sorted by treatment, gene."""
    gene_set = set(genes)
    t = truth[truth["treatment"].isin(set(compounds)) & truth["gene_symbol"].isin(gene_set)]
    best = t.groupby(["treatment", "gene_symbol"], sort=True)["nM_value"].min().reset_index()
    universe = np.array(sorted(set(truth["gene_symbol"]) & gene_set), dtype=object)
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, int, float]] = []
    for compound, grp in best.groupby("treatment", sort=True):
        active = grp[grp["nM_value"] <= active_nM]
        if active.empty:
            continue
        skip = set(grp.loc[grp["nM_value"] <= excluded_nM, "gene_symbol"])
        candidates = universe[~np.isin(universe, sorted(skip))]
        n_neg = max(negatives_per_active * len(active), min_negatives)
        if len(candidates) < n_neg:
            continue
        negatives = sorted(rng.choice(candidates, size=n_neg, replace=False).tolist())
        measured = dict(zip(grp["gene_symbol"], grp["nM_value"], strict=True))
        rows += [(str(compound), str(g), 1, float(v))
                 for g, v in zip(active["gene_symbol"], active["nM_value"], strict=True)]
        rows += [(str(compound), str(g), 0, float(measured.get(g, np.nan))) for g in negatives]
    out = pd.DataFrame(rows, columns=["treatment", "gene_symbol", "active", "nM_value"])
    out["active"] = out["active"].astype(np.int64)
    return out.sort_values(["treatment", "gene_symbol"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------------- checksums
def dataset_md5(table: pd.DataFrame) -> str:
    """polaris-lib's DatasetV1 checksum: md5 of the (wrapping uint64) sum of the row hashes of the table with its
    columns in sorted order (insensitive to row and column order)."""
    df = table[sorted(table.columns)].copy()
    for col in df.columns:
        if not pd.api.types.is_numeric_dtype(df[col]):
            df[col] = df[col].astype(object)  # pandas' str and object dtypes hash alike this way
    total = np.uint64(pd.util.hash_pandas_object(df, index=False).to_numpy(dtype=np.uint64).sum(dtype=np.uint64))
    return hashlib.md5(total.tobytes()).hexdigest()


def metric_string(metric: dict[str, Any]) -> str:
    """polaris-lib's ``str(Metric)``: the label, then the grouping config as sorted JSON."""
    config = metric.get("config")
    return metric["label"] + (json.dumps(config, sort_keys=True) if config else "")


def benchmark_md5(dataset_checksum: str, target_cols: list[str], input_cols: list[str],
                  metrics: list[dict[str, Any]], train: list[int], test: dict[str, list[int]]) -> str:
    """polaris-lib's BenchmarkV1Specification checksum."""
    h = hashlib.md5()
    h.update(dataset_checksum.encode())
    for c in sorted(target_cols):
        h.update(c.encode())
    for c in sorted(input_cols):
        h.update(c.encode())
    for m in sorted(metric_string(m) for m in metrics):
        h.update(m.encode())
    h.update(json.dumps(sorted(train)).encode())
    for k in sorted(test):
        h.update(k.encode())
        h.update(json.dumps(sorted(test[k])).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------- build
def _polaris_license(license: str | None) -> str | None:
    """polaris-lib accepts a few SPDX ids (``SupportedLicenseType``, e.g. CC-BY-4.0); others are left out."""
    if not license:
        return None
    candidate = license.upper()
    return candidate if candidate in POLARIS_LICENSES else None


def dataset_document(table: pd.DataFrame, *, name: str, description: str, license: str | None,
                     table_ref: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "annotations": {col: {"description": text, "dtype": dtype, "is_pointer": False, "modality": "UNKNOWN",
                              "user_attributes": {}} for col, (dtype, text) in ANNOTATIONS.items()},
        "artifact_version": 1,
        "default_adapters": {},
        "description": description,
        "md5sum": dataset_md5(table),
        "n_columns": int(table.shape[1]),
        "n_rows": int(len(table)),
        "name": name,
        "polaris_version": POLARIS_VERSION,
        "readme": "",
        "slug": name,
        "table": table_ref,
        "tags": ["cell-painting", TASK, "rxcurate"],
        "user_attributes": {},
        "version": 1,
        "zarr_md5sum_manifest": [],
    }
    lic = _polaris_license(license)
    if lic:
        doc["license"] = lic
    return doc


def benchmark_document(table: pd.DataFrame, dataset_checksum: str, *, name: str, description: str,
                       dataset_ref: str) -> dict[str, Any]:
    test = list(range(len(table)))
    return {
        "artifact_changelog": None,
        "artifact_id": None,
        "artifact_version": 1,
        "dataset": dataset_ref,
        "dataset_artifact_id": None,
        "description": description,
        "input_cols": sorted(INPUT_COLS),
        "main_metric": MAIN_METRIC,
        "md5sum": benchmark_md5(dataset_checksum, [TARGET_COL], INPUT_COLS, METRICS, [], {"test": test}),
        "metrics": sorted(METRICS, key=lambda m: json.dumps(m, sort_keys=True)),
        "n_classes": {TARGET_COL: 2},
        "n_test_datapoints": {"test": len(test)},
        "n_test_sets": 1,
        "n_train_datapoints": 0,
        "name": name,
        "owner": None,
        "polaris_version": POLARIS_VERSION,
        "readme": "",
        "slug": name,
        "split": [[], {"test": test}],
        "tags": [TASK, "rxcurate"],
        "target_cols": [TARGET_COL],
        "target_types": {TARGET_COL: "classification"},
        "task_type": "single_task",
        "test_set_labels": ["test"],
        "test_set_sizes": {"test": len(test)},
        "urn": None,
        "user_attributes": {},
        "version": 1,
    }


def grouped_scores(table: pd.DataFrame, y_prob: np.ndarray) -> dict[str, float]:
    """rxcurate's own computation of the benchmark's metrics: per-compound average precision and AUC-ROC, averaged
    over compounds (a compound whose metric cannot be computed is ignored, as ``on_error: ignore``)."""
    out: dict[str, list[float]] = {"pr_auc_grouped": [], "roc_auc_grouped": []}
    y = table[TARGET_COL].to_numpy()
    groups = table["treatment"].astype(str).to_numpy()
    for g in sorted(set(groups)):
        sel = groups == g
        if len(set(y[sel].tolist())) < 2:
            continue
        out["pr_auc_grouped"].append(float(average_precision_score(y[sel], y_prob[sel])))
        out["roc_auc_grouped"].append(float(roc_auc_score(y[sel], y_prob[sel])))
    return {k: float(np.mean(v)) for k, v in out.items() if v}


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, sort_keys=True, indent=1) + "\n", encoding="utf-8")


def build_artifacts(dest: str | os.PathLike[str], pairs: pd.DataFrame, *, name: str, description: str,
                    license: str | None, provenance: dict[str, Any], repo_id: str, version: str,
                    predictions: np.ndarray | None = None,
                    predictions_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``benchmark.json``, ``<dataset>.json``, ``table.parquet``, ``rxcurate.json`` (and
    ``predictions.parquet`` when given) into ``dest``, replaced atomically as a folder. Returns the info document."""
    if pairs.empty or pairs["active"].nunique() < 2:
        raise PublishError(f"no compound-gene pairs with both actives and negatives for the Polaris task of {name}: "
                           f"the release needs compounds with known targets (nM_value <= active_nM) among its genes")
    dest = Path(dest).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds_name = slug(name)
    bench_name = slug(name, "-compound-gene-activity-benchmark")
    dataset_json = f"{ds_name}.json"
    table = pairs[["treatment", "gene_symbol", "active"]].reset_index(drop=True)
    ds_doc = dataset_document(table, name=ds_name, description=description, license=license,
                              table_ref=hub_url(repo_id, version, TABLE))
    bench_doc = benchmark_document(table, ds_doc["md5sum"], name=bench_name, description=description,
                                   dataset_ref=hub_url(repo_id, version, dataset_json))
    info: dict[str, Any] = {
        "task": TASK,
        "aligned_with": {"benchmark": OFFICIAL, "same": "single task; input columns treatment, gene_symbol; target "
                         "active; zero-shot split (all pairs in test); main metric pr_auc grouped by treatment "
                         "(mean, on_error ignore); roc_auc grouped the same way"},
        "benchmark": BENCHMARK_JSON,
        "dataset": dataset_json,
        "table": TABLE,
        "location": {"repo_id": repo_id, "tag": f"v{version}",
                     "benchmark_url": hub_url(repo_id, version, BENCHMARK_JSON)},
        "rows": int(len(table)),
        "actives": int(table["active"].sum()),
        "compounds": int(table["treatment"].nunique()),
        "genes": int(table["gene_symbol"].nunique()),
        "split": {"train": 0, "test": int(len(table)),
                  "rule": "zero-shot: every pair is in the test set, the train set is empty"},
        "metrics": METRIC_NAMES,
        "main_metric": MAIN_METRIC,
        "md5sum": {"dataset": ds_doc["md5sum"], "benchmark": bench_doc["md5sum"]},
        "provenance": provenance,
        "load": f"polaris.load_benchmark('{hub_url(repo_id, version, BENCHMARK_JSON)}') (any directory, Hub "
                f"reachable); offline: rxcurate.publish.polaris.load_benchmark('<copy>/polaris')",
    }
    if predictions is not None:
        y_prob = np.asarray(predictions, dtype=np.float64)
        if y_prob.shape != (len(table),) or not np.isfinite(y_prob).all():
            raise PublishError(f"Polaris predictions: {y_prob.shape} finite scores expected, one per pair "
                               f"({len(table)})")
        info["predictions"] = {"file": PREDICTIONS, "column": "y_prob", **(predictions_info or {}),
                               "scores": grouped_scores(table, y_prob)}
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; the published folder honours the umask
    try:
        table.to_parquet(tmp / TABLE, index=False)
        if predictions is not None:
            pd.DataFrame({"y_prob": np.asarray(predictions, dtype=np.float64)}).to_parquet(tmp / PREDICTIONS,
                                                                                          index=False)
        _write_json(tmp / dataset_json, ds_doc)
        _write_json(tmp / BENCHMARK_JSON, bench_doc)
        atomic_write_json(tmp / INFO_JSON, info)
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~current_umask())
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return info


@dataclass
class TaskInputs:
    definition: dict[str, Any]
    truth_path: Path
    truth_sha256: str
    compounds: list[str]
    genes: list[str]
    embeddings_path: Path | None


def _first_input(results: dict[str, dict[str, Any]], key: str) -> dict[str, Any] | None:
    for doc in results.values():
        spec = doc.get("provenance", {}).get("inputs", {}).get(key)
        if isinstance(spec, dict) and key == "truth":
            spec = next(iter(spec.values()), None)
        if isinstance(spec, dict) and spec.get("sha256"):
            return spec
    return None


def task_inputs(folder: Path, definition: dict[str, Any], results: dict[str, dict[str, Any]],
                metadata: pd.DataFrame) -> TaskInputs:
    """The truth file (found in the release by its sha256 from a result's provenance), compounds, genes and the
    embeddings the results were computed on (None when not in the release)."""
    truth = _first_input(results, "truth")
    if truth is None:
        raise PublishError(f"{TASK} results name no truth file: rerun rxcurate evaluate with --truth")
    path = find_by_sha256(folder, truth["sha256"], prefix=f"{BENCHMARKS_DIR}/")
    if path is None:
        raise PublishError(f"the {TASK} truth file {truth.get('file')} (sha256 {truth['sha256'][:12]}...) is not in "
                           f"{folder}/benchmarks/: publish it with the release (rxcurate card MANIFEST --truth "
                           f"{truth.get('file')})")
    emb = _first_input(results, "embeddings")
    emb_path = find_by_sha256(folder, emb["sha256"], prefix=f"{EMBEDDINGS_DIR}/") if emb else None
    cols = definition["columns"]
    ptypes = definition.get("perturbation_types", {"gene": ["CRISPR"], "compound": ["COMPOUND"]})
    excluded = set(definition.get("exclude_from_map", [])) | set(definition["controls"]["values"])
    ptype_col = cols.get("perturbation_type") or "perturbation_type"
    comp = metadata[metadata[ptype_col].isin(ptypes["compound"])]
    gene = metadata[metadata[ptype_col].isin(ptypes["gene"])]
    compounds = sorted(set(comp["treatment"].astype(str)) - excluded)
    genes = sorted(set(gene["gene"].dropna().astype(str)) - excluded - {""})
    return TaskInputs(definition, path, truth["sha256"], compounds, genes, emb_path)


def find_by_sha256(folder: Path, sha256: str, prefix: str = "") -> Path | None:
    for rel in release_files(folder):
        if rel.startswith(prefix) and sha256_file(folder / rel) == sha256:
            return folder / rel
    return None


def pair_scores(definition: dict[str, Any], embeddings: pd.DataFrame, metadata: pd.DataFrame,
                pairs: pd.DataFrame) -> np.ndarray:
    """Baseline predictions: per pair, the largest |cosine| over the compound's concentrations between the compound
    and the gene in the definition's perturbation map (its post-processing and aggregation)."""
    wells = prepare_wells(definition, embeddings, metadata)
    m, _ = build_map(definition, wells, corrected_features(definition, wells))
    norms = np.linalg.norm(m.features, axis=1, keepdims=True)
    unit = np.divide(m.features, norms, out=np.zeros_like(m.features), where=norms > 0)
    genes = {str(p): i for i, (p, k) in enumerate(zip(m.perturbation, m.kind, strict=True)) if k == "gene"}
    rows: dict[str, list[int]] = {}
    for i, (p, k) in enumerate(zip(m.perturbation, m.kind, strict=True)):
        if k == "compound":
            rows.setdefault(str(p), []).append(i)
    out = np.zeros(len(pairs))
    for j, (c, g) in enumerate(zip(pairs["treatment"].astype(str), pairs["gene_symbol"].astype(str), strict=True)):
        if c not in rows or g not in genes:
            raise PublishError(f"Polaris predictions: pair ({c}, {g}) is not in the perturbation map of the "
                               f"embeddings: rerun rxcurate evaluate on the release's embeddings")
        out[j] = float(np.max(np.abs(unit[rows[c]] @ unit[genes[g]])))
    return out


def build_for_release(folder: str | os.PathLike[str], *, name: str, description: str, license: str | None,
                      definition: dict[str, Any], results: dict[str, dict[str, Any]],
                      metadata: pd.DataFrame, repo_id: str, version: str) -> dict[str, Any]:
    """Build ``<folder>/polaris/`` for the release's compound-gene-activity benchmark."""
    folder = Path(folder)
    inputs = task_inputs(folder, definition, results, metadata)
    truth = read_compound_gene(inputs.truth_path)
    p = definition["parameters"]
    seed = int(definition["seeds"]["start"])
    pairs = activity_pairs(truth, inputs.compounds, inputs.genes, active_nM=float(p["active_nM"]),
                           excluded_nM=float(p["excluded_nM"]), negatives_per_active=int(p["negatives_per_active"]),
                           min_negatives=int(p["min_negatives"]), seed=seed)
    provenance = {"benchmark": {"id": definition["id"], "version": definition["version"]},
                  "truth": {"file": inputs.truth_path.relative_to(folder).as_posix(), "sha256": inputs.truth_sha256},
                  "seed": seed, "parameters": {k: p[k] for k in ("active_nM", "excluded_nM", "negatives_per_active",
                                                                   "min_negatives")}}
    predictions = predictions_info = None
    if inputs.embeddings_path is not None and not pairs.empty:
        try:
            predictions = pair_scores(definition, pd.read_parquet(inputs.embeddings_path), metadata, pairs)
        except BenchmarkError as exc:
            raise PublishError(f"Polaris predictions from {inputs.embeddings_path.name}: {exc}") from None
        predictions_info = {"embeddings": inputs.embeddings_path.relative_to(folder).as_posix(),
                            "rule": "largest |cosine| over the compound's concentrations, compound vs gene, in the "
                                    "benchmark definition's map"}
    return build_artifacts(folder / POLARIS_DIR, pairs, name=name, description=description, license=license,
                           provenance=provenance, repo_id=repo_id, version=version, predictions=predictions,
                           predictions_info=predictions_info)


# --------------------------------------------------------------------------------------------------- load / check
def local_documents(folder: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """The benchmark and dataset documents of a local ``polaris/`` folder, pointed at its own files (absolute)."""
    folder = Path(folder).resolve()
    if folder.is_file():
        folder = folder.parent
    bench = folder / BENCHMARK_JSON
    if not bench.is_file():
        raise PublishError(f"{bench} is missing: build the Polaris artifacts with rxcurate card "
                           f"(needs compound-gene-activity results)")
    doc = read_json(bench)
    ds_name = str(doc["dataset"]).rsplit("/", 1)[-1]
    ds_doc = read_json(folder / ds_name)
    ds_doc["table"] = str(folder / str(ds_doc["table"]).rsplit("/", 1)[-1])
    return doc, ds_doc, folder


def load_benchmark(path: str | os.PathLike[str]) -> Any:
    """Load the benchmark of a local ``polaris/`` folder (or its benchmark.json) with polaris-lib, offline, from any
    working directory (needs polaris-lib: ``make install-polaris``)."""
    doc, ds_doc, _ = local_documents(path)
    with _quiet(), tempfile.TemporaryDirectory(prefix="rxcurate-polaris-") as tmp:
        ds_path = Path(tmp) / "dataset.json"
        ds_path.write_text(json.dumps(ds_doc), encoding="utf-8")
        doc["dataset"] = str(ds_path)
        (Path(tmp) / BENCHMARK_JSON).write_text(json.dumps(doc), encoding="utf-8")
        import polaris as po  # heavy optional dependency (rxcurate[polaris])

        bench_obj = po.load_benchmark(str(Path(tmp) / BENCHMARK_JSON))
        bench_obj.dataset.table  # noqa: B018 - load the table now, while the temp JSON exists
        return bench_obj


def evaluate(benchmark: Any, y_prob: Any) -> dict[str, float]:
    """Scores of predictions on the test set with polaris-lib: ``{metric name: value}``."""
    with _quiet():
        res = benchmark.evaluate(y_prob=np.asarray(y_prob, dtype=float))
    return {str(r["Metric"]): float(r["Score"]) for _, r in res.results.iterrows()}


def check_artifacts(folder: str | os.PathLike[str], *, repo_id: str | None = None, version: str | None = None,
                    with_library: bool = False) -> list[str]:
    """Problems of ``<folder>/polaris/`` (empty when fine), without polaris-lib: files present, documents in
    polaris-lib's format with checksums recomputed, table and predictions consistent with rxcurate.json, file
    locations the release's Hub URLs (when ``repo_id``/``version`` are given); with ``with_library`` (and
    polaris-lib installed) also loads it through polaris-lib."""
    d = Path(folder) / POLARIS_DIR
    problems: list[str] = []
    info_path = d / INFO_JSON
    if not info_path.is_file():
        return [f"{POLARIS_DIR}/{INFO_JSON}: missing (rebuild with rxcurate card)"]
    try:
        info = read_json(info_path)
        bench_doc = read_json(d / info["benchmark"])
        ds_doc = read_json(d / info["dataset"])
        table = pd.read_parquet(d / info["table"])
    except Exception as exc:  # noqa: BLE001 - any unreadable artifact is a finding
        return [f"{POLARIS_DIR}/: unreadable Polaris artifacts ({type(exc).__name__}: {str(exc)[:200]})"]
    loc = info.get("location", {})
    rid, ver = repo_id or loc.get("repo_id"), version or str(loc.get("tag", "v"))[1:]
    for key, doc, field, name in (("benchmark", bench_doc, "dataset", info["dataset"]),
                                  ("dataset", ds_doc, "table", info["table"])):
        want = hub_url(str(rid), ver, name)
        if doc.get(field) != want:
            problems.append(f"{POLARIS_DIR}/{info[key]}: {field} is {doc.get(field)!r}; it must be the release's "
                            f"Hub URL {want!r} (rebuild with rxcurate card)")
    if list(table.columns) != [*INPUT_COLS, TARGET_COL] or len(table) != info["rows"]:
        problems.append(f"{POLARIS_DIR}/{info['table']}: {len(table)} rows with columns {list(table.columns)}, "
                        f"rxcurate.json declares {info['rows']} rows of {[*INPUT_COLS, TARGET_COL]}")
        return problems
    if int(table[TARGET_COL].sum()) != info["actives"]:
        problems.append(f"{POLARIS_DIR}/{info['table']}: {int(table[TARGET_COL].sum())} actives, rxcurate.json "
                        f"declares {info['actives']}")
    if ds_doc.get("n_rows") != len(table):
        problems.append(f"{POLARIS_DIR}/{info['dataset']}: n_rows {ds_doc.get('n_rows')} but the table has "
                        f"{len(table)} rows")
    ds_sum = dataset_md5(table)
    if ds_doc.get("md5sum") != ds_sum:
        problems.append(f"{POLARIS_DIR}/{info['dataset']}: md5sum {ds_doc.get('md5sum')} does not match the table's "
                        f"checksum {ds_sum} (polaris-lib would refuse it)")
    split = bench_doc.get("split") or [[], {}]
    try:
        want_bench = benchmark_md5(ds_sum, list(bench_doc["target_cols"]), list(bench_doc["input_cols"]),
                                   list(bench_doc["metrics"]), list(split[0]), dict(split[1]))
    except (KeyError, TypeError, IndexError) as exc:
        want_bench = f"unreadable ({type(exc).__name__})"
    if bench_doc.get("md5sum") != want_bench:
        problems.append(f"{POLARIS_DIR}/{BENCHMARK_JSON}: md5sum {bench_doc.get('md5sum')} does not match the "
                        f"benchmark's checksum {want_bench} (polaris-lib would refuse it)")
    if sorted(split[1].get("test", [])) != list(range(len(table))) or split[0]:
        problems.append(f"{POLARIS_DIR}/{BENCHMARK_JSON}: the split must put every row in the test set (zero-shot)")
    pred = info.get("predictions")
    if pred:
        try:
            y_prob = pd.read_parquet(d / pred["file"])["y_prob"].to_numpy(dtype=float)
        except Exception as exc:  # noqa: BLE001 - any unreadable artifact is a finding
            return [*problems, f"{POLARIS_DIR}/{PREDICTIONS}: unreadable ({type(exc).__name__})"]
        if len(y_prob) != len(table):
            problems.append(f"{POLARIS_DIR}/{PREDICTIONS}: {len(y_prob)} scores for {len(table)} pairs")
        else:
            got = grouped_scores(table, y_prob)
            for k, v in pred.get("scores", {}).items():
                if k not in got or abs(got[k] - float(v)) > 1e-12:
                    problems.append(f"{POLARIS_DIR}/{INFO_JSON}: predictions score {k} = {v} but the predictions "
                                    f"give {got.get(k)}")
    if problems or not with_library:
        return problems
    try:
        bench = load_benchmark(d)
        with _quiet():
            train, test = bench.get_train_test_split()
        if len(test) != info["split"]["test"] or len(train) != info["split"]["train"]:
            problems.append(f"{POLARIS_DIR}/{BENCHMARK_JSON}: split sizes train {len(train)}/test {len(test)} differ "
                            f"from rxcurate.json")
    except Exception as exc:  # noqa: BLE001 - polaris-lib raises many types
        problems.append(f"{POLARIS_DIR}/{BENCHMARK_JSON}: polaris-lib cannot load it ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:200]})")
    return problems


def polaris_installed() -> bool:
    try:
        import polaris  # heavy optional dependency (rxcurate[polaris]): is it there?
    except ImportError:
        return False
    return hasattr(polaris, "load_benchmark")  # not a stray folder named polaris/ on sys.path


# --------------------------------------------------------------------------------------------------- upload
def credentials() -> str | None:
    """Which Polaris credentials exist (never their value): env username/password or a cached login token."""
    if os.environ.get("POLARIS_USERNAME") and os.environ.get("POLARIS_PASSWORD"):
        return "POLARIS_USERNAME/POLARIS_PASSWORD"
    try:
        from polaris.utils.constants import DEFAULT_CACHE_DIR  # heavy optional dependency (rxcurate[polaris])
    except Exception:  # noqa: BLE001 - polaris-lib absent or broken: no credentials usable
        return None
    for name in ("hub_auth_token.json", "external_auth_token.json"):
        if (Path(DEFAULT_CACHE_DIR) / name).is_file():
            return f"polaris login token ({name})"
    return None


NOT_UPLOADABLE = ("the Polaris dataset and benchmark themselves are not uploaded: the Polaris Hub stopped accepting "
                  "them in May 2025 (polaris-lib raises PolarisDeprecatedError); they ship in the dataset "
                  "repository's polaris/ folder")


@dataclass
class PolarisPublishResult:
    target: str
    status: str  # "uploaded"
    folder: str
    message: str
    info: dict[str, Any]
    scores: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "status": self.status, "folder": self.folder, "message": self.message,
                "rows": self.info.get("rows"), "main_metric": self.info.get("main_metric"), "scores": self.scores}


def publish_polaris(folder: str | os.PathLike[str], owner: str, name: str, *,
                    client: Any = None) -> PolarisPublishResult:
    """Upload the release's predictions as results of the Polaris benchmark ``owner/name`` (see the module doc);
    raises PublishError (nothing uploaded) without polaris-lib, without credentials or on any failure."""
    folder = Path(folder)
    target = f"polaris://{owner}/{name}"
    problems = check_artifacts(folder)
    if problems:
        raise PublishError(f"{target}: nothing uploaded: the Polaris artifacts are invalid: {problems[0]}")
    where = folder / POLARIS_DIR
    info = read_json(where / INFO_JSON)
    pred = info.get("predictions")
    if not pred:
        raise PublishError(f"{target}: nothing uploaded: {where} has no {PREDICTIONS} (the release needs an "
                           f"embedding set evaluated on {TASK}); {NOT_UPLOADABLE}")
    what = f"results of {pred.get('embeddings', 'the release embeddings')} on {owner}/{name}"
    if not polaris_installed():
        raise PublishError(f"{target}: not uploaded ({what}): uploading results needs polaris-lib, which cannot be "
                           f"installed beside rxcurate's pyarrow >= 21: run `make install-polaris`, then "
                           f"`.venv-polaris/bin/rxcurate publish {folder} --to {target}`; {NOT_UPLOADABLE}")
    creds = credentials() if client is None else "client given"
    if creds is None:
        raise PublishError(f"{target}: not uploaded ({what}): no Polaris credentials: set POLARIS_USERNAME and "
                           f"POLARIS_PASSWORD or run `polaris login`; {NOT_UPLOADABLE}")
    bench = load_benchmark(where)
    y_prob = pd.read_parquet(where / pred["file"])["y_prob"].to_numpy(dtype=float)
    with _quiet():
        results = bench.evaluate(y_prob=y_prob)
    scores = {str(r["Metric"]): float(r["Score"]) for _, r in results.results.iterrows()}
    for k, v in pred["scores"].items():
        if k not in scores or abs(scores[k] - float(v)) > 1e-9:
            raise PublishError(f"{target}: not uploaded: polaris-lib scores the predictions {k} = {scores.get(k)} "
                               f"but rxcurate recorded {v}: the artifacts and the client disagree")
    results.benchmark_artifact_id = f"{owner}/{name}"
    emb_set = "-".join(Path(str(pred.get("embeddings", "embeddings/release/x"))).parts[1:-1]) or "embeddings"
    results.name = slug(f"{info['location']['repo_id'].split('/')[-1]}-{info['location']['tag']}-{emb_set}")
    results.description = (f"{pred.get('rule', '')}: predictions shipped in {info['location']['repo_id']} "
                           f"{info['location']['tag']} ({POLARIS_DIR}/{PREDICTIONS})")
    try:
        if client is None:
            from polaris.hub.client import PolarisHubClient  # heavy optional dependency (rxcurate[polaris])

            client = PolarisHubClient()
        with _quiet():
            client.upload_results(results, owner=os.environ.get("POLARIS_OWNER") or None)
    except Exception as exc:  # noqa: BLE001 - network/auth errors: nothing half-done on our side
        raise PublishError(f"{target}: results upload failed ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:200]}); nothing else was changed") from None
    return PolarisPublishResult(target, "uploaded", str(where), f"uploaded {what} ({MAIN_METRIC} "
                                f"{scores.get(MAIN_METRIC, float('nan')):.4g}); {NOT_UPLOADABLE}", info, scores)
