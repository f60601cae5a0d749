"""Truth-table readers: relationships (undirected, deduplicated) and compound-gene tables (quoted commas)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rxcurate.benchmarks import read_compound_gene, read_relationships
from rxcurate.errors import BenchmarkError

ANNOTATIONS = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "annotations"
SOURCES = ("CORUM", "HuMAP", "Reactome", "SIGNOR", "StringDB")


def test_relationships_are_undirected_deduplicated_without_self_pairs(tmp_path):
    p = tmp_path / "rel.csv"
    p.write_text("entity1,entity2\nB,A\nA,B\nC,C\nA,C\nC,A\nNA,A\n D ,B\n")
    df = read_relationships(p)
    assert list(df.columns) == ["entity1", "entity2"]
    # "NA" is a symbol, not a missing value; whitespace is stripped; each pair ordered and unique
    assert df.values.tolist() == [["A", "B"], ["A", "C"], ["A", "NA"], ["B", "D"]]


def test_relationships_equal_files_give_equal_frames(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("entity1,entity2\nX,Y\nP,Q\n")
    b.write_text("entity1,entity2\nQ,P\nY,X\nX,Y\n")
    pd.testing.assert_frame_equal(read_relationships(a), read_relationships(b))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("gene_a,gene_b\nA,B\n", "entity1"),
        ("entity1,entity2\nA,\n", "line 2"),
    ],
)
def test_relationships_bad_files_name_the_fix(tmp_path, text, needle):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(BenchmarkError, match=needle):
        read_relationships(p)


def test_relationships_missing_file(tmp_path):
    with pytest.raises(BenchmarkError, match="does not exist"):
        read_relationships(tmp_path / "nope.csv")


@pytest.mark.realdata
@pytest.mark.parametrize("source", SOURCES)
def test_real_annotation_files_load(source):
    path = ANNOTATIONS / f"{source}.txt"
    if not path.is_file():
        pytest.skip("../shared/realdata/annotations is absent")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    df = read_relationships(path)
    assert len(df) > 1000
    assert (df["entity1"] < df["entity2"]).all()
    assert not df.duplicated().any()
    # every raw undirected non-self pair survives exactly once
    raw_pairs = {tuple(sorted(p)) for p in zip(raw["entity1"], raw["entity2"], strict=True) if p[0] != p[1]}
    assert len(df) == len(raw_pairs)


def test_compound_gene_quoted_commas_and_types(tmp_path):
    p = tmp_path / "cgi.csv"
    p.write_text(
        "gene_symbol,nM_value,measurement_type,database,treatment\n"
        'EGFR,12.5,IC50,chembl,"1,2-dichloro-4-nitrobenzene"\n'
        'NA,20000,Ki,"db, v2",aspirin\n'
        "EGFR,900,Kd,chembl,aspirin\n"
    )
    df = read_compound_gene(p)
    assert df["treatment"].tolist() == ["1,2-dichloro-4-nitrobenzene", "aspirin", "aspirin"]
    assert df["gene_symbol"].tolist() == ["EGFR", "EGFR", "NA"]
    assert df["nM_value"].tolist() == [12.5, 900.0, 20000.0]
    assert df["database"].tolist()[2] == "db, v2"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("gene,nM_value,treatment\nA,1,x\n", "gene_symbol"),
        ("gene_symbol,nM_value,treatment\nA,abc,x\n", "line 2: nM_value 'abc'"),
        ("gene_symbol,nM_value,treatment\nA,-3,x\n", "non-negative"),
        ("gene_symbol,nM_value,treatment\nA,3,\n", "empty treatment"),
    ],
)
def test_compound_gene_bad_files(tmp_path, text, needle):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(BenchmarkError, match=needle):
        read_compound_gene(p)
