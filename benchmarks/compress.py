"""Benchmark the curation stages; writes benchmarks/results/compress.json.

Measures, in one run on the same images:

- ``stage``: ``rxcurate.compress.compress`` with one worker (one read + fingerprint check + sha256 + PNG decode +
  crop/convert + JPEG 2000 encode + unit checkpoint + shard packing + metadata/report), images/s per core;
- ``raw``: PNG decode + crop/convert + encode of the same images in a bare loop (no I/O besides reading PNGs);
  goal: stage / raw >= 0.85;
- ``parallel``: the stage with 2 worker processes; goal: speed-up >= 1.8x over one worker, same bytes;
- ``selection``: ``run_selection`` of ``manifests/rxrx3-core.yaml`` on the ``full-metadata`` synthetic screen
  (~2.2 M wells, metadata only): load + validate + SQL + samplers; goal: under 2 s.

Timings are the best of ``--repeats`` runs. Other processes may share the machine, so each measurement also
records CPU seconds (this process + reaped children): on a busy machine wall-clock ratios drift, while the CPU
figures (``*_cpu``) still show the stage's own overhead and the work the pool adds. Sources are generated into
``build/bench/`` on first use (``rxcurate synth``) and reused.

    .venv/bin/python benchmarks/compress.py [--wells 200] [--repeats 2]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

os.environ.setdefault("RXCURATE_PROGRESS", "0")

import duckdb  # noqa: E402
import imagecodecs  # noqa: E402
import numpy as np  # noqa: E402
import PIL  # noqa: E402
import pyarrow  # noqa: E402

from rxcurate.compress import compress  # noqa: E402
from rxcurate.io import atomic_write_json  # noqa: E402
from rxcurate.layout import read_lockfile  # noqa: E402
from rxcurate.manifest import load_manifest, parse_manifest  # noqa: E402
from rxcurate.select import _connect, _load_metadata, run_selection, select  # noqa: E402
from rxcurate.synth import generate  # noqa: E402
from rxcurate.transform import crop_image, encode, to_uint8  # noqa: E402

CORE = REPO / "manifests" / "rxrx3-core.yaml"
GOALS = {"stage_over_raw": 0.85, "speedup_2_workers": 1.8, "selection_seconds": 2.0}


def _source(path: Path | None, preset: str, seed: int) -> Path:
    if path is not None:
        return path
    dest = REPO / "build" / "bench" / f"{preset}-rxrx3"
    if not (dest / "metadata.csv").is_file():
        print(f"generating the {preset} screen into {dest} ...", file=sys.stderr)
        generate(dest, layout="rxrx3", preset=preset, seed=seed, overwrite=True)
    return dest


def _bench_manifest(wells: int, folder: Path, name: str = "bench-compress", embeddings: bool = True):
    """The rxrx3-core transform on the first ``wells`` wells (by well_id) of the core SQL, no samplers."""
    doc = copy.deepcopy(load_manifest(CORE).raw)
    doc["name"] = name
    doc["select"] = {"sql": f"SELECT well_id FROM ({doc['select']['sql']}) ORDER BY well_id LIMIT {wells}"}
    if not embeddings:
        doc.pop("embeddings", None)
    return parse_manifest(doc, folder / "bench.yaml")


QUIET_LOAD = 0.5  # 1-minute load average below which a run counts as on a quiet machine


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (user + system)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _digest(work: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((work / "data").iterdir()):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _time_stage(manifest, source: Path, lock_dir: Path, work: Path, workers: int) -> tuple[float, float, str]:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copy2(lock_dir / "lockfile.parquet", work / "lockfile.parquet")
    c0, t0 = _cpu(), time.perf_counter()
    compress(manifest, source=source, workdir=work, workers=workers, force=True)
    return time.perf_counter() - t0, _cpu() - c0, _digest(work)


def _time_raw(manifest, source: Path, lock_dir: Path) -> tuple[float, float, int]:
    lock = read_lockfile(lock_dir)
    items = [(k, p) for ks, ps in zip(lock.table.column("keys").to_pylist(), lock.table.column("images").to_pylist(),
                                      strict=True) for k, p in zip(ks, ps, strict=True)]
    t = manifest.transform
    c0, t0 = _cpu(), time.perf_counter()
    total = 0
    for key, rel in items:
        img = imagecodecs.png_decode((source / rel).read_bytes())
        img8, _, _ = to_uint8(crop_image(img, t.crop), t.convert, int(key.rsplit("_", 1)[1]))
        total += len(encode(img8, t.codec))
    return time.perf_counter() - t0, _cpu() - c0, len(items)


def _selection(metadata_source: Path, repeats: int) -> dict:
    m = load_manifest(CORE)
    totals, cpus, loads, wells = [], [], [], 0
    for _ in range(repeats):
        c0, t0 = _cpu(), time.perf_counter()
        sel = run_selection(m, metadata_source)
        totals.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
        wells = len(sel.wells)
        con = _connect()
        t0 = time.perf_counter()
        _, table = _load_metadata(con, metadata_source, "metadata.csv")
        loads.append(time.perf_counter() - t0)
        n_rows = table.num_rows
        con.close()
    best = min(totals)
    return {
        "manifest": str(CORE.relative_to(REPO)),
        "source_wells": int(n_rows),
        "selected_wells": wells,
        "seconds_best": round(best, 3),
        "seconds_all": [round(x, 3) for x in totals],
        "cpu_seconds_all": [round(x, 3) for x in cpus],
        "load_and_validate_seconds_best": round(min(loads), 3),
        "query_seconds_best": round(best - min(loads), 3),
        "goal_seconds": GOALS["selection_seconds"],
        "meets_goal": best < GOALS["selection_seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, help="RxRx3-layout screen with images (default: the demo preset)")
    ap.add_argument("--preset", default="demo", help="synth preset generated when --source is not given")
    ap.add_argument("--metadata-source", type=Path, help="~2.2 M-well metadata screen (default: full-metadata)")
    ap.add_argument("--wells", type=int, default=200, help="wells compressed (6 images each)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per measurement; the best is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-selection", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "compress.json")
    args = ap.parse_args(argv)

    source = _source(args.source, args.preset, args.seed)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rxcurate-bench-") as tmp:
        tmp = Path(tmp)
        manifest = _bench_manifest(args.wells, tmp)
        t0 = time.perf_counter()
        select(manifest, source=source, workdir=tmp / "lock")
        select_seconds = time.perf_counter() - t0
        lock = read_lockfile(tmp / "lock")
        n_images = lock.n_images
        stage, raw, par, stage_cpu, raw_cpu, par_cpu = [], [], [], [], [], []
        digests = set()
        for _ in range(args.repeats):
            secs, cpu, d1 = _time_stage(manifest, source, tmp / "lock", tmp / "serial", 1)
            stage.append(secs)
            stage_cpu.append(cpu)
            secs, cpu, _ = _time_raw(manifest, source, tmp / "lock")
            raw.append(secs)
            raw_cpu.append(cpu)
            secs, cpu, d2 = _time_stage(manifest, source, tmp / "lock", tmp / "parallel", 2)
            par.append(secs)
            par_cpu.append(cpu)
            digests |= {d1, d2}
        report = read_lockfile(tmp / "lock").info
    stage_ips = n_images / min(stage)
    raw_ips = n_images / min(raw)
    par_ips = n_images / min(par)
    result = {
        "benchmark": "compress",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                    # wall-clock ratios are trustworthy only on a quiet machine: re-run until busy is false
                    "busy": bool(load_before[0] >= QUIET_LOAD),
                    "quiet_load_below": QUIET_LOAD},
        "versions": {"imagecodecs": imagecodecs.__version__, "openjpeg": imagecodecs.jpeg2k_version(),
                     "pillow": PIL.__version__, "duckdb": duckdb.__version__, "pyarrow": pyarrow.__version__,
                     "numpy": np.__version__},
        "input": {"source": str(source), "wells": lock.table.num_rows, "images": n_images,
                  "source_image_shape": list(report["image_shape"]), "source_dtype": report["image_dtype"],
                  "transform": manifest.transform_section(), "repeats": args.repeats},
        "select_with_hashing_seconds": round(select_seconds, 3),
        "stage": {"seconds_best": round(min(stage), 3), "seconds_all": [round(x, 3) for x in stage],
                  "cpu_seconds_all": [round(x, 3) for x in stage_cpu],
                  "images_per_second_per_core": round(stage_ips, 2),
                  "images_per_cpu_second": round(n_images / min(stage_cpu), 2)},
        "raw": {"seconds_best": round(min(raw), 3), "seconds_all": [round(x, 3) for x in raw],
                "cpu_seconds_all": [round(x, 3) for x in raw_cpu],
                "images_per_second_per_core": round(raw_ips, 2),
                "images_per_cpu_second": round(n_images / min(raw_cpu), 2)},
        "parallel_2_workers": {"seconds_best": round(min(par), 3), "seconds_all": [round(x, 3) for x in par],
                               "cpu_seconds_all": [round(x, 3) for x in par_cpu],
                               "images_per_second": round(par_ips, 2),
                               "images_per_second_per_core": round(par_ips / 2, 2)},
        "stage_over_raw": round(stage_ips / raw_ips, 3),
        "stage_over_raw_cpu": round(min(raw_cpu) / min(stage_cpu), 3),
        "speedup_2_workers": round(par_ips / stage_ips, 3),
        # CPU the pool adds (process start, pickling, IPC) relative to the serial stage's CPU
        "parallel_cpu_overhead": round(min(par_cpu) / min(stage_cpu) - 1, 3),
        "serial_and_parallel_byte_identical": len(digests) == 1,
        "goals": GOALS,
    }
    result["meets_goals"] = {"stage_over_raw": result["stage_over_raw"] >= GOALS["stage_over_raw"],
                             "speedup_2_workers": result["speedup_2_workers"] >= GOALS["speedup_2_workers"],
                             "quiet_machine": not result["machine"]["busy"]}
    if result["machine"]["busy"]:
        print(f"warning: load average {load_before[0]:.2f} >= {QUIET_LOAD} before the run: the machine was busy; "
              "re-run on a quiet machine before committing the results", file=sys.stderr)
    if not args.skip_selection:
        meta_src = args.metadata_source
        if meta_src is None:
            meta_src = REPO / "build" / "bench" / "full-metadata-rxrx3"
            if not (meta_src / "metadata.csv").is_file():
                print(f"generating the full-metadata screen into {meta_src} ...", file=sys.stderr)
                generate(meta_src, layout="rxrx3", preset="full-metadata", seed=args.seed, overwrite=True)
        result["selection"] = _selection(meta_src, max(args.repeats, 5))
        result["meets_goals"]["selection_seconds"] = result["selection"]["meets_goal"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(f"stage {stage_ips:.1f} img/s/core, raw {raw_ips:.1f}, ratio {result['stage_over_raw']} (CPU "
          f"{result['stage_over_raw_cpu']}), "
          f"2-worker speed-up {result['speedup_2_workers']}x"
          + (f", selection {result['selection']['seconds_best']} s" if "selection" in result else "")
          + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
