"""Polaris artifacts of a release (polaris-lib 0.13): the compound-gene activity task as a DatasetV1 of
``(treatment, gene_symbol, active)`` pairs and a SingleTaskBenchmarkSpecification, saved in ``<release>/polaris/``.

Pairs follow the release's ``compound-gene-activity`` benchmark definition and its published truth table: for each
compound of the release, actives are genes of the release with ``nM_value <= active_nM`` (the smallest value of the
pair), genes with ``active_nM < nM_value <= excluded_nM`` are left out, and ``max(negatives_per_active x actives,
min_negatives)`` negatives are drawn with the definition's first seed (``numpy.random.default_rng``, compounds and
candidate genes in sorted order) from the other genes of the truth table present in the release; a compound
without actives or without enough candidates is skipped. This is one seed of the benchmark's sampling, frozen.

The task is zero-shot (no training on labels): the declared split puts every pair in the test set and the train set
is empty. Metrics: per-compound average precision averaged over compounds (``pr_auc_per_compound``, polaris-lib's
``GroupedMetricConfig(group_by="treatment", aggregation="mean")``; the main metric, matching the benchmark's
per-compound AP), plus pooled ``pr_auc`` and ``roc_auc``. Predictions are scores (``y_prob``), e.g.
``|cosine(compound, gene knockout)|``.

polaris-lib writes absolute paths into its JSON files; we store them relative to ``polaris/`` so the artifacts are
portable and their bytes do not depend on where the release was built. :func:`load_benchmark` loads them from any
working directory (plain polaris-lib loads them with ``polaris/`` as the working directory).

Uploading: polaris-lib 0.13's ``upload_dataset``/``upload_benchmark`` raise ``PolarisDeprecatedError`` (the Polaris
Hub stopped accepting them in May 2025), so ``publish --to polaris://...`` builds and validates the artifacts, and
reports that they cannot be uploaded (with credentials, it asks the client and reports its answer).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import typing
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rxcurate.benchmarks.readers import read_compound_gene
from rxcurate.errors import PublishError
from rxcurate.io import atomic_write_json, current_umask, read_json, sha256_file
from rxcurate.layout import BENCHMARKS_DIR, POLARIS_DIR, POLARIS_INFO, POLARIS_TABLE, release_files
from rxcurate.layout import POLARIS_BENCHMARK as BENCHMARK_JSON

TABLE = POLARIS_TABLE
INFO_JSON = POLARIS_INFO
TASK = "compound-gene-activity"
MAIN_METRIC = "pr_auc_per_compound"
INPUT_COLS = ["treatment", "gene_symbol"]
TARGET_COL = "active"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence polaris-lib's deprecation warnings and INFO logs (checksums, empty train set)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import polaris  # noqa: F401 - configures its logger on import; lower it after

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


# --------------------------------------------------------------------------------------------------- build
def _canonical_order(obj: Any, key: str = "") -> Any:
    """polaris-lib serialises sets (columns, metrics) in hash-seed order; sort them so artifacts are byte-stable."""
    if isinstance(obj, dict):
        return {k: _canonical_order(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        items = [_canonical_order(v) for v in obj]
        if items and all(isinstance(v, str) for v in items):
            return sorted(items)
        if key == "metrics":
            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
        return items
    return obj


def _relativise(dest: Path, dataset_json: str) -> None:
    """Replace the absolute paths polaris-lib wrote with names relative to ``dest``."""
    bench = dest / BENCHMARK_JSON
    doc = _canonical_order(json.loads(bench.read_text(encoding="utf-8")))
    doc["dataset"] = dataset_json
    bench.write_text(json.dumps(doc, sort_keys=True, indent=1) + "\n", encoding="utf-8")
    ds = dest / dataset_json
    doc = json.loads(ds.read_text(encoding="utf-8"))
    doc["table"] = TABLE
    ds.write_text(json.dumps(doc, sort_keys=True, indent=1) + "\n", encoding="utf-8")


def build_artifacts(dest: str | os.PathLike[str], pairs: pd.DataFrame, *, name: str, description: str,
                    license: str | None, provenance: dict[str, Any]) -> dict[str, Any]:
    """Write ``benchmark.json``, ``<dataset>.json``, ``table.parquet`` and ``rxcurate.json`` into ``dest``
    (replaced atomically as a folder). Returns the info document."""
    if pairs.empty or pairs["active"].nunique() < 2:
        raise PublishError(f"no compound-gene pairs with both actives and negatives for the Polaris task of {name}: "
                           f"the release needs compounds with known targets (nM_value <= active_nM) among its genes")
    dest = Path(dest).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds_name = slug(name, "-cga")
    bench_name = slug(name, "-cga-bench")
    with _quiet():
        from polaris.benchmark import SingleTaskBenchmarkSpecification  # heavy optional dependency (rxcurate[polaris])
        from polaris.dataset import ColumnAnnotation, DatasetV1  # heavy optional dependency (rxcurate[polaris])
        from polaris.evaluate import Metric  # heavy optional dependency (rxcurate[polaris])
        from polaris.evaluate._metric import GroupedMetricConfig  # heavy optional dependency (rxcurate[polaris])

        table = pairs[["treatment", "gene_symbol", "active"]].reset_index(drop=True)
        annotations = {
            "treatment": ColumnAnnotation(description="Compound name as in the release metadata (treatment)."),
            "gene_symbol": ColumnAnnotation(description="Gene knocked out in the release (metadata gene)."),
            "active": ColumnAnnotation(description="1: nM_value <= active_nM; 0: sampled negative."),
        }
        dataset = DatasetV1(table=table, name=ds_name, description=description, annotations=annotations,
                            license=_polaris_license(license), tags=["rxcurate", "cell-painting", TASK])
        grouped = Metric(label="pr_auc", config=GroupedMetricConfig(group_by="treatment", aggregation="mean"),
                         name=MAIN_METRIC)
        bench = SingleTaskBenchmarkSpecification(
            name=bench_name, dataset=dataset, target_cols=[TARGET_COL], input_cols=INPUT_COLS,
            split=([], list(range(len(table)))), metrics=[grouped, "pr_auc", "roc_auc"], main_metric=grouped,
            target_types={TARGET_COL: "classification"}, description=description, tags=["rxcurate", TASK])
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; the published folder honours the umask
        try:
            bench.to_json(str(tmp))
            dataset_json = f"{ds_name}.json"
            _relativise(tmp, dataset_json)
            info = {
                "task": TASK,
                "benchmark": BENCHMARK_JSON,
                "dataset": dataset_json,
                "table": TABLE,
                "rows": int(len(table)),
                "actives": int(table["active"].sum()),
                "compounds": int(table["treatment"].nunique()),
                "genes": int(table["gene_symbol"].nunique()),
                "split": {"train": 0, "test": int(len(table)),
                          "rule": "zero-shot: every pair is in the test set, the train set is empty"},
                "metrics": [MAIN_METRIC, "pr_auc", "roc_auc"],
                "main_metric": MAIN_METRIC,
                "predictions": "y_prob: one score per row of the test set, in table order (e.g. |cosine|)",
                "provenance": provenance,
                "load": "rxcurate.publish.polaris.load_benchmark('polaris') or, inside polaris/, "
                        "polaris.load_benchmark('benchmark.json')",
            }
            atomic_write_json(tmp / INFO_JSON, info)
            if dest.exists():
                shutil.rmtree(dest)
            os.rename(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return info


def _polaris_license(license: str | None) -> str | None:
    """polaris-lib accepts a few SPDX ids (``SupportedLicenseType``, e.g. CC-BY-4.0); others are left out."""
    if not license:
        return None
    from polaris.utils.types import SupportedLicenseType  # heavy optional dependency (rxcurate[polaris])

    candidate = license.upper()
    return candidate if candidate in typing.get_args(SupportedLicenseType) else None


@dataclass
class TaskInputs:
    definition: dict[str, Any]
    truth_path: Path
    truth_sha256: str
    compounds: list[str]
    genes: list[str]


def task_inputs(folder: Path, definition: dict[str, Any], results: dict[str, dict[str, Any]],
                metadata: pd.DataFrame) -> TaskInputs:
    """The truth file (found in the release by its sha256 from a result's provenance), compounds and genes."""
    truth_sha = None
    truth_name = None
    for doc in results.values():
        for spec in (doc.get("provenance", {}).get("inputs", {}).get("truth", {}) or {}).values():
            truth_sha, truth_name = spec.get("sha256"), spec.get("file")
            break
        if truth_sha:
            break
    if not truth_sha:
        raise PublishError(f"{TASK} results name no truth file: rerun rxcurate evaluate with --truth")
    path = find_by_sha256(folder, truth_sha, prefix=f"{BENCHMARKS_DIR}/")
    if path is None:
        raise PublishError(f"the {TASK} truth file {truth_name} (sha256 {truth_sha[:12]}...) is not in {folder}/"
                        f"benchmarks/: publish it with the release (rxcurate card MANIFEST --truth {truth_name})")
    cols = definition["columns"]
    ptypes = definition.get("perturbation_types", {"gene": ["CRISPR"], "compound": ["COMPOUND"]})
    excluded = set(definition.get("exclude_from_map", [])) | set(definition["controls"]["values"])
    ptype_col = cols.get("perturbation_type") or "perturbation_type"
    comp = metadata[metadata[ptype_col].isin(ptypes["compound"])]
    gene = metadata[metadata[ptype_col].isin(ptypes["gene"])]
    compounds = sorted(set(comp["treatment"].astype(str)) - excluded)
    genes = sorted(set(gene["gene"].astype(str)) - excluded - {""})
    return TaskInputs(definition, path, truth_sha, compounds, genes)


def find_by_sha256(folder: Path, sha256: str, prefix: str = "") -> Path | None:
    for rel in release_files(folder):
        if rel.startswith(prefix) and sha256_file(folder / rel) == sha256:
            return folder / rel
    return None


def build_for_release(folder: str | os.PathLike[str], *, name: str, description: str, license: str | None,
                      definition: dict[str, Any], results: dict[str, dict[str, Any]],
                      metadata: pd.DataFrame) -> dict[str, Any]:
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
    return build_artifacts(folder / POLARIS_DIR, pairs, name=name, description=description, license=license,
                           provenance=provenance)


# --------------------------------------------------------------------------------------------------- load / check
def load_benchmark(path: str | os.PathLike[str]):
    """Load the benchmark of a ``polaris/`` folder (or its benchmark.json) with polaris-lib, from any cwd."""
    path = Path(path).resolve()
    folder = path.parent if path.is_file() else path
    bench = folder / BENCHMARK_JSON
    if not bench.is_file():
        raise PublishError(f"{bench} is missing: build the Polaris artifacts with rxcurate card "
                           f"(needs compound-gene-activity results)")
    doc = json.loads(bench.read_text(encoding="utf-8"))
    ds_name = Path(doc["dataset"]).name
    ds_doc = json.loads((folder / ds_name).read_text(encoding="utf-8"))
    with _quiet(), tempfile.TemporaryDirectory(prefix="rxcurate-polaris-") as tmp:
        ds_doc["table"] = str(folder / Path(ds_doc["table"]).name)
        (Path(tmp) / ds_name).write_text(json.dumps(ds_doc), encoding="utf-8")
        doc["dataset"] = str(Path(tmp) / ds_name)
        (Path(tmp) / BENCHMARK_JSON).write_text(json.dumps(doc), encoding="utf-8")
        import polaris as po  # heavy optional dependency (rxcurate[polaris])

        bench_obj = po.load_benchmark(str(Path(tmp) / BENCHMARK_JSON))
        bench_obj.dataset.table  # noqa: B018 - load the table now, while the temp JSON exists
        return bench_obj


def evaluate(benchmark, y_prob) -> dict[str, float]:
    """Scores of predictions on the test set: ``{metric: value}``."""
    with _quiet():
        res = benchmark.evaluate(y_prob=np.asarray(y_prob, dtype=float))
    return {str(r["Metric"]): float(r["Score"]) for _, r in res.results.iterrows()}


def check_artifacts(folder: str | os.PathLike[str], *, with_library: bool = True) -> list[str]:
    """Problems of ``<folder>/polaris/`` (empty when fine): files present, table consistent with rxcurate.json,
    relative paths; with ``with_library`` also loads it through polaris-lib and checks the split and checksum."""
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
    for key, doc, field in (("benchmark", bench_doc, "dataset"), ("dataset", ds_doc, "table")):
        if os.path.isabs(str(doc.get(field, ""))):
            problems.append(f"{POLARIS_DIR}/{info[key]}: {field} is an absolute path; it must be relative")
    if list(table.columns) != [*INPUT_COLS, TARGET_COL] or len(table) != info["rows"]:
        problems.append(f"{POLARIS_DIR}/{info['table']}: {len(table)} rows with columns {list(table.columns)}, "
                        f"rxcurate.json declares {info['rows']} rows of {[*INPUT_COLS, TARGET_COL]}")
    elif int(table[TARGET_COL].sum()) != info["actives"]:
        problems.append(f"{POLARIS_DIR}/{info['table']}: {int(table[TARGET_COL].sum())} actives, rxcurate.json "
                        f"declares {info['actives']}")
    if ds_doc.get("n_rows") != len(table):
        problems.append(f"{POLARIS_DIR}/{info['dataset']}: n_rows {ds_doc.get('n_rows')} but the table has "
                        f"{len(table)} rows")
    if problems or not with_library:
        return problems
    try:
        bench = load_benchmark(d)
        with _quiet():
            train, test = bench.get_train_test_split()
            bench.dataset.verify_checksum(md5sum=ds_doc.get("md5sum"))  # raises PolarisChecksumError
        if len(test) != info["split"]["test"] or len(train) != info["split"]["train"]:
            problems.append(f"{POLARIS_DIR}/{BENCHMARK_JSON}: split sizes train {len(train)}/test {len(test)} differ "
                            f"from rxcurate.json")
    except Exception as exc:  # noqa: BLE001 - polaris-lib raises many types
        problems.append(f"{POLARIS_DIR}/{BENCHMARK_JSON}: polaris-lib cannot load it ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:200]})")
    return problems


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


@dataclass
class PolarisPublishResult:
    target: str
    status: str  # "built" (no credentials) | "upload-unsupported" | "uploaded"
    folder: str
    message: str
    info: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "status": self.status, "folder": self.folder, "message": self.message,
                "rows": self.info.get("rows"), "main_metric": self.info.get("main_metric")}


def publish_polaris(folder: str | os.PathLike[str], owner: str, name: str, *,
                    client: Any = None) -> PolarisPublishResult:
    """Validate ``<folder>/polaris/`` and upload it when credentials exist (see the module doc on deprecation)."""
    folder = Path(folder)
    target = f"polaris://{owner}/{name}"
    problems = check_artifacts(folder)
    if problems:
        raise PublishError(f"{target}: the Polaris artifacts are invalid: {problems[0]}")
    info = read_json(folder / POLARIS_DIR / INFO_JSON)
    where = folder / POLARIS_DIR
    creds = credentials() if client is None else "client given"
    if creds is None:
        return PolarisPublishResult(target, "built", str(where), (
            f"Polaris artifacts validated at {where}; nothing uploaded: no Polaris credentials (set POLARIS_USERNAME "
            f"and POLARIS_PASSWORD or run `polaris login`). Note: polaris-lib 0.13 can no longer upload datasets "
            f"or benchmarks (the Polaris Hub removed it); share the artifacts with the dataset repository instead."),
            info)
    with _quiet():
        from polaris.utils.errors import PolarisDeprecatedError  # heavy optional dependency (rxcurate[polaris])

        bench = load_benchmark(where)
        try:
            if client is None:
                from polaris.hub.client import PolarisHubClient  # heavy optional dependency (rxcurate[polaris])

                client = PolarisHubClient()
            client.upload_dataset(bench.dataset, owner=owner)
            client.upload_benchmark(bench, owner=owner)
        except PolarisDeprecatedError as exc:
            return PolarisPublishResult(target, "upload-unsupported", str(where), (
                f"Polaris artifacts validated at {where}; not uploaded: the Polaris Hub no longer accepts dataset "
                f"and benchmark uploads ({' '.join(str(exc).split())[:160]}). Results on this benchmark can still be "
                f"uploaded with polaris-lib's upload_results; the artifacts ship with the dataset repository."), info)
        except Exception as exc:  # noqa: BLE001 - network/auth errors: nothing half-done on our side
            raise PublishError(f"{target}: Polaris upload failed ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:200]}); the local artifacts at {where} are "
                               f"intact") from None
    return PolarisPublishResult(target, "uploaded", str(where), f"uploaded the Polaris dataset and benchmark to "
                                f"{target}", info)
