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

from rxcurate import __version__
from rxcurate.errors import PullError, RxcurateError, SubmissionError
from rxcurate.io import atomic_write_json, canonical_hash, sha256_file

DEFAULT_MAX_BYTES = 4 << 30  # 4 GiB: RxRx3-core's ~222k wells x 384 float32 are ~0.35 GB
MAX_DIM = 65_536
LEADERBOARD_BRANCH = "leaderboard"
LEADERBOARD_DIR = "leaderboard"
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
    shown = ", ".join(repr(str(v)) for v in items[:N_EXAMPLES])
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

    def frame(self):
        """``well_id`` + ``feature_0..feature_{d-1}`` (the embeddings table the benchmark runner reads)."""
        import pandas as pd

        df = pd.DataFrame(self.x, columns=[f"feature_{i}" for i in range(self.dim)])
        df.insert(0, "well_id", self.well_id)
        return df


def _type_name(t) -> str:
    return str(t)


def _features(table, problems: list[str]) -> tuple[list[str], str | None]:
    """Feature columns (or the single list column) of the submission's schema; problems appended."""
    import pyarrow as pa

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


def _matrix(table, feats: list[str], list_col: str | None, problems: list[str], ids: list[Any]) -> np.ndarray | None:
    import pyarrow as pa
    import pyarrow.compute as pc

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
    import pyarrow.parquet as pq

    from rxcurate.validate import identical_pairs

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
        table = pq.read_table(p)
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


def published_benchmark(folder: Path, release: dict[str, Any], benchmark: str) -> PublishedBenchmark:
    """The release's published definition of ``benchmark`` with its inputs, cross-checked; raises naming the fix."""
    from rxcurate.benchmarks import definition_checksum, load_definition

    entries = {b.get("id"): b for b in release.get("benchmarks", []) or []}
    entry = entries.get(benchmark)
    if entry is None or not entry.get("definition"):
        have = sorted(k for k, b in entries.items() if b.get("definition"))
        raise SubmissionError(f"--benchmark {benchmark!r}: this release publishes no such benchmark; use one of "
                              f"{', '.join(have) or 'none (the release has no benchmarks)'}")
    drel = entry["definition"]
    try:
        defn = load_definition(folder / drel)
    except RxcurateError as exc:
        raise PullError(f"{drel} of the release is not a valid benchmark definition ({exc})") from None
    checksum = definition_checksum(defn)
    files = release.get("files", {})
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
    meta_rel = "metadata.parquet"
    if published:
        first = published[sorted(published)[0]]
        ins = (first.get("provenance") or {}).get("inputs") or {}
        for name, spec in sorted((ins.get("truth") or {}).items()):
            rel = next((r for r in sorted(files) if r.startswith("benchmarks/")
                        and files[r].get("sha256") == spec.get("sha256")), None)
            if rel is None:
                raise PullError(f"the truth table {spec.get('file')} of {benchmark} is not published in the release; "
                                f"it cannot be scored (report it to the publisher)")
            truth[name] = folder / rel
        msha = (ins.get("metadata") or {}).get("sha256")
        meta_rel = next((r for r in ("metadata.parquet", "metadata.csv") if (files.get(r) or {}).get("sha256") == msha),
                        meta_rel)
    elif defn["inputs"]["truth"]["min_files"] > 0:
        raise SubmissionError(f"benchmark {benchmark} needs truth tables but the release publishes no results for it "
                              f"(nothing to take them from); choose another --benchmark")
    return PublishedBenchmark(benchmark, defn, drel, files.get(drel, {}).get("sha256") or sha256_file(folder / drel),
                              checksum, folder / meta_rel, truth, published)


def release_wells(metadata_path: Path) -> list[str]:
    from rxcurate.benchmarks.readers import read_table

    meta = read_table(metadata_path, "metadata")
    return sorted(set(meta["well_id"].astype(str)))


def score(pb: PublishedBenchmark, sub: CheckedSubmission) -> dict[str, Any]:
    """Results of the submission on the published benchmark (the runner's results object, with provenance)."""
    from rxcurate.benchmarks import evaluate, validate_results
    from rxcurate.benchmarks.readers import read_table

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
    from rxcurate.release import headline

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


def _existing_local(hub, repo_id: str, rel: str) -> dict[str, Any] | None:
    raw = hub.read_branch_file(repo_id, LEADERBOARD_BRANCH, rel)
    return json.loads(raw) if raw is not None else None


def _existing_hf(source, rel: str) -> dict[str, Any] | None:
    """The leaderboard entry ``rel`` on the repository's main branch (merged submissions), or None."""
    from huggingface_hub import hf_hub_download

    from rxcurate.publish.hf import _errors, _http_message

    http_error, _, _ = _errors()
    try:
        if rel not in source.api.list_repo_files(source.repo_id, repo_type="dataset", revision="main"):
            return None
        got = hf_hub_download(source.repo_id, rel, repo_type="dataset", revision="main", token=source.api.token,
                              endpoint=source.api.endpoint)
        return json.loads(Path(got).read_text())
    except http_error as exc:
        raise SubmissionError(f"{source.label}: cannot read its leaderboard ({_http_message(exc)}); nothing was "
                              f"recorded") from None
    except ValueError:
        return None


def _push_hf(source, rel: str, data: bytes, name: str, api: Any = None) -> str:
    from huggingface_hub import CommitOperationAdd

    from rxcurate.publish.hf import _errors, _http_message

    api = api or source.api
    if not api.token:
        raise SubmissionError(f"{source.label}: --push needs a Hugging Face token: set HF_TOKEN or run `hf auth login` "
                              f"(the token is never printed); nothing was recorded")
    http_error, _, _ = _errors()
    try:
        info = api.create_commit(source.repo_id, [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=data)],
                                 commit_message=f"Leaderboard submission {name}", repo_type="dataset",
                                 create_pr=True)
    except http_error as exc:
        raise SubmissionError(f"{source.label}: the Hub refused the submission ({_http_message(exc, api)}); nothing "
                              f"was recorded") from None
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", ""))


def submit(target: str, benchmark: str, embeddings: str | os.PathLike[str], *, name: str | None = None,
           push: bool = False, hub: str | os.PathLike[str] | None = None, cache: str | os.PathLike[str] | None = None,
           endpoint: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES, out: str | os.PathLike[str] | None = None,
           api: Any = None, now: datetime | None = None) -> SubmitResult:
    """Validate, score and record a submission of ``embeddings`` to ``benchmark`` of ``TARGET[@VERSION]``."""
    from rxcurate.consume.pull import open_source, pull

    if name is not None and (not name.strip() or len(name) > 100 or "\n" in name):
        raise SubmissionError(f"--name {name!r}: give a short one-line name (1-100 characters), e.g. my-encoder-v2")
    source = open_source(target, hub=hub, endpoint=endpoint)
    label = f"{source.label}@{source.version}"
    res = pull(f"{source.label}@{source.version}", ["metadata", "benchmarks"], hub=hub, cache=cache,
               endpoint=endpoint)
    release = res.release
    pb = published_benchmark(res.folder, release, benchmark)
    sub = check_submission(embeddings, release_wells(pb.metadata_path), max_bytes=max_bytes)
    bench = {"id": pb.id, "version": pb.definition["version"], "checksum": pb.checksum}
    data_version = str(release.get("data_version"))
    sid = submission_id(sub.sha256, bench, data_version)
    rel = entry_path(source.version, pb.id, sid)
    messages: list[str] = []
    local_hub = getattr(source, "hub", None)
    existing = _existing_local(local_hub, source.repo_id, rel) if local_hub is not None else _existing_hf(source, rel)
    if existing is not None:
        if out is not None:
            atomic_write_json(out, existing)
        return SubmitResult("unchanged", sid, existing, f"{label} {rel}",
                            [f"already on the leaderboard as {sid} (resubmission: nothing new recorded)"])
    results = score(pb, sub)
    metric, value = rank_metric(results, pb.definition)
    from rxcurate.release import headline

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
    if local_hub is not None:
        commit = local_hub.commit_files(source.repo_id, {rel: data}, f"Leaderboard: {record['name']} on {pb.id} "
                                        f"({source.version})", branch=LEADERBOARD_BRANCH)
        status, location = "recorded", f"{label} branch {LEADERBOARD_BRANCH} commit {commit[:12]}: {rel}"
    elif push:
        status, location = "recorded", _push_hf(source, rel, data, record["name"], api)
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
    return ("Polaris: upload skipped (polaris-lib 0.13 can no longer create benchmarks for new datasets, so there is "
            "no Polaris benchmark to attach results to; the leaderboard entry above is the record)")
