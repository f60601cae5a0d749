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


def test_release_card_only_change_and_version_bump(tmp_path, tiny_rxrx3, monkeypatch):
    """Card prose change -> the card is republished without recompressing; a bumped version with a new transform
    publishes alongside the old one, which stays untouched and valid; a selection change without a bump is refused."""
    from rxcurate.publish.local import LocalHub
    from rxcurate.validate import validate

    monkeypatch.setenv("RXCURATE_PROGRESS", "0")
    raw = yaml.safe_load(TINY.read_text())
    raw.update(version="0.1.0", embeddings=[{"encoder": "baseline", "tile_size": 32}],
               benchmarks=["gene-gene-recall"], card={"repo_id": "test/tiny", "pretty_name": "Tiny", "prose": "One."})
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(raw, sort_keys=False))
    hub = tmp_path / "hub"
    args = ["release", str(manifest), "--source", str(tiny_rxrx3), "--hub", str(hub), "--workdir",
            str(tmp_path / "w"), "--workers", "1", "--json"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    repo = hub / "datasets" / "test" / "tiny"
    tag_v1 = subprocess.run(["git", "-C", str(repo), "rev-parse", "v0.1.0^{commit}"], capture_output=True, text=True,
                            check=True).stdout
    shards = sorted((tmp_path / "w" / "data").glob("*.parquet"))
    mtimes = [p.stat().st_mtime_ns for p in shards]

    raw["card"]["prose"] = "Two: better words."
    manifest.write_text(yaml.safe_dump(raw, sort_keys=False))
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert '"compress": "up to date"' in second.output
    assert [p.stat().st_mtime_ns for p in shards] == mtimes  # nothing recompressed
    card = subprocess.run(["git", "-C", str(repo), "show", "main:README.md"], capture_output=True, text=True,
                          check=True).stdout
    assert "Two: better words." in card
    lh = LocalHub(hub)

    # selection change without a version bump: refused, hub untouched
    refs = _refs(repo)
    raw_sel = yaml.safe_load(manifest.read_text())
    raw_sel["select"]["sample"][0]["n"] = 2
    manifest.write_text(yaml.safe_dump(raw_sel, sort_keys=False))
    third = CliRunner().invoke(app, args)
    assert third.exit_code != 0, third.output
    assert "bump `version:`" in str(third.exception) and "select:" not in third.output  # refused before any work
    assert _refs(repo) == refs
    assert [p.stat().st_mtime_ns for p in shards] == mtimes

    # bumped version with a new transform: published alongside, old version untouched and still valid
    raw_sel.update(version="0.2.0")
    raw_sel["transform"]["codec"] = {"name": "jpeg2000", "rate": 10}
    manifest.write_text(yaml.safe_dump(raw_sel, sort_keys=False))
    fourth = CliRunner().invoke(app, args)
    assert fourth.exit_code == 0, fourth.output
    assert lh.list_versions("test/tiny") == ["0.1.0", "0.2.0"]
    assert subprocess.run(["git", "-C", str(repo), "rev-parse", "v0.1.0^{commit}"], capture_output=True, text=True,
                          check=True).stdout == tag_v1
    for v in ("0.1.0", "0.2.0"):
        assert validate(f"local://test/tiny@{v}", hub=hub).ok
