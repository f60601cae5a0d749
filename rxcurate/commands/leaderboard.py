"""`rxcurate leaderboard`: the ranked results of a published version's benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rxcurate.commands.options import HUB, json_errors, json_errors_flag
from rxcurate.consume.leaderboard import format_table
from rxcurate.consume.leaderboard import leaderboard as run


def register(app: typer.Typer) -> None:
    @app.command("leaderboard")
    def leaderboard(
        target: str = typer.Argument(..., help="local://ORG/NAME[@VERSION] or hf://ORG/NAME[@VERSION] (VERSION a "
                                     "semver or latest, the default)."),
        benchmark: str | None = typer.Option(None, "--benchmark", "-b", help="Only this benchmark id (default: all)."),
        hub: Path | None = HUB,
        cache: Path | None = typer.Option(None, "--cache", help="Cache folder (default $RXCURATE_CACHE, else "
                                   "~/.cache/rxcurate)."),
        no_release: bool = typer.Option(False, "--no-release", help="Leave out the release's own published results."),
        as_json: bool = json_errors_flag(),
    ) -> None:
        """Print the ranked leaderboard: the release's published results and every accepted submission, per
        benchmark, by its headline metric (higher is better; ties by submission time).

        Example: rxcurate leaderboard local://rxcurate/rxrx3-core@0.1.0 --benchmark compound-gene-activity
        """
        with json_errors(as_json):
            label, rows = run(target, benchmark, hub=hub, cache=cache, include_release=not no_release)
        if as_json:
            typer.echo(json.dumps({"ok": True, "target": label, "rows": [r.to_dict() for r in rows]}, sort_keys=True))
            return
        typer.echo(format_table(label, rows))
