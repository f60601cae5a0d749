"""gene-gene-recall: are annotated gene pairs in the tails of the map's cosine-similarity null?"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rxcurate.benchmarks.metrics import null_tail_flags, unit_rows
from rxcurate.benchmarks.postprocess import PerturbationMap
from rxcurate.errors import BenchmarkError


def threshold_name(lower: float, upper: float) -> str:
    return f"recall_{lower}_{upper}"


def _positions(values: pd.Series, index: pa.Array) -> np.ndarray:
    """Position of each value in ``index`` (-1: absent), hashed by Arrow (much faster than pandas on strings)."""
    found = pc.index_in(pa.array(values, type=pa.string(), from_pandas=True), value_set=index)  # NaN: absent
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.intp)


def gene_gene_recall(m: PerturbationMap, sources: dict[str, pd.DataFrame], params: dict[str, Any]) -> dict[str, Any]:
    """Recall of each relationship source (``entity1, entity2`` frames, deduplicated) against the null of all pairs
    of gene perturbations (``params['null'] == 'all'``: all pairs of map entities, genes and compounds)."""
    genes = np.flatnonzero(m.kind == "gene")
    names = m.perturbation[genes]
    if len(names) < 2:
        raise BenchmarkError(f"gene-gene-recall needs at least 2 gene perturbations in the map, found {len(names)}")
    index = pa.array([str(v) for v in names], type=pa.string())  # unique (the map has one row per gene)
    null_kind = params.get("null", "genes")
    if null_kind == "genes":
        u_null, rows = unit_rows(m.features[genes], "map", names), np.arange(len(genes))
    else:
        u_null, rows = unit_rows(m.features, "map", m.perturbation), genes

    # every source's annotated pairs, as row indices into the null's entities; ranked in one pass
    qi, qj, sizes = [], [], {}
    for name in sorted(sources):
        rels = sources[name]
        i, j = (_positions(rels[c], index) for c in ("entity1", "entity2"))
        keep = (i >= 0) & (j >= 0)
        qi.append(rows[i[keep]])
        qj.append(rows[j[keep]])
        sizes[name] = int(keep.sum())
    if not any(sizes.values()):
        raise BenchmarkError(f"no annotated pair of sources {sorted(sources)} has both genes in the map (empty "
                             f"overlap with truth; map genes e.g. {[str(v) for v in names[:3]]}): are the truth files "
                             "for this screen and do they use the map's gene symbols?")
    thresholds = [(min(lo, hi), max(lo, hi)) for lo, hi in params["recall_thresholds"]]
    _, flags, n_null = null_tail_flags(u_null, np.concatenate(qi), np.concatenate(qj), thresholds)

    out: dict[str, Any] = {
        "null": {"kind": null_kind, "size": int(n_null), "genes": int(len(names))},
        "sources": {},
    }
    pos = 0
    for name in sorted(sizes):
        k = sizes[name]
        hit = flags[:, pos : pos + k]
        pos += k
        row: dict[str, Any] = {"pairs": int(len(sources[name])), "query_size": k}
        for t, (lo, hi) in enumerate(thresholds):
            row[threshold_name(lo, hi)] = float(np.mean(hit[t])) if k else None
        out["sources"][name] = row
    return out


def summary(metrics: dict[str, Any]) -> dict[str, float | None]:
    flat: dict[str, float | None] = {}
    for name, row in metrics["sources"].items():
        for key, value in row.items():
            if key.startswith("recall_"):
                flat[f"{name}/{key}"] = value
    return flat
