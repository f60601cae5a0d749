"""Source screen validation (`rxcurate inspect`): good screens pass, malformed ones fail naming the problem."""

from __future__ import annotations

import shutil

import imagecodecs
import numpy as np
import pandas as pd
import pytest

from rxcurate.errors import SourceError
from rxcurate.source import image_relpaths, inspect_source, read_metadata


@pytest.fixture
def screen(tmp_path, tiny_rxrx3):
    dst = tmp_path / "screen"
    shutil.copytree(tiny_rxrx3, dst)
    return dst


def test_inspect_reports_counts(tiny_rxrx3, tiny_rxrx1):
    r3 = inspect_source(tiny_rxrx3)
    md = pd.read_csv(tiny_rxrx3 / "metadata.csv")
    assert r3["layout"] == "rxrx3" and r3["wells"] == len(md)
    assert r3["images_missing"] == 0 and r3["image_size"] == [96, 96] and r3["image_bits"] == 16
    assert sum(r3["by_perturbation_type"].values()) == len(md)
    r1 = inspect_source(tiny_rxrx1)
    assert r1["layout"] == "rxrx1" and r1["image_bits"] == 8 and len(r1["cell_types"]) == 4


def test_missing_column(screen):
    md = pd.read_csv(screen / "metadata.csv", keep_default_na=False).drop(columns=["SMILES"])
    md.to_csv(screen / "metadata.csv", index=False)
    with pytest.raises(SourceError, match=r"missing columns \['SMILES'\]"):
        inspect_source(screen)


def test_bad_address(screen):
    md = pd.read_csv(screen / "metadata.csv", keep_default_na=False)
    md.loc[3, "address"] = "AG49"
    md.to_csv(screen / "metadata.csv", index=False)
    with pytest.raises(SourceError, match="bad address.*A01..AF48"):
        inspect_source(screen)


def test_missing_image(screen):
    layout, md = read_metadata(screen)
    rel = image_relpaths(layout, md).relpath.iloc[10]
    (screen / rel).unlink()
    with pytest.raises(SourceError, match="missing.*" + rel.split("/")[-1]):
        inspect_source(screen)
    inspect_source(screen, check_images=False)  # metadata alone is fine


def test_wrong_shape_and_depth(screen):
    layout, md = read_metadata(screen)
    rel = image_relpaths(layout, md).relpath.iloc[7]
    (screen / rel).write_bytes(imagecodecs.png_encode(np.zeros((80, 96), np.uint16)))
    with pytest.raises(SourceError, match="96x80.*expected 96x96"):
        inspect_source(screen)
    (screen / rel).write_bytes(imagecodecs.png_encode(np.zeros((96, 96), np.uint8)))
    with pytest.raises(SourceError, match="8-bit.*16-bit"):
        inspect_source(screen)
    (screen / rel).write_bytes(b"not a png")
    with pytest.raises(SourceError, match="not a PNG"):
        inspect_source(screen)
