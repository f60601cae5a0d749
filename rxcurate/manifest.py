"""Release manifests: load a YAML file, validate it against ``schemas/manifest.schema.json``, return a typed model.

The model applies every default, so two manifests that differ only by spelled-out defaults hash the same.
Hashes (all ``rxcurate.io.canonical_hash`` of normalised sections):

- ``selection_hash``: layout, source metadata file, declared tables, ``select`` and the image subset
  (``transform.sites``/``channels``): what ``rxcurate select`` depends on (besides the source's bytes).
- ``transform_hash``: the whole ``transform`` section (crop, 8-bit conversion, codec, sites, channels, ...).
- ``manifest_hash``: selection + transform, recorded in the lockfile.

The data version of a release is ``canonical_hash({"lockfile": <lockfile content hash>, "transform": ...})``
(see :func:`data_version`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rxcurate.errors import ManifestError
from rxcurate.io import canonical_hash
from rxcurate.layout import embedding_set_name
from rxcurate.schemas import schema_problem
from rxcurate.source import CHANNELS, SOURCE_METADATA, get_layout, short

DEFAULT_SHARD_BYTES = 500_000_000
DEFAULT_ROW_GROUP_BYTES = 64_000_000
DEFAULT_RATE = 20.0  # 512 x 512 x 8 bit / 20 = 13,107 bytes = 12.8 KiB per image, as RxRx3-core
DEFAULT_QSTEP = 0.01
DEFAULT_PERCENTILES = (0.1, 99.9)
RESERVED_TABLES = ("wells", "metadata")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicated mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicated key {key!r} (each key may appear once)", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# Hostile YAML: an alias bomb (1.5 KB expanding to GBs), deep nesting, tags JSON cannot hold and complex keys are
# refused on the node graph, before anything is constructed.
MAX_YAML_NODES = 100_000  # after alias expansion: a manifest has hundreds
MAX_YAML_DEPTH = 64


class _ManifestLoader(_UniqueKeyLoader):
    """Unique keys, plain strings for dates/times (``version: 2001-12-14`` stays text: JSON has no dates)."""


_ManifestLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _check_graph(root: yaml.Node, where: str) -> None:
    """Refuse alias bombs, deep nesting, non-scalar keys and tags JSON cannot hold, before constructing anything."""
    sizes: dict[int, int] = {}
    allowed = {"tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
               "tag:yaml.org,2002:null", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    active: set[int] = set()
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            if isinstance(node, yaml.MappingNode):
                kids = [n for pair in node.value for n in pair]
            elif isinstance(node, yaml.SequenceNode):
                kids = list(node.value)
            else:
                kids = []
            sizes[key] = 1 + sum(sizes[id(k)] for k in kids)
            if sizes[key] > MAX_YAML_NODES:
                raise ManifestError(f"{where}: the document expands to more than {MAX_YAML_NODES:,} values (YAML "
                                    "anchors and aliases repeat content): write the manifest without aliases")
            continue
        if key in sizes:
            continue
        if key in active:
            raise ManifestError(f"{where}: a YAML alias refers to its own parent (recursive document): remove "
                                "the alias")
        if depth > MAX_YAML_DEPTH:
            raise ManifestError(f"{where}: nested deeper than {MAX_YAML_DEPTH} levels: a manifest is a few levels deep")
        if node.tag not in allowed:
            raise ManifestError(f"{where}, line {node.start_mark.line + 1}: YAML tag {node.tag!r} is not allowed in a "
                        "manifest: use plain strings, numbers, booleans, lists and mappings")
        active.add(key)
        stack.append((node, depth, True))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if not isinstance(k, yaml.ScalarNode):
                    raise ManifestError(f"{where}, line {k.start_mark.line + 1}: a mapping key must be a plain "
                                        "string, not a list or mapping")
                stack.append((k, depth + 1, False))
                stack.append((v, depth + 1, False))
        elif isinstance(node, yaml.SequenceNode):
            for v in node.value:
                stack.append((v, depth + 1, False))


def load_yaml(text: str, where: str) -> Any:
    """Parse one YAML document safely (see :func:`_check_graph`); raise :class:`ManifestError` naming ``where``."""
    try:
        loader = _ManifestLoader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                return None
            _check_graph(root, where)
            return loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ManifestError(f"{where}: invalid YAML{at}: {problem}") from None
    except RecursionError:
        raise ManifestError(f"{where}: nested deeper than {MAX_YAML_DEPTH} levels: a manifest is a few levels "
                            "deep") from None


@dataclass(frozen=True)
class Crop:
    height: int
    width: int
    origin: tuple[int, int] | None  # None: centred

    def to_dict(self) -> dict[str, Any]:
        return {"size": [self.height, self.width], "origin": "center" if self.origin is None else list(self.origin)}


@dataclass(frozen=True)
class Convert:
    """16/8-bit -> 8-bit conversion; ``low``/``high`` hold one value per channel 1..6 for ``window``."""

    method: str  # percentile | window | shift | none
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    shift: int = 0

    def to_dict(self) -> dict[str, Any]:
        if self.method == "percentile":
            return {"method": "percentile", "low": self.low[0], "high": self.high[0]}
        if self.method == "window":
            return {"method": "window", "low": list(self.low), "high": list(self.high)}
        if self.method == "shift":
            return {"method": "shift", "shift": self.shift}
        return {"method": "none"}


@dataclass(frozen=True)
class Codec:
    name: str  # jpeg2000 | htj2k
    mode: str  # rate | psnr | qstep | lossless
    value: float | None  # the rate, psnr or qstep; None when lossless
    resolutions: int = 6

    @property
    def extension(self) -> str:
        return "jp2" if self.name == "jpeg2000" else "j2k"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "mode": self.mode, "value": self.value}
        if self.name == "jpeg2000":
            d["resolutions"] = self.resolutions
        return d

    def nominal_bytes(self, height: int, width: int) -> int | None:
        """Bytes per image implied by the settings (fixed rate only), else None."""
        if self.mode == "rate" and self.value:
            return int(math.ceil(height * width / self.value))
        return None


@dataclass(frozen=True)
class Transform:
    crop: Crop | None
    convert: Convert
    codec: Codec
    sites: tuple[int, ...]
    channels: tuple[int, ...]
    on_error: str
    report_sample_images: int
    report_seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "crop": None if self.crop is None else self.crop.to_dict(),
            "convert": self.convert.to_dict(),
            "codec": self.codec.to_dict(),
            "sites": list(self.sites),
            "channels": list(self.channels),
            "on_error": self.on_error,
            "report": {"sample_images": self.report_sample_images, "seed": self.report_seed},
        }


@dataclass(frozen=True)
class Sampler:
    name: str
    where: str
    per: tuple[str, ...]
    n: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "where": self.where, "per": list(self.per), "n": self.n, "seed": self.seed}


@dataclass(frozen=True)
class FilterSpec:
    """One ``select.filters`` entry (see :mod:`rxcurate.phenostats`)."""

    stat: str  # replicate_consistency
    embeddings: str  # an embedding set: <encoder> or <encoder>/<block folder>
    p_below: float
    apply_to: tuple[str, ...]  # perturbation types filtered
    keep_controls: bool
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"stat": self.stat, "embeddings": self.embeddings, "p_below": self.p_below,
                "apply_to": list(self.apply_to), "keep_controls": self.keep_controls, "seed": self.seed}


@dataclass(frozen=True)
class TableSpec:
    name: str
    path: str
    base: str  # manifest | source

    @property
    def format(self) -> str:
        return "parquet" if self.path.endswith(".parquet") else "csv"


@dataclass(frozen=True)
class Manifest:
    path: Path
    name: str
    version: str
    layout: str
    description: str
    license: str | None
    source_root: str | None
    source_metadata: str
    tables: tuple[TableSpec, ...]
    sql: str
    samples: tuple[Sampler, ...]
    transform: Transform
    shard_bytes: int
    row_group_bytes: int
    workdir: str | None
    embeddings: tuple[dict[str, Any], ...] = ()
    benchmarks: tuple[str, ...] = ()
    card: dict[str, Any] = field(default_factory=dict)
    filters: tuple[FilterSpec, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    # ---- hashes -------------------------------------------------------------------------------------------
    def selection_section(self) -> dict[str, Any]:
        select: dict[str, Any] = {"sql": self.sql, "sample": [s.to_dict() for s in self.samples]}
        if self.filters:  # absent when unused: manifests without filters keep their hashes
            select["filters"] = [f.to_dict() for f in self.filters]
            select["filter_embeddings"] = [_filter_entry(self, f) for f in self.filters]
        return {
            "layout": self.layout,
            "source_metadata": self.source_metadata,
            "tables": {t.name: {"path": t.path, "base": t.base} for t in self.tables},
            "select": select,
            "images": {"sites": list(self.transform.sites), "channels": list(self.transform.channels)},
        }

    def transform_section(self) -> dict[str, Any]:
        return self.transform.to_dict()

    def selection_hash(self) -> str:
        return canonical_hash(self.selection_section())

    def transform_hash(self) -> str:
        return canonical_hash(self.transform_section())

    def manifest_hash(self) -> str:
        return canonical_hash({"selection": self.selection_section(), "transform": self.transform_section()})

    # ---- paths --------------------------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        return self.path.resolve().parent

    def resolve_source(self, source: str | os.PathLike[str] | None = None) -> Path:
        """The source root: ``source`` (``--source``) if given, else ``source.root`` relative to the manifest."""
        if source is not None:
            return Path(source)
        if self.source_root is None:
            raise ManifestError(
                f"{self.path}: no source screen: pass --source DIR or set source.root in the manifest "
                f"(e.g. source: {{root: ../build/release/source}})"
            )
        root = Path(self.source_root)
        return root if root.is_absolute() else self.folder / root

    def resolve_workdir(self, workdir: str | os.PathLike[str] | None = None) -> Path:
        """``--workdir`` if given, else ``output.workdir``, else ``build/<name>`` (relative to the cwd)."""
        default = Path(self.workdir) if self.workdir else Path("build") / self.name
        path = Path(workdir) if workdir is not None else default
        flag = "--workdir" if workdir is not None else "output.workdir"
        if "\x00" in str(path):
            raise ManifestError(f"{flag} {short(str(path))} contains a NUL byte: give a folder path")
        if path.exists() and not path.is_dir():
            raise ManifestError(f"{flag} {path} is a file, not a folder: give a release folder (e.g. "
                                f"build/{self.name})")
        return path

    def resolve_table(self, table: TableSpec, source_root: Path) -> Path:
        """Absolute path of a declared table; it must stay inside its base folder (no ``..`` or links out)."""
        if "\x00" in table.path:
            raise ManifestError(f"{self.path}: tables.{table.name}.path {short(table.path)} contains a NUL byte: give "
                                "a file path (e.g. tables/genes.csv)")
        base = (self.folder if table.base == "manifest" else Path(source_root)).resolve()
        path = (base / table.path).resolve()
        if not path.is_relative_to(base):
            raise ManifestError(
                f"{self.path}: tables.{table.name}.path {table.path!r} leaves its base folder {base}: use a path "
                f"inside it (e.g. tables/{Path(table.path).name}) and set base: manifest or base: source"
            )
        if not path.is_file():
            raise ManifestError(
                f"{self.path}: tables.{table.name}.path: {path} not found (relative to the "
                f"{'manifest folder' if table.base == 'manifest' else 'source root'}; base: {table.base})"
            )
        return path


def filter_embedding_entry(embeddings: tuple[dict[str, Any], ...], name: str
                           ) -> tuple[dict[str, Any], str | None] | None:
    """The entry of a manifest's ``embeddings`` list a filter's ``embeddings`` name refers to, and the block folder
    (None: the encoder's default output); None when no entry matches."""
    for entry in embeddings:
        enc = str(entry["encoder"])
        if name in (enc, embedding_set_name(enc)):
            return entry, None
        for prefix in (enc + "/", embedding_set_name(enc) + "/"):
            if name.startswith(prefix) and len(name) > len(prefix) and "/" not in name[len(prefix):]:
                return entry, name[len(prefix):]
    return None


def _check_embeddings(entries: tuple[dict[str, Any], ...], path: Path) -> tuple[dict[str, Any], ...]:
    """Checks the schema cannot express: block/probe pairing, downsample dividing the tile."""
    for i, e in enumerate(entries):
        where = f"{path}: embeddings[{i}] ({e['encoder']})"
        if e.get("block") == "best" and "probe" not in e:
            raise ManifestError(f"{where}: block: best needs a probe section to choose it, e.g. probe: {{tasks: "
                                "[gene-module], seeds: 5}} (or name the block: block: 8)")
        if ("block" in e or "probe" in e) and i != 0:
            raise ManifestError(f"{where}: block/probe apply to the release's default embedding set, the first "
                                "entry of embeddings: move this entry first")
        if ("block" in e or "probe" in e) and str(e["encoder"]) == "baseline":
            raise ManifestError(f"{where}: the baseline encoder has no transformer blocks: drop block/probe, or use "
                                "openphenom or timm:<vit>")
        if isinstance(e.get("block"), int) and e.get("blocks") and e["block"] not in e["blocks"]:
            raise ManifestError(f"{where}: block {e['block']} is not among blocks {e['blocks']}: add it")
        tile = int(e.get("tile_size", 256))
        if tile % int(e.get("downsample", 1)):
            raise ManifestError(f"{where}: downsample {e['downsample']} must divide tile_size {tile} (e.g. "
                                "tile_size: 256, downsample: 4)")
    return entries


def embed_job(manifest: Manifest, entry: dict[str, Any], tile: int = 256) -> dict[str, Any]:
    """``rxcurate.embed.run_embed`` keywords of one ``embeddings`` entry (weights relative to the manifest's folder;
    an entry with ``block`` or ``probe`` embeds ``blocks``, else every block, in the same pass)."""
    weights = entry.get("weights")
    if weights is not None and not Path(weights).is_absolute():
        weights = manifest.folder / weights
    blocks = entry.get("blocks")
    job: dict[str, Any] = {
        "encoder_spec": entry["encoder"], "weights": weights,
        "blocks": ",".join(str(b) for b in blocks) if blocks else "all" if ("block" in entry or "probe" in entry)
        else None,
        "tile": int(entry.get("tile_size", tile)), "keep_tiles": bool(entry.get("keep_tiles", False)),
    }
    if entry.get("downsample", 1) != 1:
        job["downsample"] = int(entry["downsample"])
    if entry.get("allow_random_weights"):
        job["allow_random"] = True
    return job


def _filter_entry(manifest: Manifest, f: FilterSpec) -> dict[str, Any]:
    found = filter_embedding_entry(manifest.embeddings, f.embeddings)
    return {} if found is None else {k: found[0][k] for k in sorted(found[0])}


def _parse_filters(raw_filters: list[dict[str, Any]], layout: str, embeddings: tuple[dict[str, Any], ...],
                   path: Path) -> tuple[FilterSpec, ...]:
    if not raw_filters:
        return ()
    if layout != "rxrx3":
        raise ManifestError(f"{path}: select.filters needs layout rxrx3 (its statistic uses negative controls and "
                            f"the CRISPR/COMPOUND perturbation types); remove select.filters for layout {layout}")
    names = [str(e["encoder"]) for e in embeddings]
    out = []
    for i, f in enumerate(raw_filters):
        spec = FilterSpec(stat=f["stat"], embeddings=f["embeddings"], p_below=float(f["p_below"]),
                          apply_to=tuple(sorted(f.get("apply_to", ["CRISPR", "COMPOUND"]))),
                          keep_controls=bool(f.get("keep_controls", True)), seed=int(f.get("seed", 0)))
        if filter_embedding_entry(embeddings, spec.embeddings) is None:
            known = ", ".join(names) if names else "none: add embeddings: [{encoder: baseline}]"
            raise ManifestError(f"{path}: select.filters[{i}].embeddings: {spec.embeddings!r} is not an entry of the "
                                f"manifest's embeddings list (declared: {known}); use one of them, e.g. "
                                f"embeddings: {names[0] if names else 'baseline'}")
        out.append(spec)
    return tuple(out)


def data_version(lockfile_hash: str, transform: dict[str, Any]) -> str:
    """The identity of a data version: canonical hash of the lockfile's content hash and the transform section."""
    return canonical_hash({"lockfile": lockfile_hash, "transform": transform})


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read, validate and normalise a manifest; raise :class:`ManifestError` naming the field and a valid example."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} not found: pass a YAML file such as manifests/rxrx3-core.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {path} is unreadable ({exc}): it must be a UTF-8 YAML file") from None
    raw = load_yaml(text, str(path))
    return parse_manifest(raw, path)


def _reject_non_finite(value: Any, where: str, path: Path, seen: tuple[int, ...] = ()) -> None:
    """YAML's .nan/.inf pass numeric schema bounds and self-referencing aliases (``&a [*a]``) never end: reject both."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ManifestError(f"{path}: {where or '<top level>'}: {value} is not a finite number; give a plain number "
                            f"(YAML .nan and .inf are not allowed)")
    if not isinstance(value, dict | list):
        return
    if id(value) in seen:
        raise ManifestError(f"{path}: {where or '<top level>'}: a YAML alias refers to itself; write the value out")
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for k, v in items:
        sub = f"{where}[{k}]" if isinstance(k, int) else f"{where}.{k}" if where else str(k)
        _reject_non_finite(v, sub, path, (*seen, id(value)))


def _check_card_licence(raw: dict[str, Any], path: Path) -> None:
    """card.license_name / card.license_link name a licence the Hub does not list: the card's licence must be
    ``other`` (the Hub's card metadata spec)."""
    card = raw.get("card") or {}
    licence = card.get("license") or raw.get("license") or "other"
    named = [k for k in ("license_name", "license_link") if card.get(k)]
    if named and licence != "other":
        raise ManifestError(f"{path}: card.{named[0]} is for a licence the Hub does not list, which needs "
                            f"card.license: other (the card's licence is {licence!r}); set card.license: other or "
                            f"remove card.{named[0]}")


def parse_manifest(raw: Any, path: str | os.PathLike[str] = "<manifest>") -> Manifest:
    """Validate an already-parsed manifest document and build the typed model."""
    path = Path(path)
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: a manifest is a YAML mapping with name, version, layout, select, ... "
                            f"(see manifests/rxrx3-core.yaml)")
    _reject_non_finite(raw, "", path)
    problem = schema_problem(raw, "manifest", str(path))
    if problem:
        raise ManifestError(problem)
    _check_card_licence(raw, path)
    layout = get_layout(raw["layout"])
    src = raw.get("source", {}) or {}
    tables = []
    for name in sorted(raw.get("tables", {}) or {}):
        if name in RESERVED_TABLES:
            raise ManifestError(f"{path}: tables.{name}: the names {list(RESERVED_TABLES)} are reserved for the "
                                f"source views; rename it (e.g. {name}_extra)")
        spec = raw["tables"][name]
        tables.append(TableSpec(name=name, path=spec["path"], base=spec.get("base", "manifest")))
    sel = raw["select"]
    samples = []
    seen_names: set[str] = set()
    for i, s in enumerate(sel.get("sample", []) or []):
        if s["name"] in seen_names:
            raise ManifestError(f"{path}: select.sample[{i}].name: {s['name']!r} is used twice; names are unique")
        seen_names.add(s["name"])
        samples.append(Sampler(name=s["name"], where=s["where"], per=tuple(s.get("per", [])), n=int(s["n"]),
                               seed=int(s.get("seed", 0))))
    transform = _parse_transform(raw.get("transform", {}) or {}, layout.sites, path)
    out = raw.get("output", {}) or {}
    return Manifest(
        path=path,
        name=raw["name"],
        version=raw["version"],
        layout=layout.name,
        description=raw.get("description", ""),
        license=raw.get("license"),
        source_root=src.get("root"),
        source_metadata=src.get("metadata", SOURCE_METADATA),
        tables=tuple(tables),
        sql=sel["sql"],
        samples=tuple(samples),
        transform=transform,
        shard_bytes=int(out.get("shard_bytes", DEFAULT_SHARD_BYTES)),
        row_group_bytes=int(out.get("row_group_bytes", DEFAULT_ROW_GROUP_BYTES)),
        workdir=out.get("workdir"),
        embeddings=_check_embeddings(tuple(raw.get("embeddings", []) or []), path),
        benchmarks=tuple(raw.get("benchmarks", []) or []),
        card=dict(raw.get("card", {}) or {}),
        filters=_parse_filters(sel.get("filters", []) or [], layout.name, tuple(raw.get("embeddings", []) or []),
                               path),
        raw=raw,
    )


def _parse_transform(t: dict[str, Any], layout_sites: tuple[int, ...], path: Path) -> Transform:
    crop_raw = t.get("crop", {"size": 512, "origin": "center"})
    crop: Crop | None = None
    if crop_raw is not None:
        size = crop_raw.get("size", 512)
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        origin = crop_raw.get("origin", "center")
        crop = Crop(h, w, None if origin == "center" else (int(origin[0]), int(origin[1])))

    conv = t.get("convert", {"method": "percentile"})
    method = conv["method"]
    allowed = {"percentile": {"low", "high"}, "window": {"low", "high"}, "shift": {"shift"}, "none": set()}[method]
    extra = sorted(set(conv) - allowed - {"method"})
    if extra:
        raise ManifestError(f"{path}: transform.convert.{extra[0]} does not apply to method {method!r} (it takes "
                            f"{sorted(allowed) or 'no parameters'}; e.g. {{method: window, low: 0, high: 24000}})")
    if method == "percentile":
        lo, hi = conv.get("low", DEFAULT_PERCENTILES[0]), conv.get("high", DEFAULT_PERCENTILES[1])
        if isinstance(lo, list) or isinstance(hi, list):
            raise ManifestError(f"{path}: transform.convert: percentile low/high are single numbers "
                                f"(e.g. low: 0.1, high: 99.9)")
        if not (0 <= lo < hi <= 100):
            raise ManifestError(f"{path}: transform.convert: percentiles need 0 <= low < high <= 100, got low={lo}, "
                                f"high={hi} (e.g. low: 0.1, high: 99.9)")
        convert = Convert("percentile", (float(lo),), (float(hi),))
    elif method == "window":
        if "low" not in conv or "high" not in conv:
            raise ManifestError(f"{path}: transform.convert: window needs low and high intensities "
                                f"(e.g. {{method: window, low: 0, high: 24000}})")
        lows = _per_channel(conv["low"], "low", path)
        highs = _per_channel(conv["high"], "high", path)
        for c, (lo, hi) in enumerate(zip(lows, highs, strict=True), start=1):
            if not lo < hi:
                raise ManifestError(f"{path}: transform.convert: window channel {c} needs low < high, got "
                                    f"low={lo}, high={hi} (e.g. low: 0, high: 24000)")
        convert = Convert("window", lows, highs)
    elif method == "shift":
        convert = Convert("shift", shift=int(conv.get("shift", 8)))
    else:
        convert = Convert("none")

    c = t.get("codec", {"name": "jpeg2000"})
    name = c.get("name", "jpeg2000")
    modes = [k for k in ("rate", "psnr", "qstep") if k in c] + (["lossless"] if c.get("lossless") else [])
    if len(modes) > 1:
        raise ManifestError(f"{path}: transform.codec: choose one of rate, psnr, qstep or lossless: true, got "
                            f"{modes} (e.g. {{name: jpeg2000, rate: 20}})")
    if name == "jpeg2000" and "qstep" in c:
        raise ManifestError(f"{path}: transform.codec.qstep applies to htj2k only; jpeg2000 takes rate or psnr "
                            f"(e.g. rate: 20)")
    if name == "htj2k" and ("rate" in c or "psnr" in c or "resolutions" in c):
        bad = next(k for k in ("rate", "psnr", "resolutions") if k in c)
        raise ManifestError(f"{path}: transform.codec.{bad} applies to jpeg2000 only; htj2k takes qstep or "
                            f"lossless (e.g. {{name: htj2k, qstep: 0.01}})")
    if modes == ["lossless"]:
        mode, value = "lossless", None
    elif modes:
        mode, value = modes[0], float(c[modes[0]])
    else:
        mode, value = ("rate", DEFAULT_RATE) if name == "jpeg2000" else ("qstep", DEFAULT_QSTEP)
    codec = Codec(name, mode, value, int(c.get("resolutions", 6)))

    sites = tuple(t.get("sites", list(layout_sites)))
    bad_sites = [s for s in sites if s not in layout_sites]
    if bad_sites:
        raise ManifestError(f"{path}: transform.sites: {bad_sites} not in this layout's sites {list(layout_sites)} "
                            f"(e.g. sites: {list(layout_sites)})")
    channels = tuple(t.get("channels", list(CHANNELS)))
    rep = t.get("report", {}) or {}
    return Transform(
        crop=crop,
        convert=convert,
        codec=codec,
        sites=tuple(sorted(sites)),
        channels=tuple(sorted(channels)),
        on_error=t.get("on_error", "error"),
        report_sample_images=int(rep.get("sample_images", 64)),
        report_seed=int(rep.get("seed", 0)),
    )


def _per_channel(value: Any, key: str, path: Path) -> tuple[float, ...]:
    if isinstance(value, list):
        if len(value) != len(CHANNELS):
            raise ManifestError(f"{path}: transform.convert.{key}: give one number or {len(CHANNELS)} numbers (one "
                                f"per channel 1..{len(CHANNELS)}), got {len(value)} (e.g. {key}: 0)")
        return tuple(float(v) for v in value)
    return tuple(float(value) for _ in CHANNELS)
