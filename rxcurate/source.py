"""Source screens on disk: layouts (RxRx3, RxRx1), metadata reading/validation, image paths, inspection.

A source screen is a folder with ``metadata.csv`` and ``images/``; its layout is recognised from the
metadata columns. Everything here only reads.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import stat
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rxcurate.errors import SourceError

# The source screen's own layout (not a release folder's: rxcurate/layout.py names those).
SOURCE_METADATA = "metadata.csv"  # the default source.metadata of a manifest
IMAGES_DIR = "images"
SOURCE_TRUTH_DIR = "truth"  # benchmark truth tables of a screen (synthetic screens write them)
SYNTH_STAMP = "synth.json"  # what rxcurate synth generated (layout, preset, seed)
RELATIONSHIPS = "relationships"  # gene-gene relationships (entity1, entity2)
COMPOUND_GENE = "compound_gene_interactions"
# Truth files of each benchmark: {benchmark id: {input name: file name below truth/}}.
TRUTH_FILES = {
    "gene-gene-recall": {"relationships": f"{RELATIONSHIPS}.csv"},
    "compound-gene-activity": {"compound_gene_interactions": f"{COMPOUND_GENE}.csv"},
}


def truth_relpath(name: str) -> str:
    """``truth/<name>.csv``: a truth table's path relative to the source root."""
    return f"{SOURCE_TRUTH_DIR}/{name}.csv"

RXRX3_COLUMNS = (
    "well_id,experiment_name,plate,address,gene,treatment,SMILES,concentration,perturbation_type,cell_type"
).split(",")
RXRX1_COLUMNS = "site_id,well_id,cell_type,dataset,experiment,plate,well,site,well_type,sirna,sirna_id".split(",")

RXRX3_CONCENTRATIONS_UM = (0.0025, 0.01, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0)
RXRX3_CONTROLS = ("EMPTY_control", "CRISPR_control")
RXRX1_CELL_TYPES = ("HEPG2", "HUVEC", "RPE", "U2OS")
RXRX1_WELL_TYPES = ("treatment", "negative_control", "positive_control")
CHANNELS = (1, 2, 3, 4, 5, 6)

# 1536-well plate: 32 rows A..Z, AA..AF; 48 columns.
ROWS_1536 = [chr(ord("A") + i) for i in range(26)] + ["A" + chr(ord("A") + i) for i in range(6)]
COLS_1536 = [f"{c:02d}" for c in range(1, 49)]
ADDRESSES_1536 = [r + c for r in ROWS_1536 for c in COLS_1536]
# 384-well plate (RxRx1 uses the inner wells B..O x 02..23).
ROWS_384 = [chr(ord("A") + i) for i in range(16)]
ADDRESSES_384_INNER = [r + f"{c:02d}" for r in ROWS_384[1:15] for c in range(2, 24)]

_ADDR_1536 = re.compile(r"^(A[A-F]|[A-Z])(0[1-9]|[1-3][0-9]|4[0-8])$")
_ADDR_384 = re.compile(r"^([A-P])(0[1-9]|1[0-9]|2[0-4])$")


UNSAFE_SEGMENT_FIX = (
    "is not a single folder name (empty, '.', '..', a '/' or '\\', or a control character) and would put image "
    "paths outside the source root: fix that row of metadata.csv (e.g. experiment_name gene-079, address H29)"
)


@functools.lru_cache(maxsize=65536)
def is_safe_segment(value: str) -> bool:
    """True when ``value`` can be one path component below the source root (no ``..``, separators, NUL, ...)."""
    return (isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value
            and all(ord(ch) >= 32 and ord(ch) != 127 for ch in value))


@dataclass(frozen=True)
class Layout:
    """How a source screen lays out metadata and images."""

    name: str
    columns: tuple[str, ...]
    experiment_col: str
    address_col: str
    image_dtype: str  # "uint16" or "uint8"
    sites: tuple[int, ...]

    def image_relpath(self, experiment: str, plate: int | str, address: str, site: int, channel: int) -> str:
        """``images/<experiment>/Plate<plate>/<address>_s<site>_w<channel>.png``, always inside the source root."""
        for col, value in ((self.experiment_col, experiment), (self.address_col, address)):
            if not is_safe_segment(value):
                raise SourceError(
                    f"metadata.csv: well {experiment}_{plate}_{address}: {col} {value!r} {UNSAFE_SEGMENT_FIX}")
        return f"{IMAGES_DIR}/{experiment}/Plate{plate}/{address}_s{site}_w{channel}.png"


RXRX3 = Layout("rxrx3", tuple(RXRX3_COLUMNS), "experiment_name", "address", "uint16", (1,))
RXRX1 = Layout("rxrx1", tuple(RXRX1_COLUMNS), "experiment", "well", "uint8", (1, 2))
LAYOUTS = {"rxrx3": RXRX3, "rxrx1": RXRX1}


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise SourceError(f"unknown layout {name!r}: use one of {sorted(LAYOUTS)} (e.g. --layout rxrx3)") from None


def detect_layout(columns: Iterable[str]) -> Layout:
    cols = list(columns)
    for layout in LAYOUTS.values():
        if cols == list(layout.columns):
            return layout
    best = min(LAYOUTS.values(), key=lambda lay: len(set(lay.columns) ^ set(cols)))
    missing = [c for c in best.columns if c not in cols]
    extra = [c for c in cols if c not in best.columns]
    detail = []
    if missing:
        detail.append(f"missing columns {missing}")
    if extra:
        detail.append(f"unexpected columns {extra}")
    if not detail:
        detail.append("columns out of order")
    raise SourceError(
        f"metadata.csv does not match the {best.name} layout ({'; '.join(detail)}): expected exactly "
        f"{','.join(best.columns)}"
    )


MAX_FIELD_CHARS = 1024  # longest metadata value accepted (SMILES included); a longer one is a quoting accident
MAX_ID_CHARS = 200  # values quoted in error messages are cut to this length


def short(value: object, limit: int = MAX_ID_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages (a 10 MB value must not make a 10 MB line)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def read_regular_file(path: Path, *, limit: int = -1,
                      check: Callable[[os.stat_result], None] | None = None) -> tuple[bytes, os.stat_result]:
    """The bytes of a source file (its first ``limit`` bytes when ``limit >= 0``) and its ``fstat`` taken before they
    were read; only regular files are read (a FIFO, device or folder would block or mislead). ``check`` is called
    with that stat before any byte is read (e.g. compress's fingerprint check: a changed file is refused unread) and
    with a new one after the read (a file changed while it was read).

    Raises ``FileNotFoundError`` for a missing file, ``IsADirectoryError`` naming a non-regular one, other
    ``OSError`` as they come (callers word the fix for their stage).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # non-blocking: opening a FIFO must not wait for a writer
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file (a FIFO, device, socket or folder)", str(path))
        if check is not None:
            check(st)
        os.set_blocking(fd, True)
        if limit >= 0:  # unbuffered: a buffered read would fetch a whole block (4 KiB) for a 29-byte header
            parts: list[bytes] = []
            while limit > 0 and (part := os.read(fd, limit)):
                parts.append(part)
                limit -= len(part)
            data = b"".join(parts)
        else:
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read()
        if check is not None:
            check(os.fstat(fd))  # and after: a file written to while it was read
        return data, st
    finally:
        os.close(fd)


def check_metadata_shape(path: Path, rows: int, lengths: dict[str, int]) -> None:
    """Every reader of a metadata CSV applies the same strict shape checks: one row per physical line (a quote left
    open swallows the following lines into one value) and no value longer than ``MAX_FIELD_CHARS``.

    ``rows``: the parsed row count; ``lengths``: the longest value per column.
    """
    with open(path, "rb") as f:
        data = f.read()
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    lines -= len(data) - len(data.rstrip(b"\r\n")) - (1 if data.endswith(b"\n") else 0)  # trailing blank lines
    if rows != lines - 1:
        at = next((i + 1 for i, line in enumerate(data.split(b"\n")) if line.count(b'"') % 2), None)
        where = f" (an unbalanced quote at line {at})" if at is not None else ""
        raise SourceError(f"{path}: {lines - 1:,} data lines parse as {rows:,} rows{where}: a value with an open "
                          "quote or a line break swallows the lines after it; close the quote (each row of "
                          "metadata.csv is one line)")
    for col, n in sorted(lengths.items()):
        if n > MAX_FIELD_CHARS:
            raise SourceError(f"{path}: column {col} has a value of {n:,} characters (at most {MAX_FIELD_CHARS:,}): "
                              "an unbalanced quote or a corrupt file; fix that row")


def read_metadata(src: str | Path, metadata: str = SOURCE_METADATA) -> tuple[Layout, pd.DataFrame]:
    """Read and validate a source screen's metadata; raise :class:`SourceError` naming the problem."""
    src = Path(src)
    path = src / metadata
    if not src.is_dir():
        raise SourceError(f"source folder {src} does not exist: pass --source DIR (e.g. rxcurate synth --out DIR)")
    if not path.is_file():
        raise SourceError(f"{path} not found: a source screen needs {metadata} beside images/")
    try:
        header = pd.read_csv(path, nrows=0).columns
    except Exception as exc:  # pandas raises many types for unreadable files
        raise SourceError(f"{path} is not a readable CSV file ({exc})") from None
    layout = detect_layout(header)
    dtypes: dict[str, str] = {c: "string" for c in layout.columns}
    if layout is RXRX3:
        dtypes.update(plate="int64", concentration="float64")
    else:
        dtypes.update(plate="int64", site="int64", sirna_id="int64")
    try:
        df = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values={"concentration": [""]})
    except (ValueError, TypeError, OverflowError) as exc:
        raise SourceError(f"{path}: a column has values of the wrong type ({short(str(exc))}); plate must be an "
                          "integer (at most 19 digits)") from None
    check_metadata_shape(path, len(df), {c: int(df[c].str.len().max() or 0) for c in df.columns
                                         if df[c].dtype == "string" and len(df)})
    _validate(layout, df, path)
    return layout, df


def _bad(path: Path, df: pd.DataFrame, mask: np.ndarray | pd.Series, what: str, fix: str) -> None:
    mask = np.asarray(mask, dtype=bool)
    if mask.any():
        rows = np.flatnonzero(mask)
        examples = df.iloc[rows[:3]].to_dict("records")
        raise SourceError(
            f"{path}: {int(mask.sum())} row(s) with {what} (first at line {rows[0] + 2}: {examples[0]}); {fix}"
        )


def _validate(layout: Layout, df: pd.DataFrame, path: Path) -> None:
    if df.empty:
        raise SourceError(f"{path} has no rows: a source screen needs at least one well")
    for col in (layout.experiment_col, layout.address_col):  # they become folder/file names under images/
        example = "gene-079" if col == "experiment_name" else "HEPG2-01" if col == "experiment" else "H29"
        _bad(path, df, ~df[col].map(is_safe_segment), f"a {col} that is not one folder name (empty, '.', '..', "
             "'/', '\\' or a control character)", f"it would put image paths outside the source root: fix those "
             f"rows (e.g. {col} {example})")
    if layout is RXRX3:
        _bad(path, df, ~df["address"].str.fullmatch(_ADDR_1536.pattern), "a bad address",
             "1536-well addresses run A01..AF48 (e.g. H29)")
        expected = df["experiment_name"] + "_" + df["plate"].astype(str) + "_" + df["address"]
        _bad(path, df, df["well_id"] != expected, "a well_id that is not <experiment_name>_<plate>_<address>",
             "e.g. gene-079_8_H29")
        _bad(path, df, ~df["perturbation_type"].isin(["CRISPR", "COMPOUND"]), "a bad perturbation_type",
             "use CRISPR or COMPOUND")
        conc = df["concentration"]
        ok = conc.isna() | conc.isin(RXRX3_CONCENTRATIONS_UM)
        _bad(path, df, ~ok, "a concentration outside the RxRx3 set",
             f"use one of {list(RXRX3_CONCENTRATIONS_UM)} uM or leave it empty")
        _bad(path, df, df["well_id"].duplicated(), "a duplicated well_id", "each well appears once")
    else:
        _bad(path, df, ~df["well"].str.fullmatch(_ADDR_384.pattern), "a bad well address",
             "384-well addresses run A01..P24 (e.g. B02)")
        expected = df["experiment"] + "_" + df["plate"].astype(str) + "_" + df["well"]
        _bad(path, df, df["well_id"] != expected, "a well_id that is not <experiment>_<plate>_<well>",
             "e.g. HEPG2-01_1_B02")
        _bad(path, df, df["site_id"] != df["well_id"] + "_" + df["site"].astype(str),
             "a site_id that is not <well_id>_<site>", "e.g. HEPG2-01_1_B02_1")
        _bad(path, df, ~df["well_type"].isin(RXRX1_WELL_TYPES), "a bad well_type", f"use one of {RXRX1_WELL_TYPES}")
        _bad(path, df, df["site_id"].duplicated(), "a duplicated site_id", "each site appears once")


def image_relpaths(layout: Layout, df: pd.DataFrame, channels: Iterable[int] = CHANNELS) -> pd.DataFrame:
    """One row per (well, site, channel): well_id, site, channel, relpath (relative to the source root)."""
    channels = list(channels)
    if layout is RXRX3:
        base = df[["well_id", layout.experiment_col, "plate", layout.address_col]].copy()
        base["site"] = 1
    else:
        base = df[["well_id", layout.experiment_col, "plate", layout.address_col, "site"]].copy()
    n = len(base)
    rep = base.loc[base.index.repeat(len(channels))].reset_index(drop=True)
    rep["channel"] = np.tile(np.asarray(channels, dtype=np.int64), n)
    prefix = (
        f"{IMAGES_DIR}/" + rep[layout.experiment_col] + "/Plate" + rep["plate"].astype(str) + "/"
        + rep[layout.address_col]
    )
    rep["relpath"] = prefix + "_s" + rep["site"].astype(str) + "_w" + rep["channel"].astype(str) + ".png"
    return rep[["well_id", "site", "channel", "relpath"]]


_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def png_header(path: str | Path) -> tuple[int, int, int, int]:
    """(width, height, bit_depth, color_type) from a PNG's IHDR chunk, without decoding."""
    with open(path, "rb") as f:
        head = f.read(29)
    if len(head) < 29 or head[:8] != _PNG_SIG or head[12:16] != b"IHDR":
        raise SourceError(f"{path} is not a PNG file: source images must be PNG (re-export or re-download it)")
    width, height, depth, ctype = struct.unpack(">IIBB", head[16:26])
    return width, height, depth, ctype


def inspect_source(src: str | Path, *, check_images: bool = True) -> dict:
    """Validate a source screen and summarise it. Raises :class:`SourceError` on the first problem."""
    src = Path(src)
    layout, df = read_metadata(src)
    report: dict = {"source": str(src), "layout": layout.name}
    wells = df.drop_duplicates("well_id")
    report["wells"] = int(len(wells))
    report["experiments"] = int(wells[layout.experiment_col].nunique())
    report["plates"] = int(wells[[layout.experiment_col, "plate"]].drop_duplicates().shape[0])
    if layout is RXRX3:
        counts = wells["perturbation_type"].value_counts().sort_index()
        report["by_perturbation_type"] = {k: int(v) for k, v in counts.items()}
        ctrl = wells["treatment"].isin(RXRX3_CONTROLS)
        report["controls"] = {k: int(v) for k, v in wells.loc[ctrl, "treatment"].value_counts().sort_index().items()}
        report["genes"] = int(wells.loc[(wells.perturbation_type == "CRISPR") & ~ctrl, "gene"].nunique())
        report["compounds"] = int(wells.loc[(wells.perturbation_type == "COMPOUND") & ~ctrl, "treatment"].nunique())
    else:
        report["by_well_type"] = {k: int(v) for k, v in wells["well_type"].value_counts().sort_index().items()}
        report["cell_types"] = sorted(wells["cell_type"].unique().tolist())
        report["sirnas"] = int(wells.loc[wells.well_type == "treatment", "sirna"].nunique())
    paths = image_relpaths(layout, df)
    report["images_expected"] = int(len(paths))
    if check_images:
        missing = [p for p in paths["relpath"] if not (src / p).is_file()]
        report["images_missing"] = len(missing)
        if missing:
            raise SourceError(
                f"{len(missing)} image(s) missing under {src}, e.g. {missing[0]}: regenerate or re-download the "
                f"screen, or remove those wells from metadata.csv"
            )
        want_depth = 16 if layout.image_dtype == "uint16" else 8
        size = None
        for rel in paths["relpath"]:
            w, h, depth, ctype = png_header(src / rel)
            if size is None:
                size = (w, h)
            if (w, h) != size or depth != want_depth or ctype != 0:
                raise SourceError(
                    f"{src / rel}: {w}x{h}, {depth}-bit, PNG colour type {ctype}; expected {size[0]}x{size[1]} "
                    f"{want_depth}-bit grayscale like the other images of this {layout.name} screen"
                )
        report["image_size"] = list(size) if size else None
        report["image_bits"] = want_depth
    return report
