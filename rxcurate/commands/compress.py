"""`rxcurate compress`: encode the lockfile's images into versioned Parquet shards."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from rxcurate.commands.options import ADDRESS, ENGINE
from rxcurate.compress import compress as run
from rxcurate.manifest import load_manifest
from rxcurate.progress import log
from rxcurate.runners import make_runner


def register(app: typer.Typer) -> None:
    @app.command("compress")
    def compress(
        manifest: Path = typer.Argument(..., help="Release manifest (YAML) that rxcurate select ran."),
        source: Path = typer.Option(None, "--source", help="Source screen folder; default: the manifest's "
                                    "source.root, else the folder recorded in the lockfile."),
        workdir: Path = typer.Option(None, "--workdir", help="Release folder holding lockfile.parquet; default: "
                                     "the manifest's output.workdir, else build/<name>."),
        workers: int = typer.Option(0, "--workers", min=0, help="Processes encoding images (0 = one per core; "
                                    "with --engine ray: concurrent Ray tasks, 0 = every CPU of the cluster); the "
                                    "output bytes do not depend on it."),
        engine: str = ENGINE,
        address: str | None = ADDRESS,
        force: bool = typer.Option(False, "--force", help="Recompress even when checksums.json says up to date."),
        as_json: bool = typer.Option(False, "--json", help="Print the compression report as JSON."),
    ) -> None:
        """Crop, convert to 8 bits and JPEG 2000-encode the selected images into WORKDIR/data/train-*.parquet.

        Also writes metadata.csv/metadata.parquet, compression_report.json (bytes per image, PSNR and max error on
        a seeded sample) and checksums.json. Resumable: rerun the same command after an interruption; output is
        byte-identical to an uninterrupted run.
        """
        runner = make_runner(engine, address)  # engine and address are checked before any work
        m = load_manifest(manifest)
        t0 = time.perf_counter()
        result = run(m, source=source, workdir=workdir, workers=workers or None, force=force, runner=runner)
        r = result.report
        if as_json:
            typer.echo(json.dumps(r, indent=2, sort_keys=True))
            return
        if not result.up_to_date:
            secs = time.perf_counter() - t0
            log(f"compressed {r['images']:,} images in {secs:.1f} s ({r['images'] / max(secs, 1e-9):,.1f} images/s)")
        b = r["bytes"]
        q = r["quality_sample"]
        typer.echo(f"data version {r['data_version'][:16]}  ({'up to date' if result.up_to_date else 'written'})")
        typer.echo(f"wells        {r['wells']:,}, images {r['images']:,} in {r['shards']} shard(s) under "
                   f"{result.workdir / 'data'}")
        typer.echo(f"bytes        {b['shards_total']:,} total; per image mean {b['per_image']['mean']:,.0f} "
                   f"(min {b['per_image']['min']:,}, max {b['per_image']['max']:,}); ratio "
                   f"{b['compression_ratio']}:1 vs 8-bit")
        if q["psnr_db"]:
            typer.echo(f"quality      {q['images']} sampled images: PSNR mean {q['psnr_db']['mean']} dB (min "
                       f"{q['psnr_db']['min']}), max abs error {q['max_abs_error']['max']}")
        elif q["images"]:
            typer.echo(f"quality      {q['images']} sampled images: all exact (lossless)")
        if r["skipped_wells"]:
            typer.echo(f"skipped      {len(r['skipped_wells'])} well(s), see compression_report.json")
