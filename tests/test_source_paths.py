"""Image paths built from metadata (experiment, address) cannot leave the declared source root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from rxcurate.cli import app, main
from rxcurate.errors import SourceError
from rxcurate.manifest import parse_manifest
from rxcurate.select import select
from rxcurate.source import RXRX1, RXRX3, inspect_source, is_safe_segment, read_metadata

TINY = Path(__file__).resolve().parent / "data" / "manifests" / "tiny-rxrx3.yaml"


def _manifest(tmp_path: Path, layout: str = "rxrx3"):
    import yaml

    raw = {"name": "paths", "version": "0.1.0", "layout": layout, "select": {"sql": "SELECT well_id FROM wells"},
           "transform": {"crop": {"size": 32}} | ({"convert": {"method": "none"}} if layout == "rxrx1" else {})}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(raw))
    return parse_manifest(raw, path)


def _tampered(original: Path, dest: Path, col: str, value: str, row: int = 0) -> tuple[Path, dict]:
    """A copy of a source screen whose metadata row ``row`` has ``col`` = ``value`` (well_id kept consistent), with
    that well's real images planted where the escaping path points, so only the check can stop it."""
    df = pd.read_csv(original / "metadata.csv", dtype=str, keep_default_na=False)
    old = df.iloc[row].to_dict()
    exp_col, addr_col = ("experiment_name", "address") if "experiment_name" in df else ("experiment", "well")
    df.loc[row, col] = value
    df.loc[row, "well_id"] = f"{df.loc[row, exp_col]}_{df.loc[row, 'plate']}_{df.loc[row, addr_col]}"
    if "site_id" in df:
        df.loc[row, "site_id"] = f"{df.loc[row, 'well_id']}_{df.loc[row, 'site']}"
    src = dest / "src"
    src.mkdir(parents=True)
    df.to_csv(src / "metadata.csv", index=False)
    (src / "images").mkdir()
    for exp in (original / "images").iterdir():  # real images/ folder, so '..' stays lexical inside tmp_path
        (src / "images" / exp.name).symlink_to(exp, target_is_directory=True)
    if col == exp_col and value.startswith("../"):
        planted = Path(os.path.normpath(src / "images" / value / f"Plate{old['plate']}"))
        assert planted.is_relative_to(dest) and not planted.is_relative_to(src)
        shutil.copytree(original / "images" / old[exp_col] / f"Plate{old['plate']}", planted)
    return src, old


@pytest.mark.parametrize("value", ["..", ".", "a/b", "../../outside", "/etc", "x\\y", "bad\x01name"])
def test_inspect_rejects_experiment_that_escapes(tmp_path, tiny_rxrx3, value):
    src, _ = _tampered(tiny_rxrx3, tmp_path, "experiment_name", value, row=3)
    with pytest.raises(SourceError) as info:
        inspect_source(src)
    msg = str(info.value)
    assert "experiment_name" in msg and "line 5" in msg and "outside the source root" in msg


def test_select_rejects_escaping_experiment_and_writes_nothing(tmp_path, tiny_rxrx3):
    src, _ = _tampered(tiny_rxrx3, tmp_path, "experiment_name", "../../outside")
    assert (tmp_path / "outside").is_dir()  # the escaped path really exists: only the check stops it
    with pytest.raises(SourceError, match=r"experiment_name.*outside the source root"):
        select(_manifest(tmp_path), source=src, workdir=tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_select_cli_reports_one_line_and_exit_2(tmp_path, tiny_rxrx3, capsys):
    src, _ = _tampered(tiny_rxrx3, tmp_path, "experiment_name", "../../outside")
    _manifest(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["select", str(tmp_path / "m.yaml"), "--source", str(src), "--workdir", str(tmp_path / "w")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "experiment_name" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


def test_inspect_cli_rejects_address_escape(tmp_path, tiny_rxrx3):
    src, _ = _tampered(tiny_rxrx3, tmp_path, "address", "../H29")
    result = CliRunner().invoke(app, ["inspect", str(src)])
    assert result.exit_code != 0
    assert isinstance(result.exception, SourceError) and "address" in str(result.exception)


def test_rxrx1_experiment_escape(tmp_path, tiny_rxrx1):
    src, _ = _tampered(tiny_rxrx1, tmp_path, "experiment", "../../HEPG2-01")
    with pytest.raises(SourceError, match=r"experiment that is not one folder name"):
        read_metadata(src)
    with pytest.raises(SourceError, match="experiment"):
        select(_manifest(tmp_path, "rxrx1"), source=src, workdir=tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_untampered_sources_still_pass(tiny_rxrx3, tiny_rxrx1):
    assert inspect_source(tiny_rxrx3, check_images=False)["wells"] > 0
    assert inspect_source(tiny_rxrx1, check_images=False)["wells"] > 0


@pytest.mark.parametrize("value,ok", [("gene-079", True), ("compound-001", True), ("HEPG2-01", True), ("H29", True),
                                      ("", False), (".", False), ("..", False), ("a/b", False), ("/etc", False),
                                      ("a\\b", False), ("x\x00", False), ("tab\there", False), ("..x", True)])
def test_is_safe_segment(value, ok):
    assert is_safe_segment(value) is ok


def test_layout_image_relpath_refuses_unsafe_values():
    assert RXRX3.image_relpath("gene-079", 8, "H29", 1, 3) == "images/gene-079/Plate8/H29_s1_w3.png"
    with pytest.raises(SourceError, match="experiment_name '../x'"):
        RXRX3.image_relpath("../x", 8, "H29", 1, 3)
    with pytest.raises(SourceError, match="well '/B02'"):
        RXRX1.image_relpath("HEPG2-01", 1, "/B02", 1, 1)
