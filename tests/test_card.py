"""The dataset card and release.json: Hub-parsable front matter matching the files, a body generated from the
data, prose hashed apart from data, determinism, input checks, and the `rxcurate card` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from release_fixture import PROSE, write_manifest
from typer.testing import CliRunner

from rxcurate.assemble import PreviousRelease, assemble, build_changelog
from rxcurate.card import card_data_hash, card_prose_hash, split_card
from rxcurate.cli import app, main
from rxcurate.errors import CardError
from rxcurate.io import sha256_file
from rxcurate.layout import release_files
from rxcurate.manifest import load_manifest
from rxcurate.release_inputs import read_inputs
from rxcurate.schemas import schema_problem

runner = CliRunner()


def _release(folder: Path) -> dict:
    return json.loads((folder / "release.json").read_text())


def test_front_matter_parses_and_matches_the_files(built):
    folder = built[1]
    meta, body = split_card((folder / "README.md").read_text())
    assert schema_problem(meta, "card", "README.md") is None
    rel = _release(folder)
    configs = {c["config_name"]: c for c in meta["configs"]}
    assert configs["default"]["data_files"] == [{"split": "train", "path": "data/train-*"}]
    assert configs["metadata"]["data_files"][0]["path"] == "metadata.parquet"
    assert configs["embeddings-baseline"]["data_files"][0]["path"] == "embeddings/baseline/embeddings.parquet"
    info = {i["config_name"]: i for i in meta["dataset_info"]}
    assert info["default"]["features"] == [{"name": "__key__", "dtype": "string"}, {"name": "jp2", "dtype": "image"}]
    assert info["default"]["splits"][0]["num_examples"] == rel["counts"]["images"]
    assert info["metadata"]["splits"][0]["num_examples"] == len(pd.read_parquet(folder / "metadata.parquet"))
    assert info["embeddings-baseline"]["splits"][0]["num_examples"] == rel["counts"]["embeddings"]["baseline"]["rows"]
    assert meta["license"] == "cc-by-4.0" and meta["pretty_name"] == "Tiny RxRx3 (test)"


def test_body_is_generated_from_the_data(built):
    folder = built[1]
    text = (folder / "README.md").read_text()
    md = pd.read_parquet(folder / "metadata.parquet")
    rel = _release(folder)
    for ptype, n in md["perturbation_type"].value_counts().items():
        assert f"| {ptype} | {n:,} |" in text
    for exp, n in md["experiment_name"].value_counts().items():
        assert f"| {exp} | 1 | {n:,} |" in text
    assert f"| wells | {md['well_id'].nunique():,} |" in text
    assert rel["data_version"] in text and "```sql" in text and "jpeg2000 (rate 8" in text
    report = json.loads((folder / "compression_report.json").read_text())
    assert f"PSNR mean {report['quality_sample']['psnr_db']['mean']:.4g} dB" in text
    recall = rel["results_summary"]["gene-gene-recall"]["baseline"]["relationships/recall_0.05_0.95"]
    assert f"| baseline | relationships/recall_0.05_0.95 | {recall:.4g} |" in text
    assert 'revision="v0.1.0"' in text and "rxcurate pull" in text and PROSE in text
    assert "## Citation" in text and "## Changelog" in text and "### 0.1.0" in text


def test_loads_with_datasets_offline(built, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    folder = built[1]
    rel = _release(folder)
    images = load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "c"))
    assert len(images) == rel["counts"]["images"]
    assert images[0]["jp2"].size == tuple(rel["image"]["shape"][::-1])
    meta = load_dataset(str(folder), "metadata", split="train", cache_dir=str(tmp_path / "c"))
    emb = load_dataset(str(folder), "embeddings-baseline", split="train", cache_dir=str(tmp_path / "c"))
    assert len(meta) == rel["counts"]["wells"] and len(emb) == rel["counts"]["wells"]


def test_release_json_lists_every_file(built):
    folder = built[1]
    rel = _release(folder)
    assert schema_problem(rel, "release", "release.json") is None
    listed = set(rel["files"])
    assert listed == set(release_files(folder)) - {"README.md", "release.json"}
    for path, entry in rel["files"].items():
        assert entry == {"sha256": sha256_file(folder / path), "size": (folder / path).stat().st_size}
    assert {"lockfile.parquet", "CHANGELOG.md", "benchmarks/truth/relationships.csv",
            "benchmarks/definitions/gene-gene-recall.json", "polaris/benchmark.json"} <= listed
    assert rel["card"]["data_hash"] == card_data_hash((folder / "README.md").read_text())
    assert "prose" not in rel["manifest"].get("card", {}) and rel["manifest"]["version"] == "0.1.0"
    assert set(rel["results_summary"]) == {"compound-gene-activity", "gene-gene-recall", "perturbation-signal"}
    assert rel["versions"]["rxcurate"] and rel["versions"]["pyarrow"].startswith("17.")


def test_assemble_is_deterministic_and_portable(built, release):
    m = load_manifest(built[0])
    before = {p: (release / p).read_bytes() for p in release_files(release)}
    again = assemble(m, release)
    assert again.status == "up to date"
    assert {p: (release / p).read_bytes() for p in release_files(release)} == before
    assert not any(str(release) in b.decode("utf-8", "ignore") or str(built[1]) in b.decode("utf-8", "ignore")
                   for p, b in before.items() if p.endswith((".json", ".md")))


def test_prose_is_hashed_apart_from_data(built, release, tmp_path):
    text0 = (release / "README.md").read_text()
    rel0 = (release / "release.json").read_bytes()
    assemble(load_manifest(write_manifest(tmp_path / "a.yaml", prose="Completely different words.")), release)
    text1 = (release / "README.md").read_text()
    assert text1 != text0 and "Completely different words." in text1
    assert (release / "release.json").read_bytes() == rel0
    assert card_data_hash(text1) == card_data_hash(text0) and card_prose_hash(text1) != card_prose_hash(text0)
    edited = text0.replace("## Contents", "## Contents!", 1)
    assert card_data_hash(edited) != card_data_hash(text0)


def test_source_folder_in_workdir_is_not_part_of_the_release(built, release):
    (release / "source").mkdir()
    (release / "source" / "metadata.csv").write_text("x\n")
    (release / ".compress-state").mkdir()
    assemble(load_manifest(built[0]), release)
    assert not any(p.startswith(("source/", ".compress")) for p in _release(release)["files"])


def test_missing_embeddings_named_with_the_fix(built, release):
    import shutil

    shutil.rmtree(release / "embeddings")
    with pytest.raises(CardError, match="rxcurate embed .* --encoder baseline"):
        assemble(load_manifest(built[0]), release)


def test_results_of_other_inputs_are_refused(built, release):
    p = release / "benchmarks" / "results" / "baseline" / "perturbation-signal.json"
    doc = json.loads(p.read_text())
    doc["provenance"]["inputs"]["embeddings"]["sha256"] = "0" * 64
    p.write_text(json.dumps(doc))
    with pytest.raises(CardError, match="perturbation-signal.json.*rerun rxcurate evaluate"):
        assemble(load_manifest(built[0]), release)


def test_missing_truth_is_named(built, release, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    shutil.rmtree(release / "benchmarks" / "truth")
    m = load_manifest(built[0])
    source_truth = Path(read_inputs(m, release).lock_info["source_root"]) / "truth"
    given = shutil.copytree(source_truth, tmp_path / "truth-given")
    # the lockfile remembers the source screen (whose truth/ is found automatically): point it elsewhere
    lockfile = release / "lockfile.parquet"
    table = pq.read_table(lockfile)
    info = json.loads(table.schema.metadata[b"rxcurate.lockfile"])
    info["source_root"] = str(tmp_path / "nowhere")
    pq.write_table(table.replace_schema_metadata({b"rxcurate.lockfile": json.dumps(info, sort_keys=True).encode()}),
                   lockfile, compression="zstd")
    with pytest.raises(CardError, match="--truth"):
        assemble(m, release)
    assemble(m, release, truth=[given / "relationships.csv", given / "compound_gene_interactions.csv"])
    assert (release / "benchmarks" / "truth" / "relationships.csv").is_file()


def test_stale_shards_are_refused(built, release):
    shard = sorted((release / "data").glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(CardError, match=f"{shard.name}.*checksums.json.*rxcurate compress"):
        assemble(load_manifest(built[0]), release)
    with pytest.raises(CardError, match="does not exist"):
        assemble(load_manifest(built[0]), release / "nope")


def test_changelog_keeps_previous_entries(built):
    inputs = read_inputs(load_manifest(built[0]), built[1])
    previous = PreviousRelease("0.0.5", {"data_version": "f" * 64, "manifest": {}, "results_summary": {}},
                               "# Changelog\n\nintro\n\n## 0.0.5\n\n- old entry\n\n## 0.0.1\n\n- first\n",
                               wells=sorted(inputs.metadata["well_id"])[1:] + ["gone_1_A01"])
    text = build_changelog(inputs, previous)
    assert text.index("## 0.1.0") < text.index("## 0.0.5") < text.index("## 0.0.1")
    assert "- old entry" in text and "(+1 added, 1 removed vs 0.0.5)" in text and "(was `ffffffffffffffff`)" in text


def test_cli_card(built, release):
    r = runner.invoke(app, ["card", str(built[0]), "--workdir", str(release), "--hub", str(release / "no-hub"),
                            "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["status"] == "up to date" and doc["version"] == "0.1.0" and doc["polaris"] is True
    assert runner.invoke(app, ["card", "--help"]).exit_code == 0


def test_cli_card_bad_input_is_one_line_exit_2(built, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["card", str(built[0]), "--workdir", str(tmp_path / "empty")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "rxcurate select" in err


def test_each_result_says_its_protocol_and_comparability(built):
    text = (built[1] / "README.md").read_text()
    for bid in ("gene-gene-recall", "compound-gene-activity"):
        at = text.index(f"### {bid}: ")
        section = text[at: text.index("\n### ", at + 4)]
        assert "Protocol: RxRx3-core notebook" in section and "Comparable with published figures: yes." in section
    at = text.index("### perturbation-signal: ")
    assert "Comparable with published figures: no. Differences: " in text[at: at + 3000]


def test_card_flags_benchmarks_on_the_statistic_the_release_was_curated_on(built, release):
    from rxcurate.layout import CURATION

    (release / CURATION).write_text(json.dumps({
        "filters": [{"stat": "replicate_consistency", "embeddings": "baseline", "p_below": 0.01,
                     "apply_to": ["CRISPR"], "keep_controls": True, "seed": 0}],
        "statistic": {"benchmark": "perturbation-signal", "metrics": ["consistency"]},
    }))
    assemble(load_manifest(built[0]), release)
    text = (release / "README.md").read_text()
    at = text.index("### perturbation-signal: ")
    ps = text[at: text.index("\n## ", at)]
    assert "**Curation flag:**" in ps and "`consistency`" in ps and "`replicate_consistency` on `baseline`" in ps
    at = text.index("### gene-gene-recall: ")
    ggr = text[at: text.index("\n### ", at + 4)]
    assert "**Curation flag:**" not in ggr and "only perturbations that passed `select.filters`" in ggr
