"""The RxRx1 batch-generalisation benchmark (kind ``linear-probe``, id ``rxrx1-batch-generalisation``; not the block
probe of :mod:`rxcurate.blockprobe`): a multinomial logistic regression trained on the wells of the
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


# ------------------------------------------------------------------------------------------------ WILDS RxRx1
WILDS_SPLITS = ("id_test", "ood_val", "ood_test")


def wilds_ood_val(experiment: np.ndarray, cell_type: np.ndarray, dataset: np.ndarray, params: dict[str, Any]
                  ) -> np.ndarray:
    """The OOD-validation experiments of the WILDS split, by name: rows whose dataset is ``val`` (WILDS' own
    metadata.csv), else the experiments of ``parameters.wilds.ood_val_experiments`` present in the screen; on a screen
    with none of those names (synthetic), the lowest-named test experiment of each cell type that has at least two
    test experiments (WILDS takes one of each cell type's test experiments, and keeps the others as OOD test)."""
    w = params["wilds"]
    val = dataset == "val"
    if val.any():
        return np.unique(experiment[val])
    named = np.intersect1d(np.unique(experiment), np.asarray(w["ood_val_experiments"], dtype=object))
    if len(named):
        return named
    test = isin(dataset, params["test"])
    out = []
    for ct in np.unique(cell_type[test]):
        exps = np.unique(experiment[test & (cell_type == ct)])
        if len(exps) >= 2:
            out.append(exps[0])
    return np.asarray(out, dtype=object)


def wilds_probe(
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    experiment: np.ndarray,
    cell_type: np.ndarray,
    dataset: np.ndarray,
    site: np.ndarray,
    use: np.ndarray,
    params: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """WILDS RxRx1 with a linear probe on image (site) embeddings: train on site ``train_site`` of the training
    experiments, accuracy on the in-distribution test (site ``id_test_site`` of the training experiments), the
    OOD-validation and the OOD-test experiments (every site)."""
    w = params["wilds"]
    in_train = isin(dataset, [*params["train"], "id_test"])  # WILDS' metadata.csv labels site 2 rows id_test
    val_exps = wilds_ood_val(experiment, cell_type, dataset, params)
    is_val = isin(experiment, val_exps)
    masks = {
        "train": use & in_train & (site == int(w["train_site"])),
        "id_test": use & in_train & (site == int(w["id_test_site"])),
        "ood_val": use & is_val,
        "ood_test": use & isin(dataset, params["test"]) & ~is_val,
    }
    if not masks["train"].any() or not (masks["id_test"].any() or masks["ood_test"].any()):
        raise BenchmarkError(f"rxrx1-wilds needs training images (site {w['train_site']} of experiments with "
                             f"{params['train']}) and test images: found {int(masks['train'].sum())} training, "
                             f"{int(masks['id_test'].sum())} ID-test, {int(masks['ood_test'].sum())} OOD-test")
    classes = np.unique(labels[masks["train"]])
    out: dict[str, Any] = {
        "images": {k: int(v.sum()) for k, v in masks.items()},
        "classes": int(len(classes)),
        "ood_val_experiments": [str(e) for e in val_exps],
    }
    for name in sorted(features):
        x = centerscale(features[name], masks["train"])
        clf = LogisticRegression(C=float(params.get("C", 1.0)), max_iter=int(params.get("max_iter", 300)),
                                 random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x[masks["train"]], labels[masks["train"]])
        entry: dict[str, Any] = {"converged": bool(np.all(clf.n_iter_ < clf.max_iter))}
        for split in WILDS_SPLITS:
            m = masks[split]
            entry[split] = {"accuracy": float((clf.predict(x[m]) == labels[m]).mean()) if m.any() else None,
                            "images": int(m.sum())}
        out[name] = entry
    return out


def wilds_summary(metrics: dict[str, Any]) -> dict[str, float | None]:
    return {f"{name}/{split}/accuracy": metrics[name][split]["accuracy"]
            for name in ("uncorrected", "corrected") if name in metrics for split in WILDS_SPLITS}


def probe_summary(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Summary of either probe (the WILDS one reports per-split accuracies)."""
    if "images" in metrics:
        return wilds_summary(metrics)
    return summary(metrics)
