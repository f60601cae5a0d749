"""Throughput of the embed stage, its loader alone and the encoders' forward pass alone, in one run.

    .venv/bin/python benchmarks/embed.py [--wells 48] [--workers 1] [--device auto] [--out FILE]

Builds a release folder of synthetic 512x512 six-channel wells (rendered like the synthetic screens, JPEG 2000 at
about RxRx3-core's 12.8 KB per image) and reports:
- ``stage``: end-to-end ``run_embed`` wells/s and images/s per encoder (openphenom with seeded random weights; on CPU
  over a few wells only, it is ~100 GFLOP per 256x256 six-channel tile);
- ``loader``: the DataLoader alone (shard read + JPEG 2000 decode + tiling), sites/s and images/s;
- ``forward``: each encoder on synthetic uint8 tensors already in memory, tiles/s and the equivalent wells/s
  (4 tiles per 512x512 site); for openphenom the analytical FLOPs per tile and, on CUDA, the achieved share of the
  GPU's dense bf16 peak;
- ``bottleneck``: whether loading or the encoder limits each stage run.

Results go to benchmarks/results/embed.json by default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import imagecodecs
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rxcurate import __version__  # noqa: E402
from rxcurate.embed import SiteTiles, collate_sites, plan_embed, run_embed  # noqa: E402
from rxcurate.encoders import FINAL, get_encoder, resolve_device  # noqa: E402
from rxcurate.synth.render import render_site  # noqa: E402

CHANNELS = 6
SIZE = 512
TILE = 256
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), from NVIDIA's data sheets.
BF16_PEAK_TFLOPS = {"H100 SXM": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4,
                    "A100": 312.0, "L40S": 362.0, "L4": 121.0}
REAL_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "rxrx3-core-sample"


def build_release(root: Path, n_wells: int, seed: int = 0, level: float = 50.0) -> tuple[Path, float]:
    """A release folder of ``n_wells`` distinct rendered wells; returns it and the mean bytes per image."""
    rng = np.random.default_rng(seed)
    rows, sizes = [], []
    for w in range(n_wells):
        ph = rng.normal(scale=0.8, size=14)
        gain = np.exp(rng.normal(scale=0.1, size=CHANNELS))
        img = render_site(ph, gain, rng.normal(scale=0.05, size=CHANNELS), np.array([0.1, 0.3, -0.2]), size=SIZE,
                          cells=120, sigma=6.0, rng=rng, bits=8)
        addr = f"{chr(ord('A') + w // 48)}{w % 48 + 1:02d}"
        for c in range(CHANNELS):
            data = imagecodecs.jpeg2k_encode(img[c], level=level)
            sizes.append(len(data))
            rows.append((f"bench/Plate1/{addr}_s1_{c + 1}", data))
    rows.sort()
    (root / "data").mkdir(parents=True)
    jp2 = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    n_shards = 2
    cuts = np.linspace(0, len(rows), n_shards + 1).astype(int)
    for i in range(n_shards):
        part = rows[cuts[i] : cuts[i + 1]]
        pq.write_table(pa.table({"__key__": [k for k, _ in part],
                                 "jp2": pa.array([{"bytes": d, "path": None} for _, d in part], jp2)}),
                       root / "data" / f"train-{i:05d}-of-{n_shards:05d}.parquet", row_group_size=120,
                       compression="none")
    wells = sorted({f"bench_1_{k.split('/')[2].split('_')[0]}" for k, _ in rows})
    pq.write_table(pa.table({"well_id": wells}), root / "metadata.parquet")
    return root, float(np.mean(sizes))


def bench_loader(root: Path, workers: int, batch_sites: int = 16) -> dict:
    plan = plan_embed(root, TILE)
    loader = torch.utils.data.DataLoader(
        SiteTiles(plan.shards, plan.sites, plan.image_shape, plan.tile),
        batch_size=batch_sites, num_workers=workers, collate_fn=collate_sites,
        prefetch_factor=4 if workers else None,
    )
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        assert not batch["error"], batch["error"]
        n += int(batch["counts"].numel())
    dt = time.perf_counter() - t0
    return {"workers": workers, "sites": n, "seconds": round(dt, 3), "sites_per_s": round(n / dt, 2),
            "images_per_s": round(n * CHANNELS / dt, 1)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_forward(name: str, device: torch.device, batch: int, seconds: float = 3.0) -> dict:
    enc = get_encoder(name, channels=CHANNELS, tile_size=TILE, allow_random=name != "baseline", device=device)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(batch, CHANNELS, TILE, TILE),
                                                           dtype=np.uint8)).to(device)
    enc.encode(x[: min(batch, 2)])  # warm-up
    _sync(device)
    t0, n = time.perf_counter(), 0
    while True:
        enc.encode(x)[FINAL].sum().item()  # .item() waits for the device
        n += batch
        dt = time.perf_counter() - t0
        if dt >= seconds:
            break
    out = {"encoder": name, "device": device.type, "precision": enc.precision, "batch_tiles": batch,
           "tiles": n, "seconds": round(dt, 3), "tiles_per_s": round(n / dt, 2),
           "wells_per_s_equiv": round(n / dt / ((SIZE // TILE) ** 2), 2)}
    flops = enc.flops_per_tile(CHANNELS)
    if flops:
        achieved = flops * n / dt
        out["gflop_per_tile"] = round(flops / 1e9, 2)
        out["achieved_tflops"] = round(achieved / 1e12, 4)
        if device.type == "cuda":
            gpu = torch.cuda.get_device_name(device)
            peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in gpu), None)
            out["gpu"] = gpu
            out["bf16_peak_tflops"] = peak
            out["fraction_of_bf16_peak"] = round(achieved / (peak * 1e12), 4) if peak else None
    return out


def bench_stage(root: Path, name: str, device: str, workers: int, batch: int) -> dict:
    shutil.rmtree(root / "embeddings", ignore_errors=True)
    shutil.rmtree(root / ".embed-state", ignore_errors=True)
    wells = len(pq.read_table(root / "metadata.parquet"))
    t0 = time.perf_counter()
    run_embed(root, name, device=device, batch_size=batch, num_workers=workers, tile=TILE,
              allow_random=name != "baseline")
    dt = time.perf_counter() - t0
    return {"encoder": name, "wells": wells, "workers": workers, "batch_tiles": batch, "seconds": round(dt, 3),
            "wells_per_s": round(wells / dt, 3), "images_per_s": round(wells * CHANNELS / dt, 2)}


def bench_real_decode() -> dict | None:
    files = sorted(REAL_SAMPLE.glob("*.jp2"))
    if not files:
        return None
    blobs = [f.read_bytes() for f in files]
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 1.0:
        for b in blobs:
            imagecodecs.jpeg2k_decode(b)
        n += len(blobs)
    return {"files": len(blobs), "bytes_per_image": round(float(np.mean([len(b) for b in blobs])), 1),
            "images_per_s_one_core": round(n / (time.perf_counter() - t0), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wells", type=int, default=48, help="wells in the synthetic release (baseline stage run)")
    ap.add_argument("--openphenom-wells", type=int, default=0,
                    help="wells for the openphenom stage run (default: 4 on CPU, all on CUDA)")
    ap.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) - 1)))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=0, help="tiles per forward (default: 64 on CPU, 256 on CUDA)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "embed.json")
    args = ap.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (256 if cuda else 64)
    op_wells = args.openphenom_wells or (args.wells if cuda else 4)

    result: dict = {
        "rxcurate_version": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device.type,
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "image": {"size": SIZE, "channels": CHANNELS, "tile": TILE, "tiles_per_image": (SIZE // TILE) ** 2},
        "load_average_start": [round(v, 2) for v in os.getloadavg()],  # other work on a shared machine skews figures
    }
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root, mean_bytes = build_release(Path(tmp) / "rel", args.wells)
        result["release"] = {"wells": args.wells, "mean_bytes_per_image": round(mean_bytes, 1),
                             "build_seconds": round(time.perf_counter() - t0, 2)}
        result["real_jp2_decode"] = bench_real_decode()
        result["loader"] = [bench_loader(root, 0)] + ([bench_loader(root, args.workers)] if args.workers else [])
        result["forward"] = [bench_forward("baseline", device, batch),
                             bench_forward("openphenom", device, batch if cuda else 8)]
        stages = [bench_stage(root, "baseline", device.type, args.workers, batch)]
        small, _ = build_release(Path(tmp) / "small", op_wells, seed=1) if op_wells != args.wells else (root, 0.0)
        stages.append(bench_stage(small, "openphenom", device.type, args.workers, batch))
        result["stage"] = stages
    loader_sites = max(r["sites_per_s"] for r in result["loader"])
    for stage, fwd in zip(result["stage"], result["forward"], strict=True):
        stage["loader_sites_per_s"] = loader_sites
        stage["forward_wells_per_s_equiv"] = fwd["wells_per_s_equiv"]
        stage["bottleneck"] = "loading" if loader_sites < fwd["wells_per_s_equiv"] else "encoder"
    result["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
