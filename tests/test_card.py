"""The dataset card and release.json: Hub-parsable front matter matching the files, a body generated from the
data, prose hashed apart from data, determinism, input checks, and the `rxcurate card` CLI."""

from __future__ import annotations

import importlib.metadata
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
    assert rel["versions"]["rxcurate"] and rel["versions"]["pyarrow"] == importlib.metadata.version("pyarrow")


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


# ------------------------------------------------------------------------------------------------ issue 15
def _card_images(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted((folder / "card").glob("*.png"))}


def _png(data: bytes):
    import io

    from PIL import Image

    im = Image.open(io.BytesIO(data))
    assert im.format == "PNG"
    return im


def test_montage_is_published_embedded_and_decodes(built):
    from rxcurate.card import MONTAGE_GAP, MONTAGE_TILE

    folder = built[1]
    rel = _release(folder)
    text = (folder / "README.md").read_text()
    assert "card/montage.png" in rel["files"]
    assert "](card/montage.png)" in text and "## Sample images" in text
    at = text.index("## Sample images")
    section = text[at: text.index("\n## ", at + 4)]
    # one well per kind, the first by well_id, named in the caption table
    md = pd.read_parquet(folder / "metadata.parquet").sort_values("well_id")
    ctrl = md["treatment"].isin(["EMPTY_control", "CRISPR_control"])
    first = {"CRISPR knockout": md[(md["perturbation_type"] == "CRISPR") & ~ctrl]["well_id"].iloc[0],
             "compound": md[(md["perturbation_type"] == "COMPOUND") & ~ctrl]["well_id"].iloc[0],
             "EMPTY_control": md[md["treatment"] == "EMPTY_control"]["well_id"].iloc[0],
             "CRISPR_control": md[md["treatment"] == "CRISPR_control"]["well_id"].iloc[0]}
    for i, (kind, well) in enumerate(first.items()):
        assert f"| {i + 1} | {kind} | `{well}` |" in section
    assert "| 1 | Hoechst (nuclei): blue | (19, 0, 249) | 51 |" in section  # the documented RGB mapping
    h, w = rel["image"]["shape"]
    f = max(1, -(-max(h, w) // MONTAGE_TILE))
    im = _png((folder / "card" / "montage.png").read_bytes())
    assert im.mode == "RGB" and im.size == (4 * (w // f) + 3 * MONTAGE_GAP, h // f)
    import numpy as np

    px = np.asarray(im)
    assert px[:, w // f: w // f + MONTAGE_GAP].min() == 255 and px[:, : w // f].std() > 0  # gap white, tile not flat


def test_composite_follows_the_rxrx_mapping():
    import numpy as np

    from rxcurate.card import composite_rgb

    img = {c: np.full((2, 2), v, dtype=np.uint8) for c, v in ((1, 51), (3, 32))}
    out = composite_rgb(img)
    # channel 1 saturates (51/51) to its colour; channel 3 at half range adds int(0.5 * (255, 0, 25)) = (127, 0, 12)
    assert out.dtype == np.uint8 and out[0, 0].tolist() == [19 + 127, 0, 255]


def test_card_images_are_byte_identical_across_builds(built, release):
    from rxcurate.card import build_card

    m = load_manifest(built[0])
    published = _card_images(built[1])
    assert set(published) == {"card/montage.png", "card/compound_gene_ap.png", "card/gene_gene_recall.png"}
    changelog = (built[1] / "CHANGELOG.md").read_text()
    one = build_card(read_inputs(m, built[1]), changelog)
    two = build_card(read_inputs(m, release), changelog)
    assert one.assets == two.assets == published and one.text == two.text
    for name in ("compound_gene_ap.png", "gene_gene_recall.png"):
        im = _png(published[f"card/{name}"])
        assert "Software" not in im.info and im.size[0] >= 400
    assert assemble(m, release).status == "up to date" and _card_images(release) == published


def test_plots_are_embedded_only_when_their_results_exist(built, release, tmp_path):
    import shutil

    import yaml

    text = (built[1] / "README.md").read_text()
    at = text.index("### Plots")
    assert at > text.index("## Benchmarks") and "](card/compound_gene_ap.png)" in text[at:] \
        and "](card/gene_gene_recall.png)" in text[at:]
    raw = yaml.safe_load(built[0].read_text())
    raw["benchmarks"] = ["compound-gene-activity", "perturbation-signal"]
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    (release / "benchmarks" / "results" / "baseline" / "gene-gene-recall.json").unlink()
    shutil.copy(built[1] / "card" / "montage.png", tmp_path / "keep.png")
    assemble(load_manifest(path), release)
    text = (release / "README.md").read_text()
    assert not (release / "card" / "gene_gene_recall.png").exists() and "gene_gene_recall.png" not in text
    assert "card/gene_gene_recall.png" not in _release(release)["files"]
    assert "](card/compound_gene_ap.png)" in text and (release / "card" / "compound_gene_ap.png").is_file()


def test_front_matter_has_licence_paper_and_source_datasets(built, release, tmp_path):
    import yaml
    from huggingface_hub import DatasetCard

    from rxcurate.errors import ManifestError

    raw = yaml.safe_load(built[0].read_text())
    raw["card"].update({"license": "other", "license_name": "recursion-dataset-license",
                        "license_link": "https://www.rxrx.ai/recursion-dataset-license", "source_datasets": ["RxRx3"],
                        "paper": {"title": "RxRx3-core: Benchmarking drug-target interactions in High-Content "
                                           "Microscopy", "arxiv": "2503.20158"}})
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assemble(load_manifest(path), release)
    card = DatasetCard.load(release / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "other" and data["license_name"] == "recursion-dataset-license"
    assert data["license_link"] == "https://www.rxrx.ai/recursion-dataset-license"
    assert data["source_datasets"] == ["RxRx3"] and "arxiv:2503.20158" in data["tags"]
    assert schema_problem(data, "card", "README.md") is None
    assert "| paper | [RxRx3-core: Benchmarking drug-target interactions in High-Content Microscopy]" \
           "(https://arxiv.org/abs/2503.20158) |" in card.text
    assert "| licence | `other` (recursion-dataset-license): [https://www.rxrx.ai/recursion-dataset-license]" \
        in card.text
    assert "| source datasets | RxRx3 |" in card.text
    raw["card"]["license"] = "cc-by-4.0"  # a named licence needs `other`
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ManifestError, match="card.license: other"):
        load_manifest(path)
    for f in ("rxrx3-core", "rxrx3-core-curated", "rxrx3-core-vitally"):
        m = load_manifest(Path(__file__).resolve().parents[1] / "manifests" / f"{f}.yaml")
        assert m.card["license"] == "other" and m.card["source_datasets"] == ["RxRx3"]
        assert m.card["paper"]["arxiv"] == "2503.20158"


def test_numbers_have_four_significant_digits(built):
    import re

    from rxcurate.card import fmt_num, strip_prose

    assert [fmt_num(v) for v in (0.123456789, 2.5, 10.0, 61177.3, 12, 1234567, None, float("nan"), 1e-06, True)] \
        == ["0.1235", "2.5", "10", "61,180", "12", "1,234,567", "n/a", "n/a", "1e-06", "true"]
    text = (built[1] / "README.md").read_text()
    body = strip_prose(text[text.index("\n# "):])
    body = re.sub(r"```.*?```", "", body, flags=re.S)  # code (SQL, examples) is not a number the card computed
    for number in re.findall(r"(?<![\w.-])\d+\.\d+(?:e[-+]\d+)?(?![\w.])", body):
        mantissa = number.split("e")[0].replace(".", "").lstrip("0")
        assert len(mantissa) <= 4, f"{number} has more than 4 significant digits"
    report = json.loads((built[1] / "compression_report.json").read_text())
    assert f"mean {fmt_num(report['bytes']['per_image']['mean'])}" in text


def test_concentrations_sort_numerically(built):
    text = (built[1] / "README.md").read_text()
    at = text.index("### Compound concentrations")
    table = text[at: text.index("\n###", at + 4)]
    concs = [float(line.split("|")[1]) for line in table.splitlines()[4:] if line.startswith("| ")]
    assert len(concs) >= 3 and concs == sorted(concs)
    at = text.index("### compound-gene-activity: ")
    rows = [line.split("|")[2].strip() for line in text[at: text.index("\n### ", at + 4)].splitlines()
            if line.startswith("| baseline |") and line.split("|")[2].strip().endswith("/average_precision/q0.5")]
    heads = [r.split("/")[0] for r in rows]
    assert heads[-1] == "max" and [float(h) for h in heads[:-1]] == sorted(float(h) for h in heads[:-1])
    assert len(heads) > 3


def test_controls_are_explained_with_their_use(built):
    text = (built[1] / "README.md").read_text()
    at = text.index("### Controls")
    section = text[at: text.index("\n### ", at + 4)]
    assert "- `EMPTY_control`: no perturbation" in section and "- `CRISPR_control`: a control CRISPR guide" in section
    assert section.index("`EMPTY_control`: no") < section.index("`CRISPR_control`: a control")
    # how each benchmark uses them, from the published definitions
    assert "`gene-gene-recall` fits its post-processing (`pca_centerscale`) on them and drops them from the map" \
        in section
    assert "`perturbation-signal` drops them from the map" in section.split("`CRISPR_control`: ")[1]


def test_validate_catches_a_changed_card_image(built, release):
    import io

    import numpy as np
    from PIL import Image
    from release_fixture import rehash

    from rxcurate.validate import validate_folder

    assert validate_folder(release, rerun=False).ok
    path = release / "card" / "montage.png"
    px = np.asarray(Image.open(path)).copy()
    px[0, 0] = 255 - px[0, 0]
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    rehash(release, "card/montage.png")
    rep = validate_folder(release, rerun=False)
    assert not rep.ok and any(f.file == "card/montage.png" and "other pixels" in f.message for f in rep.failures)
