"""Benchmark definitions: JSON files shipped in ``rxcurate/data/benchmarks/``, validated by
``schemas/benchmark.schema.json`` plus a few cross-field checks the schema cannot express."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from rxcurate.errors import BenchmarkError
from rxcurate.io import canonical_hash
from rxcurate.schemas import schema_problem

DEFINITIONS_DIR = Path(__file__).resolve().parents[1] / "data" / "benchmarks"


def list_definitions() -> list[str]:
    """Ids of the shipped benchmark definitions, sorted."""
    return sorted(p.stem for p in DEFINITIONS_DIR.glob("*.json"))


def definition_checksum(defn: dict[str, Any]) -> str:
    """sha256 of the definition's canonical JSON (sorted keys, fixed separators): key order and whitespace of the
    file do not matter, any change of content does."""
    return canonical_hash(defn)


def _check_semantics(defn: dict[str, Any], what: str) -> None:
    kind, params = defn["kind"], defn["parameters"]
    cols = defn["columns"]
    if kind == "gene-gene-recall":
        for i, (lo, hi) in enumerate(params["recall_thresholds"]):
            if not lo < hi:
                raise BenchmarkError(f"{what}: parameters.recall_thresholds[{i}]: lower {lo} must be below upper {hi} "
                                     "(e.g. [0.05, 0.95])")
    if kind == "compound-gene-activity":
        if params["excluded_nM"] < params["active_nM"]:
            raise BenchmarkError(f"{what}: parameters.excluded_nM ({params['excluded_nM']}) must be >= active_nM "
                                 f"({params['active_nM']}), e.g. active_nM 1000, excluded_nM 10000")
        if not cols.get("concentration"):
            raise BenchmarkError(f"{what}: columns.concentration is required for compound-gene-activity "
                                 "(e.g. \"concentration\")")
    if kind in ("gene-gene-recall", "compound-gene-activity"):
        if defn["inputs"]["truth"]["format"] == "none":
            raise BenchmarkError(f"{what}: inputs.truth.format must name a truth format for {kind} "
                                 "(relationships or compound_gene)")
    if kind == "linear-probe" and not cols.get("split"):
        raise BenchmarkError(f"{what}: columns.split is required for linear-probe (e.g. \"dataset\")")
    if cols.get("perturbation_type") and "perturbation_types" not in defn:
        raise BenchmarkError(f"{what}: columns.perturbation_type is set, so perturbation_types is required "
                             "(e.g. {\"gene\": [\"CRISPR\"], \"compound\": [\"COMPOUND\"]})")
    truth = defn["inputs"]["truth"]
    if truth.get("max_files") is not None and truth["max_files"] < truth["min_files"]:
        raise BenchmarkError(f"{what}: inputs.truth.max_files must be >= min_files")


def validate_definition(defn: Any, what: str = "benchmark definition") -> dict[str, Any]:
    """Validate a definition dict (schema + cross-field checks); returns it unchanged."""
    problem = schema_problem(defn, "benchmark", what)
    if problem:
        raise BenchmarkError(problem)
    _check_semantics(defn, what)
    return defn


def load_definition(id_or_path: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    """A validated definition: a shipped id (``gene-gene-recall``), a path to a definition JSON, or a dict."""
    if isinstance(id_or_path, dict):
        return validate_definition(copy.deepcopy(id_or_path))
    text = str(id_or_path)
    path = Path(text)
    if text in list_definitions():
        path = DEFINITIONS_DIR / f"{text}.json"
    elif not (path.suffix.lower() == ".json" and path.is_file()):
        known = ", ".join(list_definitions())
        raise BenchmarkError(f"unknown benchmark {text!r}: use a shipped id ({known}) or a path to a definition "
                             "JSON file (e.g. --benchmark benchmarks/definitions/gene-gene-recall.json)")
    try:
        with open(path, encoding="utf-8") as f:
            defn = json.load(f)
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"benchmark definition {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return validate_definition(defn, f"benchmark definition {path.name}")
