"""`rxcurate pull`: fetch a pinned version (or parts of it) into the verified cache, optionally copy it out."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rxcurate.commands.options import HUB, json_errors, json_errors_flag
from rxcurate.consume.pull import pull as run
from rxcurate.publish.targets import resolve_target


def register(app: typer.Typer) -> None:
    @app.command("pull")
    def pull(
        target: str = typer.Argument(..., help="local://ORG/NAME[@VERSION] or hf://ORG/NAME[@VERSION]; VERSION is a "
                                     "semver (1.0.0) or latest (the default)."),
        parts: str = typer.Option("all", "--parts", help="Comma-separated parts: images, metadata, embeddings, "
                                  "embeddings/<name>, benchmarks, card, lockfile, polaris, all."),
        dest: Path | None = typer.Option(None, "--dest", help="Also copy the verified files into this folder (same "
                                  "relative paths)."),
        hub: Path | None = HUB,
        cache: Path | None = typer.Option(None, "--cache", help="Cache folder (default $RXCURATE_CACHE, else "
                                   "~/.cache/rxcurate)."),
        verify: bool = typer.Option(False, "--verify", help="Re-hash every cached file (default: trust files whose "
                                    "size and mtime are unchanged since they were verified)."),
        as_json: bool = json_errors_flag(),
    ) -> None:
        """Fetch only the requested parts of one published version, verify every file's sha256 against that
        version's release.json and cache it by version: a second pull is instant, a corrupted cache file is
        detected and re-fetched. @latest resolves to the newest version tag and says which one.

        Example: rxcurate pull local://rxcurate/rxrx3-core@0.1.0 --parts metadata,embeddings/baseline --dest out/
        """
        with json_errors(as_json):
            pinned = resolve_target(target, hub).version not in (None, "latest")
            res = run(target, parts, dest=dest, hub=hub, cache=cache, verify=verify)
        if not pinned:
            typer.echo(f"{target}: resolved to version {res.version} (the newest published tag v{res.version})",
                       err=True)
        if as_json:
            typer.echo(json.dumps({"ok": True, **res.to_dict()}, sort_keys=True))
            return
        for rel in res.repaired:
            typer.echo(f"repaired corrupted cache file {rel} (re-fetched and verified)", err=True)
        typer.echo(f"{res.target}: {len(res.files)} file(s) verified ({len(res.fetched)} fetched, {len(res.cached)} "
                   f"from cache, {len(res.repaired)} repaired) in {res.folder}")
