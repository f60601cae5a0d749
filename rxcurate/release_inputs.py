"""What the card and release.json are generated from: the outputs of select, compress, embed and evaluate in a
release folder, read and cross-checked once (:func:`read_inputs`), plus the derived numbers a reader sees
(:func:`results_summary`, :func:`headline`, :func:`counts`).

Layer: shared (layout, manifest, io). The card stage and :mod:`rxcurate.assemble` build on it; validate re-derives
from it.
"""

from __future__ import annotations

import copy
import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from rxcurate.errors import CardError, LayoutError, LockfileError, ManifestError
from rxcurate.io import sha256_file
from rxcurate.layout import (
    CHECKSUMS,
    DATA_DIR,
    DEFINITIONS_DIR,
    EMBEDDINGS_DIR,
    EMBEDDINGS_FILE,
    INFO_FILE,
    METADATA_PARQUET,
    POLARIS_DIR,
    PROBE_JSON,
    RELEASE_JSON,
    REPORT,
    RESULTS_DIR,
    embedding_set_name,
    is_visible,
    probe_folder,
    read_json_file,
    read_lockfile,
    release_files,
    result_set_name,
    shard_paths,
)
from rxcurate.manifest import Manifest, data_version, parse_manifest
from rxcurate.source import RXRX3


@dataclass
class EmbeddingSet:
    name: str  # folder below embeddings/, e.g. "baseline" or "openphenom/8"
    path: str  # relpath of embeddings.parquet
    info_path: str | None
    info: dict[str, Any]
    rows: int
    dim: int

    @property
    def config_name(self) -> str:
        return "embeddings-" + self.name.replace("/", "-")


@dataclass
class BenchmarkEntry:
    id: str
    definition_path: str | None
    definition: dict[str, Any] | None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # relpath -> results document


@dataclass
class ReleaseInputs:
    """Everything the card and release.json are generated from, read and cross-checked once."""

    folder: Path
    manifest: Manifest
    lock_info: dict[str, Any]
    lock_wells: int
    lock_images: int
    data_version: str
    report: dict[str, Any]
    checksums: dict[str, Any]
    metadata: Any  # pandas DataFrame of metadata.parquet
    shards: list[dict[str, Any]]  # {path, rows, bytes, arrow_bytes}
    embeddings: list[EmbeddingSet]
    benchmarks: list[BenchmarkEntry]
    polaris: list[str]  # relpaths under polaris/

    @property
    def repo_id(self) -> str:
        return repo_id_of(self.manifest)

    @property
    def wells(self) -> int:
        return int(self.metadata["well_id"].nunique())

    @property
    def images(self) -> int:
        return sum(s["rows"] for s in self.shards)


def repo_id_of(manifest: Manifest) -> str:
    return str(manifest.card.get("repo_id") or f"rxcurate/{manifest.name}")


def _need(path: Path, fix: str) -> Path:
    if not path.is_file():
        raise CardError(f"{path} is missing: {fix}")
    return path


def shard_stats(path: Path) -> dict[str, int]:
    """Rows, file bytes and uncompressed (Arrow-ish) bytes of a Parquet file, from its footer only."""
    md = pq.ParquetFile(path).metadata
    return {"rows": md.num_rows, "bytes": path.stat().st_size,
            "arrow_bytes": sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))}


def discover_embeddings(folder: Path) -> list[tuple[str, Path]]:
    base = folder / EMBEDDINGS_DIR
    if not base.is_dir():
        return []
    found = [(p.parent.relative_to(base).as_posix(), p) for p in base.rglob(EMBEDDINGS_FILE)
             if is_visible(p.relative_to(folder).as_posix())]
    return sorted(found)


def discover_benchmarks(folder: Path) -> list[BenchmarkEntry]:
    """Definitions ``benchmarks/definitions/<id>.json`` and results ``benchmarks/results/<set>/<id>.json``."""
    entries: dict[str, BenchmarkEntry] = {}
    ddir = folder / DEFINITIONS_DIR
    if ddir.is_dir():
        for p in sorted(ddir.glob("*.json")):
            entries[p.stem] = BenchmarkEntry(p.stem, f"{DEFINITIONS_DIR}/{p.name}", read_json_file(p))
    rdir = folder / RESULTS_DIR
    if rdir.is_dir():
        for p in sorted(rdir.rglob("*.json")):
            rel = p.relative_to(folder).as_posix()
            if not is_visible(rel):
                continue
            entry = entries.setdefault(p.stem, BenchmarkEntry(p.stem, None, None))
            entry.results[rel] = read_json_file(p)
    return [entries[k] for k in sorted(entries)]


def read_inputs(manifest: Manifest, folder: str | os.PathLike[str]) -> ReleaseInputs:
    """Read and cross-check the outputs of select, compress, embed and evaluate; raise :class:`CardError`."""
    root = Path(folder)
    if not root.is_dir():
        raise CardError(f"release folder {root} does not exist: run rxcurate select/compress {manifest.path} first "
                        f"(or pass --workdir DIR)")
    try:
        lock = read_lockfile(root, manifest)
    except LockfileError as exc:
        raise CardError(str(exc)) from None
    version = data_version(lock.content_hash, manifest.transform_section())
    report = read_json_file(_need(root / REPORT, f"run rxcurate compress {manifest.path} --workdir {root}"))
    checksums = read_json_file(_need(root / CHECKSUMS, f"run rxcurate compress {manifest.path} --workdir {root}"))
    if report.get("data_version") != version or checksums.get("data_version") != version:
        raise CardError(f"{root / REPORT}: the shards are from another data version than the lockfile and manifest "
                        f"transform: rerun rxcurate compress {manifest.path} --workdir {root}")
    for rel, want in sorted(checksums.get("files", {}).items()):
        path = root / rel
        if not path.is_file() or path.stat().st_size != want["size"] or sha256_file(path) != want["sha256"]:
            raise CardError(f"{path} differs from {CHECKSUMS} (changed or missing after rxcurate compress): rerun "
                            f"rxcurate compress {manifest.path} --workdir {root} --force")
    shards_present = shard_paths(root)
    listed = sorted(k for k in checksums.get("files", {}) if k.startswith(f"{DATA_DIR}/"))
    if [f"{DATA_DIR}/{p.name}" for p in shards_present] != listed or not shards_present:
        raise CardError(f"{root / DATA_DIR}: the shards present differ from {CHECKSUMS} (expected {listed[:3]}...): "
                        f"rerun rxcurate compress {manifest.path} --workdir {root}")
    shards = [{"path": f"{DATA_DIR}/{p.name}", **shard_stats(p)} for p in shards_present]
    metadata = pd.read_parquet(_need(root / METADATA_PARQUET, f"run rxcurate compress {manifest.path}"))

    embeddings = []
    for name, path in discover_embeddings(root):
        info_path = path.parent / INFO_FILE
        info = read_json_file(info_path) if info_path.is_file() else {}
        md = pq.ParquetFile(path)
        cols = md.schema_arrow.names
        dim = sum(1 for c in cols if c.startswith("feature_"))
        if info.get("embeddings_sha256") and info["embeddings_sha256"] != sha256_file(path):
            raise CardError(f"{path} differs from the embeddings_sha256 in {info_path}: rerun rxcurate embed")
        if md.metadata.num_rows != metadata["well_id"].nunique():
            raise CardError(f"{path}: {md.metadata.num_rows} rows for {metadata['well_id'].nunique()} wells in "
                            f"{METADATA_PARQUET} (one row per well): rerun rxcurate embed")
        embeddings.append(EmbeddingSet(name, path.relative_to(root).as_posix(),
                                       info_path.relative_to(root).as_posix() if info_path.is_file() else None,
                                       info, md.metadata.num_rows, dim))
    have = {e.name.split("/")[0] for e in embeddings}
    for spec in manifest.embeddings:
        if embedding_set_name(spec["encoder"]) not in have:
            raise CardError(f"{manifest.path}: embeddings lists encoder {spec['encoder']!r} but "
                            f"{root}/{EMBEDDINGS_DIR}/{embedding_set_name(spec['encoder'])}/{EMBEDDINGS_FILE} is "
                            "missing: run rxcurate embed "
                            f"{manifest.path} --encoder {spec['encoder']}")
    if manifest.embeddings and "block" in manifest.embeddings[0]:
        default = default_embedding_set(manifest, root)
        if default not in {e.name for e in embeddings}:
            raise CardError(f"{manifest.path}: the default embedding set {default} (embeddings[0].block) is missing "
                            f"under {root}/{EMBEDDINGS_DIR}: rerun rxcurate release")
        embeddings.sort(key=lambda e: e.name != default)  # the default set first
    benchmarks = discover_benchmarks(root)
    by_id = {b.id: b for b in benchmarks}
    for bid in manifest.benchmarks:
        entry = by_id.get(bid)
        if entry is None or entry.definition is None or not entry.results:
            raise CardError(f"{manifest.path}: benchmarks lists {bid!r} but {root}/{DEFINITIONS_DIR}/{bid}.json or "
                            f"its results under {RESULTS_DIR}/<embeddings>/{bid}.json are missing: run rxcurate "
                            f"evaluate for it (or remove it from the manifest's benchmarks)")
    polaris = [p for p in release_files(root) if p.startswith(f"{POLARIS_DIR}/")]
    return ReleaseInputs(root, manifest, dict(lock.info), lock.table.num_rows, lock.n_images, version, report,
                         checksums, metadata, shards, embeddings, benchmarks, polaris)


def published_manifest(manifest: Manifest) -> dict[str, Any]:
    """The manifest as published: its document without card prose (prose lives in the card only)."""
    raw = copy.deepcopy(manifest.raw)
    card = raw.get("card")
    if isinstance(card, dict):
        for k in PROSE_MANIFEST_KEYS:
            card.pop(k, None)
    return raw


def headline(summary: dict[str, Any], definition: dict[str, Any] | None) -> dict[str, Any]:
    """The summary entries the definition reports (its ``metrics`` glob patterns); all of them without one."""
    patterns = (definition or {}).get("metrics") or ["*"]
    out: dict[str, Any] = {}
    for p in patterns:  # the definition's order: its first metrics are the headline
        for k in sorted(summary):
            if k not in out and fnmatch.fnmatchcase(k, p):
                out[k] = summary[k]
    return out


def results_summary(benchmarks: list[BenchmarkEntry]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{benchmark id: {embedding set: headline metrics}}`` from each results file's ``summary``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for b in benchmarks:
        for rel, doc in sorted(b.results.items()):
            summary = doc.get("summary") if isinstance(doc, dict) else None
            out.setdefault(b.id, {})[result_set_name(rel)] = headline(summary, b.definition) \
                if isinstance(summary, dict) else {}
    return out


def default_embedding_set(manifest: Manifest, folder: Path) -> str | None:
    """The release's default embedding set (evaluated, listed first): the first ``embeddings`` entry's encoder, or
    its ``block`` (a number, or ``best`` = the block ``probe/<encoder>/probe.json`` chose)."""
    if not manifest.embeddings:
        return None
    entry = manifest.embeddings[0]
    name = embedding_set_name(str(entry["encoder"]))
    block = entry.get("block")
    if block is None:
        return name
    if block == "best":
        probe = probe_folder(folder, name) / PROBE_JSON
        if not probe.is_file():
            raise CardError(f"{probe} is missing: block: best needs the probe's choice; run rxcurate release (or "
                            f"rxcurate probe {manifest.path.name} --encoder {entry['encoder']})")
        return f"{name}/{read_json_file(probe)['best_block']}"
    return f"{name}/block{int(block):02d}"


def counts(inputs: ReleaseInputs) -> dict[str, Any]:
    skipped = inputs.report.get("skipped_wells", []) or []
    return {
        "wells": inputs.wells,
        "images": inputs.images,
        "shards": len(inputs.shards),
        "metadata_rows": int(len(inputs.metadata)),
        "lockfile_wells": inputs.lock_wells,
        "lockfile_images": inputs.lock_images,
        "skipped_wells": len(skipped),
        "embeddings": {e.name: {"rows": e.rows, "dim": e.dim} for e in inputs.embeddings},
        "benchmark_results": sum(len(b.results) for b in inputs.benchmarks),
    }


def manifest_of(release: Mapping[str, Any], what: str = RELEASE_JSON) -> Manifest:
    """The typed manifest recorded in a release.json (a document or a :class:`rxcurate.layout.Release`)."""
    try:
        return parse_manifest(release.get("manifest"), f"{what}#manifest")
    except ManifestError as exc:
        raise LayoutError(str(exc)) from None


PROSE_MANIFEST_KEYS = ("prose", "citation")


# ------------------------------------------------------------------------------- RxRx3-core drop-in
OPENPHENOM = "openphenom"  # the encoder whose embeddings recursionpharma/rxrx3-core ships


def rxrx3_core_metadata_text(metadata: pd.DataFrame) -> str:
    """``metadata_rxrx3_core.csv``: ``metadata.parquet`` with recursionpharma/rxrx3-core's columns in its order.
    No gene (compound rows; rxcurate's Parquet stores ``''``), no SMILES and no concentration (CRISPR rows) are
    written as empty fields, which ``pandas.read_csv`` reads as NULL, as in the real file."""
    missing = [c for c in RXRX3.columns if c not in metadata.columns]
    if missing:
        raise CardError(f"{METADATA_PARQUET} lacks the RxRx3-core columns {missing}: rerun rxcurate compress")
    return str(metadata[list(RXRX3.columns)].to_csv(index=False, lineterminator="\n"))


def openphenom_set(names: list[str]) -> str | None:
    """The embedding set published as ``OpenPhenom_rxrx3_core_embeddings.parquet``: the openphenom encoder's own
    output (set ``openphenom``, as rxrx3-core ships it) or, without it, the first ``openphenom/<block>`` set in
    release order (the default set first); None when no openphenom set exists."""
    sets = [n for n in names if n.split("/")[0] == OPENPHENOM]
    return OPENPHENOM if OPENPHENOM in sets else (sets[0] if sets else None)
