"""`rxcurate select`: run a manifest's selection over a source screen with DuckDB and write the lockfile.

Selection = the rows of ``select.sql`` plus every sampler's draw, over these in-memory DuckDB tables:

- ``metadata``: the source's metadata rows as they are (RxRx1: one row per site);
- ``wells``: one row per well (RxRx3: = metadata; RxRx1: metadata without ``site_id``/``site``);
- each table declared under ``tables:`` (CSV/TSV/Parquet inside the manifest folder or the source root).

The inputs are loaded first; then DuckDB's external access is switched off and its configuration locked, so the
manifest SQL can read nothing else, cannot install/load extensions, ATTACH, COPY or write files. Only a single
SELECT is accepted.

Samplers are hash-based: within each group (``per`` columns), the ``n`` candidate wells (``where``) with the
smallest ``md5('<seed>:' || well_id)`` are drawn, ties broken by well_id. A well's rank depends only on its own id
and the seed, so adding plates (groups) never changes the draw of existing ones.

The lockfile ``<workdir>/lockfile.parquet`` has one row per selected well, sorted by well_id: the well-level
metadata columns of the layout, ``sites``, then per image (sites x channels, in ``__key__`` order) its ``keys``,
``images`` (paths relative to the source root) and ``sha256``, and the ``manifest_hash``. Its Arrow schema
metadata ``rxcurate.lockfile`` records the layout, hashes (incl. a content hash of all rows, independent of the
Parquet encoding) and the source image size/bit depth. It records no machine path: image paths are relative to the
source root, which is given at run time (``--source`` or ``source.root``). ``select`` remembers the root it read
in ``<workdir>/.source.json``, a local file that is never published; :func:`read_lockfile` offers it as
``info["source_root"]`` so later stages on the same machine find the screen without ``--source``.

With ``select.filters`` (rxrx3), the wells above are only candidates: :func:`rxcurate.phenostats.curate` compresses
and embeds them in ``<workdir>/.candidates``, computes the statistic (``phenostats.parquet``) and the lockfile keeps
the controls plus the perturbations that pass (see :mod:`rxcurate.phenostats`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from rxcurate.errors import LockfileError, ManifestError, SourceError
from rxcurate.io import atomic_path
from rxcurate.manifest import Manifest
from rxcurate.progress import progress
from rxcurate.source import RXRX1, RXRX3, Layout, detect_layout, get_layout, read_metadata

LOCKFILE = "lockfile.parquet"
SOURCE_HINT = ".source.json"  # local, never published: the source root select read
LOCK_META_KEY = b"rxcurate.lockfile"
LOCK_FORMAT = 1
IMAGE_LIST_COLUMNS = ("keys", "images", "sha256")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HASH_THREADS = 8

_RXRX3_TYPES = {"plate": "BIGINT", "concentration": "DOUBLE"}
_RXRX1_TYPES = {"plate": "BIGINT", "site": "BIGINT", "sirna_id": "BIGINT"}


def well_columns(layout: Layout) -> list[str]:
    """Well-level metadata columns of a layout (RxRx1 drops the per-site columns)."""
    if layout is RXRX1:
        return [c for c in layout.columns if c not in ("site_id", "site")]
    return list(layout.columns)


# ---------------------------------------------------------------------------------------------------------------
# DuckDB session
# ---------------------------------------------------------------------------------------------------------------
def _connect() -> duckdb.DuckDBPyConnection:
    return duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    })


def _load_metadata(con: duckdb.DuckDBPyConnection, src: Path, metadata: str) -> tuple[Layout, pa.Table]:
    """Parse the metadata CSV with Arrow's multi-threaded reader (typed; empty strings stay '', an empty
    concentration is NULL), register it as the ``metadata`` view, validate it, define ``wells``.

    Returns the Arrow table too: the caller keeps it alive while the connection scans it (zero-copy).
    """
    path = src / metadata
    if not src.is_dir():
        raise SourceError(f"source folder {src} does not exist: pass --source DIR (e.g. rxcurate synth --out DIR)")
    if not path.is_file():
        raise SourceError(f"{path} not found: a source screen needs {metadata} beside images/")
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\r\n").split(",")
    layout = detect_layout(header)
    types = {c: pa.string() for c in layout.columns}
    for c, t in (_RXRX3_TYPES if layout is RXRX3 else _RXRX1_TYPES).items():
        types[c] = pa.float64() if t == "DOUBLE" else pa.int64()
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types=types, null_values=[""], strings_can_be_null=False, include_columns=list(layout.columns)))
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
        read_metadata(src, metadata)  # raises the precise SourceError (wrong type, bad quoting, ...)
        raise SourceError(f"{path} could not be read as a {layout.name} metadata CSV") from None
    con.register("metadata", table)
    if not _metadata_valid(con, layout):
        read_metadata(src, metadata)  # the pandas reader names the first bad row
        raise SourceError(f"{path} failed validation (run rxcurate inspect {src} for details)")
    if layout is RXRX3:
        con.execute("CREATE VIEW wells AS SELECT * FROM metadata")
    else:
        cols = ", ".join(well_columns(layout))
        con.execute(f"CREATE TABLE wells AS SELECT DISTINCT {cols} FROM metadata")
        dup = con.execute("SELECT well_id FROM wells GROUP BY well_id HAVING count(*) > 1 ORDER BY well_id "
                          "LIMIT 1").fetchone()
        if dup:
            raise SourceError(f"{path}: the sites of well {dup[0]} disagree on well-level columns "
                              f"({', '.join(well_columns(layout))}); every site of a well must share them")
    return layout, table


def _metadata_valid(con: duckdb.DuckDBPyConnection, layout: Layout) -> bool:
    """The checks of rxcurate.source._validate, vectorised in DuckDB (fast on millions of rows)."""
    from rxcurate.source import ADDRESSES_1536, ROWS_384, RXRX1_WELL_TYPES, RXRX3_CONCENTRATIONS_UM

    addresses_384 = [r + f"{c:02d}" for r in ROWS_384 for c in range(1, 25)]
    con.execute("CREATE TEMP TABLE _addresses AS SELECT unnest(?::VARCHAR[]) AS a",
                [ADDRESSES_1536 if layout is RXRX3 else addresses_384])
    if layout is RXRX3:
        concs = ", ".join(repr(c) for c in RXRX3_CONCENTRATIONS_UM)
        q = f"""SELECT count(*) > 0
            AND count(*) FILTER (WHERE address NOT IN (SELECT a FROM _addresses)) = 0
            AND count(*) FILTER (WHERE well_id <> experiment_name || '_' || plate || '_' || address) = 0
            AND count(*) FILTER (WHERE perturbation_type NOT IN ('CRISPR', 'COMPOUND')) = 0
            AND count(*) FILTER (WHERE concentration IS NOT NULL AND concentration NOT IN ({concs})) = 0
            AND count(DISTINCT well_id) = count(*)
            FROM metadata"""
    else:
        types = ", ".join(f"'{t}'" for t in RXRX1_WELL_TYPES)
        q = f"""SELECT count(*) > 0
            AND count(*) FILTER (WHERE well NOT IN (SELECT a FROM _addresses)) = 0
            AND count(*) FILTER (WHERE well_id <> experiment || '_' || plate || '_' || well) = 0
            AND count(*) FILTER (WHERE site_id <> well_id || '_' || site) = 0
            AND count(*) FILTER (WHERE well_type NOT IN ({types})) = 0
            AND count(DISTINCT site_id) = count(*)
            FROM metadata"""
    return bool(con.execute(q).fetchone()[0])


def _load_tables(con: duckdb.DuckDBPyConnection, manifest: Manifest, src: Path) -> None:
    for t in manifest.tables:
        path = manifest.resolve_table(t, src)
        try:
            if t.format == "parquet":
                con.execute(f'CREATE TABLE "{t.name}" AS SELECT * FROM read_parquet(?)', [str(path)])
            else:
                delim = "\t" if path.suffix == ".tsv" else ","
                con.execute(f'CREATE TABLE "{t.name}" AS SELECT * FROM read_csv(?, header=true, delim=?)',
                            [str(path), delim])
        except duckdb.Error as exc:
            raise ManifestError(f"{manifest.path}: tables.{t.name}: {path} is not a readable {t.format} table "
                                f"({_first_line(exc)})") from None


def _lock_down(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _run_select(con: duckdb.DuckDBPyConnection, sql: str, field: str, manifest: Manifest) -> pa.Table:
    """Run one user SELECT (already locked down) and return its result as Arrow."""
    try:
        stmts = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise ManifestError(f"{manifest.path}: {field} is not valid SQL: {_first_line(exc)}") from None
    if len(stmts) != 1:
        raise ManifestError(f"{manifest.path}: {field} must be exactly one SELECT statement, got {len(stmts)} "
                            f"statements (e.g. SELECT well_id FROM wells WHERE perturbation_type = 'COMPOUND')")
    kind = stmts[0].type
    if kind != duckdb.StatementType.SELECT:
        raise ManifestError(f"{manifest.path}: {field} must be a SELECT statement (got {kind.name}); selection "
                            f"SQL cannot COPY, ATTACH, INSTALL/LOAD, SET or write anything "
                            f"(e.g. SELECT well_id FROM wells WHERE ...)")
    try:
        return con.sql(stmts[0].query).to_arrow_table()
    except duckdb.PermissionException as exc:
        declared = ", ".join(["wells", "metadata", *[t.name for t in manifest.tables]])
        raise ManifestError(
            f"{manifest.path}: {field} tried to access a file or a setting ({_first_line(exc)}); selection SQL may "
            f"read only the tables {declared}: declare extra files under tables: (e.g. tables: {{genes: {{path: "
            f"genes.csv}}}}) and query them by name"
        ) from None
    except duckdb.Error as exc:
        raise ManifestError(f"{manifest.path}: {field} failed: {_first_line(exc)}") from None


def _well_ids(tbl: pa.Table, field: str, manifest: Manifest) -> pa.Table:
    if "well_id" not in tbl.column_names:
        raise ManifestError(f"{manifest.path}: {field} must return a well_id column, got columns "
                            f"{tbl.column_names} (e.g. SELECT well_id FROM wells WHERE ...)")
    return pa.table({"well_id": tbl.column("well_id").cast(pa.string())})


@dataclass
class Selection:
    """Wells chosen by a manifest (no image hashing yet)."""

    layout: Layout
    wells: pd.DataFrame  # well-level metadata, sorted by well_id
    sites: pd.DataFrame  # well_id, site: the source's sites of the selected wells
    counts: dict[str, int]  # wells from the SQL and from each sampler (before de-duplication)


def run_selection(manifest: Manifest, source: str | os.PathLike[str]) -> Selection:
    """Load the source metadata and declared tables into DuckDB, lock it down, run the SQL and the samplers."""
    src = Path(source)
    con = _connect()
    try:
        layout, _metadata_table = _load_metadata(con, src, manifest.source_metadata)
        if layout.name != manifest.layout:
            raise ManifestError(f"{manifest.path}: layout is {manifest.layout!r} but the source {src} has the "
                                f"{layout.name} layout: set layout: {layout.name} or pass the right --source")
        _load_tables(con, manifest, src)
        columns = [r[0] for r in con.execute("DESCRIBE wells").fetchall()]
        _lock_down(con)
        counts: dict[str, int] = {}
        sel = _well_ids(_run_select(con, manifest.sql, "select.sql", manifest), "select.sql", manifest)
        counts["sql"] = sel.num_rows
        con.register("_sel_sql", sel)
        parts = ["SELECT well_id FROM _sel_sql"]
        for i, s in enumerate(manifest.samples):
            field = f"select.sample[{i}]"
            bad = [c for c in s.per if c not in columns]
            if bad:
                raise ManifestError(f"{manifest.path}: {field}.per: unknown column {bad[0]!r}; the wells view has "
                                    f"{', '.join(columns)} (e.g. per: [experiment_name, plate])")
            part = ", ".join(f'"{c}"' for c in s.per)
            over = (f"PARTITION BY {part} " if part else "") + f"ORDER BY md5('{s.seed}:' || well_id), well_id"
            q = (f"SELECT well_id FROM (SELECT well_id, row_number() OVER ({over}) AS _rank FROM wells "
                 f"WHERE (\n{s.where}\n)) WHERE _rank <= {s.n}")
            drawn = _well_ids(_run_select(con, q, f"{field}.where", manifest), field, manifest)
            counts[s.name] = drawn.num_rows
            con.register(f"_sel_{i}", drawn)
            parts.append(f"SELECT well_id FROM _sel_{i}")
        con.execute(f"CREATE TEMP TABLE _all AS SELECT DISTINCT well_id FROM ({' UNION ALL '.join(parts)})")
        unknown = con.execute("SELECT well_id FROM _all ANTI JOIN wells USING (well_id) ORDER BY well_id "
                              "LIMIT 3").fetchall()
        if unknown:
            raise ManifestError(f"{manifest.path}: select.sql returned well_id values that are not wells of the "
                                f"source, e.g. {[u[0] for u in unknown]}; return well_id from the wells view")
        wells = con.sql("SELECT w.* FROM wells w SEMI JOIN _all USING (well_id) ORDER BY well_id").to_arrow_table()
        wells = wells.to_pandas()
        if layout is RXRX1:
            sites = con.sql("SELECT well_id, site FROM metadata SEMI JOIN _all USING (well_id) "
                            "ORDER BY well_id, site").to_arrow_table().to_pandas()
        else:
            sites = pd.DataFrame({"well_id": wells["well_id"], "site": np.ones(len(wells), dtype=np.int64)})
    finally:
        con.close()
    if wells.empty:
        raise ManifestError(f"{manifest.path}: the selection is empty: check select.sql and the samplers against "
                            f"the source (rxcurate inspect {src} lists what it has)")
    return Selection(layout, wells.reset_index(drop=True), sites, counts)


# ---------------------------------------------------------------------------------------------------------------
# Images of the selection
# ---------------------------------------------------------------------------------------------------------------
def image_key(experiment: str, plate: int, address: str, site: int, channel: int) -> str:
    """``<experiment>/Plate<plate>/<address>_s<site>_<channel>``, as RxRx3-core's ``__key__``."""
    return f"{experiment}/Plate{plate}/{address}_s{site}_{channel}"


def image_lists(selection: Selection, manifest: Manifest) -> pd.DataFrame:
    """Per well (sorted by well_id): sites, and per image in __key__ order: keys and source paths."""
    layout = selection.layout
    want_sites = set(manifest.transform.sites)
    channels = manifest.transform.channels
    site_map: dict[str, list[int]] = {}
    for wid, site in zip(selection.sites["well_id"], selection.sites["site"], strict=True):
        if int(site) in want_sites:
            site_map.setdefault(wid, []).append(int(site))
    rows = []
    w = selection.wells
    for wid, exp, plate, addr in zip(w["well_id"], w[layout.experiment_col], w["plate"], w[layout.address_col],
                                     strict=True):
        sites = sorted(site_map.get(wid, []))
        keys, paths = [], []
        for s in sites:
            for c in channels:
                keys.append(image_key(exp, int(plate), addr, s, c))
                paths.append(layout.image_relpath(exp, int(plate), addr, s, c))
        order = sorted(range(len(keys)), key=keys.__getitem__)
        rows.append((sites, [keys[i] for i in order], [paths[i] for i in order]))
    out = pd.DataFrame(rows, columns=["sites", "keys", "images"])
    empty = [wid for wid, r in zip(w["well_id"], rows, strict=True) if not r[0]]
    if empty:
        raise ManifestError(f"{manifest.path}: transform.sites {list(manifest.transform.sites)} leaves well "
                            f"{empty[0]} (and {len(empty) - 1} more) without images: choose sites the wells have")
    return out


def _hash_image(src: Path, rel: str) -> tuple[str, tuple[int, int, int, int]]:
    path = src / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceError(f"{path} is missing: restore it (regenerate or re-download the screen) or remove its well "
                          f"from the selection") from None
    except OSError as exc:
        raise SourceError(f"{path} is unreadable ({exc.strerror}): fix its permissions or restore it") from None
    if len(data) < 29 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise SourceError(f"{path} is not a PNG file: restore it (regenerate or re-download the screen)")
    width, height, depth, ctype = struct.unpack(">IIBB", data[16:26])
    return hashlib.sha256(data).hexdigest(), (width, height, depth, ctype)


def hash_images(src: Path, paths: list[str], layout: Layout,
                threads: int = HASH_THREADS) -> tuple[list[str], list[int]]:
    """sha256 of every image (thread pool); check all are grayscale PNGs of one size and the layout's bit depth.

    Returns the digests (same order as ``paths``) and the common [height, width].
    """
    want_depth = 16 if layout.image_dtype == "uint16" else 8
    digests: list[str] = [""] * len(paths)
    first: tuple[int, int] | None = None
    with progress(len(paths), "hash source images", "images") as advance, \
            ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for i, (digest, (w, h, depth, ctype)) in enumerate(pool.map(lambda p: _hash_image(src, p), paths)):
            if first is None:
                first = (h, w)
            if (h, w) != first or depth != want_depth or ctype != 0:
                raise SourceError(
                    f"{src / paths[i]}: {w}x{h}, {depth}-bit, PNG colour type {ctype}; expected {first[1]}x{first[0]} "
                    f"{want_depth}-bit grayscale like the other images of this {layout.name} screen: re-export it or "
                    f"remove its well from the selection"
                )
            digests[i] = digest
            advance(1)
    assert first is not None
    return digests, [first[0], first[1]]


# ---------------------------------------------------------------------------------------------------------------
# Lockfile
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Lockfile:
    path: Path
    table: pa.Table
    info: dict[str, Any]

    @property
    def layout(self) -> Layout:
        return get_layout(self.info["layout"])

    @property
    def content_hash(self) -> str:
        return self.info["content_hash"]

    @property
    def image_shape(self) -> tuple[int, int]:
        h, w = self.info["image_shape"]
        return int(h), int(w)

    @property
    def n_images(self) -> int:
        return int(self.info["n_images"])


def content_hash(table: pa.Table) -> str:
    """sha256 over canonical JSON lines of every row (all columns but manifest_hash), in row order.

    Independent of the Parquet encoding and library versions.
    """
    cols = [c for c in table.column_names if c != "manifest_hash"]
    h = hashlib.sha256()
    h.update(json.dumps(cols).encode())
    for batch in table.select(cols).to_batches(max_chunksize=8192):
        data = batch.to_pydict()
        for i in range(batch.num_rows):
            row = [_jsonable(data[c][i]) for c in cols]
            h.update(json.dumps(row, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode())
            h.update(b"\n")
    return h.hexdigest()


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and v != v:  # NaN
        return None
    return v


def build_lockfile_table(selection: Selection, images: pd.DataFrame, digests: list[list[str]],
                         manifest: Manifest) -> pa.Table:
    layout = selection.layout
    w = selection.wells
    arrays: dict[str, pa.Array] = {}
    for c in well_columns(layout):
        col = w[c]
        if c in ("plate", "sirna_id"):
            arrays[c] = pa.array(col.astype("int64").to_numpy(), type=pa.int64())
        elif c == "concentration":
            arrays[c] = pa.array(col.astype("float64").to_numpy(), type=pa.float64(), from_pandas=True)
        else:
            arrays[c] = pa.array(col.astype(str).tolist(), type=pa.string())
    arrays["sites"] = pa.array(images["sites"].tolist(), type=pa.list_(pa.int64()))
    arrays["keys"] = pa.array(images["keys"].tolist(), type=pa.list_(pa.string()))
    arrays["images"] = pa.array(images["images"].tolist(), type=pa.list_(pa.string()))
    arrays["sha256"] = pa.array(digests, type=pa.list_(pa.string()))
    arrays["manifest_hash"] = pa.array([manifest.manifest_hash()] * len(w), type=pa.string())
    return pa.table(arrays)


def write_lockfile(dest: Path, table: pa.Table, info: dict[str, Any]) -> None:
    meta = {LOCK_META_KEY: json.dumps(info, sort_keys=True).encode()}
    table = table.replace_schema_metadata(meta)
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_lockfile(workdir: str | os.PathLike[str], manifest: Manifest | None = None) -> Lockfile:
    """Read and check ``<workdir>/lockfile.parquet``; raise :class:`LockfileError` naming the fix."""
    path = Path(workdir) / LOCKFILE
    if not path.is_file():
        raise LockfileError(f"{path} not found: run rxcurate select MANIFEST --workdir {workdir} first")
    try:
        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(LOCK_META_KEY)
        info = json.loads(raw) if raw else None
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise LockfileError(f"{path} is unreadable ({_first_line(exc)}): delete it and rerun rxcurate select") from None
    if not isinstance(info, dict) or info.get("format") != LOCK_FORMAT:
        raise LockfileError(f"{path} is not an rxcurate lockfile (format {LOCK_FORMAT}): rerun rxcurate select")
    layout = get_layout(info.get("layout", "?"))
    need = [*well_columns(layout), "sites", *IMAGE_LIST_COLUMNS, "manifest_hash"]
    missing = [c for c in need if c not in table.column_names]
    if missing:
        raise LockfileError(f"{path} lacks columns {missing}: rerun rxcurate select")
    table = table.replace_schema_metadata(None)
    hint = source_hint(path.parent)
    if hint is not None:
        info.setdefault("source_root", hint)
    if content_hash(table) != info.get("content_hash"):
        raise LockfileError(f"{path} was modified after rxcurate select (content hash mismatch): rerun rxcurate select")
    ids = table.column("well_id").to_pylist()
    if ids != sorted(ids) or len(set(ids)) != len(ids):
        raise LockfileError(f"{path}: well_id must be unique and sorted: rerun rxcurate select")
    if manifest is not None and info.get("selection_hash") != manifest.selection_hash():
        raise LockfileError(
            f"{path} was made from a different selection (select, tables, layout, transform.sites/channels changed "
            f"in {manifest.path}): rerun rxcurate select {manifest.path} --workdir {workdir}"
        )
    return Lockfile(path, table, info)


def write_source_hint(workdir: Path, source: Path) -> None:
    """Remember (locally, in a hidden file that is never published) the source root select read."""
    from rxcurate.io import atomic_write_json

    atomic_write_json(workdir / SOURCE_HINT, {"source_root": str(Path(source).resolve())})


def source_hint(workdir: str | os.PathLike[str]) -> str | None:
    """The source root recorded by the last ``select`` into ``workdir`` on this machine, if any."""
    try:
        root = json.loads((Path(workdir) / SOURCE_HINT).read_text(encoding="utf-8")).get("source_root")
    except (OSError, ValueError, AttributeError):
        return None
    return root if isinstance(root, str) and root else None


def subset_selection(selection: Selection, images: pd.DataFrame, digests: list[list[str]], keep: np.ndarray
                     ) -> tuple[Selection, pd.DataFrame, list[list[str]]]:
    """The wells of ``selection`` where ``keep`` (aligned with ``selection.wells``) is true."""
    keep = np.asarray(keep, dtype=bool)
    wells = selection.wells[keep].reset_index(drop=True)
    sites = selection.sites[selection.sites["well_id"].isin(set(wells["well_id"]))].reset_index(drop=True)
    return (Selection(selection.layout, wells, sites, dict(selection.counts)), images[keep].reset_index(drop=True),
            [d for d, k in zip(digests, keep, strict=True) if k])


# ---------------------------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class SelectResult:
    lockfile: Path
    summary: dict[str, Any]


def summarise(selection: Selection, images: pd.DataFrame, manifest: Manifest,
              image_shape: list[int] | None) -> dict[str, Any]:
    w = selection.wells
    layout = selection.layout
    n_images = int(sum(len(k) for k in images["keys"]))
    s: dict[str, Any] = {
        "manifest": manifest.name,
        "version": manifest.version,
        "layout": layout.name,
        "wells": int(len(w)),
        "images": n_images,
        "from": dict(selection.counts),
        "experiments": {k: int(v) for k, v in w[layout.experiment_col].value_counts().sort_index().items()},
        "plates": int(w[[layout.experiment_col, "plate"]].drop_duplicates().shape[0]),
    }
    if layout is RXRX3:
        s["by_perturbation_type"] = {k: int(v) for k, v in w["perturbation_type"].value_counts().sort_index().items()}
        ctrl = w["treatment"].isin(["EMPTY_control", "CRISPR_control"])
        s["controls"] = {k: int(v) for k, v in w.loc[ctrl, "treatment"].value_counts().sort_index().items()}
        conc = w.loc[w["concentration"].notna(), "concentration"].value_counts().sort_index()
        s["by_concentration_uM"] = {f"{k:g}": int(v) for k, v in conc.items()}
        s["genes"] = int(w.loc[(w.perturbation_type == "CRISPR") & ~ctrl, "gene"].nunique())
        s["compounds"] = int(w.loc[(w.perturbation_type == "COMPOUND") & ~ctrl, "treatment"].nunique())
    else:
        s["by_well_type"] = {k: int(v) for k, v in w["well_type"].value_counts().sort_index().items()}
        s["by_cell_type"] = {k: int(v) for k, v in w["cell_type"].value_counts().sort_index().items()}
    if image_shape is not None:
        crop = manifest.transform.crop
        h, w_ = (crop.height, crop.width) if crop else tuple(image_shape)
        per = manifest.transform.codec.nominal_bytes(h, w_)
        s["output_image_shape"] = [h, w_]
        s["bytes_per_image"] = per
        s["projected_bytes"] = per * n_images if per is not None else None
    return s


ESTIMATE_IMAGES = 8


def estimate_bytes_per_image(manifest: Manifest, src: Path, images: pd.DataFrame, seed: int = 0) -> int:
    """Mean encoded size of up to ``ESTIMATE_IMAGES`` images chosen by hash (for variable-size codec modes)."""
    import imagecodecs

    from rxcurate.transform import transform_image

    pairs = [(k, p) for keys, paths in zip(images["keys"], images["images"], strict=True)
             for k, p in zip(keys, paths, strict=True)]
    pairs.sort(key=lambda kp: hashlib.sha256(f"{seed}:{kp[0]}".encode()).digest())
    t = manifest.transform
    sizes = []
    for key, rel in pairs[:ESTIMATE_IMAGES]:
        img = imagecodecs.png_decode((src / rel).read_bytes())
        try:
            blob = transform_image(img, t.crop, t.convert, t.codec, int(key.rsplit("_", 1)[1]))[0]
        except Exception:  # an unusable image is reported by compress, naming it; skip it for the estimate
            continue
        sizes.append(len(blob))
    return int(round(float(np.mean(sizes)))) if sizes else 0


def check_crop_fits(manifest: Manifest, image_shape: list[int]) -> None:
    crop = manifest.transform.crop
    if crop is None:
        return
    h, w = image_shape
    oy, ox = crop.origin if crop.origin is not None else ((h - crop.height) // 2, (w - crop.width) // 2)
    if crop.height > h or crop.width > w or oy + crop.height > h or ox + crop.width > w:
        raise ManifestError(f"{manifest.path}: transform.crop {crop.to_dict()} does not fit the source images "
                            f"({w}x{h}): use a size <= {min(h, w)} (e.g. crop: {{size: {min(h, w, 512)}}})")


def select(manifest: Manifest, *, source: str | os.PathLike[str] | None = None,
           workdir: str | os.PathLike[str] | None = None, threads: int = HASH_THREADS) -> SelectResult:
    """Run the selection, hash the selected images and write ``<workdir>/lockfile.parquet`` atomically."""
    src = manifest.resolve_source(source)
    out = manifest.resolve_workdir(workdir)
    selection = run_selection(manifest, src)
    images = image_lists(selection, manifest)
    flat = [p for paths in images["images"] for p in paths]
    digests_flat, shape = hash_images(src, flat, selection.layout, threads)
    check_crop_fits(manifest, shape)
    digests, k = [], 0
    for paths in images["images"]:
        digests.append(digests_flat[k : k + len(paths)])
        k += len(paths)
    def lock(sel: Selection, imgs: pd.DataFrame, dig: list[list[str]]) -> tuple[pa.Table, dict[str, Any]]:
        table = build_lockfile_table(sel, imgs, dig, manifest)
        return table, {
            "format": LOCK_FORMAT,
            "layout": sel.layout.name,
            "manifest": manifest.name,
            "version": manifest.version,
            "selection_hash": manifest.selection_hash(),
            "manifest_hash": manifest.manifest_hash(),
            "content_hash": content_hash(table),
            "image_shape": shape,
            "image_dtype": sel.layout.image_dtype,
            "n_wells": table.num_rows,
            "n_images": int(sum(len(k) for k in imgs["keys"])),
        }

    curation: dict[str, Any] | None = None
    if manifest.filters:
        from rxcurate.phenostats import curate

        keep, curation = curate(manifest, src, out, *lock(selection, images, digests))
        selection, images, digests = subset_selection(selection, images, digests, keep)
    table, info = lock(selection, images, digests)
    if curation is not None:
        info["curation"] = curation
    if curation is None:  # files of an earlier filtered selection must not be published with this one
        from rxcurate.phenostats import OUTPUTS

        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
    dest = out / LOCKFILE
    write_lockfile(dest, table, info)
    write_source_hint(out, src)
    summary = summarise(selection, images, manifest, shape)
    if curation is not None:
        summary["curation"] = curation
    if summary["bytes_per_image"] is None:
        per = estimate_bytes_per_image(manifest, src, images)
        summary["bytes_per_image"] = per
        summary["projected_bytes"] = per * summary["images"]
        summary["projection"] = f"mean of {min(ESTIMATE_IMAGES, summary['images'])} encoded sample images"
    else:
        summary["projection"] = "codec rate"
    summary["lockfile"] = str(dest)
    summary["selection_hash"] = info["selection_hash"]
    summary["content_hash"] = info["content_hash"]
    return SelectResult(dest, summary)
