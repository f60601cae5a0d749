"""Polaris artifacts (polaris-lib 0.13): the compound-gene pairs, a round trip through polaris-lib (load and
evaluate fake predictions, per-compound grouped PR-AUC), portability, and the gated upload."""

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
        pol.build_artifacts("/tmp/unused-polaris", pairs, name="tiny", description="d", license=None, provenance={})


def test_release_artifacts_round_trip_through_polaris_lib(built, monkeypatch):
    import polaris as po

    folder = built[1] / "polaris"
    info = json.loads((folder / "rxcurate.json").read_text())
    table = pd.read_parquet(folder / "table.parquet")
    assert list(table.columns) == ["treatment", "gene_symbol", "active"] and len(table) == info["rows"]
    metadata = pd.read_parquet(built[1] / "metadata.parquet")
    assert set(table.treatment) <= set(metadata.treatment) and set(table.gene_symbol) <= set(metadata.gene)
    # plain polaris-lib, from inside polaris/ (relative paths)
    monkeypatch.chdir(folder)
    bench = po.load_benchmark("benchmark.json")
    train, test = bench.get_train_test_split()
    assert len(train) == 0 and len(test) == len(table)
    assert bench.main_metric.name == "pr_auc_per_compound"
    # and our loader from any working directory
    monkeypatch.chdir(built[1].parent)
    bench = pol.load_benchmark(folder)
    perfect = pol.evaluate(bench, table["active"].to_numpy(dtype=float))
    assert perfect == {"pr_auc_per_compound": 1.0, "pr_auc": 1.0, "roc_auc": 1.0}
    rng = np.random.default_rng(0)
    scores = rng.random(len(table))
    got = pol.evaluate(bench, scores)
    from sklearn.metrics import average_precision_score, roc_auc_score

    per_compound = [average_precision_score(g["active"], scores[g.index]) for _, g in table.groupby("treatment")]
    assert got["pr_auc_per_compound"] == pytest.approx(np.mean(per_compound), abs=1e-12)
    assert got["roc_auc"] == pytest.approx(roc_auc_score(table["active"], scores), abs=1e-12)
    results = bench.evaluate(y_prob=scores)
    doc = results.model_dump(mode="json", by_alias=True)
    assert doc["results"][0]["scores"]["pr_auc_per_compound"] == pytest.approx(got["pr_auc_per_compound"])


def test_artifacts_are_portable(built, release, tmp_path):
    from rxcurate.assemble import assemble
    from rxcurate.manifest import load_manifest

    folder = built[1] / "polaris"
    for p in folder.iterdir():
        assert str(built[1]) not in p.read_bytes().decode("utf-8", "ignore"), p.name
    info = json.loads((folder / "rxcurate.json").read_text())
    assert json.loads((folder / "benchmark.json").read_text())["dataset"] == info["dataset"]
    assert json.loads((folder / info["dataset"]).read_text())["table"] == "table.parquet"
    shutil.rmtree(release / "polaris")
    assemble(load_manifest(built[0]), release)  # rebuilt elsewhere: identical bytes
    for p in sorted((built[1] / "polaris").iterdir()):
        assert (release / "polaris" / p.name).read_bytes() == p.read_bytes(), p.name
    assert pol.check_artifacts(release) == []


def test_check_artifacts_detects_tampering(release):
    t = pd.read_parquet(release / "polaris" / "table.parquet")
    t.loc[0, "gene_symbol"] = "NOT_A_GENE"
    t.to_parquet(release / "polaris" / "table.parquet", index=False)
    assert pol.check_artifacts(release, with_library=False) == []  # structure intact...
    problems = pol.check_artifacts(release)  # ...but the md5 checksum of the dataset no longer matches
    assert problems and "checksum" in problems[0] and problems[0].startswith("polaris/benchmark.json")


def test_publish_without_credentials_builds_and_says_so(release, monkeypatch):
    monkeypatch.setattr(pol, "credentials", lambda: None)
    res = pol.publish_polaris(release, "me", "tiny")
    assert res.status == "built" and "nothing uploaded" in res.message and "POLARIS_USERNAME" in res.message


class DeprecatedUploadClient:
    """Test double of polaris.hub.client.PolarisHubClient: uploads raise as polaris-lib 0.13's do."""

    def __init__(self, error=None):
        self.error = error
        self.calls: list[str] = []

    def upload_dataset(self, dataset, owner=None):
        from polaris.utils.errors import PolarisDeprecatedError

        self.calls.append("upload_dataset")
        raise self.error or PolarisDeprecatedError("dataset uploading")

    def upload_benchmark(self, benchmark, owner=None):  # pragma: no cover - never reached
        self.calls.append("upload_benchmark")


def test_publish_with_credentials_reports_the_deprecation(release):
    client = DeprecatedUploadClient()
    res = pol.publish_polaris(release, "me", "tiny", client=client)
    assert res.status == "upload-unsupported" and "no longer accepts" in res.message and client.calls
    with pytest.raises(PublishError, match="Polaris upload failed.*intact"):
        pol.publish_polaris(release, "me", "tiny", client=DeprecatedUploadClient(ConnectionError("offline")))


def test_invalid_artifacts_are_not_published(release):
    (release / "polaris" / "rxcurate.json").unlink()
    with pytest.raises(PublishError, match="invalid"):
        pol.publish_polaris(release, "me", "tiny", client=DeprecatedUploadClient())


def test_credentials_from_environment(monkeypatch, tmp_path):
    import polaris.utils.constants as const

    monkeypatch.setattr(const, "DEFAULT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("POLARIS_USERNAME", raising=False)
    monkeypatch.delenv("POLARIS_PASSWORD", raising=False)
    assert pol.credentials() is None
    monkeypatch.setenv("POLARIS_USERNAME", "u")
    monkeypatch.setenv("POLARIS_PASSWORD", "secret-pw")
    found = pol.credentials()
    assert found and "secret-pw" not in found
    monkeypatch.delenv("POLARIS_PASSWORD")
    (tmp_path / "hub_auth_token.json").write_text("{}")
    assert "token" in pol.credentials()


@pytest.mark.skipif(not (os.environ.get("RXCURATE_POLARIS_TEST_OWNER") and os.environ.get("POLARIS_USERNAME")),
                    reason="real Polaris Hub test: set RXCURATE_POLARIS_TEST_OWNER, POLARIS_USERNAME and "
                           "POLARIS_PASSWORD")
def test_polaris_real_hub(release):  # pragma: no cover - needs network and credentials
    res = pol.publish_polaris(release, os.environ["RXCURATE_POLARIS_TEST_OWNER"], "rxcurate-test")
    assert res.status in ("upload-unsupported", "uploaded")


def test_artifacts_are_byte_identical_across_python_hash_seeds(tmp_path):
    """polaris-lib serialises sets in hash order; a release must not change with PYTHONHASHSEED."""
    import subprocess
    import sys

    script = (
        "import sys, pandas as pd\n"
        "from rxcurate.publish import polaris as pol\n"
        "pairs = pd.DataFrame({'treatment': ['A', 'A', 'A', 'B', 'B', 'B'],\n"
        "                      'gene_symbol': ['g1', 'g2', 'g3', 'g1', 'g2', 'g3'],\n"
        "                      'active': [True, False, False, False, True, False]})\n"
        "pol.build_artifacts(sys.argv[1], pairs, name='hashseed', description='d', license=None, provenance={})\n"
    )
    digests = []
    for seed in ("1", "2", "3"):
        out = tmp_path / seed
        env = {**__import__("os").environ, "PYTHONHASHSEED": seed}
        r = subprocess.run([sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        digests.append({p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix == ".json"})
    assert digests[0] == digests[1] == digests[2]
