"""Validity of the benchmarks on the demo synthetic screen: planted truth vs gene-shuffled truth.

    make release                                   # builds build/release from build/sources/rxrx3-demo-seed0
    .venv/bin/python benchmarks/validity.py [--workdir build/release] [--source build/sources/rxrx3-demo-seed0]
                                            [--encoder baseline] [--shuffle-seeds 0 1 2] [--out FILE]

Reads the release's well-level embeddings (after the benchmark definitions' TVN post-processing) and metadata,
scores gene-gene-recall and compound-gene-activity against the source's planted truth and against gene-shuffled
copies of it (rxcurate.benchmarks.validity), and checks the targets of the benchmarks issue:
compound-gene-activity mean AUC (max over concentrations) >= 0.8 with the random baseline near 0.5, gene-gene
recall at (0.05, 0.95) >= 0.5 (chance 0.1), both at chance with the shuffled truth.
Results go to benchmarks/results/validity.json; exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rxcurate import __version__  # noqa: E402
from rxcurate.benchmarks.validity import validity  # noqa: E402
from rxcurate.io import atomic_write_json  # noqa: E402
from rxcurate.layout import METADATA_PARQUET, embeddings_path  # noqa: E402
from rxcurate.source import SOURCE_TRUTH_DIR, SYNTH_STAMP, TRUTH_FILES  # noqa: E402

TARGETS = {"auc_roc_max_mean_min": 0.8, "random_baseline_auc_max_dev": 0.1, "recall_0.05_0.95_min": 0.5,
           "shuffled_recall_max": 0.2, "shuffled_auc_max_dev": 0.15}


def check(runs: list[dict]) -> dict[str, bool]:
    true_ggr = runs[0]["benchmarks"]["gene-gene-recall"]["true"]["relationships/recall_0.05_0.95"]
    true_cga = runs[0]["benchmarks"]["compound-gene-activity"]["true"]
    shuf_ggr = [r["benchmarks"]["gene-gene-recall"]["shuffled"]["relationships/recall_0.05_0.95"] for r in runs]
    shuf_auc = [r["benchmarks"]["compound-gene-activity"]["shuffled"]["auc_roc_max_mean"] for r in runs]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {
        "compound_gene_auc_ge_0.8": true_cga["auc_roc_max_mean"] >= TARGETS["auc_roc_max_mean_min"],
        "random_baseline_near_0.5": abs(true_cga["random_baseline_auc_roc_max_mean"] - 0.5)
        <= TARGETS["random_baseline_auc_max_dev"],
        "gene_gene_recall_ge_0.5": true_ggr >= TARGETS["recall_0.05_0.95_min"],
        "shuffled_recall_at_chance": mean(shuf_ggr) <= TARGETS["shuffled_recall_max"],
        "shuffled_auc_at_chance": abs(mean(shuf_auc) - 0.5) <= TARGETS["shuffled_auc_max_dev"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=ROOT / "build" / "release")
    ap.add_argument("--source", type=Path, default=ROOT / "build" / "sources" / "rxrx3-demo-seed0")
    ap.add_argument("--encoder", default="baseline", help="embedding set under WORKDIR/embeddings/")
    ap.add_argument("--shuffle-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "validity.json")
    args = ap.parse_args()
    emb_path = embeddings_path(args.workdir, args.encoder)
    for p in (emb_path, args.workdir / METADATA_PARQUET, args.source / SOURCE_TRUTH_DIR):
        if not p.exists():
            print(f"error: {p} does not exist: run `make release` first (or pass --workdir/--source)", file=sys.stderr)
            return 2
    emb = pd.read_parquet(emb_path)
    meta = pd.read_parquet(args.workdir / METADATA_PARQUET)
    truth = {k: args.source / SOURCE_TRUTH_DIR / f for bid in ("gene-gene-recall", "compound-gene-activity")
             for k, f in TRUTH_FILES[bid].items()}
    runs = [validity(emb, meta, truth, seed=s) for s in args.shuffle_seeds]
    checks = check(runs)
    stamp = args.source / SYNTH_STAMP
    synth = json.loads(stamp.read_text()) if stamp.is_file() else {}
    doc = {
        "benchmark": "validity", "rxcurate": __version__, "python": platform.python_version(),
        "source": {"path": args.source.name, **synth}, "encoder": args.encoder,
        "wells": int(len(meta)), "targets": TARGETS, "checks": checks, "passed": all(checks.values()),
        "runs": runs,
    }
    atomic_write_json(args.out, doc)
    print(json.dumps({"checks": checks, "true": runs[0]["benchmarks"]}, indent=1))
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
