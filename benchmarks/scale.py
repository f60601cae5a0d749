"""How the stages grow with the screen: the RxRx3-core recipe at fractions of RxRx3-core, extrapolated to the real one.

    .venv/bin/python benchmarks/scale.py [--image-fractions 1/64,1/16] [--meta-fractions 1/64,1/8,1]
                                         [--with-1-8] [--engines] [--out benchmarks/results/scale.json]

RxRx3-core is 222,601 wells x 6 channels = 1,335,606 images. Synthetic screens are built at fractions of it with the
rxrx3 design (rxcurate.synth.design): genes (6 guides x 40 replicates), compounds (8 concentrations x 2), 10 empty +
6 CRISPR controls per plate, so the recipe's SQL and samplers (manifests/rxrx3-core.yaml) select about
222,601 x fraction wells:

- image curve (``--image-fractions``, default 1/64 and 1/16; ``--with-1-8`` adds 1/8): a screen with small images
  (``--image-px`` 96, crop ``--crop`` 64, embedding tile ``--tile`` 32; the rest of the recipe as is: window
  convert, JPEG 2000 rate 20) and every stage of a release on it: ``select`` (SQL + samplers + PNG headers +
  lockfile), ``compress`` (``--workers`` processes), ``embed`` (baseline encoder), ``assemble`` (card, release.json);
- metadata curve (``--meta-fractions``, default 1/64, 1/8 and full size): no images. ``selection``: load, validate,
  SQL and samplers over a source table with blinded genes (~1.7 M wells at full size; RxRx3 has ~2.2 M);
  ``evaluate``: the manifest's benchmarks on well-level 384-dim embeddings with planted biology
  (rxcurate.benchmarks.synthetic) of the same shape (genes x guides x replicates, compounds x concentrations,
  controls per experiment);
- ``synth-*`` rows time the generators (not release stages).

Every stage runs in its own child process (``--stage``); ``os.wait4`` gives its wall time, CPU time (with reaped
worker processes) and peak RSS (``ru_maxrss``: the largest single process of the child's tree). The child also
times the stage call itself (``work_*``, imports excluded): the growth exponent of a stage is the log-log slope
of ``work_cpu_seconds`` (and of ``work_seconds``) against wells over the sizes where it ran; goal <= 1.1.
Load averages before/after each stage are recorded; ``busy`` = 1-minute load before >= 0.5 (the machine may be
shared: CPU seconds are then the figure to compare). ``rxrx3_core`` extrapolates the real RxRx3-core (2048x2048
16-bit PNG sources) from the per-image codec costs in ../shared/notes/verified-facts.md, embed.json's measured
embed rate and compress.json's 2-worker speed-up, on 2, 16 and 64 cores and a Ray cluster.

``--engines`` also runs the earlier engine comparison (local vs Ray, 1 and 2 cores, on ``--engine-wells`` wells of
the ``demo`` screen) into ``engines``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("RXCURATE_PROGRESS", "0")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from rxcurate import __version__  # noqa: E402
from rxcurate.io import atomic_write_json  # noqa: E402
from rxcurate.manifest import load_manifest, parse_manifest  # noqa: E402
from rxcurate.synth.presets import RXRX3_PRESETS, Rxrx3Preset  # noqa: E402

CORE = REPO / "manifests" / "rxrx3-core.yaml"
RXRX3_CORE_WELLS = 222_601
CHANNELS = 6
RXRX3_CORE_IMAGES = RXRX3_CORE_WELLS * CHANNELS  # 1,335,606
BUSY_LOAD = 0.5
EXPONENT_GOAL = 1.1
PEAK_RSS_GOAL_BYTES = 8 * 10**9
DIM = 384
# The full-size design: 735 known genes x 6 guides x 40 replicates, 1,674 compounds x 8 concentrations x 2,
# 10 + 6 controls per plate, 175 gene and 6 compound experiments. Image screens: plates of 175 wells, no blinded
# genes (every well is selected, none rendered in vain). The metadata-only source adds 6,091 blinded genes on plates
# of 1,380 wells (as RxRx3): ~1.7 M source wells of which the recipe selects ~223,000 (the controls of ~1,250 plates).
FULL = {"genes": 735, "compounds": 1674, "modules": 120, "gene_experiments": 175, "compound_experiments": 6,
        "blinded_genes": 6091}
# Per image on one core (../shared/notes/verified-facts.md "Codec and compute figures"): 2048x2048 uint16 PNG decode,
# centre crop + 16->8 bit, JPEG 2000 encode of the 512x512 crop.
REAL_SECONDS_PER_IMAGE = {"png_decode_2048": 0.050, "crop_to_uint8": 0.004, "jpeg2000_encode_512": 0.0135}
CORES_SHOWN = (2, 16, 64)
RAY_CLUSTER = {"nodes": 8, "cores_per_node": 16, "read_gb_per_s_per_node": 1.0, "startup_seconds": 10.0}
SOURCE_TB = 6.7  # 1,335,606 x ~5 MB 2048x2048 16-bit PNGs


# --------------------------------------------------------------------------------------------------- sizes
def _frac(text: str) -> Fraction:
    return Fraction(text) if text not in ("full", "1") else Fraction(1)


def _tag(f: Fraction) -> str:
    return "full" if f == 1 else f"{f.numerator}-{f.denominator}"


def _label(f: Fraction) -> str:
    return "full" if f == 1 else f"{f.numerator}/{f.denominator}"


def _counts(f: Fraction) -> dict[str, int]:
    return {"genes": max(8, round(FULL["genes"] * f)), "compounds": max(8, round(FULL["compounds"] * f)),
            "modules": max(2, round(FULL["modules"] * f)),
            "gene_experiments": max(1, round(FULL["gene_experiments"] * f)),
            "compound_experiments": max(1, round(FULL["compound_experiments"] * f)),
            "blinded_genes": round(FULL["blinded_genes"] * f)}


def _preset(f: Fraction, px: int | None) -> Rxrx3Preset:
    """The rxrx3 design at fraction ``f`` of RxRx3-core; ``px`` None: metadata only (with blinded genes)."""
    c = _counts(f)
    return Rxrx3Preset(
        name=f"scale-{_tag(f)}-{px or 'meta'}", n_known_genes=c["genes"],
        n_blinded_genes=0 if px else c["blinded_genes"], n_modules=c["modules"], module_size=(3, 8),
        guides_per_gene=6, gene_experiments=c["gene_experiments"], gene_replicates=40, n_compounds=c["compounds"],
        compound_experiments=c["compound_experiments"], compound_replicates=2, wells_per_plate=175 if px else 1380,
        empty_controls_per_plate=10, crispr_controls_per_plate=6, image_size=px,
        cells_per_image=max(8, round(45 * (px or 96) ** 2 / 96**2)), cell_sigma=2.5 * (px or 96) / 96)


def _embedding_params(f: Fraction) -> dict[str, int]:
    """rxcurate.benchmarks.synthetic.synthetic_rxrx3 at fraction ``f``: 222,527 wells at full size."""
    c = _counts(f)
    # compound-gene needs >= 20 negative genes per compound: at least 32 genes, fewer replicates keep the wells
    genes = max(32, c["genes"])
    reps = max(2, round(FULL["genes"] * 240 * f / (6 * genes)))
    return {"n_genes": genes, "n_compounds": c["compounds"], "guides": 6, "gene_replicates": reps,
            "compound_replicates": 2, "controls_per_experiment": 103, "gene_experiments": c["gene_experiments"],
            "compound_experiments": c["compound_experiments"], "module_size": 4, "dim": DIM}


def _manifest(f: Fraction, crop: int, folder: Path):
    """manifests/rxrx3-core.yaml with the crop for small images; benchmarks off (the evaluate rows are separate)."""
    doc = copy.deepcopy(load_manifest(CORE).raw)
    doc["name"] = f"scale-{_tag(f)}"
    doc["transform"]["crop"] = {"size": crop, "origin": "center"}
    doc["benchmarks"] = []
    return parse_manifest(doc, folder / "scale.yaml")


# ---------------------------------------------------------------------------------------- child stages
def _rusage_cpu() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _generate(spec: dict) -> dict:
    from rxcurate.synth import generate

    f = Fraction(spec["fraction"])
    p = _preset(f, spec["px"])
    RXRX3_PRESETS[p.name] = p  # generate() looks presets up by name
    generate(spec["dest"], layout="rxrx3", preset=p.name, seed=0, workers=spec["workers"], overwrite=True)
    return {"source_wells": int(len(pd.read_csv(Path(spec["dest"]) / "metadata.csv", usecols=["well_id"])))}


def _synth_embeddings(spec: dict) -> dict:
    from rxcurate.benchmarks.synthetic import synthetic_rxrx3, write_synthetic

    frames = synthetic_rxrx3(**_embedding_params(Fraction(spec["fraction"])), seed=0)
    write_synthetic(frames, spec["dest"])
    return {"wells": int(len(frames["metadata"])), "dim": DIM}


def _selection(spec: dict) -> dict:
    from rxcurate.select import run_selection

    sel = run_selection(load_manifest(CORE), spec["source"])
    return {"wells": len(sel.wells)}


def _select(spec: dict) -> dict:
    from rxcurate.layout import read_lockfile
    from rxcurate.select import select

    m = _manifest(Fraction(spec["fraction"]), spec["crop"], Path(spec["work"]))
    select(m, source=spec["source"], workdir=spec["release"])
    lock = read_lockfile(Path(spec["release"]))
    return {"wells": lock.table.num_rows, "images": lock.n_images}


def _compress(spec: dict) -> dict:
    from rxcurate.compress import compress

    m = _manifest(Fraction(spec["fraction"]), spec["crop"], Path(spec["work"]))
    compress(m, source=spec["source"], workdir=spec["release"], workers=spec["workers"], force=True)
    data = sum(p.stat().st_size for p in (Path(spec["release"]) / "data").iterdir())
    return {"workers": spec["workers"], "data_bytes": data}


def _embed(spec: dict) -> dict:
    import torch  # heavy: only the embed child needs it

    from rxcurate.embed import run_embed

    torch.set_num_threads(1)  # one core encodes, one decoding worker: the 2-core configuration of embed.json
    run_embed(spec["release"], "baseline", tile=spec["tile"], num_workers=1, device="cpu")
    return {"tile": spec["tile"], "encoder": "baseline", "loader_workers": 1, "torch_threads": 1}


def _assemble(spec: dict) -> dict:
    from rxcurate.assemble import assemble

    m = _manifest(Fraction(spec["fraction"]), spec["crop"], Path(spec["work"]))
    res = assemble(m, spec["release"])
    return {"files": res.files}


def _evaluate(spec: dict) -> dict:
    from rxcurate.benchmarks import evaluate_files
    from rxcurate.layout import EMBEDDINGS_FILE
    from rxcurate.source import SOURCE_METADATA, SOURCE_TRUTH_DIR, TRUTH_FILES

    src = Path(spec["source"])
    per: dict[str, float] = {}
    for bid in load_manifest(CORE).benchmarks:
        truth = {k: src / SOURCE_TRUTH_DIR / name for k, name in TRUTH_FILES.get(bid, {}).items()}
        t0 = time.perf_counter()
        evaluate_files(bid, src / EMBEDDINGS_FILE, src / SOURCE_METADATA, truth or None, None)
        per[bid] = round(time.perf_counter() - t0, 3)
    return {"benchmark_seconds": per}


def _noop(spec: dict) -> dict:
    return {}


STAGES = {"noop": _noop, "synth-images": _generate, "synth-metadata": _generate, "synth-embeddings": _synth_embeddings,
          "selection": _selection, "select": _select, "compress": _compress, "embed": _embed, "assemble": _assemble,
          "evaluate": _evaluate}


def _child(stage: str, spec_json: str) -> None:
    spec = json.loads(spec_json)
    c0, t0 = _rusage_cpu(), time.perf_counter()
    info = STAGES[stage](spec)
    info.update(work_seconds=round(time.perf_counter() - t0, 3), work_cpu_seconds=round(_rusage_cpu() - c0, 3))
    Path(spec["result"]).write_text(json.dumps(info))


# ----------------------------------------------------------------------------------------- the parent
def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _run_stage(stage: str, spec: dict, log) -> dict:
    """Run ``stage`` in a child process; wall, CPU and peak RSS from ``os.wait4``."""
    fd, result = tempfile.mkstemp(prefix="scale-", suffix=".json")
    os.close(fd)
    spec = {**spec, "result": result}
    before = _load()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--spec",
                             json.dumps(spec)], cwd=REPO)
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed ({proc.returncode}) with {spec}")
    info = json.loads(Path(result).read_text())
    os.unlink(result)
    row = {"stage": stage, "seconds": round(wall, 3), "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 3),
           "peak_rss_bytes": int(ru.ru_maxrss) * 1024, "load_before": before, "load_after": _load(),
           "busy": before[0] >= BUSY_LOAD, **info}
    log(f"  {stage}: {row['seconds']} s wall, {row['cpu_seconds']} s CPU, work {row['work_seconds']} s / "
        f"{row['work_cpu_seconds']} s CPU, peak RSS {row['peak_rss_bytes'] / 1e9:.2f} GB, load {before[0]}")
    return row


def _image_part(f: Fraction, args, log) -> dict:
    px, crop, tile = args.image_px, args.crop, args.tile
    src = REPO / "build" / "bench" / f"scale-{_tag(f)}-{px}px-rxrx3"
    rows: list[dict] = []
    if not (src / "metadata.csv").is_file():
        rows.append(_run_stage("synth-images", {"fraction": str(f), "px": px, "dest": str(src),
                                                "workers": args.workers}, log))
    work = Path(tempfile.mkdtemp(prefix=f"rxcurate-scale-{_tag(f)}-", dir=REPO / "build" / "bench"))
    try:
        spec = {"fraction": str(f), "crop": crop, "tile": tile, "source": str(src), "work": str(work),
                "release": str(work / "release"), "workers": args.workers}
        for stage in ("select", "compress", "embed", "assemble"):
            rows.append(_run_stage(stage, spec, log))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sel = next(r for r in rows if r["stage"] == "select")
    return {"fraction": _label(f), "part": "images", "wells": sel["wells"], "images": sel["images"],
            "image_px": px, "crop": crop, "tile": tile, "stages": rows}


def _meta_part(f: Fraction, args, log) -> dict:
    rows: list[dict] = []
    meta = REPO / "build" / "bench" / f"scale-{_tag(f)}-meta-rxrx3"
    if not (meta / "metadata.csv").is_file():
        rows.append(_run_stage("synth-metadata", {"fraction": str(f), "px": None, "dest": str(meta),
                                                  "workers": 1}, log))
    rows.append(_run_stage("selection", {"source": str(meta)}, log))
    emb = REPO / "build" / "bench" / f"scale-{_tag(f)}-emb{DIM}"
    if not (emb / "metadata.csv").is_file():
        rows.append(_run_stage("synth-embeddings", {"fraction": str(f), "dest": str(emb)}, log))
    rows.append(_run_stage("evaluate", {"source": str(emb)}, log))
    sel = next(r for r in rows if r["stage"] == "selection")
    emb_wells = int(len(pd.read_csv(emb / "metadata.csv", usecols=["well_id"])))
    src_wells = int(len(pd.read_csv(meta / "metadata.csv", usecols=["well_id"])))
    for r in rows:
        r["wells"] = {"selection": sel["wells"], "evaluate": emb_wells}.get(r["stage"], r.get("wells"))
    return {"fraction": _label(f), "part": "metadata", "wells": sel["wells"], "source_wells": src_wells,
            "embedding_wells": emb_wells, "embedding_dim": DIM, "images": 0, "stages": rows}


def _slope(points: list[tuple[float, float]]) -> float | None:
    pts = [(x, y) for x, y in points if x > 0 and y > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    lx, ly = np.log([x for x, _ in pts]), np.log([y for _, y in pts])
    return round(float(np.polyfit(lx, ly, 1)[0]), 3)


def _exponents(parts: list[dict]) -> dict:
    by: dict[str, list[dict]] = {}
    for p in parts:
        for r in p["stages"]:
            wells = r.get("wells") if r["stage"] in ("selection", "evaluate") else p["wells"]
            if r["stage"] in ("synth-metadata",):
                wells = p["wells"]
            by.setdefault(r["stage"], []).append({**r, "x_wells": wells})
    out = {}
    for stage, rows in sorted(by.items()):
        if stage == "noop":
            continue
        cpu = _slope([(r["x_wells"], r["work_cpu_seconds"]) for r in rows])
        wall = _slope([(r["x_wells"], r["work_seconds"]) for r in rows])
        out[stage] = {"wells": [r["x_wells"] for r in rows], "cpu_exponent": cpu, "wall_exponent": wall,
                      "release_stage": not stage.startswith("synth"),
                      "meets_goal": cpu is None or cpu <= EXPONENT_GOAL}
    return out


def _extrapolate(parts: list[dict]) -> dict:
    """The real RxRx3-core: codec costs per image, embed from embed.json, parallel efficiency from compress.json."""
    results = REPO / "benchmarks" / "results"
    comp = json.loads((results / "compress.json").read_text())
    emb = json.loads((results / "embed.json").read_text())
    stage_over_raw = comp["stage_over_raw"]
    speedup = comp["speedup_2_workers"]
    eff2 = speedup / 2
    per_image = sum(REAL_SECONDS_PER_IMAGE.values()) / stage_over_raw
    compress_core_s = RXRX3_CORE_IMAGES * per_image
    stage = next(s for s in emb["stage"] if s["encoder"] == "baseline")
    cores_used = 1 + stage["workers"] if emb.get("torch_threads", 1) <= 1 else emb["torch_threads"]
    embed_core_s_per_well = cores_used / stage["wells_per_s"]
    embed_core_s = RXRX3_CORE_WELLS * embed_core_s_per_well
    full = next((p for p in parts if p["fraction"] == "full"), parts[-1])
    serial = {r["stage"]: r["seconds"] for r in full["stages"] if r["stage"] in ("selection", "evaluate")}
    # assemble at full size: its work grows with the release's files/rows; scaled linearly from the largest image run
    img = max((p for p in parts if p["part"] == "images"), key=lambda p: p["wells"], default=None)
    if img is not None:
        asm = next(r for r in img["stages"] if r["stage"] == "assemble")
        serial["assemble"] = round(asm["seconds"] * RXRX3_CORE_WELLS / img["wells"], 1)
    serial_s = sum(serial.values())

    def eff(n: int) -> float:
        return eff2 ** math.log2(n) if n > 1 else 1.0

    def wall(n: int, extra: float = 0.0) -> dict:
        e = eff(n)
        par = (compress_core_s + embed_core_s) / (n * e)
        return {"cores": n, "parallel_efficiency": round(e, 3),
                "compress_hours": round(compress_core_s / (n * e) / 3600, 2),
                "embed_hours": round(embed_core_s / (n * e) / 3600, 2), "serial_hours": round(serial_s / 3600, 3),
                "total_hours": round((par + serial_s + extra) / 3600, 2)}

    ray = RAY_CLUSTER
    n_ray = ray["nodes"] * ray["cores_per_node"]
    io_s = SOURCE_TB * 1e12 / (ray["nodes"] * ray["read_gb_per_s_per_node"] * 1e9)
    ray_row = wall(n_ray, ray["startup_seconds"])
    compute_h = ray_row["total_hours"]
    ray_row.update(nodes=ray["nodes"], cores_per_node=ray["cores_per_node"],
                   read_hours=round(io_s / 3600, 2), total_hours=round(max(compute_h, (io_s + serial_s) / 3600), 2),
                   bound="storage" if io_s / 3600 > compute_h else "compute")
    return {
        "wells": RXRX3_CORE_WELLS, "images": RXRX3_CORE_IMAGES, "source": "2048x2048 16-bit PNG, ~5 MB each",
        "seconds_per_image_one_core": {**REAL_SECONDS_PER_IMAGE, "stage_over_raw": stage_over_raw,
                                       "compress_stage": round(per_image, 5)},
        "embed_core_seconds_per_well": round(embed_core_s_per_well, 5),
        "core_hours": {"compress": round(compress_core_s / 3600, 2), "embed": round(embed_core_s / 3600, 2)},
        "serial_seconds": serial,
        "compress_speedup_2_workers": speedup,
        "parallel_efficiency_2_workers": round(eff2, 3),
        "on_cores": {str(n): wall(n) for n in CORES_SHOWN},
        "ray_cluster": ray_row,
        "assumes": (
            "compress per image = (PNG decode 50 ms + crop/8-bit 4 ms + JPEG 2000 13.5 ms) / compress.json "
            "stage_over_raw; embed = baseline encoder at embed.json's stage rate (512x512, 4 tiles of 256) in "
            "core-seconds (loader worker + torch threads); parallel efficiency per doubling of cores = compress.json "
            "2-worker speed-up / 2, compounded (eff(N) = eff2^log2 N); selection and evaluate run once, serially, at "
            "the full-size times measured here; assemble scaled linearly from the largest image run; Ray cluster: "
            f"{ray['nodes']} nodes x {ray['cores_per_node']} cores, {ray['startup_seconds']} s start-up, each node "
            f"reading the {SOURCE_TB} TB of source PNGs at {ray['read_gb_per_s_per_node']} GB/s from shared storage "
            "(wall = max(compute, read) + serial stages)"),
    }


def _rss_fit(parts: list[dict]) -> dict:
    """Peak RSS of the image stages against wells, fitted linearly (a + b x wells) and read at RxRx3-core's size."""
    img = [p for p in parts if p["part"] == "images"]
    out: dict[str, dict] = {}
    for stage in ("select", "compress", "embed", "assemble"):
        pts = [(p["wells"], r["peak_rss_bytes"]) for p in img for r in p["stages"] if r["stage"] == stage]
        if len({w for w, _ in pts}) < 2:
            continue
        b, a = np.polyfit([w for w, _ in pts], [m for _, m in pts], 1)
        out[stage] = {"bytes_per_well": round(float(b), 1), "intercept_bytes": int(a),
                      "at_rxrx3_core_bytes": int(a + b * RXRX3_CORE_WELLS),
                      "meets_goal": bool(a + b * RXRX3_CORE_WELLS < PEAK_RSS_GOAL_BYTES)}
    return out


def _derive(result: dict) -> None:
    """(Re)compute everything derived from ``result["parts"]``: exponents, peak memory, goals, extrapolation."""
    parts = result["parts"]
    exps = _exponents(parts)
    full = next((p for p in parts if p["fraction"] == "full"), parts[-1])  # full size unless a trial run
    peak_full = {r["stage"]: r["peak_rss_bytes"] for r in full["stages"]}
    largest = max((p for p in parts if p["part"] == "images"), key=lambda p: p["wells"], default=None)
    peak_img = {"fraction": largest["fraction"], **{r["stage"]: r["peak_rss_bytes"] for r in largest["stages"]}
                } if largest else {}
    fit = _rss_fit(parts)
    result.update({
        "exponents": exps,
        "exponent_goal": EXPONENT_GOAL,
        "peak_rss_full_size_bytes": peak_full,
        "peak_rss_largest_image_run_bytes": peak_img,
        "peak_rss_image_stages_at_full_size": fit,
        "peak_rss_goal_bytes": PEAK_RSS_GOAL_BYTES,
        "peak_rss_note": ("ru_maxrss of the stage's child process tree from os.wait4: the largest single process "
                          "(main or one worker), not the sum of parallel workers; image stages ran up to the largest "
                          "image fraction, their size at RxRx3-core is a linear fit a + b x wells of the image runs"),
        "meets_goals": {"exponents": all(e["meets_goal"] for e in exps.values() if e["release_stage"]),
                        "peak_rss_full_size": all(v < PEAK_RSS_GOAL_BYTES for v in peak_full.values()),
                        "peak_rss_image_stages_extrapolated": all(v["meets_goal"] for v in fit.values())},
        "rxrx3_core": _extrapolate(parts),
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-fractions", default="1/64,1/16")
    ap.add_argument("--with-1-8", action="store_true", help="add the 1/8 image screen (~27.8 k wells, ~167 k images)")
    ap.add_argument("--meta-fractions", default="1/64,1/8,1")
    ap.add_argument("--image-px", type=int, default=96)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--tile", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--engines", action="store_true", help="also run the local vs Ray engine comparison")
    ap.add_argument("--engine-wells", type=int, default=40)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scale.json")
    ap.add_argument("--readme", action="store_true", help="rewrite README.md's Performance section from the results")
    ap.add_argument("--readme-from", type=Path, help="only rewrite README.md's Performance section from this JSON")
    ap.add_argument("--reanalyse", type=Path, help="recompute the derived figures of this results JSON into --out")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        _child(args.stage, args.spec)
        return
    if args.readme_from:
        write_readme(json.loads(args.readme_from.read_text()))
        return
    if args.reanalyse:
        result = json.loads(args.reanalyse.read_text())
        _derive(result)
        atomic_write_json(args.out, result)
        if args.readme:
            write_readme(result)
        return

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    (REPO / "build" / "bench").mkdir(parents=True, exist_ok=True)
    load_start = _load()
    image_fr = [_frac(x) for x in args.image_fractions.split(",") if x]
    if args.with_1_8 and Fraction(1, 8) not in image_fr:
        image_fr.append(Fraction(1, 8))
    meta_fr = [_frac(x) for x in args.meta_fractions.split(",") if x]
    log("noop (child start-up: python + imports)")
    noop = _run_stage("noop", {}, log)
    parts: list[dict] = []
    for f in sorted(image_fr):
        log(f"image screen {_label(f)}")
        parts.append(_image_part(f, args, log))
    for f in sorted(meta_fr):
        log(f"metadata + embeddings {_label(f)}")
        parts.append(_meta_part(f, args, log))
    ran = sorted({_label(f) for f in image_fr}, key=lambda s: Fraction(s))
    import duckdb
    import imagecodecs
    import pyarrow
    import torch  # heavy: only for its version here (the embed child imports it to run)

    result: dict[str, Any] = {
        "benchmark": "scale",
        "recipe": str(CORE.relative_to(REPO)),
        "rxrx3_core_size": {"wells": RXRX3_CORE_WELLS, "images": RXRX3_CORE_IMAGES},
        "ran": {"image_fractions": ran, "metadata_fractions": [_label(f) for f in sorted(meta_fr)],
                "image_1_8": Fraction(1, 8) in image_fr,
                "note": ("image stages (select, compress, embed, assemble) ran at the image fractions with "
                         f"{args.image_px}x{args.image_px} images cropped to {args.crop}; selection and evaluate "
                         "at the metadata fractions, full size included; compress/embed at full size are "
                         "extrapolated (rxrx3_core)")
                + ("" if Fraction(1, 8) in image_fr else "; the 1/8 image screen did not run (--with-1-8 runs it)")},
        "sizes": [{"fraction": p["fraction"], "part": p["part"], "wells": p["wells"], "images": p["images"]}
                  for p in parts],
        "child_startup": noop,
        "parts": parts,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_start": load_start, "load_average_end": _load(),
                    "busy": load_start[0] >= BUSY_LOAD, "busy_load": BUSY_LOAD,
                    "busy_stages": sum(r["busy"] for p in parts for r in p["stages"])},
        "versions": {"rxcurate": __version__, "numpy": np.__version__, "pandas": pd.__version__,
                     "pyarrow": pyarrow.__version__, "duckdb": duckdb.__version__, "torch": torch.__version__,
                     "imagecodecs": imagecodecs.__version__},
    }
    _derive(result)
    if args.engines:
        result["engines"] = _engines(args.engine_wells, log)
    atomic_write_json(args.out, result)
    log(str(args.out))
    if args.readme:
        write_readme(result)
        log(f"{README}: {PERFORMANCE}")


# ------------------------------------------------------------------------------ README "Performance"
README = REPO / "README.md"
PERFORMANCE = "## Performance"


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f}"


def performance_markdown(r: dict) -> str:
    """The README's "Performance" section, every figure from scale.json ``r`` (tests/test_benchmark_results.py
    checks the README against it)."""
    x = r["rxrx3_core"]
    img = [p for p in r["parts"] if p["part"] == "images"]
    meta = [p for p in r["parts"] if p["part"] == "metadata"]
    largest = {}
    for p in r["parts"]:
        for row in p["stages"]:
            if not row["stage"].startswith("synth") and row["stage"] != "noop":
                if row["stage"] not in largest or p["wells"] > largest[row["stage"]][0]["wells"]:
                    largest[row["stage"]] = (p, row)
    lines = [PERFORMANCE, "",
             f"Measured by `benchmarks/scale.py` ([benchmarks/results/scale.json](benchmarks/results/scale.json)) on "
             f"{r['machine']['cpu_count']} CPU cores (1-minute load {r['machine']['load_average_start'][0]} at the "
             f"start, {r['machine']['busy_stages']} stage runs on a busy machine: compare CPU seconds). The "
             f"RxRx3-core recipe ran on synthetic screens of "
             + ", ".join(f"{p['fraction']} ({p['wells']:,} wells, {p['images']:,} images)" for p in img)
             + f" of RxRx3-core ({r['rxrx3_core_size']['wells']:,} wells, {r['rxrx3_core_size']['images']:,} images; "
             f"{img[0]['image_px'] if img else 0}x{img[0]['image_px'] if img else 0} images cropped to "
             f"{img[0]['crop'] if img else 0}), and without images at "
             + ", ".join(f"{p['fraction']} ({p['wells']:,} selected of {p['source_wells']:,} source wells; "
                         f"{p['embedding_wells']:,} x {p['embedding_dim']} embeddings)" for p in meta)
             + ". Each stage runs in its own process; the exponent is the log-log slope of its CPU time against "
             "wells over the sizes it ran at (goal <= 1.1).", "",
             "| stage | largest run | wells | wall s | CPU s | peak RSS GB | peak RSS GB at RxRx3-core size "
             "| exponent (CPU) | exponent (wall) |",
             "|---|---|---|---|---|---|---|---|---|"]
    fit = r.get("peak_rss_image_stages_at_full_size", {})

    def at_full(stage: str, p: dict, row: dict) -> str:
        if p["fraction"] == "full":
            return f"{_gb(row['peak_rss_bytes'])} (measured)"
        if stage in fit:
            return f"{_gb(fit[stage]['at_rxrx3_core_bytes'])} (linear fit)"
        return "-"

    for stage, (p, row) in largest.items():
        e = r["exponents"][stage]
        wells = row["wells"] if stage in ("selection", "evaluate") else p["wells"]
        lines.append(f"| {stage} | {p['fraction']} | {wells:,}"
                     f" | {row['work_seconds']} | {row['work_cpu_seconds']} | {_gb(row['peak_rss_bytes'])} "
                     f"| {at_full(stage, p, row)} | {e['cpu_exponent']} | {e['wall_exponent']} |")
    on = x["on_cores"]
    ray = x["ray_cluster"]
    lines += ["",
              f"The real RxRx3-core (2048x2048 16-bit PNGs) extrapolated: compress {x['core_hours']['compress']} "
              f"core-hours ({x['seconds_per_image_one_core']['compress_stage']} s per image on one core), embed "
              f"(baseline encoder) {x['core_hours']['embed']} core-hours; a whole release takes "
              + ", ".join(f"{on[k]['total_hours']} h on {k} cores" for k in sorted(on, key=int))
              + f" (parallel efficiency {x['parallel_efficiency_2_workers']} per doubling, from compress.json's "
              f"2-worker speed-up {x['compress_speedup_2_workers']}), and {ray['total_hours']} h on a Ray cluster of "
              f"{ray['nodes']} x {ray['cores_per_node']} cores ({ray['bound']}-bound: {ray['read_hours']} h to read "
              f"the source at the assumed storage rate). Assumptions: `rxrx3_core.assumes` in scale.json. Other "
              "measurements: [compress.json](benchmarks/results/compress.json) (stage vs raw codec loop, 2-worker "
              "speed-up, selection over 2.2 M wells), [embed.json](benchmarks/results/embed.json), "
              "[evaluate.json](benchmarks/results/evaluate.json) (rxcurate's recall against EFAAR's: see "
              "evaluate.json), [killtest.json](benchmarks/results/killtest.json), "
              "[validity.json](benchmarks/results/validity.json).", ""]
    return "\n".join(lines)


def readme_section(text: str) -> str:
    """The "Performance" section of README text (up to the next "## " heading), or ""."""
    start = text.find("\n" + PERFORMANCE + "\n")
    if start < 0:
        return ""
    end = text.find("\n## ", start + 1)
    return text[start + 1: end + 1 if end >= 0 else len(text)]


def write_readme(r: dict) -> None:
    text = README.read_text(encoding="utf-8")
    old = readme_section(text)
    new = performance_markdown(r)
    if old:
        text = text.replace(old, new)
    else:
        text = text.rstrip("\n") + "\n\n" + new
    from rxcurate.io import atomic_write_text

    atomic_write_text(README, text)


# ------------------------------------------------------------------ the engine comparison (--engines)
def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _engines(wells: int, log) -> dict:
    """compress and embed with the local and the Ray engine, 1 and 2 cores, on the demo screen (Ray warm runs)."""
    import ray  # heavy: only the engine comparison needs it
    import torch  # heavy: only the engine comparison needs it
    from compress import _bench_manifest as bench_manifest
    from compress import _source as bench_source

    from rxcurate.compress import compress
    from rxcurate.embed import run_embed
    from rxcurate.layout import read_lockfile
    from rxcurate.runners import RayRunner
    from rxcurate.select import select

    source = bench_source(None, "demo", 0)
    tmp = Path(tempfile.mkdtemp(prefix="rxcurate-scale-engines-"))
    configs = [{"engine": "local", "cores": 1}, {"engine": "local", "cores": 2},
               {"engine": "ray", "cores": 1}, {"engine": "ray", "cores": 2}]

    def timed(fn, cfg: dict) -> dict:
        if cfg["engine"] != "ray":
            t0 = time.perf_counter()
            digest = fn()
            return {"seconds": time.perf_counter() - t0, "digest": digest}
        t0 = time.perf_counter()
        ray.init(num_cpus=cfg["cores"], include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        startup = time.perf_counter() - t0
        try:
            fn()
            t0 = time.perf_counter()
            digest = fn()
            return {"seconds": time.perf_counter() - t0, "ray_startup_seconds": startup, "digest": digest}
        finally:
            ray.shutdown()

    try:
        m = bench_manifest(wells, tmp, name="bench-scale", embeddings=False)
        lock_dir = tmp / "lock"
        select(m, source=source, workdir=lock_dir)
        n_images = read_lockfile(lock_dir).n_images
        out: dict[str, list[dict]] = {"compress": [], "embed": []}
        for cfg in configs:
            log(f"engines: compress {cfg}")
            work = tmp / "c"

            def run_c(cfg: dict = cfg, work: Path = work) -> str:
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                shutil.copy2(lock_dir / "lockfile.parquet", work / "lockfile.parquet")
                if cfg["engine"] == "ray":
                    compress(m, source=source, workdir=work, runner=RayRunner(), force=True)
                else:
                    compress(m, source=source, workdir=work, workers=cfg["cores"], force=True)
                return _digest(work / "data")

            r = timed(run_c, cfg)
            out["compress"].append({**cfg, "images": n_images, "seconds": round(r["seconds"], 3),
                                    "images_per_s_per_core": round(n_images / r["seconds"] / cfg["cores"], 2),
                                    "data_sha256": r["digest"]})
        release = tmp / "release"
        shutil.copytree(tmp / "c", release)
        torch.set_num_threads(1)
        for cfg in configs:
            log(f"engines: embed {cfg}")
            work = tmp / "e"

            def run_e(cfg: dict = cfg, work: Path = work) -> str:
                shutil.rmtree(work, ignore_errors=True)
                shutil.copytree(release, work, ignore=shutil.ignore_patterns("embeddings", ".embed-state"))
                if cfg["engine"] == "ray":
                    run_embed(work, "baseline", tile=256, runner=RayRunner(), device="cpu")
                else:
                    run_embed(work, "baseline", tile=256, num_workers=cfg["cores"] - 1, device="cpu")
                return _digest(work / "embeddings")

            r = timed(run_e, cfg)
            out["embed"].append({**cfg, "wells": wells, "seconds": round(r["seconds"], 3),
                                 "wells_per_s_per_core": round(wells / r["seconds"] / cfg["cores"], 3),
                                 "embeddings_sha256": r["digest"]})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**out, "ray": ray.__version__,
            "same_bytes": {k: len({r.get("data_sha256", r.get("embeddings_sha256")) for r in v}) == 1
                           for k, v in out.items()}}


if __name__ == "__main__":
    main()
