"""`rxcurate inspect`: validate and summarise a source screen."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rxcurate.commands.options import json_flag
from rxcurate.compress import verify_source_digests
from rxcurate.source import inspect_source


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect(
        source: Path = typer.Argument(..., help="Source screen folder (metadata.csv + images/)."),
        no_images: bool = typer.Option(False, "--no-images", help="Check metadata only, not image files."),
        verify: Path | None = typer.Option(
            None, "--verify", metavar="WORKDIR",
            help="Also read and sha256-hash every source image of the release in WORKDIR and compare with the sizes "
                 "in its lockfile and the source_sha256 compress recorded (image_digests.parquet)."),
        as_json: bool = json_flag("the report"),
    ) -> None:
        """Check a source screen (columns, addresses, ids, every image present with the right size and bit depth)
        and report counts by perturbation type, experiments, plates and images. Exit 2 on the first problem."""

        report = inspect_source(source, check_images=not no_images)
        if verify is not None:
            report["verified"] = verify_source_digests(verify, source)
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
        if "verified" in report:
            v = report["verified"]
            typer.echo(f"verified    {v['images']:,} images of {verify} ({v['hashed_bytes']:,} bytes hashed, "
                       f"{v['digests_compared']:,} against compress's sha256)")
        typer.echo("ok")
