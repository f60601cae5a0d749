"""gene-gene-recall: are annotated gene pairs in the tails of the map's cosine-similarity null?"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rxcurate.benchmarks.metrics import recall_at, unit_rows, upper_triangle_null_counts
from rxcurate.benchmarks.postprocess import PerturbationMap
from rxcurate.errors import BenchmarkError


def threshold_name(lower: float, upper: float) -> str:
    return f"recall_{lower}_{upper}"


def gene_gene_recall(m: PerturbationMap, sources: dict[str, pd.DataFrame], params: dict[str, Any]) -> dict[str, Any]:
    """Recall of each relationship source (``entity1, entity2`` frames, deduplicated) against the null of all pairs
    of gene perturbations (``params['null'] == 'all'``: all pairs of map entities, genes and compounds)."""
    genes = np.flatnonzero(m.kind == "gene")
    names = m.perturbation[genes]
    if len(names) < 2:
        raise BenchmarkError(f"gene-gene-recall needs at least 2 gene perturbations in the map, found {len(names)}")
    index = pd.Index(names)
    null_kind = params.get("null", "genes")
    if null_kind == "genes":
        u_null, rows = unit_rows(m.features[genes], "map", names), np.arange(len(genes))
    else:
        u_null, rows = unit_rows(m.features, "map", m.perturbation), genes

    # every source's annotated pairs, as row indices into the null's entities; ranked in one pass
    qi, qj, sizes = [], [], {}
    for name in sorted(sources):
        rels = sources[name]
        i = index.get_indexer(rels["entity1"].to_numpy(dtype=object))
        j = index.get_indexer(rels["entity2"].to_numpy(dtype=object))
        keep = (i >= 0) & (j >= 0)
        qi.append(rows[i[keep]])
        qj.append(rows[j[keep]])
        sizes[name] = int(keep.sum())
    if not any(sizes.values()):
        raise BenchmarkError(f"no annotated pair of sources {sorted(sources)} has both genes in the map (empty "
                             f"overlap with truth; map genes e.g. {[str(v) for v in names[:3]]}): are the truth files "
                             "for this screen and do they use the map's gene symbols?")
    _, below, at_or_below, n_null = upper_triangle_null_counts(u_null, np.concatenate(qi), np.concatenate(qj))

    out: dict[str, Any] = {
        "null": {"kind": null_kind, "size": int(n_null), "genes": int(len(names))},
        "sources": {},
    }
    pos = 0
    for name in sorted(sizes):
        k = sizes[name]
        b, a = below[pos : pos + k], at_or_below[pos : pos + k]
        pos += k
        row: dict[str, Any] = {"pairs": int(len(sources[name])), "query_size": k}
        for lower, upper in params["recall_thresholds"]:
            lo, hi = min(lower, upper), max(lower, upper)
            row[threshold_name(lo, hi)] = recall_at(b, a, n_null, lo, hi) if k else None
        out["sources"][name] = row
    return out


def summary(metrics: dict[str, Any]) -> dict[str, float | None]:
    flat: dict[str, float | None] = {}
    for name, row in metrics["sources"].items():
        for key, value in row.items():
            if key.startswith("recall_"):
                flat[f"{name}/{key}"] = value
    return flat
