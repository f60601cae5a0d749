"""The dataset card (``README.md``): YAML front matter for the Hub plus a body generated from the release.

Front matter (``huggingface_hub.DatasetCardData``, validated by ``schemas/card.schema.json``): license,
pretty_name, tags, task_categories, size_categories, ``configs`` (``default`` = the image shards, ``metadata``, one
``embeddings-<set>`` per embedding set, each with ``data_files``) and ``dataset_info`` (features and split sizes per
config). The body is generated from the lockfile, metadata, compression report, embeddings info and benchmark
results: contents, selection, compression, embeddings, benchmarks, how to load, citation and changelog.

Prose is marked off by ``<!-- rxcurate:prose NAME -->`` ... ``<!-- rxcurate:end-prose NAME -->`` comments (the
manifest's ``card.prose`` and ``card.citation``). The card's *data hash* is the canonical hash of its front matter and
its body with every prose block emptied: editing only prose keeps it (and release.json, and the data version)
unchanged; editing a generated number changes it, which ``rxcurate validate`` reports.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from huggingface_hub import DatasetCard, DatasetCardData

from rxcurate.errors import CardError
from rxcurate.io import canonical_hash, read_json
from rxcurate.layout import (
    CARD,
    CHANGELOG,
    COMPARISON,
    CURATION,
    DATA_DIR,
    METADATA_PARQUET,
    PHENOSTATS,
    PROBE_DIR,
    PROBE_JSON,
    PROBE_PLOT,
    RXRX3_CORE_EMBEDDINGS,
    RXRX3_CORE_METADATA,
    result_set_name,
)
from rxcurate.release_inputs import ReleaseInputs, headline
from rxcurate.schemas import schema_problem
from rxcurate.shards import SCHEMA

PROSE_START = "<!-- rxcurate:prose {name} -->"
PROSE_END = "<!-- rxcurate:end-prose {name} -->"
PROSE_RE = re.compile(r"(<!-- rxcurate:prose (?P<name>[a-z0-9-]+) -->\n)(?P<text>.*?)(<!-- rxcurate:end-prose "
                      r"(?P=name) -->)", re.S)
MAX_TABLE_ROWS = 40
IMAGES_CONFIG = "default"
METADATA_CONFIG = "metadata"
DEFAULT_TAGS = ["biology", "microscopy", "cell-painting"]


# --------------------------------------------------------------------------------------------------- parsing
def latest_entry(changelog: str) -> str:
    """The first ``## `` section of a changelog."""
    at = changelog.find("## ")
    if at < 0:
        return ""
    nxt = changelog.find("\n## ", at + 3)
    return changelog[at: nxt if nxt >= 0 else len(changelog)].strip() + "\n"


def split_card(text: str, what: str = CARD) -> tuple[dict, str]:
    """``(front matter dict, body)`` of a card, parsed with huggingface_hub's DatasetCard; raise :class:`CardError`
    naming ``what``."""
    if not text.startswith("---\n"):
        raise CardError(f"{what}: a dataset card starts with YAML front matter between '---' lines; regenerate it "
                        f"with rxcurate card MANIFEST")
    try:
        card = DatasetCard(text, ignore_metadata_errors=False)
    except Exception as exc:  # noqa: BLE001 - yaml / metadata errors of several types
        raise CardError(f"{what}: the front matter is not valid card YAML ({' '.join(str(exc).split())[:200]}); "
                        f"regenerate it with rxcurate card MANIFEST") from None
    return card.data.to_dict(), card.text


def strip_prose(body: str) -> str:
    return PROSE_RE.sub(lambda m: m.group(1) + m.group(4), body)


def prose_blocks(body: str) -> dict[str, str]:
    return {m.group("name"): m.group("text") for m in PROSE_RE.finditer(body)}


def card_data_hash(text: str, what: str = CARD) -> str:
    """Hash of the card without its prose: front matter + body with prose blocks emptied."""
    return data_hash_of(*split_card(text, what))


def data_hash_of(meta: dict[str, Any], body: str) -> str:
    """:func:`card_data_hash` of an already split card."""
    return canonical_hash({"metadata": meta, "body": strip_prose(body)})


def card_prose_hash(text: str) -> str:
    meta, body = split_card(text)
    return canonical_hash(prose_blocks(body))


def prose(name: str, text: str) -> str:
    text = text.rstrip("\n") + "\n" if text.strip() else ""
    return f"{PROSE_START.format(name=name)}\n{text}{PROSE_END.format(name=name)}"


# --------------------------------------------------------------------------------------------------- front matter
def size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    for limit, label in bounds:
        if n < limit:
            return label
    return "n>1T"


def _features_yaml(schema) -> list[dict[str, Any]]:
    import datasets  # heavy: only when writing a card

    return datasets.Features.from_arrow_schema(schema)._to_yaml_list()


def _parquet_info(path) -> tuple[Any, int, int, int]:
    f = pq.ParquetFile(path)
    md = f.metadata
    return f.schema_arrow, md.num_rows, sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups)), \
        path.stat().st_size


def card_metadata(inputs: ReleaseInputs) -> dict[str, Any]:
    """The front matter as a plain dict (configs and dataset_info for images, metadata and every embedding set)."""
    m = inputs.manifest
    card = m.card
    configs: list[dict[str, Any]] = [
        {"config_name": IMAGES_CONFIG, "data_files": [{"split": "train", "path": f"{DATA_DIR}/train-*"}],
         "default": True},
        {"config_name": METADATA_CONFIG, "data_files": [{"split": "train", "path": METADATA_PARQUET}]},
    ]
    infos: list[dict[str, Any]] = []
    num_bytes = sum(s["arrow_bytes"] for s in inputs.shards)
    download = sum(s["bytes"] for s in inputs.shards)
    infos.append({"config_name": IMAGES_CONFIG, "features": _features_yaml(SCHEMA),
                  "splits": [{"name": "train", "num_bytes": num_bytes, "num_examples": inputs.images}],
                  "download_size": download, "dataset_size": num_bytes})
    schema, rows, nbytes, size = _parquet_info(inputs.folder / METADATA_PARQUET)
    infos.append({"config_name": METADATA_CONFIG, "features": _features_yaml(schema),
                  "splits": [{"name": "train", "num_bytes": nbytes, "num_examples": rows}],
                  "download_size": size, "dataset_size": nbytes})
    for e in inputs.embeddings:
        configs.append({"config_name": e.config_name, "data_files": [{"split": "train", "path": e.path}]})
        schema, rows, nbytes, size = _parquet_info(inputs.folder / e.path)
        infos.append({"config_name": e.config_name, "features": _features_yaml(schema),
                      "splits": [{"name": "train", "num_bytes": nbytes, "num_examples": rows}],
                      "download_size": size, "dataset_size": nbytes})
    tags = list(dict.fromkeys([*(card.get("tags") or DEFAULT_TAGS), "rxcurate"]))
    return {
        "license": card.get("license") or m.license or "other",
        "pretty_name": card.get("pretty_name") or m.name,
        "tags": tags,
        "task_categories": ["image-feature-extraction"],
        "size_categories": [size_category(inputs.images)],
        "configs": configs,
        "dataset_info": infos,
    }


def card_yaml(meta: dict[str, Any]) -> str:
    """YAML of the front matter through huggingface_hub's DatasetCardData (the Hub's own serialisation)."""
    return DatasetCardData(**meta).to_yaml()


# --------------------------------------------------------------------------------------------------- body
def _num(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "n/a" if v is None else str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]], limit: int = MAX_TABLE_ROWS, more: str = "") -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows[:limit]:
        out.append("| " + " | ".join(_num(c).replace("|", "\\|") for c in r) + " |")
    if len(rows) > limit:
        out.append(f"\n... and {len(rows) - limit:,} more rows{more}.")
    return "\n".join(out)


def _counts(series) -> list[list[Any]]:
    vc = series.value_counts()
    return [[k, int(vc[k])] for k in sorted(vc.index, key=str)]


def _contents(inputs: ReleaseInputs) -> str:
    md = inputs.metadata
    layout = inputs.manifest.layout
    parts = ["## Contents", ""]
    if layout == "rxrx3":
        ctrl = md["treatment"].isin(["EMPTY_control", "CRISPR_control"])
        parts += ["### Wells by perturbation type", "", _table(["perturbation_type", "wells"],
                                                                 _counts(md["perturbation_type"])), ""]
        genes = md.loc[(md["perturbation_type"] == "CRISPR") & ~ctrl, "gene"].nunique()
        compounds = md.loc[(md["perturbation_type"] == "COMPOUND") & ~ctrl, "treatment"].nunique()
        parts += [f"{genes:,} genes (CRISPR knockouts) and {compounds:,} compounds.", ""]
        parts += ["### Controls", "", _table(["treatment", "perturbation_type", "wells"],
                                             [[t, p, n] for (t, p), n in sorted(
                                                 md.loc[ctrl].groupby(["treatment", "perturbation_type"]).size()
                                                 .items())]), ""]
        conc = md.loc[md["concentration"].notna() & ~ctrl, "concentration"]
        if len(conc):
            vc = conc.value_counts()
            parts += ["### Compound concentrations", "", _table(["concentration (uM)", "wells"],
                                                                [[f"{c:g}", int(vc[c])] for c in sorted(vc.index)]), ""]
        exp_col = "experiment_name"
    else:
        parts += ["### Wells by type", "", _table(["well_type", "wells"], _counts(
            md.drop_duplicates("well_id")["well_type"])), ""]
        parts += ["### Cell types", "", _table(["cell_type", "wells"], _counts(
            md.drop_duplicates("well_id")["cell_type"])), ""]
        exp_col = "experiment"
    wells = md.drop_duplicates("well_id")
    grp = wells.groupby(exp_col).agg(plates=("plate", "nunique"), wells=("well_id", "count"))
    rows = [[e, int(r.plates), int(r.wells)] for e, r in sorted(grp.iterrows(), key=lambda x: str(x[0]))]
    parts += [f"### Experiments ({len(rows):,})", "", _table(["experiment", "plates", "wells"], rows,
                                                             more=" (see metadata.csv)"), ""]
    return "\n".join(parts)


def _files(inputs: ReleaseInputs) -> str:
    rows = [
        ["`data/train-XXXXX-of-YYYYY.parquet`", f"{len(inputs.shards)} image shard(s): `__key__` "
         "(`<experiment>/Plate<plate>/<address>_s<site>_<channel>`) and `jp2` (`{bytes, path}`, one grayscale "
         "JPEG 2000 image per channel), sorted by `__key__`"],
        ["`metadata.csv`, `metadata.parquet`", "one row per well" + (" and site" if inputs.manifest.layout == "rxrx1"
                                                                       else "") + ", source-layout columns"],
        ["`lockfile.parquet`", "the selection: one row per well with source image paths and sha256"],
        ["`compression_report.json`", "codec settings, bytes per image, PSNR and max error on a seeded sample"],
        ["`checksums.json`", "sha256 and size of the files written by rxcurate compress"],
    ]
    for e in inputs.embeddings:
        rows.append([f"`{e.path}`", f"embeddings `{e.name}`: `well_id` + `feature_0..feature_{e.dim - 1}` (float32)"])
    if (inputs.folder / RXRX3_CORE_METADATA).is_file():
        rows.append([f"`{RXRX3_CORE_METADATA}`", "recursionpharma/rxrx3-core's metadata file: the same rows and "
                     "columns as `metadata.parquet`; a missing gene, SMILES or concentration is an empty field (NULL)"])
    if (inputs.folder / RXRX3_CORE_EMBEDDINGS).is_file():
        rows.append([f"`{RXRX3_CORE_EMBEDDINGS}`", "recursionpharma/rxrx3-core's embeddings file: a copy of the "
                     "openphenom embeddings (`well_id` + `feature_0..`)"])
    if inputs.benchmarks:
        rows.append(["`benchmarks/`", "benchmark definitions, truth tables and results (JSON)"])
    if inputs.polaris:
        rows.append(["`polaris/`", "Polaris (polaris-lib 0.13) dataset and benchmark of the compound-gene task"])
    rows += [["`release.json`", "version, data version, sha256 and size of every file, counts, manifest"],
             [f"`{CHANGELOG}`", "every published version"]]
    return "## Files\n\n" + _table(["path", "content"], rows) + "\n"


def _selection(inputs: ReleaseInputs) -> str:
    m = inputs.manifest
    lines = ["## How it was made", "", "### Selection", "",
             f"Manifest `{m.name}` version `{m.version}` (layout `{m.layout}`), manifest hash "
             f"`{m.manifest_hash()[:16]}`, lockfile content hash `{inputs.lock_info['content_hash'][:16]}`. "
             "Wells = the rows of this DuckDB query over the source's `wells` view, plus the samplers' draws:", "",
             "```sql", m.sql.strip(), "```", ""]
    if m.samples:
        lines += [_table(["sampler", "where", "per", "n", "seed"],
                         [[s.name, f"`{s.where}`", ", ".join(s.per) or "-", s.n, s.seed] for s in m.samples]), ""]
    skipped = inputs.report.get("skipped_wells", []) or []
    lines.append(f"The lockfile lists {inputs.lock_wells:,} wells; {len(skipped):,} were skipped by compress "
                 "(see `compression_report.json`).")
    return "\n".join(lines) + "\n"


def _curation(inputs: ReleaseInputs) -> str | None:
    """select.filters: stats table, kept/dropped, before/after."""
    return card_section(inputs.folder)


def _probe(inputs: ReleaseInputs) -> str | None:
    """Block probe tables (rxcurate probe / embeddings[0].probe): score by block, the chosen default set."""
    docs = sorted((inputs.folder / PROBE_DIR).glob(f"*/{PROBE_JSON}")) if (inputs.folder / PROBE_DIR).is_dir() else []
    if not docs:
        return None
    m = inputs.manifest
    chosen = m.embeddings[0].get("block") if m.embeddings else None
    parts = ["## Block probe", "",
             "Linear probes (multinomial logistic regression) trained on the wells of some experiments and scored "
             "(balanced accuracy) on held-out experiments, per transformer block; mean +/- std over seeded splits. "
             "Each experiment is centre-scaled on its own control wells first. Tables: `probe/<encoder>/probe.json`, "
             "`probe.parquet` (one row per block, task, seed) and `probe.png`.", ""]
    for path in docs:
        doc = json.loads(path.read_text())
        tasks = list(doc["tasks"])
        cfg = doc.get("config", {})
        meaningful = bool(doc.get("best_beats_chance"))
        rows = []
        for e in doc["summary"]:
            cells = []
            for t in tasks:
                v = e["tasks"].get(t, {})
                cells.append("n/a" if v.get("mean") is None else f"{v['mean']:.3f} +/- {v['std']:.3f}")
            best = e["block"] == doc["best_block"] and meaningful
            rows.append([f"**{e['block']}**" if best else e["block"], *cells,
                         "n/a" if e["score"] is None else f"{e['score']:.3f}", "best" if best else ""])
        chance = {t: doc["summary"][0]["tasks"].get(t, {}).get("chance") for t in tasks}
        first = int(cfg.get("seed_start", 0))
        last = first + int(cfg.get("seeds", 1)) - 1
        parts += [f"### {doc['encoder']}", "",
                  f"Tasks: {', '.join(tasks)}; seeds {first}..{last}; held-out share of experiments "
                  f"{cfg.get('holdout')}; chance level "
                  + ", ".join(f"{t} {c:.3f}" for t, c in chance.items() if c is not None) + ".", "",
                  _table(["block", *tasks, "mean over tasks", ""], rows), "",
                  (f"Best block: `{doc['best_block']}` ({doc.get('rule', 'highest mean score')})." if meaningful else
                   f"No block beats chance by more than its spread (std over seeds), so none is called best; "
                   f"`{doc['best_block']}` is only the tie-break choice ({doc.get('rule', 'highest mean score')}).")
                  + (" It is this release's default embedding set." if chosen == "best" else ""), ""]
        plot = path.parent / PROBE_PLOT
        if plot.is_file():
            rel = plot.relative_to(inputs.folder).as_posix()
            parts += [f"![Block probe scores of {doc['encoder']} by block, chance level dotted]({rel})", ""]
    return "\n".join(parts)


def _compression(inputs: ReleaseInputs) -> str:
    t = inputs.manifest.transform
    r = inputs.report
    b = r.get("bytes", {})
    q = r.get("quality_sample", {}) or {}
    shape = r.get("image_shape") or []
    crop = "none (whole image)" if t.crop is None else (
        f"{t.crop.height}x{t.crop.width}, " + ("centred" if t.crop.origin is None else f"origin {list(t.crop.origin)}"))
    codec = t.codec
    setting = "lossless" if codec.mode == "lossless" else f"{codec.mode} {codec.value:g}"
    rows = [["crop", crop], ["8-bit conversion", json.dumps(t.convert.to_dict(), sort_keys=True)],
            ["codec", f"{codec.name} ({setting}" + (f", {codec.resolutions} resolutions)" if codec.name == "jpeg2000"
                                                    else ")")],
            ["sites / channels", f"{list(t.sites)} / {list(t.channels)}"],
            ["image shape", "x".join(str(s) for s in shape) + " uint8"],
            ["bytes per image", f"mean {_num((b.get('per_image') or {}).get('mean'))}, min "
                                f"{_num((b.get('per_image') or {}).get('min'))}, max "
                                f"{_num((b.get('per_image') or {}).get('max'))}"],
            ["compression ratio vs 8-bit", _num(b.get("compression_ratio"))],
            ["total shard bytes", _num(b.get("shards_total"))],
            ["clipped pixels (low / high)", f"{_num((r.get('clipped_fraction') or {}).get('low'))} / "
                                            f"{_num((r.get('clipped_fraction') or {}).get('high'))}"]]
    psnr = q.get("psnr_db") or {}
    if q.get("images"):
        err = (q.get("max_abs_error") or {}).get("max")
        rows.append(["quality sample", f"{q['images']} images (seed {q.get('seed')}): PSNR mean "
                     f"{_num(psnr.get('mean'))} dB, min {_num(psnr.get('min'))} dB; max abs error {_num(err)}; "
                     f"exact {q.get('exact_images', 0)}"])
    return "### Image transform and compression\n\n" + _table(["setting", "value"], rows) + \
        f"\n\nData version `{inputs.data_version}` = hash of the lockfile content and this transform.\n"


def _embeddings(inputs: ReleaseInputs) -> str:
    if not inputs.embeddings:
        return "## Embeddings\n\nNo embeddings are published with this version.\n"
    rows = []
    for e in inputs.embeddings:
        tiles = e.info.get("tiles", {}) or {}
        weights = e.info.get("weights_sha256")
        rows.append([f"`{e.name}`", e.info.get("encoder", e.name), e.dim, e.rows,
                     f"{tiles.get('size', 'n/a')} px, {tiles.get('aggregation', 'mean')}" if tiles else "n/a",
                     f"`{str(weights)[:12]}`" if weights else "none"])
    default = ""
    m = inputs.manifest
    if m.embeddings and "block" in m.embeddings[0]:
        default = (f" The default set is `{inputs.embeddings[0].name}` (block "
                   f"{m.embeddings[0]['block']} of {m.embeddings[0]['encoder']}); the other blocks are published too.")
    return ("## Embeddings\n\nOne row per well, sorted by `well_id`; features are float32." + default + "\n\n"
            + _table(["set", "encoder", "dim", "wells", "tiles", "weights sha256"], rows) + "\n")


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        out: list[tuple[str, Any]] = []
        for k in sorted(tree):
            out += _flatten(tree[k], f"{prefix}/{k}" if prefix else str(k))
        return out
    return [(prefix, tree)]


def _protocol_lines(d: dict[str, Any]) -> list[str]:
    """Which published protocol the definition follows and whether its numbers can be compared with the published
    figures (docs/comparing.md lists every difference)."""
    proto = d.get("protocol")
    if not proto:
        return ["Protocol: not stated by the definition; do not compare with published figures.", ""]
    line = (f"Protocol: {proto['name']}. Comparable with published figures: "
            f"{'yes' if proto.get('comparable') else 'no'}.")
    diffs = proto.get("differences") or []
    if diffs:
        line += " Differences: " + "; ".join(diffs) + "."
    return [line, ""]


def _curation_flag(inputs: ReleaseInputs, benchmark_id: str) -> list[str]:
    """Curation honesty: a release filtered (select.filters) on a statistic that is also this benchmark's metric
    scores the filter's own criterion on the perturbations it kept; say so next to the numbers."""
    if not (inputs.folder / CURATION).is_file():
        return []
    rep = read_json(inputs.folder / CURATION)
    stat = rep.get("statistic") or {}
    filters = rep.get("filters") or []
    if stat.get("benchmark") != benchmark_id or not filters:
        return [f"Computed on the curated release: only perturbations that passed `select.filters` "
                f"({', '.join(sorted({f['stat'] for f in filters}))}) are scored.", ""] if filters else []
    metrics = stat.get("metrics") or ["consistency"]
    stats = ", ".join(f"`{f['stat']}` on `{f['embeddings']}`" for f in filters)
    return [f"**Curation flag:** this release was filtered (`select.filters`: {stats}) on the same statistic as "
            f"this benchmark's {', '.join(f'`{m}`' for m in metrics)} metrics, so those numbers score the filter's "
            "own criterion on the perturbations it kept: they are high by construction and are not evidence about "
            "the embeddings. The candidates' numbers before the filter are in the curation section.", ""]


def _benchmarks(inputs: ReleaseInputs) -> str:
    if not inputs.benchmarks:
        return "## Benchmarks\n\nNo benchmarks are published with this version.\n"
    parts = ["## Benchmarks", "",
             "Definitions are in `benchmarks/definitions/`, results in `benchmarks/results/<embeddings>/`; "
             "`rxcurate validate` re-runs each one from the published files and compares within the definition's "
             "tolerance.", ""]
    for b in inputs.benchmarks:
        d = b.definition or {}
        title = d.get("title", b.id)
        parts += [f"### {b.id}: {title}" + (f" (v{d['version']})" if d.get("version") else ""), ""]
        if d.get("description"):
            parts += [d["description"], ""]
        parts += _protocol_lines(d)
        parts += _curation_flag(inputs, b.id)
        if d.get("postprocess"):
            seeds = d.get("seeds") or {}
            first, count = int(seeds.get("start", 0)), int(seeds.get("count", 1))
            parts += [f"Post-processing: `{json.dumps(d['postprocess'], sort_keys=True)}`; seeds "
                      f"{first}..{first + count - 1}; tolerance `{json.dumps(d.get('tolerance'), sort_keys=True)}`.",
                      ""]
        rows = []
        for rel, doc in sorted(b.results.items()):
            summary = doc.get("summary") if isinstance(doc, dict) else None
            items = list(headline(summary, d).items()) if isinstance(summary, dict) and summary else \
                [(k, v) for k, v in _flatten(doc.get("metrics", {})) if isinstance(v, int | float)][:20]
            rows += [[result_set_name(rel), k, v] for k, v in items]
        parts += [_table(["embeddings", "metric", "value"], rows, limit=200), ""] if rows else \
            ["No results.", ""]
    return "\n".join(parts)


def _polaris(inputs: ReleaseInputs) -> str:
    if not inputs.polaris:
        return ""
    return ("## Polaris\n\n`polaris/` holds the compound-gene activity task as polaris-lib 0.13 artifacts (a "
            "DatasetV1 of `(treatment, gene_symbol, active)` pairs and a SingleTaskBenchmarkSpecification, zero-shot: "
            "every pair is in the test set; main metric per-compound PR-AUC). Load them offline:\n\n```python\n"
            "from rxcurate.publish.polaris import load_benchmark\nbenchmark = load_benchmark(\"polaris\")\n"
            "results = benchmark.evaluate(y_prob=scores)  # one score per test pair, in table order\n```\n")


def _usage(inputs: ReleaseInputs) -> str:
    repo = inputs.repo_id
    v = inputs.manifest.version
    lines = ["## How to load", "", "Pin the version (tag `v" + v + "`):", "", "```python",
             "from datasets import load_dataset", "",
             f'images = load_dataset("{repo}", revision="v{v}", split="train")  # __key__, jp2 (PIL image)',
             f'metadata = load_dataset("{repo}", "{METADATA_CONFIG}", revision="v{v}", split="train")']
    for e in inputs.embeddings:
        lines.append(f'embeddings = load_dataset("{repo}", "{e.config_name}", revision="v{v}", split="train")')
    lines += ["```", "", "Offline or exactly pinned (a cached newer version is never substituted):", "", "```python",
              "from huggingface_hub import snapshot_download",
              f'path = snapshot_download("{repo}", repo_type="dataset", revision="v{v}")',
              'images = load_dataset(path, split="train")', "```", "", "With rxcurate:", "", "```bash",
              f"rxcurate pull hf://{repo}@{v} --parts metadata,embeddings", f"rxcurate validate hf://{repo}@{v}",
              f"rxcurate pull local://{repo}@{v}   # a local hub (--hub DIR)", "```", ""]
    return "\n".join(lines)


def default_citation(inputs: ReleaseInputs) -> str:
    m = inputs.manifest
    key = re.sub(r"[^A-Za-z0-9]", "", m.name) or "release"
    return (f"```bibtex\n@misc{{{key}_{m.version.replace('.', '_')},\n  title = {{{m.card.get('pretty_name') or m.name}"
            f", version {m.version}}},\n  howpublished = {{\\url{{https://huggingface.co/datasets/{inputs.repo_id}}}}},"
            f"\n  note = {{Curated with rxcurate; cite the source screen as well}}\n}}\n```")


def card_body(inputs: ReleaseInputs, changelog: str) -> str:
    m = inputs.manifest
    c_emb = ", ".join(f"`{e.name}` ({e.dim}-d)" for e in inputs.embeddings) or "none"
    c_bench = ", ".join(f"`{b.id}`" for b in inputs.benchmarks) or "none"
    shape = inputs.report.get("image_shape") or []
    overview = _table(["", ""], [
        ["version", f"`{m.version}` (tag `v{m.version}`)"],
        ["data version", f"`{inputs.data_version[:16]}`"],
        ["wells", inputs.wells],
        ["images", f"{inputs.images:,} ({'x'.join(map(str, shape))} uint8 JPEG 2000, one per channel)"],
        ["shards", f"{len(inputs.shards)} ({sum(s['bytes'] for s in inputs.shards):,} bytes)"],
        ["embeddings", c_emb],
        ["benchmarks", c_bench],
    ])
    about = str(m.card.get("prose") or "")
    citation = str(m.card.get("citation") or default_citation(inputs))
    sections = [
        f"# {m.card.get('pretty_name') or m.name}", "",
        " ".join(m.description.split()) if m.description else "", "",
        prose("about", about), "",
        overview, "",
        _contents(inputs),
        _files(inputs),
        _selection(inputs),
        _curation(inputs),
        _compression(inputs),
        _embeddings(inputs),
        _probe(inputs),
        _benchmarks(inputs),
        _polaris(inputs),
        _usage(inputs),
        "## Citation", "", prose("citation", citation), "",
        "## Changelog", "", latest_entry(changelog).replace("## ", "### ", 1),
        f"All versions: [{CHANGELOG}]({CHANGELOG}).", "",
    ]
    return "\n".join(s for s in sections if s is not None)


@dataclass
class CardBuild:
    text: str
    metadata: dict[str, Any]
    data_hash: str
    prose_hash: str


def build_card(inputs: ReleaseInputs, changelog: str) -> CardBuild:
    """The card text and its hashes; the text round-trips through huggingface_hub and our schema."""
    meta = card_metadata(inputs)
    problem = schema_problem(meta, "card", f"{CARD} front matter")
    if problem:
        raise CardError(problem)
    body = card_body(inputs, changelog)
    text = f"---\n{card_yaml(meta)}\n---\n\n{body}"
    parsed, _ = split_card(text)
    if parsed != json.loads(json.dumps(meta)):
        raise CardError("README.md: the front matter does not round-trip through huggingface_hub's DatasetCard "
                        "(a value YAML cannot represent?); check the manifest's card fields")
    return CardBuild(text, meta, card_data_hash(text), card_prose_hash(text))


# --------------------------------------------------------------------------------------------------- curation
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "-" if v is None else str(v)


def card_section(folder: Path) -> str | None:
    """The card's curation section (None without ``phenostats.parquet``): filters, stats table, kept/dropped and the
    before/after benchmarks."""
    if not (folder / PHENOSTATS).is_file() or not (folder / CURATION).is_file():
        return None
    rep = read_json(folder / CURATION)
    lines = ["### Phenotype-consistency curation", "",
             "The selection above gave the candidate wells; the release keeps the controls and the perturbations "
             "passing these filters (statistic: the `perturbation-signal` benchmark's replicate consistency p-value "
             "against negative-control pseudo-perturbations; a perturbation is a gene over its guides or a compound "
             "at one concentration).", "",
             "| stat | embeddings | p below | applies to | keep controls | seed |", "|---|---|---|---|---|---|"]
    for f in rep["filters"]:
        lines.append(f"| {f['stat']} | `{f['embeddings']}` | {f['p_below']} | {', '.join(f['apply_to'])} | "
                     f"{str(f['keep_controls']).lower()} | {f['seed']} |")
    ph = rep["phenostats"]
    lines += ["", f"Statistic table: [`{PHENOSTATS}`]({PHENOSTATS}) ({ph['rows']:,} rows, sha256 "
              f"`{ph['sha256'][:16]}`); report: [`{CURATION}`]({CURATION}). Wells kept: {rep['wells']['kept']:,} of "
              f"{rep['wells']['candidates']:,}.", "",
              "| type | perturbations kept | dropped | wells kept | dropped |", "|---|---|---|---|---|"]
    for t, v in rep["by_perturbation_type"].items():
        lines.append(f"| {t} | {v['perturbations']['kept']} | {v['perturbations']['dropped']} | {v['wells']['kept']} | "
                     f"{v['wells']['dropped']} |")
    if (folder / COMPARISON).is_file():
        comp = read_json(folder / COMPARISON)
        lines += ["", f"Release benchmarks before (candidates) and after (curated) the filter, `{comp['embeddings']}` "
                  f"embeddings ([`{COMPARISON}`]({COMPARISON})):", "",
                  "| benchmark | metric | candidates | curated |", "|---|---|---|---|"]
        for bid, pair in comp["benchmarks"].items():
            before, after = pair.get("candidates") or {}, pair.get("curated") or {}
            for metric in sorted(set(before) | set(after)):
                lines.append(f"| {bid} | {metric} | {_fmt(before.get(metric))} | {_fmt(after.get(metric))} |")
    return "\n".join(lines) + "\n"
