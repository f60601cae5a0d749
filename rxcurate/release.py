"""The release folder: read what the earlier stages wrote, write ``release.json`` and ``CHANGELOG.md``, verify it.

The folder is laid out exactly as the dataset repository (see docs/contracts.md). Its *release files* are:
``lockfile.parquet``, ``data/train-*.parquet``, ``metadata.csv``/``metadata.parquet``, ``compression_report.json``,
``checksums.json``, ``CHANGELOG.md``, every non-hidden file under ``embeddings/``, ``benchmarks/`` and ``polaris/``,
plus ``README.md`` (the card) and ``release.json``. Anything else (a ``source/`` screen, ``.compress-state/``, temp
files) is not part of the release and is never published.

``release.json`` records the version, the data version (canonical hash of the lockfile's content hash and the
manifest's transform), sha256 and size of every release file except the card and itself, row counts, the manifest,
library versions and a results summary. The card is recorded by its *data hash* (the card with its prose blocks
emptied, see :mod:`rxcurate.card`): editing only the prose changes neither the data version nor ``release.json``.
No wall-clock time is recorded, so the same inputs give the same bytes.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from rxcurate import __version__
from rxcurate.errors import CardError, RxcurateError
from rxcurate.io import atomic_write_text, read_json, sha256_file
from rxcurate.manifest import Manifest, data_version, embedding_set_name, parse_manifest

RELEASE_FORMAT = 1
RELEASE_JSON = "release.json"
CARD = "README.md"
CHANGELOG = "CHANGELOG.md"
LOCKFILE = "lockfile.parquet"
DATA_DIR = "data"
METADATA_CSV = "metadata.csv"
METADATA_PARQUET = "metadata.parquet"
REPORT = "compression_report.json"
CHECKSUMS = "checksums.json"
TOP_FILES = (LOCKFILE, METADATA_CSV, METADATA_PARQUET, REPORT, CHECKSUMS, CHANGELOG,
             "phenostats.parquet", "curation.json", "curation_comparison.json")  # rxcurate.phenostats (filters)
TREE_DIRS = ("embeddings", "benchmarks", "polaris", "probe")  # probe: rxcurate.blockprobe tables, when run
EMBEDDINGS_FILE = "embeddings.parquet"
DEFINITIONS_DIR = "benchmarks/definitions"
RESULTS_DIR = "benchmarks/results"
POLARIS_DIR = "polaris"
LIBRARIES = ("pyarrow", "numpy", "pandas", "datasets", "huggingface-hub", "imagecodecs", "pillow", "duckdb", "torch",
             "scikit-learn", "scipy", "polaris-lib")
# Manifest keys that are prose (card text): left out of release.json so prose edits never change it.
PROSE_MANIFEST_KEYS = ("prose", "citation")


# --------------------------------------------------------------------------------------------------- file set
def _visible(rel: str) -> bool:
    return not any(part.startswith(".") for part in rel.split("/"))


def release_files(folder: str | os.PathLike[str]) -> list[str]:
    """Sorted POSIX paths (relative to ``folder``) of the files that make up the release."""
    root = Path(folder)
    out: set[str] = set()
    for name in (*TOP_FILES, CARD, RELEASE_JSON):
        if (root / name).is_file():
            out.add(name)
    data = root / DATA_DIR
    if data.is_dir():
        out.update(f"{DATA_DIR}/{p.name}" for p in data.glob("train-*-of-*.parquet") if p.is_file())
    for d in TREE_DIRS:
        base = root / d
        if base.is_dir():
            for p in base.rglob("*"):
                rel = p.relative_to(root).as_posix()
                if p.is_file() and not p.is_symlink() and _visible(rel):
                    out.add(rel)
    return sorted(out)


def hashed_files(folder: str | os.PathLike[str], names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{relpath: {sha256, size}}`` for every release file except the card and release.json."""
    root = Path(folder)
    names = release_files(root) if names is None else names
    return {rel: {"sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size}
            for rel in names if rel not in (CARD, RELEASE_JSON)}


# --------------------------------------------------------------------------------------------------- inputs
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


def _read_json(path: Path, error_cls: type[RxcurateError] = CardError) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise error_cls(f"{path} is not readable JSON ({exc}): regenerate it") from None


def shard_stats(path: Path) -> dict[str, int]:
    """Rows, file bytes and uncompressed (Arrow-ish) bytes of a Parquet file, from its footer only."""
    md = pq.ParquetFile(path).metadata
    return {"rows": md.num_rows, "bytes": path.stat().st_size,
            "arrow_bytes": sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))}


def encoder_dirname(name: str) -> str:
    """As ``rxcurate.encoders.encoder_dirname`` (not imported: it loads torch)."""
    return name.replace(":", "-").replace("/", "-")


def discover_embeddings(folder: Path) -> list[tuple[str, Path]]:
    base = folder / "embeddings"
    if not base.is_dir():
        return []
    found = [(p.parent.relative_to(base).as_posix(), p) for p in base.rglob(EMBEDDINGS_FILE)
             if _visible(p.relative_to(folder).as_posix())]
    return sorted(found)


def discover_benchmarks(folder: Path, error_cls: type[RxcurateError] = CardError) -> list[BenchmarkEntry]:
    """Definitions ``benchmarks/definitions/<id>.json`` and results ``benchmarks/results/<set>/<id>.json``."""
    entries: dict[str, BenchmarkEntry] = {}
    ddir = folder / DEFINITIONS_DIR
    if ddir.is_dir():
        for p in sorted(ddir.glob("*.json")):
            entries[p.stem] = BenchmarkEntry(p.stem, f"{DEFINITIONS_DIR}/{p.name}", _read_json(p, error_cls))
    rdir = folder / RESULTS_DIR
    if rdir.is_dir():
        for p in sorted(rdir.rglob("*.json")):
            rel = p.relative_to(folder).as_posix()
            if not _visible(rel):
                continue
            entry = entries.setdefault(p.stem, BenchmarkEntry(p.stem, None, None))
            entry.results[rel] = _read_json(p, error_cls)
    return [entries[k] for k in sorted(entries)]


def result_set_name(relpath: str) -> str:
    """``benchmarks/results/<set>/<id>.json`` -> ``<set>`` (the embedding set the results were computed on)."""
    parts = relpath.split("/")
    return "/".join(parts[2:-1]) or "-"


def read_inputs(manifest: Manifest, folder: str | os.PathLike[str]) -> ReleaseInputs:
    """Read and cross-check the outputs of select, compress, embed and evaluate; raise :class:`CardError`."""
    import pandas as pd

    from rxcurate.errors import LockfileError
    from rxcurate.select import read_lockfile

    root = Path(folder)
    if not root.is_dir():
        raise CardError(f"release folder {root} does not exist: run rxcurate select/compress {manifest.path} first "
                        f"(or pass --workdir DIR)")
    try:
        lock = read_lockfile(root, manifest)
    except LockfileError as exc:
        raise CardError(str(exc)) from None
    version = data_version(lock.content_hash, manifest.transform_section())
    report = _read_json(_need(root / REPORT, f"run rxcurate compress {manifest.path} --workdir {root}"))
    checksums = _read_json(_need(root / CHECKSUMS, f"run rxcurate compress {manifest.path} --workdir {root}"))
    if report.get("data_version") != version or checksums.get("data_version") != version:
        raise CardError(f"{root / REPORT}: the shards are from another data version than the lockfile and manifest "
                        f"transform: rerun rxcurate compress {manifest.path} --workdir {root}")
    for rel, want in sorted(checksums.get("files", {}).items()):
        path = root / rel
        if not path.is_file() or path.stat().st_size != want["size"] or sha256_file(path) != want["sha256"]:
            raise CardError(f"{path} differs from {CHECKSUMS} (changed or missing after rxcurate compress): rerun "
                            f"rxcurate compress {manifest.path} --workdir {root} --force")
    shard_paths = sorted((root / DATA_DIR).glob("train-*-of-*.parquet"))
    listed = sorted(k for k in checksums.get("files", {}) if k.startswith(f"{DATA_DIR}/"))
    if [f"{DATA_DIR}/{p.name}" for p in shard_paths] != listed or not shard_paths:
        raise CardError(f"{root / DATA_DIR}: the shards present differ from {CHECKSUMS} (expected {listed[:3]}...): "
                        f"rerun rxcurate compress {manifest.path} --workdir {root}")
    shards = [{"path": f"{DATA_DIR}/{p.name}", **shard_stats(p)} for p in shard_paths]
    metadata = pd.read_parquet(_need(root / METADATA_PARQUET, f"run rxcurate compress {manifest.path}"))

    embeddings = []
    for name, path in discover_embeddings(root):
        info_path = path.parent / "info.json"
        info = _read_json(info_path) if info_path.is_file() else {}
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
        if encoder_dirname(spec["encoder"]) not in have:
            raise CardError(f"{manifest.path}: embeddings lists encoder {spec['encoder']!r} but {root}/embeddings/"
                            f"{encoder_dirname(spec['encoder'])}/{EMBEDDINGS_FILE} is missing: run rxcurate embed "
                            f"{manifest.path} --encoder {spec['encoder']}")
    if manifest.embeddings and "block" in manifest.embeddings[0]:
        default = default_embedding_set(manifest, root)
        if default not in {e.name for e in embeddings}:
            raise CardError(f"{manifest.path}: the default embedding set {default} (embeddings[0].block) is missing "
                            f"under {root}/embeddings: rerun rxcurate release")
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


# --------------------------------------------------------------------------------------------------- release.json
def library_versions() -> dict[str, str]:
    out = {"rxcurate": __version__, "python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


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
    import fnmatch

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
        probe = Path(folder) / "probe" / name / "probe.json"
        if not probe.is_file():
            raise CardError(f"{probe} is missing: block: best needs the probe's choice; run rxcurate release (or "
                            f"rxcurate probe {manifest.path.name} --encoder {entry['encoder']})")
        return f"{name}/{json.loads(probe.read_text())['best_block']}"
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


def build_release_json(inputs: ReleaseInputs, card_data_hash: str,
                       files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    m = inputs.manifest
    t = m.transform
    shape = inputs.report.get("image_shape")
    return {
        "format": RELEASE_FORMAT,
        "name": m.name,
        "version": m.version,
        "repo_id": inputs.repo_id,
        "tag": f"v{m.version}",
        "layout": m.layout,
        "data_version": inputs.data_version,
        "lockfile_content_hash": inputs.lock_info["content_hash"],
        "manifest_hash": m.manifest_hash(),
        "manifest": published_manifest(m),
        "image": {"key_column": "__key__", "column": "jp2", "shape": shape, "dtype": "uint8",
                  "codec": t.codec.to_dict(), "sites": list(t.sites), "channels": list(t.channels)},
        "counts": counts(inputs),
        "card": {"path": CARD, "data_hash": card_data_hash},
        "files": files,
        "embeddings": [{"name": e.name, "path": e.path, "info": e.info_path, "encoder": e.info.get("encoder", e.name),
                        "dim": e.dim, "rows": e.rows} for e in inputs.embeddings],
        "benchmarks": [{"id": b.id, "definition": b.definition_path, "results": sorted(b.results)}
                       for b in inputs.benchmarks],
        "polaris": sorted(inputs.polaris),
        **({"default_embeddings": default_embedding_set(m, inputs.folder)}
           if m.embeddings and "block" in m.embeddings[0] else {}),
        "results_summary": results_summary(inputs.benchmarks),
        "versions": library_versions(),
    }


def release_json_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def read_release_json(folder: str | os.PathLike[str], error_cls: type[RxcurateError] = CardError) -> dict[str, Any]:
    path = Path(folder) / RELEASE_JSON
    if not path.is_file():
        raise error_cls(f"{path} is missing: run rxcurate card MANIFEST --workdir {Path(folder)} first")
    doc = _read_json(path, error_cls)
    if not isinstance(doc, dict):
        raise error_cls(f"{path}: release.json must be a JSON object; regenerate it with rxcurate card")
    return doc


def manifest_of(release: dict[str, Any], error_cls: type[RxcurateError] = CardError,
                what: str = RELEASE_JSON) -> Manifest:
    """The typed manifest recorded in a release.json."""
    from rxcurate.errors import ManifestError

    try:
        return parse_manifest(release.get("manifest"), f"{what}#manifest")
    except ManifestError as exc:
        raise error_cls(str(exc)) from None


# --------------------------------------------------------------------------------------------------- changelog
@dataclass
class PreviousRelease:
    """The newest published version below the one being built (for the changelog)."""

    version: str
    release: dict[str, Any]
    changelog: str
    wells: list[str] | None = None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "n/a" if v is None else str(v)


def changelog_entry(inputs: ReleaseInputs, previous: PreviousRelease | None) -> str:
    m = inputs.manifest
    c = counts(inputs)
    lines = [f"## {m.version}", ""]
    if previous is None:
        lines.append(f"- First published version of `{inputs.repo_id}`.")
    else:
        lines.append(f"- Follows {previous.version}.")
    lines.append(f"- Data version `{inputs.data_version[:16]}`"
                 + ("" if previous is None else
                    (" (unchanged)" if previous.release.get("data_version") == inputs.data_version else
                     f" (was `{str(previous.release.get('data_version'))[:16]}`)")) + ".")
    well_diff = ""
    if previous is not None and previous.wells is not None:
        now = set(inputs.metadata["well_id"].astype(str))
        before = set(previous.wells)
        well_diff = f" ({len(now - before):+,} added, {len(before - now):,} removed vs {previous.version})"
    lines.append(f"- {c['wells']:,} wells{well_diff}, {c['images']:,} images in {c['shards']} shard(s).")
    if previous is not None:
        old = previous.release.get("manifest", {}) or {}
        new = published_manifest(m)
        changed = sorted(k for k in set(old) | set(new) if k not in ("version",) and old.get(k) != new.get(k))
        lines.append(f"- Manifest sections changed: {', '.join(changed)}." if changed else
                     "- Manifest unchanged apart from the version.")
    if inputs.embeddings:
        lines.append("- Embeddings: " + ", ".join(f"{e.name} ({e.dim}-d)" for e in inputs.embeddings) + ".")
    summary = results_summary(inputs.benchmarks)
    old_summary = (previous.release.get("results_summary", {}) or {}) if previous else {}
    for bid in sorted(summary):
        for sset, vals in sorted(summary[bid].items()):
            shown = []
            for k in list(vals)[:4]:
                before = (old_summary.get(bid, {}) or {}).get(sset, {}).get(k) if previous else None
                shown.append(f"{k} {_fmt(vals[k])}" + (f" (was {_fmt(before)})" if before is not None
                                                        and before != vals[k] else ""))
            lines.append(f"- {bid} on {sset}: " + ("; ".join(shown) if shown else "see results") + ".")
    return "\n".join(lines) + "\n"


CHANGELOG_HEADER = "# Changelog\n\nPublished versions, newest first. A published version never changes; pin one with " \
                   "`@<version>` (git tag `v<version>`).\n"


def build_changelog(inputs: ReleaseInputs, previous: PreviousRelease | None) -> str:
    """The new version's entry on top of the previous version's changelog entries (kept verbatim)."""
    older = ""
    if previous is not None and previous.changelog:
        text = previous.changelog
        at = text.find("\n## ")
        older = text[at + 1:] if at >= 0 else ""
    parts = [CHANGELOG_HEADER, changelog_entry(inputs, previous)]
    if older.strip():
        parts.append(older.rstrip("\n") + "\n")
    return "\n".join(parts)


def latest_entry(changelog: str) -> str:
    """The first ``## `` section of a changelog."""
    at = changelog.find("## ")
    if at < 0:
        return ""
    nxt = changelog.find("\n## ", at + 3)
    return changelog[at: nxt if nxt >= 0 else len(changelog)].strip() + "\n"


def previous_from_local(hub_path: str | os.PathLike[str], repo_id: str, version: str) -> PreviousRelease | None:
    """The newest version below ``version`` published in a local hub, or None."""
    import io

    import pandas as pd

    from rxcurate.publish.local import LocalHub
    from rxcurate.publish.targets import semver_key

    hub = LocalHub(hub_path, CardError)
    if not hub.exists(repo_id):
        return None
    older = [v for v in hub.list_versions(repo_id) if semver_key(v) < semver_key(version)]
    if not older:
        return None
    v = older[-1]
    files = hub.list_files(repo_id, v)
    release = json.loads(hub.read_file(repo_id, v, RELEASE_JSON)) if RELEASE_JSON in files else {}
    changelog = hub.read_file(repo_id, v, CHANGELOG).decode("utf-8") if CHANGELOG in files else ""
    wells = None
    if METADATA_PARQUET in files:
        table = pd.read_parquet(io.BytesIO(hub.read_file(repo_id, v, METADATA_PARQUET)), columns=["well_id"])
        wells = sorted(table["well_id"].astype(str).unique())
    return PreviousRelease(v, release, changelog, wells)


def write_changelog(folder: Path, text: str) -> None:
    atomic_write_text(folder / CHANGELOG, text)


# --------------------------------------------------------------------------------------------------- assemble
TRUTH_DIR = "benchmarks/truth"
POLARIS_BENCHMARK = "compound-gene-activity"


@dataclass
class AssembleResult:
    folder: Path
    version: str
    data_version: str
    card_data_hash: str
    files: int
    status: str  # "written" | "up to date"
    polaris: bool
    release: dict[str, Any]


def _provenance_inputs(doc: dict[str, Any]) -> dict[str, Any]:
    return ((doc.get("provenance") or {}).get("inputs") or {}) if isinstance(doc, dict) else {}


def gather_truth(folder: Path, benchmarks: list[BenchmarkEntry], extra: list[Path], source_root: str | None) -> None:
    """Copy the truth tables the results were computed with into ``benchmarks/truth/`` (found by sha256 among the
    given files and the source screen's ``truth/`` folder); raise naming what is missing."""
    from rxcurate.io import atomic_write_bytes

    candidates = [Path(p) for p in extra]
    if source_root and (Path(source_root) / "truth").is_dir():
        candidates += sorted((Path(source_root) / "truth").glob("*"))
    for p in extra:
        if not Path(p).is_file():
            raise CardError(f"--truth {p}: file not found (pass the truth table used by rxcurate evaluate)")
    present = {sha256_file(folder / rel) for rel in release_files(folder) if rel.startswith("benchmarks/")}
    by_sha: dict[str, Path] = {}
    for p in candidates:
        if p.is_file():
            by_sha.setdefault(sha256_file(p), p)
    for b in benchmarks:
        for rel, doc in sorted(b.results.items()):
            for spec in sorted((_provenance_inputs(doc).get("truth") or {}).values(), key=lambda s: str(s)):
                sha = spec.get("sha256")
                if not sha or sha in present:
                    continue
                src = by_sha.get(sha)
                if src is None:
                    raise CardError(f"{folder / rel}: its truth file {spec.get('file')} (sha256 {sha[:12]}...) is not "
                                    f"in the release: pass it with --truth PATH so it is published under {TRUTH_DIR}/ "
                                    f"(the validator re-runs benchmarks from published files only)")
                name = spec.get("file") or src.name
                dest = folder / TRUTH_DIR / Path(name).name
                if dest.exists() and sha256_file(dest) != sha:
                    dest = folder / TRUTH_DIR / f"{sha[:12]}-{Path(name).name}"
                atomic_write_bytes(dest, src.read_bytes())
                present.add(sha)


def add_definitions(folder: Path, manifest: Manifest) -> None:
    """Write the shipped definition of every benchmark that has results (or is declared) but no definition file."""
    from rxcurate.benchmarks import definition_checksum, list_definitions, load_definition
    from rxcurate.io import atomic_write_json

    ids = set(manifest.benchmarks)
    rdir = folder / RESULTS_DIR
    results: dict[str, list[Path]] = {}
    if rdir.is_dir():
        for p in sorted(rdir.rglob("*.json")):
            if _visible(p.relative_to(folder).as_posix()):
                results.setdefault(p.stem, []).append(p)
    shipped = set(list_definitions())
    for bid in sorted(ids | set(results)):
        dest = folder / DEFINITIONS_DIR / f"{bid}.json"
        if dest.is_file() or bid not in shipped:
            continue
        defn = load_definition(bid)
        for p in results.get(bid, []):
            doc = _read_json(p)
            if (doc.get("benchmark") or {}).get("checksum") != definition_checksum(defn):
                raise CardError(f"{p}: computed with a definition other than the shipped {bid} (checksum differs): "
                                f"put that definition at {dest} or rerun rxcurate evaluate -b {bid}")
        atomic_write_json(dest, defn)


def check_result_inputs(inputs: ReleaseInputs) -> None:
    """Every result was computed from this release's files (embeddings, metadata, truth: by sha256)."""
    files = release_files(inputs.folder)
    shas = {rel: sha256_file(inputs.folder / rel) for rel in files
            if rel.startswith(("embeddings/", "benchmarks/")) or rel in (METADATA_CSV, METADATA_PARQUET)}
    known = set(shas.values())
    for b in inputs.benchmarks:
        for rel, doc in sorted(b.results.items()):
            ins = _provenance_inputs(doc)
            for key in ("embeddings", "metadata"):
                spec = ins.get(key)
                if isinstance(spec, dict) and spec.get("sha256") and spec["sha256"] not in known:
                    raise CardError(f"{inputs.folder / rel}: computed from a {key} file ({spec.get('file')}, sha256 "
                                    f"{spec['sha256'][:12]}...) that is not in this release: rerun rxcurate evaluate "
                                    f"on the release's files")


def assemble(manifest: Manifest, workdir: str | os.PathLike[str] | None = None, *,
             previous: PreviousRelease | None = None, truth: list[Path] | tuple[Path, ...] = (),
             polaris: bool = True) -> AssembleResult:
    """Write the card, CHANGELOG.md, the Polaris artifacts and release.json into the release folder."""
    from rxcurate.card import build_card
    from rxcurate.schemas import validate

    folder = manifest.resolve_workdir(workdir)
    if not folder.is_dir():
        raise CardError(f"release folder {folder} does not exist: run rxcurate select/compress {manifest.path} first "
                        f"(or pass --workdir DIR)")
    _need(folder / LOCKFILE, f"run rxcurate select {manifest.path} --workdir {folder} first")
    add_definitions(folder, manifest)
    inputs = read_inputs(manifest, folder)
    gather_truth(folder, inputs.benchmarks, list(truth), inputs.lock_info.get("source_root"))
    check_result_inputs(inputs)
    built_polaris = False
    cga = next((b for b in inputs.benchmarks if b.id == POLARIS_BENCHMARK and b.definition and b.results), None)
    if polaris and cga is not None and manifest.layout == "rxrx3":
        from rxcurate.publish.polaris import build_for_release

        build_for_release(folder, name=manifest.name, description=(
            f"Compound-gene activity pairs of {repo_id_of(manifest)} {manifest.version} (zero-shot drug-target "
            f"interaction): score each (treatment, gene_symbol) pair, e.g. by |cosine| of their embeddings."),
            license=manifest.card.get("license") or manifest.license, definition=cga.definition,
            results=cga.results, metadata=inputs.metadata)
        built_polaris = True
    elif (folder / POLARIS_DIR).exists():
        import shutil

        shutil.rmtree(folder / POLARIS_DIR)  # stale artifacts of another build: never publish them
    inputs.polaris = [p for p in release_files(folder) if p.startswith(f"{POLARIS_DIR}/")]
    changelog = build_changelog(inputs, previous)
    if not (folder / CHANGELOG).is_file() or (folder / CHANGELOG).read_text(encoding="utf-8") != changelog:
        write_changelog(folder, changelog)
    card = build_card(inputs, changelog)
    names = [n for n in release_files(folder) if n not in (CARD, RELEASE_JSON)]
    files = hashed_files(folder, names)
    doc = build_release_json(inputs, card.data_hash, files)
    validate(doc, "release", CardError, RELEASE_JSON)
    text = release_json_text(doc)
    card_path, rel_path = folder / CARD, folder / RELEASE_JSON
    unchanged = card_path.is_file() and rel_path.is_file() and card_path.read_text(encoding="utf-8") == card.text \
        and rel_path.read_text(encoding="utf-8") == text
    if not unchanged:
        atomic_write_text(card_path, card.text)
        atomic_write_text(rel_path, text)
    return AssembleResult(folder, manifest.version, inputs.data_version, card.data_hash, len(files) + 2,
                          "up to date" if unchanged else "written", built_polaris, doc)
