"""The dataset card (``README.md``): YAML front matter for the Hub plus a body generated from the release.

Front matter (``huggingface_hub.DatasetCardData``, validated by ``schemas/card.schema.json``): license,
pretty_name, tags, task_categories, size_categories, ``configs`` (``default`` = the image shards, ``metadata``, one
``embeddings-<set>`` per embedding set, each with ``data_files``) and ``dataset_info`` (features and split sizes per
config), plus the manifest's ``card.license_name``/``license_link`` (licence ``other``), ``source_datasets`` and the
paper's ``arxiv:<id>`` tag. The body is generated from the lockfile, metadata, compression report, embeddings info
and benchmark results: source and licence, a sample montage, contents (controls explained), selection,
compression, embeddings, benchmarks (with plots), how to load, citation and changelog. Every number is written by
one helper (:func:`fmt_num`: integers with separators, floats to 4 significant digits); concentrations sort
numerically.

Card images (``card/``, :data:`rxcurate.layout.CARD_ASSETS`) are rendered here from the release's own files and
returned in :class:`CardBuild` (``assets``); :mod:`rxcurate.assemble` writes them. The same inputs give the same
PNG bytes: the montage is written by Pillow (no timestamp, no text chunk), the plots by matplotlib's Agg with the
default style and no ``Software`` entry.

Prose is marked off by ``<!-- rxcurate:prose NAME -->`` ... ``<!-- rxcurate:end-prose NAME -->`` comments (the
manifest's ``card.prose`` and ``card.citation``). The card's *data hash* is the canonical hash of its front matter and
its body with every prose block emptied: editing only prose keeps it (and release.json, and the data version)
unchanged; editing a generated number changes it, which ``rxcurate validate`` reports.
"""

from __future__ import annotations

import fnmatch
import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from huggingface_hub import DatasetCard, DatasetCardData
from PIL import Image

from rxcurate.errors import CardError
from rxcurate.io import canonical_hash, read_json
from rxcurate.layout import (
    CARD,
    CARD_COMPOUND_GENE_PLOT,
    CARD_MONTAGE,
    CARD_RECALL_PLOT,
    CHANGELOG,
    COMPARISON,
    CURATION,
    DATA_DIR,
    METADATA_PARQUET,
    PHENOSTATS,
    POLARIS_BENCHMARK,
    POLARIS_DIR,
    PROBE_DIR,
    PROBE_JSON,
    PROBE_PLOT,
    RXRX3_CORE_EMBEDDINGS,
    RXRX3_CORE_METADATA,
    card_asset,
    result_set_name,
)
from rxcurate.manifest import Manifest
from rxcurate.release_inputs import BenchmarkEntry, ReleaseInputs, headline
from rxcurate.schemas import schema_problem
from rxcurate.shards import IMAGE_COLUMN, KEY_COLUMN, SCHEMA
from rxcurate.transform import decode

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
    paper = card.get("paper") or {}
    arxiv = [f"arxiv:{paper['arxiv']}"] if paper.get("arxiv") else []
    tags = list(dict.fromkeys([*(card.get("tags") or DEFAULT_TAGS), "rxcurate", *arxiv]))
    licence = card_license(m)
    out: dict[str, Any] = {"license": licence}
    if licence == "other":  # the Hub's card metadata: a licence not in its list is named and linked
        out.update({k: str(card[k]) for k in ("license_name", "license_link") if card.get(k)})
    out.update({
        "pretty_name": card.get("pretty_name") or m.name,
        "tags": tags,
        "task_categories": ["image-feature-extraction"],
        "size_categories": [size_category(inputs.images)],
    })
    if card.get("source_datasets"):
        out["source_datasets"] = [str(d) for d in card["source_datasets"]]
    out.update({"configs": configs, "dataset_info": infos})
    return out


def card_license(manifest: Manifest) -> str:
    """The card's licence id: ``card.license``, else the manifest's ``license``, else ``other``; a
    ``card.license_name`` or ``license_link`` (a licence the Hub does not list) needs ``other``."""
    card = manifest.card
    licence = str(card.get("license") or manifest.license or "other")
    if licence != "other" and (card.get("license_name") or card.get("license_link")):
        raise CardError(f"{manifest.path}: card.license_name / card.license_link name a licence the Hub does not "
                        f"list, which needs card.license: other (it is {licence!r}); set card.license: other or "
                        "drop them")
    return licence


def card_yaml(meta: dict[str, Any]) -> str:
    """YAML of the front matter through huggingface_hub's DatasetCardData (the Hub's own serialisation)."""
    return DatasetCardData(**meta).to_yaml()


# --------------------------------------------------------------------------------------------------- body
SIG_DIGITS = 4


def fmt_num(v: Any) -> str:
    """The card's one number format: None -> ``n/a``, booleans lower case, integers with thousands separators,
    floats to 4 significant digits (``0.2393``, ``2.5``, ``61,180`` from 10,000 up, never an exponent below
    1e-4 ... 1e16 aside); anything else as ``str``."""
    if v is None:
        return "n/a"
    if isinstance(v, bool | np.bool_):
        return str(bool(v)).lower()
    if isinstance(v, int | np.integer):
        return f"{int(v):,}"
    if isinstance(v, float | np.floating):
        f = float(v)
        if math.isnan(f):
            return "n/a"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        if f != 0 and 1e4 <= abs(f) < 1e16:
            return f"{round(f, SIG_DIGITS - 1 - int(math.floor(math.log10(abs(f))))):,.0f}"
        return f"{f:.{SIG_DIGITS}g}"
    return str(v)


def _round_floats(tree: Any) -> Any:
    """``tree`` with every float cut to 4 significant digits (for settings shown as JSON)."""
    if isinstance(tree, dict):
        return {k: _round_floats(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [_round_floats(v) for v in tree]
    if isinstance(tree, float) and math.isfinite(tree):
        r = float(f"{tree:.{SIG_DIGITS}g}")
        return int(r) if r.is_integer() and abs(r) < 1e16 else r  # 24000.0 -> 24000
    return tree


def _json(tree: Any) -> str:
    return json.dumps(_round_floats(tree), sort_keys=True)


def number_key(text: str) -> tuple[Any, ...]:
    """Sort key of a ``/``-separated name that orders its numeric parts as numbers (``2.5/x`` before ``10/x``;
    numbers before words, so ``max`` comes after every concentration)."""
    out: list[Any] = []
    for part in str(text).split("/"):
        try:
            out.append((0, float(part), ""))
        except ValueError:
            out.append((1, 0.0, part))
    return tuple(out)


def _table(header: list[str], rows: list[list[Any]], limit: int = MAX_TABLE_ROWS, more: str = "") -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows[:limit]:
        out.append("| " + " | ".join(fmt_num(c).replace("|", "\\|") for c in r) + " |")
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
        present = set(md.loc[ctrl, "treatment"])
        parts += _controls(inputs, [c for c in CONTROL_MEANING if c in present])
        conc = md.loc[md["concentration"].notna() & ~ctrl, "concentration"]
        if len(conc):
            vc = conc.value_counts()
            parts += ["### Compound concentrations", "", _table(["concentration (uM)", "wells"],
                                                                [[fmt_num(float(c)), int(vc[c])]
                                                                 for c in sorted(vc.index, key=float)]), ""]
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
        rows.append(["`polaris/`", "Polaris dataset and benchmark of the compound-gene task (polaris-lib 0.13 "
                     "format) and baseline predictions"])
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
                cells.append("n/a" if v.get("mean") is None else f"{fmt_num(v['mean'])} +/- {fmt_num(v['std'])}")
            best = e["block"] == doc["best_block"] and meaningful
            rows.append([f"**{e['block']}**" if best else e["block"], *cells,
                         fmt_num(e["score"]), "best" if best else ""])
        chance = {t: doc["summary"][0]["tasks"].get(t, {}).get("chance") for t in tasks}
        first = int(cfg.get("seed_start", 0))
        last = first + int(cfg.get("seeds", 1)) - 1
        parts += [f"### {doc['encoder']}", "",
                  f"Tasks: {', '.join(tasks)}; seeds {first}..{last}; held-out share of experiments "
                  f"{fmt_num(cfg.get('holdout'))}; chance level "
                  + ", ".join(f"{t} {fmt_num(c)}" for t, c in chance.items() if c is not None) + ".", "",
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
    setting = "lossless" if codec.mode == "lossless" else f"{codec.mode} {fmt_num(codec.value)}"
    rows = [["crop", crop], ["8-bit conversion", _json(t.convert.to_dict())],
            ["codec", f"{codec.name} ({setting}" + (f", {codec.resolutions} resolutions)" if codec.name == "jpeg2000"
                                                    else ")")],
            ["sites / channels", f"{list(t.sites)} / {list(t.channels)}"],
            ["image shape", "x".join(str(s) for s in shape) + " uint8"],
            ["bytes per image", f"mean {fmt_num((b.get('per_image') or {}).get('mean'))}, min "
                                f"{fmt_num((b.get('per_image') or {}).get('min'))}, max "
                                f"{fmt_num((b.get('per_image') or {}).get('max'))}"],
            ["compression ratio vs 8-bit", fmt_num(b.get("compression_ratio"))],
            ["total shard bytes", fmt_num(b.get("shards_total"))],
            ["clipped pixels (low / high)", f"{fmt_num((r.get('clipped_fraction') or {}).get('low'))} / "
                                            f"{fmt_num((r.get('clipped_fraction') or {}).get('high'))}"]]
    psnr = q.get("psnr_db") or {}
    if q.get("images"):
        err = (q.get("max_abs_error") or {}).get("max")
        rows.append(["quality sample", f"{q['images']} images (seed {q.get('seed')}): PSNR mean "
                     f"{fmt_num(psnr.get('mean'))} dB, min {fmt_num(psnr.get('min'))} dB; max abs error "
                     f"{fmt_num(err)}; "
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
            parts += [f"Post-processing: `{_json(d['postprocess'])}`; seeds "
                      f"{first}..{first + count - 1}; tolerance `{_json(d.get('tolerance'))}`.",
                      ""]
        rows = []
        for rel, doc in sorted(b.results.items()):
            summary = doc.get("summary") if isinstance(doc, dict) else None
            items = ordered_headline(summary, d) if isinstance(summary, dict) and summary else \
                [(k, v) for k, v in _flatten(doc.get("metrics", {})) if isinstance(v, int | float)][:20]
            rows += [[result_set_name(rel), k, v] for k, v in items]
        parts += [_table(["embeddings", "metric", "value"], rows, limit=200), ""] if rows else \
            ["No results.", ""]
    return "\n".join(parts)


def ordered_headline(summary: dict[str, Any], definition: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """:func:`headline`'s entries in the definition's pattern order, each pattern's matches in :func:`number_key`
    order (concentrations numerically: 0.0025, 0.01, ..., 2.5, 10, then ``max``)."""
    patterns = (definition or {}).get("metrics") or ["*"]

    def rank(k: str) -> tuple[Any, ...]:
        first = next((i for i, p in enumerate(patterns) if fnmatch.fnmatchcase(k, p)), len(patterns))
        return (first, number_key(k))

    return sorted(headline(summary, definition).items(), key=lambda kv: rank(kv[0]))


def _polaris(inputs: ReleaseInputs) -> str:
    if not inputs.polaris:
        return ""
    url = f"hf://datasets/{inputs.repo_id}@v{inputs.manifest.version}/{POLARIS_DIR}/{POLARIS_BENCHMARK}"
    return ("## Polaris\n\n`polaris/` holds the compound-gene activity task as a Polaris dataset of `(treatment, "
            "gene_symbol, active)` pairs and a single-task benchmark in polaris-lib 0.13's format, aligned with "
            "`recursion/rxrx-compound-gene-activity-benchmark`: zero-shot (every pair is in the test set), main "
            "metric per-compound PR-AUC (`pr_auc` grouped by `treatment`, mean), with per-compound AUC-ROC. "
            "`predictions.parquet` holds this release's baseline scores for the pairs. Load it with polaris-lib "
            "from any directory:\n\n```python\nimport polaris as po\n"
            f"benchmark = po.load_benchmark(\"{url}\")\n"
            "results = benchmark.evaluate(y_prob=scores)  # one score per test pair, in table order\n```\n\n"
            "Offline, on a local copy: `rxcurate.publish.polaris.load_benchmark(\"<copy>/polaris\")`. polaris-lib "
            "pins pyarrow < 18, so it lives in its own environment (`make install-polaris`).\n")


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


# --------------------------------------------------------------------------------------------------- source, licence
def _source(inputs: ReleaseInputs) -> str:
    """Licence (id, name, link), the paper and the source datasets, from the manifest's card fields."""
    m = inputs.manifest
    card = m.card
    licence = card_license(m)
    name, link = card.get("license_name"), card.get("license_link")
    shown = f"`{licence}`" + (f" ({name})" if name and licence == "other" else "")
    if link and licence == "other":
        shown += f": [{link}]({link})"
    rows = [["licence", shown]]
    paper = card.get("paper") or {}
    if paper:
        title = paper.get("title") or paper.get("url") or f"arXiv:{paper.get('arxiv')}"
        url = paper.get("url") or (f"https://arxiv.org/abs/{paper['arxiv']}" if paper.get("arxiv") else None)
        rows.append(["paper", f"[{title}]({url})" if url else title])
    if card.get("source_datasets"):
        rows.append(["source datasets", ", ".join(str(d) for d in card["source_datasets"])])
    return "## Source and licence\n\n" + _table(["", ""], rows) + "\n"


# --------------------------------------------------------------------------------------------------- controls
CONTROL_MEANING = {
    "EMPTY_control": "no perturbation: neither a CRISPR guide nor a compound (on CRISPR and compound plates alike). "
                     "The negative controls: the benchmarks fit their post-processing (PCA, centre-scaling or TVN per "
                     "experiment or batch) on them.",
    "CRISPR_control": "a control CRISPR guide that targets no gene (a non-targeting or intergenic guide; CRISPR "
                      "plates only): the CRISPR procedure without a knockout.",
}


def _control_uses(inputs: ReleaseInputs, control: str) -> list[str]:
    """How each published benchmark definition uses a control treatment (its ``controls`` and
    ``exclude_from_map``)."""
    out = []
    for b in inputs.benchmarks:
        d = b.definition or {}
        if not d or (d.get("layout") and d["layout"] != inputs.manifest.layout):
            continue
        fit = control in ((d.get("controls") or {}).get("values") or [])
        dropped = control in (d.get("exclude_from_map") or [])
        method = (d.get("postprocess") or {}).get("method")
        what = []
        if fit:
            what.append(f"fits its post-processing{f' (`{method}`)' if method else ''} on them")
        what.append("drops them from the map" if dropped else "keeps them as one map row")
        out.append(f"`{b.id}` " + " and ".join(what))
    return out


def _controls(inputs: ReleaseInputs, present: list[str]) -> list[str]:
    lines = []
    for c in present:
        meaning = CONTROL_MEANING.get(c)
        if meaning is None:
            continue
        uses = _control_uses(inputs, c)
        lines.append(f"- `{c}`: {meaning}" + (f" Benchmarks: {'; '.join(uses)}." if uses else ""))
    return lines + [""] if lines else []


# --------------------------------------------------------------------------------------------------- montage
# The RxRx / Cell Painting 6-channel -> RGB mapping of recursionpharma's rxrx1-utils (rxrx/io.py RGB_MAP and
# convert_tensor_to_rgb): channel c is scaled by 1/top (8-bit value / top, clipped to 1), times its colour, truncated
# to integers; the channels' colours are summed and clipped to 255.
RGB_MAP: dict[int, tuple[tuple[int, int, int], int, str]] = {
    1: ((19, 0, 249), 51, "Hoechst (nuclei): blue"),
    2: ((42, 255, 31), 107, "concanavalin A (endoplasmic reticulum): green"),
    3: ((255, 0, 25), 64, "phalloidin (actin): red"),
    4: ((45, 255, 252), 191, "SYTO 14 (nucleoli, cytoplasmic RNA): cyan"),
    5: ((250, 0, 253), 89, "MitoTracker (mitochondria): magenta"),
    6: ((254, 255, 40), 191, "wheat germ agglutinin (Golgi, plasma membrane): yellow"),
}
MONTAGE_TILE = 256  # tiles are block-averaged down to at most this many pixels a side
MONTAGE_GAP = 4  # white pixels between tiles
MONTAGE_SCAN = 50  # candidate wells tried per tile (the first by well_id whose images are all in the shards)


def composite_rgb(images: dict[int, np.ndarray]) -> np.ndarray:
    """``{channel: uint8 HxW}`` -> uint8 HxWx3 with :data:`RGB_MAP` (channels without a colour are left out)."""
    shape = next(iter(images.values())).shape
    acc = np.zeros((*shape, 3), dtype=np.int64)
    for c in sorted(images):
        if c not in RGB_MAP:
            continue
        colour, top, _ = RGB_MAP[c]
        x = np.minimum(images[c].astype(np.float64) / top, 1.0)
        acc += (x[..., None] * np.asarray(colour, dtype=np.float64)).astype(np.int64)
    return np.minimum(acc, 255).astype(np.uint8)


def downscale(rgb: np.ndarray, limit: int = MONTAGE_TILE) -> np.ndarray:
    """Block mean by the smallest integer factor that brings both sides to at most ``limit`` (integer arithmetic)."""
    h, w = rgb.shape[:2]
    f = max(1, math.ceil(max(h, w) / limit))
    if f == 1:
        return rgb
    h2, w2 = h // f, w // f
    blocks = rgb[:h2 * f, :w2 * f].astype(np.int64).reshape(h2, f, w2, f, 3)
    return (blocks.sum(axis=(1, 3)) // (f * f)).astype(np.uint8)


@dataclass
class MontageTile:
    well_id: str
    kind: str
    perturbation: str
    keys: dict[int, str]  # channel -> __key__


def _tile_candidates(inputs: ReleaseInputs) -> list[tuple[str, Any]]:
    """``(kind, wells frame sorted by well_id)`` per tile: rxrx3 a gene knockout, a compound, then each control;
    rxrx1 one per well type."""
    md = inputs.metadata
    if inputs.manifest.layout == "rxrx3":
        ctrl = md["treatment"].isin(list(CONTROL_MEANING))
        groups = [("CRISPR knockout", md[(md["perturbation_type"] == "CRISPR") & ~ctrl]),
                  ("compound", md[(md["perturbation_type"] == "COMPOUND") & ~ctrl])]
        groups += [(c, md[md["treatment"] == c]) for c in CONTROL_MEANING]
    else:
        groups = [(str(t), md[md["well_type"] == t]) for t in sorted(md["well_type"].dropna().unique(), key=str)]
    return [(k, g.sort_values("well_id", kind="mergesort")) for k, g in groups if len(g)]


def _tile_keys(layout: str, row: Any, site: int, channels: list[int]) -> dict[int, str]:
    if layout == "rxrx3":
        exp, addr = row["experiment_name"], row["address"]
    else:
        exp, addr = row["experiment"], row["well"]
    return {c: f"{exp}/Plate{int(row['plate'])}/{addr}_s{site}_{c}" for c in channels}


def _perturbation(layout: str, row: Any) -> str:
    if layout == "rxrx1":
        return str(row.get("sirna", ""))
    text = str(row["treatment"])
    if row.get("gene") and str(row["gene"]) != text and row["perturbation_type"] == "CRISPR" \
            and text not in CONTROL_MEANING:
        text = f"{row['gene']} ({text})"
    conc = row.get("concentration")
    if conc is not None and not (isinstance(conc, float) and math.isnan(conc)):
        text += f" at {fmt_num(float(conc))} uM"
    return text


def montage_tiles(inputs: ReleaseInputs, keys: set[str]) -> list[MontageTile]:
    """The wells of the montage (deterministic: per kind the first by ``well_id`` whose site-1 images of every
    montage channel are all in the shards)."""
    t = inputs.manifest.transform
    channels = [c for c in t.channels if c in RGB_MAP]
    if not channels or not t.sites:
        return []
    site = int(sorted(t.sites)[0])
    layout = inputs.manifest.layout
    tiles = []
    for kind, wells in _tile_candidates(inputs):
        if layout == "rxrx1" and "site" in wells.columns:
            wells = wells[wells["site"].astype(int) == site]
        for _, row in wells.head(MONTAGE_SCAN).iterrows():
            want = _tile_keys(layout, row, site, channels)
            if all(k in keys for k in want.values()):
                tiles.append(MontageTile(str(row["well_id"]), kind, _perturbation(layout, row), want))
                break
    return tiles


def _shard_keys(inputs: ReleaseInputs) -> dict[str, str]:
    """``__key__`` -> shard relpath, from the key column only."""
    out: dict[str, str] = {}
    for s in inputs.shards:
        for k in pq.read_table(inputs.folder / s["path"], columns=[KEY_COLUMN]).column(KEY_COLUMN).to_pylist():
            out[str(k)] = s["path"]
    return out


def _read_images(inputs: ReleaseInputs, where: dict[str, str], keys: list[str]) -> dict[str, np.ndarray]:
    by_shard: dict[str, list[str]] = {}
    for k in keys:
        by_shard.setdefault(where[k], []).append(k)
    out: dict[str, np.ndarray] = {}
    for rel, ks in sorted(by_shard.items()):
        table = pq.read_table(inputs.folder / rel, columns=[KEY_COLUMN, IMAGE_COLUMN],
                              filters=[(KEY_COLUMN, "in", ks)])
        for k, img in zip(table.column(KEY_COLUMN).to_pylist(), table.column(IMAGE_COLUMN).to_pylist(),
                          strict=True):
            out[str(k)] = np.asarray(decode(img["bytes"]))
    return out


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG of a uint8 HxWx3 array with Pillow: no timestamp and no text chunks, so the same pixels give the same
    bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def render_montage(inputs: ReleaseInputs) -> tuple[bytes, list[MontageTile]] | None:
    """The montage PNG (tiles left to right, :data:`MONTAGE_GAP` white pixels apart) and its tiles; None without
    a channel of :data:`RGB_MAP` or without a well whose images are all present."""
    where = _shard_keys(inputs)
    tiles = montage_tiles(inputs, set(where))
    if not tiles:
        return None
    images = _read_images(inputs, where, [k for t in tiles for k in t.keys.values()])
    rgbs = [downscale(composite_rgb({c: images[k] for c, k in t.keys.items()})) for t in tiles]
    h = max(r.shape[0] for r in rgbs)
    w = sum(r.shape[1] for r in rgbs) + MONTAGE_GAP * (len(rgbs) - 1)
    canvas = np.full((h, w, 3), 255, dtype=np.uint8)
    x = 0
    for r in rgbs:
        canvas[:r.shape[0], x:x + r.shape[1]] = r
        x += r.shape[1] + MONTAGE_GAP
    return png_bytes(canvas), tiles


def _montage_section(inputs: ReleaseInputs, tiles: list[MontageTile] | None) -> str | None:
    if not tiles:
        return None
    channels = sorted(tiles[0].keys)
    site = int(sorted(inputs.manifest.transform.sites)[0])
    rel = card_asset(CARD_MONTAGE)
    return "\n".join([
        "## Sample images", "",
        f"![Site {site} of {len(tiles)} wells, channels {', '.join(map(str, channels))} composited to RGB]({rel})", "",
        f"Left to right, site {site} of one well per kind (the first by `well_id` whose images are all in the "
        "shards), decoded from the shards and block-averaged to at most "
        f"{MONTAGE_TILE} px a side:", "",
        _table(["tile", "kind", "well", "perturbation"],
               [[i + 1, t.kind, f"`{t.well_id}`", t.perturbation] for i, t in enumerate(tiles)]), "",
        "Channels composited to RGB as recursionpharma's rxrx1-utils do (`rxrx.io.convert_tensor_to_rgb`): each 8-bit "
        "channel is divided by its top value (clipped to 1) and multiplied by its colour; the colours are summed and "
        "clipped to 255 (stains as in the RxRx1 Cell Painting protocol):", "",
        _table(["channel", "stain: colour", "RGB", "top"],
               [[c, RGB_MAP[c][2], "(" + ", ".join(map(str, RGB_MAP[c][0])) + ")", RGB_MAP[c][1]]
                for c in channels]), ""])


# --------------------------------------------------------------------------------------------------- plots
def _benchmarks_of_kind(inputs: ReleaseInputs, kind: str) -> list[BenchmarkEntry]:
    return [b for b in inputs.benchmarks if b.definition and b.definition.get("kind") == kind and b.results]


def compound_gene_series(inputs: ReleaseInputs) -> list[tuple[str, list[float], list[float], list[float]]]:
    """``(label, concentrations, mean AP, random-baseline AP)`` per compound-gene-activity result set, concentrations
    ascending (from each result's ``summary``: ``<conc>/average_precision/mean``)."""
    bench = _benchmarks_of_kind(inputs, "compound-gene-activity")
    out = []
    for b in bench:
        for rel, doc in sorted(b.results.items()):
            summary = (doc.get("summary") if isinstance(doc, dict) else None) or {}
            concs: dict[float, str] = {}
            for k in summary:
                head, _, rest = k.partition("/")
                if rest == "average_precision/mean":
                    try:
                        concs[float(head)] = head
                    except ValueError:
                        continue
            xs = sorted(concs)
            if not xs:
                continue
            label = result_set_name(rel) + (f" ({b.id})" if len(bench) > 1 else "")
            out.append((label, xs, [float(summary[f"{concs[x]}/average_precision/mean"]) for x in xs],
                        [float(summary.get(f"{concs[x]}/baseline_average_precision/mean", math.nan)) for x in xs]))
    return out


def recall_series(inputs: ReleaseInputs) -> tuple[list[str], str, list[tuple[str, list[float]]]]:
    """``(sources, metric, [(label, recall per source)])`` of the gene-gene-recall results (``<source>/recall_*``
    in each ``summary``); a source a set lacks is NaN."""
    bench = _benchmarks_of_kind(inputs, "gene-gene-recall")
    rows: list[tuple[str, dict[str, float]]] = []
    metrics: set[str] = set()
    for b in bench:
        for rel, doc in sorted(b.results.items()):
            summary = (doc.get("summary") if isinstance(doc, dict) else None) or {}
            vals = {}
            for k, v in summary.items():
                src, _, metric = k.rpartition("/")
                if src and metric.startswith("recall_") and isinstance(v, int | float):
                    vals[src] = float(v)
                    metrics.add(metric)
            if vals:
                rows.append((result_set_name(rel) + (f" ({b.id})" if len(bench) > 1 else ""), vals))
    sources = sorted({s for _, v in rows for s in v})
    return sources, ", ".join(sorted(metrics)), [(label, [v.get(s, math.nan) for s in sources]) for label, v in rows]


def render_plot(draw: Callable[[Any], None], figsize: tuple[float, float]) -> bytes:
    """A PNG drawn by ``draw(ax)`` with matplotlib's Agg and its default style (no matplotlibrc), without the
    ``Software`` entry: the same inputs and matplotlib give the same bytes."""
    import matplotlib.style  # heavy: only when plotting
    from matplotlib.figure import Figure  # heavy: only when plotting

    with matplotlib.style.context("default"):
        fig = Figure(figsize=figsize, dpi=100)
        ax = fig.subplots()
        draw(ax)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def compound_gene_plot(series: list[tuple[str, list[float], list[float], list[float]]]) -> bytes:
    def draw(ax: Any) -> None:
        for i, (label, xs, ap, base) in enumerate(series):
            colour = f"C{i % 10}"
            ax.plot(xs, ap, marker="o", color=colour, label=label)
            if not all(math.isnan(b) for b in base):
                ax.plot(xs, base, linestyle="--", color=colour, alpha=0.6, label=f"{label}: random baseline")
        xs = sorted({x for s in series for x in s[1]})
        ax.set_xscale("log")
        ax.set_xticks(xs, [fmt_num(x) for x in xs])
        ax.minorticks_off()
        ax.set_xlabel("concentration (uM)")
        ax.set_ylabel("average precision (mean over compounds)")
        ax.set_title("Compound-gene activity by concentration", fontsize=10)
        ax.legend(fontsize=8)

    return render_plot(draw, (6.0, 3.6))


def recall_plot(sources: list[str], metric: str, series: list[tuple[str, list[float]]]) -> bytes:
    def draw(ax: Any) -> None:
        x = np.arange(len(sources), dtype=float)
        width = min(0.35, 0.8 / max(1, len(series)))
        for i, (label, vals) in enumerate(series):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width=width, label=label, color=f"C{i % 10}")
        ax.set_xticks(x, sources)
        ax.set_xlim(-0.6, len(sources) - 0.4)
        ax.set_ylim(0, 1)
        ax.set_xlabel("relationship source")
        ax.set_ylabel(f"recall ({metric})")
        ax.set_title("Gene-gene recall per relationship source", fontsize=10)
        ax.legend(fontsize=8)

    return render_plot(draw, (max(5.0, 1.5 + 0.9 * len(sources) * max(1, len(series)) ** 0.5), 3.6))


@dataclass
class CardAssets:
    """The card's images (relpath -> PNG bytes) and what the body says about them."""

    files: dict[str, bytes] = field(default_factory=dict)
    tiles: list[MontageTile] | None = None


def render_assets(inputs: ReleaseInputs) -> CardAssets:
    """Montage and benchmark plots of a release (each only when its inputs exist)."""
    out = CardAssets()
    montage = render_montage(inputs)
    if montage is not None:
        out.files[card_asset(CARD_MONTAGE)], out.tiles = montage
    cga = compound_gene_series(inputs)
    if cga:
        out.files[card_asset(CARD_COMPOUND_GENE_PLOT)] = compound_gene_plot(cga)
    sources, metric, recall = recall_series(inputs)
    if recall:
        out.files[card_asset(CARD_RECALL_PLOT)] = recall_plot(sources, metric, recall)
    return out


def _plots_section(assets: CardAssets) -> str | None:
    parts = []
    cga, ggr = card_asset(CARD_COMPOUND_GENE_PLOT), card_asset(CARD_RECALL_PLOT)
    if cga in assets.files:
        parts += [f"![Compound-gene activity: mean average precision by concentration, random baseline dashed]({cga})",
                  ""]
    if ggr in assets.files:
        parts += [f"![Gene-gene recall per relationship source]({ggr})", ""]
    return "### Plots\n\n" + "\n".join(parts) if parts else None


def default_citation(inputs: ReleaseInputs) -> str:
    m = inputs.manifest
    key = re.sub(r"[^A-Za-z0-9]", "", m.name) or "release"
    return (f"```bibtex\n@misc{{{key}_{m.version.replace('.', '_')},\n  title = {{{m.card.get('pretty_name') or m.name}"
            f", version {m.version}}},\n  howpublished = {{\\url{{https://huggingface.co/datasets/{inputs.repo_id}}}}},"
            f"\n  note = {{Curated with rxcurate; cite the source screen as well}}\n}}\n```")


def card_body(inputs: ReleaseInputs, changelog: str, assets: CardAssets | None = None) -> str:
    """The card's body; ``assets`` (:func:`render_assets`) adds the montage and the plots."""
    assets = assets or CardAssets()
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
        _source(inputs),
        _montage_section(inputs, assets.tiles),
        _contents(inputs),
        _files(inputs),
        _selection(inputs),
        _curation(inputs),
        _compression(inputs),
        _embeddings(inputs),
        _probe(inputs),
        _benchmarks(inputs),
        _plots_section(assets),
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
    assets: dict[str, bytes] = field(default_factory=dict)  # card image relpath -> PNG bytes (written by assemble)


def build_card(inputs: ReleaseInputs, changelog: str) -> CardBuild:
    """The card text, its hashes and its images; the text round-trips through huggingface_hub and our schema.
    Nothing is written: :mod:`rxcurate.assemble` writes the text and the images, validate compares them."""
    meta = card_metadata(inputs)
    problem = schema_problem(meta, "card", f"{CARD} front matter")
    if problem:
        raise CardError(problem)
    assets = render_assets(inputs)
    body = card_body(inputs, changelog, assets)
    text = f"---\n{card_yaml(meta)}\n---\n\n{body}"
    parsed, _ = split_card(text)
    if parsed != json.loads(json.dumps(meta)):
        raise CardError("README.md: the front matter does not round-trip through huggingface_hub's DatasetCard "
                        "(a value YAML cannot represent?); check the manifest's card fields")
    return CardBuild(text, meta, card_data_hash(text), card_prose_hash(text), dict(assets.files))


# --------------------------------------------------------------------------------------------------- curation
def _fmt(v: Any) -> str:
    return "-" if v is None else fmt_num(v)


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
        lines.append(f"| {f['stat']} | `{f['embeddings']}` | {fmt_num(f['p_below'])} | {', '.join(f['apply_to'])} | "
                     f"{str(f['keep_controls']).lower()} | {f['seed']} |")
    ph = rep["phenostats"]
    lines += ["", f"Statistic table: [`{PHENOSTATS}`]({PHENOSTATS}) ({ph['rows']:,} rows, sha256 "
              f"`{ph['sha256'][:16]}`); report: [`{CURATION}`]({CURATION}). Wells kept: {rep['wells']['kept']:,} of "
              f"{rep['wells']['candidates']:,}.", "",
              "| type | perturbations kept | dropped | wells kept | dropped |", "|---|---|---|---|---|"]
    for t, v in rep["by_perturbation_type"].items():
        lines.append(f"| {t} | {fmt_num(v['perturbations']['kept'])} | {fmt_num(v['perturbations']['dropped'])} | "
                     f"{fmt_num(v['wells']['kept'])} | {fmt_num(v['wells']['dropped'])} |")
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
