"""rxrx1-wilds: the WILDS RxRx1 split (train = site 1 of the training experiments, ID test = site 2, OOD validation,
OOD test) and image-level accuracy, beside the paper/Kaggle split of rxrx1-batch-generalisation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rxcurate.benchmarks import evaluate, load_definition
from rxcurate.benchmarks.batch_generalisation import wilds_ood_val
from rxcurate.benchmarks.synthetic import synthetic_rxrx1
from rxcurate.errors import BenchmarkError


def _site_screen(seed=0):
    data = synthetic_rxrx1(n_sirnas=12, experiments_per_cell_type=4, test_experiments_per_cell_type=2, seed=seed)
    meta = data["metadata"]
    wells = data["embeddings"].set_index("well_id")
    rng = np.random.default_rng(seed)
    x = wells.loc[meta["well_id"]].to_numpy() + 0.3 * rng.normal(size=(len(meta), wells.shape[1]))
    emb = pd.DataFrame(x.astype(np.float32), columns=wells.columns)
    emb.insert(0, "site", meta["site"].to_numpy())
    emb.insert(0, "well_id", meta["well_id"].to_numpy())
    return emb, meta, data["embeddings"]


def test_wilds_split_and_image_level_accuracy():
    emb, meta, _ = _site_screen()
    res = evaluate("rxrx1-wilds", emb, meta)
    m = res["metrics"]
    # synthetic names: the lowest-named test experiment of each cell type is OOD validation, the other OOD test
    assert m["ood_val_experiments"] == ["HEPG2-03", "HUVEC-03"]
    train_exps = meta.loc[meta["dataset"] == "train", "experiment"].nunique()
    per_exp = 12 + 8  # siRNAs + negative controls, one image per site
    assert m["images"] == {"train": train_exps * per_exp, "id_test": train_exps * per_exp, "ood_val": 2 * 2 * per_exp,
                           "ood_test": 2 * 2 * per_exp}
    assert m["classes"] == 13  # the siRNAs and the negative control (WILDS: 1,139 classes with the controls)
    for name in ("uncorrected", "corrected"):
        for split in ("id_test", "ood_val", "ood_test"):
            assert 0.0 <= m[name][split]["accuracy"] <= 1.0
    assert m["corrected"]["ood_test"]["accuracy"] > 1 / 13 * 3  # well above chance after per-experiment scaling
    assert set(res["summary"]) == {f"{n}/{s}/accuracy" for n in ("uncorrected", "corrected")
                                   for s in ("id_test", "ood_val", "ood_test")}
    d = load_definition("rxrx1-wilds")
    assert d["protocol"]["comparable"] is False and "WILDS" in d["protocol"]["name"]
    assert "Kaggle" in load_definition("rxrx1-batch-generalisation")["protocol"]["name"]


def test_wilds_val_experiments_by_name_or_metadata():
    params = load_definition("rxrx1-wilds")["parameters"]
    exps = np.array(["HEPG2-07", "HEPG2-08", "HEPG2-09", "U2OS-04", "U2OS-05"], dtype=object)
    cts = np.array(["HEPG2"] * 3 + ["U2OS"] * 2, dtype=object)
    ds = np.array(["train", "test", "test", "test", "test"], dtype=object)
    assert list(wilds_ood_val(exps, cts, ds, params)) == ["HEPG2-08", "U2OS-04"]  # the real names
    ds_wilds = np.array(["train", "val", "test", "test", "test"], dtype=object)
    assert list(wilds_ood_val(exps, cts, ds_wilds, params)) == ["HEPG2-08"]  # WILDS' own dataset = val wins


def test_well_level_embeddings_are_refused():
    _, meta, wells = _site_screen()
    with pytest.raises(BenchmarkError, match="'site'"):
        evaluate("rxrx1-wilds", wells, meta)
