"""The leaderboard of a published version: the release's own published results plus every accepted submission
(``leaderboard/<version>/<benchmark>/<id>.json``: the local hub's ``leaderboard`` branch, or ``main`` of an
``hf://`` repository once its pull request is merged), ranked per benchmark.

Ranking: by the benchmark's headline metric (the first summary entry its definition's ``metrics`` name; all
published benchmarks are higher-is-better), descending; ties by submission time, then id (stable).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rxcurate.consume.pull import open_source, pull
from rxcurate.consume.submit import rank_metric
from rxcurate.errors import PullError
from rxcurate.layout import Release, result_set_name
from rxcurate.publish.targets import LEADERBOARD_DIR, relabel
from rxcurate.release_inputs import headline


@dataclass
class LeaderboardRow:
    benchmark: str
    rank: int
    name: str
    metric: str | None
    value: float | None
    submission_id: str
    source: str  # "release" (the release's published results) or "submission"
    submitted_at: str = ""
    headline: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # why an entry is not ranked (its recorded numbers disagree with its own results)

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "rank": self.rank, "name": self.name, "metric": self.metric,
                "value": self.value, "submission_id": self.submission_id, "source": self.source,
                "submitted_at": self.submitted_at, "headline": self.headline, **({"note": self.note} if self.note
                                                                                 else {})}


def _value(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def rank_rows(rows: list[LeaderboardRow]) -> list[LeaderboardRow]:
    """Sort per benchmark (value descending, missing values last; ties by time, then id) and number the ranks;
    equal values share a rank."""
    out: list[LeaderboardRow] = []
    for bid in sorted({r.benchmark for r in rows}):
        group = sorted((r for r in rows if r.benchmark == bid),
                       key=lambda r: (r.value is None, -(r.value or 0.0), r.submitted_at, r.submission_id))
        prev: tuple[float | None, int] | None = None
        for i, r in enumerate(group, start=1):
            r.rank = prev[1] if prev is not None and prev[0] == r.value and r.value is not None else i
            prev = (r.value, r.rank)
            out.append(r)
    return out


def _release_rows(folder: Path, release: Release, benchmark: str | None,
                  definitions: dict[str, dict[str, Any]]) -> list[LeaderboardRow]:
    """The release's own published results (one per embedding set) as leaderboard rows."""
    rows = []
    for b in release.benchmarks:
        if benchmark is not None and b.get("id") != benchmark:
            continue
        defn = definitions.get(str(b.get("id"))) or {}
        for rrel in sorted(b.get("results") or []):
            try:
                doc = json.loads((folder / rrel).read_text())
            except (OSError, ValueError):
                continue
            metric, value = rank_metric(doc, defn)
            emb_set = result_set_name(rrel)
            rows.append(LeaderboardRow(b["id"], 0, f"{emb_set} (published)", metric, _value(value), rrel, "release",
                                       "", headline(doc.get("summary") or {}, defn)))
    return rows


def entry_problem(doc: dict[str, Any], path: str, definitions: dict[str, dict[str, Any]]) -> str:
    """Why a recorded entry's ranked numbers cannot be trusted ("" when they agree): its benchmark must be the one of
    its path and published in the release, and its ``rank_metric`` and ``headline`` must be what its own results'
    ``summary`` gives under the release's definition (re-scoring the submission is not attempted here)."""
    bid = str(doc["benchmark"].get("id"))
    parts = path.split("/")
    if len(parts) < 4 or parts[-2] != bid:
        return f"recorded under {'/'.join(parts[:-1])}/ but for benchmark {bid}"
    defn = definitions.get(bid)
    results = doc.get("results")
    if defn is None or not isinstance(results, dict) or not isinstance(results.get("summary"), dict):
        return "no results summary for a benchmark the release publishes"
    rm = doc.get("rank_metric") or {}
    metric, value = rank_metric(results, defn)
    if rm.get("name") != metric or _value(rm.get("value")) != _value(value):
        return f"rank_metric {rm.get('name')} = {rm.get('value')} but its results' summary gives {metric} = {value}"
    if dict(doc.get("headline") or {}) != headline(results["summary"], defn):
        return "headline differs from its results' summary"
    return ""


def _entry_row(doc: Any, path: str, definitions: dict[str, dict[str, Any]]) -> LeaderboardRow | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmark"), dict):
        return None
    rm = doc.get("rank_metric") or {}
    note = entry_problem(doc, path, definitions)
    return LeaderboardRow(str(doc["benchmark"].get("id")), 0, str(doc.get("name", "?")), rm.get("name"),
                          None if note else _value(rm.get("value")), str(doc.get("submission_id", path)),
                          "submission", str(doc.get("submitted_at", "")), dict(doc.get("headline") or {}),
                          f"not ranked: {note}" if note else "")


def _definitions(folder: Path, release: Release) -> dict[str, dict[str, Any]]:
    out = {}
    for b in release.benchmarks:
        try:
            out[str(b.get("id"))] = json.loads((folder / b["definition"]).read_text())
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def leaderboard(target: str, benchmark: str | None = None, *, hub: str | os.PathLike[str] | None = None,
                cache: str | os.PathLike[str] | None = None, endpoint: str | None = None,
                include_release: bool = True) -> tuple[str, list[LeaderboardRow]]:
    """``(concrete target label, ranked rows)`` of ``TARGET[@VERSION]`` (``latest`` by default)."""
    source = open_source(target, hub=hub, endpoint=endpoint)
    label = str(source)
    res = pull(label, ["benchmarks"], hub=hub, cache=cache, endpoint=endpoint)
    ids = sorted(str(b.get("id")) for b in res.release.benchmarks)
    if benchmark is not None and benchmark not in ids:
        raise PullError(f"--benchmark {benchmark!r}: {label} publishes no such benchmark; use one of "
                        f"{', '.join(ids) or 'none'}")
    definitions = _definitions(res.folder, res.release)
    rows = _release_rows(res.folder, res.release, benchmark, definitions) if include_release else []
    prefix = f"{LEADERBOARD_DIR}/{source.version}/" + (f"{benchmark}/" if benchmark else "")
    with relabel(PullError):
        entries = source.hub.read_leaderboard(source.repo_id, prefix)
    for path, data in sorted(entries.items()):
        if not path.endswith(".json"):
            continue
        try:
            row = _entry_row(json.loads(data), path, definitions)
        except ValueError:
            row = None
        if row is not None:
            rows.append(row)
    return label, rank_rows(rows)


def format_table(label: str, rows: list[LeaderboardRow]) -> str:
    """A plain-text ranked table per benchmark."""
    if not rows:
        return f"{label}: no benchmark results yet"
    lines = [f"Leaderboard of {label}"]
    for bid in sorted({r.benchmark for r in rows}):
        group = [r for r in rows if r.benchmark == bid]
        metric = next((r.metric for r in group if r.metric), "?")
        lines += ["", f"{bid} (ranked by {metric}, higher is better)"]
        width = max(len(r.name) for r in group)
        lines.append(f"{'rank':>4}  {'name':<{width}}  {'value':>10}  {'id':<24}  submitted")
        for r in group:
            value = "n/a" if r.value is None else f"{r.value:.4f}"
            lines.append(f"{r.rank:>4}  {r.name:<{width}}  {value:>10}  {r.submission_id[:24]:<24}  "
                         f"{r.submitted_at or '(release)'}" + (f"  ({r.note})" if r.note else ""))
    return "\n".join(lines)
