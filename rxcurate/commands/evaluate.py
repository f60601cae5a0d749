"""`rxcurate evaluate`: score embeddings (or a perturbation-level map) with a benchmark definition."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from rxcurate.benchmarks import evaluate_files, list_definitions, load_definition
from rxcurate.errors import BenchmarkError
from rxcurate.progress import log


def parse_truth(values: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` or ``PATH`` (named by the file stem) -> {name: path}."""
    out: dict[str, Path] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if sep and name and "/" not in name and not Path(v).exists():
            key, p = name.strip(), Path(path)
        else:
            key, p = Path(v).stem, Path(v)
        if key in out:
            raise BenchmarkError(f"--truth source {key!r} given twice: name them, e.g. --truth {key}_2=PATH")
        out[key] = p
    return out


def list_line(defn: dict[str, Any]) -> str:
    """One ``--list`` line: id, version, title, protocol and whether comparable with the published figures."""
    proto = defn.get("protocol") or {}
    comparable = "comparable with published figures" if proto.get("comparable") else "not comparable with " \
        "published figures (docs/comparing.md)"
    return f"{defn['id']}\t{defn['version']}\t{defn['title']}\tprotocol: {proto.get('name', 'unspecified')}; " \
        f"{comparable}"


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate(
        benchmark: str | None = typer.Option(None, "--benchmark", "-b", help="Benchmark id (see --list, e.g. "
                                             "gene-gene-recall) or a definition JSON file."),
        embeddings: Path | None = typer.Option(None, "--embeddings", help="Well-level embeddings (Parquet/CSV): "
                                               "well_id, feature_0..feature_{d-1}, e.g. "
                                               "build/release/embeddings/baseline/embeddings.parquet."),
        metadata: Path | None = typer.Option(None, "--metadata", help="Metadata of the same wells (CSV/Parquet; "
                                             "RxRx3 or RxRx1 layout; per-site rows are collapsed to wells)."),
        map_path: Path | None = typer.Option(None, "--map", help="Score an already post-processed perturbation-"
                                             "level map instead (perturbation, concentration for compounds, "
                                             "features); no post-processing. For gene-gene-recall and "
                                             "compound-gene-activity."),
        truth: list[str] = typer.Option([], "--truth", help="Truth file, repeatable: NAME=PATH or PATH (named by "
                                        "its stem), e.g. --truth CORUM=annotations/CORUM.txt or --truth "
                                        "truth/compound_gene_interactions.csv."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Write the results JSON here (atomically); "
                                        "default: print it to stdout."),
        list_: bool = typer.Option(False, "--list", help="List the shipped benchmark definitions (id, version, "
                                   "title, the protocol each follows and whether its numbers are comparable with "
                                   "the published figures) and exit."),
    ) -> None:
        """Evaluate embeddings with a benchmark and write schema-valid results JSON with full provenance.

        Post-processing (batch correction on control wells), aggregation to perturbations and scoring follow the
        benchmark definition; identical inputs give identical JSON. Examples:

        \b
          rxcurate evaluate -b gene-gene-recall --embeddings E.parquet --metadata metadata.csv \\
              --truth truth/relationships.csv -o results/gene-gene-recall.json
          rxcurate evaluate -b compound-gene-activity --map map.parquet \\
              --truth compound_gene_interactions.csv
        """
        if list_:
            for bid in list_definitions():
                typer.echo(list_line(load_definition(bid)))
            return
        if benchmark is None:
            raise BenchmarkError("--benchmark is required (e.g. --benchmark gene-gene-recall; --list shows all)")
        results = evaluate_files(benchmark, embeddings, metadata, parse_truth(truth) or None, out, map_path=map_path)
        if out is None:
            typer.echo(json.dumps(results, sort_keys=True, indent=2))
        else:
            log(f"wrote {out} ({results['benchmark']['id']} {results['benchmark']['version']})")
