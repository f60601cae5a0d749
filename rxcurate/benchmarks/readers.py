"""Readers for benchmark inputs: truth tables, embeddings, metadata and perturbation-level maps.

Every reader validates what it returns and raises :class:`BenchmarkError` naming the file, the problem and the fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from rxcurate.errors import BenchmarkError

PathLike = str | os.PathLike[str]
FEATURE_RE = re.compile(r"^feature_(\d+)$")
COMPOUND_GENE_COLUMNS = ("gene_symbol", "nM_value", "treatment")


def _read_csv_strings(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise BenchmarkError(f"{what} file {path} does not exist (pass an existing file, e.g. --truth "
                             "truth/relationships.csv)")
    try:
        # Strings stay strings: gene symbols such as "NA" must not become missing values.
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise BenchmarkError(f"{what} file {path} is not a readable CSV ({' '.join(str(exc).split())})") from None


def _strings(series: pd.Series) -> np.ndarray:
    return series.fillna("").astype(str).str.strip().to_numpy(dtype=object)


def read_relationships(path: PathLike) -> pd.DataFrame:
    """Undirected entity pairs from an ``entity1,entity2`` CSV (CORUM, HuMAP, Reactome, SIGNOR, StringDB, synthetic).

    Each pair is ordered (``entity1 < entity2``), self pairs and duplicates (A-B and B-A) are removed and the rows
    are sorted, so equal files give equal frames.
    """
    path = Path(path)
    df = _read_csv_strings(path, "relationship")
    missing = [c for c in ("entity1", "entity2") if c not in df.columns]
    if missing:
        raise BenchmarkError(f"relationship file {path} lacks column(s) {missing}: it must be a CSV with header "
                             f"'entity1,entity2' (e.g. a line 'SNRPE,SNRPF'); found columns {list(df.columns)}")
    a, b = _strings(df["entity1"]), _strings(df["entity2"])
    empty = (a == "") | (b == "")
    if empty.any():
        line = int(np.flatnonzero(empty)[0]) + 2
        raise BenchmarkError(f"relationship file {path} line {line}: empty entity; every row needs two names "
                             "(e.g. SNRPE,SNRPF)")
    swap = a > b
    e1, e2 = np.where(swap, b, a), np.where(swap, a, b)
    out = pd.DataFrame({"entity1": e1.astype(object), "entity2": e2.astype(object)})
    out = out[out["entity1"] != out["entity2"]].drop_duplicates()
    return out.sort_values(["entity1", "entity2"], kind="stable").reset_index(drop=True)


def read_compound_gene(path: PathLike) -> pd.DataFrame:
    """Compound-gene activity table (``gene_symbol,nM_value,measurement_type,database,treatment``).

    Quoted fields may contain commas (compound names such as ``"1,2-dichloro..."``). ``nM_value`` becomes float;
    rows are sorted by treatment, gene and value.
    """
    path = Path(path)
    df = _read_csv_strings(path, "compound-gene")
    missing = [c for c in COMPOUND_GENE_COLUMNS if c not in df.columns]
    if missing:
        raise BenchmarkError(f"compound-gene file {path} lacks column(s) {missing}: header must include "
                             "gene_symbol,nM_value,treatment (e.g. 'gene_symbol,nM_value,measurement_type,database,"
                             f"treatment'); found {list(df.columns)}")
    out = df.copy()
    for col in out.columns:
        if col != "nM_value":
            out[col] = _strings(out[col])
    for col in ("gene_symbol", "treatment"):
        bad = out[col] == ""
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise BenchmarkError(f"compound-gene file {path} line {line}: empty {col}")
    values = pd.to_numeric(df["nM_value"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BenchmarkError(f"compound-gene file {path} line {i + 2}: nM_value {df['nM_value'].iloc[i]!r} is not a "
                             "non-negative number (e.g. 250.0)")
    out["nM_value"] = values
    return out.sort_values(["treatment", "gene_symbol", "nM_value"], kind="stable").reset_index(drop=True)


def read_table(path: PathLike, what: str) -> pd.DataFrame:
    """A CSV or Parquet table (by suffix)."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{what} file {path} does not exist (e.g. embeddings/baseline/embeddings.parquet)")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise BenchmarkError(f"{what} file {path} is not a readable CSV/Parquet table "
                             f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None


def feature_columns(df: pd.DataFrame, what: str) -> list[str]:
    """The ``feature_0..feature_{d-1}`` columns in index order; contiguous and non-empty, else an error."""
    idx = sorted(int(m.group(1)) for c in df.columns if isinstance(c, str) and (m := FEATURE_RE.match(c)))
    if not idx:
        raise BenchmarkError(f"{what} has no feature columns: expected feature_0..feature_{{d-1}} beside the key "
                             f"columns (found {list(df.columns)[:8]})")
    if idx != list(range(len(idx))):
        gap = next(i for i, v in enumerate(idx) if v != i)
        raise BenchmarkError(f"{what}: feature columns must be feature_0..feature_{len(idx) - 1} without gaps; "
                             f"feature_{gap} is missing (mismatched dimensions?)")
    return [f"feature_{i}" for i in idx]


def feature_matrix(df: pd.DataFrame, cols: list[str], what: str, key: pd.Series) -> np.ndarray:
    """float64 features; NaN/inf or non-numeric values raise naming the first bad row's key."""
    try:
        x = df[cols].to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise BenchmarkError(f"{what}: feature columns must be numeric (float32/float64)") from None
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BenchmarkError(f"{what}: {int(bad.sum())} row(s) have NaN/inf features, first {key.iloc[i]!r}; "
                             "re-embed those wells or drop them from the metadata and embeddings")
    return exact_rescale(x)


# Every benchmark is invariant to one positive factor on all features (post-processing standardises, cosine
# normalises), but float64 arithmetic is not: features of 1e-30 or 1e300 underflow or overflow in variances and
# norms. Features whose largest magnitude lies outside this range are scaled by a power of two (exact).
SAFE_MAGNITUDE = (2.0**-20, 2.0**20)


def exact_rescale(x: np.ndarray) -> np.ndarray:
    """``x`` times a power of two putting its largest |value| in [0.5, 1), only when it lies outside
    ``SAFE_MAGNITUDE`` (in range: ``x`` itself, so results stay bit-identical)."""
    m = max(float(x.max()), -float(x.min())) if x.size else 0.0  # = max |x|, without a full copy
    if m == 0.0 or SAFE_MAGNITUDE[0] <= m <= SAFE_MAGNITUDE[1]:
        return x
    _, exponent = np.frexp(m)
    return np.ldexp(x, -int(exponent))
