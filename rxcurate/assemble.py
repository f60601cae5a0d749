"""Assemble a release folder: the shipped definitions, the truth tables, the Polaris artifacts, ``CHANGELOG.md``,
the card and ``release.json``.

``release.json`` records the version, the data version (canonical hash of the lockfile's content hash and the
manifest's transform), sha256 and size of every release file except the card and itself, row counts, the manifest,
library versions and a results summary. The card is recorded by its *data hash* (the card with its prose blocks
emptied, see :mod:`rxcurate.card`): editing only the prose changes neither the data version nor ``release.json``.
No wall-clock time is recorded, so the same inputs give the same bytes.

Layer: above the card stage and the Polaris artifacts (it composes both); below publish, validate and the pipeline.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rxcurate import __version__
from rxcurate.benchmarks import definition_checksum, list_definitions, load_definition
from rxcurate.card import build_card
from rxcurate.errors import CardError
from rxcurate.io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file
from rxcurate.layout import (
    BENCHMARKS_DIR,
    CARD,
    CARD_ASSETS_DIR,
    CHANGELOG,
    EMBEDDINGS_DIR,
    LOCKFILE,
    METADATA_CSV,
    METADATA_PARQUET,
    POLARIS_DIR,
    RELEASE_JSON,
    RESULTS_DIR,
    RXRX3_CORE_EMBEDDINGS,
    RXRX3_CORE_METADATA,
    TRUTH_DIR,
    definition_path,
    embeddings_path,
    hashed_files,
    is_visible,
    parse_release_json,
    read_json_file,
    release_files,
    release_json_text,
)
from rxcurate.manifest import Manifest
from rxcurate.publish.local import LocalHub
from rxcurate.publish.polaris import build_for_release
from rxcurate.publish.targets import semver_key
from rxcurate.release_inputs import (
    BenchmarkEntry,
    ReleaseInputs,
    counts,
    default_embedding_set,
    openphenom_set,
    published_manifest,
    read_inputs,
    repo_id_of,
    results_summary,
    rxrx3_core_metadata_text,
)
from rxcurate.schemas import schema_problem
from rxcurate.source import RXRX3, SOURCE_TRUTH_DIR

RELEASE_FORMAT = 1


LIBRARIES = ("pyarrow", "numpy", "pandas", "datasets", "huggingface-hub", "imagecodecs", "pillow", "duckdb", "torch",
             "scikit-learn", "scipy", "polaris-lib")


def library_versions() -> dict[str, str]:
    out = {"rxcurate": __version__, "python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


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
                was = (old_summary.get(bid, {}) or {}).get(sset, {}).get(k) if previous else None
                shown.append(f"{k} {_fmt(vals[k])}" + (f" (was {_fmt(was)})" if was is not None
                                                        and was != vals[k] else ""))
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


def previous_from_local(hub_path: str | os.PathLike[str], repo_id: str, version: str) -> PreviousRelease | None:
    """The newest version below ``version`` published in a local hub, or None."""
    hub = LocalHub(hub_path)
    if not hub.exists(repo_id):
        return None
    older = [v for v in hub.list_versions(repo_id) if semver_key(v) < semver_key(version)]
    if not older:
        return None
    v = older[-1]
    files = hub.list_files(repo_id, v)
    release = dict(parse_release_json(hub.read_file(repo_id, v, RELEASE_JSON), f"{repo_id}@{v}/{RELEASE_JSON}").raw) \
        if RELEASE_JSON in files else {}
    changelog = hub.read_file(repo_id, v, CHANGELOG).decode("utf-8") if CHANGELOG in files else ""
    wells = None
    if METADATA_PARQUET in files:
        table = pd.read_parquet(io.BytesIO(hub.read_file(repo_id, v, METADATA_PARQUET)), columns=["well_id"])
        wells = sorted(table["well_id"].astype(str).unique())
    return PreviousRelease(v, release, changelog, wells)


def write_changelog(folder: Path, text: str) -> None:
    atomic_write_text(folder / CHANGELOG, text)


POLARIS_BENCHMARK = "compound-gene-activity"


def write_rxrx3_core(inputs: ReleaseInputs) -> None:
    """The RxRx3-core drop-in files at the release root (rxrx3 layout): ``metadata_rxrx3_core.csv`` always,
    ``OpenPhenom_rxrx3_core_embeddings.parquet`` (a byte copy of the openphenom set's ``embeddings.parquet``:
    ``well_id`` + ``feature_0..``) when an openphenom set exists. A stale one is removed."""
    folder = inputs.folder
    meta, emb = folder / RXRX3_CORE_METADATA, folder / RXRX3_CORE_EMBEDDINGS
    rxrx3 = inputs.manifest.layout == RXRX3.name
    name = openphenom_set([e.name for e in inputs.embeddings]) if rxrx3 else None
    if not rxrx3:
        meta.unlink(missing_ok=True)
    else:
        text = rxrx3_core_metadata_text(inputs.metadata)
        if not meta.is_file() or meta.read_bytes() != text.encode("utf-8"):
            atomic_write_text(meta, text)
    if name is None:
        emb.unlink(missing_ok=True)
        return
    src = embeddings_path(folder, name)
    if not emb.is_file() or sha256_file(emb) != sha256_file(src):
        with atomic_path(emb) as tmp:
            shutil.copyfile(src, tmp)


def write_card_assets(folder: Path, assets: dict[str, bytes]) -> None:
    """Write the card's images (``card/``) whose bytes changed and remove the ones this build did not render (a
    stale plot is never published)."""
    for rel, data in sorted(assets.items()):
        path = folder / rel
        if not path.is_file() or path.read_bytes() != data:
            atomic_write_bytes(path, data)
    base = folder / CARD_ASSETS_DIR
    if base.is_dir():
        for p in sorted(base.rglob("*")):
            if p.is_file() and p.relative_to(folder).as_posix() not in assets:
                p.unlink()
        if not any(base.iterdir()):
            base.rmdir()


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
    candidates = [Path(p) for p in extra]
    if source_root and (Path(source_root) / SOURCE_TRUTH_DIR).is_dir():
        candidates += sorted((Path(source_root) / SOURCE_TRUTH_DIR).glob("*"))
    for p in extra:
        if not Path(p).is_file():
            raise CardError(f"--truth {p}: file not found (pass the truth table used by rxcurate evaluate)")
    present = {sha256_file(folder / rel) for rel in release_files(folder) if rel.startswith(f"{BENCHMARKS_DIR}/")}
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
    ids = set(manifest.benchmarks)
    rdir = folder / RESULTS_DIR
    results: dict[str, list[Path]] = {}
    if rdir.is_dir():
        for p in sorted(rdir.rglob("*.json")):
            if is_visible(p.relative_to(folder).as_posix()):
                results.setdefault(p.stem, []).append(p)
    shipped = set(list_definitions())
    for bid in sorted(ids | set(results)):
        dest = definition_path(folder, bid)
        if dest.is_file() or bid not in shipped:
            continue
        defn = load_definition(bid)
        for p in results.get(bid, []):
            doc = read_json_file(p)
            if (doc.get("benchmark") or {}).get("checksum") != definition_checksum(defn):
                raise CardError(f"{p}: computed with a definition other than the shipped {bid} (checksum differs): "
                                f"put that definition at {dest} or rerun rxcurate evaluate -b {bid}")
        atomic_write_json(dest, defn)


def check_result_inputs(inputs: ReleaseInputs) -> None:
    """Every result was computed from this release's files (embeddings, metadata, truth: by sha256)."""
    files = release_files(inputs.folder)
    shas = {rel: sha256_file(inputs.folder / rel) for rel in files
            if rel.startswith((f"{EMBEDDINGS_DIR}/", f"{BENCHMARKS_DIR}/")) or rel in (METADATA_CSV, METADATA_PARQUET)}
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
    folder = manifest.resolve_workdir(workdir)
    if not folder.is_dir():
        raise CardError(f"release folder {folder} does not exist: run rxcurate select/compress {manifest.path} first "
                        f"(or pass --workdir DIR)")
    if not (folder / LOCKFILE).is_file():
        raise CardError(f"{folder / LOCKFILE} is missing: run rxcurate select {manifest.path} --workdir {folder} first")
    add_definitions(folder, manifest)
    inputs = read_inputs(manifest, folder)
    gather_truth(folder, inputs.benchmarks, list(truth), inputs.lock_info.get("source_root"))
    check_result_inputs(inputs)
    built_polaris = False
    cga = next((b for b in inputs.benchmarks if b.id == POLARIS_BENCHMARK and b.definition and b.results), None)
    if polaris and cga is not None and cga.definition is not None and manifest.layout == "rxrx3":
        build_for_release(folder, name=manifest.name, description=(
            f"Compound-gene activity pairs of {repo_id_of(manifest)} {manifest.version} (zero-shot drug-target "
            f"interaction): score each (treatment, gene_symbol) pair, e.g. by |cosine| of their embeddings."),
            license=manifest.license or manifest.card.get("license"), definition=cga.definition,
            results=cga.results, metadata=inputs.metadata,
            repo_id=repo_id_of(manifest), version=manifest.version)
        built_polaris = True
    elif (folder / POLARIS_DIR).exists():
        shutil.rmtree(folder / POLARIS_DIR)  # stale artifacts of another build: never publish them
    inputs.polaris = [p for p in release_files(folder) if p.startswith(f"{POLARIS_DIR}/")]
    write_rxrx3_core(inputs)
    changelog = build_changelog(inputs, previous)
    if not (folder / CHANGELOG).is_file() or (folder / CHANGELOG).read_text(encoding="utf-8") != changelog:
        write_changelog(folder, changelog)
    card = build_card(inputs, changelog)
    write_card_assets(folder, card.assets)
    names = [n for n in release_files(folder) if n not in (CARD, RELEASE_JSON)]
    files = hashed_files(folder, names)
    doc = build_release_json(inputs, card.data_hash, files)
    problem = schema_problem(doc, "release", RELEASE_JSON)
    if problem:
        raise CardError(problem)
    text = release_json_text(doc)
    card_path, rel_path = folder / CARD, folder / RELEASE_JSON
    unchanged = card_path.is_file() and rel_path.is_file() and card_path.read_text(encoding="utf-8") == card.text \
        and rel_path.read_text(encoding="utf-8") == text
    if not unchanged:
        atomic_write_text(card_path, card.text)
        atomic_write_text(rel_path, text)
    return AssembleResult(folder, manifest.version, inputs.data_version, card.data_hash, len(files) + 2,
                          "up to date" if unchanged else "written", built_polaris, doc)

