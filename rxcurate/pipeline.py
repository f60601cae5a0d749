"""`rxcurate release`: the whole release, incremental and idempotent. The only orchestrator: it runs the stages,
which never call each other.

source (given, or the built-in synthetic screen) -> select -> [curation] -> compress -> embed -> [probe] -> evaluate
-> [curation comparison] -> assemble (release.json, card, Polaris artifacts, changelog) -> publish -> validate.

With ``select.filters``, select writes the candidates' lockfile into ``<workdir>/.candidates``;
:func:`curate_candidates` compresses and embeds the candidates there (the filters' embedding sets) and runs the curate
stage (:mod:`rxcurate.curate`: ``phenostats.parquet``, ``curation.json`` and the curated lockfile in the workdir).
After evaluate the same benchmarks run on the candidates too, giving ``curation_comparison.json`` (before/after,
cited in the card).

Each stage skips itself when its inputs are unchanged (select: selection hash; curate: the candidates' content hash
and its outputs' sha256; compress and embed: their own checkpoints and checksums; evaluate: input sha256 in the
results' provenance; card: rewrites nothing when unchanged; publish: same content is a no-op), so a second run with
nothing changed does no work and publishes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rxcurate.assemble import assemble
from rxcurate.benchmarks import evaluate_files
from rxcurate.benchmarks.runner import headline
from rxcurate.blockprobe import ProbeConfig, ProbeError, run_probe
from rxcurate.compress import compress
from rxcurate.curate import curate, curation_current, filter_embeddings, filter_entry, write_comparison
from rxcurate.embed import EmbedRun, embed, manifest_runs
from rxcurate.encoders import encoder_dirname
from rxcurate.errors import BenchmarkError, PublishError, RxcurateError
from rxcurate.io import sha256_file
from rxcurate.layout import (
    CANDIDATES,
    COMPARISON,
    LOCKFILE,
    METADATA_PARQUET,
    RELEASE_JSON,
    embedding_set_name,
    embeddings_path,
    is_visible,
    read_lockfile,
    results_path,
)
from rxcurate.manifest import Manifest, embed_job, load_manifest
from rxcurate.progress import log
from rxcurate.publish import publish
from rxcurate.publish.local import LocalHub, bump_patch
from rxcurate.publish.targets import resolve_target
from rxcurate.release_inputs import default_embedding_set, repo_id_of
from rxcurate.runners import Runner, make_runner
from rxcurate.select import SelectResult, lockfile_summary, select
from rxcurate.source import RELATIONSHIPS, SOURCE_TRUTH_DIR, SYNTH_STAMP, TRUTH_FILES, truth_relpath
from rxcurate.synth import generate
from rxcurate.validate import validate as run_validate

EMBED_TILE = 256  # tile size of a manifest embeddings entry that names no tile_size


@dataclass
class ReleaseSummary:
    version: str
    data_version: str
    target: str
    commit: str | None
    status: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    validation_ok: bool | None = None


def synthetic_source(layout: str, preset: str, seed: int, root: Path) -> tuple[Path, str]:
    """The built-in synthetic screen, generated once and reused while its synth.json matches."""
    out = root / f"{layout}-{preset}-seed{seed}"
    stamp = out / SYNTH_STAMP
    if stamp.is_file():
        info = json.loads(stamp.read_text())
        if (info.get("layout"), info.get("preset"), info.get("seed")) == (layout, preset, seed):
            return out, "up to date"
    generate(out, layout=layout, preset=preset, seed=seed, overwrite=True)
    return out, "generated"


def _results_current(path: Path, emb: Path, meta: Path) -> bool:
    if not path.is_file():
        return False
    try:
        inputs = json.loads(path.read_text())["provenance"]["inputs"]
        return bool(inputs["embeddings"]["sha256"] == sha256_file(emb)
                    and inputs["metadata"]["sha256"] == sha256_file(meta))
    except (KeyError, TypeError, ValueError):
        return False


def check_version_bump(m: Manifest, target: str, hub: Path | None) -> None:
    """Refuse early (before any work) when ``target`` already holds the manifest's version with a different
    selection or transform: such a change needs a new version. Only local targets are checked here; publishing
    checks every target again."""
    t = resolve_target(target, hub, default_repo_id=repo_id_of(m), reading=False)
    if t.kind != "local" or t.hub is None or not LocalHub(t.hub).exists(t.repo_id):
        return
    lh = LocalHub(t.hub)
    if m.version not in lh.list_versions(t.repo_id):
        return
    try:
        published = json.loads(lh.read_file(t.repo_id, m.version, RELEASE_JSON))
    except (RxcurateError, ValueError):
        return
    if published.get("manifest_hash") not in (None, m.manifest_hash()):
        raise PublishError(
            f"{t.repo_id}@{m.version} is already published with a different selection or transform; published "
            f"versions never change: bump `version:` in {m.path.name} (e.g. {bump_patch(m.version)}) to publish the "
            "change alongside it, or restore the published settings")


def _evaluate(folder: Path, name: str, benchmarks: tuple[str, ...], source: Path, hint: str = ""
              ) -> tuple[dict[str, Any], int]:
    """Evaluate ``benchmarks`` on ``folder``'s embedding set ``name`` (skipping current results): (headlines, count
    evaluated now). ``hint`` is appended to a benchmark's error."""
    results: dict[str, Any] = {}
    evaluated = 0
    meta = folder / METADATA_PARQUET
    emb = embeddings_path(folder, name)
    for bid in benchmarks:
        truth = {k: source / SOURCE_TRUTH_DIR / f for k, f in TRUTH_FILES.get(bid, {}).items()}
        if any(not p.is_file() for p in truth.values()):
            log(f"evaluate: {bid} skipped (no truth file in {source / SOURCE_TRUTH_DIR})")
            continue
        out = results_path(folder, name, bid)
        if not _results_current(out, emb, meta):
            try:
                evaluate_files(bid, emb, meta, truth or None, out)
            except BenchmarkError as exc:
                if not hint:
                    raise
                raise BenchmarkError(f"{bid}: {exc} ({hint.format(bid=bid)})") from None
            evaluated += 1
        results[bid] = headline(json.loads(out.read_text()))
    return results, evaluated


def _probe(m: Any, folder: Path, source: Path, blocks: list[str]) -> str:
    """Run the first embeddings entry's probe over its blocks (rxcurate.blockprobe); the status line."""
    entry = m.embeddings[0]
    spec = entry["probe"]
    rel = source / spec.get("relationships", truth_relpath(RELATIONSHIPS))
    cfg = ProbeConfig(tasks=tuple(spec.get("tasks", ["gene-module"])), seeds=int(spec.get("seeds", 5)),
                      holdout=float(spec.get("holdout", 0.5)), relationships=str(rel))
    if "gene-module" in cfg.tasks and not rel.is_file():
        raise ProbeError(f"{m.path.name}: embeddings[0].probe.relationships: {rel} not found (an entity1,entity2 CSV "
                         "relative to the source root, e.g. relationships: truth/relationships.csv)")
    res = run_probe(folder, str(entry["encoder"]), blocks, cfg)
    return f"best block {res.best_block} of {len(blocks)}" + (" (up to date)" if res.up_to_date else "")


def selection_current(m: Manifest, folder: Path, source: Path) -> bool:
    """The lockfile select writes (with ``select.filters`` the candidates') exists, is intact, and was made from the
    manifest's selection over ``source``."""
    where = folder / CANDIDATES if m.filters else folder
    if not (where / LOCKFILE).is_file():
        return False
    try:
        lock = read_lockfile(where)
    except Exception:  # noqa: BLE001 - any unreadable lockfile means: select again
        return False
    return bool(lock.info.get("selection_hash") == m.selection_hash() and Path(
        str(lock.info.get("source_root", source))).resolve() == source.resolve())


def candidate_embeddings(m: Manifest, folder: Path) -> list[Path]:
    """Embed the candidates of ``<folder>/.candidates`` with each filter's manifest entry (resumable, up-to-date
    aware); the embedding set each filter reads, in filter order."""
    cand = folder / CANDIDATES
    out = []
    for i, spec in enumerate(m.filters):
        entry, _ = filter_entry(m, spec, i)
        paths = embed(cand, EmbedRun(**embed_job(m, entry, EMBED_TILE)))
        out.append(filter_embeddings(m, spec, i, paths))
    return out


def curate_candidates(m: Manifest, folder: Path, source: Path, workers: int | None = None
                      ) -> tuple[dict[str, Any], str]:
    """``select.filters``: compress and embed the candidates select wrote to ``<folder>/.candidates`` (local
    runner), then curate: ``phenostats.parquet``, ``curation.json`` and the curated ``<folder>/lockfile.parquet``.
    Returns the ``curation`` record and a status line ("up to date" when the curated lockfile already matches)."""
    cand = folder / CANDIDATES
    compress(m, source=source, workdir=cand, workers=workers or min(os.cpu_count() or 1, 8))
    embeddings = candidate_embeddings(m, folder)
    record = curation_current(folder, m, read_lockfile(cand, m))
    if record is not None:
        return record, "up to date"
    record = curate(m, folder, source, embeddings)
    return record, f"kept {record['kept_wells']:,} of {record['candidate_wells']:,} candidate wells"


def run_select(m: Manifest, *, source: str | os.PathLike[str] | None = None,
               workdir: str | os.PathLike[str] | None = None, threads: int | None = None) -> SelectResult:
    """``rxcurate select``: the select stage, and with ``select.filters`` the curation too (:func:`curate_candidates`),
    so the workdir's lockfile is the curated one; the summary is that lockfile's."""
    res = select(m, source=source, workdir=workdir, **({} if threads is None else {"threads": threads}))
    if not m.filters:
        return res
    src = m.resolve_source(source)
    folder = m.resolve_workdir(workdir)
    curate_candidates(m, folder, src)
    summary = lockfile_summary(m, src, read_lockfile(folder, m), res.summary["from"])
    return SelectResult(folder / LOCKFILE, summary)


def _compare_curation(m: Manifest, folder: Path, default: str, source: Path, curated: dict[str, Any]) -> str:
    """Evaluate the release benchmarks on the curation candidates too, with the first filter's embedding set (the
    set the statistic used, embedded by :func:`curate_candidates`); write curation_comparison.json."""
    cand = folder / CANDIDATES
    if not (cand / METADATA_PARQUET).is_file():
        return f"no candidates in {cand} (rerun select to rebuild them): {COMPARISON} not written"
    entry, block = filter_entry(m, m.filters[0], 0)
    name = embedding_set_name(str(entry["encoder"])) + (f"/{block}" if block else "")
    before, _ = _evaluate(cand, name, m.benchmarks, source)
    after = curated if name == default else _evaluate(folder, name, m.benchmarks, source)[0]
    wells = {"candidates": read_lockfile(cand).table.num_rows, "curated": read_lockfile(folder).table.num_rows}
    write_comparison(folder, name, before, after, wells)
    return f"{COMPARISON}: {len(before)} benchmark(s), {wells['curated']:,} of {wells['candidates']:,} wells kept"


@contextlib.contextmanager
def engine_session(engine: str, address: str | None) -> Iterator[Runner]:
    """The runner of ``engine`` (:func:`rxcurate.runners.make_runner`) inside its session: nothing for ``local``; for
    ``ray`` one Ray session (connect to ``address``, else start a local Ray) that compress and embed both run in."""
    runner = make_runner(engine, address)
    with runner.session():
        yield runner


@dataclass(frozen=True)
class ReleaseOptions:
    """How :func:`run_release` runs (its keyword arguments, passed on to the stages as one value)."""

    source: Path | None = None
    target: str = "local"
    hub: Path | None = None
    workdir: Path | None = None
    synth_preset: str = "demo"
    seed: int = 0
    workers: int | None = None
    validate: bool = True
    engine: str = "local"
    address: str | None = None


def run_release(
    manifest_path: Path,
    *,
    source: Path | None = None,
    target: str = "local",
    hub: Path | None = None,
    workdir: Path | None = None,
    synth_preset: str = "demo",
    seed: int = 0,
    workers: int | None = None,
    validate: bool = True,
    engine: str = "local",
    address: str | None = None,
) -> ReleaseSummary:
    """The whole release (see the module doc). ``engine`` ``ray`` runs compress and embed as Ray Data pipelines in
    one Ray session, started before compress and shut down after embed (``address``: None = a local Ray, ``auto``,
    HOST:PORT or ray://HOST:10001); same bytes as ``local``. Engine and address are checked before any work."""
    make_runner(engine, address)  # engine and address are checked before any work
    opts = ReleaseOptions(source=source, target=target, hub=hub, workdir=workdir, synth_preset=synth_preset,
                          seed=seed, workers=workers, validate=validate, engine=engine, address=address)
    with contextlib.ExitStack() as ray_scope:
        return _run_release(manifest_path, opts, ray_scope)


def _run_release(manifest_path: Path, opts: ReleaseOptions, ray_scope: contextlib.ExitStack) -> ReleaseSummary:
    m = load_manifest(manifest_path)
    folder = m.resolve_workdir(opts.workdir)
    check_version_bump(m, opts.target, opts.hub)
    source = opts.source
    status: dict[str, str] = {}
    if source is None:
        source, status["source"] = synthetic_source(m.layout, opts.synth_preset, opts.seed,
                                                      Path("build") / "sources")
        log(f"source: synthetic {m.layout}/{opts.synth_preset} seed {opts.seed} at {source} ({status['source']})")
    else:
        status["source"] = "given"

    if selection_current(m, folder, Path(source)):
        status["select"] = "up to date"
    else:
        select(m, source=source, workdir=folder)
        status["select"] = "done"
    log(f"select: {status['select']}")
    if m.filters:
        status["curate"] = curate_candidates(m, folder, Path(source), opts.workers)[1]
        log(f"curate: {status['curate']}")

    # engine ray: one session for compress and embed
    runner = ray_scope.enter_context(engine_session(opts.engine, opts.address))
    res = compress(m, source=source, workdir=folder, runner=runner,
                   workers=opts.workers or (None if opts.engine == "ray" else min(os.cpu_count() or 1, 8)))
    status["compress"] = "up to date" if res.up_to_date else "done"
    log(f"compress: {status['compress']}")

    emb_paths: list[list[Path]] = []
    for run in manifest_runs(manifest_path, EMBED_TILE) if m.embeddings else []:
        emb_paths.append(embed(folder, run, runner))
    status["embed"] = f"{sum(len(p) for p in emb_paths)} embedding set(s)"
    log(f"embed: {status['embed']}")
    ray_scope.close()  # engine ray: the session ends after embed

    if m.embeddings and "probe" in m.embeddings[0]:
        status["probe"] = _probe(m, folder, Path(source), [p.parent.name for p in emb_paths[0][1:]])
        log(f"probe: {status['probe']}")

    results: dict[str, Any] = {}
    evaluated = 0
    if m.embeddings:
        name = default_embedding_set(m, folder) or encoder_dirname(m.embeddings[0]["encoder"])
        hint = ("the release is curated by select.filters, which may keep too few perturbations for {bid}: drop it "
                "from benchmarks, or raise p_below / narrow apply_to") if m.filters else ""
        results, evaluated = _evaluate(folder, name, m.benchmarks, Path(source), hint)
    status["evaluate"] = f"{evaluated} evaluated, {len(results) - evaluated} up to date"
    log(f"evaluate: {status['evaluate']}")
    if m.filters and m.embeddings:
        status["curation"] = _compare_curation(m, folder, name, Path(source), results)
        log(f"curation: {status['curation']}")

    asm = assemble(m, folder)
    status["card"] = asm.status
    log(f"card: {asm.status}")

    pub = publish(folder, opts.target, hub=opts.hub)
    status["publish"] = str(pub.get("status", pub))
    log(f"publish: {status['publish']}")

    summary = ReleaseSummary(version=asm.version, data_version=asm.data_version,
                             target=str(pub.get("target", opts.target)), commit=pub.get("commit"), status=status,
                             results=results)
    summary.sizes = {"files": asm.files,
                     "bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()
                                  and is_visible(p.relative_to(folder).as_posix()))}
    if opts.validate:
        where = summary.target if "://" in summary.target else str(folder)
        report = run_validate(f"{where}@{asm.version}" if "://" in where else where, hub=opts.hub)
        summary.validation_ok = report.ok
        status["validate"] = "passed" if report.ok else f"FAILED: {report.failures[:3]}"
        log(f"validate: {status['validate']}")
    return summary
