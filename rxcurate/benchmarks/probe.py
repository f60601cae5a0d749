"""linear-probe (rxrx1-batch-generalisation): a multinomial logistic regression trained on the wells of the
training experiments predicts the perturbation of wells in held-out experiments, with and without batch
correction."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from rxcurate.benchmarks.metrics import isin
from rxcurate.benchmarks.postprocess import centerscale
from rxcurate.errors import BenchmarkError


def linear_probe(
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    split: np.ndarray,
    cell_type: np.ndarray | None,
    use: np.ndarray,
    params: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """``features``: name -> [n, d] well features (e.g. uncorrected / corrected); ``labels``: class per well;
    ``split``: split value per well; ``use``: wells the probe classifies (e.g. treatment wells)."""
    train = use & isin(split, params["train"])
    test = use & isin(split, params["test"])
    if not train.any() or not test.any():
        raise BenchmarkError(f"the probe needs training and test wells: found {int(train.sum())} wells with split in "
                             f"{params['train']} and {int(test.sum())} in {params['test']} (check columns.split and "
                             "parameters.train/test, e.g. dataset = train/test)")
    classes = np.unique(labels[train])
    if len(classes) < 2:
        raise BenchmarkError(f"the probe needs at least 2 classes among training wells, found {len(classes)}")
    seen = isin(labels[test], classes)
    out: dict[str, Any] = {
        "probe_wells": {"train": int(train.sum()), "test": int(test.sum()), "test_unseen_label": int((~seen).sum())},
        "classes": int(len(classes)),
    }
    for name in sorted(features):
        x = centerscale(features[name], train)  # standardised on the training wells
        clf = LogisticRegression(C=float(params.get("C", 1.0)), max_iter=int(params.get("max_iter", 300)),
                                 random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x[train], labels[train])
        pred = clf.predict(x[test])
        correct = pred == labels[test]
        entry: dict[str, Any] = {
            "accuracy": float(correct.mean()),
            "converged": bool(np.all(clf.n_iter_ < clf.max_iter)),
        }
        if cell_type is not None:
            ct = cell_type[test]
            entry["cell_types"] = {
                str(c): {"accuracy": float(correct[ct == c].mean()), "wells": int((ct == c).sum())}
                for c in np.unique(ct)
            }
        out[name] = entry
    return out


def summary(metrics: dict[str, Any]) -> dict[str, float | None]:
    flat: dict[str, float | None] = {}
    for name in ("uncorrected", "corrected"):
        if name in metrics:
            flat[f"{name}/accuracy"] = metrics[name]["accuracy"]
            for c, entry in metrics[name].get("cell_types", {}).items():
                flat[f"{name}/{c}/accuracy"] = entry["accuracy"]
    return flat
