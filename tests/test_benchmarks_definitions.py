"""Benchmark definitions: shipped files validate, checksums are canonical, bad definitions name the field."""

from __future__ import annotations

import copy
import json

import pytest

from rxcurate.benchmarks import definition_checksum, list_definitions, load_definition
from rxcurate.benchmarks.definitions import DEFINITIONS_DIR
from rxcurate.errors import BenchmarkError
from rxcurate.schemas import schema_path

SHIPPED = ["compound-gene-activity", "gene-gene-recall", "perturbation-signal", "rxrx1-batch-generalisation"]


def test_shipped_definitions_are_listed_and_valid():
    assert list_definitions() == SHIPPED
    for bid in SHIPPED:
        d = load_definition(bid)
        assert d["id"] == bid
        assert (DEFINITIONS_DIR / f"{bid}.json").is_file()
    assert schema_path("benchmark").is_file() and schema_path("results").is_file()


def test_rxrx3_definitions_follow_the_published_notebook():
    # RxRx3-core benchmarks align per experiment on EMPTY_control wells (EFAAR_benchmarking notebook)
    for bid in ("gene-gene-recall", "compound-gene-activity", "perturbation-signal"):
        d = load_definition(bid)
        assert d["columns"]["batch"] == "experiment_name"
        assert d["controls"] == {"column": "treatment", "values": ["EMPTY_control"]}
        assert d["columns"]["perturbation"] == ["gene", "treatment"]
    cga = load_definition("compound-gene-activity")
    assert cga["seeds"] == {"start": 0, "count": 100}
    assert cga["parameters"]["active_nM"] == 1000 and cga["parameters"]["excluded_nM"] == 10000
    ggr = load_definition("gene-gene-recall")
    assert ggr["parameters"]["recall_thresholds"] == [[0.05, 0.95], [0.1, 0.9]]
    r1 = load_definition("rxrx1-batch-generalisation")
    assert r1["columns"]["batch"] == "experiment" and r1["controls"]["values"] == ["negative_control"]


def test_checksum_is_canonical(tmp_path):
    d = load_definition("gene-gene-recall")
    reordered = json.loads(json.dumps(d, sort_keys=True))
    reordered = dict(reversed(list(reordered.items())))
    assert definition_checksum(reordered) == definition_checksum(d)
    p = tmp_path / "x.json"
    p.write_text(json.dumps(reordered, indent=7))
    assert definition_checksum(load_definition(p)) == definition_checksum(d)
    changed = copy.deepcopy(d)
    changed["parameters"]["recall_thresholds"] = [[0.05, 0.95]]
    assert definition_checksum(changed) != definition_checksum(d)
    assert len(definition_checksum(d)) == 64


def test_unknown_id_lists_the_shipped_ones():
    with pytest.raises(BenchmarkError, match="gene-gene-recall") as exc:
        load_definition("gene-recall")
    assert "unknown benchmark" in str(exc.value)


def _mutated(bid, path, value):
    d = load_definition(bid)
    node = d
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return d


@pytest.mark.parametrize(
    ("bid", "path", "value", "needle"),
    [
        ("gene-gene-recall", ["postprocess", "method"], "combat", "postprocess.method"),
        ("gene-gene-recall", ["parameters", "recall_thresholds"], [[0.05]], "parameters.recall_thresholds[0]"),
        ("gene-gene-recall", ["parameters", "recall_thresholds"], [[0.95, 0.05]], "lower 0.95 must be below"),
        ("gene-gene-recall", ["seeds"], KeyError, "seeds: required field is missing"),
        ("compound-gene-activity", ["parameters", "active_nM"], "1000", "parameters.active_nM"),
        ("compound-gene-activity", ["parameters", "excluded_nM"], 10, "excluded_nM"),
        ("perturbation-signal", ["parameters", "null_fraction"], 1.5, "parameters.null_fraction"),
        ("gene-gene-recall", ["version"], "1.0", "version"),
        ("rxrx1-batch-generalisation", ["columns", "split"], None, "columns.split is required"),
    ],
)
def test_invalid_definitions_name_the_field(bid, path, value, needle):
    d = _mutated(bid, path, value)
    with pytest.raises(BenchmarkError) as exc:
        load_definition(d)
    assert needle in str(exc.value)


def test_unknown_key_is_rejected(tmp_path):
    d = load_definition("gene-gene-recall")
    d["extra"] = 1
    p = tmp_path / "d.json"
    p.write_text(json.dumps(d))
    with pytest.raises(BenchmarkError, match="unknown key 'extra'"):
        load_definition(p)


def test_broken_json_file(tmp_path):
    p = tmp_path / "d.json"
    p.write_text("{")
    with pytest.raises(BenchmarkError, match="not valid JSON"):
        load_definition(p)
