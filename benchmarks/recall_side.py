"""One side of benchmarks/evaluate.py's EFAAR comparison, run in its own process.

    PYTHON benchmarks/recall_side.py {efaar,rxcurate} MAP.npz ANNOTATIONS_DIR SOURCE [SOURCE ...]

``efaar`` runs efaar_benchmarking's ``known_relationship_benchmark`` (it needs .venv-efaar), ``rxcurate`` runs
``evaluate_map("gene-gene-recall", ...)`` (the default definition, whole-map null) on the same map: ``MAP.npz`` holds
``features`` (float64), ``perturbation``, ``concentration`` (NaN for genes) and ``label`` (unique row labels, as the
notebook passes them to EFAAR). Both read the annotation files inside the timed call. Prints one JSON line: seconds
and CPU seconds of the benchmark call alone, of the imports + map load, and recall at (0.05, 0.95) per source.
"""

from __future__ import annotations

import json
import sys
import time

T_START = time.perf_counter()
C_START = time.process_time()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

RECALL = "recall_0.05_0.95"


def main() -> None:
    impl, map_path, data_dir, *sources = sys.argv[1:]
    if impl == "efaar":
        from efaar_benchmarking.benchmarking import known_relationship_benchmark
        from sklearn.utils import Bunch
    elif impl == "rxcurate":
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from rxcurate.benchmarks import evaluate_map
    else:
        raise SystemExit(f"unknown side {impl!r} (efaar or rxcurate)")
    with np.load(map_path, allow_pickle=False) as z:
        x, pert, conc, label = z["features"], z["perturbation"], z["concentration"], z["label"]
    if impl == "efaar":
        bunch = Bunch(features=pd.DataFrame(x), metadata=pd.DataFrame({"label": label.astype(object)}))
    else:
        frame = pd.DataFrame({"perturbation": pert.astype(object), "concentration": conc})
        frame = pd.concat([frame, pd.DataFrame(x, columns=[f"feature_{i}" for i in range(x.shape[1])])], axis=1)
    t_setup, c_setup = time.perf_counter() - T_START, time.process_time() - C_START

    t0, c0 = time.perf_counter(), time.process_time()
    if impl == "efaar":
        df = known_relationship_benchmark(bunch, pert_col="label", benchmark_sources=sources,
                                          recall_thr_pairs=[(0.05, 0.95)], benchmark_data_dir=data_dir)
        recall = {str(s): float(v) for s, v in zip(df["source"], df[RECALL], strict=True)}
        null_size = None
    else:
        res = evaluate_map("gene-gene-recall", frame, {s: f"{data_dir}/{s}.txt" for s in sources})
        recall = {s: float(row[RECALL]) for s, row in res["metrics"]["sources"].items() if row["query_size"]}
        null_size = int(res["metrics"]["null"]["size"])
    t_call, c_call = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"side": impl, "seconds": t_call, "cpu_seconds": c_call, "setup_seconds": t_setup,
                      "setup_cpu_seconds": c_setup, "recall": recall, "null_size": null_size}))


if __name__ == "__main__":
    main()
