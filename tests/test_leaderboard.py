"""`rxcurate leaderboard`: the release's published results plus accepted submissions, ranked per benchmark by the
headline metric (descending, equal values share a rank, ties ordered by submission time)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from release_fixture import REPO_ID, build_release
from typer.testing import CliRunner

from rxcurate.cli import app, main
from rxcurate.consume.leaderboard import LeaderboardRow, leaderboard, rank_rows
from rxcurate.consume.submit import submit
from rxcurate.publish import publish

runner = CliRunner()
TARGET = f"local://{REPO_ID}@0.1.0"
BENCH = "compound-gene-activity"


@pytest.fixture(scope="session")
def built(tiny_rxrx3, tmp_path_factory):
    return build_release(tiny_rxrx3, tmp_path_factory.mktemp("tiny-release"))


@pytest.fixture(scope="module")
def board(built, tmp_path_factory) -> tuple[Path, Path, dict[str, float]]:
    """A hub with three submissions to compound-gene-activity: the release's own embeddings, a noisy copy and
    random vectors; plus the same own embeddings with shuffled rows submitted earlier (a tie)."""
    base = tmp_path_factory.mktemp("board")
    hub, cache = base / "hub", base / "cache"
    publish(built[1], "local", hub=hub)
    own = built[1] / "embeddings" / "baseline" / "embeddings.parquet"
    df = pd.read_parquet(own)
    feats = [c for c in df.columns if c.startswith("feature_")]
    rng = np.random.default_rng(0)
    noisy, rand = df.copy(), df.copy()
    scale = float(df[feats].to_numpy().std())
    noisy[feats] = (df[feats].to_numpy() + rng.normal(0, 2 * scale, (len(df), len(feats)))).astype(np.float32)
    rand[feats] = rng.normal(0, 1, (len(df), len(feats))).astype(np.float32)
    noisy.to_parquet(base / "noisy.parquet", index=False)
    rand.to_parquet(base / "random.parquet", index=False)
    df.sample(frac=1.0, random_state=1).to_parquet(base / "shuffled.parquet", index=False)
    values = {}
    subs = [("own", own), ("noisy", base / "noisy.parquet"), ("random", base / "random.parquet"),
            ("own-shuffled", base / "shuffled.parquet")]
    for i, (name, path) in enumerate(subs):
        when = datetime(2026, 1, 10 - i, tzinfo=UTC)  # later submissions get earlier times: ties order by time
        res = submit(TARGET, BENCH, path, name=name, hub=hub, cache=cache, now=when)
        values[name] = res.record["rank_metric"]["value"]
    return hub, cache, values


def test_rows_are_ranked_by_the_headline_metric(board):
    hub, cache, values = board
    label, rows = leaderboard(TARGET, BENCH, hub=hub, cache=cache)
    assert label == TARGET and {r.benchmark for r in rows} == {BENCH}
    assert {r.metric for r in rows} == {"max/average_precision/mean"}
    got = [r.value for r in rows]
    assert got == sorted(got, reverse=True)
    assert sorted(r.name for r in rows) == sorted([*values, "baseline (published)"])
    for r in rows:
        if r.source == "submission":
            assert r.value == values[r.name]
    for prev, cur in zip(rows, rows[1:], strict=False):
        assert cur.rank == (prev.rank if cur.value == prev.value else rows.index(cur) + 1)
    # the published baseline and both submissions of the same vectors tie: one rank, release first, then by time
    tied = [r.name for r in rows if r.value == values["own"]]
    assert tied == ["baseline (published)", "own-shuffled", "own"]
    assert len({r.rank for r in rows if r.value == values["own"]}) == 1


def test_rank_rows_orders_missing_values_last_and_is_stable():
    rows = [LeaderboardRow("b", 0, n, "m", v, n, "submission", t) for n, v, t in
            [("a", 0.5, "2"), ("b", None, "1"), ("c", 0.9, "3"), ("d", 0.5, "1")]]
    ranked = rank_rows(rows)
    assert [r.name for r in ranked] == ["c", "d", "a", "b"] and [r.rank for r in ranked] == [1, 2, 2, 4]


def test_cli_table_json_and_filters(board, capsys):
    hub, cache, values = board
    r = runner.invoke(app, ["leaderboard", TARGET, "--hub", str(hub), "--cache", str(cache)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    start = lines.index(next(x for x in lines if x.startswith(BENCH)))
    body = lines[start + 2: start + 7]
    _, rows = leaderboard(TARGET, BENCH, hub=hub, cache=cache)
    assert [x.split()[1] for x in body] == [row.name.split()[0] for row in rows]
    assert any(x.startswith("gene-gene-recall") for x in lines)  # the other benchmarks' published results
    r = runner.invoke(app, ["leaderboard", TARGET, "-b", BENCH, "--json", "--no-release", "--hub", str(hub),
                            "--cache", str(cache)])
    doc = json.loads(r.stdout)
    assert doc["ok"] and [x["name"] for x in doc["rows"]] == [row.name for row in rows if row.source == "submission"]
    r = runner.invoke(app, ["leaderboard", TARGET, "-b", "nope", "--json", "--hub", str(hub), "--cache", str(cache)])
    assert r.exit_code == 2 and json.loads(r.stdout)["ok"] is False
    with pytest.raises(SystemExit) as exc:
        main(["leaderboard", TARGET, "-b", "nope", "--hub", str(hub), "--cache", str(cache)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "compound-gene-activity" in err and len(err.strip().splitlines()) == 1


def test_leaderboard_of_an_untouched_release_shows_published_results(board, tmp_path):
    hub, cache, _ = board
    fresh = shutil.copytree(hub, tmp_path / "hub")
    shutil.rmtree(fresh / "datasets" / REPO_ID / "refs" / "heads" / "leaderboard", ignore_errors=True)
    (fresh / "datasets" / REPO_ID / "refs" / "heads" / "leaderboard").unlink(missing_ok=True)
    _, rows = leaderboard(TARGET, hub=fresh, cache=cache)
    assert {r.source for r in rows} == {"release"} and len(rows) == 3


def test_leaderboard_help():
    r = runner.invoke(app, ["leaderboard", "--help"])
    assert r.exit_code == 0 and "--benchmark" in r.output and "ranked" in r.output
