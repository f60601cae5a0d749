"""`rxcurate pull`: fetch a pinned version (or parts of it) into the verified cache, print where it lies (stdout,
alone, like `hf download`), optionally copy it out."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rxcurate.commands.options import HUB, json_errors, json_errors_flag
from rxcurate.consume.pull import pull as run
from rxcurate.publish.hf import DOWNLOAD_WORKERS
from rxcurate.publish.targets import resolve_target


def register(app: typer.Typer) -> None:
    @app.command("pull")
    def pull(
        target: str = typer.Argument(..., help="local://ORG/NAME[@VERSION], hf://ORG/NAME[@VERSION], "
                                     "hf://datasets/ORG/NAME[@REV] or ORG/NAME (= hf://ORG/NAME); VERSION is a "
                                     "semver (1.0.0 or v1.0.0) or latest (the default), REV also a commit id."),
        parts: str = typer.Option("all", "--parts", help="Comma-separated parts: images, metadata, embeddings, "
                                  "embeddings/<name>, benchmarks, card, lockfile, polaris, all."),
        dest: Path | None = typer.Option(None, "--dest", help="Also copy the verified files into this folder (same "
                                  "relative paths); the path printed is then this folder."),
        hub: Path | None = HUB,
        cache: Path | None = typer.Option(None, "--cache", help="rxcurate cache folder (default $RXCURATE_CACHE, else "
                                   "~/.cache/rxcurate): local:// files and the verification records of hf:// pulls."),
        cache_dir: Path | None = typer.Option(None, "--cache-dir", help="hf://: the Hugging Face cache the files are "
                                       "downloaded into (default $HF_HUB_CACHE, else $HF_HOME/hub, else "
                                       "~/.cache/huggingface/hub)."),
        max_workers: int = typer.Option(DOWNLOAD_WORKERS, "--max-workers", min=1, help="hf://: parallel downloads."),
        verify: bool = typer.Option(False, "--verify", help="Re-hash every cached file (default: trust files whose "
                                    "size and mtime are unchanged since they were verified)."),
        as_json: bool = json_errors_flag(),
    ) -> None:
        """Fetch only the requested parts of one published version, verify every file's sha256 against that
        version's release.json and cache it by version (hf://: in the Hugging Face cache, one copy on disk): a
        second pull is instant, a corrupted cache file is detected and re-fetched. @latest resolves to the newest
        version tag and says which one. Prints the folder holding the files on stdout (alone); messages go to
        stderr.

        Example: rxcurate pull local://rxcurate/rxrx3-core@0.1.0 --parts metadata,embeddings/baseline --dest out/
        """
        with json_errors(as_json):
            t = resolve_target(target, hub)
            res = run(target, parts, dest=dest, hub=hub, cache=cache, cache_dir=cache_dir, verify=verify,
                      max_workers=max_workers)
        if t.commit is not None:
            typer.echo(f"{target}: commit {t.commit} is version {res.version} (tag v{res.version})", err=True)
        elif t.version in (None, "latest"):
            typer.echo(f"{target}: resolved to version {res.version} (the newest published tag v{res.version})",
                       err=True)
        if as_json:
            typer.echo(json.dumps({"ok": True, **res.to_dict()}, sort_keys=True))
            return
        for rel in res.repaired:
            typer.echo(f"repaired corrupted cache file {rel} (re-fetched and verified)", err=True)
        typer.echo(f"{res.target}: {len(res.files)} file(s) verified ({len(res.fetched)} fetched, {len(res.cached)} "
                   f"from cache, {len(res.repaired)} repaired)", err=True)
        typer.echo(str(res.folder))
