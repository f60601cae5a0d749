"""`rxcurate validate`: fetch a published version into a fresh folder and prove it is what release.json says.

Checks (each failure names its file):

1. ``release.json``: readable, schema (``schemas/release.schema.json``).
2. files: sha256 and size of every file listed; no unlisted file (``leaderboard/`` and hidden files aside).
3. manifest (``manifest.schema.json``), its version and hash; lockfile content hash; data version recomputed.
4. card (``README.md``): parses with huggingface_hub, ``card.schema.json``, its data hash (prose excluded) equals
   release.json's, and every split size it claims equals the files; its images (``card/``) are the ones the
   published files give (the montage pixel for pixel, each plot a PNG of the same size).
5. counts: shard rows, metadata rows and wells against the lockfile (less the wells compress skipped) and release.json.
6. keys: ``__key__`` unique, sorted, and one-to-one with metadata wells x sites x channels (and the lockfile's keys).
7. images: decode to the declared shape and uint8 (all with ``full``, else a seeded sample).
8. embeddings: one row per metadata well, no NaN/inf, the declared dimension, float32, no identical vectors of
   distinct wells.
9. benchmarks: definition and results schemas, then every result re-run from the published files with
   ``rxcurate.benchmarks`` and compared within the definition's tolerance.
10. Polaris artifacts (when published): consistent; with ``full``, loaded through polaris-lib.
11. RxRx3-core drop-in (rxrx3 layout): ``metadata_rxrx3_core.csv`` equals ``metadata.parquet`` in rxrx3-core's
    columns; ``OpenPhenom_rxrx3_core_embeddings.parquet`` is a copy of the openphenom embedding set (when one exists).

The report is JSON-serialisable; ``ok`` only when every check passed.
"""

from __future__ import annotations

import copy
import csv
import fnmatch
import io
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from rxcurate.benchmarks import (
    compare_results,
    definition_checksum,
    evaluate_files,
    validate_definition,
    validate_results,
)
from rxcurate.benchmarks.runner import flatten
from rxcurate.card import IMAGES_CONFIG, METADATA_CONFIG, build_card, data_hash_of, split_card, strip_prose
from rxcurate.errors import ReleaseValidationError, RxcurateError
from rxcurate.io import canonical_hash, read_json, sha256_bytes, sha256_file
from rxcurate.layout import (
    BENCHMARKS_DIR,
    CARD,
    CARD_ASSETS_DIR,
    CARD_MONTAGE,
    CHANGELOG,
    DATA_DIR,
    EMBEDDINGS_DIR,
    IMAGE_DIGESTS,
    LOCKFILE,
    METADATA_CSV,
    METADATA_PARQUET,
    POLARIS_DIR,
    RELEASE_JSON,
    REPORT,
    RXRX3_CORE_EMBEDDINGS,
    RXRX3_CORE_METADATA,
    Lockfile,
    Release,
    card_asset,
    definition_path,
    embedding_config_name,
    is_visible,
    read_lockfile,
    read_release_json,
    release_files,
)
from rxcurate.manifest import Manifest, data_version
from rxcurate.publish.hf import redact
from rxcurate.publish.hub import PinnedVersion, open_version
from rxcurate.publish.polaris import check_artifacts, polaris_installed
from rxcurate.publish.targets import CARRIED_PREFIXES, REPO_FILES, linked_files, relabel, resolve_target
from rxcurate.release_inputs import (
    discover_benchmarks,
    manifest_of,
    openphenom_set,
    read_inputs,
    results_summary,
    rxrx3_core_metadata_text,
)
from rxcurate.schemas import schema_problem

DEFAULT_SAMPLE = 64
IGNORED_PREFIXES = CARRIED_PREFIXES  # the leaderboard lives in the repository but is no part of a release
IGNORED_NAMES = REPO_FILES
DATA = f"{DATA_DIR}/"  # the findings of all shards together name the folder
MAX_EXAMPLES = 3


@dataclass
class Finding:
    check: str
    file: str
    ok: bool
    message: str


@dataclass
class ValidationReport:
    target: str
    version: str | None
    commit: str | None
    folder: str
    full: bool
    seed: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings) and bool(self.findings)

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def add(self, check: str, file: str, ok: bool, message: str) -> None:
        self.findings.append(Finding(check, file, ok, redact(message)))

    def fail(self, check: str, file: str, message: str) -> None:
        self.add(check, file, False, f"{file}: {message}")

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "version": self.version, "commit": self.commit, "folder": self.folder,
                "full": self.full, "seed": self.seed, "ok": self.ok, "checks": len(self.findings),
                "failures": [asdict(f) for f in self.failures], "findings": [asdict(f) for f in self.findings]}

    def raise_for_failures(self) -> None:
        if not self.ok:
            first = self.failures[0].message if self.failures else "no checks ran"
            raise ReleaseValidationError(f"{self.target}: {len(self.failures)} check(s) failed; first: {first}")


def _relative(exc: BaseException, folder: Path) -> str:
    """An error message with the (temporary) folder prefix removed, so it names the file as published."""
    return " ".join(str(exc).replace(f"{folder}/", "").split())


def _examples(items: list[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:MAX_EXAMPLES])
    return shown + (f" and {len(items) - MAX_EXAMPLES} more" if len(items) > MAX_EXAMPLES else "")


# --------------------------------------------------------------------------------------------------- checks
def _check_release_json(folder: Path, rep: ValidationReport) -> Release | None:
    try:
        doc = read_release_json(folder)
    except RxcurateError as exc:
        rep.add(RELEASE_JSON, RELEASE_JSON, False, _relative(exc, folder))
        return None
    problem = schema_problem(dict(doc.raw), "release", RELEASE_JSON)
    if problem:
        rep.add(RELEASE_JSON, RELEASE_JSON, False, problem)
        return None
    rep.add(RELEASE_JSON, RELEASE_JSON, True, f"{RELEASE_JSON}: schema valid (version {doc.version})")
    return doc


def _all_files(folder: Path) -> list[str]:
    out = []
    for p in folder.rglob("*"):
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            if not is_visible(rel) or rel.startswith(IGNORED_PREFIXES) or rel in IGNORED_NAMES:
                continue
            out.append(rel)
    return sorted(out)


def _check_files(folder: Path, release: Release, rep: ValidationReport, checkout: bool,
                 deferred: frozenset[str] = frozenset()) -> set[str]:
    """sha256/size of every listed file; returns the files that failed. Unlisted files: every file of a checkout,
    the release files of a local release folder (which may hold other things, e.g. the source screen). The sha256
    of ``deferred`` files (the shards) is checked by :func:`_scan_shards`, which reads them once for every check."""
    bad: set[str] = set()
    files = release.files
    for rel in sorted(files):
        want = files[rel]
        path = folder / rel
        if not path.is_file():
            rep.fail("files", rel, "listed in release.json but missing")
            bad.add(rel)
            continue
        size = path.stat().st_size
        if size != want.get("size"):
            rep.fail("files", rel, f"size {size:,} bytes, release.json says {want.get('size'):,}")
            bad.add(rel)
            continue
        if rel not in deferred and sha256_file(path) != want.get("sha256"):
            rep.fail("files", rel, "sha256 differs from release.json (the file was modified)")
            bad.add(rel)
    present = _all_files(folder) if checkout else release_files(folder)
    extra = [r for r in present if r not in files and r not in (CARD, RELEASE_JSON)]
    for rel in extra:
        rep.fail("files", rel, "not listed in release.json (an unexpected file)")
    if not bad and not extra:
        rep.add("files", RELEASE_JSON, True, f"{len(files)} files match release.json (sha256 and size"
                + (f"; the {len(deferred)} shards' sha256 with their image scan)" if deferred else ")"))
    return bad


def _check_manifest(folder: Path, release: Release, rep: ValidationReport) -> tuple[Manifest | None, Lockfile | None]:
    try:
        manifest = manifest_of(release.raw, RELEASE_JSON)
    except RxcurateError as exc:
        rep.add("manifest", RELEASE_JSON, False, str(exc))
        return None, None
    ok = True
    if manifest.version != release.get("version"):
        rep.fail("manifest", RELEASE_JSON, f"manifest version {manifest.version} differs from version "
                                           f"{release.version}")
        ok = False
    if manifest.manifest_hash() != release.get("manifest_hash"):
        rep.fail("manifest", RELEASE_JSON, "manifest_hash does not match the recorded manifest")
        ok = False
    try:
        lock = read_lockfile(folder, manifest)
    except RxcurateError as exc:
        rep.add("lockfile", LOCKFILE, False, _relative(exc, folder))
        return manifest, None
    if lock.content_hash != release.get("lockfile_content_hash"):
        rep.fail("lockfile", LOCKFILE, "content hash differs from release.json lockfile_content_hash")
        ok = False
    dv = data_version(lock.content_hash, manifest.transform_section())
    if dv != release.get("data_version"):
        rep.fail("lockfile", RELEASE_JSON, f"data_version {str(release.get('data_version'))[:16]} does not match the "
                                           f"lockfile + transform ({dv[:16]})")
        ok = False
    if ok:
        rep.add("manifest", RELEASE_JSON, True, f"manifest valid; data version {dv[:16]} reproduced from "
                                                f"{LOCKFILE} + transform")
    return manifest, lock


@dataclass
class _Shards:
    paths: list[str]
    keys: list[pa.ChunkedArray]
    rows: list[int]


def shard_files(files: Mapping[str, Any]) -> list[str]:
    """The image shards (``data/*.parquet``) among a release's files, sorted."""
    return sorted(r for r in files if r.startswith(DATA) and r.endswith(".parquet"))


def _read_shards(folder: Path, release: Release, rep: ValidationReport) -> _Shards | None:
    paths = shard_files(release.files)
    if not paths:
        rep.fail("counts", RELEASE_JSON, f"lists no {DATA} shards")
        return None
    keys, rows = [], []
    for rel in paths:
        try:
            f = pq.ParquetFile(folder / rel)
            if "__key__" not in f.schema_arrow.names or release.image["column"] not in f.schema_arrow.names:
                rep.fail("keys", rel, f"columns {f.schema_arrow.names}; a shard has __key__ and "
                                      f"{release.image['column']}")
                return None
            keys.append(f.read(columns=["__key__"]).column("__key__"))
            rows.append(f.metadata.num_rows)
        except Exception as exc:  # noqa: BLE001 - a damaged parquet file is a finding
            rep.fail("keys", rel, f"unreadable Parquet ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})")
            return None
    return _Shards(paths, keys, rows)


def expected_keys(metadata: pd.DataFrame, layout: str, sites: list[int], channels: list[int]) -> list[str]:
    """``__key__`` of every image the metadata implies (wells x sites x channels; RxRx1 rows are sites)."""
    if layout == "rxrx1":
        exp, addr = metadata["experiment"].astype(str), metadata["well"].astype(str)
        site = metadata["site"].astype(int)
        base = [(e, int(p), a, int(s)) for e, p, a, s in zip(exp, metadata["plate"], addr, site, strict=True)
                if int(s) in sites]
    else:
        base = [(e, int(p), a, s) for e, p, a in zip(metadata["experiment_name"].astype(str), metadata["plate"],
                                                    metadata["address"].astype(str), strict=True) for s in sites]
    return [f"{e}/Plate{p}/{a}_s{s}_{c}" for e, p, a, s in base for c in channels]


def _check_counts_and_keys(folder: Path, release: Release, manifest: Manifest | None, lock: Lockfile | None,
                           shards: _Shards,
                           rep: ValidationReport) -> pd.DataFrame | None:
    ok = True
    try:
        metadata = pd.read_parquet(folder / METADATA_PARQUET)
    except Exception as exc:  # noqa: BLE001
        rep.fail("counts", METADATA_PARQUET, f"unreadable ({type(exc).__name__})")
        return None
    problem = csv_problem(folder)
    if problem:
        rep.fail("counts", METADATA_CSV, problem)
        ok = False
    counts = release.counts
    wells = sorted(metadata["well_id"].astype(str).unique())
    n_images = sum(shards.rows)
    try:
        skipped = {s["well_id"] for s in read_json(folder / REPORT).get("skipped_wells", [])}
    except Exception:  # noqa: BLE001
        rep.fail("counts", REPORT, "unreadable JSON")
        skipped = set()
    for what, actual, claimed, file in (("images", n_images, counts.get("images"), DATA),
                                        ("wells", len(wells), counts.get("wells"), METADATA_PARQUET),
                                        ("metadata rows", len(metadata), counts.get("metadata_rows"), METADATA_PARQUET),
                                        ("shards", len(shards.paths), counts.get("shards"), DATA)):
        if actual != claimed:
            rep.fail("counts", file, f"{actual:,} {what}, release.json counts say {claimed}")
            ok = False
    lock_keys: list[str] = []
    if lock is not None:
        lw = lock.table.column("well_id").to_pylist()
        kept = [w for w in lw if w not in skipped]
        if kept != wells:
            missing, extra = sorted(set(kept) - set(wells)), sorted(set(wells) - set(kept))
            rep.fail("counts", METADATA_PARQUET, f"wells differ from {LOCKFILE} less skipped wells "
                                                 f"({len(missing)} missing: {_examples(missing)}; {len(extra)} "
                                                 f"unexpected: {_examples(extra)})")
            ok = False
        for w, ks in zip(lw, lock.table.column("keys").to_pylist(), strict=True):
            if w not in skipped:
                lock_keys.extend(ks)
    sites = list(release.image.get("sites", [1]))
    channels = list(release.image.get("channels", []))
    expected = expected_keys(metadata, manifest.layout if manifest else release.get("layout", "rxrx3"), sites,
                             channels)
    # keys: per shard sorted and unique, across shards ordered, globally unique
    all_keys: list[str] = []
    prev_last = None
    for rel, col in zip(shards.paths, shards.keys, strict=True):
        ks = col.to_pylist()
        uniq = pc.unique(col)
        if len(uniq) != len(ks):
            vc = pc.value_counts(col)
            dup = sorted(v["values"] for v in vc.to_pylist() if v["counts"] > 1)
            rep.fail("keys", rel, f"{len(ks) - len(uniq)} duplicated __key__ row(s) (e.g. {_examples(dup)})")
            ok = False
        if ks != sorted(ks) or (prev_last is not None and ks and ks[0] <= prev_last):
            rep.fail("keys", rel, "__key__ values are not sorted within/across shards (the order must be __key__ "
                                  "order)")
            ok = False
        if ks:
            prev_last = ks[-1]
        all_keys.extend(ks)
    have, want = set(all_keys), set(expected)
    missing, extra = sorted(want - have), sorted(have - want)
    if missing:
        rep.fail("keys", DATA, f"{len(missing)} image(s) of metadata wells x channels are missing from the shards "
                                  f"(e.g. {_examples(missing)})")
        ok = False
    if extra:
        where = _key_files(shards, set(extra[:MAX_EXAMPLES]))
        rep.fail("keys", where or DATA, f"{len(extra)} __key__ value(s) match no metadata well x channel "
                                        f"(e.g. {_examples(extra)})")
        ok = False
    if lock is not None and sorted(lock_keys) != sorted(all_keys) and not (missing or extra):
        rep.fail("keys", LOCKFILE, "the shards' __key__ set differs from the lockfile's keys")
        ok = False
    if ok:
        rep.add("counts", DATA, True, f"{n_images:,} images in {len(shards.paths)} shard(s), {len(wells):,} wells: "
                                         "counts match the lockfile and release.json; __key__ unique, sorted and "
                                         "one-to-one with metadata wells x channels")
    return metadata


def csv_problem(folder: Path) -> str | None:
    """How ``metadata.csv`` differs from ``metadata.parquet`` written as CSV (as compress writes it), or None."""
    try:
        text = (folder / METADATA_CSV).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"unreadable ({type(exc).__name__})"
    want = pq.read_table(folder / METADATA_PARQUET).to_pandas().to_csv(index=False, lineterminator="\n")
    if text == want:
        return None
    have, expected = text.split("\n"), want.split("\n")
    header = next(csv.reader([expected[0]]), [])
    for i, (a, b) in enumerate(zip(have, expected, strict=False)):
        if a != b:
            fa, fb = next(csv.reader([a]), []), next(csv.reader([b]), [])
            col = next((j for j in range(max(len(fa), len(fb))) if j >= min(len(fa), len(fb)) or fa[j] != fb[j]), 0)
            name = header[col] if col < len(header) else f"field {col + 1}"
            got = fa[col] if col < len(fa) else "(missing)"
            exp = fb[col] if col < len(fb) else "(missing)"
            return (f"line {i + 1} ({name}) reads {got[:80]!r}, {METADATA_PARQUET} has {exp[:80]!r}: the CSV differs "
                    f"from {METADATA_PARQUET}")
    return f"{len(have) - 1:,} lines, {METADATA_PARQUET} has {len(expected) - 1:,}: the CSV differs from it"


def _key_files(shards: _Shards, keys: set[str]) -> str:
    for rel, col in zip(shards.paths, shards.keys, strict=True):
        if pc.any(pc.is_in(col, value_set=pa.array(sorted(keys)))).as_py():
            return rel
    return ""


def _check_shard_hashes(folder: Path, release: Release, paths: list[str], rep: ValidationReport) -> None:
    for rel in paths:
        if sha256_file(folder / rel) != release.files[rel].get("sha256"):
            rep.fail("files", rel, "sha256 differs from release.json (the file was modified)")


@dataclass
class _Scan:
    sizes: np.ndarray  # encoded bytes of every image, in shard order


def _scan_shards(folder: Path, release: Release, shards: _Shards, rep: ValidationReport, full: bool, sample: int,
                 seed: int) -> _Scan:
    """One read of every shard (at most one shard in memory): its sha256 against release.json (the files check
    defers shards to here), each image's sha256 against image_digests.parquet (bytes swapped between keys leave
    every shard well-formed and re-hashable), every image's encoded size (for the compression check), and a decode
    of the chosen images (all with ``full``, else a seeded sample)."""
    total = sum(shards.rows)
    shape = tuple(release.image.get("shape") or ())
    column = release.image.get("column", "jp2")
    if full or sample >= total:
        chosen = np.arange(total)
    else:
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=sample, replace=False))
    offsets = np.cumsum([0, *shards.rows])
    want: dict[str, str] | None = None
    if IMAGE_DIGESTS in release.files:
        try:
            table = pq.read_table(folder / IMAGE_DIGESTS, columns=["__key__", "sha256"])
            want = dict(zip(table.column("__key__").to_pylist(), table.column("sha256").to_pylist(), strict=True))
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for damaged files
            rep.fail("images", IMAGE_DIGESTS, f"unreadable ({type(exc).__name__}): regenerate it with rxcurate "
                                              "compress")
    else:
        rep.add("images", IMAGE_DIGESTS, True, "no per-image digests recorded (a release made before they were)")
    bad = checked = seen = 0
    wrong: list[str] = []
    sizes: list[np.ndarray] = []
    for i, rel in enumerate(shards.paths):
        data = (folder / rel).read_bytes()
        if sha256_bytes(data) != release.files[rel].get("sha256"):
            rep.fail("files", rel, "sha256 differs from release.json (the file was modified)")
        local = chosen[(chosen >= offsets[i]) & (chosen < offsets[i + 1])] - offsets[i]
        f = pq.ParquetFile(pa.BufferReader(data))
        start = 0
        for g in range(f.num_row_groups):
            t = f.read_row_group(g, columns=["__key__", column])
            col = t.column(column).combine_chunks()
            blobs = pc.struct_field(col, "bytes") if pa.types.is_struct(col.type) else col
            sizes.append(pc.binary_length(blobs).to_numpy(zero_copy_only=False))
            keys = t.column("__key__").to_pylist()
            n = len(keys)
            if want is not None:
                for key, blob in zip(keys, blobs.to_pylist(), strict=True):
                    seen += 1
                    if want.get(key) != sha256_bytes(blob or b""):
                        wrong.append(f"{rel}: {key}")
            in_g = local[(local >= start) & (local < start + n)] - start
            start += n
            for r in in_g.tolist():
                key = keys[r]
                cell = col[r].as_py()
                checked += 1
                blob = cell.get("bytes") if isinstance(cell, dict) else cell
                try:
                    img = imagecodecs.jpeg2k_decode(blob or b"")
                except Exception as exc:  # noqa: BLE001 - codec errors of many types
                    bad += 1
                    if bad <= MAX_EXAMPLES:
                        rep.fail("images", rel, f"{key}: does not decode as JPEG 2000 ({type(exc).__name__})")
                    continue
                if img.dtype != np.uint8 or img.ndim != 2 or (shape and tuple(img.shape) != shape):
                    bad += 1
                    if bad <= MAX_EXAMPLES:
                        rep.fail("images", rel, f"{key}: decodes to {img.dtype} {list(img.shape)}, release.json "
                                                f"declares uint8 {list(shape)}")
                if isinstance(cell, dict) and cell.get("path") not in (None, f"{key}.jp2", f"{key}.j2k"):
                    bad += 1
                    if bad <= MAX_EXAMPLES:
                        rep.fail("images", rel, f"{key}: image path {cell.get('path')!r} does not match its key")
        del data, f
    if bad > MAX_EXAMPLES:
        rep.fail("images", DATA, f"{bad} bad image(s) in total")
    if not bad:
        rep.add("images", DATA, True, f"{checked:,} of {total:,} images decode to uint8 {list(shape)}"
                                         + (" (all)" if checked == total else f" (seeded sample, seed {seed})"))
    if want is not None:
        if wrong:
            rep.fail("images", IMAGE_DIGESTS, f"{len(wrong)} image(s) differ from the digest recorded for their "
                                              f"key (bytes moved between keys or replaced), e.g. {_examples(wrong)}")
        elif seen != len(want):
            rep.fail("images", IMAGE_DIGESTS, f"records {len(want):,} images, the shards hold {seen:,}")
        else:
            rep.add("images", IMAGE_DIGESTS, True, f"all {seen:,} images match the digest recorded for their key")
    return _Scan(np.concatenate(sizes).astype(np.int64) if sizes else np.zeros(0, np.int64))


RATE_HEADER_BYTES = 256  # codestream headers beyond OpenJPEG's rate target (bytes <= h*w/rate + headers)


def _check_compression(folder: Path, release: Release, manifest: Manifest | None, shards: _Shards,
                       sizes: np.ndarray, rep: ValidationReport) -> None:
    """The compression report's byte counts re-measured from the shards, the declared codec the same in
    release.json, the manifest and the report, and a fixed rate consistent with the measured image sizes."""
    report = read_json(folder / REPORT)
    shape = list(release.image.get("shape") or [])
    ok = True
    if len(shape) == 2 and len(sizes):
        pixels = int(shape[0]) * int(shape[1])
        measured = {"images_total": int(sizes.sum()),
                    "shards_total": int(sum((folder / rel).stat().st_size for rel in shards.paths)),
                    "per_image": {"mean": round(float(sizes.mean()), 2), "min": int(sizes.min()),
                                  "median": float(np.median(sizes)), "max": int(sizes.max())},
                    "uncompressed_8bit_per_image": pixels,
                    "compression_ratio": round(pixels / float(sizes.mean()), 3)}
        claimed = flatten(report.get("bytes") or {}, sep=".")
        for key, value in flatten(measured, sep=".").items():
            if claimed.get(key) != value:
                rep.fail("compression", REPORT, f"bytes.{key} is {claimed.get(key)}, the shards measure {value}")
                ok = False
        if report.get("image_shape") != shape:
            rep.fail("compression", REPORT, f"image_shape {report.get('image_shape')}, release.json says {shape}")
            ok = False
    codec = release.image.get("codec") or {}
    for where, other in ((f"the manifest's transform ({RELEASE_JSON}#manifest)",
                          manifest.transform.codec.to_dict() if manifest else codec),
                         (REPORT, (report.get("transform") or {}).get("codec"))):
        if other != codec:
            rep.fail("compression", RELEASE_JSON, f"image.codec {codec} differs from the codec of {where}: {other}")
            ok = False
    if codec.get("mode") == "rate" and len(shape) == 2 and len(sizes):
        rate = float(codec.get("value") or 0)
        limit = int(shape[0]) * int(shape[1]) / rate + RATE_HEADER_BYTES if rate > 0 else float("inf")
        if int(sizes.max()) > limit:
            rep.fail("compression", DATA, f"images of up to {int(sizes.max()):,} bytes (mean "
                                          f"{float(sizes.mean()):,.1f}): the declared codec rate {rate:g} allows at "
                                          f"most {limit:,.0f} bytes per "
                                          f"{shape[0]}x{shape[1]} uint8 image")
            ok = False
    if ok:
        rep.add("compression", REPORT, True, f"{REPORT}: byte counts re-measured from the shards; codec "
                                             f"{codec.get('name')} {codec.get('mode')} {codec.get('value', '')} "
                                             "consistent")


def _check_embeddings(folder: Path, release: Release, wells: list[str], rep: ValidationReport) -> None:
    for e in release.embeddings:
        rel = e["path"]
        try:
            table = pq.read_table(folder / rel)
        except Exception as exc:  # noqa: BLE001
            rep.fail("embeddings", rel, f"unreadable Parquet ({type(exc).__name__})")
            continue
        ok = True
        names = table.column_names
        feats = [c for c in names if c.startswith("feature_")]
        if "well_id" not in names:
            rep.fail("embeddings", rel, f"no well_id column (columns {names[:5]}...)")
            continue
        if feats != [f"feature_{i}" for i in range(len(feats))]:
            rep.fail("embeddings", rel, "feature columns are not feature_0..feature_{d-1} in order")
            ok = False
        declared = {e.get("dim")}
        if e.get("info") and (folder / e["info"]).is_file():
            declared.add(read_json(folder / e["info"]).get("dim"))
        if declared != {len(feats)}:
            rep.fail("embeddings", rel, f"{len(feats)} feature columns, declared dimension "
                                        f"{sorted(map(str, declared))}")
            ok = False
        non_f32 = [c for c in feats if table.schema.field(c).type != pa.float32()]
        if non_f32:
            rep.fail("embeddings", rel, f"{len(non_f32)} feature column(s) are not float32 (e.g. {non_f32[0]})")
            ok = False
        ids = table.column("well_id").to_pylist()
        if len(set(ids)) != len(ids):
            seen: dict[str, int] = {}
            for w in ids:
                seen[w] = seen.get(w, 0) + 1
            dup = sorted(w for w, n in seen.items() if n > 1)
            rep.fail("embeddings", rel, f"{len(ids) - len(seen)} duplicated row(s): well_id {_examples(dup)} "
                                        "appears more than once (one row per well)")
            ok = False
        if sorted(set(ids)) != wells:
            missing, extra = sorted(set(wells) - set(ids)), sorted(set(ids) - set(wells))
            rep.fail("embeddings", rel, f"wells differ from the metadata ({len(missing)} missing: "
                                        f"{_examples(missing)}; {len(extra)} unknown: {_examples(extra)})")
            ok = False
        elif ids != sorted(ids):
            rep.fail("embeddings", rel, "rows are not sorted by well_id")
            ok = False
        if len(ids) != e.get("rows"):
            rep.fail("embeddings", rel, f"{len(ids)} rows, release.json says {e.get('rows')}")
            ok = False
        if feats:
            x = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in feats]).astype(np.float32)
            finite = np.isfinite(x).all(axis=1)
            if not finite.all():
                bad = [ids[i] for i in np.flatnonzero(~finite)]
                rep.fail("embeddings", rel, f"NaN/inf in {len(bad)} row(s) (e.g. {_examples(bad)})")
                ok = False
            pairs = identical_pairs(ids, x)
            if pairs:
                rep.fail("embeddings", rel, f"{len(pairs)} pair(s) of distinct wells have identical vectors (e.g. "
                                            f"{_examples([f'{a}={b}' for a, b in pairs])})")
                ok = False
        if ok:
            rep.add("embeddings", rel, True, f"{rel}: {len(ids):,} wells x {len(feats)} float32, finite, distinct")


def identical_pairs(ids: list[str], x: np.ndarray) -> list[tuple[str, str]]:
    """Pairs of distinct well ids with bitwise-identical vectors (sorted)."""
    if not len(ids):
        return []
    rows = np.ascontiguousarray(x).view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()
    _, inverse, counts = np.unique(rows, return_inverse=True, return_counts=True)
    pairs: list[tuple[str, str]] = []
    for g in np.flatnonzero(counts > 1):
        members = sorted({ids[i] for i in np.flatnonzero(inverse == g)})
        pairs += [(a, b) for k, a in enumerate(members) for b in members[k + 1:]]
    return sorted(pairs)


def _find_by_sha(folder: Path, files: Mapping[str, Any], sha: str | None,
                 prefix: tuple[str, ...] | str = "") -> Path | None:
    if not sha:
        return None
    for rel in sorted(files):
        if rel.startswith(prefix) and files[rel].get("sha256") == sha:
            return folder / rel
    return None


def rerun_result(folder: Path, files: Mapping[str, Any], definition: Path, published: dict[str, Any]) -> list[str]:
    """Re-run one published result from the published files; problems (empty = reproduced).

    The seam to :mod:`rxcurate.benchmarks`: inputs are located in the release by the sha256 recorded in the
    result's provenance, then ``evaluate_files`` runs and ``compare_results`` compares within the tolerance.
    """
    inputs = (published.get("provenance") or {}).get("inputs") or {}
    paths: dict[str, Path | None] = {}
    for key, prefix in (("embeddings", f"{EMBEDDINGS_DIR}/"), ("metadata", (METADATA_CSV, METADATA_PARQUET)),
                        ("map", "")):
        spec = inputs.get(key)
        if spec:
            paths[key] = _find_by_sha(folder, files, spec.get("sha256"), prefix)
            if paths[key] is None:
                return [f"its {key} input {spec.get('file')} (sha256 {str(spec.get('sha256'))[:12]}...) is not a "
                        f"published file"]
    truth: dict[str, Path] = {}
    for name, spec in sorted((inputs.get("truth") or {}).items()):
        p = _find_by_sha(folder, files, spec.get("sha256"), f"{BENCHMARKS_DIR}/")
        if p is None:
            return [f"its truth input {name} ({spec.get('file')}) is not published under {BENCHMARKS_DIR}/"]
        truth[name] = p
    key = canonical_hash({"definition": sha256_file(definition),
                          "inputs": {k: sha256_file(p) for k, p in sorted(paths.items()) if p is not None},
                          "truth": {k: sha256_file(p) for k, p in truth.items()}})
    if key not in _RERUNS:
        try:
            _RERUNS[key] = evaluate_files(str(definition), paths.get("embeddings"), paths.get("metadata"),
                                          truth or None, None, map_path=paths.get("map"))
        except RxcurateError as exc:
            return [f"re-run failed: {exc}"]
    rerun = copy.deepcopy(_RERUNS[key])
    return compare_results(published, rerun) + summary_problems(published, rerun)


def _tolerance(path: str, tolerance: Any) -> float:
    if not isinstance(tolerance, Mapping):
        return float(tolerance)
    metrics = tolerance.get("metrics") or {}
    hit = next((p for p in sorted(metrics) if fnmatch.fnmatchcase(path, p)), None)
    return float(metrics[hit]) if hit is not None else float(tolerance.get("default", 0.0))


def summary_problems(published: Mapping[str, Any], rerun: Mapping[str, Any]) -> list[str]:
    """The published ``summary`` (what the card, release.json and the leaderboard show) against the re-run's, numbers
    within the results' tolerance, everything else exactly."""
    pub, new = published.get("summary") or {}, rerun.get("summary") or {}
    tol = (published.get("benchmark") or {}).get("tolerance", 0.0)
    problems = []
    for k in sorted(set(pub) | set(new)):
        a, b = pub.get(k), new.get(k)
        if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool) \
                and not isinstance(b, bool):
            differs = abs(float(a) - float(b)) > _tolerance(k, tol)
        else:
            differs = a != b
        if differs or (k in pub) != (k in new):
            problems.append(f"summary {k}: published {a}, re-run {b}")
    return problems


# Re-runs are pure functions of the bytes of the definition and the inputs: within one process, validating the same
# files again (publish validates before writing; tests validate many copies) reuses the result.
_RERUNS: dict[str, dict[str, Any]] = {}


def _check_benchmarks(folder: Path, release: Release, rep: ValidationReport, rerun: bool) -> None:
    files = release.files
    for b in release.benchmarks:
        drel = b.get("definition")
        defn = None
        if not drel:
            rep.fail("benchmarks", definition_path(folder, b["id"]).relative_to(folder).as_posix(),
                     "missing: results need their definition")
        else:
            try:
                defn = validate_definition(read_json(folder / drel), drel)
            except (RxcurateError, OSError, ValueError) as exc:
                rep.add("benchmarks", drel, False, f"{drel}: {_relative(exc, folder)}")
        for rrel in b.get("results", []):
            try:
                published = read_json(folder / rrel)
                if defn is None or not rerun:  # with a re-run, compare_results validates both documents itself
                    validate_results(published, rrel)
            except (RxcurateError, OSError, ValueError) as exc:
                rep.add("benchmarks", rrel, False, f"{rrel}: {_relative(exc, folder)}")
                continue
            if defn is None:
                continue
            if not rerun:
                if published["benchmark"]["checksum"] != definition_checksum(defn):
                    rep.fail("benchmarks", rrel, f"computed with another definition than {drel} (checksum differs)")
                else:
                    rep.add("benchmarks", rrel, True, f"{rrel}: schema valid (re-run skipped)")
                continue
            problems = rerun_result(folder, files, folder / str(drel), published)
            if problems:
                rep.fail("benchmarks", rrel, f"does not reproduce: {'; '.join(problems[:MAX_EXAMPLES])}"
                                             + (f" (and {len(problems) - MAX_EXAMPLES} more)"
                                                if len(problems) > MAX_EXAMPLES else ""))
            else:
                rep.add("benchmarks", rrel, True, f"{rrel}: re-run reproduces the published results within "
                                                  f"tolerance {published['benchmark']['tolerance']}")


def _check_results_summary(folder: Path, release: Release, rep: ValidationReport) -> None:
    """release.json's ``results_summary`` recomputed from the published results files (checked above)."""
    want = results_summary(discover_benchmarks(folder))
    got = release.get("results_summary") or {}
    wrong = []
    for bid in sorted(set(want) | set(got)):
        for sset in sorted(set(want.get(bid) or {}) | set(got.get(bid) or {})):
            w, g = (want.get(bid) or {}).get(sset), (got.get(bid) or {}).get(sset)
            if w is None or g is None:
                wrong.append(f"{bid}/{sset} is {'missing' if g is None else 'listed'} but the results files "
                             f"{'have' if w is not None else 'lack'} it")
                continue
            wrong += [f"{bid}/{sset} {k} is {g.get(k)}, the results file says {w.get(k)}"
                      for k in [*w, *(k for k in g if k not in w)] if g.get(k) != w.get(k)]
    for msg in wrong[:MAX_EXAMPLES]:
        rep.fail("benchmarks", RELEASE_JSON, f"results_summary {msg}")
    if not wrong:
        rep.add("benchmarks", RELEASE_JSON, True, f"{RELEASE_JSON}: results_summary recomputed from the results files")


def _first_difference(published: str, rebuilt: str) -> str:
    a, b = published.split("\n"), rebuilt.split("\n")
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"body line {i + 1} reads {x.strip()[:120]!r}, the published files give {y.strip()[:120]!r}"
    return f"the body has {len(a)} lines, the published files give {len(b)}"


def _check_card_rebuilt(folder: Path, release: Release, meta: dict[str, Any], body: str, got: str,
                        rep: ValidationReport) -> bool:
    """Regenerate the card from the published files: its data hash must be the card's (release.json's is checked
    separately), so numbers edited in both the card and release.json are still caught."""
    try:
        rebuilt = build_card(read_inputs(manifest_of(release.raw), folder),
                             (folder / CHANGELOG).read_text(encoding="utf-8"))
    except (RxcurateError, OSError, ValueError, KeyError) as exc:
        rep.fail("card", CARD, f"cannot be regenerated from the published files ({_relative(exc, folder)[:200]})")
        return False
    if rebuilt.data_hash == got:
        return _check_card_assets(folder, release, rebuilt.assets, rep)
    new_meta, new_body = split_card(rebuilt.text)
    if new_meta != meta:
        keys = sorted(k for k in set(meta) | set(new_meta) if meta.get(k) != new_meta.get(k))
        detail = f"front matter {keys[0]} is {str(meta.get(keys[0]))[:120]}, the published files give " \
                 f"{str(new_meta.get(keys[0]))[:120]}"
    else:
        detail = _first_difference(strip_prose(body), strip_prose(new_body))
    rep.fail("card", CARD, f"differs from the card regenerated from the published files: {detail}; regenerate it with "
                           "rxcurate card")
    return False


def _png_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        if im.format != "PNG":
            raise ValueError(f"a {im.format} image, not PNG")
        return np.asarray(im.convert("RGB"))


def _check_card_assets(folder: Path, release: Release, assets: Mapping[str, bytes], rep: ValidationReport) -> bool:
    """The card's images: exactly the ones regenerated from the published files, listed in release.json; the
    montage (decoded from the shards) pixel for pixel, each plot a PNG of the same size (matplotlib's rendering may
    differ by version)."""
    published = sorted(r for r in release.files if r.startswith(f"{CARD_ASSETS_DIR}/"))
    ok = True
    for rel in sorted(set(published) - set(assets)):
        rep.fail("card", rel, "a card image the published files do not give (stale); regenerate with rxcurate card")
        ok = False
    for rel, data in sorted(assets.items()):
        path = folder / rel
        if rel not in release.files or not path.is_file():
            rep.fail("card", rel, "missing: the card embeds it (regenerate the release with rxcurate card)")
            ok = False
            continue
        try:
            got, want = _png_pixels(path.read_bytes()), _png_pixels(data)
        except (OSError, ValueError) as exc:
            rep.fail("card", rel, f"is not a readable PNG ({' '.join(str(exc).split())[:120]}); regenerate it with "
                                  "rxcurate card")
            ok = False
            continue
        same = got.shape == want.shape and (rel != card_asset(CARD_MONTAGE) or np.array_equal(got, want))
        if not same:
            rep.fail("card", rel, f"differs from the image regenerated from the published files ({got.shape[1]}x"
                                  f"{got.shape[0]} px, expected {want.shape[1]}x{want.shape[0]}"
                                  + (", other pixels" if got.shape == want.shape else "")
                                  + "); regenerate it with rxcurate card")
            ok = False
    return ok


def _check_card(folder: Path, release: Release, metadata: pd.DataFrame | None, shards: _Shards | None,
                rep: ValidationReport) -> None:
    path = folder / CARD
    if not path.is_file():
        rep.fail("card", CARD, "missing (the dataset card)")
        return
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        rep.fail("card", CARD, f"is not UTF-8 text (byte {exc.start}): the card was corrupted; regenerate it with "
                               "rxcurate card")
        return
    try:
        meta, body = split_card(text)
    except RxcurateError as exc:
        rep.add("card", CARD, False, str(exc))
        return
    problem = schema_problem(meta, "card", f"{CARD} front matter")
    if problem:
        rep.add("card", CARD, False, problem)
        return
    ok = True
    actual: dict[str, int | None] = {IMAGES_CONFIG: sum(shards.rows) if shards else None,
                                     METADATA_CONFIG: len(metadata) if metadata is not None else None}
    for e in release.embeddings:
        actual[embedding_config_name(e["name"])] = e.get("rows")
    for info in meta.get("dataset_info", []):
        name = info.get("config_name")
        for split in info.get("splits", []):
            claimed = split.get("num_examples")
            if name in actual and actual[name] is not None and claimed != actual[name]:
                rep.fail("card", CARD, f"dataset_info {name}/{split.get('name')} claims {claimed:,} examples, the "
                                       f"published files hold {actual[name]:,}")
                ok = False
    for cfg in meta.get("configs", []):
        for df in cfg.get("data_files", []):
            if not any(folder.glob(df["path"])):
                rep.fail("card", CARD, f"config {cfg['config_name']}: data_files {df['path']!r} matches no file")
                ok = False
    got = data_hash_of(meta, body)
    want = release.card.get("data_hash")
    if got != want:
        rep.fail("card", CARD, "generated content differs from release.json card.data_hash (edited outside its prose "
                               "blocks); regenerate it with rxcurate card")
        ok = False
    ok = _check_card_rebuilt(folder, release, meta, body, got, rep) and ok
    if ok:
        rep.add("card", CARD, True, f"{CARD}: parses, schema valid, data hash and split sizes match; regenerated from "
                                    "the published files")


def _check_polaris(folder: Path, release: Release, rep: ValidationReport, full: bool) -> None:
    if not release.polaris:
        return
    library = full and polaris_installed()
    problems = check_artifacts(folder, repo_id=release.repo_id, version=release.version, with_library=library)
    for p in problems:
        rel, _, msg = p.partition(": ")
        rep.fail("polaris", rel, msg)
    if not problems:
        rep.add("polaris", f"{POLARIS_DIR}/", True, f"{POLARIS_DIR}/: artifacts consistent, checksums recomputed"
                + (" and load with polaris-lib" if library else ""))


def _check_rxrx3_core(folder: Path, release: Release, metadata: pd.DataFrame | None, rep: ValidationReport) -> None:
    """The RxRx3-core drop-in files: ``metadata_rxrx3_core.csv`` is ``metadata.parquet`` in rxrx3-core's columns
    (rxrx3 layout), ``OpenPhenom_rxrx3_core_embeddings.parquet`` the openphenom set's embeddings (when one exists)."""
    files = release.files
    rxrx3 = release.layout == "rxrx3"
    if not rxrx3:
        for name in (RXRX3_CORE_METADATA, RXRX3_CORE_EMBEDDINGS):
            if name in files:
                rep.fail("rxrx3-core", name, f"published by a {release.layout} release (only the rxrx3 layout has it)")
        return
    if RXRX3_CORE_METADATA not in files:
        rep.fail("rxrx3-core", RXRX3_CORE_METADATA, "missing: an rxrx3-layout release publishes it (rebuild the "
                                                    "release with rxcurate card)")
    elif metadata is not None:
        text = (folder / RXRX3_CORE_METADATA).read_bytes()
        if text != rxrx3_core_metadata_text(metadata).encode("utf-8"):
            rep.fail("rxrx3-core", RXRX3_CORE_METADATA, f"differs from {METADATA_PARQUET} written in rxrx3-core's "
                                                        "columns (regenerate it with rxcurate card)")
        else:
            rep.add("rxrx3-core", RXRX3_CORE_METADATA, True, f"{RXRX3_CORE_METADATA}: the rows of {METADATA_PARQUET} "
                                                             "in rxrx3-core's columns")
    paths = {str(e.get("name")): str(e.get("path")) for e in release.embeddings}
    op_set = openphenom_set(list(paths))
    if op_set is None:
        if RXRX3_CORE_EMBEDDINGS in files:
            rep.fail("rxrx3-core", RXRX3_CORE_EMBEDDINGS, "published without an openphenom embedding set")
    elif RXRX3_CORE_EMBEDDINGS not in files:
        rep.fail("rxrx3-core", RXRX3_CORE_EMBEDDINGS, f"missing: the release has the openphenom set {op_set} (rebuild "
                                                      "the release with rxcurate card)")
    elif sha256_file(folder / RXRX3_CORE_EMBEDDINGS) != sha256_file(folder / paths[op_set]):
        rep.fail("rxrx3-core", RXRX3_CORE_EMBEDDINGS, f"differs from {paths[op_set]} (it must be a copy of it)")
    else:
        rep.add("rxrx3-core", RXRX3_CORE_EMBEDDINGS, True, f"{RXRX3_CORE_EMBEDDINGS}: a copy of {paths[op_set]}")


def validate_folder(folder: str | os.PathLike[str], *, full: bool = False, sample: int = DEFAULT_SAMPLE,
                    seed: int = 0, rerun: bool = True, target: str | None = None, version: str | None = None,
                    commit: str | None = None, checkout: bool = False) -> ValidationReport:
    """Run every check on a release folder: a checkout of a published version (``checkout``: every file must be
    listed in release.json) or a local release folder (only its release files are considered)."""
    folder = Path(folder)
    rep = ValidationReport(target or str(folder), version, commit, str(folder), full, seed)
    if not folder.is_dir():
        rep.fail(RELEASE_JSON, str(folder), "folder does not exist")
        return rep
    release = _check_release_json(folder, rep)
    if release is None:
        return rep
    if version is not None and release.get("version") != version:
        rep.fail(RELEASE_JSON, RELEASE_JSON, f"version {release.get('version')} but the tag is v{version}")
    links = linked_files(folder, release.files, whole=checkout)
    for rel in links:
        rep.fail("files", rel, "is a symbolic link; a release holds regular files only (copy the file in its place)")
    if links:
        return rep  # a link may point anywhere: read nothing through it
    guard = _Guard(rep)
    shards = guard("counts", DATA, _read_shards, folder, release, rep)  # footers and keys only
    deferred = frozenset(shards.paths) if shards is not None else frozenset()
    guard("files", RELEASE_JSON, _check_files, folder, release, rep, checkout, deferred)
    manifest, lock = guard("manifest", RELEASE_JSON, _check_manifest, folder, release, rep) or (None, None)
    metadata = None
    if shards is not None:
        metadata = guard("counts", METADATA_PARQUET, _check_counts_and_keys, folder, release, manifest, lock, shards,
                         rep)
        scan = guard("images", DATA, _scan_shards, folder, release, shards, rep, full, sample, seed)
        if scan is None:  # the scan failed part-way: hash the shards the ordinary way so none goes unchecked
            guard("files", DATA, _check_shard_hashes, folder, release, shards.paths, rep)
        else:
            guard("compression", REPORT, _check_compression, folder, release, manifest, shards, scan.sizes, rep)
    guard("card", CARD, _check_card, folder, release, metadata, shards, rep)
    wells = sorted(metadata["well_id"].astype(str).unique()) if metadata is not None else []
    guard("embeddings", EMBEDDINGS_DIR, _check_embeddings, folder, release, wells, rep)
    guard("rxrx3-core", RXRX3_CORE_METADATA, _check_rxrx3_core, folder, release, metadata, rep)
    guard("benchmarks", BENCHMARKS_DIR, _check_benchmarks, folder, release, rep, rerun)
    guard("benchmarks", RELEASE_JSON, _check_results_summary, folder, release, rep)
    guard("polaris", POLARIS_DIR, _check_polaris, folder, release, rep, full)
    if not (folder / CHANGELOG).is_file():
        rep.fail("files", CHANGELOG, "missing")
    return rep


@dataclass
class _Guard:
    """Runs one check; an unexpected error of a damaged release (a missing or malformed file the check reads) is a
    failed finding naming the file, never a traceback."""

    rep: ValidationReport

    def __call__(self, check: str, file: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - see the class doc
            why = _relative(exc, Path(args[0]))[:200]
            self.rep.fail(check, file, f"cannot be checked ({type(exc).__name__}: {why})")
            return None


# --------------------------------------------------------------------------------------------------- targets
def pin_version(target: str, *, hub: str | os.PathLike[str] | None = None,
                endpoint: str | None = None) -> PinnedVersion:
    """Resolve ``target[@version]`` to one published version; raise :class:`ReleaseValidationError`."""
    with relabel(ReleaseValidationError):
        t = resolve_target(target, hub)
        if t.kind == "polaris":
            raise ReleaseValidationError(f"{target}: Polaris artifacts are validated with the dataset repository that "
                                         f"carries them: validate local://{t.repo_id} or hf://{t.repo_id}")
        return open_version(t, endpoint=endpoint)


def fetch_version(target: str, dest: str | os.PathLike[str], *, hub: str | os.PathLike[str] | None = None,
                  endpoint: str | None = None) -> tuple[str, str | None, str]:
    """Check out / download ``target[@version]`` into the empty folder ``dest``. Returns (version, commit, label)."""
    pinned = pin_version(target, hub=hub, endpoint=endpoint)
    with relabel(ReleaseValidationError):
        pinned.checkout(dest)
    return pinned.version, pinned.commit, str(pinned)


def validate(target: str, *, hub: str | os.PathLike[str] | None = None, full: bool = False,
             sample: int = DEFAULT_SAMPLE, seed: int = 0, rerun: bool = True,
             keep: str | os.PathLike[str] | None = None, endpoint: str | None = None) -> ValidationReport:
    """Validate ``TARGET[@version]`` (``local://``, ``hf://``) in a fresh folder, or an existing release folder."""
    if target and Path(target).is_dir() and "://" not in target:
        return validate_folder(target, full=full, sample=sample, seed=seed, rerun=rerun)
    if keep is not None:
        dest = Path(keep)
        if dest.exists() and any(dest.iterdir()):
            raise ReleaseValidationError(f"--keep {dest}: folder is not empty; choose a new folder")
        cleanup = None
    else:
        cleanup = tempfile.mkdtemp(prefix="rxcurate-validate-")
        dest = Path(cleanup) / "release"
    try:
        pinned = pin_version(target, hub=hub, endpoint=endpoint)  # a bad target: ReleaseValidationError (exit 2)
        try:
            with relabel(ReleaseValidationError):
                pinned.checkout(dest)
        except Exception as exc:  # noqa: BLE001 - a damaged repository or download is a finding, not a traceback
            rep = ValidationReport(str(pinned), pinned.version, pinned.commit, str(dest), full, seed)
            rep.fail("files", str(pinned), f"cannot be checked out ({' '.join(str(exc).split())[:300]})")
            return rep
        rep = validate_folder(dest, full=full, sample=sample, seed=seed, rerun=rerun, target=str(pinned),
                              version=pinned.version, commit=pinned.commit, checkout=True)
        if cleanup is not None:
            rep.folder = "(temporary checkout, removed; keep one with --keep DIR)"
        return rep
    finally:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
