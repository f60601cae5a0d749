"""`rxcurate synth`: write a synthetic source screen."""

from __future__ import annotations

from pathlib import Path

import typer

from rxcurate.progress import log
from rxcurate.synth import generate


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth(
        out: Path = typer.Option(..., "--out", help="Folder to create (must be absent or empty unless --overwrite)."),
        layout: str = typer.Option("rxrx3", "--layout", help="Screen layout: rxrx3 (16-bit, 1536-well) or rxrx1 "
                                   "(8-bit siRNA screens, 4 cell types, 2 sites per well)."),
        preset: str = typer.Option("tiny", "--preset", help="Size: tiny (seconds, tests), demo (make release), "
                                   "full-metadata (rxrx3 only: ~2.2 M wells of metadata, no images)."),
        seed: int = typer.Option(0, "--seed", help="Random seed; the same seed and preset give identical bytes."),
        workers: int = typer.Option(0, "--workers", help="Processes for rendering images (0 = one per core)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing, non-empty --out folder."),
    ) -> None:
        """Generate a synthetic screen with planted biology in Recursion's on-disk formats.

        Writes OUT/metadata.csv (RxRx3 or RxRx1 columns), OUT/images/<experiment>/Plate<n>/<well>_s<site>_w<ch>.png
        (6 channels) and, for rxrx3, OUT/truth/relationships.csv and OUT/truth/compound_gene_interactions.csv.
        """
        path = generate(out, layout=layout, preset=preset, seed=seed, workers=workers or None, overwrite=overwrite)
        log(f"wrote {layout}/{preset} screen (seed {seed}) to {path}")
