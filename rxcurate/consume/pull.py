"""Pull a pinned version of a published release into a verified, versioned cache; load its parts.

Every file is stored once on disk:

- ``hf://`` targets live in the Hugging Face cache (``cache_dir``, else ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``,
  else ``~/.cache/huggingface/hub``), downloaded by huggingface_hub's ``snapshot_download`` (parallel,
  ``max_workers``; byte progress bars when :func:`rxcurate.progress.enabled`) with ``revision`` the version's tag and
  ``allow_patterns`` the requested files; a pull's folder is the snapshot
  ``CACHE/datasets--<org>--<name>/snapshots/<commit>/``, shared with every other huggingface_hub user
  (``hf_hub_download``, ``datasets``, pandas' ``hf://``). rxcurate keeps only a small verification record (no data)
  in ``$RXCURATE_CACHE/hf/<org>/<name>/<version>/.rxcurate-cache.json``.
- ``local://`` targets live in ``$RXCURATE_CACHE`` (else ``~/.cache/rxcurate``), one folder per target and concrete
  version ``CACHE/local/<org>/<name>/<version>/`` holding the release's files at their repository paths plus
  ``.rxcurate-cache.json``.

The record holds the commit and, per file, the sha256 it was verified against and the size/mtime it had. Every file
is checked against the version's ``release.json`` (sha256 and size; the card by its data hash): a local fetch before
it is moved into place (the cache never holds an unverified file); an HF download right after it lands (a mismatch
is removed from the HF cache again). A second pull trusts a cached file whose size and mtime are unchanged since it
was verified (instant, no download); any other cached file is re-hashed, and a corrupted one is re-fetched (HF:
``force_download`` of that file) and reported. ``verify=True`` re-hashes every cached file.

Parts: ``images`` (``data/*.parquet``), ``metadata``, ``embeddings`` or ``embeddings/<name>``, ``benchmarks``,
``card`` (README.md, CHANGELOG.md), ``lockfile``, ``polaris``, or ``all``. ``release.json`` always comes along.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rxcurate.card import card_data_hash
from rxcurate.consume.wells import Wells
from rxcurate.errors import PullError, RxcurateError
from rxcurate.io import atomic_path, atomic_write_json, sha256_file
from rxcurate.layout import (
    BENCHMARKS_DIR,
    CARD,
    CARD_ASSETS_DIR,
    CHANGELOG,
    DATA_DIR,
    EMBEDDINGS_DIR,
    EMBEDDINGS_FILE,
    LOCKFILE,
    METADATA_CSV,
    METADATA_PARQUET,
    POLARIS_DIR,
    RELEASE_JSON,
    RXRX3_CORE_EMBEDDINGS,
    RXRX3_CORE_METADATA,
    Release,
    parse_release_json,
)
from rxcurate.progress import log, progress
from rxcurate.publish.hf import DOWNLOAD_WORKERS, HfHub
from rxcurate.publish.hub import PinnedVersion, open_version
from rxcurate.publish.targets import Target, parse_revision, relabel, resolve_target

CACHE_RECORD = ".rxcurate-cache.json"
PARTS = ("images", "metadata", "embeddings", "benchmarks", "card", "lockfile", "polaris")
LOAD_PARTS = ("images", "metadata", "embeddings/<name>", "wells")


# --------------------------------------------------------------------------------------------------- sources
def open_source(target: str | Target, *, hub: str | os.PathLike[str] | None = None,
                endpoint: str | None = None, cache_dir: str | os.PathLike[str] | None = None) -> PinnedVersion:
    """Resolve ``TARGET[@VERSION]`` (also ``ORG/NAME`` = ``hf://ORG/NAME``, ``hf://datasets/ORG/NAME@REV``,
    ``@<commit>``) to a concrete published version (``latest`` -> the newest tag); every problem is a
    :class:`PullError`. ``cache_dir``: the Hugging Face cache of an ``hf://`` target."""
    with relabel(PullError):
        t = target if isinstance(target, Target) else resolve_target(target, hub)
        if t.kind == "polaris":
            raise PullError(f"{t}: Polaris artifacts ship inside the dataset repository: pull local://{t.repo_id} or "
                            f"hf://{t.repo_id} with --parts polaris")
        return open_version(t, endpoint=endpoint, cache_dir=cache_dir)


# --------------------------------------------------------------------------------------------------- parts
def cache_root(cache: str | os.PathLike[str] | None = None) -> Path:
    """``cache`` if given, else ``$RXCURATE_CACHE``, else ``~/.cache/rxcurate`` (absolute: a pull prints it)."""
    if cache is not None:
        return Path(os.path.abspath(cache))
    env = os.environ.get("RXCURATE_CACHE")
    return Path(os.path.abspath(env)) if env else Path.home() / ".cache" / "rxcurate"


def as_release(release: Release | Mapping[str, Any]) -> Release:
    return release if isinstance(release, Release) else Release(release)


def embedding_names(release: Release | Mapping[str, Any]) -> list[str]:
    return sorted(str(e.get("name")) for e in as_release(release).embeddings)


def available_parts(release: Release | Mapping[str, Any]) -> list[str]:
    """The parts a version offers (``embeddings/<name>`` per embedding set)."""
    r = as_release(release)
    files = r.files
    out = [p for p in PARTS if p == "card" or part_files(r, p, files)]
    return out + [f"{EMBEDDINGS_DIR}/{n}" for n in embedding_names(r)]


def part_files(release: Release | Mapping[str, Any], part: str, files: Mapping[str, Any] | None = None) -> list[str]:
    """The repository paths a part consists of (``release.json`` not included)."""
    files = as_release(release).files if files is None else files
    if part == "images":
        return sorted(f for f in files if f.startswith(f"{DATA_DIR}/") and f.endswith(".parquet"))
    if part == "metadata":
        return sorted(f for f in files if f in (METADATA_CSV, METADATA_PARQUET, RXRX3_CORE_METADATA))
    if part == "embeddings":
        return sorted(f for f in files if f.startswith(f"{EMBEDDINGS_DIR}/") or f == RXRX3_CORE_EMBEDDINGS)
    if part.startswith(f"{EMBEDDINGS_DIR}/"):
        name = part.split("/", 1)[1].strip("/")
        return sorted(f for f in files if f.startswith(f"{EMBEDDINGS_DIR}/{name}/"))
    if part == "benchmarks":
        return sorted(f for f in files if f.startswith(f"{BENCHMARKS_DIR}/"))
    if part == "card":
        return [CARD] + sorted(f for f in files if f == CHANGELOG or f.startswith(f"{CARD_ASSETS_DIR}/"))
    if part == "lockfile":
        return sorted(f for f in files if f == LOCKFILE)
    if part == "polaris":
        return sorted(f for f in files if f.startswith(f"{POLARIS_DIR}/"))
    return []


def parse_parts(parts: str | Sequence[str] | None) -> list[str]:
    """``"images,metadata"`` / a list / None (= all) -> a de-duplicated list of part names."""
    if parts is None:
        return ["all"]
    items = parts.split(",") if isinstance(parts, str) else list(parts)
    out = [p.strip().strip("/") for p in items if p and p.strip()]
    if not out:
        raise PullError(f"--parts is empty: give a comma-separated list such as images,metadata (parts: "
                        f"{', '.join(PARTS)}, embeddings/<name>, all)")
    return list(dict.fromkeys(out))


def select_files(release: Release, parts: Sequence[str], label: str) -> list[str]:
    """The files of the requested parts; unknown parts raise :class:`PullError` listing what the version has."""
    have = available_parts(release)
    wanted: set[str] = set()
    for p in parts:
        if p == "all":
            for q in PARTS:
                wanted.update(part_files(release, q))
            continue
        names = part_files(release, p)
        if not names:
            raise PullError(f"{label} has no part {p!r}; parts of this version: {', '.join(have)} (or all), e.g. "
                            f"--parts images,metadata")
        wanted.update(names)
    return sorted(wanted)


# --------------------------------------------------------------------------------------------------- cache
@dataclass
class PullResult:
    """Outcome of a pull: where the verified files are, and what was fetched, reused or repaired."""

    target: str  # e.g. local://org/name@1.0.0 (the concrete version)
    version: str
    commit: str
    folder: Path  # the cache folder of this version (hf: the HF cache's snapshot folder), or --dest
    files: list[str]
    fetched: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # corrupted cache files, re-fetched
    release: Release = field(default_factory=lambda: Release({}), repr=False)

    def path(self, rel: str) -> Path:
        return self.folder / rel

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "version": self.version, "commit": self.commit, "folder": str(self.folder),
                "files": self.files, "fetched": self.fetched, "cached": self.cached, "repaired": self.repaired}


def version_cache(root: Path, kind: str, repo_id: str, version: str) -> Path:
    return root / kind / repo_id / version


def _cache_folder(source: PinnedVersion, cache: str | os.PathLike[str] | None) -> Path:
    """The rxcurate cache folder of a version (local: its files and record; hf: its record only), created."""
    root = cache_root(cache)
    folder = version_cache(root, source.target.kind, source.repo_id, source.version)
    try:
        if root.exists() and not root.is_dir():
            raise NotADirectoryError(root)
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PullError(f"cache folder {root} (--cache or $RXCURATE_CACHE) cannot hold the cache "
                        f"({type(exc).__name__}: {exc.strerror or 'not a folder'}): give a folder (created if absent), "
                        f"e.g. --cache {root.parent / 'rxcurate-cache'}") from None
    return folder


def _read_record(folder: Path, commit: str) -> dict[str, Any]:
    try:
        rec = json.loads((folder / CACHE_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(rec, dict) or rec.get("commit") != commit or not isinstance(rec.get("files"), dict):
        return {}  # another commit under this version (never for a published version): trust nothing
    return dict(rec["files"])


def _stamp(path: Path, sha: str) -> dict[str, Any]:
    st = path.stat()
    return {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _expected(release: Release, rel: str) -> tuple[str | None, int | None]:
    spec = release.files.get(rel) or {}
    return spec.get("sha256"), spec.get("size")


def _verify(release: Release, rel: str, path: Path) -> str | None:
    """The file's sha256 if it is the published content, else None."""
    if rel == CARD:
        try:
            ok = card_data_hash(path.read_text(encoding="utf-8")) == release.card.get("data_hash")
        except (RxcurateError, UnicodeDecodeError):
            return None
        return sha256_file(path) if ok else None
    sha, size = _expected(release, rel)
    if sha is None or path.stat().st_size != size:
        return None
    got = sha256_file(path)
    return got if got == sha else None


def _fresh(record: dict[str, Any], release: Release, rel: str, path: Path, verify: bool) -> bool | None:
    """True: the cached file is the published one; False: corrupted; None: not cached."""
    if not path.is_file():
        return None
    rec = record.get(rel)
    sha, _ = _expected(release, rel)
    if not verify and isinstance(rec, dict) and (rec.get("sha256") == sha or rel == CARD):
        st = path.stat()
        if st.st_size == rec.get("size") and st.st_mtime_ns == rec.get("mtime_ns"):
            return True
    return _verify(release, rel, path) is not None


def _fetch(source: PinnedVersion, release: Release, rel: str, dest: Path) -> str:
    """Fetch one file into ``dest`` atomically after verifying it; returns its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        with relabel(PullError):
            source.copy(rel, tmp)
        sha = _verify(release, rel, tmp)
        if sha is None:
            raise PullError(f"{source}: {rel} does not match its sha256 in release.json (corrupt on the server or in "
                            f"transit); nothing was written; retry, and report it to the publisher if it persists")
    return sha


def read_release(source: PinnedVersion) -> Release:
    """The version's ``release.json``; a missing or malformed one is a :class:`PullError`."""
    with relabel(PullError):
        data = source.read(RELEASE_JSON)
    try:
        release = parse_release_json(data, f"{source}/{RELEASE_JSON}")
    except RxcurateError:
        release = None
    if release is None or not isinstance(release.raw.get("files"), dict):
        raise PullError(f"{source}: release.json is missing or malformed; this version was not published by rxcurate "
                        f"(validate it with rxcurate validate)")
    return release


def pull(target: str, parts: str | Sequence[str] | None = None, *, dest: str | os.PathLike[str] | None = None,
         hub: str | os.PathLike[str] | None = None, cache: str | os.PathLike[str] | None = None,
         cache_dir: str | os.PathLike[str] | None = None, endpoint: str | None = None, verify: bool = False,
         max_workers: int = DOWNLOAD_WORKERS) -> PullResult:
    """Fetch the ``parts`` of ``TARGET[@VERSION]`` into the cache (verified against release.json); with ``dest``,
    also copy them there. ``@latest`` (or no version) resolves to the newest published version. ``hf://`` targets
    go to the Hugging Face cache (``cache_dir``; ``max_workers`` parallel downloads), ``local://`` ones to
    ``cache``."""
    names = parse_parts(parts)
    source = open_source(target, hub=hub, endpoint=endpoint, cache_dir=cache_dir)
    label = str(source)
    release = read_release(source)
    wanted = select_files(release, names, label)
    folder = _cache_folder(source, cache)
    record = _read_record(folder, source.commit)
    if isinstance(source.hub, HfHub):
        result = _pull_hf(source, source.hub, release, wanted, record, verify=verify, max_workers=max_workers)
    else:
        result = _pull_local(source, release, wanted, folder, record, verify=verify)
    atomic_write_json(folder / CACHE_RECORD, {"commit": source.commit, "target": label, "files": record})
    if dest is not None:
        result.folder = copy_out(result.folder, Path(os.path.abspath(dest)), result.files)
    return result


def _pull_local(source: PinnedVersion, release: Release, wanted: list[str], folder: Path, record: dict[str, Any], *,
                verify: bool) -> PullResult:
    label = str(source)
    result = PullResult(label, source.version, source.commit, folder, [RELEASE_JSON, *wanted], release=release)
    rel_text = json.dumps(dict(release.raw), sort_keys=True, indent=2) + "\n"
    if not (folder / RELEASE_JSON).is_file() or (folder / RELEASE_JSON).read_text() != rel_text:
        with atomic_path(folder / RELEASE_JSON) as tmp:
            tmp.write_text(rel_text)
    with progress(len(wanted), f"pull {label}", "files") as advance:
        for rel in wanted:
            path = folder / rel
            state = _fresh(record, release, rel, path, verify)
            if state:
                result.cached.append(rel)
                if rel not in record or verify:
                    record[rel] = _stamp(path, sha256_file(path))
            else:
                if state is False:
                    log(f"cache: {path} is corrupted (sha256 differs from release.json): re-fetching it")
                    result.repaired.append(rel)
                record[rel] = _stamp(path, _fetch(source, release, rel, path))
                result.fetched.append(rel)
            advance(1)
    return result


def _pull_hf(source: PinnedVersion, hf: HfHub, release: Release, wanted: list[str], record: dict[str, Any], *,
             verify: bool, max_workers: int) -> PullResult:
    """Download the missing files in one ``snapshot_download`` into the HF cache, then verify every file there."""
    label = str(source)
    folder = hf.snapshot_folder(source.repo_id, source.version)
    have = {rel for rel in wanted if (folder / rel).is_file()}
    if len(have) < len(wanted):
        with relabel(PullError):
            folder = hf.snapshot(source.repo_id, source.version, [RELEASE_JSON, *wanted], max_workers=max_workers)
    result = PullResult(label, source.version, source.commit, folder, [RELEASE_JSON, *wanted], release=release)
    with progress(len(wanted), f"verify {label}", "files") as advance:
        for rel in wanted:
            path = folder / rel
            state = _fresh(record, release, rel, path, verify) if rel in have else None
            if state:
                result.cached.append(rel)
                if rel not in record or verify:
                    record[rel] = _stamp(path, sha256_file(path))
            else:
                (result.repaired if state is False else result.fetched).append(rel)
                record[rel] = _stamp(path, _verified_hf_file(source, hf, release, rel, path, repair=state is False))
                if state is False:
                    result.fetched.append(rel)
            advance(1)
    return result


def _verified_hf_file(source: PinnedVersion, hf: HfHub, release: Release, rel: str, path: Path, *,
                      repair: bool) -> str:
    """The sha256 of ``rel`` in the HF cache once it matches release.json: a corrupted cache file (``repair``) is
    downloaded again (``force_download``); a download that does not match is removed from the cache again."""
    if repair:
        log(f"cache: {path} is corrupted (sha256 differs from release.json): re-fetching it")
        with relabel(PullError):
            path = hf.cached_file(source.repo_id, source.version, rel, force=True)
    elif not path.is_file():
        with relabel(PullError):
            path = hf.cached_file(source.repo_id, source.version, rel)
    sha = _verify(release, rel, path)
    if sha is None:
        _evict(path)
        raise PullError(f"{source}: {rel} does not match its sha256 in release.json (corrupt on the server or in "
                        f"transit); it was removed from the Hugging Face cache; retry, and report it to the publisher "
                        f"if it persists")
    return sha


def _evict(path: Path) -> None:
    """Remove a file of the HF cache: the snapshot link and the blob it points at."""
    blob = Path(os.path.realpath(path))
    for p in (path, blob):
        try:
            p.unlink()
        except OSError:
            pass


def copy_out(folder: Path, dest: Path, files: Iterable[str]) -> Path:
    """Copy verified cache files to ``dest`` (same relative paths); files already equal are left alone."""
    for rel in files:
        src, out = folder / rel, dest / rel
        if out.is_file() and out.stat().st_size == src.stat().st_size and sha256_file(out) == sha256_file(src):
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            shutil.copyfile(src, tmp)
    return dest


# --------------------------------------------------------------------------------------------------- load
def _target_with_version(target: str, version: str | None, hub: str | os.PathLike[str] | None) -> Target:
    with relabel(PullError):
        t = resolve_target(target, hub)
        if version is None:
            return t
        v, commit = parse_revision(str(version))
    pinned = t.version or t.commit
    if pinned is not None and pinned not in (v, commit):
        raise PullError(f"{target}: the target pins @{pinned} but version={version!r} was given; give one of them")
    return replace(t, version=v, commit=commit)


def _shard_path(source: PinnedVersion, release: Release, folder: Path, record: dict[str, Any], rel: str) -> Path:
    """One verified shard on disk (fetched when absent or corrupted)."""
    path = folder / rel
    state = _fresh(record, release, rel, path, False)
    if state:
        return path
    if isinstance(source.hub, HfHub):
        _verified_hf_file(source, source.hub, release, rel, path, repair=state is False)
        return path
    _fetch(source, release, rel, path)
    return path


def _iter_shards(source: PinnedVersion, release: Release, folder: Path, record: dict[str, Any],
                 shards: list[str]) -> Iterator[dict[str, Any]]:
    for rel in shards:
        pf = pq.ParquetFile(_shard_path(source, release, folder, record, rel))
        for batch in pf.iter_batches(batch_size=256):
            yield from batch.to_pylist()


def load(target: str, version: str | None = None, part: str = "images", *, streaming: bool = False,
         hub: str | os.PathLike[str] | None = None, cache: str | os.PathLike[str] | None = None,
         cache_dir: str | os.PathLike[str] | None = None, endpoint: str | None = None) -> Any:
    """Load one part of a published version, reading the pulled files where they lie (``hf://``: the Hugging Face
    cache's snapshot folder; ``local://``: the rxcurate cache): no second copy on disk.

    ``version``: a version (``1.0.0``, ``v1.0.0``, ``latest``) or a commit id, unless ``target`` pins one.

    - ``images``: a ``datasets.Dataset`` (``__key__``, ``jp2`` decoded to uint8 numpy arrays) over the shards read
      into memory (no Arrow cache copy); with ``streaming=True`` a ``datasets.IterableDataset`` that fetches (and
      verifies) one shard at a time and reads it from disk;
    - ``metadata``: a pandas DataFrame of ``metadata.parquet``;
    - ``embeddings/<name>`` (or ``embeddings`` when the version has a single set): a pandas DataFrame;
    - ``wells``: a :class:`rxcurate.consume.wells.Wells` over the pulled images and metadata, yielding
      ``(array[6, H, W] uint8, metadata row)`` per well (``.torch()``: a torch ``IterableDataset``).
    """
    full = str(_target_with_version(target, version, hub))
    p = part.strip().strip("/")
    kw: dict[str, Any] = {"hub": hub, "cache": cache, "cache_dir": cache_dir, "endpoint": endpoint}
    if p == "images":
        if streaming:
            return _stream_images(full, **kw)
        res = pull(full, ["images"], **kw)
        return _images_dataset([res.path(f) for f in part_files(res.release, "images")])
    if p == "wells":
        return Wells(pull(full, ["images", "metadata"], **kw).folder)
    if p == "metadata":
        res = pull(full, ["metadata"], **kw)
        return pd.read_parquet(res.path(METADATA_PARQUET))
    if p == "embeddings" or p.startswith(f"{EMBEDDINGS_DIR}/"):
        if p == "embeddings":
            names = embedding_names(read_release(open_source(full, hub=hub, endpoint=endpoint, cache_dir=cache_dir)))
            if len(names) != 1:
                raise PullError(f"{full}: part 'embeddings' is ambiguous; name the set: "
                                f"{', '.join(f'embeddings/{n}' for n in names) or 'none published'}")
            p = f"{EMBEDDINGS_DIR}/{names[0]}"
        res = pull(full, [p], **kw)
        files = [f for f in res.files if f.startswith(f"{p}/") and f.endswith(f"/{EMBEDDINGS_FILE}")]
        if len(files) != 1:
            raise PullError(f"{res.target}: {p} holds {len(files)} embedding tables; name one set, e.g. "
                            f"{', '.join(f'embeddings/{n}' for n in embedding_names(res.release))}")
        return pd.read_parquet(res.path(files[0]))
    raise PullError(f"rxcurate.load: part {part!r} cannot be loaded; use one of {', '.join(LOAD_PARTS)} (pull other "
                    f"parts with rxcurate pull --parts)")


IN_MEMORY_BYTES = 4 << 30  # image shards up to this size load into memory; larger ones through datasets' Arrow cache


def _images_dataset(files: Sequence[Path]) -> Any:
    """A ``datasets.Dataset`` over the image shards as they lie on disk, features (``jp2``: Image) from the shards'
    schema: read into memory when they total at most ``$RXCURATE_LOAD_IN_MEMORY_BYTES`` (default 4 GiB), so no
    second copy is written; larger releases go through ``Dataset.from_parquet`` (a memory-mapped Arrow copy in
    datasets' cache: disk instead of RAM; ``streaming=True`` or the ``wells`` part avoid both)."""
    import datasets  # heavy: only when loading images

    if not files:
        raise PullError("this version has no image shards (data/*.parquet)")
    limit = int(os.environ.get("RXCURATE_LOAD_IN_MEMORY_BYTES", IN_MEMORY_BYTES))
    total = sum(Path(f).stat().st_size for f in files)
    if total > limit:
        log(f"image shards total {total / 1e9:.1f} GB > {limit / 1e9:.1f} GB: loading through datasets' Arrow cache "
            "(a memory-mapped copy on disk); use streaming=True or the 'wells' part to avoid it")
        return datasets.Dataset.from_parquet([str(f) for f in files]).with_format("numpy")
    table = pa.concat_tables([pq.read_table(f) for f in files])
    features = datasets.Features.from_arrow_schema(table.schema)
    ds = datasets.Dataset(table, info=datasets.DatasetInfo(features=features))
    return ds.with_format("numpy")


def _stream_images(target: str, *, hub: str | os.PathLike[str] | None, cache: str | os.PathLike[str] | None,
                   cache_dir: str | os.PathLike[str] | None, endpoint: str | None) -> Any:
    import datasets  # heavy: only when streaming images

    source = open_source(target, hub=hub, endpoint=endpoint, cache_dir=cache_dir)
    release = read_release(source)
    shards = part_files(release, "images")
    if not shards:
        raise PullError(f"{source} has no image shards (data/*.parquet)")
    rx_folder = _cache_folder(source, cache)
    record = _read_record(rx_folder, source.commit)
    folder = source.hub.snapshot_folder(source.repo_id, source.version) if isinstance(source.hub, HfHub) else rx_folder
    features = datasets.Features({"__key__": datasets.Value("string"), "jp2": datasets.Image()})

    def gen(shards: list[str]) -> Iterator[dict[str, Any]]:
        yield from _iter_shards(source, release, folder, record, shards)

    ds = datasets.IterableDataset.from_generator(gen, features=features, gen_kwargs={"shards": shards})
    return ds.with_format("numpy")
