"""`rxcurate release` end to end on the tiny synthetic screen: publishes, validates, and is idempotent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from typer.testing import CliRunner

from rxcurate.cli import app

TINY = Path(__file__).resolve().parent / "data" / "manifests" / "tiny-rxrx3.yaml"


def _refs(repo: Path) -> str:
    return subprocess.run(["git", "-C", str(repo), "show-ref"], capture_output=True, text=True, check=True).stdout


def test_release_publishes_validates_and_second_run_is_up_to_date(tmp_path, tiny_rxrx3, monkeypatch):
    monkeypatch.setenv("RXCURATE_PROGRESS", "0")
    raw = yaml.safe_load(TINY.read_text())
    raw.update(version="0.1.0", embeddings=[{"encoder": "baseline", "tile_size": 32}],
               benchmarks=["gene-gene-recall", "compound-gene-activity", "perturbation-signal"],
               card={"repo_id": "test/tiny", "pretty_name": "Tiny"})
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(raw, sort_keys=False))
    args = ["release", str(manifest), "--source", str(tiny_rxrx3), "--hub", str(tmp_path / "hub"),
            "--workdir", str(tmp_path / "w"), "--workers", "1"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "validate: passed" in first.output or "local://test/tiny" in first.output
    repo = tmp_path / "hub" / "datasets" / "test" / "tiny"
    refs = _refs(repo)
    assert "refs/tags/v0.1.0" in refs
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "up to date" in second.output
    assert _refs(repo) == refs  # nothing new published

    # changing the transform without bumping the version is refused, and the hub is untouched
    raw["transform"]["codec"] = {"name": "jpeg2000", "rate": 10}
    manifest.write_text(yaml.safe_dump(raw, sort_keys=False))
    third = CliRunner().invoke(app, args)
    assert third.exit_code != 0
    assert "version" in str(third.exception) + third.output
    assert _refs(repo) == refs
