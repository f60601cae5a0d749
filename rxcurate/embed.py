"""The embed stage: per-well embeddings from a release folder's Parquet shards.

Inputs (``WORKDIR`` = the release folder): ``data/*.parquet`` shards (``__key__`` =
``<experiment>/Plate<plate>/<address>_s<site>_<channel>``, ``jp2`` = ``{bytes, path}``) and ``metadata.parquet``
(``well_id``; when ``lockfile.parquet`` is present its wells must be these plus any that compress reported
skipped). Every site of every well is decoded
(DataLoader workers), its channels (sorted numerically) stacked, cut into a centred grid of ``tile`` x ``tile``
crops, encoded, and the tile vectors averaged per well.

Outputs: ``embeddings/<encoder>/embeddings.parquet`` (``well_id``, ``feature_0..feature_{d-1}`` float32, one row
per well, sorted by ``well_id``) plus ``info.json``; each requested transformer block in
``embeddings/<encoder>/<block>/``; with ``keep_tiles`` also ``tiles.parquet`` (one row per tile).

Decoding and encoding run on a :class:`rxcurate.runners.Runner` (:meth:`~rxcurate.runners.Runner.map_then`: decode
tasks, then an encoder per worker; local: DataLoader workers + this process, Ray: tasks + an actor pool, one GPU per
actor on CUDA); the batches of a shard are added in batch order whatever the runner, so sums are bitwise equal.

Resumable per shard: each shard's partial sums are checkpointed atomically under
``WORKDIR/.embed-state/<encoder>/units/`` (:class:`rxcurate.checkpoint.Checkpoint`, keyed by the run key); a rerun
after a crash computes only the missing shards and gives the same bytes as an uninterrupted run. Outputs are written
once, atomically, after the checks (one row per well, finite values, identical vectors of distinct wells reported; an
error with ``strict``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from rxcurate import __version__
from rxcurate.checkpoint import Checkpoint, read_record, remove_temp_files
from rxcurate.encoders import FINAL, Encoder, encoder_dirname, get_encoder, resolve_blocks, resolve_device
from rxcurate.errors import EmbedError
from rxcurate.io import atomic_path, atomic_write_json, canonical_hash, read_json, sha256_file
from rxcurate.layout import (
    CHECKSUMS,
    DATA_DIR,
    EMBED_STATE,
    EMBEDDINGS_FILE,
    INFO_FILE,
    LOCKFILE,
    METADATA_PARQUET,
    REPORT,
    TILES_FILE,
    embeddings_path,
)
from rxcurate.manifest import embed_job, load_manifest
from rxcurate.progress import log, progress
from rxcurate.runners import LocalRunner, Runner

KEY_PATTERN = r"^(?P<experiment>[^/]+)/Plate(?P<plate>[^/]+)/(?P<address>[^/_]+)_s(?P<site>\d+)_(?P<channel>\d+)$"
KEY_EXAMPLE = "compound-001/Plate1/AA15_s1_1"
ROW_GROUP_CACHE = 4
MAX_REPORTED_PAIRS = 1000
DEFAULT_BATCH_CUDA = 256  # tiles per forward pass
DEFAULT_BATCH_CPU = 32


# --------------------------------------------------------------------------------------------- planning (I/O light)


@dataclass(frozen=True)
class Site:
    """One field of view: all channels of a well's site, located in the shards."""

    well: int  # index into Plan.wells
    site: int
    rows: tuple[tuple[int, int, int], ...]  # (shard index, row group, row in group) per channel, channel order


@dataclass
class Plan:
    workdir: Path
    shards: list[Path]
    wells: list[str]  # sorted well ids
    channels: list[int]
    sites: list[Site]  # sorted by (well, site)
    units: list[list[int]]  # site indices per shard (a site belongs to the shard holding its first channel)
    image_shape: tuple[int, int]
    tile: int
    grid: tuple[int, int] = field(default=(1, 1))

    @property
    def tiles_per_image(self) -> int:
        return self.grid[0] * self.grid[1]


def tile_grid(image_shape: tuple[int, int], tile: int) -> tuple[int, int]:
    """Non-overlapping tiles per axis (a centred grid); error when the image is smaller than a tile."""
    h, w = image_shape
    if h < tile or w < tile:
        raise EmbedError(f"images are {h}x{w}, smaller than --tile {tile}: pass --tile {min(h, w)} or smaller")
    return h // tile, w // tile


def cut_tiles(stack: np.ndarray, tile: int) -> np.ndarray:
    """[C, H, W] -> [nh * nw, C, tile, tile] (centred grid, row-major)."""
    c, h, w = stack.shape
    nh, nw = h // tile, w // tile
    oy, ox = (h - nh * tile) // 2, (w - nw * tile) // 2
    crop = stack[:, oy : oy + nh * tile, ox : ox + nw * tile]
    return np.ascontiguousarray(crop.reshape(c, nh, tile, nw, tile).transpose(1, 3, 0, 2, 4).reshape(-1, c, tile, tile))


def parse_keys(keys: pa.Array | pa.ChunkedArray) -> dict[str, np.ndarray]:
    """Shard keys -> arrays ``well_id`` (object), ``site`` and ``channel`` (int64)."""
    parsed = pc.extract_regex(keys, KEY_PATTERN)
    if isinstance(parsed, pa.ChunkedArray):
        parsed = parsed.combine_chunks()
    bad = pc.is_null(parsed)
    if pc.any(bad).as_py():
        first = keys.filter(bad)[0].as_py()
        raise EmbedError(f"bad __key__ {first!r} in a shard: expected <experiment>/Plate<plate>/<address>_s<site>_"
                         f"<channel>, e.g. {KEY_EXAMPLE}; re-run rxcurate compress")
    well = pc.binary_join_element_wise(parsed.field("experiment"), parsed.field("plate"), parsed.field("address"), "_")
    return {
        "well_id": np.asarray(well.to_numpy(zero_copy_only=False), dtype=object),
        "site": parsed.field("site").cast(pa.int64()).to_numpy(),
        "channel": parsed.field("channel").cast(pa.int64()).to_numpy(),
    }


def metadata_wells(table: pa.Table, what: str = METADATA_PARQUET) -> list[str]:
    """The sorted unique well ids of a metadata table: one row per well (RxRx3 layout), or, when the table has a
    ``site`` column (RxRx1 layout), one row per (well, site); duplicated rows are an error naming the first."""
    wells = [str(w) for w in table.column("well_id").to_pylist()]
    if "site" in table.column_names:
        sites = [str(s) for s in table.column("site").to_pylist()]
        seen: set[tuple[str, str]] = set()
        for key in zip(wells, sites, strict=True):
            if key in seen:
                raise EmbedError(f"{what}: well {key[0]} site {key[1]} appears more than once (one row per well and "
                                 "site is expected); re-run rxcurate compress")
            seen.add(key)
    else:
        seen_wells: set[str] = set()
        for w in wells:
            if w in seen_wells:
                raise EmbedError(f"{what}: well_id {w} appears more than once (one row per well is expected); re-run "
                                 "rxcurate compress")
            seen_wells.add(w)
    return sorted(set(wells))


def _read_wells(workdir: Path) -> list[str]:
    meta = workdir / METADATA_PARQUET
    if not meta.is_file():
        raise EmbedError(f"{meta} is missing: run `rxcurate compress MANIFEST` first (it writes the metadata table)")
    try:
        table = pq.read_table(meta)
    except Exception as exc:  # noqa: BLE001
        raise EmbedError(f"cannot read {meta}: {exc}") from None
    if "well_id" not in table.column_names:
        raise EmbedError(f"{meta} has no well_id column (columns: {table.column_names[:8]})")
    wells = metadata_wells(table, str(meta))
    lock = workdir / LOCKFILE
    if lock.is_file() and "well_id" in pq.read_schema(lock).names:
        locked = {str(w) for w in pq.read_table(lock, columns=["well_id"]).column(0).to_pylist()}
        extra = sorted(set(wells) - locked)
        if extra:
            raise EmbedError(f"metadata.parquet lists {len(extra)} well(s) absent from lockfile.parquet (e.g. "
                             f"{extra[:3]}); re-run rxcurate compress")
        report = workdir / REPORT
        skipped = set()
        if report.is_file():
            skipped = {str(s.get("well_id")) for s in read_json(report).get("skipped_wells", []) if isinstance(s, dict)}
        absent = sorted(locked - set(wells) - skipped)
        if absent:
            raise EmbedError(f"{len(absent)} lockfile well(s) are neither in metadata.parquet nor reported skipped by "
                             f"compress (e.g. {absent[:3]}); re-run rxcurate compress")
    return wells


def _check_shard_schema(path: Path) -> pq.ParquetFile:
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001
        raise EmbedError(f"cannot read shard {path}: {exc}; re-run rxcurate compress") from None
    schema = pf.schema_arrow
    if "__key__" not in schema.names or "jp2" not in schema.names:
        raise EmbedError(f"shard {path} lacks the __key__/jp2 columns (has {schema.names}); re-run rxcurate compress")
    jp2 = schema.field("jp2").type
    if not pa.types.is_struct(jp2) or jp2.get_field_index("bytes") < 0:
        raise EmbedError(f"shard {path}: column jp2 must be a struct{{bytes, path}}, got {jp2}")
    return pf


class _ImageError(Exception):
    """A bad image; the caller adds where it is."""


def _decode(data: bytes | None) -> np.ndarray:
    if not data:
        raise _ImageError("image bytes are empty")
    try:
        img = imagecodecs.jpeg2k_decode(data)
    except Exception:  # noqa: BLE001 - not JPEG 2000: let imagecodecs detect the format
        try:
            img = imagecodecs.imread(data)
        except Exception as exc:  # noqa: BLE001
            raise _ImageError(f"cannot decode the image ({exc})") from None
    if img.ndim != 2 or img.dtype != np.uint8:
        raise _ImageError(f"expected a single-channel 8-bit image, got shape {img.shape} {img.dtype}")
    return img


def plan_embed(workdir: str | Path, tile: int) -> Plan:
    """Validate the release folder and index every site's channel images (reads keys only, plus one image)."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise EmbedError(f"release folder {workdir} does not exist: run `rxcurate compress MANIFEST` first "
                         "(or pass --workdir)")
    shards = sorted((workdir / DATA_DIR).glob("*.parquet"))
    if not shards:
        raise EmbedError(f"no shards in {workdir / DATA_DIR}: run `rxcurate compress MANIFEST` first")
    wells = _read_wells(workdir)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("well_id", "site", "channel", "shard", "rg", "row")}
    for s, path in enumerate(shards):
        pf = _check_shard_schema(path)
        sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
        keys = pf.read(columns=["__key__"]).column(0)
        parsed = parse_keys(keys)
        rg = np.repeat(np.arange(len(sizes)), sizes)
        row = np.concatenate([np.arange(n) for n in sizes]) if sizes else np.zeros(0, dtype=np.int64)
        for k, v in parsed.items():
            cols[k].append(v)
        cols["shard"].append(np.full(len(rg), s))
        cols["rg"].append(rg)
        cols["row"].append(row)
    data = {k: np.concatenate(v) for k, v in cols.items()}
    if len(data["well_id"]) == 0:
        raise EmbedError(f"the shards in {workdir / DATA_DIR} hold no images: re-run rxcurate compress")

    well_index = {w: i for i, w in enumerate(wells)}
    uniq_wells, inverse = np.unique(data["well_id"].astype(str), return_inverse=True)
    unknown = [w for w in uniq_wells if w not in well_index]
    if unknown:
        raise EmbedError(f"shards hold {len(unknown)} well(s) absent from metadata.parquet (e.g. {unknown[:3]}): the "
                         "release folder is inconsistent; re-run rxcurate compress")
    missing = sorted(set(wells) - set(uniq_wells.tolist()))
    if missing:
        raise EmbedError(f"{len(missing)} well(s) of metadata.parquet have no images in the shards (e.g. "
                         f"{missing[:3]}); re-run rxcurate compress")
    wid = np.array([well_index[w] for w in uniq_wells], dtype=np.int64)[inverse]
    channels = sorted(int(c) for c in np.unique(data["channel"]))
    n_ch = len(channels)
    order = np.lexsort((data["row"], data["shard"], data["channel"], data["site"], wid))
    wid, site, chan = wid[order], data["site"][order], data["channel"][order]
    loc = np.stack([data["shard"][order], data["rg"][order], data["row"][order]], axis=1)
    dup = (wid[1:] == wid[:-1]) & (site[1:] == site[:-1]) & (chan[1:] == chan[:-1])
    if dup.any():
        i = int(np.argmax(dup))
        raise EmbedError(f"duplicate image for well {wells[wid[i]]} site {site[i]} channel {chan[i]} in the shards; "
                         "re-run rxcurate compress")
    starts = np.flatnonzero(np.r_[True, (wid[1:] != wid[:-1]) | (site[1:] != site[:-1])])
    ends = np.r_[starts[1:], len(wid)]
    bad = np.flatnonzero(ends - starts != n_ch)
    if len(bad):
        b = starts[bad[0]]
        have = chan[b : ends[bad[0]]].tolist()
        raise EmbedError(f"well {wells[wid[b]]} site {site[b]} has channels {have}, expected {channels}; "
                         "re-run rxcurate compress")
    sites: list[Site] = []
    units: list[list[int]] = [[] for _ in shards]
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        rows = tuple((int(x), int(y), int(z)) for x, y, z in loc[a:b])
        units[min(r[0] for r in rows)].append(len(sites))
        sites.append(Site(well=int(wid[a]), site=int(site[a]), rows=rows))

    first = sites[0].rows[0]
    pf = pq.ParquetFile(shards[first[0]])
    cell = pf.read_row_group(first[1], columns=["jp2"]).column(0).combine_chunks().field("bytes")[first[2]].as_py()
    try:
        shape = _decode(cell).shape
    except _ImageError as exc:
        raise EmbedError(f"{shards[first[0]].name} row group {first[1]} row {first[2]}: {exc}") from None
    grid = tile_grid((int(shape[0]), int(shape[1])), tile)
    return Plan(workdir=workdir, shards=shards, wells=wells, channels=channels, sites=sites, units=units,
                image_shape=(int(shape[0]), int(shape[1])), tile=tile, grid=grid)


# ------------------------------------------------------------------------------------------------ loading (workers)


class SiteTiles(torch.utils.data.Dataset[dict[str, Any]]):
    """Item ``i`` = the tiles of site ``i``: ``{"index", "tiles" uint8 [k, C, T, T], "error"}`` (errors are returned,
    not raised, so the main process reports them as one line)."""

    def __init__(self, shards: Sequence[Path], sites: Sequence[Site], image_shape: tuple[int, int], tile: int) -> None:
        self.shards = [str(p) for p in shards]
        self.sites = list(sites)
        self.image_shape = tuple(image_shape)
        self.tile = tile
        self._files: dict[int, pq.ParquetFile] = {}
        self._cache: OrderedDict[tuple[int, int], pa.Array] = OrderedDict()

    def __len__(self) -> int:
        return len(self.sites)

    def _cell(self, shard: int, rg: int, row: int) -> bytes | None:
        key = (shard, rg)
        arr = self._cache.get(key)
        if arr is None:
            pf = self._files.get(shard)
            if pf is None:
                pf = self._files[shard] = pq.ParquetFile(self.shards[shard])
            arr = pf.read_row_group(rg, columns=["jp2"]).column(0).combine_chunks().field("bytes")
            self._cache[key] = arr
            while len(self._cache) > ROW_GROUP_CACHE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        cell: bytes | None = arr[row].as_py()
        return cell

    def _where(self, shard: int, rg: int, row: int) -> str:
        try:
            key = pq.ParquetFile(self.shards[shard]).read_row_group(rg, columns=["__key__"]).column(0)[row].as_py()
        except Exception:  # noqa: BLE001
            key = "?"
        return f"shard {Path(self.shards[shard]).name} key {key}"

    def __getitem__(self, i: int) -> dict[str, Any]:
        site = self.sites[i]
        planes = []
        for shard, rg, row in site.rows:
            try:
                img = _decode(self._cell(shard, rg, row))
                if img.shape != self.image_shape:
                    raise _ImageError(f"image is {img.shape[0]}x{img.shape[1]}, others are {self.image_shape[0]}x"
                                      f"{self.image_shape[1]}; re-run rxcurate compress")
            except _ImageError as exc:
                return {"index": i, "tiles": None, "error": f"{self._where(shard, rg, row)}: {exc}"}
            except Exception as exc:  # noqa: BLE001 - e.g. an unreadable shard
                return {"index": i, "tiles": None,
                        "error": f"{self._where(shard, rg, row)}: {exc.__class__.__name__}: {exc}"}
            planes.append(img)
        return {"index": i, "tiles": cut_tiles(np.stack(planes), self.tile), "error": None}


def collate_sites(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate the tiles of several sites (runs in the worker)."""
    errors = [it["error"] for it in items if it["error"]]
    if errors:
        return {"error": errors[0]}
    return {
        "error": None,
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "counts": torch.tensor([it["tiles"].shape[0] for it in items], dtype=torch.long),
        "tiles": torch.from_numpy(np.concatenate([it["tiles"] for it in items])),
    }


_READERS: dict[tuple[Any, ...], SiteTiles] = {}  # per process: keeps SiteTiles' row-group cache across batches


@dataclass(frozen=True)
class DecodeSites:
    """Work function of the decode step (picklable): one batch ``(site indices, their Sites)`` -> ``{"error",
    "index", "counts", "tiles"}`` (uint8 [k, C, T, T]); bad input comes back as ``error``."""

    shards: tuple[str, ...]
    image_shape: tuple[int, int]
    tile: int

    def __call__(self, item: tuple[list[int], list[Site]]) -> dict[str, Any]:
        index, sites = item
        key = (self.shards, self.image_shape, self.tile)
        reader = _READERS.get(key)
        if reader is None:
            _READERS.clear()
            reader = _READERS[key] = SiteTiles([Path(s) for s in self.shards], [], self.image_shape, self.tile)
        reader.sites = list(sites)
        batch = collate_sites([reader[i] for i in range(len(sites))])
        if batch["error"]:
            return {"error": batch["error"]}
        return {"error": None, "index": np.asarray(index, np.int64), "counts": batch["counts"].numpy(),
                "tiles": batch["tiles"]}


def encode_tiles(enc: Encoder, blocks: Sequence[str], outputs: Sequence[str], batch: dict[str, Any]
                 ) -> dict[str, Any]:
    """The encode step: a decoded batch -> its tile vectors per output (errors pass through)."""
    if batch["error"]:
        return batch
    cuda = enc.device.type == "cuda"
    tiles = batch["tiles"]
    if cuda and not tiles.is_pinned():
        tiles = tiles.pin_memory()
    vectors = enc.encode(tiles.to(enc.device, non_blocking=cuda), list(blocks))
    return {"error": None, "index": batch["index"], "counts": batch["counts"],
            "vectors": {k: vectors[k].cpu().numpy() for k in outputs}}


class EncodeStep:
    """Step factory of :meth:`rxcurate.runners.Runner.map_then` (picklable): in this process it reuses the run's
    encoder ``built``; where it is unpickled (a Ray actor) it rebuilds it from ``encoder_kwargs``
    (:func:`rxcurate.encoders.get_encoder`)."""

    def __init__(self, encoder_kwargs: dict[str, Any], blocks: Sequence[str], outputs: Sequence[str],
                 built: Encoder | None = None) -> None:
        self.encoder_kwargs = dict(encoder_kwargs)
        self.blocks = list(blocks)
        self.outputs = list(outputs)
        self.built = built

    @property
    def gpu(self) -> bool:
        return str(self.encoder_kwargs["device"]) == "cuda"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "built": None}

    def __call__(self) -> Callable[[dict[str, Any]], dict[str, Any]]:
        enc = self.built if self.built is not None else get_encoder(**self.encoder_kwargs)
        return functools.partial(encode_tiles, enc, self.blocks, self.outputs)


# ------------------------------------------------------------------------------------------- accumulation (compute)


class UnitSums:
    """Per-well sums of tile vectors for one shard (float64, summed in tile order)."""

    def __init__(self, wells: np.ndarray, outputs: Sequence[str], keep_tiles: bool) -> None:
        self.wells = np.asarray(wells, dtype=np.int64)  # sorted unique global well indices
        self.local = {int(w): i for i, w in enumerate(self.wells)}
        self.counts = np.zeros(len(self.wells), dtype=np.int64)
        self.sums: dict[str, np.ndarray] = {}
        self.outputs = list(outputs)
        self.keep_tiles = keep_tiles
        self.tiles: dict[str, list[np.ndarray]] = {k: [] for k in outputs}
        self.tile_meta: list[np.ndarray] = []  # [k, 3] (well, site, tile index)

    def add(self, tile_wells: np.ndarray, tile_sites: np.ndarray, tile_index: np.ndarray,
            vectors: dict[str, np.ndarray]) -> None:
        local = np.array([self.local[int(w)] for w in tile_wells], dtype=np.int64)
        np.add.at(self.counts, local, 1)
        for key in self.outputs:
            v = vectors[key]
            if key not in self.sums:
                self.sums[key] = np.zeros((len(self.wells), v.shape[1]), dtype=np.float64)
            np.add.at(self.sums[key], local, v.astype(np.float64))
            if self.keep_tiles:
                self.tiles[key].append(v.astype(np.float32))
        if self.keep_tiles:
            self.tile_meta.append(np.stack([tile_wells, tile_sites, tile_index], axis=1).astype(np.int64))

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"wells": self.wells, "counts": self.counts}
        for key in self.outputs:
            out[f"sum_{key}"] = self.sums[key]
            if self.keep_tiles:
                out[f"tiles_{key}"] = np.concatenate(self.tiles[key])
        if self.keep_tiles:
            out["tile_meta"] = np.concatenate(self.tile_meta)
        return out


def _save_unit(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle


def _load_unit(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception:  # noqa: BLE001 - unreadable checkpoint: recompute that shard
        return None


def well_means(n_wells: int, units: Sequence[dict[str, np.ndarray]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Combine shard sums (in shard order) -> (float32 means [n_wells, D], tile counts)."""
    dim = next(u[f"sum_{key}"].shape[1] for u in units)
    sums = np.zeros((n_wells, dim), dtype=np.float64)
    counts = np.zeros(n_wells, dtype=np.int64)
    for u in units:
        sums[u["wells"]] += u[f"sum_{key}"]
        counts[u["wells"]] += u["counts"]
    if (counts == 0).any():
        raise EmbedError(f"{int((counts == 0).sum())} well(s) got no tiles; delete {EMBED_STATE} and rerun")
    return (sums / counts[:, None]).astype(np.float32), counts


def duplicate_pairs(
    wells: Sequence[str], x: np.ndarray, limit: int = MAX_REPORTED_PAIRS
) -> tuple[list[list[str]], int]:
    """Distinct wells whose vectors are bitwise identical: (the first ``limit`` pairs, sorted; the number of pairs)."""
    groups: dict[bytes, list[int]] = {}
    for i in range(x.shape[0]):
        groups.setdefault(hashlib.blake2b(x[i].tobytes(), digest_size=16).digest(), []).append(i)
    pairs: list[list[str]] = []
    total = 0
    for members in groups.values():
        same = [m for m in members if np.array_equal(x[m], x[members[0]])]  # guard against hash collisions
        total += len(same) * (len(same) - 1) // 2
        names = sorted(wells[m] for m in same)
        for a in range(len(names)):
            if len(pairs) >= limit:
                break
            pairs.extend([names[a], b] for b in names[a + 1 : a + 1 + limit - len(pairs)])
    pairs.sort()
    return pairs[:limit], total


def check_embeddings(wells: Sequence[str], x: np.ndarray, what: str) -> None:
    if x.shape[0] != len(wells):
        raise EmbedError(f"{what}: {x.shape[0]} rows for {len(wells)} wells")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        names = [wells[i] for i in np.flatnonzero(bad)[:5]]
        raise EmbedError(f"{what}: NaN/inf in the embeddings of {int(bad.sum())} well(s) (e.g. {names}); check the "
                         "--weights file, or try --device cpu")


# ------------------------------------------------------------------------------------------------------- outputs


def embeddings_table(wells: Sequence[str], x: np.ndarray) -> pa.Table:
    cols: dict[str, pa.Array] = {"well_id": pa.array(list(wells), type=pa.string())}
    for i in range(x.shape[1]):
        cols[f"feature_{i}"] = pa.array(np.ascontiguousarray(x[:, i]), type=pa.float32())
    return pa.table(cols)


def _write_parquet(path: Path, table: pa.Table) -> None:
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)


def _tiles_table(wells: Sequence[str], units: Sequence[dict[str, np.ndarray]], key: str) -> pa.Table:
    meta = np.concatenate([u["tile_meta"] for u in units])
    vec = np.concatenate([u[f"tiles_{key}"] for u in units])
    order = np.lexsort((meta[:, 2], meta[:, 1], meta[:, 0]))
    meta, vec = meta[order], vec[order]
    table = embeddings_table([wells[i] for i in meta[:, 0]], vec)
    table = table.add_column(1, "site", pa.array(meta[:, 1].astype(np.int32)))
    return table.add_column(2, "tile", pa.array(meta[:, 2].astype(np.int32)))


def output_dir(workdir: Path, encoder_name: str, key: str = FINAL) -> Path:
    """The folder of one output (the encoder's default, or a block) of an encoder's embeddings."""
    name = encoder_dirname(encoder_name)
    return embeddings_path(workdir, name if key == FINAL else f"{name}/{key}").parent


# ----------------------------------------------------------------------------------------------------- the stage


def _run_key(plan: Plan, enc: Encoder, blocks: list[str], batch_size: int, keep_tiles: bool) -> str:
    return canonical_hash({
        "rxcurate": __version__,
        "torch": torch.__version__,
        "encoder": enc.info(),
        "device": enc.device.type,
        "blocks": blocks,
        "tile": plan.tile,
        "batch_size": batch_size,
        "keep_tiles": keep_tiles,
        "wells": canonical_hash(plan.wells),
        "inputs": _input_fingerprint(plan),
    })


def _input_fingerprint(plan: Plan) -> Any:
    """Identity of the shards: checksums.json (written by compress) when present, else sizes + mtimes (then the run
    key only names checkpoints and is not recorded in info.json, which must not depend on file times)."""
    sums = plan.workdir / CHECKSUMS
    shards = [[p.name, p.stat().st_size] for p in plan.shards]
    if sums.is_file():
        return {"shards": shards, "checksums_sha256": sha256_file(sums)}
    return {"shards": [[*s, p.stat().st_mtime_ns] for s, p in zip(shards, plan.shards, strict=True)], "mtimes": True}


def _batches(plan: Plan, pending: list[int], sites_per_batch: int) -> tuple[list[list[int]], list[int]]:
    batches, owner = [], []
    for u in pending:
        idx = plan.units[u]
        for a in range(0, len(idx), sites_per_batch):
            batches.append(idx[a : a + sites_per_batch])
            owner.append(u)
    return batches, owner


@dataclass(frozen=True)
class EmbedRun:
    """The settings of one embed run. ``batch_size`` = tiles per forward pass (None: 256 on CUDA, 32 on CPU);
    ``num_workers`` = decoding workers (local: DataLoader processes, None = cores - 1 at most 8, 0 = in-process;
    Ray: concurrent decode tasks, None/0 = every free CPU); ``downsample`` k > 1 averages k x k pixel blocks of every
    tile before the encoder (a tile of T px reaches the network as T/k px: k^2 times less compute, coarser
    detail)."""

    encoder_spec: str
    device: str = "auto"
    batch_size: int | None = None
    num_workers: int | None = None
    tile: int = 256
    keep_tiles: bool = False
    blocks: str | Sequence[str] | None = None
    weights: str | Path | None = None
    allow_random: bool = False
    strict: bool = False
    precision: str = "auto"
    downsample: int = 1


def manifest_runs(manifest: Path, tile: int = 256) -> list[EmbedRun]:
    """The manifest's ``embeddings`` entries as :class:`EmbedRun` s (weights relative to the manifest; ``tile``
    where an entry names no tile_size)."""
    if manifest.is_dir():
        raise EmbedError("--encoder is required when MANIFEST is a release folder (e.g. --encoder baseline)")
    m = load_manifest(manifest)
    if not m.embeddings:
        raise EmbedError(f"{manifest} has no embeddings section: pass --encoder (e.g. --encoder baseline) or add "
                         "embeddings: [{encoder: baseline}] to the manifest")
    return [EmbedRun(**embed_job(m, entry, tile)) for entry in m.embeddings]


def run_embed(workdir: str | Path, encoder_spec: str, *, runner: Runner | None = None, **settings: Any
              ) -> list[Path]:
    """:func:`embed` with the :class:`EmbedRun` settings as keywords."""
    return embed(workdir, EmbedRun(encoder_spec, **settings), runner)


def embed(workdir: str | Path, run: EmbedRun, runner: Runner | None = None) -> list[Path]:
    """Embed every well of the release folder ``workdir``; return the written ``embeddings.parquet`` paths
    (the encoder's default output first, then one per block). ``runner`` (default
    :class:`~rxcurate.runners.LocalRunner`) decodes and encodes; same checkpoints, same output bytes on any."""
    runner = runner or LocalRunner()
    workdir = Path(workdir)
    dev = resolve_device(run.device)
    batch_size = run.batch_size
    if batch_size is None:
        batch_size = DEFAULT_BATCH_CUDA if dev.type == "cuda" else DEFAULT_BATCH_CPU
    if batch_size < 1:
        raise EmbedError(f"--batch-size must be >= 1, got {batch_size}")
    if run.num_workers is not None and run.num_workers < 0:
        raise EmbedError(f"--num-workers must be >= 0, got {run.num_workers}")
    plan = plan_embed(workdir, run.tile)
    encoder_kwargs: dict[str, Any] = {"name": run.encoder_spec, "channels": len(plan.channels), "weights": run.weights,
                                      "allow_random": run.allow_random, "device": dev.type, "tile_size": run.tile,
                                      "precision": run.precision, "downsample": run.downsample}
    enc = get_encoder(**{**encoder_kwargs, "device": dev})
    block_list = resolve_blocks(enc, run.blocks)
    step = EncodeStep(encoder_kwargs, block_list, [FINAL, *block_list], built=enc)
    run_key = _run_key(plan, enc, block_list, batch_size, run.keep_tiles)
    content_key = run_key if (workdir / CHECKSUMS).is_file() else None
    final_paths = [output_dir(workdir, enc.name, k) / EMBEDDINGS_FILE for k in step.outputs]

    if content_key and _up_to_date(final_paths, content_key):
        log(f"embeddings of {enc.name} are up to date ({output_dir(workdir, enc.name)})")
        return final_paths

    state = Checkpoint(workdir, EMBED_STATE, encoder_dirname(enc.name), busy=f"another rxcurate embed of this "
                       f"encoder is running on {workdir}: wait for it to finish")
    with state.locked():
        for path in final_paths:
            remove_temp_files(path.parent, [EMBEDDINGS_FILE, TILES_FILE, INFO_FILE])
        state.reset({"run_key": run_key})  # checkpoints of other configurations cannot be resumed by this one
        shards = [u for u in range(len(plan.shards)) if plan.units[u]]
        pending = [u for u in shards if not _unit_path(state, u).is_file()]
        if len(shards) > len(pending):
            log(f"resuming: {len(shards) - len(pending)} of {len(shards)} shard(s) already embedded")
        _embed_pending(plan, step, run, batch_size, pending, state, runner, enc.name)
        units = []
        for u in shards:
            arrays = _load_unit(_unit_path(state, u))
            if arrays is None:
                _unit_path(state, u).unlink(missing_ok=True)
                raise EmbedError(f"checkpoint {_unit_path(state, u)} is unreadable and was removed: rerun the same "
                                 "command")
            units.append(arrays)
        paths = _finish(plan, enc, block_list, units, final_paths, run, content_key)
        state.done()
    state.discard()  # leave no state behind in the release folder
    return paths


def _unit_path(state: Checkpoint, shard: int) -> Path:
    return state.unit(f"unit-{shard:05d}.npz")


def _up_to_date(paths: list[Path], run_key: str) -> bool:
    for path in paths:
        record = read_record(path.parent / INFO_FILE, {"run_key": run_key}) if path.is_file() else None
        if record is None or record.get("embeddings_sha256") != sha256_file(path):
            return False
        if record.get("tiles", {}).get("kept") and not (path.parent / TILES_FILE).is_file():
            return False
    return True


def _embed_pending(plan: Plan, step: EncodeStep, run: EmbedRun, batch_size: int, pending: list[int],
                   state: Checkpoint, runner: Runner, label: str) -> None:
    """Embed the sites of the ``pending`` shards on ``runner`` and checkpoint each shard once all its batches are
    in (added in batch order, whatever order they arrive in)."""
    if not pending:
        return
    batches, owner = _batches(plan, pending, max(1, batch_size // plan.tiles_per_image))
    expected = Counter(owner)
    items = [(idx, [plan.sites[i] for i in idx]) for idx in batches]
    load = DecodeSites(tuple(str(p) for p in plan.shards), plan.image_shape, plan.tile)
    buffered: dict[int, dict[int, dict[str, Any]]] = {}
    try:
        results = runner.map_then(load, items, step, workers=run.num_workers, gpu=step.gpu)
        with contextlib.closing(results), progress(sum(map(len, batches)), f"embed {label}", "sites") as advance:
            for b, out in results:
                if out["error"]:
                    raise EmbedError(out["error"])
                u = owner[b]
                buffered.setdefault(u, {})[b] = out
                if len(buffered[u]) == expected[u]:
                    acc = unit_sums(plan, u, step.outputs, run.keep_tiles)
                    for _, done in sorted(buffered.pop(u).items()):
                        add_batch(plan, acc, done["index"], done["counts"], done["vectors"])
                    _save_unit(_unit_path(state, u), acc.arrays())
                advance(len(out["index"]))
    finally:
        _READERS.clear()  # the in-process decoder's cache (num_workers 0)


def unit_sums(plan: Plan, u: int, outputs: list[str], keep_tiles: bool) -> UnitSums:
    """Empty accumulator for shard ``u``'s sites."""
    return UnitSums(np.unique([plan.sites[i].well for i in plan.units[u]]), outputs, keep_tiles)


def add_batch(plan: Plan, acc: UnitSums, index: np.ndarray, counts: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
    """Add one batch's tile vectors (sites ``index``, ``counts`` tiles each) to its shard's accumulator; every engine
    adds a shard's batches in the same order, so sums are bitwise equal."""
    tile_wells = np.repeat([plan.sites[i].well for i in index], counts)
    tile_sites = np.repeat([plan.sites[i].site for i in index], counts)
    tile_index = np.concatenate([np.arange(c) for c in counts])
    acc.add(tile_wells, tile_sites, tile_index, arrays)


def _finish(plan: Plan, enc: Encoder, block_list: list[str], units: list[dict[str, np.ndarray]],
            final_paths: list[Path], run: EmbedRun, run_key: str | None) -> list[Path]:
    outputs = [FINAL, *block_list]
    keep_tiles = run.keep_tiles
    results = {}
    for key in outputs:
        x, counts = well_means(len(plan.wells), units, key)
        what = f"{enc.name}/{key}"
        check_embeddings(plan.wells, x, what)
        pairs, n_pairs = duplicate_pairs(plan.wells, x)
        if n_pairs:
            shown = ", ".join(f"{a}={b}" for a, b in pairs[:5])
            msg = (f"{what}: {n_pairs} pair(s) of distinct wells have identical vectors (e.g. {shown}); "
                   "identical images or a broken encoder?")
            if run.strict:
                raise EmbedError(msg + " (--strict)")
            log(f"warning: {msg}")
        results[key] = (x, counts, pairs, n_pairs)

    n_sites = np.bincount([s.well for s in plan.sites], minlength=len(plan.wells))
    shards_info = [{"name": p.name, "bytes": p.stat().st_size} for p in plan.shards]
    for key, path in zip(outputs, final_paths, strict=True):
        x, counts, pairs, n_pairs = results[key]
        _write_parquet(path, embeddings_table(plan.wells, x))
        if keep_tiles:
            _write_parquet(path.parent / TILES_FILE, _tiles_table(plan.wells, units, key))
        info = {
            **enc.info(),
            "output": key,
            "dim": int(x.shape[1]),
            "blocks": block_list,
            "block_numbering": "1-based transformer block; mean of its output tokens (class token excluded)",
            "wells": len(plan.wells),
            "channels": plan.channels,
            "sites_per_well": {"min": int(n_sites.min()), "max": int(n_sites.max())},
            "tiles": {
                "size": plan.tile,
                "per_image": plan.tiles_per_image,
                "grid": list(plan.grid),
                "image_size": list(plan.image_shape),
                "per_well": {"min": int(counts.min()), "max": int(counts.max())},
                "aggregation": "mean of all tile vectors of all sites of the well",
                "kept": keep_tiles,
            },
            "device": enc.device.type,
            "inputs": {"shards": shards_info, "metadata_sha256": sha256_file(plan.workdir / METADATA_PARQUET)},
            "embeddings_sha256": sha256_file(path),
            "duplicate_vectors": pairs,
            "duplicate_vector_pairs": n_pairs,
            "rxcurate_version": __version__,
            "torch_version": torch.__version__,
            "run_key": run_key,
        }
        atomic_write_json(path.parent / INFO_FILE, info)
    log(f"wrote {len(plan.wells)} well embeddings ({enc.name}: {', '.join(outputs)}) to "
        f"{output_dir(plan.workdir, enc.name)}")
    return final_paths
