"""The validator: a published version validates; tampering (flipped byte, deleted row, duplicated embedding row,
altered result, card claiming another count, ...) is caught with a message naming the file; the CLI's exit codes
and JSON report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet  # noqa: F401 - pa.parquet
import pytest
from release_fixture import REPO_ID, build_release, rehash, rewrite_parquet
from typer.testing import CliRunner

from rxcurate.cli import app, main
from rxcurate.publish import publish
from rxcurate.publish.local import LocalHub
from rxcurate.validate import identical_pairs, validate, validate_folder

runner = CliRunner()


@pytest.fixture(scope="session")
def built(tiny_rxrx3, tmp_path_factory):
    return build_release(tiny_rxrx3, tmp_path_factory.mktemp("tiny-release"))


@pytest.fixture(scope="session")
def hub(built, tmp_path_factory) -> Path:
    hub = tmp_path_factory.mktemp("hub")
    publish(built[1], "local", hub=hub)
    return hub


@pytest.fixture
def checkout(hub, tmp_path) -> Path:
    """A fresh checkout of the published version (what the validator downloads)."""
    return LocalHub(hub).checkout(REPO_ID, "0.1.0", tmp_path / "co")


def _failures(rep) -> list[str]:
    return [f.message for f in rep.failures]


def _assert_caught(rep, file: str, *words: str) -> None:
    assert not rep.ok
    hits = [m for m in _failures(rep) if m.startswith(file) and all(w in m for w in words)]
    assert hits, f"no failure naming {file} with {words}: {_failures(rep)}"


def test_published_version_validates(hub):
    rep = validate(f"local://{REPO_ID}@0.1.0", hub=hub)
    assert rep.ok, _failures(rep)
    checks = {f.check for f in rep.findings}
    assert {"release.json", "files", "manifest", "counts", "images", "card", "embeddings", "benchmarks",
            "polaris"} <= checks
    reproduced = [f for f in rep.findings if f.check == "benchmarks" and "reproduces" in f.message]
    assert len(reproduced) == 3
    assert rep.commit == LocalHub(hub).commit_of(REPO_ID, "0.1.0") and rep.version == "0.1.0"
    assert validate(f"local://{REPO_ID}@latest", hub=hub).version == "0.1.0"


def test_full_decodes_every_image_sample_does_not(checkout):
    full = validate_folder(checkout, full=True, rerun=False, checkout=True)
    sample = validate_folder(checkout, sample=10, seed=3, rerun=False, checkout=True)
    assert full.ok and sample.ok
    n_images = json.loads((checkout / "release.json").read_text())["counts"]["images"]
    (img_full,) = [f.message for f in full.findings if f.check == "images"]
    (img_sample,) = [f.message for f in sample.findings if f.check == "images"]
    assert img_full.startswith(f"{n_images:,} of {n_images:,}") and img_sample.startswith(f"10 of {n_images:,}")


def test_flipped_byte_in_a_shard(checkout):
    shard = sorted((checkout / "data").glob("*.parquet"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    rep = validate_folder(checkout, rerun=False, checkout=True)
    _assert_caught(rep, f"data/{shard.name}", "sha256 differs")


def test_deleted_row_in_a_shard(checkout):
    shard = sorted((checkout / "data").glob("*.parquet"))[0]
    rewrite_parquet(shard, lambda t: t.slice(1))
    rep = validate_folder(checkout, rerun=False, checkout=True)
    _assert_caught(rep, f"data/{shard.name}", "size")
    rehash(checkout, f"data/{shard.name}")  # even with forged checksums the counts and keys give it away
    rep = validate_folder(checkout, rerun=False, checkout=True)
    _assert_caught(rep, "data/", "missing from the shards")
    assert not any(m.startswith("data/") and "sha256" in m for m in _failures(rep))


def test_duplicated_embedding_row(checkout):
    rel = "embeddings/baseline/embeddings.parquet"
    rewrite_parquet(checkout / rel, lambda t: pa.concat_tables([t, t.slice(5, 1)]).sort_by("well_id"))
    rehash(checkout, rel)
    rep = validate_folder(checkout, rerun=False, checkout=True)
    _assert_caught(rep, rel, "duplicated", "appears more than once")
    _assert_caught(rep, rel, "120 rows", "119")


def test_identical_vectors_of_distinct_wells(checkout):
    rel = "embeddings/baseline/embeddings.parquet"

    def copy_row(t):
        cols = {c: t.column(c).to_pylist() for c in t.column_names}
        for c in cols:
            if c.startswith("feature_"):
                cols[c][7] = cols[c][3]
        return pa.table(cols, schema=t.schema)

    rewrite_parquet(checkout / rel, copy_row)
    rehash(checkout, rel)
    wells = pa.parquet.read_table(checkout / rel, columns=["well_id"]).column(0).to_pylist()
    rep = validate_folder(checkout, rerun=False, checkout=True)
    _assert_caught(rep, rel, "identical vectors", f"{wells[3]}={wells[7]}")


def test_embedding_nan_and_wrong_dim(checkout):
    rel = "embeddings/baseline/embeddings.parquet"

    def poison(t):
        col = t.column("feature_3").to_numpy().copy()
        col[2] = np.nan
        return t.set_column(t.schema.get_field_index("feature_3"), "feature_3", pa.array(col, pa.float32())) \
            .drop_columns([t.column_names[-1]])

    rewrite_parquet(checkout / rel, poison)
    rehash(checkout, rel)
    rep = validate_folder(checkout, rerun=False, checkout=True)
    _assert_caught(rep, rel, "NaN/inf")
    _assert_caught(rep, rel, "declared dimension")


def test_altered_result_value(checkout):
    rel = "benchmarks/results/baseline/gene-gene-recall.json"
    doc = json.loads((checkout / rel).read_text())
    doc["metrics"]["sources"]["relationships"]["recall_0.05_0.95"] += 0.01
    (checkout / rel).write_text(json.dumps(doc, indent=2))
    rehash(checkout, rel)
    rep = validate_folder(checkout, checkout=True)
    _assert_caught(rep, rel, "does not reproduce", "recall_0.05_0.95")
    assert [f for f in rep.findings if f.ok and "reproduces" in f.message]  # the other results still reproduce


def test_card_claiming_another_count(checkout):
    card = checkout / "README.md"
    n = json.loads((checkout / "release.json").read_text())["counts"]["images"]
    text = card.read_text()
    assert f"num_examples: {n}\n" in text
    card.write_text(text.replace(f"num_examples: {n}\n", f"num_examples: {n + 7}\n", 1))
    rep = validate_folder(checkout, rerun=False, checkout=True)
    _assert_caught(rep, "README.md", f"claims {n + 7:,}", f"{n:,}")
    _assert_caught(rep, "README.md", "data_hash")


def test_card_prose_edit_is_fine_but_body_edit_is_not(checkout):
    from rxcurate.card import PROSE_END

    card = checkout / "README.md"
    text = card.read_text()
    marker = PROSE_END.format(name="about")
    card.write_text(text.replace(marker, "Some more prose written by a maintainer.\n" + marker, 1))
    assert validate_folder(checkout, rerun=False, checkout=True).ok
    card.write_text(card.read_text().replace("## Contents", "## Contents (edited)", 1))
    _assert_caught(validate_folder(checkout, rerun=False, checkout=True), "README.md", "prose")


def test_unlisted_and_missing_files(checkout):
    (checkout / "data" / "extra.bin").write_bytes(b"x")
    (checkout / "metadata.csv").unlink()
    rep = validate_folder(checkout, rerun=False, checkout=True)
    _assert_caught(rep, "data/extra.bin", "not listed")
    _assert_caught(rep, "metadata.csv", "missing")


def test_deleted_metadata_row_breaks_one_to_one(checkout):
    import pandas as pd

    meta = pd.read_parquet(checkout / "metadata.parquet").iloc[1:]
    meta.to_parquet(checkout / "metadata.parquet", index=False)
    meta.to_csv(checkout / "metadata.csv", index=False)
    for rel in ("metadata.parquet", "metadata.csv"):
        rehash(checkout, rel)
    rep = validate_folder(checkout, rerun=False, checkout=True)
    _assert_caught(rep, "metadata.parquet", "wells differ from lockfile.parquet")
    _assert_caught(rep, "data/", "match no metadata well")


def test_identical_pairs():
    x = np.array([[1, 2], [3, 4], [1, 2], [1, 2]], dtype=np.float32)
    assert identical_pairs(["d", "b", "a", "c"], x) == [("a", "c"), ("a", "d"), ("c", "d")]
    assert identical_pairs(["a", "b"], np.eye(2, dtype=np.float32)) == []


def test_validate_through_the_hub_catches_a_rewritten_tag(built, tmp_path):
    """A corrupted mirror: the tag forcibly moved to a commit with a flipped byte; validate the target string."""
    hub = tmp_path / "hub"
    publish(built[1], "local", hub=hub)
    lh = LocalHub(hub)
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(lh.repo_path(REPO_ID)), str(work)], check=True)
    shard = sorted((work / "data").glob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    env = {"GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@x", "GIT_COMMITTER_NAME": "x", "GIT_COMMITTER_EMAIL": "x@x",
           "PATH": "/usr/bin:/bin"}
    cmds = (["commit", "-qam", "tamper"], ["tag", "-f", "v0.1.0"], ["push", "-qf", "origin", "HEAD:main", "v0.1.0"])
    for cmd in cmds:
        subprocess.run(["git", "-C", str(work), *cmd], check=True, env=env, capture_output=True)
    r = runner.invoke(app, ["validate", f"local://{REPO_ID}@0.1.0", "--hub", str(hub), "--no-rerun"])
    assert r.exit_code == 1
    assert f"data/{shard.name}: sha256 differs" in r.output and "INVALID" in r.output


def test_cli_validate_ok_and_json_report(hub, tmp_path):
    report = tmp_path / "report.json"
    r = runner.invoke(app, ["validate", f"local://{REPO_ID}", "--hub", str(hub), "--json", "--report", str(report)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["ok"] is True and doc["failures"] == [] and doc["version"] == "0.1.0"
    assert json.loads(report.read_text()) == doc


def test_cli_validate_bad_input_is_one_line_exit_2(hub, capsys):
    for target in (f"local://{REPO_ID}@9.9.9", "local://nobody/nothing", "polaris://a/b", "ftp://x/y"):
        with pytest.raises(SystemExit) as exc:
            main(["validate", target, "--hub", str(hub)])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err


def test_cli_validate_help():
    r = runner.invoke(app, ["validate", "--help"])
    assert r.exit_code == 0 and "--full" in r.output and "release.json" in r.output


# ------------------------------------------------------------------------------------------------ HTTP read path
def test_validate_hf_target_over_http(olah_endpoint):
    from rxcurate.errors import ReleaseValidationError

    rep = validate(f"hf://{REPO_ID}@latest", endpoint=olah_endpoint, rerun=False)
    assert rep.ok, _failures(rep)
    assert rep.version == "0.1.0" and rep.target == f"hf://{REPO_ID}@0.1.0"
    with pytest.raises(ReleaseValidationError, match="no version 9.9.9.*0.1.0"):
        validate(f"hf://{REPO_ID}@9.9.9", endpoint=olah_endpoint)
