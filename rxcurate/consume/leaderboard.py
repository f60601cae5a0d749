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
from typing import Any

from rxcurate.errors import PullError
from rxcurate.release import headline


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

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "rank": self.rank, "name": self.name, "metric": self.metric,
                "value": self.value, "submission_id": self.submission_id, "source": self.source,
                "submitted_at": self.submitted_at, "headline": self.headline}


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


def _release_rows(folder, release: dict[str, Any], benchmark: str | None) -> list[LeaderboardRow]:
    """The release's own published results (one per embedding set) as leaderboard rows."""
    from rxcurate.consume.submit import rank_metric

    rows = []
    for b in release.get("benchmarks", []) or []:
        if benchmark is not None and b.get("id") != benchmark:
            continue
        try:
            defn = json.loads((folder / b["definition"]).read_text()) if b.get("definition") else {}
        except (OSError, ValueError):
            defn = {}
        for rrel in sorted(b.get("results") or []):
            try:
                doc = json.loads((folder / rrel).read_text())
            except (OSError, ValueError):
                continue
            metric, value = rank_metric(doc, defn)
            emb_set = "/".join(rrel.split("/")[2:-1]) or "-"
            rows.append(LeaderboardRow(b["id"], 0, f"{emb_set} (published)", metric, _value(value), rrel, "release",
                                       "", headline(doc.get("summary") or {}, defn)))
    return rows


def _entry_row(doc: Any, path: str) -> LeaderboardRow | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmark"), dict):
        return None
    rm = doc.get("rank_metric") or {}
    return LeaderboardRow(str(doc["benchmark"].get("id")), 0, str(doc.get("name", "?")), rm.get("name"),
                          _value(rm.get("value")), str(doc.get("submission_id", path)), "submission",
                          str(doc.get("submitted_at", "")), dict(doc.get("headline") or {}))


def leaderboard(target: str, benchmark: str | None = None, *, hub: str | os.PathLike[str] | None = None,
                cache: str | os.PathLike[str] | None = None, endpoint: str | None = None,
                include_release: bool = True) -> tuple[str, list[LeaderboardRow]]:
    """``(concrete target label, ranked rows)`` of ``TARGET[@VERSION]`` (``latest`` by default)."""
    from rxcurate.consume.pull import open_source, pull
    from rxcurate.consume.submit import LEADERBOARD_BRANCH, LEADERBOARD_DIR

    source = open_source(target, hub=hub, endpoint=endpoint)
    label = f"{source.label}@{source.version}"
    res = pull(label, ["benchmarks"], hub=hub, cache=cache, endpoint=endpoint)
    ids = sorted(b.get("id") for b in res.release.get("benchmarks", []) or [])
    if benchmark is not None and benchmark not in ids:
        raise PullError(f"--benchmark {benchmark!r}: {label} publishes no such benchmark; use one of "
                        f"{', '.join(ids) or 'none'}")
    rows = _release_rows(res.folder, res.release, benchmark) if include_release else []
    prefix = f"{LEADERBOARD_DIR}/{source.version}/" + (f"{benchmark}/" if benchmark else "")
    hub_obj = getattr(source, "hub", None)
    if hub_obj is not None:
        for path in hub_obj.list_branch_files(source.repo_id, LEADERBOARD_BRANCH, prefix):
            if path.endswith(".json"):
                try:
                    row = _entry_row(json.loads(hub_obj.read_branch_file(source.repo_id, LEADERBOARD_BRANCH, path)
                                                or b"null"), path)
                except ValueError:
                    row = None
                if row is not None:
                    rows.append(row)
    else:
        rows += _hf_entries(source, prefix)
    return label, rank_rows(rows)


def _hf_entries(source, prefix: str) -> list[LeaderboardRow]:
    from huggingface_hub import hf_hub_download

    from rxcurate.publish.hf import _errors, _http_message

    http_error, _, _ = _errors()
    try:
        paths = [p for p in source.api.list_repo_files(source.repo_id, repo_type="dataset", revision="main")
                 if p.startswith(prefix) and p.endswith(".json")]
        rows = []
        for p in sorted(paths):
            local = hf_hub_download(source.repo_id, p, repo_type="dataset", revision="main", token=source.api.token,
                                    endpoint=source.api.endpoint)
            try:
                row = _entry_row(json.loads(open(local, encoding="utf-8").read()), p)
            except ValueError:
                row = None
            if row is not None:
                rows.append(row)
        return rows
    except http_error as exc:
        raise PullError(f"{source.label}: cannot read the leaderboard ({_http_message(exc)})") from None


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
                         f"{r.submitted_at or '(release)'}")
    return "\n".join(lines)
