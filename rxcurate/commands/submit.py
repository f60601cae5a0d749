"""`rxcurate submit`: validate and score well-level embeddings on a release's published benchmark."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from rxcurate.commands.options import HUB, json_errors, json_errors_flag
from rxcurate.consume.submit import DEFAULT_MAX_BYTES
from rxcurate.consume.submit import submit as run


def register(app: typer.Typer) -> None:
    @app.command("submit")
    def submit(
        target: str = typer.Argument(..., help="local://ORG/NAME[@VERSION] or hf://ORG/NAME[@VERSION] (VERSION a "
                                     "semver or latest, the default)."),
        benchmark: str = typer.Option(..., "--benchmark", "-b", help="Benchmark id published in the release, e.g. "
                                      "compound-gene-activity."),
        embeddings: Path = typer.Option(..., "--embeddings", help="Parquet file: well_id + feature_0..feature_{d-1} "
                                        "floats (or one list column of floats), one row per well of the release."),
        name: str | None = typer.Option(None, "--name", help="Name shown on the leaderboard (default: the file's "
                                        "stem)."),
        push: bool = typer.Option(False, "--push", help="hf://: open a pull request adding the result (needs "
                                  "HF_TOKEN); also reports the Polaris upload status."),
        hub: Path | None = HUB,
        cache: Path | None = typer.Option(None, "--cache", help="Cache folder (default $RXCURATE_CACHE, else "
                                   "~/.cache/rxcurate)."),
        out: Path | None = typer.Option(None, "--out", help="Also write the results file (with provenance) here."),
        max_bytes: int = typer.Option(DEFAULT_MAX_BYTES, "--max-bytes", min=1, help="Largest accepted submission "
                                      "file."),
        as_json: bool = json_errors_flag(),
    ) -> None:
        """Validate a submission (schema, exactly the release's wells, one row per well, no NaN/inf, one dimension,
        no identical vectors across wells, size limit; every problem with counts and examples), score it with the
        release's published benchmark definition (its post-processing and seeds, never the submitter's) and record
        the result with provenance under leaderboard/<version>/<benchmark>/<submission id>.json (local hub: one
        commit on its leaderboard branch; hf:// with --push: a pull request). The submission id hashes the file,
        the benchmark and the release, so resubmitting the same file records nothing new. A bad submission exits 2
        and records nothing.

        Example: rxcurate submit local://rxcurate/rxrx3-core@0.1.0 -b compound-gene-activity --embeddings my.parquet
        """
        with json_errors(as_json):
            res = run(target, benchmark, embeddings, name=name, push=push, hub=hub, cache=cache, out=out,
                      max_bytes=max_bytes)
        if as_json:
            typer.echo(json.dumps(res.to_dict(), sort_keys=True))
            return
        rec = res.record
        for m in res.messages:
            print(m, file=sys.stderr)
        metric = rec.get("rank_metric") or {}
        verb = {"recorded": "recorded", "unchanged": "already recorded (resubmission)",
                "scored": "scored, not recorded"}[res.status]
        typer.echo(f"{rec['release']['target']} {rec['benchmark']['id']}: {rec['name']} {verb} as "
                   f"{res.submission_id}; {metric.get('name')} = {metric.get('value')}")
        for k, v in (rec.get("headline") or {}).items():
            typer.echo(f"  {k}: {v}")
