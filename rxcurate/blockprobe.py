"""Block probe: which transformer block of an encoder represents biology best, by cheap linear probes.

The ViTally Consistent paper (a 1.9B ViT-G/8 MAE) found that intermediate blocks often beat the last one; it chose
the block by linear probes on biologically meaningful labels. ``rxcurate probe`` does that for any encoder with
blocks (``openphenom``, ``timm:<vit>``):

1. embed the release once with every requested block (one forward pass, :func:`rxcurate.embed.run_embed`);
2. per block and task, train a multinomial logistic regression on the wells of some experiments and score it on the
   wells of held-out experiments (never a random split of wells: wells of one experiment share its batch effects,
   so a random split leaks them). Each experiment is first centre-scaled on its own control wells (no labels used);
3. repeat for ``seeds`` splits (seed ``s`` picks the held-out experiments and an ``train_fraction`` subsample of
   the training wells; every block sees the same splits) and report mean +/- std of the balanced accuracy;
4. pick the block with the highest mean score over tasks (ties: the earlier block) and write
   ``probe/<encoder>/probe.parquet`` (one row per block, task, seed), ``probe.json`` (summary, best block, inputs'
   sha256) and ``probe.png`` (score by block, best marked).

Tasks:

- ``perturbation``: classify the perturbation (RxRx1: the siRNA; RxRx3: the gene, or compound at a concentration)
  of non-control wells in held-out experiments, RxRx1's batch-generalisation task. It needs perturbations
  repeated across experiments (RxRx1); in RxRx3 every gene and compound lives in one experiment.
- ``gene-module``: classify the module of gene-knockout wells in held-out experiments (so mostly genes never seen
  in training), modules being the connected components of a relationship source (``entity1,entity2``: CORUM,
  HuMAP, ..., or a synthetic screen's ``truth/relationships.csv``) among the map's genes, with
  ``min_module_genes`` to ``max_module_genes`` genes.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from rxcurate import __version__
from rxcurate.errors import EmbedError
from rxcurate.io import atomic_path, atomic_write_json, canonical_hash, sha256_file
from rxcurate.layout import (
    METADATA_PARQUET,
    PROBE_JSON,
    PROBE_PLOT,
    PROBE_TABLE,
    block_set_name,
    embeddings_path,
    probe_folder,
)

TASKS = ("perturbation", "gene-module")
RXRX3_CONTROLS = ("EMPTY_control", "CRISPR_control")


class ProbeError(EmbedError):
    """A block probe met bad input (tasks, blocks, labels, splits)."""


@dataclass(frozen=True)
class ProbeConfig:
    """Probe settings (all part of the result's identity)."""

    tasks: tuple[str, ...] = ("gene-module",)
    seeds: int = 5
    seed_start: int = 0
    holdout: float = 0.5  # share of experiments held out per seed (at least one, never all)
    train_fraction: float = 0.8  # training wells sampled per seed
    C: float = 1.0
    max_iter: int = 500
    min_module_genes: int = 3
    max_module_genes: int = 200
    relationships: str | None = None  # path of an entity1,entity2 CSV (gene-module)

    def check(self) -> None:
        bad = [t for t in self.tasks if t not in TASKS]
        if not self.tasks or bad:
            raise ProbeError(f"--task: bad task(s) {bad or '(none)'}; valid: {', '.join(TASKS)} "
                             "(e.g. --task gene-module)")
        if len(set(self.tasks)) != len(self.tasks):
            raise ProbeError(f"--task: a task is given twice: {list(self.tasks)}")
        if not 1 <= self.seeds <= 1000:
            raise ProbeError(f"--seeds {self.seeds}: give 1..1000 splits (e.g. --seeds 5)")
        if not 0 < self.holdout < 1:
            raise ProbeError(f"--holdout {self.holdout}: the share of held-out experiments must be in (0, 1), e.g. 0.5")
        if not 0 < self.train_fraction <= 1:
            raise ProbeError(f"train_fraction {self.train_fraction}: must be in (0, 1], e.g. 0.8")
        if self.C <= 0 or self.max_iter < 1:
            raise ProbeError("C must be > 0 and max_iter >= 1 (e.g. C 1.0, max_iter 500)")
        if not 2 <= self.min_module_genes <= self.max_module_genes:
            raise ProbeError("min_module_genes must be >= 2 and <= max_module_genes (e.g. 3 and 200)")
        if "gene-module" in self.tasks:
            if not self.relationships:
                raise ProbeError("--task gene-module needs a relationship source: --relationships FILE "
                                 "(entity1,entity2 CSV, e.g. CORUM, or a synthetic screen's truth/relationships.csv)")
            if not Path(self.relationships).is_file():
                raise ProbeError(f"--relationships {self.relationships}: file not found (an entity1,entity2 CSV)")


@dataclass
class ProbeResult:
    encoder: str
    blocks: list[str]
    best_block: str
    scores: pd.DataFrame  # block, task, seed, score, chance, train_wells, test_wells, classes, test_experiments
    summary: list[dict[str, Any]] = field(default_factory=list)  # per block: mean/std per task, overall
    folder: Path | None = None
    up_to_date: bool = False


# ---------------------------------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class Wells:
    """Well-level metadata the probe needs, one row per well (sorted by well_id)."""

    well_id: np.ndarray
    experiment: np.ndarray
    is_control: np.ndarray
    perturbation: np.ndarray  # "" for controls
    gene: np.ndarray  # gene symbol of knockout wells, "" otherwise


def wells_from_metadata(meta: pd.DataFrame) -> Wells:
    """RxRx3 or RxRx1 release metadata (one row per well, or per site for RxRx1) -> :class:`Wells`."""
    meta = meta.drop_duplicates("well_id").sort_values("well_id", kind="stable").reset_index(drop=True)
    if "experiment_name" in meta.columns:  # rxrx3
        treat = meta["treatment"].fillna("").astype(str)
        ctrl = treat.isin(RXRX3_CONTROLS).to_numpy()
        crispr = (meta["perturbation_type"].astype(str) == "CRISPR").to_numpy() & ~ctrl
        conc = meta["concentration"].map(lambda c: "" if pd.isna(c) else f"@{float(c):g}")
        pert = np.where(crispr, meta["gene"].fillna("").astype(str), treat + conc)
        gene = np.where(crispr, meta["gene"].fillna("").astype(str), "")
        exp = meta["experiment_name"].astype(str).to_numpy()
    elif "experiment" in meta.columns and "sirna" in meta.columns:  # rxrx1
        ctrl = (meta["well_type"].astype(str) == "negative_control").to_numpy()
        pert = meta["sirna"].astype(str).to_numpy()
        gene = np.full(len(meta), "", dtype=object)
        exp = meta["experiment"].astype(str).to_numpy()
    else:
        raise ProbeError("metadata.parquet has neither RxRx3 (experiment_name, treatment, gene) nor RxRx1 "
                         "(experiment, sirna, well_type) columns: probe a release folder made by rxcurate compress")
    pert = np.where(ctrl, "", pert).astype(object)
    return Wells(meta["well_id"].astype(str).to_numpy(), exp, ctrl, pert, np.where(ctrl, "", gene).astype(object))


def gene_modules(pairs: pd.DataFrame, genes: Sequence[str], min_genes: int, max_genes: int) -> dict[str, int]:
    """Gene -> module number: connected components of the relationship graph restricted to ``genes`` (undirected,
    self pairs dropped), keeping components of ``min_genes``..``max_genes`` genes, numbered by their smallest gene."""
    names = sorted(set(genes))
    index = {g: i for i, g in enumerate(names)}
    a = pairs["entity1"].astype(str).map(index)
    b = pairs["entity2"].astype(str).map(index)
    keep = a.notna() & b.notna() & (a != b)
    ia, ib = a[keep].astype(int).to_numpy(), b[keep].astype(int).to_numpy()
    graph = coo_matrix((np.ones(len(ia)), (ia, ib)), shape=(len(names), len(names)))
    _, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp)
    ok = (sizes[comp] >= min_genes) & (sizes[comp] <= max_genes)
    first: dict[int, str] = {}
    for g, c in zip(names, comp, strict=True):
        first.setdefault(int(c), g)
    order = {c: k for k, c in enumerate(sorted({int(c) for c in comp[ok]}, key=lambda c: first[c]))}
    return {g: order[int(c)] for g, c, o in zip(names, comp, ok, strict=True) if o}


def read_relationships(path: str | Path) -> pd.DataFrame:
    try:
        pairs = pd.read_csv(path, dtype=str)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise ProbeError(f"--relationships {path}: cannot read it as CSV ({exc})") from None
    if not {"entity1", "entity2"} <= set(pairs.columns):
        raise ProbeError(f"--relationships {path}: needs columns entity1,entity2 (found {list(pairs.columns)})")
    return pairs


def task_labels(task: str, wells: Wells, cfg: ProbeConfig) -> np.ndarray:
    """Class label per well ("" = the task does not use the well)."""
    if task == "perturbation":
        return wells.perturbation
    modules = gene_modules(read_relationships(cfg.relationships or ""), [g for g in wells.gene if g],
                           cfg.min_module_genes, cfg.max_module_genes)
    if not modules:
        raise ProbeError(f"--task gene-module: no module of {cfg.min_module_genes}..{cfg.max_module_genes} of the "
                         f"release's knocked-out genes in {cfg.relationships} (gene-module needs gene knockouts, "
                         "RxRx3 layout, and a relationship source naming them)")
    return np.array([f"module{modules[g]:04d}" if g in modules else "" for g in wells.gene], dtype=object)


# ----------------------------------------------------------------------------------------------------- compute


def control_centerscale(x: np.ndarray, experiment: np.ndarray, is_control: np.ndarray) -> np.ndarray:
    """Per experiment: subtract the mean and divide by the std of its control wells (all its wells when it has
    fewer than 2 controls). Uses no labels, so it cannot leak a task's answer."""
    out = np.empty_like(x, dtype=np.float64)
    for e in np.unique(experiment):
        rows = experiment == e
        ref = rows & is_control if (rows & is_control).sum() >= 2 else rows
        mu = x[ref].mean(axis=0)
        sd = x[ref].std(axis=0)
        out[rows] = (x[rows] - mu) / np.where(sd > 1e-8, sd, 1.0)
    return out


@dataclass(frozen=True)
class Split:
    seed: int
    train: np.ndarray  # bool masks over wells
    test: np.ndarray
    test_experiments: tuple[str, ...]


def splits(labels: np.ndarray, experiment: np.ndarray, cfg: ProbeConfig, task: str) -> list[Split]:
    """One experiment-level split per seed; the test wells keep only classes seen in training."""
    used = labels != ""
    exps = np.unique(experiment[used])
    if len(exps) < 2:
        raise ProbeError(f"task {task}: its wells come from {len(exps)} experiment(s); a probe holds out whole "
                         "experiments, so it needs at least 2 (select wells from more experiments)")
    n_test = min(len(exps) - 1, max(1, round(cfg.holdout * len(exps))))
    out = []
    for s in range(cfg.seed_start, cfg.seed_start + cfg.seeds):
        rng = np.random.default_rng(s)
        held = np.sort(exps[rng.permutation(len(exps))[:n_test]])
        in_test = np.isin(experiment, held)
        train = used & ~in_test
        train &= rng.random(len(labels)) < cfg.train_fraction
        test = used & in_test & np.isin(labels, np.unique(labels[train]))
        out.append(Split(s, train, test, tuple(str(e) for e in held)))
    return out


def probe_block(x: np.ndarray, labels: np.ndarray, split: Split, cfg: ProbeConfig) -> dict[str, Any]:
    """Fit on ``split.train``, score balanced accuracy on ``split.test``."""
    y_train, y_test = labels[split.train], labels[split.test]
    classes = np.unique(y_train)
    row = {"seed": split.seed, "train_wells": int(split.train.sum()), "test_wells": int(split.test.sum()),
           "classes": int(len(classes)), "test_experiments": ",".join(split.test_experiments)}
    if len(classes) < 2 or not split.test.any():
        return {**row, "score": float("nan"), "chance": float("nan")}
    mu = x[split.train].mean(axis=0)
    sd = x[split.train].std(axis=0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    clf = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, random_state=split.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit((x[split.train] - mu) / sd, y_train)
    pred = clf.predict((x[split.test] - mu) / sd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # classes predicted but absent from the test wells
        score = float(balanced_accuracy_score(y_test, pred))
    return {**row, "score": score, "chance": 1.0 / len(np.unique(y_test))}


def probe_scores(features: dict[str, np.ndarray], wells: Wells, cfg: ProbeConfig) -> pd.DataFrame:
    """Score every block (``features``: block -> [n_wells, d], rows as ``wells``) on every task and seed."""
    cfg.check()
    rows = []
    for task in cfg.tasks:
        labels = task_labels(task, wells, cfg)
        task_splits = splits(labels, wells.experiment, cfg, task)
        if not any(sp.test.any() for sp in task_splits):
            raise ProbeError(f"task {task}: no held-out well has a class seen in training (every class lives in one "
                             "experiment); perturbation needs perturbations repeated across experiments (RxRx1 "
                             "layout): use --task gene-module for RxRx3-layout releases")
        for block, x in features.items():
            xs = control_centerscale(np.asarray(x, dtype=np.float64), wells.experiment, wells.is_control)
            for sp in task_splits:
                rows.append({"block": block, "task": task, **probe_block(xs, labels, sp, cfg)})
    cols = ["block", "task", "seed", "score", "chance", "train_wells", "test_wells", "classes", "test_experiments"]
    return pd.DataFrame(rows, columns=cols)


def chance_margin(tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """How far a block is above chance: ``above_chance`` = mean over tasks of (mean score - chance), ``spread`` = mean
    over tasks of the std over seeds, ``beats_chance`` = above_chance > spread (a block within its own seed-to-seed
    spread of chance is indistinguishable from it)."""
    rows = [v for v in tasks.values() if v.get("mean") is not None and v.get("chance") is not None]
    if not rows:
        return {"above_chance": None, "spread": None, "beats_chance": False}
    above = float(np.mean([v["mean"] - v["chance"] for v in rows]))
    spread = float(np.mean([v["std"] or 0.0 for v in rows]))
    return {"above_chance": above, "spread": spread, "beats_chance": bool(above > spread)}


def best_beats_chance(summary: list[dict[str, Any]], best: str) -> bool:
    """Whether the best block is above chance by more than its spread (else no block is meaningfully "best")."""
    return bool(next((e.get("beats_chance") for e in summary if e["block"] == best), False))


def summarize(scores: pd.DataFrame, blocks: Sequence[str]) -> tuple[list[dict[str, Any]], str]:
    """Per block: mean/std per task over seeds and the overall score (mean over tasks); the best block (highest
    overall score, ties to the earlier block in ``blocks``)."""
    summary = []
    for block in blocks:
        part = scores[scores["block"] == block]
        entry: dict[str, Any] = {"block": block, "tasks": {}}
        for task, t in part.groupby("task", sort=True):
            vals = t["score"].dropna().to_numpy()
            entry["tasks"][str(task)] = {
                "mean": float(vals.mean()) if len(vals) else None,
                "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0 if len(vals) else None,
                "chance": float(t["chance"].dropna().mean()) if t["chance"].notna().any() else None,
                "seeds": int(len(vals)),
            }
        means = [v["mean"] for v in entry["tasks"].values() if v["mean"] is not None]
        entry["score"] = float(np.mean(means)) if means else None
        entry.update(chance_margin(entry["tasks"]))
        summary.append(entry)
    scored = [(i, e) for i, e in enumerate(summary) if e["score"] is not None]
    if not scored:
        raise ProbeError("no block got a score (too few training classes or test wells in every split): select "
                         "more wells or experiments")
    best = min(scored, key=lambda ie: (-round(ie[1]["score"], 12), ie[0]))[1]["block"]
    return summary, best


# ---------------------------------------------------------------------------------------------------------- I/O


def read_block_features(folder: Path, encoder: str, blocks: Sequence[str], well_ids: np.ndarray
                        ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Block -> features aligned to ``well_ids``, and block -> sha256 of its embeddings.parquet."""
    feats, shas = {}, {}
    for block in blocks:
        path = embeddings_path(folder, block_set_name(encoder, block))
        if not path.is_file():
            raise ProbeError(f"{path} is missing: run rxcurate probe (it embeds first) or rxcurate embed --encoder "
                             f"{encoder} --blocks all")
        table = pq.read_table(path)
        ids = table.column("well_id").to_numpy(zero_copy_only=False).astype(str)
        cols = [c for c in table.column_names if c.startswith("feature_")]
        x = np.stack([table.column(c).to_numpy() for c in cols], axis=1) if cols else np.zeros((len(ids), 0))
        pos = pd.Index(ids).get_indexer(well_ids)
        if (pos < 0).any():
            raise ProbeError(f"{path} lacks {int((pos < 0).sum())} of the release's wells: rerun rxcurate embed")
        feats[block] = x[pos]
        shas[block] = sha256_file(path)
    return feats, shas


def plot_scores(summary: list[dict[str, Any]], best: str, tasks: Sequence[str], path: Path, title: str) -> None:
    """Score by block (mean +/- std per task and the overall mean) with the chance level as a dotted line; the best
    block is marked only when it beats chance by more than its spread (else the plot says none does); atomic."""
    import matplotlib  # heavy: only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: only when plotting

    x = np.arange(len(summary))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(summary) + 2), 3.6), dpi=100)
    for task in tasks:
        mean = np.array([e["tasks"].get(task, {}).get("mean") or np.nan for e in summary], dtype=float)
        std = np.array([e["tasks"].get(task, {}).get("std") or 0.0 for e in summary], dtype=float)
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=task)
    overall = np.array([e["score"] if e["score"] is not None else np.nan for e in summary], dtype=float)
    if len(tasks) > 1:
        ax.plot(x, overall, color="black", linestyle="--", label="mean over tasks")
    chances = sorted({round(v["chance"], 12) for e in summary for v in e["tasks"].values()
                      if v.get("chance") is not None})
    for i, c in enumerate(chances):
        ax.axhline(c, color="gray", linestyle=":", label="chance" if i == 0 else None)
    b = [e["block"] for e in summary].index(best)
    if best_beats_chance(summary, best):
        ax.axvline(b, color="tab:red", alpha=0.4)
        ax.annotate(f"best: {best}", (b, overall[b]), textcoords="offset points", xytext=(4, 6), color="tab:red")
    else:
        ax.annotate("no block beats chance by more than its spread", (0.02, 0.95), xycoords="axes fraction",
                    va="top", color="tab:red", fontsize=8)
    ax.set_xticks(x, [e["block"].removeprefix("block") for e in summary])
    ax.set_xlabel("block")
    ax.set_ylabel("balanced accuracy (held-out experiments)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


PROBE_FORMAT = 2  # 2: chance margins and best_beats_chance in probe.json (earlier results are recomputed)


def result_key(cfg: ProbeConfig, encoder: str, blocks: Sequence[str], shas: dict[str, str], meta_sha: str,
               relationships_sha: str | None) -> str:
    return canonical_hash({"rxcurate": __version__, "format": PROBE_FORMAT,
                           "config": {**asdict(cfg), "relationships": None},
                           "relationships_sha256": relationships_sha, "encoder": encoder, "blocks": list(blocks),
                           "embeddings_sha256": shas, "metadata_sha256": meta_sha})


def load_probe(folder: Path, encoder: str) -> dict[str, Any] | None:
    path = probe_folder(folder, encoder) / PROBE_JSON
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def run_probe(folder: str | Path, encoder: str, blocks: Sequence[str], cfg: ProbeConfig) -> ProbeResult:
    """Probe ``blocks`` (names, e.g. ``block01``) of ``encoder``'s embeddings in the release ``folder`` (embedded
    beforehand); write probe.parquet, probe.json and probe.png; skip when the same inputs were probed already."""
    cfg.check()
    folder = Path(folder)
    if not blocks:
        raise ProbeError(f"encoder {encoder}: no blocks to probe (give --blocks all, or an encoder with transformer "
                         "blocks: openphenom, timm:<vit>)")
    meta_path = folder / METADATA_PARQUET
    if not meta_path.is_file():
        raise ProbeError(f"{meta_path} is missing: run rxcurate compress first")
    wells = wells_from_metadata(pd.read_parquet(meta_path))
    feats, shas = read_block_features(folder, encoder, blocks, wells.well_id)
    rel_sha = sha256_file(cfg.relationships) if cfg.relationships and "gene-module" in cfg.tasks else None
    key = result_key(cfg, encoder, blocks, shas, sha256_file(meta_path), rel_sha)
    out = probe_folder(folder, encoder)
    done = load_probe(folder, encoder)
    if (done and done.get("result_key") == key and (out / PROBE_TABLE).is_file()
            and (out / PROBE_PLOT).is_file()):
        return ProbeResult(encoder, list(blocks), done["best_block"], pd.read_parquet(out / PROBE_TABLE),
                           done["summary"], out, up_to_date=True)
    scores = probe_scores(feats, wells, cfg)
    summary, best = summarize(scores, blocks)
    with atomic_path(out / PROBE_TABLE, suffix=".parquet") as tmp:
        pq.write_table(pa.Table.from_pandas(scores, preserve_index=False), tmp)
    plot_scores(summary, best, cfg.tasks, out / PROBE_PLOT, f"{encoder}: linear probes on held-out experiments")
    doc = {
        "encoder": encoder, "blocks": list(blocks), "tasks": list(cfg.tasks), "best_block": best,
        "best_beats_chance": best_beats_chance(summary, best),
        "summary": summary,
        "config": {**asdict(cfg), "relationships": Path(cfg.relationships).name if cfg.relationships else None},
        "inputs": {"embeddings_sha256": shas, "metadata_sha256": sha256_file(meta_path),
                   "relationships_sha256": rel_sha},
        "rule": "highest mean over tasks of the mean balanced accuracy over seeds; ties to the earlier block; "
                "meaningful only when best_beats_chance (above chance by more than the std over seeds)",
        "rxcurate": __version__, "result_key": key,
    }
    atomic_write_json(out / PROBE_JSON, doc)  # last: its key marks the outputs complete
    return ProbeResult(encoder, list(blocks), best, scores, summary, out)
