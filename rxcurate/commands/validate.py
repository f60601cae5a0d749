"""`rxcurate validate`: re-fetch a published version and check files, counts, card, embeddings and benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from rxcurate.commands.options import HUB, echo_json, json_flag
from rxcurate.io import atomic_write_json
from rxcurate.validate import DEFAULT_SAMPLE
from rxcurate.validate import validate as run


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate(
        target: str = typer.Argument(..., help="local://ORG/NAME[@VERSION], hf://ORG/NAME[@VERSION] (VERSION a "
                                     "semver or latest, the default), or a release folder."),
        full: bool = typer.Option(False, "--full", help="Decode every image and load the Polaris artifacts with "
                                  "polaris-lib (default: a seeded sample of images)."),
        sample: int = typer.Option(DEFAULT_SAMPLE, "--sample", min=1, help="Images decoded without --full."),
        seed: int = typer.Option(0, "--seed", min=0, help="Seed of the image sample."),
        hub: Path | None = HUB,
        no_rerun: bool = typer.Option(False, "--no-rerun", help="Skip re-running the published benchmarks."),
        keep: Path | None = typer.Option(None, "--keep", help="Download/check out into this new folder and keep it "
                                  "(default: a temporary folder, removed afterwards)."),
        report: Path | None = typer.Option(None, "--report", help="Also write the JSON report to this file."),
        as_json: bool = json_flag("the report"),
    ) -> None:
        """Validate a published version in a fresh folder. Checks sha256 and size of every file against
        release.json; card, manifest, benchmark and results schemas; row counts against the lockfile; __key__
        unique and one-to-one with metadata wells x channels; images decode to the declared shape and dtype;
        embeddings one row per well, finite, declared dimension, no identical vectors; then re-runs every published
        benchmark and compares within its tolerance. Exit 0 only when all pass (1 when a check fails); every
        failure names its file.
        """
        rep = run(target, hub=hub, full=full, sample=sample, seed=seed, rerun=not no_rerun, keep=keep)
        doc = rep.to_dict()
        if report is not None:
            atomic_write_json(report, doc)
        if as_json:
            echo_json(doc)
        else:
            where = f"{rep.target}" + (f" (commit {rep.commit[:12]})" if rep.commit else "")
            for f in rep.failures:
                print(f"FAIL {f.check:<11} {f.message}", file=sys.stderr)
            status = "valid" if rep.ok else f"INVALID: {len(rep.failures)} failure(s)"
            typer.echo(f"{where}: {status} ({len(rep.findings)} checks" + (", full" if full else "") + ")")
        if not rep.ok:
            raise typer.Exit(1)
