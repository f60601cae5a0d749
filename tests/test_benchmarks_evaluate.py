"""End to end: validity on a synthetic screen, determinism, provenance, comparison, bad input and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rxcurate.benchmarks import compare_results, definition_checksum, evaluate, evaluate_files, load_definition
from rxcurate.benchmarks.inputs import build_map, corrected_features, prepare_wells
from rxcurate.benchmarks.synthetic import synthetic_rxrx3, write_synthetic
from rxcurate.cli import app, main
from rxcurate.errors import BenchmarkError
from rxcurate.io import sha256_file


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    data = synthetic_rxrx3()
    paths = write_synthetic(data, tmp_path_factory.mktemp("screen"))
    root = paths["metadata"].parent
    rng = np.random.default_rng(9)
    # shuffled truth: the same gene symbols and structure, relations assigned at random
    rel = data["relationships"]
    genes = np.unique(rel.to_numpy())
    relabel = dict(zip(genes, rng.permutation(genes), strict=True))
    rel.replace(relabel).to_csv(root / "shuffled_relationships.csv", index=False)
    cgi = data["compound_gene"].copy()
    cgi["gene_symbol"] = rng.permutation(cgi["gene_symbol"].to_numpy())
    cgi.to_csv(root / "shuffled_cgi.csv", index=False)
    return {"data": data, "root": root, **paths}


def _defn(bid, method=None, seeds=None):
    d = load_definition(bid)
    if method:
        d["postprocess"]["method"] = method
    if seeds:
        d["seeds"]["count"] = seeds
    return d


def test_validity_on_synthetic_screen(screen):
    emb, meta = screen["data"]["embeddings"], screen["data"]["metadata"]
    rel = {"truth": screen["relationships"]}
    tvn = evaluate("gene-gene-recall", emb, meta, rel)["summary"]["truth/recall_0.05_0.95"]
    raw = evaluate(_defn("gene-gene-recall", "none"), emb, meta, rel)["summary"]["truth/recall_0.05_0.95"]
    assert tvn >= 0.35 and tvn > raw + 0.1  # chance is 0.1; batch effects hide modules until corrected
    cga = evaluate(_defn("compound-gene-activity", seeds=20), emb, meta, [screen["compound_gene"]])["summary"]
    assert cga["max/auc_roc/mean"] >= 0.8
    assert abs(cga["max/baseline_auc_roc/mean"] - 0.5) < 0.08
    assert cga["10.0/auc_roc/mean"] > cga["0.0025/auc_roc/mean"]  # the phenotype grows with dose

    shuffled = evaluate("gene-gene-recall", emb, meta, [screen["root"] / "shuffled_relationships.csv"])
    assert shuffled["summary"]["shuffled_relationships/recall_0.05_0.95"] <= 0.2
    cga_shuffled = evaluate(_defn("compound-gene-activity", seeds=20), emb, meta,
                            [screen["root"] / "shuffled_cgi.csv"])["summary"]
    assert abs(cga_shuffled["max/auc_roc/mean"] - 0.5) < 0.1


def test_files_give_byte_identical_results_with_provenance(screen, tmp_path):
    args = ("compound-gene-activity", screen["embeddings"], screen["metadata"], {"cgi": screen["compound_gene"]})
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    res = evaluate_files(*args, a)
    evaluate_files(*args, b)
    assert a.read_bytes() == b.read_bytes()
    assert json.loads(a.read_text()) == res
    prov = res["provenance"]
    assert prov["inputs"]["embeddings"] == {"file": "embeddings.parquet", "sha256": sha256_file(screen["embeddings"]),
                                            "rows": 828}
    assert prov["inputs"]["truth"]["cgi"]["sha256"] == sha256_file(screen["compound_gene"])
    assert prov["seeds"] == {"start": 0, "count": 100}
    assert {"rxcurate", "python", "numpy", "scikit-learn"} <= set(prov["versions"])
    assert res["benchmark"]["checksum"] == definition_checksum(load_definition("compound-gene-activity"))
    assert "time" not in a.read_text()
    # the in-memory API gives the same metrics
    direct = evaluate("compound-gene-activity", screen["data"]["embeddings"], screen["data"]["metadata"],
                      {"cgi": screen["compound_gene"]})
    assert direct["metrics"] == res["metrics"] and direct["summary"] == res["summary"]


def test_compare_results(screen, tmp_path):
    pub = evaluate_files("gene-gene-recall-tvn", screen["embeddings"], screen["metadata"], [screen["relationships"]],
                         None)
    assert compare_results(pub, json.loads(json.dumps(pub))) == []
    rerun = json.loads(json.dumps(pub))
    rerun["metrics"]["sources"]["relationships"]["recall_0.1_0.9"] += 5e-7
    assert compare_results(pub, rerun) == []  # within the definition's tolerance 1e-6
    rerun["metrics"]["sources"]["relationships"]["recall_0.1_0.9"] += 1e-3
    problems = compare_results(pub, rerun)
    assert len(problems) == 1 and "sources/relationships/recall_0.1_0.9" in problems[0]
    assert compare_results(pub, rerun, tolerance={"default": 0, "metrics": {"*/recall_*": 0.01}}) == []
    rerun = json.loads(json.dumps(pub))
    rerun["benchmark"]["checksum"] = "0" * 64
    rerun["provenance"]["inputs"]["embeddings"]["sha256"] = "1" * 64
    problems = compare_results(pub, rerun)
    assert any("checksum differs" in p for p in problems) and any("input embeddings differs" in p for p in problems)
    del rerun["summary"]
    assert "summary" in compare_results(pub, rerun)[0]


def test_scoring_a_map_equals_the_well_level_pipeline(screen, tmp_path):
    defn = load_definition("gene-gene-recall")
    wells = prepare_wells(defn, screen["data"]["embeddings"], screen["data"]["metadata"])
    m, _ = build_map(defn, wells, corrected_features(defn, wells))
    path = tmp_path / "map.parquet"
    m.to_frame().to_parquet(path)
    via_map = evaluate_files("gene-gene-recall", None, None, [screen["relationships"]], None, map_path=path)
    via_wells = evaluate_files("gene-gene-recall", screen["embeddings"], screen["metadata"], [screen["relationships"]],
                               None)
    assert via_map["metrics"]["sources"] == via_wells["metrics"]["sources"]
    assert via_map["provenance"]["postprocess"] is None
    assert via_map["provenance"]["inputs"]["map"]["sha256"] == sha256_file(path)


def _bad(screen, what):
    emb, meta = screen["data"]["embeddings"].copy(), screen["data"]["metadata"].copy()
    if what == "missing well":
        emb = emb.iloc[1:]
    elif what == "extra well":
        extra = emb.iloc[:1].copy()
        extra["well_id"] = "gene-999_1_A01"
        emb = pd.concat([emb, extra])
    elif what == "nan":
        emb.loc[5, "feature_3"] = np.nan
    elif what == "dims":
        emb = emb.drop(columns=["feature_7"])
    elif what == "type":
        meta.loc[3, "perturbation_type"] = "siRNA"
    elif what == "column":
        meta = meta.drop(columns=["experiment_name"])
    elif what == "perturbation":
        meta.loc[7, ["gene", "treatment"]] = ""
    elif what == "no controls":
        meta.loc[meta["treatment"] == "EMPTY_control", "treatment"] = "DMSO"
    return emb, meta


@pytest.mark.parametrize(
    ("what", "needle"),
    [
        ("missing well", "have no embedding"),
        ("extra well", "not in the metadata, e.g. 'gene-999_1_A01'"),
        ("nan", "NaN/inf features"),
        ("dims", "feature_7 is missing"),
        ("type", "unknown perturbation_type value(s) 'siRNA'"),
        ("column", "metadata lacks column(s) ['experiment_name']"),
        ("perturbation", "no perturbation in columns ['gene', 'treatment']"),
        ("no controls", "no control wells"),
    ],
)
def test_bad_inputs_are_clear_errors(screen, what, needle):
    emb, meta = _bad(screen, what)
    with pytest.raises(BenchmarkError) as exc:
        evaluate("gene-gene-recall", emb, meta, [screen["relationships"]])
    assert needle in str(exc.value)


def test_failed_run_writes_nothing(screen, tmp_path):
    out = tmp_path / "res.json"
    with pytest.raises(BenchmarkError, match="exactly 1 truth file"):
        evaluate_files("compound-gene-activity", screen["embeddings"], screen["metadata"], None, out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_help_list_run_and_errors(screen, tmp_path, capsys):
    runner = CliRunner()
    help_ = runner.invoke(app, ["evaluate", "--help"])
    assert help_.exit_code == 0 and "--benchmark" in help_.output and "--map" in help_.output
    listed = runner.invoke(app, ["evaluate", "--list"])
    assert listed.exit_code == 0 and "rxrx1-batch-generalisation" in listed.output
    lines = {line.split("\t")[0]: line for line in listed.output.splitlines()}
    assert "protocol: RxRx3-core notebook" in lines["gene-gene-recall"]
    assert lines["gene-gene-recall"].endswith("; comparable with published figures")
    assert "not comparable with published figures" in lines["gene-gene-recall-tvn"]
    assert all("protocol: " in line for line in lines.values())
    out = tmp_path / "r.json"
    ok = runner.invoke(app, ["evaluate", "-b", "gene-gene-recall", "--embeddings", str(screen["embeddings"]),
                             "--metadata", str(screen["metadata"]), "--truth", f"SYN={screen['relationships']}",
                             "-o", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "SYN/recall_0.05_0.95" in json.loads(out.read_text())["summary"]
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "-b", "perturbation-signal", "--map", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "needs well-level embeddings" in err
    with pytest.raises(SystemExit):
        main(["evaluate", "-b", "no-such-benchmark"])
    assert "unknown benchmark" in capsys.readouterr().err
