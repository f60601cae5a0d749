"""Batch correction on control wells and aggregation to a perturbation-level map (pure numpy, no I/O).

Semantics follow EFAAR_benchmarking's ``efaar`` module (``centerscale_on_controls``, ``pca_centerscale_on_controls``,
``tvn_on_controls``, ``aggregate``), re-implemented with grouped matrix products instead of per-batch Python work
where it matters. Scalers use the population standard deviation and leave constant features unscaled, like
scikit-learn's ``StandardScaler``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from rxcurate.errors import BenchmarkError

EPS = np.finfo(np.float64).eps


def _codes(batches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, uniques = pd.factorize(pd.Series(batches, dtype=object).astype(str), sort=True)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def _group_matrix(codes: np.ndarray, mask: np.ndarray, n_groups: int) -> sparse.csr_matrix:
    rows = codes[mask]
    cols = np.flatnonzero(mask)
    return sparse.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(n_groups, len(codes)))


def _safe_scale(std: np.ndarray, mean: np.ndarray) -> np.ndarray:
    return np.where(std <= 10 * EPS * np.maximum(1.0, np.abs(mean)), 1.0, std)


def centerscale(x: np.ndarray, fit: np.ndarray, batches: np.ndarray | None = None) -> np.ndarray:
    """Standardise ``x`` with the mean/std of the rows in ``fit`` (bool mask), per batch when ``batches`` is given."""
    if batches is None:
        if not fit.any():
            raise BenchmarkError("no control wells to fit the scaler on: check the definition's controls "
                                 "(e.g. treatment == EMPTY_control)")
        mu = x[fit].mean(axis=0)
        sd = _safe_scale(x[fit].std(axis=0), mu)
        return (x - mu) / sd
    codes, names = _codes(batches)
    g = _group_matrix(codes, fit, len(names))
    counts = np.asarray(g.sum(axis=1)).ravel()
    if (counts == 0).any():
        bad = names[np.flatnonzero(counts == 0)[0]]
        raise BenchmarkError(f"batch {bad!r} has no control wells to fit its scaler on: every batch needs "
                             "negative controls (or set postprocess.fit_on to \"all\")")
    mu = (g @ x) / counts[:, None]
    centred = x - mu[codes]
    var = (g @ (centred * centred)) / counts[:, None]
    sd = _safe_scale(np.sqrt(var), mu)
    return centred / sd[codes]


def pca_on_controls(x: np.ndarray, ctrl: np.ndarray) -> np.ndarray:
    """Project all rows on the principal axes of the control rows (centred on the control mean).

    Components with numerically zero control variance (fewer controls than dimensions) are dropped: their
    direction is arbitrary and a later scaling would blow them up.
    """
    xc = x[ctrl]
    n = len(xc)
    if n < 2:
        raise BenchmarkError(f"PCA on controls needs at least 2 control wells, found {n}")
    mu = xc.mean(axis=0)
    centred = xc - mu
    cov = centred.T @ centred / (n - 1)
    vals, vecs = np.linalg.eigh(cov)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    keep = vals > max(vals[0], 0.0) * x.shape[1] * EPS * 10
    keep[min(n - 1, len(keep)) :] = False
    vecs = vecs[:, keep]
    # deterministic signs: the largest-magnitude loading of every axis is positive
    flip = np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(vecs.shape[1])])
    return (x - mu) @ (vecs * flip)


def pca_centerscale_on_controls(x: np.ndarray, ctrl: np.ndarray, batches: np.ndarray) -> np.ndarray:
    """PCA fitted on control wells of all batches, then per batch a scaler fitted on that batch's controls."""
    return centerscale(pca_on_controls(x, ctrl), ctrl, batches)


def tvn_on_controls(x: np.ndarray, ctrl: np.ndarray, batches: np.ndarray, center: str = "batch") -> np.ndarray:
    """Typical variation normalisation: centre-scale on controls, PCA on controls, centre-scale again, then per
    batch multiply by ``(cov(batch controls) + 0.5 I)^(-1/2)``.

    ``center="batch"`` fits the second centre-scaling per batch, which also removes additive batch shifts (the
    whitening alone only rescales them); ``center="global"`` fits it on all controls, literally as EFAAR's
    ``tvn_on_controls``.
    """
    y = centerscale(x, ctrl)
    y = pca_on_controls(y, ctrl)
    y = centerscale(y, ctrl, batches if center == "batch" else None)
    codes, names = _codes(batches)
    out = np.empty_like(y)
    eye = 0.5 * np.eye(y.shape[1])
    for b in range(len(names)):
        rows = codes == b
        c = y[rows & ctrl]
        if len(c) < 2:
            raise BenchmarkError(f"batch {names[b]!r} has {len(c)} control well(s); TVN needs at least 2 per batch "
                                 "(use postprocess.method pca_centerscale, or a coarser columns.batch)")
        cov = np.cov(c, rowvar=False, ddof=1).reshape(y.shape[1], y.shape[1]) + eye
        vals, vecs = np.linalg.eigh(cov)
        out[rows] = y[rows] @ ((vecs / np.sqrt(vals)) @ vecs.T)
    return out


def postprocess(
    x: np.ndarray, method: str, ctrl: np.ndarray, batches: np.ndarray, fit_on: str = "controls", center: str = "batch"
) -> np.ndarray:
    """Apply a definition's ``postprocess`` (method, fit_on, center) to well-level features ``x`` (float64)."""
    if method == "none":
        return x.copy()
    if method == "centerscale":
        fit = ctrl if fit_on == "controls" else np.ones(len(x), dtype=bool)
        return centerscale(x, fit, batches)
    if method == "pca_centerscale":
        return pca_centerscale_on_controls(x, ctrl, batches)
    if method == "tvn":
        return tvn_on_controls(x, ctrl, batches, center)
    raise BenchmarkError(f"unknown postprocess.method {method!r}: use none, centerscale, pca_centerscale or tvn")


@dataclass
class PerturbationMap:
    """One row per perturbation (gene, or compound at a concentration)."""

    perturbation: np.ndarray  # object (str)
    concentration: np.ndarray  # float, NaN for genes
    kind: np.ndarray  # object: "gene" | "compound"
    features: np.ndarray  # float64 [n, d]

    def __post_init__(self) -> None:
        if len(self.perturbation) == 0:
            raise BenchmarkError("the perturbation map is empty: no gene or compound perturbations remain after "
                                 "removing controls (check exclude_from_map and concentrations)")

    def to_frame(self) -> pd.DataFrame:
        cols = {f"feature_{i}": self.features[:, i] for i in range(self.features.shape[1])}
        return pd.DataFrame({"perturbation": self.perturbation, "concentration": self.concentration, **cols})


def entity_codes(
    perturbation: np.ndarray, concentration: np.ndarray, member: np.ndarray
) -> tuple[np.ndarray, pd.DataFrame]:
    """Code per row (-1 outside ``member``) of its (perturbation, concentration) entity; entities sorted by name,
    then concentration (genes have NaN)."""
    conc = np.where(np.isnan(concentration[member]), -1.0, concentration[member])  # genes: -1 sorts first
    frame = pd.DataFrame({"p": perturbation[member].astype(str), "c": conc})
    keys = frame.drop_duplicates().sort_values(["p", "c"], kind="stable").reset_index(drop=True)
    keys["code"] = np.arange(len(keys))
    merged = frame.merge(keys, on=["p", "c"], how="left", sort=False)
    codes = np.full(len(perturbation), -1, dtype=np.int64)
    codes[member] = merged["code"].to_numpy()
    keys["c"] = keys["c"].where(keys["c"] >= 0, np.nan)
    return codes, keys


def aggregate(x: np.ndarray, codes: np.ndarray, n_entities: int, method: str = "mean") -> np.ndarray:
    """Mean or median of the rows of each entity code (rows with code -1 are ignored)."""
    keep = codes >= 0
    if method == "mean":
        g = _group_matrix(codes, keep, n_entities)
        counts = np.asarray(g.sum(axis=1)).ravel()
        return np.asarray(g @ x) / counts[:, None]
    if method == "median":
        frame = pd.DataFrame(x[keep])
        return frame.groupby(codes[keep], sort=True).median().to_numpy(dtype=np.float64)
    raise BenchmarkError(f"unknown postprocess.aggregate {method!r}: use mean or median")
