"""`rxcurate card`: write the dataset card, CHANGELOG.md, Polaris artifacts and release.json of a release folder."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rxcurate.assemble import assemble, previous_from_local
from rxcurate.commands.options import HUB, WORKDIR, json_flag
from rxcurate.layout import CARD, CHANGELOG, POLARIS_DIR, RELEASE_JSON
from rxcurate.manifest import load_manifest
from rxcurate.progress import log
from rxcurate.publish.targets import default_hub
from rxcurate.release_inputs import repo_id_of


def register(app: typer.Typer) -> None:
    @app.command("card")
    def card(
        manifest: Path = typer.Argument(..., help="Release manifest (YAML) whose select/compress/embed/evaluate "
                                        "outputs are in the release folder."),
        workdir: Path | None = WORKDIR,
        truth: list[Path] = typer.Option([], "--truth", help="Truth table a benchmark result was computed with, "
                                         "repeatable; copied to benchmarks/truth/ (found automatically in the source "
                                         "screen's truth/ folder)."),
        hub: Path | None = HUB,
        no_polaris: bool = typer.Option(False, "--no-polaris", help="Do not build the Polaris artifacts of the "
                                        "compound-gene-activity benchmark."),
        as_json: bool = json_flag("release.json's summary"),
    ) -> None:
        """Assemble the release folder for publishing: README.md (card), CHANGELOG.md, polaris/, release.json.

        The card's YAML front matter lists configs (images, metadata, each embedding set) with data_files and split
        sizes; the body is generated from the lockfile, compression report, embeddings and benchmark results, with
        the manifest's card.prose and card.citation as prose blocks. Editing only the prose never changes the data
        version or release.json. Rerunning with nothing changed rewrites nothing. The changelog lists the versions
        of card.repo_id published to --hub.
        """

        m = load_manifest(manifest)
        previous = previous_from_local(default_hub(hub), repo_id_of(m), m.version)
        result = assemble(m, workdir, previous=previous, truth=list(truth), polaris=not no_polaris)
        if as_json:
            r = result.release
            typer.echo(json.dumps({"folder": str(result.folder), "status": result.status, "version": r["version"],
                                   "data_version": r["data_version"], "counts": r["counts"],
                                   "files": result.files, "polaris": result.polaris}, indent=2, sort_keys=True))
            return
        c = result.release["counts"]
        log(f"release folder {result.folder}: card and release.json {result.status}")
        typer.echo(f"version      {result.version} (data version {result.data_version[:16]})")
        typer.echo(f"contents     {c['wells']:,} wells, {c['images']:,} images in {c['shards']} shard(s), "
                   f"{len(c['embeddings'])} embedding set(s), {c['benchmark_results']} benchmark result(s)")
        typer.echo(f"files        {result.files} ({CARD}, {RELEASE_JSON}, {CHANGELOG}"
                   + (f", {POLARIS_DIR}/" if result.polaris else "") + ")")
        typer.echo(f"next         rxcurate publish {manifest} --to local")
