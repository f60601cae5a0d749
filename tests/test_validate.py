"""The validator: a published version validates; tampering (flipped byte, deleted row, duplicated embedding row,
altered result, card claiming another count, ...) is caught with a message naming the file; the CLI's exit codes
and JSON report. Forged numbers (issue 16): every number a reader or the leaderboard uses is re-derived from the
published files, so a forgery that also re-hashes release.json is still caught naming the file and the number; a
damaged local hub (corrupt object, missing file, empty tree, symbolic link) gives a report and exit 1, never a
traceback."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet  # noqa: F401 - pa.parquet
import pytest
from release_fixture import REPO_ID, build_release, rehash, rewrite_parquet
from typer.testing import CliRunner

from rxcurate.card import card_data_hash
from rxcurate.cli import app, main
from rxcurate.layout import read_lockfile
from rxcurate.manifest import data_version
from rxcurate.publish import publish
from rxcurate.publish.local import LocalHub
from rxcurate.release_inputs import manifest_of
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
    (img_full,) = [f.message for f in full.findings if f.check == "images" and f.file == "data/"]
    (img_sample,) = [f.message for f in sample.findings if f.check == "images" and f.file == "data/"]
    digests = [f.message for f in sample.findings if f.file == "image_digests.parquet"]
    assert digests == [f"all {n_images:,} images match the digest recorded for their key"]
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


# ------------------------------------------------------------------------------------------------ forged numbers
GGR = "benchmarks/results/baseline/gene-gene-recall.json"
METRIC = "relationships/recall_0.05_0.95"


def _release(folder: Path) -> dict:
    return json.loads((folder / "release.json").read_text())


def _write_release(folder: Path, doc: dict) -> None:
    (folder / "release.json").write_text(json.dumps(doc, sort_keys=True, indent=2) + "\n")


def _edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def test_the_published_version_passes_every_re_derivation(checkout):
    rep = validate_folder(checkout, checkout=True)
    assert rep.ok, _failures(rep)
    messages = " ".join(f.message for f in rep.findings)
    assert "regenerated from the published files" in messages and "results_summary recomputed" in messages
    assert "byte counts re-measured from the shards" in messages


def test_edited_results_summary_is_caught_by_the_re_run(checkout):
    published = json.loads((checkout / GGR).read_text())["summary"][METRIC]
    _edit_json(checkout / GGR, lambda d: d["summary"].__setitem__(METRIC, published + 0.25))
    rehash(checkout, GGR)
    rep = validate_folder(checkout, checkout=True)
    _assert_caught(rep, GGR, "does not reproduce", f"summary {METRIC}", str(published + 0.25))


def test_edited_release_json_results_summary(checkout):
    doc = _release(checkout)
    doc["results_summary"]["gene-gene-recall"]["baseline"][METRIC] = 0.99
    _write_release(checkout, doc)
    rep = validate_folder(checkout, rerun=False, checkout=True)
    _assert_caught(rep, "release.json", "results_summary gene-gene-recall/baseline", METRIC, "0.99")


def test_edited_card_number_with_re_hashed_release_json(checkout):
    card = checkout / "README.md"
    value = json.loads((checkout / GGR).read_text())["summary"][METRIC]
    line = f"| baseline | {METRIC} | {value:.4g} |"
    text = card.read_text()
    assert line in text
    card.write_text(text.replace(line, f"| baseline | {METRIC} | 0.9123 |"))
    doc = _release(checkout)
    doc["card"]["data_hash"] = card_data_hash(card.read_text())  # the forger updates release.json too
    _write_release(checkout, doc)
    rep = validate_folder(checkout, rerun=False, checkout=True)
    _assert_caught(rep, "README.md", "regenerated from the published files", "0.9123", f"{value:.4g}")
    assert not [m for m in _failures(rep) if "card.data_hash" in m]  # only the re-derivation catches it


def test_declared_codec_rate_against_the_shard_sizes(checkout):
    """Every record of the codec claims rate 20 (release.json image + manifest + hashes, the compression report):
    only the measured image sizes give it away."""
    def rate(codec: dict) -> None:
        codec["value"] = 20.0

    _edit_json(checkout / "compression_report.json", lambda d: rate(d["transform"]["codec"]))
    rehash(checkout, "compression_report.json")
    doc = _release(checkout)
    rate(doc["image"]["codec"])
    doc["manifest"]["transform"]["codec"]["rate"] = 20
    m = manifest_of(doc)
    doc["manifest_hash"] = m.manifest_hash()
    doc["data_version"] = data_version(read_lockfile(checkout, m).content_hash, m.transform_section())
    _write_release(checkout, doc)
    rep = validate_folder(checkout, rerun=False, checkout=True)
    _assert_caught(rep, "data/", "declared codec rate 20", "allows at most 461 bytes", "528 bytes")
    # and a lone edit of release.json's codec is named against the manifest and the report
    doc["image"]["codec"]["value"] = 4.0
    _write_release(checkout, doc)
    _assert_caught(validate_folder(checkout, rerun=False, checkout=True), "release.json", "image.codec", "4.0",
                   "20.0")


def test_compression_report_bytes_are_re_measured(checkout):
    _edit_json(checkout / "compression_report.json",
               lambda d: d["bytes"]["per_image"].__setitem__("mean", 300.0))
    rehash(checkout, "compression_report.json")
    rep = validate_folder(checkout, rerun=False, checkout=True)
    _assert_caught(rep, "compression_report.json", "bytes.per_image.mean is 300.0", "522.55")


def test_metadata_csv_diverging_from_parquet(checkout):
    path = checkout / "metadata.csv"
    lines = path.read_text().split("\n")
    fields = lines[3].split(",")
    col = lines[0].split(",").index("plate")
    fields[col] = "77"
    lines[3] = ",".join(fields)
    path.write_text("\n".join(lines))
    rehash(checkout, "metadata.csv")
    rep = validate_folder(checkout, rerun=False, checkout=True)
    _assert_caught(rep, "metadata.csv", "line 4 (plate) reads '77'", "metadata.parquet has '1'")


# ------------------------------------------------------------------------------------------------ damaged hubs
def _hub_copy(built, tmp_path) -> tuple[Path, Path]:
    hub = tmp_path / "hub"
    publish(built[1], "local", hub=hub)
    return hub, LocalHub(hub).repo_path(REPO_ID)


def _git(repo: Path, *args: str, input: bytes | None = None) -> str:
    env = {"GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@x", "GIT_COMMITTER_NAME": "x", "GIT_COMMITTER_EMAIL": "x@x",
           "PATH": os.environ["PATH"], "HOME": str(repo)}
    return subprocess.run(["git", f"--git-dir={repo}", *args], input=input, capture_output=True, check=True,
                          env=env).stdout.decode().strip()


def _tag_tree(repo: Path, tree: str, version: str = "0.2.0") -> None:
    commit = _git(repo, "commit-tree", tree, "-m", "forged")
    _git(repo, "update-ref", f"refs/tags/v{version}", commit)


def _entries(repo: Path, drop: str = "", add: bytes = b"") -> str:
    """A tree of v0.1.0 less ``drop`` plus the ``git mktree`` lines ``add``."""
    listing = _git(repo, "ls-tree", "-r", "--full-tree", "v0.1.0").encode()
    lines = [e for e in listing.split(b"\n") if e and not e.endswith(b"\t" + drop.encode())] if drop else \
        listing.split(b"\n")
    index = repo.parent / "forge-index"
    env_lines = b"\n".join(lines) + b"\n" + add
    subprocess.run(["git", f"--git-dir={repo}", "update-index", "--index-info"], input=env_lines, check=True,
                   env={"GIT_INDEX_FILE": str(index), "PATH": os.environ["PATH"]}, capture_output=True)
    tree = subprocess.run(["git", f"--git-dir={repo}", "write-tree"], check=True, capture_output=True,
                          env={"GIT_INDEX_FILE": str(index), "PATH": os.environ["PATH"]}).stdout.decode().strip()
    index.unlink()
    return tree


def _validate_cli(hub: Path, version: str) -> tuple[int, dict, str]:
    text = runner.invoke(app, ["validate", f"local://{REPO_ID}@{version}", "--hub", str(hub), "--no-rerun"])
    js = runner.invoke(app, ["validate", f"local://{REPO_ID}@{version}", "--hub", str(hub), "--no-rerun", "--json"])
    for r in (text, js):
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
        assert "Traceback" not in r.output
    assert text.exit_code == js.exit_code == 1, text.output
    return text.exit_code, json.loads(js.stdout), text.output


def test_corrupted_git_object_gives_a_report(built, tmp_path):
    hub, repo = _hub_copy(built, tmp_path)
    blob = _git(repo, "rev-parse", "v0.1.0:metadata.csv")
    obj = repo / "objects" / blob[:2] / blob[2:]
    obj.chmod(0o644)
    obj.write_bytes(b"not a zlib stream at all")
    _, doc, out = _validate_cli(hub, "0.1.0")
    assert doc["ok"] is False and any("cannot be checked out" in f["message"] for f in doc["failures"]), doc
    assert "INVALID" in out


def test_file_listed_in_release_json_missing_from_the_tree(built, tmp_path):
    hub, repo = _hub_copy(built, tmp_path)
    _tag_tree(repo, _entries(repo, drop="metadata.parquet"))
    _, doc, out = _validate_cli(hub, "0.2.0")
    messages = [f["message"] for f in doc["failures"]]
    assert any(m.startswith("metadata.parquet: listed in release.json but missing") for m in messages), messages


def test_tag_on_an_empty_tree(built, tmp_path):
    hub, repo = _hub_copy(built, tmp_path)
    _tag_tree(repo, _git(repo, "mktree", input=b""))
    _, doc, out = _validate_cli(hub, "0.2.0")
    assert doc["ok"] is False and doc["failures"][0]["file"] == "release.json", doc


def test_tree_containing_a_symlink(built, tmp_path):
    hub, repo = _hub_copy(built, tmp_path)
    link = _git(repo, "hash-object", "-w", "--stdin", input=b"/etc/passwd")
    _tag_tree(repo, _entries(repo, drop="metadata.csv", add=f"120000 blob {link}\tmetadata.csv\n".encode()))
    _, doc, out = _validate_cli(hub, "0.2.0")
    assert any("metadata.csv is not a regular file" in f["message"] for f in doc["failures"]), doc


def test_a_symlink_in_a_folder_is_a_finding(checkout, tmp_path):
    outside = tmp_path / "outside.csv"
    outside.write_bytes((checkout / "metadata.csv").read_bytes())
    (checkout / "metadata.csv").unlink()
    (checkout / "metadata.csv").symlink_to(outside)
    rep = validate_folder(checkout, rerun=False, checkout=True)
    _assert_caught(rep, "metadata.csv", "symbolic link", "copy the file")


def test_image_bytes_swapped_between_two_keys_are_caught(checkout):
    """Swapping two images' bytes keeps the shard well-formed; with the shard re-hashed in release.json only the
    per-key digests compress recorded (image_digests.parquet) catch it, naming the keys."""
    shard = sorted((checkout / "data").glob("*.parquet"))[0]
    rel = f"data/{shard.name}"

    def swap(t):
        col = t.column("jp2").combine_chunks()
        rows = col.to_pylist()
        rows[0], rows[1] = rows[1], rows[0]
        rows[0]["path"], rows[1]["path"] = rows[1]["path"], rows[0]["path"]
        return t.set_column(t.schema.get_field_index("jp2"), "jp2", pa.array(rows, type=col.type))

    rewrite_parquet(shard, swap)
    rehash(checkout, rel)
    keys = pa.parquet.read_table(shard, columns=["__key__"]).column("__key__").to_pylist()[:2]
    rep = validate_folder(checkout, rerun=False, checkout=True)
    _assert_caught(rep, "image_digests.parquet", "2 image(s) differ from the digest recorded for their key", keys[0])
