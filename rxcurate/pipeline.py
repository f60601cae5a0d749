"""`rxcurate release`: the whole release, incremental and idempotent.

source (given, or the built-in synthetic screen) -> select -> compress -> embed -> evaluate -> card -> publish ->
validate. With ``select.filters`` the select stage also curates (:mod:`rxcurate.phenostats`: candidates compressed and
embedded in ``<workdir>/.candidates``), and after evaluate the same benchmarks run on the candidates too, giving
``curation_comparison.json`` (before/after, cited in the card).

Each stage skips itself when its inputs are unchanged (select: selection hash; compress and embed: their own
checkpoints and checksums; evaluate: input sha256 in the results' provenance; card: rewrites nothing when
unchanged; publish: same content is a no-op), so a second run with nothing changed does no work and publishes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rxcurate.errors import BenchmarkError, CompressError, PublishError, RxcurateError
from rxcurate.io import sha256_file
from rxcurate.progress import log

TRUTH_FILES = {
    "gene-gene-recall": {"relationships": "relationships.csv"},
    "compound-gene-activity": {"compound_gene_interactions": "compound_gene_interactions.csv"},
}


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
    from rxcurate.synth import generate

    out = root / f"{layout}-{preset}-seed{seed}"
    stamp = out / "synth.json"
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
        return (inputs["embeddings"]["sha256"] == sha256_file(emb)
                and inputs["metadata"]["sha256"] == sha256_file(meta))
    except (KeyError, TypeError, ValueError):
        return False


def check_version_bump(m: Any, target: str, hub: Path | None) -> None:
    """Refuse early (before any work) when ``target`` already holds the manifest's version with a different
    selection or transform: such a change needs a new version. Only local targets are checked here; publishing
    checks every target again."""
    from rxcurate.publish.local import LocalHub, bump_patch
    from rxcurate.publish.targets import resolve_target
    from rxcurate.release import repo_id_of

    t = resolve_target(target, hub, default_repo_id=repo_id_of(m))
    if t.kind != "local" or not LocalHub(t.hub).exists(t.repo_id):
        return
    lh = LocalHub(t.hub)
    if m.version not in lh.list_versions(t.repo_id):
        return
    try:
        published = json.loads(lh.read_file(t.repo_id, m.version, "release.json"))
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
    from rxcurate.benchmarks import evaluate_files
    from rxcurate.benchmarks.runner import headline

    results: dict[str, Any] = {}
    evaluated = 0
    meta = folder / "metadata.parquet"
    emb = folder / "embeddings" / name / "embeddings.parquet"
    for bid in benchmarks:
        truth = {k: source / "truth" / f for k, f in TRUTH_FILES.get(bid, {}).items()}
        if any(not p.is_file() for p in truth.values()):
            log(f"evaluate: {bid} skipped (no truth file in {source / 'truth'})")
            continue
        out = folder / "benchmarks" / "results" / name / f"{bid}.json"
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
    from rxcurate.blockprobe import ProbeConfig, ProbeError, run_probe

    entry = m.embeddings[0]
    spec = entry["probe"]
    rel = source / spec.get("relationships", "truth/relationships.csv")
    cfg = ProbeConfig(tasks=tuple(spec.get("tasks", ["gene-module"])), seeds=int(spec.get("seeds", 5)),
                      holdout=float(spec.get("holdout", 0.5)), relationships=str(rel))
    if "gene-module" in cfg.tasks and not rel.is_file():
        raise ProbeError(f"{m.path.name}: embeddings[0].probe.relationships: {rel} not found (an entity1,entity2 CSV "
                         "relative to the source root, e.g. relationships: truth/relationships.csv)")
    res = run_probe(folder, str(entry["encoder"]), blocks, cfg)
    return f"best block {res.best_block} of {len(blocks)}" + (" (up to date)" if res.up_to_date else "")


def _compare_curation(m: Any, folder: Path, default: str, source: Path, curated: dict[str, Any]) -> str:
    """Evaluate the release benchmarks on the curation candidates too, with the first filter's embedding set (the
    set the statistic used); write curation_comparison.json."""
    from rxcurate.embed import run_embed
    from rxcurate.manifest import embedding_set_name, filter_embedding_entry
    from rxcurate.phenostats import CANDIDATES, COMPARISON, embed_job, write_comparison
    from rxcurate.select import read_lockfile

    cand = folder / CANDIDATES
    if not (cand / "metadata.parquet").is_file():
        return f"no candidates in {cand} (rerun select to rebuild them): {COMPARISON} not written"
    entry, block = filter_embedding_entry(m.embeddings, m.filters[0].embeddings) or (m.embeddings[0], None)
    name = embedding_set_name(str(entry["encoder"])) + (f"/{block}" if block else "")
    run_embed(cand, **embed_job(m, entry), device="auto")  # up to date: the filter embedded the candidates
    before, _ = _evaluate(cand, name, m.benchmarks, source)
    after = curated if name == default else _evaluate(folder, name, m.benchmarks, source)[0]
    wells = {"candidates": read_lockfile(cand).table.num_rows, "curated": read_lockfile(folder).table.num_rows}
    write_comparison(folder, name, before, after, wells)
    return f"{COMPARISON}: {len(before)} benchmark(s), {wells['curated']:,} of {wells['candidates']:,} wells kept"


@contextlib.contextmanager
def engine_session(engine: str, address: str | None) -> Iterator[None]:
    """Nothing for the local engine; for ``ray``, one Ray session (connect to ``address``, else start a local Ray)
    that compress and embed both run in (their own sessions reuse it)."""
    if engine != "ray":
        yield
        return
    from rxcurate.ray_engine import ray_session

    with ray_session(address, CompressError):
        yield


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
    if engine not in ("local", "ray"):
        raise CompressError(f"--engine: bad value {engine!r}; valid: local, ray")
    if engine == "ray":
        from rxcurate.ray_engine import check_ray

        check_ray(address, CompressError)
    with contextlib.ExitStack() as ray_scope:
        return _run_release(manifest_path, source=source, target=target, hub=hub, workdir=workdir,
                            synth_preset=synth_preset, seed=seed, workers=workers, validate=validate, engine=engine,
                            address=address, ray_scope=ray_scope)


def _run_release(
    manifest_path: Path,
    *,
    source: Path | None,
    target: str,
    hub: Path | None,
    workdir: Path | None,
    synth_preset: str,
    seed: int,
    workers: int | None,
    validate: bool,
    engine: str,
    address: str | None,
    ray_scope: contextlib.ExitStack,
) -> ReleaseSummary:
    from rxcurate.commands.embed import manifest_jobs
    from rxcurate.compress import compress
    from rxcurate.embed import run_embed
    from rxcurate.encoders import encoder_dirname
    from rxcurate.manifest import load_manifest
    from rxcurate.publish import publish
    from rxcurate.release import assemble, default_embedding_set
    from rxcurate.select import read_lockfile, select

    m = load_manifest(manifest_path)
    folder = m.resolve_workdir(workdir)
    check_version_bump(m, target, hub)
    status: dict[str, str] = {}
    if source is None:
        source, status["source"] = synthetic_source(m.layout, synth_preset, seed, Path("build") / "sources")
        log(f"source: synthetic {m.layout}/{synth_preset} seed {seed} at {source} ({status['source']})")
    else:
        status["source"] = "given"

    lock_ok = False
    if (folder / "lockfile.parquet").is_file():
        try:
            lock = read_lockfile(folder)
            lock_ok = lock.info.get("selection_hash") == m.selection_hash() and Path(
                str(lock.info.get("source_root", source))).resolve() == Path(source).resolve()
        except Exception:  # noqa: BLE001 - any unreadable lockfile means: select again
            lock_ok = False
    if lock_ok:
        status["select"] = "up to date"
    else:
        select(m, source=source, workdir=folder)
        status["select"] = "done"
    log(f"select: {status['select']}")

    ray_scope.enter_context(engine_session(engine, address))  # engine ray: one session for compress and embed
    res = compress(m, source=source, workdir=folder, engine=engine, address=address,
                   workers=workers or (None if engine == "ray" else min(os.cpu_count() or 1, 8)))
    status["compress"] = "up to date" if res.up_to_date else "done"
    log(f"compress: {status['compress']}")

    emb_paths: list[list[Path]] = []
    for job in manifest_jobs(manifest_path, 256) if m.embeddings else []:
        emb_paths.append(run_embed(folder, **job, device="auto", engine=engine, address=address))
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

    pub = publish(folder, target, hub=hub)
    status["publish"] = str(pub.get("status", pub))
    log(f"publish: {status['publish']}")

    summary = ReleaseSummary(version=asm.version, data_version=asm.data_version,
                             target=str(pub.get("target", target)), commit=pub.get("commit"), status=status,
                             results=results)
    summary.sizes = {"files": asm.files,
                     "bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()
                                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))}
    if validate:
        from rxcurate.validate import validate as run_validate

        where = summary.target if "://" in summary.target else str(folder)
        report = run_validate(f"{where}@{asm.version}" if "://" in where else where, hub=hub)
        summary.validation_ok = report.ok
        status["validate"] = "passed" if report.ok else f"FAILED: {report.failures[:3]}"
        log(f"validate: {status['validate']}")
    return summary
