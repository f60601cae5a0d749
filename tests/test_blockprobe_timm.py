"""The block probe on a timm ViT (random weights): a real forward pass through every block of
``vit_tiny_patch16_224`` on a tiny synthetic screen, the table and PNG written, a deterministic choice that follows
the per-block scores.

timm needs a torchvision build matching torch; the project's CPU torch has none on PyPI, so this test runs in
``.venv-timm`` (`make test-timm`: torch 2.14.1 + torchvision 0.29.1 + timm beside the main environment), which
`make test` (and CI) run after the main suite. Elsewhere it skips.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("torchvision", reason="timm needs torchvision: run `make test-timm`", exc_type=ImportError)
timm = pytest.importorskip("timm", reason="timm is not installed: run `make test-timm`")

from rxcurate.cli import app  # noqa: E402

TESTS = Path(__file__).resolve().parent
MODEL = "timm:vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory) -> tuple[Path, Path, Path]:
    from rxcurate.compress import compress
    from rxcurate.manifest import load_manifest
    from rxcurate.select import select
    from rxcurate.synth import generate

    base = tmp_path_factory.mktemp("timm-probe")
    source = generate(base / "src", layout="rxrx3", preset="tiny-modules", seed=0)
    manifest = base / "m.yaml"
    shutil.copy(TESTS / "data" / "manifests" / "tiny-rxrx3.yaml", manifest)
    m = load_manifest(manifest)
    select(m, source=source, workdir=base / "rel")
    compress(m, source=source, workdir=base / "rel", workers=1)
    return manifest, base / "rel", source / "truth" / "relationships.csv"


def _probe(manifest: Path, folder: Path, rel: Path):
    return CliRunner().invoke(app, ["probe", str(manifest), "--workdir", str(folder), "--encoder", MODEL,
                                    "--allow-random-weights", "--tile", "32", "--blocks", "all", "--task",
                                    "gene-module", "--relationships", str(rel), "--seeds", "3", "--device", "cpu"])


def test_timm_vit_probe_across_blocks(tiny_release, tmp_path):
    manifest, folder, rel = tiny_release
    res = _probe(manifest, folder, rel)
    assert res.exit_code == 0, res.output
    out = folder / "probe" / "timm-vit_tiny_patch16_224"
    doc = json.loads((out / "probe.json").read_text())
    n_blocks = len(timm.create_model("vit_tiny_patch16_224", pretrained=False).blocks)
    assert doc["blocks"] == [f"block{i:02d}" for i in range(1, n_blocks + 1)]
    table = pd.read_parquet(out / "probe.parquet")
    assert len(table) == n_blocks * 3 and table["score"].notna().all()
    means = table.groupby("block")["score"].mean().reindex(doc["blocks"])
    assert means.nunique() > 1, means  # per-block scores of a real forward pass differ
    best = doc["blocks"][int(np.argmax(means.to_numpy()))]  # first maximum = the earlier block on ties
    assert doc["best_block"] == best and f"best block: {best}" in res.output
    assert (out / "probe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    copy = tmp_path / "copy"  # the same inputs elsewhere: the same scores, the same choice
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("probe", "embeddings"))
    again = _probe(manifest, copy, rel)
    assert again.exit_code == 0, again.output
    assert (copy / "probe" / out.name / "probe.parquet").read_bytes() == (out / "probe.parquet").read_bytes()
    assert json.loads((copy / "probe" / out.name / "probe.json").read_text())["best_block"] == best
