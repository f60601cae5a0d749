"""`rxcurate compress`: turn the lockfile's source images into versioned Parquet shards, deterministically.

Two phases, both resumable, state in ``<workdir>/.compress-state/`` (:class:`rxcurate.checkpoint.Checkpoint`):

1. **Encode.** Wells, in ``__key__`` order, are cut into fixed units of ``WELLS_PER_UNIT`` wells (a constant, so
   units never depend on ``--workers`` or timing). The runner (:mod:`rxcurate.runners`: a local process pool,
   in-process when ``workers == 1``, or Ray tasks) runs :func:`encode_unit` on each pending unit: it reads each
   source PNG once (issue 17: select read only its header), refusing it before reading when its size or mtime
   differs from select's fingerprint (the lockfile's ``size``, the local ``.source.json``'s ``mtime_ns``), hashes
   the bytes it read (sha256, recorded as ``source_sha256`` in ``image_digests.parquet``), decodes, crops, converts
   to 8 bits and encodes it, and returns the unit file's bytes, which this process writes to
   ``units/uNNNNNN.arrow`` atomically (temp file + rename) as they arrive. A unit file therefore exists only when
   complete: it is the checkpoint. Without select's mtimes for this source (a lockfile copied to another machine,
   or ``--source`` naming a copy) only the sizes are checked. A changed source stops the run even with
   ``transform.on_error: skip``: the lockfile no longer describes it.
2. **Pack.** Once every unit exists, the shard plan is computed from the *actual* encoded sizes (whole wells,
   greedy up to ``output.shard_bytes``) and saved as ``plan.json``; shards are then written one by one
   (atomically) into ``data/``, each followed by a ``done/<shard>.json`` marker with its sha256 and size. Unit
   files whose rows are all in finished shards are deleted, so extra disk stays near one shard.

We pack from checkpointed bytes rather than from a size predicted by the codec's rate because OpenJPEG's rate is an
upper bound (most images come out a little smaller), and psnr/lossless/htj2k modes have no fixed size at all:
planning from real sizes keeps shards near the byte budget for every codec and makes the plan a pure function of
the lockfile and the transform. Encoded bytes do not depend on the process that made them, each row group is
written from one contiguous buffer and nothing depends on completion order, so serial, parallel and interrupted +
resumed runs give byte-identical files. A bad source image stops the run in phase 1, before any shard is written
(or, with ``transform.on_error: skip``, drops its well and lists it in the report).

Finally ``metadata.csv``/``metadata.parquet`` (the wells present, source-layout columns, sorted by well_id),
``compression_report.json`` and ``checksums.json`` (the completion marker) are written, stale shards from another
version removed, and the state folder deleted. A second run whose ``checksums.json`` matches is a no-op.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rxcurate.checkpoint import Checkpoint, read_record, remove_temp_files
from rxcurate.errors import CompressError, ManifestError
from rxcurate.io import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json,
    sha256_bytes,
    sha256_file,
)
from rxcurate.layout import (
    CHECKSUMS,
    COMPRESS_STATE,
    DATA_DIR,
    IMAGE_DIGESTS,
    METADATA_CSV,
    METADATA_PARQUET,
    REPORT,
    SHARD_GLOB,
    SOURCE_SHA256,
    Lockfile,
    read_lockfile,
    shard_name,
    source_fingerprints,
)
from rxcurate.manifest import Manifest, Transform, data_version
from rxcurate.progress import log, progress
from rxcurate.runners import LocalRunner, Runner
from rxcurate.shards import pack, write_shard
from rxcurate.source import RXRX1, read_regular_file
from rxcurate.transform import check_crop_fits, decode, max_abs_error, psnr, transform_image

STATE_FORMAT = 2  # 2: units carry the source images' sha256
WELLS_PER_UNIT = 8
UNIT_META_KEY = b"rxcurate.unit"
DONE_DIR = "done"  # in the state folder: one marker per finished shard
PLAN = "plan.json"  # in the state folder: the shard plan, once every unit is encoded
UNIT_SCHEMA = pa.schema([("well_id", pa.string()), ("__key__", pa.string()), ("data", pa.binary()),
                         (SOURCE_SHA256, pa.string())])
NO_MTIME = -1  # a UnitTask image without select's mtime_ns fingerprint: only its size is checked


# ---------------------------------------------------------------------------------------------------------------
# Phase 1: encode one unit (runs in a worker: a process of the pool, a Ray task, or this process)
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UnitTask:
    index: int
    source: str
    # (well_id, ((key, relpath, size, mtime_ns or NO_MTIME), ...)): select's fingerprint of each source image
    wells: tuple[tuple[str, tuple[tuple[str, str, int, int], ...]], ...]
    transform: Transform
    dtype: str
    shape: tuple[int, int]
    sample_threshold: int  # an image is in the quality sample when its 64-bit hash is below this


def in_sample(key: str, seed: int, threshold: int) -> bool:
    h = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")
    return h < threshold


class SourceChangedError(CompressError):
    """A source image differs from select's fingerprint (size or mtime): never skipped, the lockfile is stale."""


def _changed(path: Path, what: str) -> SourceChangedError:
    return SourceChangedError(f"{path}: source image changed since rxcurate select ({what}); rerun rxcurate select "
                              "(it records each image's size and modification time), or restore the original file")


def _check_fingerprint(path: Path, size: int, mtime_ns: int, st: os.stat_result) -> None:
    if st.st_size != size:
        raise _changed(path, f"{st.st_size} bytes, the lockfile records {size}")
    if mtime_ns != NO_MTIME and st.st_mtime_ns != mtime_ns:
        raise _changed(path, f"modified at mtime_ns {st.st_mtime_ns}, select saw {mtime_ns}")


def _encode_image(task: UnitTask, key: str, rel: str, size: int, mtime_ns: int, stats: dict[str, int],
                  samples: list[dict[str, Any]]) -> tuple[bytes, str]:
    """(encoded bytes, sha256 of the source bytes): the one read of a source image in a release."""
    path = Path(task.source) / rel
    fix = "restore it and rerun, or set transform.on_error: skip in the manifest to drop its well"
    try:
        data, _ = read_regular_file(path, check=lambda st: _check_fingerprint(path, size, mtime_ns, st))
    except FileNotFoundError:
        raise CompressError(f"{path}: source image is missing; {fix}") from None
    except IsADirectoryError:
        raise CompressError(f"{path}: source image is not a regular file (a FIFO, device or folder); {fix}") from None
    except OSError as exc:
        raise CompressError(f"{path}: source image is unreadable ({exc.strerror}); {fix}") from None
    if len(data) != size:  # written to while it was read
        raise _changed(path, f"{len(data)} bytes read, the lockfile records {size}")
    source_sha = sha256_bytes(data)
    try:
        img = imagecodecs.png_decode(data)
    except Exception as exc:  # imagecodecs raises PngError and others for damaged data
        raise CompressError(f"{path}: corrupt PNG ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__});"
                            f" {fix}") from None
    if img.ndim != 2 or str(img.dtype) != task.dtype or tuple(img.shape) != task.shape:
        raise CompressError(f"{path}: {img.dtype} image of shape {list(img.shape)}, expected a {task.dtype} "
                            f"grayscale image of shape {list(task.shape)} like the rest of the selection; {fix}")
    channel = int(key.rsplit("_", 1)[1])
    t = task.transform
    try:
        blob, img8, n_low, n_high = transform_image(img, t.crop, t.convert, t.codec, channel)
    except (ValueError, RuntimeError) as exc:
        raise CompressError(f"{path}: cannot transform ({exc}); {fix}") from None
    stats["clipped_low"] += n_low
    stats["clipped_high"] += n_high
    stats["pixels"] += int(img8.size)
    if in_sample(key, t.report_seed, task.sample_threshold):
        back = decode(blob)
        p = psnr(img8, back)
        samples.append({"key": key, "psnr": None if math.isinf(p) else round(p, 6),
                        "max_abs_error": max_abs_error(img8, back), "bytes": len(blob)})
    return blob, source_sha


def encode_unit(task: UnitTask) -> tuple[bytes, dict[str, Any]]:
    """Encode every image of a unit; return (the unit file's bytes, {index, images, skipped}). Pure: no writes, so
    any runner can run it where the source is readable; the stage writes the checkpoint."""
    well_col: list[str] = []
    key_col: list[str] = []
    blobs: list[bytes] = []
    source_shas: list[str] = []
    stats = {"clipped_low": 0, "clipped_high": 0, "pixels": 0}
    samples: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for well_id, images in task.wells:
        well_stats = dict.fromkeys(stats, 0)
        well_samples: list[dict[str, Any]] = []
        try:
            encoded = [_encode_image(task, k, r, size, mtime, well_stats, well_samples) for k, r, size, mtime in images]
        except CompressError as exc:
            if task.transform.on_error != "skip" or isinstance(exc, SourceChangedError):
                raise
            # paths relative to the source root: the report must not depend on where the source lives
            skipped.append({"well_id": well_id, "error": str(exc).replace(task.source.rstrip("/") + "/", "")})
            continue
        for k in stats:
            stats[k] += well_stats[k]
        samples.extend(well_samples)
        well_col.extend([well_id] * len(images))
        key_col.extend(k for k, _, _, _ in images)
        blobs.extend(b for b, _ in encoded)
        source_shas.extend(d for _, d in encoded)
    meta = {"stats": stats, "samples": samples, "skipped": skipped}
    table = pa.table([pa.array(well_col, pa.string()), pa.array(key_col, pa.string()), pa.array(blobs, pa.binary()),
                      pa.array(source_shas, pa.string())],
                     schema=UNIT_SCHEMA.with_metadata({UNIT_META_KEY: json.dumps(meta, sort_keys=True).encode()}))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes(), {"index": task.index, "images": sum(len(i) for _, i in task.wells),
                                          "skipped": len(skipped)}


def read_unit(path: Path) -> tuple[pa.Table, dict[str, Any]]:
    table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()  # zero-copy; the map lives with the table
    meta = json.loads(table.schema.metadata[UNIT_META_KEY])
    return table, meta


# ---------------------------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class CompressResult:
    workdir: Path
    data_version: str
    shards: list[Path]
    report: dict[str, Any]
    up_to_date: bool = False


def _ordered_wells(lock: Lockfile, mtimes: list[int] | None) -> list[tuple[str, tuple[tuple[str, str, int, int], ...]]]:
    """The lockfile's wells with select's fingerprint of each image (``mtimes``: select's mtime_ns of every image in
    lockfile order, or None: sizes only), in ``__key__`` order."""
    t = lock.table
    ids = t.column("well_id").to_pylist()
    keys = t.column("keys").to_pylist()
    paths = t.column("images").to_pylist()
    sizes = t.column("size").to_pylist()
    flat = iter(mtimes if mtimes is not None else [NO_MTIME] * sum(len(k) for k in keys))
    wells = [(w, tuple((k_, p_, int(s_), next(flat)) for k_, p_, s_ in zip(k, p, s, strict=True)))
             for w, k, p, s in zip(ids, keys, paths, sizes, strict=True)]
    wells.sort(key=lambda w: w[1][0][0])  # by first __key__: wells are contiguous blocks of the key order
    return wells


def _state_key(manifest: Manifest, version: str) -> dict[str, Any]:
    return {"format": STATE_FORMAT, "data_version": version, "wells_per_unit": WELLS_PER_UNIT,
            "output": {"shard_bytes": manifest.shard_bytes, "row_group_bytes": manifest.row_group_bytes}}


def _up_to_date(out: Path, key: dict[str, Any], state: Checkpoint) -> bool:
    sums = read_record(out / CHECKSUMS, {"data_version": key["data_version"], "output": key["output"]})
    if sums is None or state.active:
        return False
    return all((out / rel).is_file() and (out / rel).stat().st_size == v["size"] for rel, v in sums["files"].items())


def _source_folder(manifest: Manifest, lock: Lockfile, source: str | os.PathLike[str] | None) -> Path:
    if source is not None:
        src: Path | None = Path(source)
    elif manifest.source_root is not None:
        src = manifest.resolve_source()
    else:
        src = Path(lock.info["source_root"]) if lock.info.get("source_root") else None  # select's local hint
    if src is None or not src.is_dir():
        raise CompressError(f"source folder {src} does not exist: pass --source DIR (the screen rxcurate select read)")
    return src


def compress(manifest: Manifest, *, source: str | os.PathLike[str] | None = None,
             workdir: str | os.PathLike[str] | None = None, workers: int | None = 1,
             force: bool = False, runner: Runner | None = None) -> CompressResult:
    """Compress the lockfile's images into ``<workdir>/data/`` shards plus metadata, report and checksums.

    ``runner`` (default :class:`~rxcurate.runners.LocalRunner`) runs phase 1: locally a process pool of ``workers``
    (None = one per core), on a :class:`~rxcurate.runners.RayRunner` at most ``workers`` Ray tasks at once (None =
    every CPU of the cluster). The output bytes do not depend on the runner or ``workers``."""
    runner = runner or LocalRunner()
    check_manifest_codec(manifest)
    out = manifest.resolve_workdir(workdir)
    lock = read_lockfile(out, manifest)
    src = _source_folder(manifest, lock, source)
    check_crop_fits(manifest, lock.image_shape)
    version = data_version(lock.content_hash, manifest.transform_section())
    key = _state_key(manifest, version)
    state = Checkpoint(out, COMPRESS_STATE, busy=f"another rxcurate compress is running on {out}: wait for it to "
                       "finish (or use another --workdir)")
    if not force and _up_to_date(out, key, state):
        state.discard()  # a run killed while deleting its finished state
        log(f"{out}: up to date (data version {version[:12]})")
        return CompressResult(out, version, sorted((out / DATA_DIR).glob(SHARD_GLOB)), read_json(out / REPORT), True)

    with state.locked():
        if state.reset(key, subdirs=(DONE_DIR,)):
            log(f"discarding compress state of another data version or output settings in {state.folder}")
        state.remove_temp_files()
        remove_temp_files(out / DATA_DIR, [SHARD_GLOB])
        remove_temp_files(out, [METADATA_CSV, METADATA_PARQUET, REPORT, CHECKSUMS, IMAGE_DIGESTS])
        mtimes = source_fingerprints(out, lock.content_hash, src)
        if mtimes is None:
            log(f"{out}: no modification times from rxcurate select for the source {src} (another machine or a copy): "
                "checking the sizes of the source images only")
        wells = _ordered_wells(lock, mtimes)
        plan_path = state.folder / PLAN
        if not plan_path.is_file():
            _encode_all(manifest, lock, src, wells, state, workers, runner)
            atomic_write_json(plan_path, _make_plan(manifest, wells, state, version), indent=None)
        plan = read_json(plan_path)
        shards, digests = _pack(manifest, plan, state, out)
        result = _finish(manifest, lock, plan, shards, digests, out, version, key)
        state.done()
    state.discard()
    return result


def _unit_path(state: Checkpoint, index: int) -> Path:
    return state.unit(f"u{index:06d}.arrow")


def _encode_all(manifest: Manifest, lock: Lockfile, src: Path, wells: list[Any], state: Checkpoint,
                workers: int | None, runner: Runner) -> None:
    n_images = lock.n_images
    want = manifest.transform.report_sample_images
    threshold = min(1 << 64, (want << 64) // max(n_images, 1))
    tasks = []
    for index, start in enumerate(range(0, len(wells), WELLS_PER_UNIT)):
        tasks.append(UnitTask(index=index, source=str(src), wells=tuple(wells[start : start + WELLS_PER_UNIT]),
                              transform=manifest.transform, dtype=lock.info["image_dtype"], shape=lock.image_shape,
                              sample_threshold=threshold))
    pending = [t for t in tasks if not _unit_path(state, t.index).is_file()]
    done_images = n_images - sum(len(i) for t in pending for _, i in t.wells)
    if done_images:
        log(f"resuming: {len(tasks) - len(pending)} of {len(tasks)} units already encoded")
    with progress(n_images, "compress", "images") as advance:
        advance(done_images)
        with contextlib.closing(runner.map(encode_unit, pending, workers=workers)) as results:
            for i, (data, summary) in results:
                atomic_write_bytes(_unit_path(state, pending[i].index), data)
                advance(summary["images"])


def _make_plan(manifest: Manifest, wells: list[Any], state: Checkpoint, version: str) -> dict[str, Any]:
    """Read every unit's sizes and stats; cut shards at whole wells by image bytes."""
    n_units = math.ceil(len(wells) / WELLS_PER_UNIT)
    well_ids: list[str] = []
    well_bytes: list[int] = []
    well_rows: list[tuple[int, int, int]] = []  # (unit, row start, row stop)
    sizes_all: list[int] = []
    stats = {"clipped_low": 0, "clipped_high": 0, "pixels": 0}
    samples: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for u in range(n_units):
        table, meta = read_unit(_unit_path(state, u))
        for k in stats:
            stats[k] += meta["stats"][k]
        samples.extend(meta["samples"])
        skipped.extend(meta["skipped"])
        ids = table.column("well_id").to_pylist()
        sizes = pc.binary_length(table.column("data")).to_pylist()
        sizes_all.extend(sizes)
        start = 0
        for i in range(1, len(ids) + 1):
            if i == len(ids) or ids[i] != ids[start]:
                well_ids.append(ids[start])
                well_bytes.append(sum(sizes[start:i]))
                well_rows.append((u, start, i))
                start = i
    if not well_ids:
        raise CompressError(f"every selected well failed to compress (first: {skipped[0]['error'] if skipped else '?'})"
                            f"; fix the source images or the selection")
    ranges = [list(r) for r in pack(well_bytes, manifest.shard_bytes)]
    shards: list[dict[str, Any]] = []
    for i, (a, b) in enumerate(ranges):
        segs: list[list[int]] = []
        for u, r0, r1 in well_rows[a:b]:
            if segs and segs[-1][0] == u and segs[-1][2] == r0:
                segs[-1][2] = r1
            else:
                segs.append([u, r0, r1])
        shards.append({"name": shard_name(i, len(ranges)), "wells": [a, b], "segments": segs,
                       "bytes": sum(well_bytes[a:b])})
    # the last shard each unit contributes to: a unit file may go once that shard is done
    unit_last: dict[int, int] = {}
    for i, s in enumerate(shards):
        for u, _, _ in s["segments"]:
            unit_last[u] = i
    return {
        "data_version": version,
        "wells": well_ids,
        "shards": shards,
        "unit_last_shard": [unit_last.get(u, -1) for u in range(n_units)],
        "image_sizes": sizes_all,
        "stats": stats,
        "samples": samples,
        "skipped": skipped,
    }


def _pack(manifest: Manifest, plan: dict[str, Any], state: Checkpoint, out: Path
          ) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """Write the shards (resumable per shard); returns their records and ``(__key__, sha256 of the image bytes,
    sha256 of its source image)`` of every image, in shard order."""
    data = out / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    ext = manifest.transform.codec.extension
    shards = plan["shards"]
    unit_last = plan["unit_last_shard"]
    results: list[dict[str, Any]] = []
    digests: list[tuple[str, str, str]] = []
    with progress(len(shards), "write shards", "shards") as advance:
        for i, s in enumerate(shards):
            dest = data / s["name"]
            marker = state.folder / DONE_DIR / f"{s['name']}.json"
            if marker.is_file() and dest.is_file():
                done = read_json(marker)
                if dest.stat().st_size == done["size"] and "digests" in done:
                    digests.extend((str(k), str(d), str(sd)) for k, d, sd in done.pop("digests"))
                    results.append(done)
                    advance(1)
                    continue
            keys, blobs, sources = [], [], []
            for u, r0, r1 in s["segments"]:
                table, _ = read_unit(_unit_path(state, u))
                part = table.slice(r0, r1 - r0)
                keys.append(part.column("__key__"))
                blobs.append(part.column("data"))
                sources.extend(part.column(SOURCE_SHA256).to_pylist())
            keys_c = pa.chunked_array([c for k in keys for c in k.chunks], pa.string())
            blobs_c = pa.chunked_array([c for b in blobs for c in b.chunks], pa.binary())
            write_shard(dest, keys_c, blobs_c, manifest.row_group_bytes, ext)
            shard_digests = [[k, sha256_bytes(b), sd] for k, b, sd in zip(keys_c.to_pylist(), blobs_c.to_pylist(),
                                                                            sources, strict=True)]
            done = {"name": s["name"], "sha256": sha256_file(dest), "size": dest.stat().st_size}
            atomic_write_json(marker, {**done, "digests": shard_digests})
            digests.extend((k, d, sd) for k, d, sd in shard_digests)
            results.append(done)
            for u, last in enumerate(unit_last):
                if last == i:
                    _unit_path(state, u).unlink(missing_ok=True)
            advance(1)
    return results, digests


def _metadata_table(lock: Lockfile, wells: set[str]) -> pa.Table:
    """Source-layout metadata of the wells present, sorted by well_id (RxRx1: one row per site)."""
    t = lock.table
    mask = pc.is_in(t.column("well_id"), value_set=pa.array(sorted(wells), pa.string()))
    t = t.filter(mask)
    layout = lock.layout
    if layout is RXRX1:
        parents = pc.list_parent_indices(t.column("sites"))
        site = pc.list_flatten(t.column("sites"))
        t = t.take(parents)
        site_id = pc.binary_join_element_wise(t.column("well_id"), pc.cast(site, pa.string()), "_")
        cols = {c: t.column(c) for c in layout.columns if c not in ("site_id", "site")}
        cols["site_id"] = site_id
        cols["site"] = site
        return pa.table({c: cols[c] for c in layout.columns})
    return t.select(list(layout.columns))


def _finish(manifest: Manifest, lock: Lockfile, plan: dict[str, Any], shards: list[dict[str, Any]],
            digests: list[tuple[str, str, str]], out: Path, version: str, key: dict[str, Any]) -> CompressResult:
    data = out / DATA_DIR
    names = {s["name"] for s in shards}
    for stale in data.glob(SHARD_GLOB):
        if stale.name not in names:
            stale.unlink()
    meta = _metadata_table(lock, set(plan["wells"]))
    with atomic_path(out / METADATA_PARQUET) as tmp:
        pq.write_table(meta, tmp, compression="zstd")
    atomic_write_text(out / METADATA_CSV, meta.to_pandas().to_csv(index=False, lineterminator="\n"))
    report = _report(manifest, lock, plan, shards, version)
    atomic_write_json(out / REPORT, report)
    table = pa.table({"__key__": pa.array([k for k, _, _ in digests], pa.string()),
                      "sha256": pa.array([d for _, d, _ in digests], pa.string()),
                      SOURCE_SHA256: pa.array([sd for _, _, sd in digests], pa.string())})
    with atomic_path(out / IMAGE_DIGESTS) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    files = {f"{DATA_DIR}/{s['name']}": {"sha256": s["sha256"], "size": s["size"]} for s in shards}
    for name in (METADATA_CSV, METADATA_PARQUET, REPORT, IMAGE_DIGESTS):
        files[name] = {"sha256": sha256_file(out / name), "size": (out / name).stat().st_size}
    atomic_write_json(out / CHECKSUMS, {"data_version": version, "output": key["output"], "files": files})
    return CompressResult(out, version, [data / s["name"] for s in shards], report)


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(a.mean()), 4), "min": round(float(a.min()), 4),
            "p05": round(float(np.percentile(a, 5)), 4), "median": round(float(np.median(a)), 4),
            "max": round(float(a.max()), 4)}


def _report(manifest: Manifest, lock: Lockfile, plan: dict[str, Any], shards: list[dict[str, Any]],
            version: str) -> dict[str, Any]:
    sizes = np.asarray(plan["image_sizes"], dtype=np.int64)
    crop = manifest.transform.crop
    h, w = (crop.height, crop.width) if crop else lock.image_shape
    stats = plan["stats"]
    samples = plan["samples"]
    finite = [s["psnr"] for s in samples if s["psnr"] is not None]
    errors = [s["max_abs_error"] for s in samples]
    pixels = max(stats["pixels"], 1)
    return {
        "data_version": version,
        "manifest_hash": manifest.manifest_hash(),
        "transform": manifest.transform_section(),
        "wells": len(plan["wells"]),
        "images": int(sizes.size),
        "shards": len(shards),
        "image_shape": [h, w],
        "bytes": {
            "images_total": int(sizes.sum()),
            "shards_total": int(sum(s["size"] for s in shards)),
            "per_image": {"mean": round(float(sizes.mean()), 2), "min": int(sizes.min()),
                          "median": float(np.median(sizes)), "max": int(sizes.max())},
            "uncompressed_8bit_per_image": h * w,
            "compression_ratio": round(h * w / float(sizes.mean()), 3),
        },
        "clipped_fraction": {"low": round(stats["clipped_low"] / pixels, 6),
                             "high": round(stats["clipped_high"] / pixels, 6)},
        "quality_sample": {
            "method": "decoded with OpenJPEG (as Pillow/datasets) vs the uncompressed 8-bit crop",
            "seed": manifest.transform.report_seed,
            "images": len(samples),
            "exact_images": sum(1 for s in samples if s["psnr"] is None),
            "psnr_db": _stats(finite),
            "max_abs_error": {"max": int(max(errors)), "mean": round(float(np.mean(errors)), 4)} if errors else None,
        },
        "skipped_wells": plan["skipped"],
    }


def verify_source_digests(workdir: str | os.PathLike[str], source: str | os.PathLike[str] | None = None
                          ) -> dict[str, Any]:
    """The explicit full-hash pass (``rxcurate inspect --verify``): read and sha256-hash every source image of the
    lockfile in ``workdir`` and compare its size with the lockfile and its digest with the ``source_sha256``
    compress recorded in ``image_digests.parquet`` (images of skipped wells have none: only their size is checked).

    Returns ``{"images", "hashed_bytes", "digests_compared"}``; raises :class:`CompressError` naming the first
    images that differ and the fix.
    """
    out = Path(workdir)
    lock = read_lockfile(out)
    if source is not None:
        src = Path(source)
    elif lock.info.get("source_root"):
        src = Path(lock.info["source_root"])
    else:
        raise CompressError(f"{out}: no source folder recorded on this machine: pass the screen rxcurate select read")
    if not src.is_dir():
        raise CompressError(f"source folder {src} does not exist: pass the screen rxcurate select read")
    recorded: dict[str, str] = {}
    digests_path = out / IMAGE_DIGESTS
    if digests_path.is_file():
        try:
            t = pq.read_table(digests_path)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise CompressError(f"{digests_path} is unreadable ({exc}): rerun rxcurate compress --force") from None
        if SOURCE_SHA256 in t.column_names:
            recorded = dict(zip(t.column("__key__").to_pylist(), t.column(SOURCE_SHA256).to_pylist(), strict=True))
    t = lock.table
    items = [(k, p, int(n)) for keys, paths, sizes in zip(t.column("keys").to_pylist(), t.column("images").to_pylist(),
                                                           t.column("size").to_pylist(), strict=True)
             for k, p, n in zip(keys, paths, sizes, strict=True)]
    bad: list[str] = []
    hashed = compared = 0
    with progress(len(items), "verify source images", "images") as advance:
        for key, rel, size in items:
            path = src / rel
            try:
                data, _ = read_regular_file(path)
            except OSError as exc:
                bad.append(f"{path}: unreadable ({exc.strerror or type(exc).__name__})")
                advance(1)
                continue
            hashed += len(data)
            if len(data) != size:
                bad.append(f"{path}: {len(data)} bytes, the lockfile records {size}")
            elif key in recorded:
                compared += 1
                if sha256_bytes(data) != recorded[key]:
                    bad.append(f"{path}: sha256 differs from the source_sha256 compress recorded for {key}")
            advance(1)
    if bad:
        raise CompressError(f"{len(bad)} source image(s) differ from the release in {out}, e.g. "
                            + "; ".join(bad[:3]) + ": restore the original files, or rerun rxcurate select and "
                            "rxcurate compress --force")
    return {"images": len(items), "hashed_bytes": hashed, "digests_compared": compared}


def check_manifest_codec(manifest: Manifest) -> None:
    """Fail early (before any work) when the codec is unavailable in this installation."""
    if manifest.transform.codec.name == "htj2k" and not imagecodecs.HTJ2K.available:
        raise ManifestError(f"{manifest.path}: transform.codec.name htj2k needs imagecodecs built with OpenJPH; "
                            f"use name: jpeg2000")
