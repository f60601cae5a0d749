"""`rxcurate probe`: pick the encoder block that represents biology best, by linear probes on held-out experiments."""

from __future__ import annotations

from pathlib import Path

import typer

from rxcurate.blockprobe import ProbeConfig, run_probe
from rxcurate.commands.embed import release_folder
from rxcurate.commands.options import WORKDIR
from rxcurate.layout import PROBE_JSON, PROBE_PLOT, PROBE_TABLE, source_hint
from rxcurate.manifest import load_manifest
from rxcurate.source import RELATIONSHIPS, truth_relpath


def register(app: typer.Typer) -> None:
    @app.command("probe")
    def probe(
        manifest: Path = typer.Argument(..., help="Release manifest (YAML) that rxcurate compress ran, or a "
                                        "release folder."),
        encoder: str = typer.Option(..., "--encoder", help="Encoder with transformer blocks: openphenom (needs "
                                    "--weights) or timm:<vit> (needs rxcurate[timm]), e.g. "
                                    "timm:vit_small_patch16_224."),
        blocks: str = typer.Option("all", "--blocks", help="Blocks to probe: all, or 1-based numbers/last, e.g. "
                                   "4,8,12 or 6,last. All are embedded in one forward pass."),
        task: list[str] = typer.Option(["gene-module"], "--task", help="Probe task, repeatable: gene-module "
                                       "(module of gene-knockout wells, modules from --relationships) or perturbation "
                                       "(the siRNA/perturbation of wells in held-out experiments, RxRx1-style)."),
        relationships: Path | None = typer.Option(None, "--relationships", help="entity1,entity2 CSV defining gene "
                                                  "modules for gene-module (CORUM, HuMAP, ... or a synthetic screen's "
                                                  "truth/relationships.csv); default: <source>/truth/relationships.csv "
                                                  "of the manifest's source when it exists."),
        seeds: int = typer.Option(5, "--seeds", help="Splits (seeds 0..N-1): each holds out experiments and "
                                  "subsamples training wells; scores are mean +/- std over them."),
        holdout: float = typer.Option(0.5, "--holdout", help="Share of experiments held out per split (at least "
                                      "one, never all)."),
        workdir: Path | None = WORKDIR,
        weights: Path | None = typer.Option(None, "--weights", help="Local weights file; nothing is downloaded."),
        allow_random_weights: bool = typer.Option(False, "--allow-random-weights", help="Use seeded random weights "
                                                  "when --weights is absent (tests and demos only)."),
        tile: int = typer.Option(256, "--tile", help="Tile side in pixels (as rxcurate embed)."),
        downsample: int = typer.Option(1, "--downsample", min=1, help="Average k x k pixel blocks of each tile "
                                       "before the encoder (as rxcurate embed)."),
        device: str = typer.Option("auto", "--device", help="auto (cuda when available), cpu or cuda."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Tiles per forward pass."),
    ) -> None:
        """Embed the release once with every requested block, train a linear probe per block and task on the wells
        of some experiments, score it (balanced accuracy) on held-out experiments, and write
        probe/<encoder>/probe.parquet (one row per block, task, seed), probe.json (mean +/- std, best block) and
        probe.png (score by block, best marked). The best block has the highest mean score over tasks (ties: the
        earlier block). Rerunning with the same inputs reuses the results."""
        from rxcurate.embed import run_embed  # heavy: imports torch

        folder = release_folder(manifest, workdir)
        if relationships is None and "gene-module" in task:
            relationships = default_relationships(manifest, folder)
        cfg = ProbeConfig(tasks=tuple(task), seeds=seeds, holdout=holdout,
                          relationships=str(relationships) if relationships else None)
        cfg.check()
        paths = run_embed(folder, encoder, blocks=blocks, weights=weights, allow_random=allow_random_weights,
                          tile=tile, device=device, batch_size=batch_size, downsample=downsample)
        names = [p.parent.name for p in paths[1:]]  # blocks, in order (paths[0] is the final output)
        res = run_probe(folder, encoder, names, cfg)
        for e in res.summary:
            parts = [f"{t} {v['mean']:.3f}+/-{v['std']:.3f}" if v["mean"] is not None else f"{t} n/a"
                     for t, v in e["tasks"].items()]
            mark = "  <- best" if e["block"] == res.best_block else ""
            typer.echo(f"{e['block']}  " + "  ".join(parts) + mark)
        typer.echo(f"best block: {res.best_block}{' (up to date)' if res.up_to_date else ''}")
        typer.echo(f"wrote {res.folder}/{PROBE_TABLE}, {PROBE_JSON}, {PROBE_PLOT}")


def default_relationships(manifest: Path, folder: Path) -> Path | None:
    """The source screen's truth/relationships.csv (synthetic screens ship one), when it can be found: the source
    the last select into ``folder`` read, else the manifest's source.root."""
    roots = [Path(r) for r in [source_hint(folder)] if r]
    if manifest.is_file():
        m = load_manifest(manifest)
        if m.source_root is not None:
            roots.append(m.resolve_source(None))
    for root in roots:
        if (root / truth_relpath(RELATIONSHIPS)).is_file():
            return root / truth_relpath(RELATIONSHIPS)
    return None
