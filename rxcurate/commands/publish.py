"""`rxcurate publish`: validate a release folder and publish it to the local hub, the HF Hub or Polaris."""

from __future__ import annotations

from pathlib import Path

import typer

from rxcurate.commands.options import HUB, WORKDIR, echo_json, json_flag
from rxcurate.errors import PublishError
from rxcurate.manifest import load_manifest
from rxcurate.progress import log
from rxcurate.publish import publish as run


def register(app: typer.Typer) -> None:
    @app.command("publish")
    def publish(
        manifest: Path = typer.Argument(..., help="Release manifest (YAML) whose folder rxcurate card assembled; "
                                        "or the release folder itself."),
        to: str = typer.Option("local", "--to", help="Target: local (the manifest's card.repo_id in the local hub), "
                               "local://ORG/NAME, hf://ORG/NAME or polaris://OWNER/BENCHMARK (results upload)."),
        workdir: Path | None = WORKDIR,
        hub: Path | None = HUB,
        private: bool = typer.Option(False, "--private", help="hf://: create the repository private."),
        full: bool = typer.Option(False, "--full", help="Decode every image in the pre-publish validation (default: "
                                  "a seeded sample)."),
        as_json: bool = json_flag(),
    ) -> None:
        """Publish one immutable version: the whole release is validated locally first (files, counts, card,
        embeddings, benchmark re-runs), then, by target:

        local: one git commit + annotated tag v<version>, made visible atomically. The same content again is a
        no-op; different content under a published version is refused (bump the manifest's version).

        hf: one Hub commit (parent_commit checked), then the tag; the token comes from HF_TOKEN or
        `hf auth login`.

        \b
        polaris://OWNER/BENCHMARK: uploads the release's baseline predictions
        (polaris/predictions.parquet), scored by polaris-lib, as results of that
        Polaris benchmark, e.g.
          polaris://recursion/rxrx-compound-gene-activity-benchmark
        Needs polaris-lib (make install-polaris, then
          .venv-polaris/bin/rxcurate publish ...)
        and credentials (POLARIS_USERNAME/POLARIS_PASSWORD or `polaris login`);
        without them nothing is uploaded and it exits 2. The Polaris Hub no longer
        accepts datasets or benchmarks: those ship in the dataset repository's
        polaris/ folder.
        """
        if workdir is not None:
            folder = workdir
        elif manifest.is_dir():
            folder = manifest
        else:
            if not manifest.is_file():
                raise PublishError(f"manifest {manifest} does not exist (e.g. manifests/rxrx3-core.yaml, or a release "
                                   "folder)")
            folder = load_manifest(manifest).resolve_workdir(None)
        result = run(folder, to, hub=hub, full=full, private=private or None)
        if as_json:
            echo_json(result)
            return
        if "status" in result and result.get("target", "").startswith("polaris://"):
            typer.echo(f"{result['target']}: {result['status']}")
            log(result["message"])
            return
        verb = {"published": "published", "unchanged": "already published (no change)",
                "card-updated": "card updated on main (the version's tag is unchanged)"}[result["status"]]
        typer.echo(f"{result['target']}@{result['version']}: {verb}")
        typer.echo(f"tag          {result['tag']} -> {result['commit']}")
        if result.get("location"):
            typer.echo(f"location     {result['location']}")
        hub_opt = f" --hub {result['hub']}" if result.get("hub") else ""
        typer.echo(f"validate     rxcurate validate {result['target']}@{result['version']}{hub_opt}")
