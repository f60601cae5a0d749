"""Block probe (rxcurate.blockprobe, `rxcurate probe`, embeddings[0].block/probe in a release): labels, experiment
splits, the choice rule, and real forward passes of the OpenPhenom ViT (random weights) on tiny screens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from rxcurate.blockprobe import (
    ProbeConfig,
    ProbeError,
    Wells,
    best_beats_chance,
    gene_modules,
    plot_scores,
    probe_scores,
    splits,
    summarize,
)
from rxcurate.cli import app, main

TESTS = Path(__file__).resolve().parent
TINY = TESTS / "data" / "manifests" / "tiny-rxrx3.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_gene_modules_are_size_filtered_components_numbered_stably():
    pairs = pd.DataFrame({"entity1": ["A", "B", "D", "E", "E", "X", "G"],
                          "entity2": ["B", "C", "E", "F", "E", "A", "H"]})
    mods = gene_modules(pairs, ["C", "B", "A", "D", "E", "F", "G", "H", "Z"], min_genes=3, max_genes=3)
    assert mods == {"A": 0, "B": 0, "C": 0, "D": 1, "E": 1, "F": 1}  # G-H too small, Z alone, X not in the map
    assert gene_modules(pairs, ["A", "B", "C", "D", "E", "F"], 2, 2) == {}


def _wells(n_exp: int = 4, per: int = 30, classes: int = 3, seed: int = 0) -> tuple[Wells, np.ndarray]:
    rng = np.random.default_rng(seed)
    exp = np.repeat([f"e{i}" for i in range(n_exp)], per)
    label = np.tile(np.arange(classes), n_exp * per // classes + 1)[: n_exp * per]
    ctrl = rng.random(len(exp)) < 0.2
    pert = np.where(ctrl, "", np.array([f"p{k}" for k in label], dtype=object)).astype(object)
    wells = Wells(np.array([f"w{i:04d}" for i in range(len(exp))]), exp, ctrl, pert, np.full(len(exp), "", object))
    return wells, label


def test_splits_hold_out_whole_experiments_deterministically():
    wells, _ = _wells()
    cfg = ProbeConfig(tasks=("perturbation",), seeds=4, holdout=0.5)
    a = splits(wells.perturbation, wells.experiment, cfg, "perturbation")
    b = splits(wells.perturbation, wells.experiment, cfg, "perturbation")
    assert [s.test_experiments for s in a] == [s.test_experiments for s in b]
    assert len({s.test_experiments for s in a}) > 1  # seeds give different splits
    for s in a:
        assert len(s.test_experiments) == 2
        train_exps, test_exps = set(wells.experiment[s.train]), set(wells.experiment[s.test])
        assert not train_exps & test_exps and test_exps == set(s.test_experiments)
        assert not (s.train & wells.is_control).any() and not (s.test & wells.is_control).any()
        assert set(wells.perturbation[s.test]) <= set(wells.perturbation[s.train])
    one = Wells(*(getattr(wells, f)[wells.experiment == "e0"] for f in ("well_id", "experiment", "is_control",
                                                                            "perturbation", "gene")))
    with pytest.raises(ProbeError, match="at least 2"):
        splits(one.perturbation, one.experiment, cfg, "perturbation")


def test_scores_follow_the_signal_and_the_best_block_is_their_argmax():
    wells, label = _wells(per=45)
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 8)) * 3
    informative = centres[label] + rng.normal(size=(len(label), 8))
    features = {"block01": rng.normal(size=(len(label), 8)), "block02": informative,
                "block03": informative + rng.normal(size=(len(label), 8)) * 3}
    cfg = ProbeConfig(tasks=("perturbation",), seeds=3)
    scores = probe_scores(features, wells, cfg)
    assert len(scores) == 3 * 3 and set(scores["block"]) == set(features)
    summary, best = summarize(scores, list(features))
    means = {e["block"]: e["tasks"]["perturbation"]["mean"] for e in summary}
    assert means["block02"] > 0.9 > means["block03"] > means["block01"]
    assert means["block01"] < 0.6 and best == "block02"
    assert probe_scores(features, wells, cfg).equals(scores)  # seeded: the same table again


def test_ties_go_to_the_earlier_block():
    scores = pd.DataFrame({"block": ["block01", "block02", "block03"] * 2, "task": ["t"] * 6, "seed": [0] * 3 + [1] * 3,
                           "score": [0.5, 0.7, 0.7, 0.5, 0.7, 0.7], "chance": [0.1] * 6})
    assert summarize(scores, ["block01", "block02", "block03"])[1] == "block02"
    assert summarize(scores, ["block03", "block02", "block01"])[1] == "block03"


def test_no_best_block_when_nothing_beats_chance_by_more_than_its_spread(tmp_path):
    blocks = ["block01", "block02", "block03"]
    at_chance = pd.DataFrame({"block": blocks * 3, "task": ["t"] * 9, "seed": np.repeat([0, 1, 2], 3),
                              "score": [0.24, 0.27, 0.25, 0.27, 0.22, 0.26, 0.25, 0.28, 0.24], "chance": [0.25] * 9})
    summary, best = summarize(at_chance, blocks)
    assert best == "block02" and not best_beats_chance(summary, best)  # the tie-break pick is not a real "best"
    assert all(not e["beats_chance"] and e["spread"] > 0 for e in summary)
    plot_scores(summary, best, ["t"], tmp_path / "chance.png", "at chance")
    above = at_chance.assign(score=np.where(at_chance["block"] == "block03", at_chance["score"] + 0.5,
                                            at_chance["score"]))
    summary, best = summarize(above, blocks)
    assert best == "block03" and best_beats_chance(summary, best)
    assert summary[2]["above_chance"] == pytest.approx(0.5 + (0.25 + 0.26 + 0.24) / 3 - 0.25)
    plot_scores(summary, best, ["t"], tmp_path / "above.png", "above chance")
    assert (tmp_path / "chance.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "chance.png").read_bytes() != (tmp_path / "above.png").read_bytes()


@pytest.mark.parametrize("kwargs, match", [
    ({"tasks": ("colour",)}, "valid: perturbation, gene-module"),
    ({"tasks": ("gene-module",)}, "--relationships"),
    ({"tasks": ("perturbation",), "seeds": 0}, "--seeds"),
    ({"tasks": ("perturbation",), "holdout": 1.0}, "--holdout"),
])
def test_bad_probe_settings_name_the_fix(kwargs, match):
    with pytest.raises(ProbeError, match=match):
        ProbeConfig(**kwargs).check()


def test_probe_help_and_clean_cli_errors(tmp_path, capsys):
    res = CliRunner().invoke(app, ["probe", "--help"])
    assert res.exit_code == 0
    for flag in ("--encoder", "--blocks", "--task", "--relationships", "--seeds", "--holdout", "--downsample"):
        assert flag in res.output
    for args in (["--task", "colour"], ["--task", "gene-module", "--relationships", str(tmp_path / "none.csv")],
                 ["--task", "perturbation", "--seeds", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(["probe", str(tmp_path), "--encoder", "openphenom", *args])
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ a real ViT on a tiny screen, inside a release


@pytest.fixture(scope="module")
def modules_screen(tmp_path_factory) -> Path:
    from rxcurate.synth import generate

    return generate(tmp_path_factory.mktemp("synth") / "tiny-modules", layout="rxrx3", preset="tiny-modules", seed=0)


def levers_manifest(dest: Path) -> Path:
    """The tiny recipe with both levers: probe-chosen OpenPhenom block (random weights) + consistency filter."""
    doc = yaml.safe_load(TINY.read_text())
    doc["name"] = "tiny-levers"
    doc["select"]["filters"] = [{"stat": "replicate_consistency", "embeddings": "baseline", "p_below": 0.05,
                                 "apply_to": ["CRISPR"], "seed": 0}]
    doc["embeddings"] = [
        {"encoder": "openphenom", "allow_random_weights": True, "tile_size": 32, "block": "best",
         "probe": {"tasks": ["gene-module"], "seeds": 3}},
        {"encoder": "baseline", "tile_size": 32},
    ]
    doc["benchmarks"] = ["gene-gene-recall"]
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def test_release_with_both_levers_publishes_the_probe_chosen_block(modules_screen, tmp_path):
    from rxcurate.pipeline import run_release

    manifest = levers_manifest(tmp_path / "levers.yaml")
    folder, hub = tmp_path / "rel", tmp_path / "hub"
    s = run_release(manifest, source=modules_screen, hub=hub, workdir=folder)
    assert s.validation_ok and s.status["publish"] == "published", s.status
    probe = json.loads((folder / "probe" / "openphenom" / "probe.json").read_text())
    table = pd.read_parquet(folder / "probe" / "openphenom" / "probe.parquet")
    assert probe["blocks"] == [f"block{i:02d}" for i in range(1, 13)]
    means = table.groupby("block")["score"].mean()
    assert means.nunique() > 1  # a real forward pass: blocks differ
    assert probe["best_block"] == means.index[int(np.argmax(means.to_numpy()))]  # the choice follows the scores
    assert (folder / "probe" / "openphenom" / "probe.png").read_bytes()[:8] == PNG_MAGIC
    rel = json.loads((folder / "release.json").read_text())
    assert rel["default_embeddings"] == f"openphenom/{probe['best_block']}"
    assert rel["embeddings"][0]["name"] == rel["default_embeddings"]
    assert (folder / "benchmarks" / "results" / "openphenom" / probe["best_block"] / "gene-gene-recall.json").is_file()
    card = (folder / "README.md").read_text()
    assert "## Block probe" in card
    if probe["best_beats_chance"]:
        assert f"Best block: `{probe['best_block']}`" in card
    else:  # a tiny random-weight ViT: no block is above chance by more than its spread, so none is called best
        assert "No block beats chance by more than its spread" in card and "| best |" not in card
    assert "](probe/openphenom/probe.png)" in card  # the plot is embedded in the card
    assert "curation.json" in rel["files"] and "probe/openphenom/probe.json" in rel["files"]
    again = run_release(manifest, source=modules_screen, hub=hub, workdir=folder)
    assert again.commit == s.commit and "up to date" in again.status["probe"]


def test_probe_cli_on_rxrx1_perturbations(tiny_rxrx1, tmp_path):
    """RxRx1's task: classify the siRNA of wells in held-out experiments, per block of a real ViT."""
    from rxcurate.compress import compress
    from rxcurate.manifest import load_manifest
    from rxcurate.select import select

    src = TESTS / "data" / "manifests" / "tiny-rxrx1.yaml"
    manifest = tmp_path / "m.yaml"
    shutil.copy(src, manifest)
    m = load_manifest(manifest)
    folder = tmp_path / "rel"
    select(m, source=tiny_rxrx1, workdir=folder)
    compress(m, source=tiny_rxrx1, workdir=folder, workers=1)
    res = CliRunner().invoke(app, ["probe", str(manifest), "--workdir", str(folder), "--encoder", "openphenom",
                                   "--allow-random-weights", "--tile", "32", "--blocks", "2,6,last", "--task",
                                   "perturbation", "--seeds", "3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    probe = json.loads((folder / "probe" / "openphenom" / "probe.json").read_text())
    assert probe["blocks"] == ["block02", "block06", "block12"] and f"best block: {probe['best_block']}" in res.output
    table = pd.read_parquet(folder / "probe" / "openphenom" / "probe.parquet")
    assert len(table) == 3 * 3 and (table["test_wells"] > 0).all() and (table["classes"] >= 2).all()
    res2 = CliRunner().invoke(app, ["probe", str(manifest), "--workdir", str(folder), "--encoder", "openphenom",
                                    "--allow-random-weights", "--tile", "32", "--blocks", "2,6,last", "--task",
                                    "perturbation", "--seeds", "3", "--device", "cpu"])
    assert res2.exit_code == 0 and "(up to date)" in res2.output
