"""A leaderboard entry whose recorded rank_metric (or headline) disagrees with its own results' summary is shown
unranked with the reason, never at the value it claims (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

from release_fixture import REPO_ID
from typer.testing import CliRunner

from rxcurate.cli import app
from rxcurate.consume.leaderboard import leaderboard
from rxcurate.consume.submit import LEADERBOARD_BRANCH, submit
from rxcurate.publish import publish
from rxcurate.publish.local import LocalHub

TARGET = f"local://{REPO_ID}@0.1.0"
BENCH = "compound-gene-activity"


def test_forged_rank_metric_is_not_ranked(built, tmp_path):
    hub, cache = tmp_path / "hub", tmp_path / "cache"
    publish(built[1], "local", hub=hub)
    own = built[1] / "embeddings" / "baseline" / "embeddings.parquet"
    honest = submit(TARGET, BENCH, own, name="honest", hub=hub, cache=cache)
    lh = LocalHub(hub)
    (rel,) = [p for p in lh.list_branch_files(REPO_ID, LEADERBOARD_BRANCH) if p.endswith(".json")]
    doc = json.loads(lh.read_branch_file(REPO_ID, LEADERBOARD_BRANCH, rel))
    forged = dict(doc, name="forged", submission_id="f" * 24)
    forged["rank_metric"] = dict(doc["rank_metric"], value=0.999)
    forged_rel = str(Path(rel).with_name("f" * 24 + ".json"))
    lh.commit_files(REPO_ID, {forged_rel: json.dumps(forged).encode()}, "forge", branch=LEADERBOARD_BRANCH)

    _, rows = leaderboard(TARGET, BENCH, hub=hub, cache=cache)
    by_name = {r.name: r for r in rows}
    assert by_name["honest"].value == honest.record["rank_metric"]["value"] and not by_name["honest"].note
    bad = by_name["forged"]
    assert bad.value is None and bad.rank == len(rows)
    assert "not ranked" in bad.note and "0.999" in bad.note and f"{doc['rank_metric']['value']}" in bad.note
    out = CliRunner().invoke(app, ["leaderboard", TARGET, "-b", BENCH, "--hub", str(hub), "--cache", str(cache)])
    assert out.exit_code == 0 and "not ranked: rank_metric" in out.output
    js = CliRunner().invoke(app, ["leaderboard", TARGET, "-b", BENCH, "--hub", str(hub), "--cache", str(cache),
                                  "--json"])
    (row,) = [r for r in json.loads(js.output)["rows"] if r["name"] == "forged"]
    assert row["value"] is None and row["note"].startswith("not ranked")
