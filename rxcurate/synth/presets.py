"""Synthetic screen presets: sizes of the design and of the images."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rxrx3Preset:
    name: str
    n_known_genes: int
    n_blinded_genes: int
    n_modules: int
    module_size: tuple[int, int]  # inclusive range of genes per module
    guides_per_gene: int
    gene_experiments: int
    gene_replicates: int  # copies of every guide within one experiment
    n_compounds: int
    compound_experiments: int
    compound_replicates: int
    wells_per_plate: int  # plate capacity used (<= 1536), controls included
    empty_controls_per_plate: int
    crispr_controls_per_plate: int
    image_size: int | None  # None: metadata only
    cells_per_image: int = 60
    cell_sigma: float = 3.0


@dataclass(frozen=True)
class Rxrx1Preset:
    name: str
    experiments_per_cell_type: int
    n_sirnas: int
    n_positive_controls: int
    negative_controls_per_plate: int
    plates_per_experiment: int
    image_size: int
    cells_per_image: int = 40
    cell_sigma: float = 3.0


RXRX3_PRESETS = {
    # Seconds to generate; for tests. 96x96 images (crop 64 in test manifests).
    "tiny": Rxrx3Preset(
        name="tiny", n_known_genes=24, n_blinded_genes=4, n_modules=5, module_size=(3, 4), guides_per_gene=2,
        gene_experiments=1, gene_replicates=2, n_compounds=8, compound_experiments=1, compound_replicates=2,
        wells_per_plate=80, empty_controls_per_plate=6, crispr_controls_per_plate=4, image_size=96,
        cells_per_image=45, cell_sigma=2.5,
    ),
    # tiny, with gene knockouts spread over 3 experiments and modules spanning them: for probes that hold out
    # whole experiments (rxcurate probe, gene-module task).
    "tiny-modules": Rxrx3Preset(
        name="tiny-modules", n_known_genes=36, n_blinded_genes=4, n_modules=6, module_size=(5, 6), guides_per_gene=2,
        gene_experiments=3, gene_replicates=2, n_compounds=8, compound_experiments=1, compound_replicates=2,
        wells_per_plate=80, empty_controls_per_plate=6, crispr_controls_per_plate=4, image_size=96,
        cells_per_image=45, cell_sigma=2.5,
    ),
    # What `make release` uses: 544x544 images so the default 512 centre crop applies.
    "demo": Rxrx3Preset(
        name="demo", n_known_genes=72, n_blinded_genes=12, n_modules=14, module_size=(3, 5), guides_per_gene=2,
        gene_experiments=2, gene_replicates=2, n_compounds=24, compound_experiments=1, compound_replicates=2,
        wells_per_plate=120, empty_controls_per_plate=12, crispr_controls_per_plate=8, image_size=544,
        cells_per_image=160, cell_sigma=7.0,
    ),
    # RxRx3-scale metadata only (~2.2 M wells, ~180 experiments): for selection benchmarks.
    "full-metadata": Rxrx3Preset(
        name="full-metadata", n_known_genes=735, n_blinded_genes=16328, n_modules=120, module_size=(3, 8),
        guides_per_gene=6, gene_experiments=175, gene_replicates=20, n_compounds=1674, compound_experiments=6,
        compound_replicates=2, wells_per_plate=1380, empty_controls_per_plate=48, crispr_controls_per_plate=32,
        image_size=None,
    ),
}

RXRX1_PRESETS = {
    "tiny": Rxrx1Preset(
        name="tiny", experiments_per_cell_type=2, n_sirnas=10, n_positive_controls=2, negative_controls_per_plate=2,
        plates_per_experiment=1, image_size=64, cells_per_image=30, cell_sigma=2.0,
    ),
    "demo": Rxrx1Preset(
        name="demo", experiments_per_cell_type=3, n_sirnas=40, n_positive_controls=4, negative_controls_per_plate=4,
        plates_per_experiment=2, image_size=512, cells_per_image=120, cell_sigma=6.0,
    ),
}
