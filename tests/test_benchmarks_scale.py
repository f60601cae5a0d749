"""Benchmarks are invariant to one positive factor on all features; so are their numbers at extreme magnitudes
(issue 16: embeddings scaled by 1e-30 scored lower without warning; 1e300 and 1e-310 were called all-zero)."""

from __future__ import annotations

import numpy as np
import pytest

from rxcurate.benchmarks import evaluate, load_definition
from rxcurate.benchmarks.metrics import unit_rows
from rxcurate.benchmarks.readers import exact_rescale
from rxcurate.benchmarks.synthetic import synthetic_rxrx3, write_synthetic


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    data = synthetic_rxrx3(n_genes=48, n_compounds=6)
    paths = write_synthetic(data, tmp_path_factory.mktemp("scale"))
    return data, paths


def _scaled(emb, factor):
    out = emb.copy()
    cols = [c for c in out.columns if c.startswith("feature_")]
    out[cols] = out[cols].to_numpy(dtype=np.float64) * factor
    return out


@pytest.mark.parametrize("factor", [1e-310, 1e-30, 1e-20, 1e-12, 1e12, 1e300])
@pytest.mark.parametrize("bid", ["gene-gene-recall", "gene-gene-recall-tvn", "perturbation-signal"])
def test_scores_do_not_depend_on_the_features_scale(screen, bid, factor):
    data, paths = screen
    truth = {"truth": paths["relationships"]} if bid.startswith("gene-gene") else None
    defn = load_definition(bid)
    ref = evaluate(defn, data["embeddings"], data["metadata"], truth)["summary"]
    got = evaluate(defn, _scaled(data["embeddings"], factor), data["metadata"], truth)["summary"]
    assert set(got) == set(ref)
    for k, v in ref.items():
        if isinstance(v, float):
            assert got[k] == pytest.approx(v, rel=1e-6, abs=1e-9), (k, factor)


def test_exact_rescale_leaves_ordinary_features_bit_identical():
    x = np.random.default_rng(0).normal(size=(20, 16))
    assert exact_rescale(x) is x
    for factor in (1e-310, 1e-30, 1e300):
        y = exact_rescale(x * factor)
        assert 0.5 <= np.abs(y).max() < 1.0


def test_unit_rows_handles_rows_whose_squares_underflow_or_overflow():
    x = np.random.default_rng(1).normal(size=(4, 8))
    odd = x.copy()
    odd[1] *= 1e-200
    odd[2] *= 1e200
    np.testing.assert_allclose(unit_rows(odd, "t"), unit_rows(x, "t"), rtol=1e-12, atol=1e-15)
    zero = x.copy()
    zero[3] = 0.0
    with pytest.raises(Exception, match="all-zero"):
        unit_rows(zero, "t", np.array(["a", "b", "c", "d"], dtype=object))
