"""Speed of the benchmarks at RxRx3-core scale (and of the well-level pipeline at a chosen scale), in one run.

    .venv/bin/python benchmarks/evaluate.py [--genes 735] [--compounds 1674] [--dim 384] [--seeds 100]
                                            [--wells 75800] [--rxrx1-sirnas 300] [--out FILE]

Builds synthetic inputs with planted biology (rxcurate.benchmarks.synthetic) and times:
- ``map``: gene-gene-recall and compound-gene-activity (``--seeds`` seeds) on a perturbation-level map of
  ``--genes`` genes and ``--compounds`` compounds x 8 concentrations, ``--dim`` features (RxRx3-core: 735, 1674, 384),
  scored with ``evaluate_map`` as a third-party map would be;
- ``wells``: the well-level path on about ``--wells`` wells (validation + TVN + aggregation + scoring) for
  gene-gene-recall and perturbation-signal (RxRx3-core has ~222k wells);
- ``rxrx1``: rxrx1-batch-generalisation (two logistic-regression probes) on ``--rxrx1-sirnas`` siRNAs, 4 cell types.
- ``efaar``: efaar_benchmarking 1.0's ``known_relationship_benchmark`` (the reference, run by ``--efaar-python``,
  default .venv-efaar/bin/python; ``make install-efaar``) side by side with rxcurate's gene-gene-recall (default
  definition, whole-map null) on the same maps in the same run: ``--genes`` genes drawn from the real annotation
  files (../shared/realdata/annotations; RXCURATE_SHARED overrides) with planted CORUM similarity, alone and with
  ``--efaar-compounds`` compounds x 8 concentrations, ``--dim`` features, the five sources. Each side runs in its own
  process (benchmarks/recall_side.py) on the map saved to an .npz file and times only its benchmark call; the
  process-start-inclusive times are recorded as well, with CPU seconds, load average before/after and ``busy``
  (1-minute load before >= 0.5); ``min_ratio`` / ``min_ratio_cpu_seconds`` over both maps and ``full_map`` (genes +
  compounds, the notebook's map) summarise it. Skipped, with a message, when that Python or the annotation files
  are absent.

Each entry reports seconds and the headline metrics (a sanity check that the planted signal is found). Goal:
compound-gene-activity with 100 seeds in seconds, not minutes. Results go to benchmarks/results/evaluate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rxcurate import __version__  # noqa: E402
from rxcurate.benchmarks import evaluate, evaluate_map, library_versions, load_definition  # noqa: E402
from rxcurate.benchmarks.synthetic import synthetic_map, synthetic_rxrx1, synthetic_rxrx3  # noqa: E402
from rxcurate.io import atomic_write_json  # noqa: E402

GOALS = {"compound_gene_activity_100_seeds_seconds": 30.0, "efaar_speedup_min": 20.0, "efaar_max_abs_diff": 1e-12}
ROOT = Path(__file__).resolve().parents[1]
EFAAR_SOURCES = ["CORUM", "HuMAP", "Reactome", "SIGNOR", "StringDB"]  # efaar_benchmarking.constants
CONCENTRATIONS_UM = [0.0025, 0.01, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t0, 3)


def _pick(summary: dict, keys: list[str]) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items() if k in keys}


def bench_map(args, tmp: Path) -> dict:
    data, t_build = _timed(lambda: synthetic_map(n_genes=args.genes, n_compounds=args.compounds, dim=args.dim))
    rel, cgi = tmp / "relationships.csv", tmp / "compound_gene_interactions.csv"
    data["relationships"].to_csv(rel, index=False)
    data["compound_gene"].to_csv(cgi, index=False)
    ggr, t_ggr = _timed(lambda: evaluate_map("gene-gene-recall", data["map"], {"synthetic": rel}))
    defn = load_definition("compound-gene-activity")
    defn["seeds"]["count"] = args.seeds
    cga, t_cga = _timed(lambda: evaluate_map(defn, data["map"], [cgi]))
    return {
        "genes": args.genes, "compounds": args.compounds, "concentrations": 8, "dim": args.dim,
        "map_rows": len(data["map"]), "truth_rows": len(data["compound_gene"]), "build_seconds": t_build,
        "gene_gene_recall": {"seconds": t_ggr, "summary": ggr["summary"]},
        "compound_gene_activity": {
            "seconds": t_cga, "seeds": args.seeds, "seconds_per_seed": round(t_cga / args.seeds, 4),
            "compounds_evaluated": cga["metrics"]["counts"]["compounds_evaluated"],
            "summary": _pick(cga["summary"], ["max/auc_roc/mean", "max/average_precision/mean",
                                              "max/baseline_auc_roc/mean", "max/baseline_average_precision/mean"]),
        },
    }


def bench_wells(args, tmp: Path) -> dict:
    # wells = genes x 6 guides x 4 + compounds x 8 x 3 + 60 experiments x 300 controls = 75,800 at scale 1
    # (RxRx3-core's 735 genes and 1,674 compounds, with fewer replicate and control wells than its ~222k)
    scale = args.wells / 75800
    kw = dict(n_genes=max(10, int(735 * scale) // 5 * 5), module_size=5, n_compounds=max(2, int(1674 * scale)),
              guides=6, gene_replicates=4, compound_replicates=3, controls_per_experiment=300, dim=args.dim,
              gene_experiments=max(1, round(30 * scale)), compound_experiments=max(1, round(30 * scale)))
    data, t_build = _timed(lambda: synthetic_rxrx3(**kw))
    rel = tmp / "rel_wells.csv"
    data["relationships"].to_csv(rel, index=False)
    ggr, t_ggr = _timed(lambda: evaluate("gene-gene-recall", data["embeddings"], data["metadata"], [rel]))
    sig, t_sig = _timed(lambda: evaluate("perturbation-signal", data["embeddings"], data["metadata"]))
    return {
        "wells": len(data["metadata"]), "dim": args.dim, "build_seconds": t_build,
        "gene_gene_recall": {"seconds": t_ggr, "summary": ggr["summary"]},
        "perturbation_signal": {"seconds": t_sig, "summary": _pick(sig["summary"], [
            "all/consistency/share_significant", "all/magnitude/share_significant"])},
    }


def bench_rxrx1(args) -> dict:
    data, t_build = _timed(lambda: synthetic_rxrx1(n_sirnas=args.rxrx1_sirnas, cell_types=("HEPG2", "HUVEC", "RPE",
                                                                                          "U2OS"), dim=args.dim))
    res, t = _timed(lambda: evaluate("rxrx1-batch-generalisation", data["embeddings"], data["metadata"]))
    return {"wells": len(data["embeddings"]), "sirnas": args.rxrx1_sirnas, "dim": args.dim, "build_seconds": t_build,
            "seconds": t, "summary": _pick(res["summary"], ["corrected/accuracy", "uncorrected/accuracy"])}


def _annotations_dir() -> Path:
    shared = Path(os.environ.get("RXCURATE_SHARED") or ROOT.parent / "shared")
    return shared / "realdata" / "annotations"


def _efaar_map(data_dir: Path, n_genes: int, n_compounds: int, dim: int, seed: int = 0) -> dict:
    """tests/test_efaar_reference.py's maps at a chosen size: real annotation genes (CORUM + Reactome entities),
    CORUM partners sharing a direction, exact ties; compound x concentration rows that resemble each other and
    some genes (they shift the whole-map null's tail)."""
    genes: set = set()
    for s in ("CORUM", "Reactome"):
        rel = pd.read_csv(data_dir / f"{s}.txt", dtype=str)
        genes |= set(rel["entity1"]) | set(rel["entity2"])
    pool = np.array(sorted(genes), dtype=object)
    rng = np.random.default_rng(seed)
    g = np.sort(pool[rng.choice(len(pool), size=n_genes, replace=False)])
    gx = rng.normal(size=(n_genes, dim))
    idx = {name: i for i, name in enumerate(g)}
    corum = pd.read_csv(data_dir / "CORUM.txt", dtype=str)
    for a, b in corum.itertuples(index=False):
        if a in idx and b in idx and a != b:
            gx[idx[b]] += 0.8 * gx[idx[a]]
    gx[1] = gx[0]
    gx[3] = -gx[2]
    conc = np.asarray(CONCENTRATIONS_UM)
    cpds = np.repeat([f"CMPD-{i:05d}" for i in range(n_compounds)], len(conc))
    cconc = np.tile(conc, n_compounds)
    common = 3.0 * rng.normal(size=dim)
    cx = common + rng.normal(size=(len(cpds), dim)) + 0.5 * gx[rng.integers(0, n_genes, size=len(cpds))]
    pert = np.concatenate([g, cpds]).astype(str)
    conc_all = np.concatenate([np.full(n_genes, np.nan), cconc])
    label = np.array([p if np.isnan(c) else f"{p}@{c}" for p, c in zip(pert, conc_all, strict=True)], dtype=str)
    return {"features": np.concatenate([gx, cx]), "perturbation": pert, "concentration": conc_all, "label": label}


def _side(python: str, impl: str, map_path: Path, data_dir: Path, timeout: float) -> dict:
    """Run benchmarks/recall_side.py in a fresh process: its JSON, plus process-start-inclusive wall and CPU time
    (this child's rusage) and the load average before/after; ``timed_out`` when it ran past ``timeout``."""
    cmd = [python, str(ROOT / "benchmarks" / "recall_side.py"), impl, str(map_path), str(data_dir), *EFAAR_SOURCES]
    load0, ru0 = os.getloadavg(), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"timed_out": True, "timeout_seconds": timeout, "load_before": [round(v, 2) for v in load0]}
    wall = time.perf_counter() - t0
    ru1, load1 = resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg()
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} side failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update({"process_seconds": wall,
                "process_cpu_seconds": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
                "load_before": [round(v, 2) for v in load0], "load_after": [round(v, 2) for v in load1],
                "busy": load0[0] >= 0.5})
    return out


def _compare_size(args, data_dir: Path, tmp: Path, n_compounds: int) -> dict:
    m = _efaar_map(data_dir, args.genes, n_compounds, args.dim)
    map_path = tmp / f"efaar_map_{n_compounds}.npz"
    np.savez(map_path, **m)
    n = len(m["label"])
    entry: dict = {"genes": args.genes, "compounds": n_compounds, "compound_rows": n_compounds * 8, "map_rows": n,
                   "dim": args.dim, "null_pairs": n * (n - 1) // 2}
    # rxcurate before and after EFAAR (best of the runs: it is the quick side, so load spikes hit it hardest)
    def rxcurate() -> dict:
        return _side(sys.executable, "rxcurate", map_path, data_dir, args.efaar_timeout)

    rx = [rxcurate() for _ in range(args.rxcurate_repeats)]
    ef = _side(args.efaar_python, "efaar", map_path, data_dir, args.efaar_timeout)
    rx.append(rxcurate())
    if ef.get("timed_out"):
        entry["efaar"] = ef
        return entry
    best = min(rx, key=lambda r: r["seconds"])
    diffs = [abs(r["recall"].get(s, np.inf) - ef["recall"][s]) for r in rx for s in ef["recall"]]
    same_sources = all(sorted(r["recall"]) == sorted(ef["recall"]) for r in rx)
    keep = ["seconds", "cpu_seconds", "process_seconds", "process_cpu_seconds", "setup_seconds", "load_before",
            "load_after", "busy"]
    entry.update({
        "efaar": {k: ef[k] for k in keep} | {"recall_0.05_0.95": ef["recall"]},
        "rxcurate": {k: best[k] for k in keep} | {"recall_0.05_0.95": best["recall"], "null_size": best["null_size"],
                                                 "runs_seconds": [round(r["seconds"], 3) for r in rx],
                                                 "runs_process_seconds": [round(r["process_seconds"], 3) for r in rx]},
        "ratio": ef["seconds"] / best["seconds"],
        "ratio_process_start_included": ef["process_seconds"] / best["process_seconds"],
        "ratio_cpu_seconds": ef["cpu_seconds"] / max(best["cpu_seconds"], 1e-9),
        "recall_max_abs_diff": max(diffs) if diffs else None,
        "recall_equal": bool(same_sources and diffs and max(diffs) <= GOALS["efaar_max_abs_diff"]),
        "busy": bool(ef["busy"] or any(r["busy"] for r in rx)),
    })
    return entry


def bench_efaar(args, tmp: Path) -> dict | None:
    python = Path(args.efaar_python)
    if not python.is_absolute():
        python = ROOT / python
    data_dir = _annotations_dir()
    if not python.is_file():
        print(f"efaar: skipped ({python} is absent; make install-efaar builds it)", file=sys.stderr)
        return None
    if not all((data_dir / f"{s}.txt").is_file() for s in EFAAR_SOURCES):
        print(f"efaar: skipped (the annotation files are absent from {data_dir})", file=sys.stderr)
        return None
    args.efaar_python = str(python)
    ver = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('efaar_benchmarking'))"],
                         capture_output=True, text=True)
    if ver.returncode != 0:
        print(f"efaar: skipped (efaar_benchmarking is not importable by {python})", file=sys.stderr)
        return None
    out: dict = {"efaar_benchmarking": ver.stdout.strip(), "sources": EFAAR_SOURCES,
                 "rxcurate_definition": "gene-gene-recall (null: all pairs of map rows)",
                 "timed": "seconds: the benchmark call alone (annotation files read inside it), in its own process; "
                          "process_seconds: the whole process (interpreter start, imports, map load, call)",
                 "load_before": [round(v, 2) for v in os.getloadavg()], "sizes": []}
    print("efaar: genes-only map", file=sys.stderr)
    out["sizes"].append(_compare_size(args, data_dir, tmp, 0))
    n = args.efaar_compounds
    while n > 0:
        print(f"efaar: map with {n} compounds x 8 concentrations", file=sys.stderr)
        entry = _compare_size(args, data_dir, tmp, n)
        out["sizes"].append(entry)
        if not entry["efaar"].get("timed_out"):
            break
        n //= 2  # the reference ran past --efaar-timeout: the largest size it can run
    done = [e for e in out["sizes"] if "ratio" in e]
    out["load_after"] = [round(v, 2) for v in os.getloadavg()]
    out["busy"] = bool(out["load_before"][0] >= 0.5 or any(e["busy"] for e in done))
    out["largest_map_rows"] = max(e["map_rows"] for e in done)
    out["min_ratio"] = min(e["ratio"] for e in done)
    out["min_ratio_cpu_seconds"] = min(e["ratio_cpu_seconds"] for e in done)
    out["min_ratio_process_start_included"] = min(e["ratio_process_start_included"] for e in done)
    full = max(done, key=lambda e: e["map_rows"])  # genes + compound x concentration rows: the notebook's map
    out["full_map"] = {k: full[k] for k in ("map_rows", "compounds", "null_pairs", "ratio", "ratio_cpu_seconds",
                                            "ratio_process_start_included", "recall_equal", "busy")}
    out["recall_max_abs_diff"] = max(e["recall_max_abs_diff"] for e in done)
    out["recall_equal"] = all(e["recall_equal"] for e in done)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--genes", type=int, default=735)
    ap.add_argument("--compounds", type=int, default=1674)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--wells", type=int, default=75800, help="approximate well count of the well-level run (0: skip)")
    ap.add_argument("--rxrx1-sirnas", type=int, default=300, help="siRNAs of the RxRx1 probe run (0: skip)")
    ap.add_argument("--efaar-python", default=".venv-efaar/bin/python",
                    help="Python with efaar_benchmarking (relative to the repository root; absent: section skipped)")
    ap.add_argument("--efaar-compounds", type=int, default=None,
                    help="compounds of the EFAAR comparison map (default: --compounds; 0: genes-only map alone)")
    ap.add_argument("--efaar-timeout", type=float, default=480.0,
                    help="seconds one EFAAR run may take before the comparison halves the compounds")
    ap.add_argument("--rxcurate-repeats", type=int, default=2, help="rxcurate runs before EFAAR (one more after)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["map", "wells", "rxrx1", "efaar"],
                    help="sections to leave out")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "evaluate.json")
    args = ap.parse_args()
    if args.efaar_compounds is None:
        args.efaar_compounds = args.compounds
    np.random.default_rng(0)
    result: dict = {
        "benchmark": "evaluate",
        "rxcurate": __version__,
        "versions": library_versions(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "goals": GOALS,
        "load_before": [round(v, 2) for v in os.getloadavg()],
    }
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        if "map" not in args.skip:
            result["map"] = bench_map(args, Path(tmp))
        if args.wells and "wells" not in args.skip:
            result["wells"] = bench_wells(args, Path(tmp))
        if "efaar" not in args.skip:
            efaar = bench_efaar(args, Path(tmp))
            if efaar is not None:
                result["efaar"] = efaar
    if args.rxrx1_sirnas and "rxrx1" not in args.skip:
        result["rxrx1"] = bench_rxrx1(args)
    result["load_after"] = [round(v, 2) for v in os.getloadavg()]
    result["seconds"] = round(time.perf_counter() - t0, 3)
    result["cpu_seconds"] = round(time.process_time() - c0, 3)
    result["busy"] = result["load_before"][0] >= 0.5
    result["goals_met"] = {}
    if "map" in result:
        cga = result["map"]["compound_gene_activity"]
        result["goals_met"]["compound_gene_activity_100_seeds_seconds"] = (
            cga["seconds"] * 100 / cga["seeds"] <= GOALS["compound_gene_activity_100_seeds_seconds"])
    if "efaar" in result:
        result["goals_met"]["efaar_speedup_min"] = result["efaar"]["min_ratio"] >= GOALS["efaar_speedup_min"]
        result["goals_met"]["efaar_max_abs_diff"] = result["efaar"]["recall_equal"]
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
