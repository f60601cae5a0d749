"""Synthetic HCS screens in the exact on-disk formats of Recursion's RxRx3 and RxRx1, with planted biology.

``generate(out_dir, layout, preset, seed)`` writes ``metadata.csv``, ``images/`` (6-channel PNGs) and
``truth/`` (RxRx3: gene-gene relationships and compound-gene interactions, in the real benchmark formats).
The same seed and preset give byte-identical files. Output is built in a temporary sibling folder and renamed
into place at the end, so an interrupted run leaves nothing half-written at ``out_dir``.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np

from rxcurate.errors import SynthError
from rxcurate.io import atomic_write_json, atomic_write_text
from rxcurate.progress import progress
from rxcurate.source import SOURCE_METADATA, SYNTH_STAMP, get_layout, truth_relpath
from rxcurate.synth.design import Design, rxrx1_design, rxrx3_design
from rxcurate.synth.presets import RXRX1_PRESETS, RXRX3_PRESETS
from rxcurate.synth.render import render_site

__all__ = ["generate", "make_design", "PRESETS"]

PRESETS: dict[str, dict[str, Any]] = {"rxrx3": RXRX3_PRESETS, "rxrx1": RXRX1_PRESETS}
PNG_LEVEL = 1  # fast zlib level: deterministic, and generation stays IO-light
WELLS_PER_TASK = 16


def make_design(layout: str, preset: str, seed: int) -> Design:
    if layout not in PRESETS:
        raise SynthError(f"unknown layout {layout!r}: use --layout rxrx3 or --layout rxrx1")
    presets = PRESETS[layout]
    if preset not in presets:
        raise SynthError(
            f"unknown preset {preset!r} for layout {layout}: use one of {sorted(presets)} (e.g. --preset tiny)"
        )
    if not isinstance(seed, int) or seed < 0:
        raise SynthError(f"seed must be a non-negative integer (e.g. --seed 0), got {seed!r}")
    p = presets[preset]
    return rxrx3_design(p, seed) if layout == "rxrx3" else rxrx1_design(p, seed)


def _render_rows(args: tuple) -> int:
    """Worker: render and write the images of rows [start, stop) of the design."""
    tmp, layout_name, preset, seed, rows, meta, phen, gain, offset, illum = args
    layout = get_layout(layout_name)
    bits = 16 if layout.image_dtype == "uint16" else 8
    for k, i in enumerate(rows):
        exp, plate, address, site = meta[k]
        rng = np.random.default_rng([seed, 7, int(i)])
        imgs = render_site(phen[k], gain[k], offset[k], illum[k], size=preset.image_size, cells=preset.cells_per_image,
                           sigma=preset.cell_sigma, rng=rng, bits=bits)
        for c in range(6):
            rel = layout.image_relpath(exp, plate, address, int(site), c + 1)
            path = Path(tmp) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(imagecodecs.png_encode(imgs[c], level=PNG_LEVEL))
    return len(rows)


def generate(
    out_dir: str | os.PathLike[str],
    layout: str = "rxrx3",
    preset: str = "tiny",
    seed: int = 0,
    *,
    workers: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic source screen to ``out_dir`` and return its path."""
    out = Path(out_dir)
    design = make_design(layout, preset, seed)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SynthError(f"{out} exists and is not empty: choose another --out or pass --overwrite")
    p = PRESETS[layout][preset]
    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        md = design.metadata
        # float formatting: concentrations as written in RxRx3 (0.0025 ... 10.0), controls empty
        atomic_write_text(tmp / SOURCE_METADATA, md.to_csv(index=False, lineterminator="\n"))
        for name, table in design.truth.items():
            atomic_write_text(tmp / truth_relpath(name), table.to_csv(index=False, lineterminator="\n"))
        if design.phenotype is not None:
            _write_images(tmp, design, p, seed, layout, workers)
        atomic_write_json(tmp / SYNTH_STAMP, {"generator": "rxcurate synth", "layout": layout, "preset": preset,
                                               "seed": seed, "image_size": p.image_size})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _write_images(tmp: Path, design: Design, p, seed: int, layout: str, workers: int | None) -> None:
    lay = get_layout(layout)
    md = design.metadata
    site = md["site"].to_numpy() if "site" in md else np.ones(len(md), dtype=np.int64)
    meta = list(zip(md[lay.experiment_col], md["plate"], md[lay.address_col], site, strict=True))
    assert design.phenotype is not None and design.gain is not None and design.offset is not None \
        and design.illum is not None, "make_design(..., images=True) fills the per-row image parameters"
    tasks = []
    for start in range(0, len(md), WELLS_PER_TASK):
        sl = slice(start, min(start + WELLS_PER_TASK, len(md)))
        tasks.append((str(tmp), layout, p, seed, list(range(sl.start, sl.stop)), meta[sl], design.phenotype[sl],
                      design.gain[sl], design.offset[sl], design.illum[sl]))
    n_workers = workers or min(os.cpu_count() or 1, 8)
    unit = "sites" if layout == "rxrx1" else "wells"
    with progress(len(md), f"synth {layout}/{p.name}", unit) as advance:
        if n_workers <= 1:
            for t in tasks:
                advance(_render_rows(t))
        else:
            with ProcessPoolExecutor(max_workers=n_workers) as pool:
                for n in pool.map(_render_rows, tasks):
                    advance(n)
