"""`rxcurate embed`: precompute per-well embeddings of a release folder's shards."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from rxcurate.commands.options import ADDRESS, ENGINE
from rxcurate.errors import EmbedError
from rxcurate.manifest import load_manifest
from rxcurate.runners import make_runner


def release_folder(manifest: Path, workdir: Path | None) -> Path:
    """The release folder: MANIFEST itself when it is a folder, else what ``rxcurate compress`` uses for the manifest
    (``--workdir``, else its ``output.workdir``, else ``build/<name>``)."""
    if workdir is not None:
        return workdir
    if manifest.is_dir():
        return manifest
    if not manifest.is_file():
        raise EmbedError(f"manifest {manifest} does not exist (give a manifest YAML, e.g. manifests/rxrx3-core.yaml, "
                         "or a release folder / --workdir)")
    return load_manifest(manifest).resolve_workdir(None)


def register(app: typer.Typer) -> None:
    @app.command("embed")
    def embed(
        manifest: Path = typer.Argument(..., help="Release manifest (YAML) that rxcurate compress ran, or a "
                                        "release folder."),
        encoder: str | None = typer.Option(None, "--encoder", help="baseline (weight-free features), openphenom "
                                           "(OpenPhenom CA-MAE ViT-S/16, needs --weights) or timm:<model> (needs "
                                           "rxcurate[timm]). Default: every entry of the manifest's embeddings "
                                           "section (with its weights, blocks, tile_size, keep_tiles)."),
        workdir: Path | None = typer.Option(None, "--workdir", help="Release folder (data/*.parquet + "
                                            "metadata.parquet); default: the manifest's output.workdir, else "
                                            "build/<name>."),
        weights: Path | None = typer.Option(None, "--weights", help="Local weights file (e.g. OpenPhenom's "
                                            "model.safetensors); nothing is downloaded."),
        allow_random_weights: bool = typer.Option(False, "--allow-random-weights", help="Use seeded random weights "
                                                  "when --weights is absent (tests only: meaningless embeddings)."),
        blocks: str | None = typer.Option(None, "--blocks", help="Also write intermediate transformer blocks, "
                                          "e.g. 3,6,last or all (1-based), each to embeddings/<encoder>/blockNN/."),
        device: str = typer.Option("auto", "--device", help="auto (cuda when available), cpu or cuda."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Tiles per forward pass (default: 256 on "
                                              "CUDA, 32 on CPU)."),
        num_workers: int | None = typer.Option(None, "--num-workers", help="DataLoader worker processes decoding "
                                               "JPEG 2000 (default: cores - 1, at most 8; 0 = in-process)."),
        tile: int = typer.Option(256, "--tile", help="Tile side in pixels; each image is cut into a centred grid "
                                 "of tiles (512 -> 4 tiles of 256) whose vectors are averaged per well."),
        downsample: int | None = typer.Option(None, "--downsample", min=1, help="Average k x k pixel blocks of "
                                              "each tile before the encoder (k divides --tile): k^2 times less "
                                              "compute, coarser detail. Default: the manifest entry's, else 1."),
        keep_tiles: bool = typer.Option(False, "--keep-tiles", help="Also write tiles.parquet with one row per tile."),
        strict: bool = typer.Option(False, "--strict", help="Fail (instead of warning) when distinct wells get "
                                    "identical vectors."),
        engine: str = ENGINE,
        address: str | None = ADDRESS,
    ) -> None:
        """Embed every well of a release: decode the JPEG 2000 shards, tile each site, encode the tiles (bf16 on
        CUDA), average per well and write embeddings/<encoder>/embeddings.parquet (well_id, feature_0..) with
        info.json. Resumable per shard: rerun the same command after an interruption."""
        from rxcurate.embed import EmbedRun, embed, manifest_runs  # heavy: imports torch

        runner = make_runner(engine, address)  # engine and address are checked before any work
        if encoder:
            runs = [EmbedRun(encoder, weights=weights, blocks=blocks, tile=tile, keep_tiles=keep_tiles)]
        else:
            runs = manifest_runs(manifest, tile)
        folder = release_folder(manifest, workdir)
        for run in runs:
            run = dataclasses.replace(run, allow_random=run.allow_random or allow_random_weights, device=device,
                                      batch_size=batch_size, num_workers=num_workers, strict=strict,
                                      downsample=run.downsample if downsample is None else downsample)
            for path in embed(folder, run, runner):
                typer.echo(str(path))
