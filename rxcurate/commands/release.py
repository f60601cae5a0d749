"""`rxcurate release`: build, publish and validate a release in one incremental command."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rxcurate.commands.options import ADDRESS, ENGINE, HUB, WORKDIR, json_flag


def register(app: typer.Typer) -> None:
    @app.command("release")
    def release(
        manifest: Path = typer.Argument(Path("manifests/rxrx3-core.yaml"), help="Release manifest (YAML)."),
        source: Path = typer.Option(None, "--source", help="Source screen folder; default: the built-in synthetic "
                                    "screen of the manifest's layout (generated once under build/sources/)."),
        to: str = typer.Option("local", "--to", help="Target: local (default, the local hub), local://ORG/NAME, "
                               "hf://ORG/NAME or polaris://OWNER/NAME."),
        hub: Path | None = HUB,
        workdir: Path | None = WORKDIR,
        preset: str = typer.Option("demo", "--synth-preset", help="Synthetic preset when no --source is given."),
        seed: int = typer.Option(0, "--seed", help="Seed of the synthetic source."),
        workers: int = typer.Option(0, "--workers", min=0, help="Compression processes (0 = one per core; with "
                                    "--engine ray: concurrent Ray tasks, 0 = every CPU of the cluster)."),
        engine: str = ENGINE,
        address: str | None = ADDRESS,
        no_validate: bool = typer.Option(False, "--no-validate", help="Skip validating the published version."),
        as_json: bool = json_flag("the summary"),
    ) -> None:
        """Select, compress, embed, evaluate, write the card, publish and validate — skipping every stage whose
        inputs are unchanged, so a second run with nothing changed does no work and publishes nothing new.
        Changing selection or transform without bumping the manifest's version is refused at publish.
        With --engine ray, compress and embed run on Ray (a local Ray, or --address) with byte-identical output."""
        from rxcurate.pipeline import run_release  # heavy: the pipeline loads torch (rxcurate.embed)

        s = run_release(manifest, source=source, target=to, hub=hub, workdir=workdir, synth_preset=preset,
                        seed=seed, workers=workers or None, validate=not no_validate, engine=engine,
                        address=address)
        if as_json:
            typer.echo(json.dumps(s.__dict__, indent=2, sort_keys=True, default=str))
        else:
            typer.echo(f"release     {s.version}  (data version {s.data_version[:16]})")
            typer.echo(f"published   {s.target}  commit {s.commit}")
            typer.echo(f"size        {s.sizes.get('bytes', 0) / 1e6:,.1f} MB in {s.sizes.get('files')} files")
            for bid, metrics in s.results.items():
                items = list(metrics.items())
                shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in items[:4])
                more = f" (+{len(items) - 4} more in the results file)" if len(items) > 4 else ""
                typer.echo(f"benchmark   {bid}: {shown}{more}")
            typer.echo("stages      " + ", ".join(f"{k}: {v}" for k, v in s.status.items()))
            up = all(v in ("up to date", "given", "passed") or v.startswith("0 evaluated") or v == "unchanged"
                     or "embedding set" in v for v in s.status.values())
            if up:
                typer.echo("up to date")
            hub_flag = f" --hub {hub}" if hub and s.target.startswith("local") else ""
            typer.echo(f"check it    rxcurate validate {s.target}@{s.version}{hub_flag}")
            if "://" in s.target:
                typer.echo(f"pull it     rxcurate pull {s.target}@{s.version}{hub_flag}  (or rxcurate.load(...) in "
                           "Python; see docs/pull.md)")
        if s.validation_ok is False:
            raise typer.Exit(1)
