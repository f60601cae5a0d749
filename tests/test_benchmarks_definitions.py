"""Benchmark definitions: shipped files validate, checksums are canonical, bad definitions name the field."""

from __future__ import annotations

import copy
import json

import pytest

from rxcurate.benchmarks import definition_checksum, list_definitions, load_definition
from rxcurate.benchmarks.definitions import DEFINITIONS_DIR
from rxcurate.errors import BenchmarkError
from rxcurate.schemas import schema_path

SHIPPED = ["compound-gene-activity", "compound-gene-activity-tvn", "gene-gene-recall", "gene-gene-recall-tvn",
           "perturbation-signal", "rxrx1-batch-generalisation", "rxrx1-wilds"]


def test_shipped_definitions_are_listed_and_valid():
    assert list_definitions() == SHIPPED
    for bid in SHIPPED:
        d = load_definition(bid)
        assert d["id"] == bid
        assert (DEFINITIONS_DIR / f"{bid}.json").is_file()
    assert schema_path("benchmark").is_file() and schema_path("results").is_file()


def test_rxrx3_definitions_follow_the_published_notebook():
    # RxRx3-core benchmarks align per experiment on EMPTY_control wells (EFAAR_benchmarking notebook)
    for bid in ("gene-gene-recall", "compound-gene-activity", "perturbation-signal", "gene-gene-recall-tvn",
                "compound-gene-activity-tvn"):
        d = load_definition(bid)
        assert d["columns"]["batch"] == "experiment_name"
        assert d["controls"] == {"column": "treatment", "values": ["EMPTY_control"]}
        assert d["columns"]["perturbation"] == ["gene", "treatment"]
    cga = load_definition("compound-gene-activity")
    assert cga["seeds"] == {"start": 0, "count": 100}
    assert cga["parameters"]["active_nM"] == 1000 and cga["parameters"]["excluded_nM"] == 10000
    assert cga["parameters"]["quantiles"] == [0.5, 0.75, 0.95]
    assert cga["concentrations"] == [0.0025, 0.01, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0]
    assert cga["parameters"]["empty_concentration"] == "zero" and cga["parameters"]["baseline"] == "per_compound"
    ggr = load_definition("gene-gene-recall")
    # the notebook: the whole map (genes, compound x concentration rows, CRISPR controls) is the null, (0.05, 0.95)
    assert ggr["parameters"] == {"recall_thresholds": [[0.05, 0.95]], "null": "all"}
    assert ggr["exclude_from_map"] == ["EMPTY_control"]
    for bid in ("gene-gene-recall", "compound-gene-activity"):
        d = load_definition(bid)
        assert d["postprocess"] == {"method": "pca_centerscale", "aggregate": "mean"}
        assert d["protocol"]["comparable"] is True and d["protocol"]["name"].startswith("RxRx3-core notebook")
    # today's variants stay, named apart and marked not comparable
    tvn = load_definition("gene-gene-recall-tvn")
    assert tvn["parameters"] == {"recall_thresholds": [[0.05, 0.95], [0.1, 0.9]], "null": "genes"}
    assert tvn["postprocess"] == {"method": "tvn", "center": "batch", "aggregate": "mean"}
    assert tvn["protocol"]["comparable"] is False and tvn["protocol"]["differences"]
    assert load_definition("compound-gene-activity-tvn")["protocol"]["comparable"] is False
    for bid in SHIPPED:
        assert "protocol" in load_definition(bid), bid
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
    changed["parameters"]["recall_thresholds"] = [[0.1, 0.9]]
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
