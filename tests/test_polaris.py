"""Polaris artifacts in the core (no polaris-lib): the compound-gene pairs, polaris-lib's document format and
checksums, Hub-URL locations, portability, checks, and `publish --to polaris://` refusing without polaris-lib.
The same artifacts against stock polaris-lib: tests/with_polaris/ (.venv-polaris)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from rxcurate.errors import PublishError
from rxcurate.publish import polaris as pol


def _truth() -> pd.DataFrame:
    rows = [("A", "G1", 10.0), ("A", "G1", 5000.0), ("A", "G2", 2000.0), ("A", "G3", 20000.0),
            ("B", "G4", 900.0), ("B", "G5", 1000.0), ("C", "G6", 50000.0), ("D", "G2", 1.0)]
    return pd.DataFrame(rows, columns=["treatment", "gene_symbol", "nM_value"])


GENES = [f"G{i}" for i in range(1, 12)]


def test_activity_pairs_follow_the_definition():
    pairs = pol.activity_pairs(_truth(), ["A", "B", "C"], GENES, active_nM=1000, excluded_nM=10000,
                               negatives_per_active=2, min_negatives=3, seed=0)
    a, b = pairs[pairs.treatment == "A"], pairs[pairs.treatment == "B"]
    assert set(a.loc[a.active == 1, "gene_symbol"]) == {"G1"}  # smallest value of a pair decides
    assert "G2" not in set(a.gene_symbol)  # grey zone excluded
    assert (a.active == 0).sum() == 3  # max(2 x 1, 3)
    assert set(b.loc[b.active == 1, "gene_symbol"]) == {"G4", "G5"} and (b.active == 0).sum() == 4
    assert "C" not in set(pairs.treatment) and "D" not in set(pairs.treatment)  # no actives / not in the release
    negatives = set(pairs.loc[pairs.active == 0, "gene_symbol"])
    assert negatives <= set(_truth().gene_symbol) and "G9" not in negatives  # drawn from the truth table's genes
    assert pairs.equals(pairs.sort_values(["treatment", "gene_symbol"]).reset_index(drop=True))


def test_activity_pairs_deterministic_and_order_free():
    kw = dict(active_nM=1000, excluded_nM=10000, negatives_per_active=1, min_negatives=2, seed=7)
    one = pol.activity_pairs(_truth(), ["A", "B"], GENES, **kw)
    shuffled = _truth().sample(frac=1.0, random_state=3)
    two = pol.activity_pairs(shuffled, ["B", "A"], list(reversed(GENES)), **kw)
    pd.testing.assert_frame_equal(one, two)
    other = pol.activity_pairs(_truth(), ["A", "B"], GENES, **{**kw, "seed": 8})
    assert len(other) == len(one)


def test_compound_without_enough_candidates_is_skipped():
    pairs = pol.activity_pairs(_truth(), ["A"], GENES, active_nM=1000, excluded_nM=10000, negatives_per_active=2,
                               min_negatives=50, seed=0)
    assert pairs.empty
    with pytest.raises(PublishError, match="no compound-gene pairs"):
        pol.build_artifacts("/tmp/unused-polaris", pairs, name="tiny", description="d", license=None, provenance={},
                            repo_id="o/tiny", version="0.1.0")


def test_core_writes_the_artifacts_without_polaris_lib(built):
    """The core environment has no polaris-lib; the release still carries the Polaris task, in polaris-lib's format,
    naming its files by the release's Hub URL (stock polaris-lib loads it: tests/with_polaris/)."""
    import importlib.util

    assert importlib.util.find_spec("polaris") is None or os.environ.get("RXCURATE_ALLOW_POLARIS")
    folder = built[1] / "polaris"
    info = json.loads((folder / "rxcurate.json").read_text())
    bench = json.loads((folder / "benchmark.json").read_text())
    ds = json.loads((folder / info["dataset"]).read_text())
    base = "hf://datasets/test/tiny-rxrx3@v0.1.0/polaris/"
    assert bench["dataset"] == base + info["dataset"] and ds["table"] == base + "table.parquet"
    assert info["location"]["benchmark_url"] == base + "benchmark.json"
    assert bench["main_metric"] == "pr_auc_grouped" and bench["input_cols"] == ["gene_symbol", "treatment"]
    assert [m["config"]["on_error"] for m in bench["metrics"]] == ["ignore", "ignore"]
    assert info["aligned_with"]["benchmark"] == "recursion/rxrx-compound-gene-activity-benchmark"
    table = pd.read_parquet(folder / "table.parquet")
    assert ds["md5sum"] == pol.dataset_md5(table) and ds["n_rows"] == len(table) == info["rows"]
    y = pd.read_parquet(folder / "predictions.parquet")["y_prob"].to_numpy()
    assert len(y) == len(table) and np.all((y >= 0) & (y <= 1 + 1e-12))
    assert set(info["predictions"]["scores"]) == {"pr_auc_grouped", "roc_auc_grouped"}
    assert pol.check_artifacts(built[1]) == []


def test_dataset_checksum_ignores_row_and_column_order():
    t = pd.DataFrame({"treatment": ["A", "B", "C"], "gene_symbol": ["g1", "g2", "g3"], "active": [1, 0, 1]})
    shuffled = t.sample(frac=1.0, random_state=1)[["active", "treatment", "gene_symbol"]]
    assert pol.dataset_md5(t) == pol.dataset_md5(shuffled)
    other = t.assign(active=[1, 1, 1])
    assert pol.dataset_md5(other) != pol.dataset_md5(t)
    assert pol.metric_string(pol.METRICS[0]) == (
        'pr_auc{"aggregation": "mean", "default": null, "group_by": "treatment", "on_error": "ignore"}')


def test_artifacts_are_portable(built, release):
    from rxcurate.assemble import assemble
    from rxcurate.manifest import load_manifest

    folder = built[1] / "polaris"
    for p in folder.iterdir():
        assert str(built[1]) not in p.read_bytes().decode("utf-8", "ignore"), p.name
    shutil.rmtree(release / "polaris")
    assemble(load_manifest(built[0]), release)  # rebuilt elsewhere: identical bytes
    for p in sorted((built[1] / "polaris").iterdir()):
        assert (release / "polaris" / p.name).read_bytes() == p.read_bytes(), p.name
    assert pol.check_artifacts(release) == []


def test_check_artifacts_detects_tampering(release):
    t = pd.read_parquet(release / "polaris" / "table.parquet")
    t.loc[0, "gene_symbol"] = "NOT_A_GENE"
    t.to_parquet(release / "polaris" / "table.parquet", index=False)
    problems = pol.check_artifacts(release)
    assert problems and "md5sum" in problems[0] and "polaris-lib would refuse it" in problems[0]


def test_check_artifacts_detects_a_moved_location(release):
    problems = pol.check_artifacts(release, repo_id="someone/else", version="0.1.0")
    assert problems and "hf://datasets/someone/else@v0.1.0/polaris/" in problems[0]


def test_check_artifacts_detects_forged_prediction_scores(release):
    path = release / "polaris" / "rxcurate.json"
    info = json.loads(path.read_text())
    info["predictions"]["scores"]["pr_auc_grouped"] = 0.999
    path.write_text(json.dumps(info))
    assert any("predictions score pr_auc_grouped" in p for p in pol.check_artifacts(release))


def test_publish_to_polaris_without_polaris_lib_exits_2(release):
    """In the core environment: nothing uploaded, exit 2, the message says how to upload and what is not uploadable."""
    import subprocess
    import sys
    from pathlib import Path

    rx = Path(sys.executable).with_name("rxcurate")
    out = subprocess.run([str(rx), "publish", str(release), "--to",
                          "polaris://recursion/rxrx-compound-gene-activity-benchmark"],
                         capture_output=True, text=True, env={**os.environ, "RXCURATE_PROGRESS": "0"}, timeout=300)
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 2, text
    assert "not uploaded" in text and "make install-polaris" in text and "Traceback" not in text
    assert "PolarisDeprecatedError" in text  # says why the dataset/benchmark themselves are not uploaded


def test_invalid_artifacts_are_not_published(release):
    (release / "polaris" / "rxcurate.json").unlink()
    with pytest.raises(PublishError, match="nothing uploaded: the Polaris artifacts are invalid"):
        pol.publish_polaris(release, "me", "tiny")


def test_importing_rxcurate_loads_no_polaris_module():
    import subprocess
    import sys

    code = ("import sys, rxcurate, rxcurate.cli, rxcurate.pipeline, rxcurate.validate, rxcurate.publish, "
            "rxcurate.consume.pull\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'polaris'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]


def test_artifacts_are_byte_identical_across_python_hash_seeds(tmp_path):
    """Sets must never reach the documents in hash order: a release must not change with PYTHONHASHSEED."""
    import subprocess
    import sys

    script = (
        "import sys, pandas as pd\n"
        "from rxcurate.publish import polaris as pol\n"
        "pairs = pd.DataFrame({'treatment': ['A', 'A', 'A', 'B', 'B', 'B'],\n"
        "                      'gene_symbol': ['g1', 'g2', 'g3', 'g1', 'g2', 'g3'],\n"
        "                      'active': [1, 0, 0, 0, 1, 0]})\n"
        "pol.build_artifacts(sys.argv[1], pairs, name='hashseed', description='d', license=None, provenance={},\n"
        "                    repo_id='o/n', version='1.0.0', predictions=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6])\n"
    )
    digests = []
    for seed in ("1", "2", "3"):
        out = tmp_path / seed
        env = {**os.environ, "PYTHONHASHSEED": seed}
        r = subprocess.run([sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        digests.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert digests[0] == digests[1] == digests[2]
