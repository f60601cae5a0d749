"""`rxcurate select`: run a manifest's selection over a source screen and write the lockfile."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rxcurate.commands.options import WORKDIR, json_flag
from rxcurate.manifest import load_manifest


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)


def register(app: typer.Typer) -> None:
    @app.command("select")
    def select(
        manifest: Path = typer.Argument(..., help="Release manifest (YAML), e.g. manifests/rxrx3-core.yaml."),
        source: Path = typer.Option(None, "--source", help="Source screen folder (metadata.csv + images/); default: "
                                    "the manifest's source.root."),
        workdir: Path | None = WORKDIR,
        threads: int = typer.Option(8, "--threads", min=1, help="Threads reading source image headers."),
        as_json: bool = json_flag("the summary"),
    ) -> None:
        """Select wells with the manifest's DuckDB SQL and seeded samplers; write WORKDIR/lockfile.parquet.

        The lockfile lists every selected well (sorted by well_id) with its metadata, source image paths and
        their byte sizes (compress hashes each image once, as it encodes it). Prints wells by perturbation type,
        experiment and concentration, and the projected size.
        With select.filters the selected wells are candidates: they are compressed and embedded in
        WORKDIR/.candidates, scored per perturbation (phenostats.parquet) and only controls plus passing
        perturbations are kept (report: curation.json).
        """
        from rxcurate.pipeline import run_select as run  # heavy: the pipeline loads torch (rxcurate.embed)

        m = load_manifest(manifest)
        s = run(m, source=source, workdir=workdir, threads=threads).summary
        if as_json:
            typer.echo(json.dumps(s, indent=2, sort_keys=True))
            return
        typer.echo(f"manifest    {s['manifest']} {s['version']} ({s['layout']})")
        typer.echo(f"wells       {s['wells']:,} in {len(s['experiments'])} experiments, {s['plates']} plates")
        typer.echo("from        " + ", ".join(f"{k}: {v:,}" for k, v in s["from"].items()))
        for key in ("by_perturbation_type", "controls", "by_concentration_uM", "by_well_type", "by_cell_type"):
            if key in s:
                typer.echo(f"{key.replace('_', ' '):<11} " + ", ".join(f"{k}: {v:,}" for k, v in s[key].items()))
        for key in ("genes", "compounds"):
            if key in s:
                typer.echo(f"{key:<11} {s[key]:,}")
        exps = s["experiments"]
        shown = ", ".join(f"{k}: {v:,}" for k, v in list(exps.items())[:8]) + (", ..." if len(exps) > 8 else "")
        typer.echo(f"experiments {shown}")
        h, w = s["output_image_shape"]
        typer.echo(f"images      {s['images']:,} ({h}x{w} 8-bit, {_fmt_bytes(s['bytes_per_image'])} each)")
        typer.echo(f"projected   {_fmt_bytes(s['projected_bytes'])} ({s['projection']})")
        typer.echo(f"lockfile    {s['lockfile']}")
        if "curation" in s:  # select.filters (rxcurate.curate)
            c = s["curation"]
            typer.echo(f"curated     kept {c['kept_wells']:,} of {c['candidate_wells']:,} candidate wells "
                       f"(phenostats.parquet, curation.json beside the lockfile)")
