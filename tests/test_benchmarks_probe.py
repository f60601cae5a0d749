"""rxrx1-batch-generalisation: the linear probe on held-out experiments, per-site metadata."""

from __future__ import annotations

import pytest

from rxcurate.benchmarks import evaluate, load_definition
from rxcurate.benchmarks.synthetic import synthetic_rxrx1
from rxcurate.errors import BenchmarkError


@pytest.fixture(scope="module")
def rxrx1():
    return synthetic_rxrx1()


def test_batch_correction_generalises_to_held_out_experiments(rxrx1):
    res = evaluate("rxrx1-batch-generalisation", rxrx1["embeddings"], rxrx1["metadata"])
    m = res["metrics"]
    chance = 1 / m["classes"]
    assert m["classes"] == 30
    assert m["probe_wells"]["train"] == 2 * 3 * 30 and m["probe_wells"]["test"] == 2 * 30  # treatment wells only
    assert m["corrected"]["accuracy"] >= 0.7
    assert m["corrected"]["accuracy"] > m["uncorrected"]["accuracy"] + 0.3
    assert m["uncorrected"]["accuracy"] < 8 * chance
    assert set(m["corrected"]["cell_types"]) == {"HEPG2", "HUVEC"}
    assert res["summary"]["corrected/HEPG2/accuracy"] == m["corrected"]["cell_types"]["HEPG2"]["accuracy"]
    assert res["provenance"]["inputs"]["metadata"]["rows"] == 2 * len(rxrx1["embeddings"])  # two sites per well


def test_sites_of_a_well_must_agree(rxrx1):
    meta = rxrx1["metadata"].copy()
    meta.loc[1, "sirna"] = "s99999"  # second site of the first well names another siRNA
    with pytest.raises(BenchmarkError, match="different 'sirna' values"):
        evaluate("rxrx1-batch-generalisation", rxrx1["embeddings"], meta)


def test_split_must_have_train_and_test(rxrx1):
    defn = load_definition("rxrx1-batch-generalisation")
    defn["parameters"]["test"] = ["validation"]
    with pytest.raises(BenchmarkError, match="training and test wells"):
        evaluate(defn, rxrx1["embeddings"], rxrx1["metadata"])
