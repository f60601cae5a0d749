"""Benchmark submissions: validate well-level embeddings for a published version, score them with the version's
published benchmark definition, and record the result on the leaderboard.

A submission is a Parquet file with a ``well_id`` (string) column and either float columns
``feature_0..feature_{d-1}`` or exactly one list / fixed-size-list column of floats. It must hold exactly one
finite row per well of the release, the same dimension in every row, and no identical vectors across distinct
wells. Every problem is reported with counts and examples; a bad submission records nothing.

Scoring uses only the release's files: its ``benchmarks/definitions/<id>.json`` (sha256 checked against
``release.json`` by the pull, and its checksum against the published results), its ``metadata.parquet`` and the
truth tables its published results were computed with. Post-processing and seeds come from the definition, never
from the submitter. Rows are put in ``well_id`` order first, so a shuffled file scores identically.

The submission id is a hash of (submission sha256, benchmark id/version/checksum, release data version): the same
file for the same benchmark and release always gets the same id, and resubmitting it records nothing new.
Accepted results are written to ``leaderboard/<version>/<benchmark>/<submission id>.json``: on a local hub as one
commit on the repository's ``leaderboard`` branch (``main`` and the version tags are never touched, so publishing
stays idempotent and the release still validates); on ``hf://`` as a pull request (``create_commit(create_pr=True)``)
with ``push=True``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rxcurate import __version__
from rxcurate.benchmarks import definition_checksum, evaluate, load_definition, validate_results
from rxcurate.benchmarks.readers import read_table
from rxcurate.consume.pull import open_source, pull
from rxcurate.errors import PullError, RxcurateError, SubmissionError
from rxcurate.io import atomic_write_json, canonical_hash, sha256_file
from rxcurate.layout import BENCHMARKS_DIR, METADATA_CSV, METADATA_PARQUET, Release
from rxcurate.publish.hub import Hub, hub_for
from rxcurate.publish.targets import LEADERBOARD_BRANCH, LEADERBOARD_DIR, relabel
from rxcurate.release_inputs import headline
from rxcurate.source import short
from rxcurate.validate import identical_pairs

__all__ = ["LEADERBOARD_BRANCH", "LEADERBOARD_DIR", "SubmissionRejected", "check_submission", "submit",
           "submission_id", "record_entry", "read_entry", "polaris_status"]

DEFAULT_MAX_BYTES = 4 << 30  # 4 GiB: RxRx3-core's ~222k wells x 384 float32 are ~0.35 GB
MAX_DIM = 65_536
RECORD_FORMAT = "rxcurate-submission/1"
FEATURE_RE = re.compile(r"^feature_(0|[1-9]\d*)$")
PANDAS_INDEX_RE = re.compile(r"^__index_level_\d+__$")  # a pandas index written by DataFrame.to_parquet: ignored
N_EXAMPLES = 3


class SubmissionRejected(SubmissionError):
    """A submission failed validation; ``problems`` lists every problem (each with counts and examples)."""

    def __init__(self, what: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{what}: submission rejected, nothing recorded ({len(problems)} problem(s)): "
                         + "; ".join(problems))


def _ex(items: list[Any]) -> str:
    shown = ", ".join(short(str(v), 80) for v in items[:N_EXAMPLES])  # a 1 MB id must not make a 1 MB line
    return shown + (f" (+{len(items) - N_EXAMPLES} more)" if len(items) > N_EXAMPLES else "")


# --------------------------------------------------------------------------------------------------- validation
@dataclass
class CheckedSubmission:
    """A valid submission in canonical form: rows sorted by well id, float64 features."""

    well_id: np.ndarray  # object, sorted
    x: np.ndarray  # float64 [n, d]
    sha256: str
    size: int
    file: str

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    def frame(self) -> pd.DataFrame:
        """``well_id`` + ``feature_0..feature_{d-1}`` (the embeddings table the benchmark runner reads)."""
        df = pd.DataFrame(self.x, columns=[f"feature_{i}" for i in range(self.dim)])
        df.insert(0, "well_id", self.well_id)
        return df


def _type_name(t: Any) -> str:
    return str(t)


def _features(table: pa.Table, problems: list[str]) -> tuple[list[str], str | None]:
    """Feature columns (or the single list column) of the submission's schema; problems appended."""
    names = [c for c in table.column_names if not PANDAS_INDEX_RE.match(c)]
    feats = sorted((c for c in names if FEATURE_RE.match(c)), key=lambda c: int(c.split("_")[1]))
    lists = [c for c in names if c != "well_id" and (pa.types.is_list(table.schema.field(c).type) or
                                                      pa.types.is_large_list(table.schema.field(c).type) or
                                                      pa.types.is_fixed_size_list(table.schema.field(c).type))]
    extra = [c for c in names if c != "well_id" and c not in feats and c not in lists]
    if "well_id" not in names:
        problems.append(f"no well_id column (columns: {_ex(names)}); name the well column well_id")
    elif not (pa.types.is_string(table.schema.field("well_id").type) or
              pa.types.is_large_string(table.schema.field("well_id").type)):
        problems.append(f"well_id has type {_type_name(table.schema.field('well_id').type)}; it must be a string "
                        f"column (e.g. 'gene-001_1_A01')")
    if extra:
        problems.append(f"{len(extra)} unexpected column(s): {_ex(extra)}; a submission holds only well_id and "
                        f"feature_0..feature_{{d-1}} (or one list column of floats)")
    if feats and lists:
        problems.append(f"both feature_* columns and list column(s) {_ex(lists)}: give one of the two layouts")
        return [], None
    if len(lists) > 1:
        problems.append(f"{len(lists)} list columns ({_ex(lists)}): give exactly one embedding list column")
        return [], None
    if lists:
        vt = table.schema.field(lists[0]).type.value_type
        if not pa.types.is_floating(vt):
            problems.append(f"list column {lists[0]!r} holds {_type_name(vt)}; embeddings must be floats "
                            f"(float32 or float64)")
        return [], lists[0]
    if not feats:
        problems.append("no feature columns: give feature_0..feature_{d-1} (float32) or one list column of floats")
        return [], None
    if [int(c.split("_")[1]) for c in feats] != list(range(len(feats))):
        have = {int(c.split("_")[1]) for c in feats}
        gap = next(i for i in range(len(feats) + 1) if i not in have)
        problems.append(f"feature columns must be feature_0..feature_{len(feats) - 1} without gaps; feature_{gap} is "
                        f"missing (inconsistent dimension)")
    bad = [f"{c}: {_type_name(table.schema.field(c).type)}" for c in feats
           if not pa.types.is_floating(table.schema.field(c).type)]
    if bad:
        problems.append(f"{len(bad)} feature column(s) are not float32/float64 (e.g. {', '.join(bad[:N_EXAMPLES])})")
    if len(feats) > MAX_DIM:
        problems.append(f"{len(feats)} features is more than the limit of {MAX_DIM}")
    return feats, None


def _matrix(table: pa.Table, feats: list[str], list_col: str | None, problems: list[str],
            ids: list[Any]) -> np.ndarray | None:
    n = table.num_rows
    if list_col is None:
        return np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in feats]) \
            .reshape(n, len(feats))
    col = table.column(list_col).combine_chunks()
    if col.null_count:
        rows = [ids[i] for i in np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))]
        problems.append(f"{col.null_count} row(s) have no embedding in {list_col!r} (e.g. {_ex(rows)})")
        return None
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    values, counts = np.unique(lengths, return_counts=True)
    if len(values) > 1:
        common = int(values[np.argmax(counts)])
        odd = [ids[i] for i in np.flatnonzero(lengths != common)]
        problems.append(f"inconsistent dimension in {list_col!r}: lengths "
                        + ", ".join(f"{int(v)} ({int(c)} rows)" for v, c in zip(values, counts, strict=True))
                        + f"; e.g. {_ex(odd)} differ from {common}")
        return None
    d = int(values[0]) if n else 0
    if d == 0 or d > MAX_DIM:
        problems.append(f"embedding dimension {d} in {list_col!r}: it must be between 1 and {MAX_DIM}")
        return None
    flat = pc.list_flatten(col) if not pa.types.is_fixed_size_list(col.type) else col.flatten()
    return flat.to_numpy(zero_copy_only=False).astype(np.float64).reshape(n, d)


def check_submission(path: str | os.PathLike[str], wells: list[str], *,
                     max_bytes: int = DEFAULT_MAX_BYTES) -> CheckedSubmission:
    """Validate a submission file against the release's wells; raise :class:`SubmissionRejected` listing every
    problem, else return it in canonical form (sorted by well id)."""
    p = Path(path)
    what = f"--embeddings {p}"
    if not p.is_file():
        raise SubmissionRejected(what, ["file not found: give a Parquet file of well-level embeddings (well_id, "
                                        "feature_0..feature_{d-1})"])
    size = p.stat().st_size
    if size == 0:
        raise SubmissionRejected(what, ["empty file (0 bytes): write the embeddings with pandas.DataFrame.to_parquet"])
    if size > max_bytes:
        raise SubmissionRejected(what, [f"{size:,} bytes is above the limit of {max_bytes:,} bytes (--max-bytes)"])
    try:
        md = pq.ParquetFile(p).metadata
        unpacked = sum(md.row_group(g).total_byte_size for g in range(md.num_row_groups))
        reading = READ_COPIES * unpacked
        if reading > available_memory():
            raise SubmissionRejected(what, [f"{md.num_rows:,} rows of {unpacked / GIB:.1f} GiB uncompressed need "
                                            f"about {reading / GIB:.1f} GiB of memory to check, more than the "
                                            f"{available_memory() / GIB:.1f} GiB available: reduce the dimension"])
        table = pq.read_table(p)
    except SubmissionRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure means: not a (readable) Parquet file
        raise SubmissionRejected(what, [f"not a readable Parquet file ({type(exc).__name__}): write it with "
                                        f"pandas.DataFrame.to_parquet or pyarrow.parquet.write_table"]) from None
    problems: list[str] = []
    feats, list_col = _features(table, problems)
    if problems:
        raise SubmissionRejected(what, problems)
    n = table.num_rows
    if n == 0:
        raise SubmissionRejected(what, [f"no rows: give one row per well of the release ({len(wells):,} wells)"])
    raw_ids = table.column("well_id").to_pylist()
    nulls = [i for i, w in enumerate(raw_ids) if w is None]
    if nulls:
        problems.append(f"{len(nulls)} row(s) have a null well_id (e.g. rows {_ex(nulls)})")
    ids = ["" if w is None else str(w) for w in raw_ids]
    try:
        x = _matrix(table, feats, list_col, problems, ids)
    except Exception as exc:  # noqa: BLE001 - any conversion failure (e.g. pyarrow's) is a bad feature column
        problems.append(f"features cannot be read as floats ({type(exc).__name__})")
        x = None
    seen: dict[str, int] = {}
    for w in ids:
        seen[w] = seen.get(w, 0) + 1
    dup = sorted(w for w, k in seen.items() if k > 1 and w)
    if dup:
        problems.append(f"{sum(seen[w] - 1 for w in dup)} duplicated row(s): well_id {_ex(dup)} appear(s) more than "
                        f"once (one row per well)")
    want = set(wells)
    missing = sorted(want - set(seen))
    extra = sorted(w for w in seen if w not in want and w)
    if missing:
        problems.append(f"{len(missing)} of the release's {len(wells):,} wells are missing (e.g. {_ex(missing)})")
    if extra:
        problems.append(f"{len(extra)} well(s) are not in the release (e.g. {_ex(extra)}): submit exactly the "
                        f"release's wells (metadata.parquet well_id)")
    if x is not None:
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            bad = [ids[i] for i in np.flatnonzero(~finite)]
            problems.append(f"NaN/inf (or null) features in {len(bad)} row(s) (e.g. {_ex(list(dict.fromkeys(bad)))})")
        elif not dup and not nulls:
            pairs = identical_pairs(ids, np.ascontiguousarray(x))
            if pairs:
                problems.append(f"{len(pairs)} pair(s) of distinct wells have identical vectors (e.g. "
                                f"{_ex([f'{a}={b}' for a, b in pairs])}): embed each well separately")
    if problems or x is None:
        raise SubmissionRejected(what, problems or ["features cannot be read"])
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    return CheckedSubmission(np.asarray(ids, dtype=object)[order], np.ascontiguousarray(x[order]), sha256_file(p),
                             size, p.name)


# --------------------------------------------------------------------------------------------------- memory
GIB = 1 << 30
READ_COPIES = 5  # the Arrow table, its float64 matrix (2x float32) and one conversion temporary
COVARIANCE_METHODS = ("tvn", "pca", "pca_centerscale")  # post-processing that builds d x d float64 matrices


def available_memory() -> int:
    """Bytes of memory this process can use now (MemAvailable, else the physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def scoring_memory(rows: int, dim: int, definition: dict[str, Any]) -> int:
    """Peak bytes scoring needs, roughly: a few float64 copies of the matrix, plus, for PCA / TVN post-processing,
    the d x d covariance, its eigenvectors and LAPACK's workspace."""
    method = str((definition.get("postprocess") or {}).get("method", ""))
    square = 4 * dim * dim if method in COVARIANCE_METHODS else 0
    return 8 * (4 * rows * dim + square)


def check_memory(sub: CheckedSubmission, pb: PublishedBenchmark) -> None:
    """Refuse (before scoring) a submission whose scoring would not fit in the memory available."""
    need, have = scoring_memory(len(sub.well_id), sub.dim, pb.definition), available_memory()
    if need <= have:
        return
    fits = next((d for d in (16_384, 8_192, 4_096, 2_048, 1_024, 512, 256, 128)
                 if scoring_memory(len(sub.well_id), d, pb.definition) <= have), None)
    method = (pb.definition.get("postprocess") or {}).get("method")
    raise SubmissionRejected(f"--embeddings {sub.file}", [
        f"{len(sub.well_id):,} wells x {sub.dim:,} features: scoring on {pb.id} needs about {need / GIB:.1f} GiB of "
        f"memory ({method} post-processing builds {sub.dim:,} x {sub.dim:,} float64 matrices), more than the "
        f"{have / GIB:.1f} GiB available: reduce the dimension"
        + (f" (e.g. PCA to {fits:,} features)" if fits else "") + " or score on a machine with more memory"])


# --------------------------------------------------------------------------------------------------- scoring
@dataclass
class PublishedBenchmark:
    """A benchmark as published in a release: definition, checksum and the inputs its results were computed on."""

    id: str
    definition: dict[str, Any]
    definition_path: str
    definition_sha256: str
    checksum: str
    metadata_path: Path
    truth: dict[str, Path]
    published: dict[str, dict[str, Any]]  # results relpath -> results document


def submission_id(submission_sha256: str, benchmark: dict[str, Any], data_version: str) -> str:
    """Stable id of (submission file, benchmark id/version/checksum, release data version)."""
    key = {"submission": submission_sha256, "benchmark": {k: benchmark[k] for k in ("id", "version", "checksum")},
           "release": data_version}
    return "sub-" + canonical_hash(key)[:20]


def published_benchmark(folder: Path, release: Release, benchmark: str) -> PublishedBenchmark:
    """The release's published definition of ``benchmark`` with its inputs, cross-checked; raises naming the fix."""
    entries = {b.get("id"): b for b in release.benchmarks}
    entry = entries.get(benchmark)
    if entry is None or not entry.get("definition"):
        have = sorted(str(k) for k, b in entries.items() if b.get("definition"))
        raise SubmissionError(f"--benchmark {benchmark!r}: this release publishes no such benchmark; use one of "
                              f"{', '.join(have) or 'none (the release has no benchmarks)'}")
    drel = entry["definition"]
    try:
        defn = load_definition(folder / drel)
    except RxcurateError as exc:
        raise PullError(f"{drel} of the release is not a valid benchmark definition ({exc})") from None
    checksum = definition_checksum(defn)
    files = release.files
    published: dict[str, dict[str, Any]] = {}
    for rrel in sorted(entry.get("results") or []):
        try:
            doc = json.loads((folder / rrel).read_text())
        except (OSError, ValueError):
            raise PullError(f"{rrel} of the release is not readable JSON: re-pull (rxcurate pull --parts benchmarks "
                            f"--verify)") from None
        if (doc.get("benchmark") or {}).get("checksum") != checksum:
            raise PullError(f"{rrel}: computed with another definition than the published {drel} (checksum "
                            f"differs); the release is inconsistent: run rxcurate validate on it")
        published[rrel] = doc
    truth: dict[str, Path] = {}
    meta_rel = METADATA_PARQUET
    if published:
        first = published[sorted(published)[0]]
        ins = (first.get("provenance") or {}).get("inputs") or {}
        for name, spec in sorted((ins.get("truth") or {}).items()):
            rel = next((r for r in sorted(files) if r.startswith(f"{BENCHMARKS_DIR}/")
                        and files[r].get("sha256") == spec.get("sha256")), None)
            if rel is None:
                raise PullError(f"the truth table {spec.get('file')} of {benchmark} is not published in the release; "
                                f"it cannot be scored (report it to the publisher)")
            truth[name] = folder / rel
        msha = (ins.get("metadata") or {}).get("sha256")
        meta_rel = next((r for r in (METADATA_PARQUET, METADATA_CSV) if (files.get(r) or {}).get("sha256") == msha),
                        meta_rel)
    elif defn["inputs"]["truth"]["min_files"] > 0:
        raise SubmissionError(f"benchmark {benchmark} needs truth tables but the release publishes no results for it "
                              f"(nothing to take them from); choose another --benchmark")
    return PublishedBenchmark(benchmark, defn, drel, files.get(drel, {}).get("sha256") or sha256_file(folder / drel),
                              checksum, folder / meta_rel, truth, published)


def release_wells(metadata_path: Path) -> list[str]:
    meta = read_table(metadata_path, "metadata")
    return sorted(set(meta["well_id"].astype(str)))


def score(pb: PublishedBenchmark, sub: CheckedSubmission) -> dict[str, Any]:
    """Results of the submission on the published benchmark (the runner's results object, with provenance)."""
    meta = read_table(pb.metadata_path, "metadata")
    try:
        results = evaluate(pb.definition, sub.frame(), meta, pb.truth or None)
    except RxcurateError as exc:
        raise SubmissionError(f"the submission cannot be scored on {pb.id}: {exc}") from None
    ins = results["provenance"]["inputs"]
    ins["embeddings"] = {"file": sub.file, "sha256": sub.sha256, "rows": int(len(sub.well_id))}
    ins["metadata"] = {"file": pb.metadata_path.name, "sha256": sha256_file(pb.metadata_path), "rows": int(len(meta))}
    validate_results(results)
    return results


def rank_metric(results: dict[str, Any], definition: dict[str, Any]) -> tuple[str | None, float | None]:
    """The headline metric a leaderboard ranks by: the first summary entry the definition's ``metrics`` name."""
    head = headline(results.get("summary") or {}, definition)
    for k, v in head.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            return k, float(v)
    return (next(iter(head), None), None)


# --------------------------------------------------------------------------------------------------- recording
@dataclass
class SubmitResult:
    """Outcome of a submission: ``status`` is ``recorded``, ``unchanged`` (resubmission) or ``scored`` (not
    recorded: hf:// without --push)."""

    status: str
    submission_id: str
    record: dict[str, Any]
    location: str = ""
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "status": self.status, "submission_id": self.submission_id, "location": self.location,
                "messages": self.messages, "rank_metric": self.record.get("rank_metric"),
                "headline": self.record.get("headline"), "record": self.record}


def entry_path(version: str, benchmark: str, sid: str) -> str:
    return f"{LEADERBOARD_DIR}/{version}/{benchmark}/{sid}.json"


def record_text(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


def read_entry(hub: Hub, repo_id: str, rel: str) -> dict[str, Any] | None:
    """The accepted leaderboard entry ``rel``, or None (absent or unreadable)."""
    with relabel(SubmissionError):
        raw = hub.read_leaderboard(repo_id, rel).get(rel)
    try:
        doc = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def record_entry(hub: Hub, repo_id: str, rel: str, data: bytes, message: str) -> str:
    """Record one leaderboard entry (local: a commit on the leaderboard branch; hf: a pull request); returns where."""
    with relabel(SubmissionError):
        return hub.record_leaderboard(repo_id, {rel: data}, message)


def submit(target: str, benchmark: str, embeddings: str | os.PathLike[str], *, name: str | None = None,
           push: bool = False, hub: str | os.PathLike[str] | None = None, cache: str | os.PathLike[str] | None = None,
           endpoint: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES, out: str | os.PathLike[str] | None = None,
           api: Any = None, now: datetime | None = None) -> SubmitResult:
    """Validate, score and record a submission of ``embeddings`` to ``benchmark`` of ``TARGET[@VERSION]``."""
    if name is not None and (not name.strip() or len(name) > 100 or "\n" in name):
        raise SubmissionError(f"--name {name!r}: give a short one-line name (1-100 characters), e.g. my-encoder-v2")
    if out is not None and (Path(out).is_dir() or (Path(out).parent.exists() and not Path(out).parent.is_dir())):
        raise SubmissionError(f"--out {out}: not a file path (it is a folder, or lies below a file): give a file to "
                              f"write the results to, e.g. --out {Path(out) / 'results.json'}")
    source = open_source(target, hub=hub, endpoint=endpoint)
    label = str(source)
    res = pull(label, ["metadata", "benchmarks"], hub=hub, cache=cache, endpoint=endpoint)
    release = res.release
    pb = published_benchmark(res.folder, release, benchmark)
    sub = check_submission(embeddings, release_wells(pb.metadata_path), max_bytes=max_bytes)
    bench = {"id": pb.id, "version": pb.definition["version"], "checksum": pb.checksum}
    data_version = str(release.get("data_version"))
    sid = submission_id(sub.sha256, bench, data_version)
    rel = entry_path(source.version, pb.id, sid)
    messages: list[str] = []
    existing = read_entry(source.hub, source.repo_id, rel)
    if existing is not None:
        if out is not None:
            atomic_write_json(out, existing)
        return SubmitResult("unchanged", sid, existing, f"{label} {rel}",
                            [f"already on the leaderboard as {sid} (resubmission: nothing new recorded)"])
    check_memory(sub, pb)
    results = score(pb, sub)
    metric, value = rank_metric(results, pb.definition)
    record = {
        "format": RECORD_FORMAT,
        "submission_id": sid,
        "name": name or Path(embeddings).stem,
        "submitted_at": (now or datetime.now(UTC)).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "rxcurate_version": __version__,
        "release": {"target": label, "repo_id": source.repo_id, "version": source.version, "commit": source.commit,
                    "data_version": data_version},
        "benchmark": {**bench, "definition": pb.definition_path, "definition_sha256": pb.definition_sha256},
        "submission": {"file": sub.file, "sha256": sub.sha256, "bytes": sub.size, "wells": int(len(sub.well_id)),
                       "dim": sub.dim},
        "rank_metric": {"name": metric, "value": value},
        "headline": headline(results.get("summary") or {}, pb.definition),
        "results": results,
    }
    data = record_text(record)
    if not source.hub.needs_push:
        where = record_entry(source.hub, source.repo_id, rel, data,
                             f"Leaderboard: {record['name']} on {pb.id} ({source.version})")
        status, location = "recorded", f"{label} {where}: {rel}"
    elif push:
        writer = source.hub if api is None else hub_for(source.target, api=api)
        status, location = "recorded", record_entry(writer, source.repo_id, rel, data,
                                                    f"Leaderboard submission {record['name']}")
        messages.append(f"opened a pull request adding {rel}: {location}")
    else:
        status, location = "scored", ""
        messages.append(f"{label}: scored locally but not recorded; pass --push to open a pull request adding {rel}")
    if push:
        messages.append(polaris_status())
    if out is not None:
        atomic_write_json(out, record)
    return SubmitResult(status, sid, record, location, messages)


def polaris_status() -> str:
    """What happened to the Polaris upload (only attempted with credentials; never prints them)."""
    if not (os.environ.get("POLARIS_USERNAME") and os.environ.get("POLARIS_PASSWORD")):
        return "Polaris: upload skipped (no POLARIS_USERNAME/POLARIS_PASSWORD credentials set)"
    return ("Polaris: upload skipped (a submission is recorded on the release's leaderboard only; the Polaris Hub "
            "takes results of the release's own baseline predictions: rxcurate publish FOLDER --to "
            "polaris://OWNER/BENCHMARK, with polaris-lib from .venv-polaris)")
