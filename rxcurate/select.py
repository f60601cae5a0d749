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
``images`` (paths relative to the source root) and ``size`` (bytes), and the ``manifest_hash``. Its Arrow schema
metadata ``rxcurate.lockfile`` records the layout, hashes (incl. a content hash of all rows, independent of the
Parquet encoding) and the source image size/bit depth. It records no machine path: image paths are relative to the
source root, which is given at run time (``--source`` or ``source.root``). ``select`` remembers the root it read
in ``<workdir>/.source.json``, a local file that is never published; :func:`read_lockfile` offers it as
``info["source_root"]`` so later stages on the same machine find the screen without ``--source``.

One read of each source image per release (issue 17): select reads only each selected image's PNG header (29
bytes: is it a grayscale PNG of the screen's size and bit depth?) and its ``fstat``; it does not hash the images.
The lockfile records what is reproducible, each image's byte ``size`` (the same source gives a byte-identical
lockfile, wherever and whenever it was generated or copied); the image's ``mtime_ns``, which differs between two
copies of the same screen, goes into the local ``.source.json`` beside the source root, tied to the lockfile's
content hash (:func:`rxcurate.layout.write_source_fingerprints`). compress reads each image once, for encoding:
it refuses an image whose size or mtime differs from select's record before reading it, and records the sha256 of
the bytes it encoded in ``image_digests.parquet`` (``source_sha256``). ``rxcurate inspect --verify`` is the
explicit full-hash pass (:func:`rxcurate.compress.verify_source_digests`).

With ``select.filters`` (rxrx3), the wells above are only candidates: select writes their lockfile into
``<workdir>/.candidates`` instead; the pipeline compresses and embeds them there and the curate stage
(:mod:`rxcurate.curate`) computes the statistic (``phenostats.parquet``) and writes ``<workdir>/lockfile.parquet``
with the controls plus the perturbations that pass. Select itself never compresses, embeds or curates.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import imagecodecs
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from rxcurate.checkpoint import Checkpoint
from rxcurate.errors import ManifestError, SourceError
from rxcurate.layout import (
    CANDIDATES,
    CURATION_FILES,
    LOCK_FORMAT,
    LOCKFILE,
    SELECT_STATE,
    Lockfile,
    content_hash,
    well_columns,
    write_lockfile,
    write_source_fingerprints,
)
from rxcurate.manifest import Manifest
from rxcurate.progress import progress
from rxcurate.source import (
    ADDRESSES_1536,
    ROWS_384,
    RXRX1,
    RXRX1_WELL_TYPES,
    RXRX3,
    RXRX3_CONCENTRATIONS_UM,
    Layout,
    check_metadata_shape,
    detect_layout,
    read_metadata,
    read_regular_file,
    short,
)
from rxcurate.transform import check_crop_fits, transform_image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
READ_THREADS = 8  # threads reading PNG headers (a network file system answers stat/open slowly)

_RXRX3_TYPES = {"plate": "BIGINT", "concentration": "DOUBLE"}
_RXRX1_TYPES = {"plate": "BIGINT", "site": "BIGINT", "sirna_id": "BIGINT"}


# ---------------------------------------------------------------------------------------------------------------
# DuckDB session
# ---------------------------------------------------------------------------------------------------------------
# Resource budget of one selection (a cartesian query must not run unbounded): DuckDB's memory_limit and a wall-clock
# timeout after which the query is interrupted. Override with the environment variables below.
MEMORY_ENV, DEFAULT_MEMORY = "RXCURATE_SELECT_MEMORY", "4GB"
TIMEOUT_ENV, DEFAULT_TIMEOUT_S = "RXCURATE_SELECT_TIMEOUT", 600.0


def select_budget() -> tuple[str, float]:
    """(DuckDB memory_limit, timeout in seconds) of a selection, from the environment or the defaults."""
    memory = os.environ.get(MEMORY_ENV, DEFAULT_MEMORY).strip()
    if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", memory, re.IGNORECASE):
        raise ManifestError(f"{MEMORY_ENV}={short(memory)}: give a size such as 4GB or 512MB")
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S)).strip()
    try:
        timeout = float(raw)
    except ValueError:
        timeout = -1.0
    if not timeout > 0 or timeout != timeout:
        raise ManifestError(f"{TIMEOUT_ENV}={short(raw)}: give a number of seconds such as 600")
    return memory, timeout


def _connect() -> duckdb.DuckDBPyConnection:
    memory, _ = select_budget()
    return duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "memory_limit": memory,
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
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError, OverflowError):
        read_metadata(src, metadata)  # raises the precise SourceError (wrong type, bad quoting, ...)
        raise SourceError(f"{path} could not be read as a {layout.name} metadata CSV") from None
    check_metadata_shape(path, table.num_rows, {
        c: int(pc.max(pc.utf8_length(table.column(c))).as_py() or 0)
        for c in table.column_names if pa.types.is_string(table.schema.field(c).type) and table.num_rows})
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
    """The checks of rxcurate.source's validation, vectorised in DuckDB (fast on millions of rows)."""
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
    row = con.execute(q).fetchone()
    return bool(row is not None and row[0])


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
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return line if len(line) <= 300 else line[:300] + "..."


# ---------------------------------------------------------------------------------------------------------------
# Deterministic SQL only (parsed by DuckDB itself: json_serialize_sql gives the statement's syntax tree)
# ---------------------------------------------------------------------------------------------------------------
# Functions whose value changes between runs (VOLATILE in duckdb_functions(), plus the clock): a selection that
# calls them would select other wells on a rerun of the same manifest.
_CLOCK_FUNCTIONS = frozenset({
    "now", "current_date", "current_time", "current_timestamp", "current_localtime", "current_localtimestamp",
    "get_current_time", "get_current_timestamp", "today", "transaction_timestamp", "localtime", "localtimestamp",
    "txid_current", "current_query", "current_query_id", "current_transaction_id", "current_connection_id",
})
# Keywords the parser turns into column references (`SELECT current_date`).
_CLOCK_KEYWORDS = frozenset({"current_date", "current_time", "current_timestamp", "localtime", "localtimestamp"})


def _syntax_tree(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    rows = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()
    tree = json.loads(rows[0][0])
    return tree if isinstance(tree, dict) else {}


def _volatile_functions(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    rows = con.execute("SELECT DISTINCT function_name FROM duckdb_functions() WHERE stability = 'VOLATILE'").fetchall()
    return frozenset(str(r[0]).lower() for r in rows) | _CLOCK_FUNCTIONS


def nondeterminism(con: duckdb.DuckDBPyConnection, sql: str) -> str | None:
    """What makes ``sql`` select differently on a rerun (a volatile function, a clock, a sampling clause), or None."""
    tree = _syntax_tree(con, sql)
    if tree.get("error"):
        return None  # a syntax error: DuckDB itself reports it when the query runs
    volatile = _volatile_functions(con)
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("class") == "FUNCTION":
                name = str(node.get("function_name", "")).lower()
                if name in volatile:
                    found.append(f"{name}()")
            if node.get("class") == "COLUMN_REF":
                names = [str(c).lower() for c in node.get("column_names") or []]
                if len(names) == 1 and names[0] in _CLOCK_KEYWORDS:
                    found.append(names[0])
            if node.get("sample"):
                found.append("USING SAMPLE / TABLESAMPLE")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(tree)
    return found[0] if found else None


def check_where_expression(con: duckdb.DuckDBPyConnection, where: str, field: str, manifest: Manifest) -> None:
    """A sampler's ``where`` must be one boolean expression: parsed inside ``SELECT * FROM wells WHERE (...)``, the
    statement must still be exactly that (no closing parenthesis that adds UNION, LIMIT, ORDER BY or a subquery
    around it), so the sampler's ``n`` cannot be bypassed."""
    tree = _syntax_tree(con, f"SELECT * FROM wells WHERE (\n{where}\n)")
    stmts = tree.get("statements") or []
    node = (stmts[0].get("node") or {}) if len(stmts) == 1 else {}
    table = node.get("from_table") or {}
    ok = (not tree.get("error") and node.get("type") == "SELECT_NODE" and not node.get("modifiers")
          and table.get("type") == "BASE_TABLE" and str(table.get("table_name", "")).lower() == "wells"
          and not node.get("group_expressions") and node.get("having") is None and node.get("qualify") is None
          and not (node.get("cte_map") or {}).get("map") and node.get("where_clause") is not None)
    if not ok:
        raise ManifestError(f"{manifest.path}: {field} must be one condition on the wells view (e.g. "
                            "perturbation_type = 'CRISPR'), not SQL that closes its parentheses or adds clauses")


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
    volatile = nondeterminism(con, stmts[0].query)
    if volatile is not None:
        raise ManifestError(f"{manifest.path}: {field} uses {volatile}, which selects other wells on every run: a "
                            "lockfile must not change under an unchanged manifest; draw a seeded sample with "
                            "select.sample (e.g. {name: ctl, where: \"perturbation_type = 'CRISPR'\", n: 10, seed: 0})")
    _, timeout = select_budget()
    timer = threading.Timer(timeout, con.interrupt)
    timer.daemon = True
    timer.start()
    try:
        return con.sql(stmts[0].query).to_arrow_table()
    except duckdb.InterruptException:
        raise ManifestError(f"{manifest.path}: {field} ran longer than {timeout:g} s (set {TIMEOUT_ENV} to allow "
                            "more): check it for a cartesian join or an unbounded range()") from None
    except duckdb.OutOfMemoryException:
        memory, _ = select_budget()
        raise ManifestError(f"{manifest.path}: {field} needed more than {memory} of memory (set {MEMORY_ENV} to "
                            "allow more): check it for a cartesian join or an unbounded range()") from None
    except duckdb.PermissionException as exc:
        declared = ", ".join(["wells", "metadata", *[t.name for t in manifest.tables]])
        raise ManifestError(
            f"{manifest.path}: {field} tried to access a file or a setting ({_first_line(exc)}); selection SQL may "
            f"read only the tables {declared}: declare extra files under tables: (e.g. tables: {{genes: {{path: "
            f"genes.csv}}}}) and query them by name"
        ) from None
    except duckdb.Error as exc:
        raise ManifestError(f"{manifest.path}: {field} failed: {_first_line(exc)}") from None
    finally:
        timer.cancel()


def _well_ids(tbl: pa.Table, field: str, manifest: Manifest) -> pa.Table:
    names = tbl.column_names
    if "well_id" not in names:
        raise ManifestError(f"{manifest.path}: {field} must return a well_id column, got columns "
                            f"{short(names)} (e.g. SELECT well_id FROM wells WHERE ...)")
    if names.count("well_id") > 1:
        raise ManifestError(f"{manifest.path}: {field} returns {names.count('well_id')} columns named well_id; "
                            "return it once (e.g. SELECT well_id FROM wells WHERE ...)")
    col = tbl.column("well_id")
    kind = col.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)):
        raise ManifestError(f"{manifest.path}: {field}: well_id must be a text column, got {kind}; return the "
                            "wells view's well_id (e.g. SELECT well_id FROM wells WHERE ...)")
    return pa.table({"well_id": col.cast(pa.string())})


@dataclass
class Selection:
    """Wells chosen by a manifest (no image read yet)."""

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
            check_where_expression(con, s.where, f"{field}.where", manifest)
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
                                f"source, e.g. {[short(u[0], 80) for u in unknown]}; return well_id from the wells "
                                "view")
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


PNG_HEADER_BYTES = 29  # signature (8) + IHDR length/type (8) + width, height, bit depth, colour type (10) + 3


def _fingerprint_image(src: Path, rel: str) -> tuple[int, int, tuple[int, int, int, int]]:
    """(size, mtime_ns, (width, height, bit depth, colour type)) of one source image, reading only its PNG header."""
    path = src / rel
    try:
        head, st = read_regular_file(path, limit=PNG_HEADER_BYTES)
    except FileNotFoundError:
        raise SourceError(f"{path} is missing: restore it (regenerate or re-download the screen) or remove its well "
                          f"from the selection") from None
    except IsADirectoryError:
        raise SourceError(f"{path} is not a regular file (a FIFO, device or folder): replace it with the PNG image "
                          "or remove its well from the selection") from None
    except OSError as exc:
        raise SourceError(f"{path} is unreadable ({exc.strerror}): fix its permissions or restore it") from None
    if len(head) < PNG_HEADER_BYTES or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise SourceError(f"{path} is not a PNG file: restore it (regenerate or re-download the screen)")
    width, height, depth, ctype = struct.unpack(">IIBB", head[16:26])
    return int(st.st_size), int(st.st_mtime_ns), (width, height, depth, ctype)


def fingerprint_images(src: Path, paths: list[str], layout: Layout,
                       threads: int = READ_THREADS) -> tuple[list[int], list[int], list[int]]:
    """Size and mtime_ns of every image (thread pool; only PNG headers are read); check all are grayscale PNGs of
    one size and the layout's bit depth.

    Returns the sizes and mtimes (same order as ``paths``) and the common [height, width].
    """
    want_depth = 16 if layout.image_dtype == "uint16" else 8
    sizes: list[int] = [0] * len(paths)
    mtimes: list[int] = [0] * len(paths)
    first: tuple[int, int] | None = None
    with progress(len(paths), "check source images", "images") as advance, \
            ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for i, (size, mtime, (w, h, depth, ctype)) in enumerate(pool.map(lambda p: _fingerprint_image(src, p),
                                                                           paths)):
            if first is None:
                first = (h, w)
            if (h, w) != first or depth != want_depth or ctype != 0:
                raise SourceError(
                    f"{src / paths[i]}: {w}x{h}, {depth}-bit, PNG colour type {ctype}; expected {first[1]}x{first[0]} "
                    f"{want_depth}-bit grayscale like the other images of this {layout.name} screen: re-export it or "
                    f"remove its well from the selection"
                )
            sizes[i], mtimes[i] = size, mtime
            advance(1)
    assert first is not None
    return sizes, mtimes, [first[0], first[1]]


# ---------------------------------------------------------------------------------------------------------------
# Lockfile
# ---------------------------------------------------------------------------------------------------------------
def build_lockfile_table(selection: Selection, images: pd.DataFrame, sizes: list[list[int]],
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
    arrays["size"] = pa.array(sizes, type=pa.list_(pa.int64()))
    arrays["manifest_hash"] = pa.array([manifest.manifest_hash()] * len(w), type=pa.string())
    return pa.table(arrays)


# ---------------------------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------------------------
def summarise(layout: Layout, wells: pd.DataFrame, counts: dict[str, int], images: pd.DataFrame,
              manifest: Manifest, image_shape: list[int] | None) -> dict[str, Any]:
    """The selection summary of ``wells`` (well-level metadata) and their ``images`` (a ``keys`` list per well)."""
    w = wells
    n_images = int(sum(len(k) for k in images["keys"]))
    s: dict[str, Any] = {
        "manifest": manifest.name,
        "version": manifest.version,
        "layout": layout.name,
        "wells": int(len(w)),
        "images": n_images,
        "from": dict(counts),
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
    pairs = [(k, p) for keys, paths in zip(images["keys"], images["images"], strict=True)
             for k, p in zip(keys, paths, strict=True)]
    pairs.sort(key=lambda kp: hashlib.sha256(f"{seed}:{kp[0]}".encode()).digest())
    t = manifest.transform
    sizes = []
    for key, rel in pairs[:ESTIMATE_IMAGES]:
        img = imagecodecs.png_decode((src / rel).read_bytes())  # a few images, only for variable-size codecs
        try:
            blob = transform_image(img, t.crop, t.convert, t.codec, int(key.rsplit("_", 1)[1]))[0]
        except Exception:  # an unusable image is reported by compress, naming it; skip it for the estimate
            continue
        sizes.append(len(blob))
    return int(round(float(np.mean(sizes)))) if sizes else 0


def complete_summary(summary: dict[str, Any], manifest: Manifest, src: Path, images: pd.DataFrame, dest: Path,
                     info: dict[str, Any]) -> dict[str, Any]:
    """Add the projected size (estimated from sample images for variable-size codecs), the lockfile and its hashes."""
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
    if "curation" in info:
        summary["curation"] = info["curation"]
    return summary


def lockfile_summary(manifest: Manifest, src: Path, lock: Lockfile, counts: dict[str, int]) -> dict[str, Any]:
    """The summary :func:`select` prints, of an existing lockfile (e.g. the curated one; ``counts``: the wells from
    the SQL and each sampler, which the lockfile does not record)."""
    layout = lock.layout
    wells = lock.table.select(well_columns(layout)).to_pandas()
    images = lock.table.select(["keys", "images"]).to_pandas()
    summary = summarise(layout, wells, counts, images, manifest, list(lock.image_shape))
    return complete_summary(summary, manifest, src, images, lock.path, lock.info)


@dataclass
class SelectResult:
    lockfile: Path
    summary: dict[str, Any]


def select(manifest: Manifest, *, source: str | os.PathLike[str] | None = None,
           workdir: str | os.PathLike[str] | None = None, threads: int = READ_THREADS) -> SelectResult:
    """Run the selection, check the selected images (PNG headers only) and write the lockfile atomically:
    ``<workdir>/lockfile.parquet``, or with ``select.filters`` the candidates'
    ``<workdir>/.candidates/lockfile.parquet`` (the curate stage writes the workdir's)."""
    src = manifest.resolve_source(source)
    out = manifest.resolve_workdir(workdir)
    selection = run_selection(manifest, src)  # reads only: bad input fails before anything is written
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ManifestError(f"--workdir {out} cannot be created ({exc.strerror}): give a folder you can "
                            "write") from None
    busy = (f"another rxcurate select is running in {out} (its lock {out / SELECT_STATE}): wait for it to finish, "
            "or use another --workdir")
    lock = Checkpoint(out, SELECT_STATE, busy=busy)
    try:
        with lock.locked():
            result = _select_locked(manifest, selection, src, out, threads)
        lock.discard()  # the lock folder is local state: a finished select leaves only its lockfile
        return result
    except BaseException:
        if created:  # a folder this call made holds nothing else: leave no trace of a failed selection
            shutil.rmtree(out, ignore_errors=True)
        raise


def _select_locked(manifest: Manifest, selection: Selection, src: Path, out: Path, threads: int) -> SelectResult:
    images = image_lists(selection, manifest)
    flat = [p for paths in images["images"] for p in paths]
    sizes_flat, mtimes, shape = fingerprint_images(src, flat, selection.layout, threads)
    check_crop_fits(manifest, shape)
    sizes, k = [], 0
    for paths in images["images"]:
        sizes.append(sizes_flat[k : k + len(paths)])
        k += len(paths)
    table = build_lockfile_table(selection, images, sizes, manifest)
    info = {
        "format": LOCK_FORMAT,
        "layout": selection.layout.name,
        "manifest": manifest.name,
        "version": manifest.version,
        "selection_hash": manifest.selection_hash(),
        "manifest_hash": manifest.manifest_hash(),
        "content_hash": content_hash(table),
        "image_shape": shape,
        "image_dtype": selection.layout.image_dtype,
        "n_wells": table.num_rows,
        "n_images": int(sum(len(k) for k in images["keys"])),
    }
    if manifest.filters:
        folder = out / CANDIDATES
    else:
        folder = out
        for name in CURATION_FILES:  # files of an earlier filtered selection must not be published with this one
            (out / name).unlink(missing_ok=True)
    dest = folder / LOCKFILE
    write_lockfile(dest, table, info)
    write_source_fingerprints(folder, src, info["content_hash"], mtimes)
    summary = summarise(selection.layout, selection.wells, selection.counts, images, manifest, shape)
    return SelectResult(dest, complete_summary(summary, manifest, src, images, dest, info))
