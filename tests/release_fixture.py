"""A tiny, complete release folder built with the real stages (select, compress, embed baseline, evaluate, card)
on the tiny synthetic RxRx3 screen; built once per test process and copied per test."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
BASE_MANIFEST = REPO / "tests" / "data" / "manifests" / "tiny-rxrx3.yaml"
REPO_ID = "test/tiny-rxrx3"
PROSE = "A tiny release made by the rxcurate test suite."
BENCHMARKS = ["compound-gene-activity", "gene-gene-recall", "perturbation-signal"]
_CACHE: dict[str, tuple[Path, Path]] = {}


def write_manifest(dest: Path, *, version: str = "0.1.0", prose: str = PROSE, repo_id: str = REPO_ID) -> Path:
    raw = yaml.safe_load(BASE_MANIFEST.read_text())
    raw["version"] = version
    raw["embeddings"] = [{"encoder": "baseline"}]
    raw["benchmarks"] = BENCHMARKS
    raw["card"] = {"repo_id": repo_id, "pretty_name": "Tiny RxRx3 (test)", "tags": ["biology", "microscopy"],
                   "prose": prose}
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest


def build_release(source: Path, base: Path) -> tuple[Path, Path]:
    """(manifest path, release folder) of the tiny release, built once per process."""
    key = str(source)
    if key in _CACHE:
        return _CACHE[key]
    os.environ.setdefault("RXCURATE_PROGRESS", "0")
    from rxcurate.assemble import assemble
    from rxcurate.benchmarks import evaluate_files
    from rxcurate.compress import compress
    from rxcurate.embed import run_embed
    from rxcurate.manifest import load_manifest
    from rxcurate.select import select

    folder = base / "release"
    manifest_path = write_manifest(base / "manifest" / "tiny.yaml")
    m = load_manifest(manifest_path)
    select(m, source=source, workdir=folder)
    compress(m, source=source, workdir=folder, workers=1)
    run_embed(folder, "baseline", device="cpu", num_workers=0, tile=32)
    emb = folder / "embeddings" / "baseline" / "embeddings.parquet"
    truth = {"gene-gene-recall": {"relationships": source / "truth" / "relationships.csv"},
             "compound-gene-activity": {"compound_gene_interactions": source / "truth" /
                                        "compound_gene_interactions.csv"},
             "perturbation-signal": None}
    for bid in BENCHMARKS:
        evaluate_files(bid, emb, folder / "metadata.parquet", truth[bid],
                       folder / "benchmarks" / "results" / "baseline" / f"{bid}.json")
    assemble(m, folder)
    _CACHE[key] = (manifest_path, folder)
    return _CACHE[key]


def copy_release(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest


def two_version_hub(built_folder: Path, base: Path) -> Path:
    """A local hub under ``base`` with versions 0.1.0 and 0.2.0 of the tiny release (0.2.0 differs only in its
    version)."""
    from rxcurate.assemble import assemble, previous_from_local
    from rxcurate.manifest import load_manifest
    from rxcurate.publish import publish

    hub = base / "hub"
    folder = copy_release(built_folder, base / "release")
    publish(folder, "local", hub=hub)
    m2 = load_manifest(write_manifest(base / "m2.yaml", version="0.2.0"))
    assemble(m2, folder, previous=previous_from_local(hub, REPO_ID, "0.2.0"))
    publish(folder, "local", hub=hub)
    return hub


def rehash(folder: Path, rel: str) -> None:
    """Forge release.json so the tampered file's sha256/size match (the semantic checks must still catch it)."""
    from rxcurate.io import sha256_file

    path = folder / "release.json"
    doc = json.loads(path.read_text())
    doc["files"][rel] = {"sha256": sha256_file(folder / rel), "size": (folder / rel).stat().st_size}
    path.write_text(json.dumps(doc, sort_keys=True, indent=2) + "\n")


def rewrite_parquet(path: Path, transform) -> None:
    table = pq.read_table(path)
    md = table.schema.metadata
    new = transform(table)
    pq.write_table(new.replace_schema_metadata(md), path)
