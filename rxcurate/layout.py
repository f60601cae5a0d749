"""The release folder: every file and folder name, the release file set, the lockfile and a typed ``release.json``.

This is the one module that spells the names of a release folder (= the dataset repository's layout, see
docs/contracts.md); every stage asks it for paths. Its *release files* are ``lockfile.parquet``,
``data/train-*.parquet``, ``metadata.csv``/``metadata.parquet``, ``compression_report.json``, ``checksums.json``,
``CHANGELOG.md``, the curation tables, every non-hidden file under ``embeddings/``, ``benchmarks/``, ``polaris/``,
``probe/`` and ``card/`` (the card's images), the RxRx3-core drop-in files (``metadata_rxrx3_core.csv``,
``OpenPhenom_rxrx3_core_embeddings.parquet``), plus ``README.md`` (the card) and ``release.json``. Anything else (a
source screen, ``.compress-state/``, temp files) is local state that is never published.

Layer: shared (imports only errors, io, source). No stage imports another; they all import this.
"""

from __future__ import annotations

import array
import base64
import hashlib
import json
import os
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from rxcurate.errors import LayoutError, LockfileError
from rxcurate.io import atomic_path, atomic_write_json, read_json, sha256_file
from rxcurate.source import RXRX1, Layout, get_layout

# ------------------------------------------------------------------------------------------------ top-level files
RELEASE_JSON = "release.json"
CARD = "README.md"
CHANGELOG = "CHANGELOG.md"
LOCKFILE = "lockfile.parquet"
METADATA_CSV = "metadata.csv"
METADATA_PARQUET = "metadata.parquet"
REPORT = "compression_report.json"
CHECKSUMS = "checksums.json"
# sha256 of every image's encoded bytes by __key__, recorded by compress as it packs the shards: validate decodes a
# sample and checks each key still holds its own image (bytes swapped between keys keep every shard well-formed)
IMAGE_DIGESTS = "image_digests.parquet"
# curation (select.filters): the statistic per perturbation, the report and the before/after comparison
PHENOSTATS = "phenostats.parquet"
CURATION = "curation.json"
COMPARISON = "curation_comparison.json"
CURATION_FILES = (PHENOSTATS, CURATION, COMPARISON)
# RxRx3-core drop-in (rxrx3 layout): recursionpharma/rxrx3-core's own file names and columns, at the repo root
RXRX3_CORE_METADATA = "metadata_rxrx3_core.csv"
RXRX3_CORE_EMBEDDINGS = "OpenPhenom_rxrx3_core_embeddings.parquet"
RXRX3_CORE_FILES = (RXRX3_CORE_METADATA, RXRX3_CORE_EMBEDDINGS)
TOP_FILES = (LOCKFILE, METADATA_CSV, METADATA_PARQUET, REPORT, CHECKSUMS, IMAGE_DIGESTS, CHANGELOG, *CURATION_FILES,
             *RXRX3_CORE_FILES)

# ------------------------------------------------------------------------------------------------ folders
DATA_DIR = "data"
SHARD_GLOB = "train-*-of-*.parquet"
EMBEDDINGS_DIR = "embeddings"
EMBEDDINGS_FILE = "embeddings.parquet"
TILES_FILE = "tiles.parquet"
INFO_FILE = "info.json"
BENCHMARKS_DIR = "benchmarks"
DEFINITIONS_DIR = f"{BENCHMARKS_DIR}/definitions"
RESULTS_DIR = f"{BENCHMARKS_DIR}/results"
TRUTH_DIR = f"{BENCHMARKS_DIR}/truth"
POLARIS_DIR = "polaris"
POLARIS_BENCHMARK = "benchmark.json"  # inside polaris/: the Polaris benchmark, its dataset table and our record
POLARIS_TABLE = "table.parquet"
POLARIS_INFO = "rxcurate.json"
POLARIS_PREDICTIONS = "predictions.parquet"  # the default embedding set's scores of the pairs (results upload)
PROBE_DIR = "probe"
PROBE_TABLE = "probe.parquet"
PROBE_JSON = "probe.json"
PROBE_PLOT = "probe.png"

# ------------------------------------------------------------------------------------------------ card assets
# Images the dataset card embeds, rendered by rxcurate.card from the release's own files (byte-identical for the same
# inputs): a sample montage of a few wells (6 channels composited to RGB) and the benchmark plots. Published under
# card/ like probe/probe.png (every non-hidden file of the folder is a release file).
CARD_ASSETS_DIR = "card"
CARD_MONTAGE = "montage.png"
CARD_COMPOUND_GENE_PLOT = "compound_gene_ap.png"
CARD_RECALL_PLOT = "gene_gene_recall.png"
CARD_ASSETS = (CARD_MONTAGE, CARD_COMPOUND_GENE_PLOT, CARD_RECALL_PLOT)


def card_asset(name: str) -> str:
    """Release-relative POSIX path of a card image (``card/montage.png``)."""
    return f"{CARD_ASSETS_DIR}/{name}"


TREE_DIRS = (EMBEDDINGS_DIR, BENCHMARKS_DIR, POLARIS_DIR, PROBE_DIR, CARD_ASSETS_DIR)

# ------------------------------------------------------------------------------------------------ local state
SOURCE_HINT = ".source.json"  # the source root select read on this machine; never published
SELECT_STATE = ".select-state"  # select's lock: one selection at a time per release folder
COMPRESS_STATE = ".compress-state"
EMBED_STATE = ".embed-state"
CANDIDATES = ".candidates"  # curation candidates (a release folder of their own); never published

LOCK_META_KEY = b"rxcurate.lockfile"
LOCK_FORMAT = 1
IMAGE_LIST_COLUMNS = ("keys", "images", "size")  # per image: __key__, source path, byte size (see below)


def shard_name(index: int, count: int) -> str:
    """``train-00000-of-00003.parquet``: the ``datasets`` naming of shard ``index`` of ``count``."""
    return f"train-{index:05d}-of-{count:05d}.parquet"


def shard_paths(folder: str | os.PathLike[str]) -> list[Path]:
    """The image shards present in a release folder, sorted."""
    return sorted(p for p in (Path(folder) / DATA_DIR).glob(SHARD_GLOB) if p.is_file())


def embedding_set_name(encoder: str) -> str:
    """Folder of an encoder's embeddings below ``embeddings/`` (``timm:vit_small`` -> ``timm-vit_small``)."""
    return encoder.replace(":", "-").replace("/", "-")


def embedding_config_name(set_name: str) -> str:
    """The dataset card's config of an embedding set: ``embeddings-openphenom-block03``."""
    return f"{EMBEDDINGS_DIR}-" + set_name.replace("/", "-")


def block_set_name(encoder: str, block: int | str) -> str:
    """The embedding set of one transformer block: ``openphenom/block03``."""
    b = block if isinstance(block, str) else f"block{int(block):02d}"
    return f"{embedding_set_name(encoder)}/{b}"


def embeddings_path(folder: str | os.PathLike[str], set_name: str) -> Path:
    return Path(folder) / EMBEDDINGS_DIR / set_name / EMBEDDINGS_FILE


def embeddings_info_path(folder: str | os.PathLike[str], set_name: str) -> Path:
    return Path(folder) / EMBEDDINGS_DIR / set_name / INFO_FILE


def results_path(folder: str | os.PathLike[str], set_name: str, benchmark: str) -> Path:
    return Path(folder) / RESULTS_DIR / set_name / f"{benchmark}.json"


def definition_path(folder: str | os.PathLike[str], benchmark: str) -> Path:
    return Path(folder) / DEFINITIONS_DIR / f"{benchmark}.json"


def probe_folder(folder: str | os.PathLike[str], encoder: str) -> Path:
    return Path(folder) / PROBE_DIR / embedding_set_name(encoder)


def result_set_name(relpath: str) -> str:
    """``benchmarks/results/<set>/<id>.json`` -> ``<set>`` (the embedding set the results were computed on)."""
    parts = relpath.split("/")
    return "/".join(parts[2:-1]) or "-"


# ------------------------------------------------------------------------------------------------ release files
def is_visible(rel: str) -> bool:
    """A path inside a release folder is published unless one of its parts is hidden (``.name``)."""
    return not any(part.startswith(".") for part in rel.split("/"))


def release_files(folder: str | os.PathLike[str]) -> list[str]:
    """Sorted POSIX paths (relative to ``folder``) of the files that make up the release."""
    root = Path(folder)
    out: set[str] = set()
    for name in (*TOP_FILES, CARD, RELEASE_JSON):
        if (root / name).is_file():
            out.add(name)
    out.update(f"{DATA_DIR}/{p.name}" for p in shard_paths(root))
    for d in TREE_DIRS:
        base = root / d
        if base.is_dir():
            for p in base.rglob("*"):
                rel = p.relative_to(root).as_posix()
                if p.is_file() and not p.is_symlink() and is_visible(rel):
                    out.add(rel)
    return sorted(out)


def hashed_files(folder: str | os.PathLike[str], names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{relpath: {sha256, size}}`` for every release file except the card and release.json."""
    root = Path(folder)
    names = release_files(root) if names is None else names
    return {rel: {"sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size}
            for rel in names if rel not in (CARD, RELEASE_JSON)}


# ------------------------------------------------------------------------------------------------ lockfile
def well_columns(layout: Layout) -> list[str]:
    """Well-level metadata columns of a layout (RxRx1 drops the per-site columns)."""
    if layout is RXRX1:
        return [c for c in layout.columns if c not in ("site_id", "site")]
    return list(layout.columns)


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
        return str(self.info["content_hash"])

    @property
    def image_shape(self) -> tuple[int, int]:
        h, w = self.info["image_shape"]
        return int(h), int(w)

    @property
    def n_images(self) -> int:
        return int(self.info["n_images"])


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and v != v:  # NaN
        return None
    return v


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


def write_lockfile(dest: Path, table: pa.Table, info: Mapping[str, Any]) -> None:
    meta = {LOCK_META_KEY: json.dumps(dict(info), sort_keys=True).encode()}
    table = table.replace_schema_metadata(meta)
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class _Selects(Protocol):
    """What :func:`read_lockfile` needs of a manifest (:class:`rxcurate.manifest.Manifest` has it)."""

    @property
    def path(self) -> Path: ...

    def selection_hash(self) -> str: ...


def read_lockfile(workdir: str | os.PathLike[str], manifest: _Selects | None = None) -> Lockfile:
    """Read and check ``<workdir>/lockfile.parquet``; raise :class:`LockfileError` naming the fix.

    With ``manifest``, a lockfile made from another selection than the manifest's is refused.
    """
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
    atomic_write_json(workdir / SOURCE_HINT, {"source_root": str(Path(source).resolve())})


def source_hint(workdir: str | os.PathLike[str]) -> str | None:
    """The source root recorded by the last ``select`` into ``workdir`` on this machine, if any."""
    try:
        root = json.loads((Path(workdir) / SOURCE_HINT).read_text(encoding="utf-8")).get("source_root")
    except (OSError, ValueError, AttributeError):
        return None
    return root if isinstance(root, str) and root else None


# ------------------------------------------------------------------------------------------------ source fingerprints
# (issue 17: one read of each source image per release) select reads only the PNG header of each selected image; the
# lockfile records each image's byte ``size`` (reproducible: the same source gives the same lockfile bytes) and the
# local source hint (.source.json, never published) its ``mtime_ns``, tied to the lockfile's content hash and the
# source root. compress checks both as it reads each image for encoding (the only read of its bytes) and records the
# sha256 of those bytes in image_digests.parquet (column SOURCE_SHA256); ``rxcurate inspect --verify`` re-hashes.
SOURCE_SHA256 = "source_sha256"


def _int64_blob(values: Sequence[int]) -> str:
    a = array.array("q", values)
    if sys.byteorder == "big":
        a.byteswap()
    return base64.b64encode(zlib.compress(a.tobytes(), 6)).decode("ascii")


def _int64_values(blob: str) -> list[int]:
    a = array.array("q")
    a.frombytes(zlib.decompress(base64.b64decode(blob.encode("ascii"), validate=True)))
    if sys.byteorder == "big":
        a.byteswap()
    return a.tolist()


def write_source_fingerprints(workdir: Path, source: Path, lock_content_hash: str, mtime_ns: Sequence[int]) -> None:
    """The source hint plus the ``mtime_ns`` of every lockfile image (rows in order, images in ``__key__`` order)
    as select saw them: local, never published (a source's mtimes differ between machines and copies)."""
    atomic_write_json(workdir / SOURCE_HINT, {
        "source_root": str(Path(source).resolve()),
        "fingerprints": {"content_hash": lock_content_hash, "images": len(mtime_ns), "mtime_ns": _int64_blob(mtime_ns)},
    })


def source_fingerprints(workdir: str | os.PathLike[str], lock_content_hash: str,
                        source: str | os.PathLike[str]) -> list[int] | None:
    """The ``mtime_ns`` select recorded for the lockfile of ``workdir`` (content hash ``lock_content_hash``) in the
    source ``source``; None when absent, from another lockfile or another source root (a copy has other mtimes)."""
    try:
        doc = json.loads((Path(workdir) / SOURCE_HINT).read_text(encoding="utf-8"))
        fp = doc["fingerprints"]
        if fp["content_hash"] != lock_content_hash or doc["source_root"] != str(Path(source).resolve()):
            return None
        values = _int64_values(fp["mtime_ns"])
    except (OSError, ValueError, KeyError, TypeError, zlib.error):
        return None
    return values if len(values) == fp.get("images") else None


# ------------------------------------------------------------------------------------------------ release.json
@dataclass(frozen=True)
class Release:
    """A typed, read-only view of a ``release.json`` document; ``raw`` is the document itself (its bytes are
    written by :func:`release_json_text`, so a view never changes what is published)."""

    raw: Mapping[str, Any]
    where: str = RELEASE_JSON

    def _get(self, key: str, kind: type, default: Any = None) -> Any:
        v = self.raw.get(key, default)
        if v is not None and not isinstance(v, kind):
            raise LayoutError(f"{self.where}: field {key!r} must be a {kind.__name__}, got {type(v).__name__}: "
                              "regenerate it with rxcurate card")
        return v

    @property
    def name(self) -> str:
        return str(self._get("name", str, ""))

    @property
    def version(self) -> str:
        return str(self._get("version", str, ""))

    @property
    def repo_id(self) -> str:
        return str(self._get("repo_id", str, ""))

    @property
    def tag(self) -> str:
        return str(self._get("tag", str, f"v{self.version}"))

    @property
    def layout(self) -> str:
        return str(self._get("layout", str, ""))

    @property
    def data_version(self) -> str | None:
        v = self._get("data_version", str)
        return None if v is None else str(v)

    @property
    def manifest_hash(self) -> str | None:
        v = self._get("manifest_hash", str)
        return None if v is None else str(v)

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(self._get("manifest", dict, {}) or {})

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return dict(self._get("files", dict, {}) or {})

    @property
    def counts(self) -> dict[str, Any]:
        return dict(self._get("counts", dict, {}) or {})

    @property
    def image(self) -> dict[str, Any]:
        return dict(self._get("image", dict, {}) or {})

    @property
    def card(self) -> dict[str, Any]:
        return dict(self._get("card", dict, {}) or {})

    @property
    def embeddings(self) -> list[dict[str, Any]]:
        return list(self._get("embeddings", list, []) or [])

    @property
    def benchmarks(self) -> list[dict[str, Any]]:
        return list(self._get("benchmarks", list, []) or [])

    @property
    def polaris(self) -> list[str]:
        return list(self._get("polaris", list, []) or [])

    @property
    def results_summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        return dict(self._get("results_summary", dict, {}) or {})

    @property
    def default_embeddings(self) -> str | None:
        v = self._get("default_embeddings", str)
        return None if v is None else str(v)

    @property
    def versions(self) -> dict[str, str]:
        return dict(self._get("versions", dict, {}) or {})

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)


def release_json_text(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def parse_release_json(data: bytes | str, where: str = RELEASE_JSON) -> Release:
    """A :class:`Release` from ``release.json`` bytes; raise :class:`LayoutError` naming ``where``."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise LayoutError(f"{where} is not readable JSON ({exc}): regenerate it with rxcurate card") from None
    if not isinstance(doc, dict):
        raise LayoutError(f"{where}: release.json must be a JSON object; regenerate it with rxcurate card")
    return Release(doc, where)


def read_release_json(folder: str | os.PathLike[str]) -> Release:
    path = Path(folder) / RELEASE_JSON
    if not path.is_file():
        raise LayoutError(f"{path} is missing: run rxcurate card MANIFEST --workdir {Path(folder)} first")
    try:
        return parse_release_json(path.read_bytes(), str(path))
    except OSError as exc:
        raise LayoutError(f"{path} is not readable ({exc}): regenerate it with rxcurate card") from None


def read_json_file(path: Path) -> Any:
    """A JSON file of a release folder; raise :class:`LayoutError` naming it."""
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise LayoutError(f"{path} is not readable JSON ({exc}): regenerate it") from None
