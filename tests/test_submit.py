"""`rxcurate submit`: the release's own embeddings reproduce its published results exactly; shuffled rows and the
list-column layout score the same; each malformed submission exits 2 naming counts and examples and records
nothing; resubmission is idempotent; results carry provenance; publishing and validation are unaffected. Hostile
inputs (issue 16): the documented maximum dimension (65,536 features) is refused by memory before scoring, saying
so; a --cache that is a file and an --out that is a folder are one-line errors (exit 2) and record nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from release_fixture import REPO_ID, build_release
from typer.testing import CliRunner

import rxcurate.consume.submit as submission
from rxcurate.benchmarks import compare_results
from rxcurate.cli import app, main
from rxcurate.consume.submit import (
    LEADERBOARD_BRANCH,
    MAX_DIM,
    SubmissionRejected,
    check_submission,
    submission_id,
    submit,
)
from rxcurate.errors import SubmissionError
from rxcurate.io import sha256_file
from rxcurate.publish import publish
from rxcurate.publish.local import LocalHub

runner = CliRunner()
TARGET = f"local://{REPO_ID}@0.1.0"
BENCHMARKS = ["compound-gene-activity", "gene-gene-recall", "perturbation-signal"]


@pytest.fixture(scope="session")
def built(tiny_rxrx3, tmp_path_factory):
    return build_release(tiny_rxrx3, tmp_path_factory.mktemp("tiny-release"))


@pytest.fixture(scope="module")
def base_hub(built, tmp_path_factory) -> Path:
    hub = tmp_path_factory.mktemp("submit-hub") / "hub"
    publish(built[1], "local", hub=hub)
    return hub


@pytest.fixture
def hub(base_hub, tmp_path) -> Path:
    return shutil.copytree(base_hub, tmp_path / "hub")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("submit-cache")


@pytest.fixture(scope="module")
def own(built) -> Path:
    return built[1] / "embeddings" / "baseline" / "embeddings.parquet"


def _branch_commits(hub: Path) -> list[str]:
    repo = hub / "datasets" / REPO_ID
    proc = subprocess.run(["git", f"--git-dir={repo}", "rev-list", f"refs/heads/{LEADERBOARD_BRANCH}"],
                          capture_output=True, text=True)
    return proc.stdout.split() if proc.returncode == 0 else []


def test_own_embeddings_reproduce_the_published_results_exactly(hub, cache, own, built):
    for bid in BENCHMARKS:
        res = submit(TARGET, bid, own, name="baseline", hub=hub, cache=cache)
        published = json.loads((built[1] / "benchmarks" / "results" / "baseline" / f"{bid}.json").read_text())
        assert res.status == "recorded"
        assert compare_results(published, res.record["results"], tolerance=0.0) == []
        assert res.record["results"]["metrics"] == published["metrics"]
        assert res.record["results"]["summary"] == published["summary"]


def test_shuffled_rows_and_list_column_score_the_same(hub, cache, own, tmp_path):
    df = pd.read_parquet(own)
    shuffled = df.sample(frac=1.0, random_state=3)
    shuffled.to_parquet(tmp_path / "shuffled.parquet")  # keeps a pandas index column: ignored
    feats = [c for c in df.columns if c.startswith("feature_")]
    x = df[feats].to_numpy(np.float32)
    table = pa.table({"well_id": pa.array(df["well_id"][::-1].tolist()),
                      "emb": pa.FixedSizeListArray.from_arrays(pa.array(x[::-1].ravel()), len(feats))})
    pq.write_table(table, tmp_path / "fixed.parquet")
    a = submit(TARGET, "gene-gene-recall", own, hub=hub, cache=cache)
    b = submit(TARGET, "gene-gene-recall", tmp_path / "shuffled.parquet", hub=hub, cache=cache)
    c = submit(TARGET, "gene-gene-recall", tmp_path / "fixed.parquet", hub=hub, cache=cache)
    assert a.record["results"]["metrics"] == b.record["results"]["metrics"] == c.record["results"]["metrics"]
    assert len({a.submission_id, b.submission_id, c.submission_id}) == 3  # different files, different ids
    assert len(_branch_commits(hub)) == 3


def test_resubmission_is_idempotent(hub, cache, own, tmp_path):
    first = submit(TARGET, "perturbation-signal", own, name="mine", hub=hub, cache=cache)
    commits = _branch_commits(hub)
    copy = tmp_path / "same-bytes.parquet"
    shutil.copyfile(own, copy)
    again = submit(TARGET, "perturbation-signal", copy, name="another name", hub=hub, cache=cache)
    assert again.status == "unchanged" and again.submission_id == first.submission_id
    assert again.record == first.record and _branch_commits(hub) == commits
    other = submit(TARGET, "gene-gene-recall", own, name="mine", hub=hub, cache=cache)
    assert other.submission_id != first.submission_id  # another benchmark is another submission
    bench = first.record["benchmark"]
    assert first.submission_id == submission_id(sha256_file(own), bench, first.record["release"]["data_version"])


def test_results_file_has_provenance_and_hub_entry(hub, cache, own, tmp_path):
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    out = tmp_path / "result.json"
    res = submit(TARGET, "compound-gene-activity", own, name="base", hub=hub, cache=cache, out=out, now=now)
    doc = json.loads(out.read_text())
    assert doc == res.record
    lh = LocalHub(hub)
    release = json.loads(lh.read_file(REPO_ID, "0.1.0", "release.json"))
    defn_rel = "benchmarks/definitions/compound-gene-activity.json"
    assert doc["release"] == {"target": TARGET, "repo_id": REPO_ID, "version": "0.1.0",
                              "commit": lh.commit_of(REPO_ID, "0.1.0"), "data_version": release["data_version"]}
    assert doc["benchmark"]["definition_sha256"] == release["files"][defn_rel]["sha256"]
    assert doc["submission"] == {"file": own.name, "sha256": sha256_file(own), "bytes": own.stat().st_size,
                                 "wells": release["counts"]["wells"], "dim": release["embeddings"][0]["dim"]}
    assert doc["submitted_at"] == "2026-01-02T03:04:05Z" and doc["rxcurate_version"]
    assert doc["rank_metric"]["name"] == "max/average_precision/mean"
    assert doc["results"]["provenance"]["seeds"] == json.loads(
        lh.read_file(REPO_ID, "0.1.0", defn_rel))["seeds"]
    rel = f"leaderboard/0.1.0/compound-gene-activity/{res.submission_id}.json"
    assert json.loads(lh.read_branch_file(REPO_ID, LEADERBOARD_BRANCH, rel)) == doc


def test_publish_stays_idempotent_and_release_still_validates_after_submissions(hub, cache, own, built):
    from rxcurate.validate import validate

    lh = LocalHub(hub)
    head, tag = lh.head(REPO_ID), lh.commit_of(REPO_ID, "0.1.0")
    submit(TARGET, "gene-gene-recall", own, hub=hub, cache=cache)
    again = publish(built[1], "local", hub=hub)
    assert again["status"] == "unchanged" and lh.head(REPO_ID) == head and lh.commit_of(REPO_ID, "0.1.0") == tag
    assert "leaderboard/" not in " ".join(lh.list_files(REPO_ID, "0.1.0"))
    rep = validate(TARGET, hub=hub, rerun=False)
    assert rep.ok, [f.message for f in rep.failures]


# ----------------------------------------------------------------------------------------------- malformed
def _write(df: pd.DataFrame, path: Path) -> Path:
    df.to_parquet(path, index=False)
    return path


def _malformed(kind: str, own: Path, tmp: Path) -> Path:
    df = pd.read_parquet(own)
    p = tmp / f"{kind}.parquet"
    if kind == "missing-wells":
        return _write(df.iloc[3:], p)
    if kind == "extra-wells":
        extra = df.iloc[:2].copy()
        extra["well_id"] = ["gene-999_1_A01", "gene-999_1_A02"]
        extra["feature_0"] += 1.0
        return _write(pd.concat([df, extra]), p)
    if kind == "nan":
        df.loc[df.index[:2], "feature_1"] = np.nan
        df.loc[df.index[5], "feature_2"] = np.inf
        return _write(df, p)
    if kind == "wrong-dims":
        feats = [c for c in df.columns if c.startswith("feature_")]
        lists = [list(r) for r in df[feats].to_numpy(np.float32)]
        lists[4] = lists[4][:-1]
        pq.write_table(pa.table({"well_id": df["well_id"].tolist(), "emb": lists}), p)
        return p
    if kind == "feature-gap":
        return _write(df.drop(columns=["feature_3"]), p)
    if kind == "duplicates":
        return _write(pd.concat([df, df.iloc[[7, 8]]]), p)
    if kind == "identical":
        feats = [c for c in df.columns if c.startswith("feature_")]
        df.loc[df.index[1], feats] = df.loc[df.index[0], feats].to_numpy()
        return _write(df, p)
    if kind == "wrong-types":
        df["feature_0"] = df["feature_0"].astype(str)
        df["well_id"] = np.arange(len(df))
        return _write(df, p)
    if kind == "extra-column":
        df["plate"] = 1
        return _write(df, p)
    if kind == "empty-file":
        p.write_bytes(b"")
        return p
    if kind == "not-parquet":
        p.write_text("well_id,feature_0\na,1\n")
        return p
    if kind == "no-rows":
        return _write(df.iloc[:0], p)
    raise AssertionError(kind)


MALFORMED = {
    "missing-wells": ["3 of the release's", "wells are missing", "e.g."],
    "extra-wells": ["2 well(s) are not in the release", "gene-999_1_A01"],
    "nan": ["NaN/inf", "3 row(s)"],
    "wrong-dims": ["inconsistent dimension", "1 rows"],
    "feature-gap": ["feature_3 is missing"],
    "duplicates": ["2 duplicated row(s)"],
    "identical": ["1 pair(s) of distinct wells have identical vectors"],
    "wrong-types": ["well_id has type int64", "1 feature column(s) are not float32/float64", "feature_0: "],
    "extra-column": ["unexpected column(s): 'plate'"],
    "empty-file": ["empty file"],
    "not-parquet": ["not a readable Parquet file"],
    "no-rows": ["no rows"],
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_submission_exits_2_and_records_nothing(kind, hub, cache, own, tmp_path, capsys):
    path = _malformed(kind, own, tmp_path)
    args = ["submit", TARGET, "-b", "gene-gene-recall", "--embeddings", str(path), "--hub", str(hub),
            "--cache", str(cache)]
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1
    for needle in MALFORMED[kind]:
        assert needle in err, err
    with pytest.raises(SystemExit) as exc:
        main([*args, "--json"])
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert exc.value.code == 2 and doc["ok"] is False and doc["errors"] and len(out.strip().splitlines()) == 1
    assert _branch_commits(hub) == []


def test_every_problem_is_reported_at_once(own, tmp_path):
    from rxcurate.consume.submit import check_submission

    df = pd.read_parquet(own)
    wells = sorted(df["well_id"])
    bad = pd.concat([df.iloc[5:], df.iloc[[10]]])
    bad.loc[bad.index[0], "feature_0"] = np.nan
    with pytest.raises(SubmissionRejected) as exc:
        check_submission(_write(bad, tmp_path / "bad.parquet"), wells)
    text = " | ".join(exc.value.problems)
    assert "5 of the release's" in text and "1 duplicated row(s)" in text and "NaN/inf" in text
    with pytest.raises(SubmissionRejected, match="above the limit of 100 bytes"):
        check_submission(own, wells, max_bytes=100)


def test_unknown_benchmark_and_bad_name(hub, cache, own):
    with pytest.raises(SubmissionError, match="use one of compound-gene-activity, gene-gene-recall"):
        submit(TARGET, "nope", own, hub=hub, cache=cache)
    with pytest.raises(SubmissionError, match="one-line name"):
        submit(TARGET, "gene-gene-recall", own, name="a\nb", hub=hub, cache=cache)


def test_cli_json_success_is_one_object(hub, cache, own):
    r = runner.invoke(app, ["submit", "local://" + REPO_ID, "-b", "perturbation-signal", "--embeddings", str(own),
                            "--hub", str(hub), "--cache", str(cache), "--json", "--name", "ci-bot"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["status"] == "recorded" and doc["record"]["name"] == "ci-bot"
    assert doc["record"]["release"]["version"] == "0.1.0" and doc["rank_metric"]["value"] is not None


def test_hf_push_opens_a_pull_request_and_never_prints_the_token(monkeypatch):
    from rxcurate.consume.submit import record_entry
    from rxcurate.publish.hf import HfHub

    calls = []

    class FakeApi:  # a test double of HfApi's write call
        token = "hf_secret_token_123"

        def create_commit(self, repo_id, operations, **kw):
            calls.append((repo_id, [op.path_in_repo for op in operations], kw))

            class Info:
                pr_url = "https://hf.example/datasets/org/x/discussions/1"
            return Info()

    api = FakeApi()
    url = record_entry(HfHub(api), "org/x", "leaderboard/1.0.0/b/sub-1.json", b"{}", "Leaderboard submission mine")
    assert url.endswith("/discussions/1")
    assert calls == [("org/x", ["leaderboard/1.0.0/b/sub-1.json"],
                      {"commit_message": "Leaderboard submission mine", "repo_type": "dataset", "create_pr": True})]
    api.token = None
    with pytest.raises(SubmissionError, match="needs a Hugging Face token") as exc:
        record_entry(HfHub(api), "org/x", "leaderboard/1.0.0/b/sub-1.json", b"{}", "Leaderboard submission mine")
    assert "hf_secret" not in str(exc.value)


def test_polaris_push_is_reported_as_skipped_without_credentials(monkeypatch):
    from rxcurate.consume.submit import polaris_status

    monkeypatch.delenv("POLARIS_USERNAME", raising=False)
    monkeypatch.delenv("POLARIS_PASSWORD", raising=False)
    assert "skipped" in polaris_status() and "credentials" in polaris_status()


def test_submit_help():
    r = runner.invoke(app, ["submit", "--help"])
    assert r.exit_code == 0 and "--benchmark" in r.output and "--json" in r.output and "--push" in r.output


# ------------------------------------------------------------------------------------------------ hostile inputs
GIB = 1 << 30


@pytest.fixture(scope="module")
def widest(own, tmp_path_factory) -> Path:
    """The release's wells with MAX_DIM (65,536) random float32 features in one fixed-size list column."""
    wells = pq.read_table(own, columns=["well_id"]).column("well_id")
    flat = np.random.default_rng(0).normal(size=len(wells) * MAX_DIM).astype(np.float32)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(flat), MAX_DIM)
    path = tmp_path_factory.mktemp("widest") / "widest.parquet"
    pq.write_table(pa.table({"well_id": wells, "embedding": emb}), path)
    return path


def _no_scoring(*args, **kwargs):
    raise AssertionError("score() called: the memory check must refuse first")


def test_max_dimension_is_refused_by_memory_before_scoring(hub, tmp_path, widest, monkeypatch):
    monkeypatch.setattr(submission, "available_memory", lambda: 16 * GIB)
    monkeypatch.setattr(submission, "score", _no_scoring)
    with pytest.raises(SubmissionRejected) as exc:
        submit(TARGET, "gene-gene-recall", widest, hub=hub, cache=tmp_path / "cache")
    text = str(exc.value)
    for needle in ("65,536 features", "GiB of memory", "65,536 x 65,536 float64", "16.0 GiB available",
                   "reduce the dimension (e.g. PCA to 16,384 features)"):
        assert needle in text, text


def test_reading_a_submission_is_capped_by_memory(own, widest, monkeypatch):
    wells = pq.read_table(own, columns=["well_id"]).column("well_id").to_pylist()
    monkeypatch.setattr(submission, "available_memory", lambda: 1 << 20)
    with pytest.raises(SubmissionRejected, match=r"GiB uncompressed need about .* GiB of memory to check"):
        check_submission(widest, wells)


def _one_line_exit_2(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main([*args, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert exc.value.code == 2 and doc["ok"] is False
    return err


def test_cache_that_is_a_file(hub, own, tmp_path, capsys):
    cache = tmp_path / "cache-file"
    cache.write_text("not a folder")
    err = _one_line_exit_2(["submit", TARGET, "-b", "gene-gene-recall", "--embeddings", str(own), "--hub", str(hub),
                            "--cache", str(cache)], capsys)
    assert "cache folder" in err and str(cache) in err


def test_out_that_is_a_folder_records_nothing(hub, own, tmp_path, capsys):
    out = tmp_path / "out-folder"
    out.mkdir()
    err = _one_line_exit_2(["submit", TARGET, "-b", "gene-gene-recall", "--embeddings", str(own), "--hub", str(hub),
                            "--cache", str(tmp_path / "cache"), "--out", str(out)], capsys)
    assert f"--out {out}" in err and "folder" in err
    assert not list(out.iterdir())
