"""`rxcurate inspect`: validate and summarise a source screen."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rxcurate.commands.options import json_flag
from rxcurate.source import inspect_source


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect(
        source: Path = typer.Argument(..., help="Source screen folder (metadata.csv + images/)."),
        no_images: bool = typer.Option(False, "--no-images", help="Check metadata only, not image files."),
        as_json: bool = json_flag("the report"),
    ) -> None:
        """Check a source screen (columns, addresses, ids, every image present with the right size and bit depth)
        and report counts by perturbation type, experiments, plates and images. Exit 2 on the first problem."""

        report = inspect_source(source, check_images=not no_images)
        if as_json:
            typer.echo(json.dumps(report, indent=2, sort_keys=True))
            return
        typer.echo(f"source      {report['source']}  (layout {report['layout']})")
        typer.echo(f"wells       {report['wells']:,} in {report['experiments']} experiments, {report['plates']} plates")
        for key in ("by_perturbation_type", "controls", "by_well_type"):
            if key in report:
                typer.echo(f"{key.replace('_', ' '):<11} " + ", ".join(f"{k}: {v:,}" for k, v in report[key].items()))
        for key in ("genes", "compounds", "sirnas"):
            if key in report:
                typer.echo(f"{key:<11} {report[key]:,}")
        if "cell_types" in report:
            typer.echo(f"cell types  {', '.join(report['cell_types'])}")
        if "images_missing" in report:
            w, h = report["image_size"]
            typer.echo(f"images      {report['images_expected']:,} present, {w}x{h} {report['image_bits']}-bit")
        typer.echo("ok")
