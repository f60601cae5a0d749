"""perturbation-signal: metric values, null calibration and sampling helpers."""

from __future__ import annotations

import numpy as np
import pytest

from rxcurate.benchmarks import evaluate, load_definition
from rxcurate.benchmarks.signal import _consistency, perturbation_signal, sample_without_replacement, split_controls
from rxcurate.benchmarks.synthetic import synthetic_rxrx3
from rxcurate.errors import BenchmarkError


def _defn(method="tvn", **params):
    d = load_definition("perturbation-signal")
    d["postprocess"]["method"] = method
    d["parameters"].update({"min_wells_magnitude": 2, "null_samples": 400, **params})
    return d


@pytest.fixture(scope="module")
def null_screen():
    return synthetic_rxrx3(signal=0.0, seed=4)


@pytest.mark.parametrize("method", ["none", "tvn"])
def test_null_is_calibrated_without_biology(null_screen, method):
    res = evaluate(_defn(method), null_screen["embeddings"], null_screen["metadata"])
    for name in ("consistency", "magnitude"):
        share = res["metrics"]["all"][name]["share_significant"]
        assert res["metrics"]["all"][name]["evaluated"] == 240
        assert share <= 0.12, (method, name, share)  # alpha = 0.05 (binomial noise over 240 perturbations)


def test_planted_signal_is_detected_after_tvn():
    data = synthetic_rxrx3(seed=4)
    res = evaluate(_defn(), data["embeddings"], data["metadata"])
    genes = res["metrics"]["genes"]
    assert genes["consistency"]["share_significant"] >= 0.8
    assert genes["magnitude"]["share_significant"] >= 0.8
    assert res["metrics"]["controls"]["null_pool"] == 120  # half of the 40 EMPTY_control wells of 6 experiments
    assert set(res["summary"]) >= {"all/consistency/share_significant", "genes/magnitude/median"}


def test_consistency_and_energy_distance_match_their_definitions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    x[:6] += 3.0  # perturbation 0: 6 shifted wells
    codes = np.full(60, -1)
    codes[:6] = 0
    codes[6:10] = 1
    ctrl = np.zeros(60, dtype=bool)
    ctrl[20:] = True
    pool = np.zeros(60, dtype=bool)
    pool[40:] = True
    fit = ctrl & ~pool
    params = {"alpha": 0.05, "null_samples": 200, "max_controls": 1000, "min_wells_magnitude": 5}
    out = perturbation_signal(x, codes, np.array(["gene", "gene"], dtype=object), np.zeros(60, dtype=np.int64),
                              fit, pool, params, np.random.default_rng(1))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = u[:6] @ u[:6].T
    want = cos[np.tril_indices(6, -1)].mean()
    assert _consistency(u[None, :6])[0] == pytest.approx(want)
    ref = x[20:40]  # all 20 fit controls are the reference (max_controls 1000)

    def dist(a, b):
        return np.linalg.norm(a[:, None] - b[None], axis=2).mean()

    edist = 2 * dist(x[:6], ref) - dist(x[:6], x[:6]) - dist(ref, ref)
    assert out["genes"]["magnitude"]["median"] == pytest.approx(edist)  # only perturbation 0 has >= 5 wells
    assert out["genes"]["magnitude"]["evaluated"] == 1
    assert out["genes"]["consistency"]["evaluated"] == 2
    assert out["genes"]["magnitude"]["share_significant"] == 1.0


def test_sampling_without_replacement():
    rng = np.random.default_rng(0)
    for pool, n in [(1000, 5), (10, 8), (7, 7)]:
        idx = sample_without_replacement(rng, pool, n, 300)
        assert idx.shape == (300, n) and idx.min() >= 0 and idx.max() < pool
        assert all(len(set(r)) == n for r in idx.tolist())
    with pytest.raises(ValueError):
        sample_without_replacement(rng, 3, 4, 1)


def test_split_controls_is_per_batch_and_seeded():
    batch = np.repeat([0, 1, 2], 10)
    ctrl = np.ones(30, dtype=bool)
    ctrl[[0, 1, 2, 3, 4, 5, 6, 7]] = False  # batch 0 keeps 2 controls: nothing to hold out there
    a = split_controls(ctrl, batch, 0.5, np.random.default_rng(3))
    b = split_controls(ctrl, batch, 0.5, np.random.default_rng(3))
    assert (a == b).all() and not (a & ~ctrl).any()
    assert [int(a[batch == k].sum()) for k in range(3)] == [0, 5, 5]


def test_needs_enough_controls():
    data = synthetic_rxrx3(n_genes=8, n_compounds=2, controls_per_experiment=2, gene_experiments=1,
                           compound_experiments=1, dim=4)
    with pytest.raises(BenchmarkError, match="held-out control wells"):
        evaluate(_defn("none"), data["embeddings"], data["metadata"])


def test_map_is_refused():
    from rxcurate.benchmarks import evaluate_map

    with pytest.raises(BenchmarkError, match="needs well-level embeddings"):
        evaluate_map("perturbation-signal", None, None)
