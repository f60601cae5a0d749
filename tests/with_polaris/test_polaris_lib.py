"""The core's Polaris artifacts (written without polaris-lib) against stock polaris-lib 0.13 in .venv-polaris:
loaded from another working directory and from the published repository (hf:// through olah), checksums verified by
polaris-lib, documents equal to the ones polaris-lib's own classes make, polaris-lib's scores equal rxcurate's, and
`publish --to polaris://` (results upload) gated on credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("polaris", reason="polaris-lib is not installed here: these tests run in .venv-polaris "
                                      "(make test-polaris)")

from conftest import REPO_ID, TAG  # noqa: E402

from rxcurate.errors import PublishError  # noqa: E402
from rxcurate.publish import polaris as pol  # noqa: E402

OFFICIAL = "recursion/rxrx-compound-gene-activity-benchmark"


def _run(code: str, cwd: Path, endpoint: str | None = None, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "POLARIS_"))}
    e.update(env)
    if endpoint:
        e["HF_ENDPOINT"] = endpoint  # read by huggingface_hub at import time
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=e, timeout=300)


LOAD = """
import json, sys, warnings
warnings.simplefilter("ignore")
import numpy as np, pandas as pd
import polaris as po
bench = po.load_benchmark({path!r})
train, test = bench.get_train_test_split()
pred = pd.read_parquet({pred!r})["y_prob"].to_numpy()
res = bench.evaluate(y_prob=pred)
print(json.dumps({{"train": len(train), "test": len(test), "name": bench.name, "main": bench.main_metric.name,
                  "inputs": sorted(bench.input_cols), "target": list(bench.target_cols), "md5": bench.md5sum,
                  "dataset_md5": bench.dataset.md5sum,
                  "scores": {{str(r["Metric"]): float(r["Score"]) for _, r in res.results.iterrows()}}}}))
"""


def _check_loaded(out: subprocess.CompletedProcess, info: dict) -> None:
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["train"] == 0 and got["test"] == info["rows"]
    assert got["inputs"] == ["gene_symbol", "treatment"] and got["target"] == ["active"]
    assert got["main"] == "pr_auc_grouped"
    # polaris-lib recomputes both checksums from what it loaded: they equal the ones the core wrote
    assert got["md5"] == info["md5sum"]["benchmark"] and got["dataset_md5"] == info["md5sum"]["dataset"]
    for k, v in info["predictions"]["scores"].items():  # polaris-lib's evaluation equals rxcurate's
        assert got["scores"][k] == pytest.approx(v, abs=1e-12), k


def test_core_never_imported_polaris(published):
    assert published["polaris_modules"] == []


def test_stock_polaris_loads_a_local_copy_from_another_directory(published, olah, tmp_path):
    folder = published["release"] / "polaris"
    info = json.loads((folder / "rxcurate.json").read_text())
    code = LOAD.format(path=str(folder / "benchmark.json"), pred=str(folder / "predictions.parquet"))
    _check_loaded(_run(code, tmp_path, olah), info)


def test_stock_polaris_loads_from_the_published_repo(published, olah, tmp_path):
    folder = published["release"] / "polaris"
    info = json.loads((folder / "rxcurate.json").read_text())
    url = f"hf://datasets/{REPO_ID}@{TAG}/polaris/benchmark.json"
    assert info["location"]["benchmark_url"] == url
    code = LOAD.format(path=url, pred=str(folder / "predictions.parquet"))
    _check_loaded(_run(code, tmp_path, olah), info)


def test_polaris_lib_verifies_our_checksums(published):
    """polaris-lib 0.13 ignores md5sum fields of local JSON on load, so verify explicitly: our stored checksums pass
    its verify_checksum, and a table changed under them fails it."""
    from polaris.utils.errors import PolarisChecksumError

    folder = published["release"] / "polaris"
    info = json.loads((folder / "rxcurate.json").read_text())
    bench = pol.load_benchmark(folder)
    bench.dataset.verify_checksum(md5sum=info["md5sum"]["dataset"])
    bench.verify_checksum(md5sum=info["md5sum"]["benchmark"])
    bench.dataset.table.loc[0, "active"] = 1 - bench.dataset.table.loc[0, "active"]
    with pytest.raises(PolarisChecksumError):
        bench.dataset.verify_checksum(md5sum=info["md5sum"]["dataset"])


def test_documents_equal_what_polaris_lib_makes(published):
    """The same dataset and benchmark built with polaris-lib's own classes give the same checksums and fields."""
    import warnings

    from polaris.benchmark import SingleTaskBenchmarkSpecification
    from polaris.dataset import ColumnAnnotation, DatasetV1
    from polaris.evaluate import Metric
    from polaris.evaluate._metric import GroupedMetricConfig

    folder = published["release"] / "polaris"
    info = json.loads((folder / "rxcurate.json").read_text())
    ours_bench = json.loads((folder / "benchmark.json").read_text())
    ours_ds = json.loads((folder / info["dataset"]).read_text())
    table = pd.read_parquet(folder / "table.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = DatasetV1(table=table, name=ours_ds["name"], description=ours_ds["description"],
                       annotations={c: ColumnAnnotation(description=a["description"])
                                    for c, a in ours_ds["annotations"].items()}, tags=ours_ds["tags"])
        cfg = GroupedMetricConfig(group_by="treatment", aggregation="mean", on_error="ignore")
        metrics = [Metric(label="pr_auc", config=cfg), Metric(label="roc_auc", config=cfg)]
        bench = SingleTaskBenchmarkSpecification(
            name=ours_bench["name"], dataset=ds, target_cols=["active"], input_cols=["treatment", "gene_symbol"],
            split=([], list(range(len(table)))), metrics=metrics, main_metric=metrics[0],
            target_types={"active": "classification"}, description=ours_bench["description"],
            tags=ours_bench["tags"])
        assert ds.md5sum == ours_ds["md5sum"]
        assert bench.md5sum == ours_bench["md5sum"]
        theirs = bench.model_dump(mode="json")
        theirs_ds = ds.model_dump(mode="json", exclude={"table"})
    for key in ("input_cols", "target_cols", "main_metric", "n_classes", "n_test_datapoints", "n_test_sets",
                "n_train_datapoints", "target_types", "task_type", "test_set_labels", "test_set_sizes", "version"):
        want = theirs[key]
        assert (sorted(want) if isinstance(want, list) else want) == ours_bench[key], key
    assert sorted(theirs["metrics"], key=lambda m: json.dumps(m, sort_keys=True)) == ours_bench["metrics"]
    for key in ("n_rows", "n_columns", "name", "default_adapters", "version"):
        assert theirs_ds[key] == ours_ds[key], key
    for col, ann in theirs_ds["annotations"].items():  # polaris-lib adds the dtype only when writing JSON
        assert {k: v for k, v in ours_ds["annotations"][col].items() if k != "dtype"} == \
            {k: v for k, v in ann.items() if k != "dtype" and v is not None}, col
        want = "str" if table[col].dtype == object else str(table[col].dtype)  # pandas < 3 reads str as object
        assert ours_ds["annotations"][col]["dtype"] == want, col


def test_offline_helper_loads_a_local_copy_anywhere(published, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = published["release"] / "polaris"
    bench = pol.load_benchmark(folder)
    info = json.loads((folder / "rxcurate.json").read_text())
    y = pd.read_parquet(folder / "predictions.parquet")["y_prob"].to_numpy()
    got = pol.evaluate(bench, y)
    assert got["pr_auc_grouped"] == pytest.approx(info["predictions"]["scores"]["pr_auc_grouped"], abs=1e-12)
    labels = bench.dataset.table["active"].to_numpy()
    assert pol.evaluate(bench, labels.astype(float)) == {"pr_auc_grouped": 1.0, "roc_auc_grouped": 1.0}
    assert pol.check_artifacts(published["release"], with_library=True) == []


def test_publish_without_credentials_exits_2_and_uploads_nothing(published, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLARIS_", "HF_"))}
    env.update(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"), RXCURATE_PROGRESS="0")
    rx = Path(sys.executable).with_name("rxcurate")
    out = subprocess.run([str(rx), "publish", str(published["release"]), "--to", f"polaris://{OFFICIAL}"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    text = " ".join((out.stdout + out.stderr).split())
    assert "not uploaded" in text and "no Polaris credentials" in text and "POLARIS_USERNAME" in text
    assert "Traceback" not in text


class RecordingClient:
    """Test double of polaris.hub.client.PolarisHubClient: records the uploaded results (no Hub is reachable)."""

    def __init__(self, error: Exception | None = None):
        self.uploaded: list = []
        self.error = error

    def upload_results(self, results, owner=None):
        if self.error:
            raise self.error
        self.uploaded.append((results, owner))


def test_results_upload(published):
    from polaris.evaluate import BenchmarkResultsV1

    client = RecordingClient()
    res = pol.publish_polaris(published["release"], *OFFICIAL.split("/"), client=client)
    assert res.status == "uploaded" and len(client.uploaded) == 1
    results, _ = client.uploaded[0]
    assert isinstance(results, BenchmarkResultsV1) and results.benchmark_artifact_id == OFFICIAL
    info = json.loads((published["release"] / "polaris" / "rxcurate.json").read_text())
    assert res.scores["pr_auc_grouped"] == pytest.approx(info["predictions"]["scores"]["pr_auc_grouped"], abs=1e-12)
    payload = results.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert payload["name"] and payload["benchmarkArtifactId"] == OFFICIAL
    assert payload["results"][0]["scores"]["pr_auc_grouped"] == pytest.approx(res.scores["pr_auc_grouped"])
    with pytest.raises(PublishError, match="results upload failed .*ConnectionError"):
        pol.publish_polaris(published["release"], *OFFICIAL.split("/"), client=RecordingClient(ConnectionError("x")))


def test_credentials_from_environment(monkeypatch, tmp_path):
    import polaris.utils.constants as const

    monkeypatch.setattr(const, "DEFAULT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("POLARIS_USERNAME", raising=False)
    monkeypatch.delenv("POLARIS_PASSWORD", raising=False)
    assert pol.credentials() is None
    monkeypatch.setenv("POLARIS_USERNAME", "u")
    monkeypatch.setenv("POLARIS_PASSWORD", "secret-value")
    assert pol.credentials() == "POLARIS_USERNAME/POLARIS_PASSWORD" and "secret" not in pol.credentials()
    monkeypatch.delenv("POLARIS_PASSWORD")
    (tmp_path / "hub_auth_token.json").write_text("{}")
    assert "hub_auth_token.json" in pol.credentials()
