"""Throughput per core of compress and embed on the local and the Ray engine, extrapolated to RxRx3-core.

    .venv/bin/python benchmarks/scale.py [--wells 40] [--out benchmarks/results/scale.json]

On the first ``--wells`` wells of the ``demo`` synthetic screen (544x544 uint16 PNGs, generated into
``build/bench/demo-rxrx3`` on first use) with the rxrx3-core transform (512x512 crops, JPEG 2000 at 12.8 KB):

- ``compress``: the stage with the local engine (1 and 2 worker processes) and the Ray engine (a local Ray started
  with 1 and 2 CPUs; Ray's start-up is timed apart), images/s and images/s per core, same bytes checked;
- ``embed``: the baseline encoder (512 -> 4 tiles of 256) with the local engine (1 core: in-process decoding;
  2 cores: one decoding worker + the encoding process) and the Ray engine (1 and 2 CPUs), wells/s per core;
- Ray rows: ``cold_seconds`` is the first run on a fresh Ray (worker processes and actors start), ``seconds`` a
  second, warm run on the same instance (what a long job sees); rates use ``seconds``;
- ``png_2048``: extra PNG decode time of a 2048x2048 uint16 source image (RxRx3's size) over a 544x544 one, measured
  here, added per image to the compress rate to extrapolate to the real source;
- ``rxrx3_core``: core-hours for 222,601 wells x 6 channels (1,335,606 images) per stage and engine, and the wall
  time on N cores assuming the per-core rate holds (units and batches are independent tasks).

The machine may be shared: the load average at start and end is recorded; compare figures from one run only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RXCURATE_PROGRESS", "0")

import imagecodecs  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from rxcurate import __version__  # noqa: E402
from rxcurate.compress import compress  # noqa: E402
from rxcurate.embed import run_embed  # noqa: E402
from rxcurate.io import atomic_write_json  # noqa: E402
from rxcurate.layout import read_lockfile  # noqa: E402
from rxcurate.runners import RayRunner  # noqa: E402
from rxcurate.select import select  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compress import _bench_manifest as bench_manifest  # noqa: E402
from compress import _source as bench_source  # noqa: E402

CORE = REPO / "manifests" / "rxrx3-core.yaml"
RXRX3_CORE_WELLS = 222_601
CHANNELS = 6
CORES_SHOWN = (1, 8, 32, 128)
TILE = 256


def _source(preset: str = "demo", seed: int = 0) -> Path:
    return bench_source(None, preset, seed)


def _manifest(wells: int, folder: Path):
    return bench_manifest(wells, folder, name="bench-scale", embeddings=False)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


class _Ray:
    """A local Ray with ``cpus`` CPUs for the engine to reuse; its start-up is timed apart."""

    def __init__(self, cpus: int) -> None:
        self.cpus = cpus

    def __enter__(self) -> float:
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=self.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        return time.perf_counter() - t0

    def __exit__(self, *exc) -> None:
        import ray

        ray.shutdown()


def _configs() -> list[dict]:
    return [{"engine": "local", "cores": 1}, {"engine": "local", "cores": 2},
            {"engine": "ray", "cores": 1}, {"engine": "ray", "cores": 2}]


def _timed(fn, cfg: dict) -> dict:
    """Run ``fn()`` once (local), or twice on one fresh local Ray: ``cold`` includes starting Ray's worker processes
    and actors, ``seconds`` is the warm run (the steady state of a long job)."""
    if cfg["engine"] != "ray":
        t0 = time.perf_counter()
        digest = fn()
        return {"seconds": time.perf_counter() - t0, "ray_startup_seconds": 0.0, "cold_seconds": None,
                "digest": digest}
    with _Ray(cfg["cores"]) as startup:
        t0 = time.perf_counter()
        first = fn()
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        digest = fn()
        warm = time.perf_counter() - t0
    assert digest == first
    return {"seconds": warm, "ray_startup_seconds": startup, "cold_seconds": cold, "digest": digest}


def _run_compress(m, source: Path, lock_dir: Path, work: Path, cfg: dict) -> dict:
    def run() -> str:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        shutil.copy2(lock_dir / "lockfile.parquet", work / "lockfile.parquet")
        if cfg["engine"] == "ray":
            compress(m, source=source, workdir=work, runner=RayRunner(), force=True)
        else:
            compress(m, source=source, workdir=work, workers=cfg["cores"], force=True)
        return _digest(work / "data")

    return _timed(run, cfg)


def _run_embed(release: Path, work: Path, cfg: dict) -> dict:
    def run() -> str:
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(release, work, ignore=shutil.ignore_patterns("embeddings", ".embed-state"))
        if cfg["engine"] == "ray":
            run_embed(work, "baseline", tile=TILE, runner=RayRunner(), device="cpu")
        else:
            run_embed(work, "baseline", tile=TILE, num_workers=cfg["cores"] - 1, device="cpu")
        return _digest(work / "embeddings")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core encodes; the second core (if any) decodes
    try:
        return _timed(run, cfg)
    finally:
        torch.set_num_threads(threads)


def _png_2048_extra(source: Path, lock_dir: Path, repeats: int = 5) -> dict:
    """Decode time of a 2048x2048 uint16 PNG (a demo image upsampled, with shot-like noise) minus a demo one."""
    from scipy.ndimage import zoom

    rel = read_lockfile(lock_dir).table.column("images").to_pylist()[0][0]
    small_png = (source / rel).read_bytes()
    small = imagecodecs.png_decode(small_png)
    rng = np.random.default_rng(0)
    big = zoom(small.astype(np.float32), 2048 / small.shape[0], order=1)
    big = np.clip(big + rng.normal(0, 1, big.shape) * np.sqrt(np.maximum(big, 1)), 0, 65535).astype(np.uint16)
    big_png = imagecodecs.png_encode(big)

    def best(data: bytes) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            imagecodecs.png_decode(data)
            times.append(time.perf_counter() - t0)
        return min(times)

    t_small, t_big = best(small_png), best(big_png)
    return {"demo_shape": list(small.shape), "demo_png_bytes": len(small_png), "demo_decode_seconds": round(t_small, 5),
            "shape": list(big.shape), "png_bytes": len(big_png), "decode_seconds": round(t_big, 5),
            "extra_seconds_per_image": round(max(t_big - t_small, 0.0), 5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wells", type=int, default=40)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scale.json")
    args = ap.parse_args()

    import ray

    load_start = os.getloadavg()
    source = _source()
    tmp = Path(tempfile.mkdtemp(prefix="rxcurate-scale-"))
    try:
        m = _manifest(args.wells, tmp)
        lock_dir = tmp / "lock"
        select(m, source=source, workdir=lock_dir)
        n_images = read_lockfile(lock_dir).n_images
        n_wells = read_lockfile(lock_dir).table.num_rows

        comp = []
        for cfg in _configs():
            print(f"compress {cfg} ...", file=sys.stderr)
            r = _run_compress(m, source, lock_dir, tmp / "c", cfg)
            rate = n_images / r["seconds"]
            comp.append({**cfg, "images": n_images, "seconds": round(r["seconds"], 3),
                         "cold_seconds": r["cold_seconds"] and round(r["cold_seconds"], 3),
                         "ray_startup_seconds": round(r["ray_startup_seconds"], 3), "images_per_s": round(rate, 2),
                         "images_per_s_per_core": round(rate / cfg["cores"], 2), "data_sha256": r["digest"]})
        release = tmp / "release"
        shutil.rmtree(release, ignore_errors=True)
        shutil.copytree(tmp / "c", release)

        emb = []
        for cfg in _configs():
            print(f"embed {cfg} ...", file=sys.stderr)
            r = _run_embed(release, tmp / "e", cfg)
            rate = n_wells / r["seconds"]
            emb.append({**cfg, "wells": n_wells, "images": n_images, "seconds": round(r["seconds"], 3),
                        "cold_seconds": r["cold_seconds"] and round(r["cold_seconds"], 3),
                        "ray_startup_seconds": round(r["ray_startup_seconds"], 3), "wells_per_s": round(rate, 3),
                        "wells_per_s_per_core": round(rate / cfg["cores"], 3), "embeddings_sha256": r["digest"]})
        png = _png_2048_extra(source, lock_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    core_images = RXRX3_CORE_WELLS * CHANNELS
    extrap = {"wells": RXRX3_CORE_WELLS, "images": core_images, "crop": [512, 512],
              "assumes": "the measured per-core rate holds on N cores (independent Ray tasks/actors; shared storage "
                         "must keep up: ~6.7 TB of 2048x2048 PNGs in, ~17 GB of shards out)",
              "compress": [], "embed": []}
    extra = png["extra_seconds_per_image"]
    for c in comp:
        per_img = 1.0 / c["images_per_s_per_core"]
        hours_demo = core_images * per_img / 3600
        hours_real = core_images * (per_img + extra) / 3600
        extrap["compress"].append({"engine": c["engine"], "measured_cores": c["cores"],
                                   "core_hours_demo_source": round(hours_demo, 2),
                                   "core_hours_2048_source": round(hours_real, 2),
                                   "wall_hours_2048_source": {str(n): round(hours_real / n, 2) for n in CORES_SHOWN}})
    for e in emb:
        hours = RXRX3_CORE_WELLS / e["wells_per_s_per_core"] / 3600
        extrap["embed"].append({"engine": e["engine"], "measured_cores": e["cores"], "encoder": "baseline",
                                "core_hours": round(hours, 2),
                                "wall_hours": {str(n): round(hours / n, 2) for n in CORES_SHOWN}})

    def speedup(rows: list[dict], engine: str, key: str) -> float:
        one, two = (next(r for r in rows if r["engine"] == engine and r["cores"] == k) for k in (1, 2))
        return round(two[key] / one[key], 3)

    result = {
        "benchmark": "scale",
        "input": {"source": str(source.relative_to(REPO)), "wells": n_wells, "images": n_images,
                  "transform": m.transform_section(), "tile": TILE},
        "compress": comp,
        "embed": emb,
        "same_bytes": {"compress": len({c["data_sha256"] for c in comp}) == 1,
                       "embed": len({e["embeddings_sha256"] for e in emb}) == 1},
        "speedup_2_over_1": {f"{s}_{eng}": speedup(rows, eng, key) for s, rows, key in
                             (("compress", comp, "images_per_s"), ("embed", emb, "wells_per_s"))
                             for eng in ("local", "ray")},
        "png_2048": png,
        "rxrx3_core": extrap,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_start": [round(x, 2) for x in load_start],
                    "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "versions": {"rxcurate": __version__, "ray": ray.__version__, "torch": torch.__version__,
                     "imagecodecs": imagecodecs.__version__},
    }
    atomic_write_json(args.out, result)
    print(args.out)


if __name__ == "__main__":
    main()
