"""Fuzzing `rxcurate submit --json` with random mutations of a valid submission (drop/duplicate/shuffle rows, NaN/inf,
wrong dtypes, extra columns, wrong well ids, a dropped feature, truncated bytes): a submission equal to the valid
one up to row order is accepted with the same score; anything else exits 2 with one JSON error object. Never a
traceback, never a leaderboard entry for a rejected submission."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from release_fixture import REPO_ID, build_release
from typer.testing import CliRunner

from rxcurate.cli import app
from rxcurate.consume.submit import LEADERBOARD_BRANCH
from rxcurate.publish import publish

runner = CliRunner()
TARGET = f"local://{REPO_ID}@0.1.0"
BENCH = "gene-gene-recall"


@pytest.fixture(scope="session")
def built(tiny_rxrx3, tmp_path_factory):
    return build_release(tiny_rxrx3, tmp_path_factory.mktemp("tiny-release"))


@pytest.fixture(scope="module")
def env(built, tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    hub, cache = base / "hub", base / "cache"
    publish(built[1], "local", hub=hub)
    own = built[1] / "embeddings" / "baseline" / "embeddings.parquet"
    r = runner.invoke(app, ["submit", TARGET, "-b", BENCH, "--embeddings", str(own), "--hub", str(hub),
                            "--cache", str(cache), "--json"])
    assert r.exit_code == 0, r.output
    return {"hub": hub, "cache": cache, "base": pd.read_parquet(own), "work": base,
            "metrics": json.loads(r.stdout)["record"]["results"]["metrics"]}


def _entries(hub: Path) -> int:
    repo = hub / "datasets" / REPO_ID
    proc = subprocess.run(["git", f"--git-dir={repo}", "ls-tree", "-r", "--name-only",
                           f"refs/heads/{LEADERBOARD_BRANCH}"], capture_output=True, text=True, check=True)
    return len(proc.stdout.split())


mutation = st.one_of(
    st.tuples(st.just("shuffle"), st.integers(0, 2**16)),
    st.tuples(st.just("drop"), st.integers(1, 5)),
    st.tuples(st.just("dup"), st.integers(1, 5)),
    st.tuples(st.just("nan"), st.sampled_from([np.nan, np.inf, -np.inf]), st.integers(0, 10_000)),
    st.tuples(st.just("dtype"), st.sampled_from(["int64", "str", "bool"])),
    st.tuples(st.just("well_dtype"), st.just(None)),
    st.tuples(st.just("extra"), st.sampled_from(["plate", "feature_x", "__key__"])),
    st.tuples(st.just("wrong_well"), st.integers(0, 10_000)),
    st.tuples(st.just("drop_feature"), st.integers(0, 10_000)),
)


def _apply(df: pd.DataFrame, m: tuple) -> pd.DataFrame:
    kind, arg = m[0], m[1]
    feats = [c for c in df.columns if str(c).startswith("feature_")]
    if kind == "shuffle":
        return df.sample(frac=1.0, random_state=arg).reset_index(drop=True)
    if kind == "drop":
        return df.iloc[arg:].reset_index(drop=True)
    if kind == "dup":
        return pd.concat([df, df.iloc[:arg]], ignore_index=True)
    if kind == "nan":
        df = df.copy()
        col = feats[m[2] % len(feats)]
        if not pd.api.types.is_float_dtype(df[col]):
            df[col] = df[col].astype(object)
        df.loc[m[2] % len(df), col] = arg
        return df
    if kind == "dtype":
        df = df.copy()
        col = df[feats[0]]
        df[feats[0]] = col.astype(arg) if arg != "int64" else \
            (pd.to_numeric(col, errors="coerce").fillna(0) * 100).round().astype("int64")
        return df
    if kind == "well_dtype":
        return df.assign(well_id=np.arange(len(df)))
    if kind == "extra":
        return df.assign(**{arg: 1.0})
    if kind == "wrong_well":
        df = df.assign(well_id=df["well_id"].astype(object))
        df.loc[arg % len(df), "well_id"] = "not-a-well_1_A01"
        return df
    if kind == "drop_feature":
        return df.drop(columns=[feats[arg % (len(feats) - 1)]])  # never the last one: that is a valid d-1 layout
    raise AssertionError(kind)


def _equal_up_to_order(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    if list(a.columns) != list(b.columns) or len(a) != len(b) or any(a.dtypes != b.dtypes):
        return False
    sa = a.sort_values("well_id", kind="stable").reset_index(drop=True)
    sb = b.sort_values("well_id", kind="stable").reset_index(drop=True)
    return sa.equals(sb)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(mutations=st.lists(mutation, min_size=1, max_size=3), truncate=st.one_of(st.none(), st.integers(1, 4096)))
@example(mutations=[("shuffle", 7)], truncate=None)  # accepted, same score
@example(mutations=[("dup", 2), ("drop", 2), ("shuffle", 1)], truncate=None)  # the same rows again: accepted
@example(mutations=[("shuffle", 7)], truncate=1)
def test_mutated_submissions_are_scored_identically_or_rejected_cleanly(env, mutations, truncate):
    df = env["base"]
    for m in mutations:
        df = _apply(df, m)
    for c in df.columns:  # mixed-type object columns cannot be written as Parquet: write them as strings
        if df[c].dtype == object and df[c].map(type).nunique() > 1:
            df[c] = df[c].astype(str)
    path = env["work"] / "mutated.parquet"
    df.to_parquet(path, index=False)
    if truncate is not None:
        data = path.read_bytes()
        path.write_bytes(data[: max(0, len(data) - truncate)])
    before = _entries(env["hub"])
    r = runner.invoke(app, ["submit", TARGET, "-b", BENCH, "--embeddings", str(path), "--hub", str(env["hub"]),
                            "--cache", str(env["cache"]), "--json"])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout
    doc = json.loads(lines[0])
    if truncate is None and _equal_up_to_order(df, env["base"]):
        assert r.exit_code == 0 and doc["ok"], doc
        assert doc["record"]["results"]["metrics"] == env["metrics"]
        assert _entries(env["hub"]) - before == (1 if doc["status"] == "recorded" else 0)
    else:
        assert r.exit_code == 2 and doc["ok"] is False and doc["errors"], (mutations, doc)
        assert all(isinstance(e, str) and "\n" not in e for e in doc["errors"])
        assert _entries(env["hub"]) == before
