"""Fuzzing manifests: every malformed manifest ends in `error: ...` with exit 2, no traceback and no files written.

Mutations of tests/data/manifests/tiny-rxrx3.yaml (deleted/renamed keys, wrong types, huge/negative/non-finite
numbers, random strings, broken YAML, SQL that fails or selects nothing, path escapes) are run through the real CLI
entry point (`rxcurate.cli.main`, in-process for speed; two cases also as a subprocess). A mutation that is still a
valid manifest must succeed with a complete lockfile; anything else must fail cleanly before writing anything.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxcurate.cli import main

TINY = Path(__file__).resolve().parent / "data" / "manifests" / "tiny-rxrx3.yaml"
BASE: dict[str, Any] = yaml.safe_load(TINY.read_text())
FUZZ = settings(max_examples=15, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path into the document (the root excluded)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append((*prefix, k))
        out.extend(_paths(v, (*prefix, k)))
    return out


PATHS = _paths(BASE)
REQUIRED = [("name",), ("version",), ("layout",), ("select",), ("select", "sql"), ("select", "sample", 0, "n"),
            ("select", "sample", 0, "where"), ("select", "sample", 0, "name"), ("transform", "convert", "method")]


def _parent(doc: Any, path: tuple) -> Any:
    for k in path[:-1]:
        doc = doc[k]
    return doc


def with_field(path: tuple, value: Any) -> dict:
    """A copy of the base manifest with the field at ``path`` set to ``value`` (``KeyError``: deleted)."""
    doc = copy.deepcopy(BASE)
    parent = _parent(doc, path)
    if value is KeyError:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def run_cli(args: list[str]) -> tuple[int | str, str, str]:
    """(exit code, stdout, stderr) of `rxcurate ARGS` in-process; an escaping exception is a test failure."""
    out, err = io.StringIO(), io.StringIO()
    code: int | str = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # noqa: BLE001 - the point: nothing else may escape
            import traceback

            pytest.fail(f"rxcurate {' '.join(args)} raised {exc!r} (a traceback for the user):\n"
                        f"{traceback.format_exc()}")
    return code, out.getvalue(), err.getvalue()


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def assert_clean_error(code: int | str, out: str, err: str) -> None:
    assert code == 2, (code, out, err)
    assert err.startswith("error: "), err
    assert "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1, err  # one line


def select_case(text: str | bytes, source: Path, cmd: str = "select") -> tuple[int | str, str, str, set[str]]:
    """Write the manifest into a fresh folder, run `rxcurate CMD` there; return the result and the new files."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        case = Path(tmp)
        manifest = case / "m.yaml"
        manifest.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        extra = {"release": ["--source", str(source), "--hub", str(case / "hub")], "embed": []}.get(
            cmd, ["--source", str(source)])
        cwd = os.getcwd()
        os.chdir(case)  # defaults (build/<name>, ./hub, build/sources) would land here
        try:
            code, out, err = run_cli([cmd, str(manifest), "--workdir", str(case / "w"), *extra])
        finally:
            os.chdir(cwd)
        return code, out, err, files_under(case) - {"m.yaml"}


def check_outcome(code: int | str, out: str, err: str, new: set[str]) -> str:
    """A valid manifest -> exit 0 and exactly the lockfile; anything else -> a clean error and no files."""
    if code == 0:
        assert new == {"w", "w/lockfile.parquet", "w/.source.json"}, new  # .source.json: local, never published
        assert "Traceback" not in out + err
        return "ok"
    assert_clean_error(code, out, err)
    assert not new, f"partial output after an error: {sorted(new)}"
    return "error"


# ---- strategies ------------------------------------------------------------------------------------------------
numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, -1, 10**30, -(10**30)]),
                    st.floats(allow_nan=True, allow_infinity=True))
junk = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=30), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
                 st.sampled_from(["../../../etc/passwd", "/etc/passwd", "..", "C:\\x", "\x00", "' OR 1=1 --",
                                  "rxrx9", "nope", "timm:nope", "SELECT 1", ""]))
bad_sql = st.one_of(
    st.text(max_size=40),
    st.sampled_from([
        "SELECT well_id FROM wells WHERE 1 = 0",
        "SELECT well_id FROM wells WHERE plate = 999",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT well_id FROM read_parquet('../../x.parquet')",
        "ATTACH 'x.db' AS x",
        "COPY (SELECT 1) TO 'leak.csv'",
        "CREATE TABLE t AS SELECT 1",
        "SELECT well_id FROM wells; DROP TABLE wells",
        "INSTALL httpfs",
        "SET threads = 1",
        "SELECT well_id FROM nonexistent_table",
        "SELECT 1 AS x",
        "SELECT NULL AS well_id",
        "SELECT 'A01' AS well_id",
        "SELECT well_id FROM wells WHERE plate = 'one'",
        "SELECT well_id / 0 FROM wells",
        "PRAGMA version",
    ]),
)


@st.composite
def mutated(draw) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _parent(doc, path), path[-1]
        op = draw(st.sampled_from(["delete", "rename", "replace", "replace", "add"]))
        if op == "delete":
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            new = draw(st.one_of(st.text(min_size=1, max_size=12), st.just(f"{key}s"), st.just(str(key).upper())))
            if new not in parent:
                parent[new] = parent.pop(key)
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(junk)
        else:
            parent[key] = draw(junk)
    return doc


# ---- tests -----------------------------------------------------------------------------------------------------
@FUZZ
@given(doc=mutated())
def test_mutated_manifest_is_valid_or_a_clean_error(doc, tiny_rxrx3, monkeypatch):
    monkeypatch.setenv("RXCURATE_PROGRESS", "0")
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    check_outcome(*select_case(text, tiny_rxrx3))


@FUZZ
@given(path=st.sampled_from(REQUIRED),
       value=st.one_of(st.just(KeyError), st.none(), st.lists(st.integers(), max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
                       # not integral floats: JSON Schema counts 1.0 as an integer, a valid n
                       st.sampled_from([float("nan"), float("inf"), float("-inf"), 0.5, -2.5])))
def test_missing_or_wrongly_typed_required_field_fails_cleanly(path, value, tiny_rxrx3, monkeypatch):
    monkeypatch.setenv("RXCURATE_PROGRESS", "0")
    code, out, err, new = select_case(yaml.safe_dump(with_field(path, value), sort_keys=False), tiny_rxrx3)
    assert_clean_error(code, out, err)
    assert not new


@FUZZ
@given(sql=bad_sql)
def test_bad_or_empty_selection_sql_fails_cleanly(sql, tiny_rxrx3, monkeypatch):
    monkeypatch.setenv("RXCURATE_PROGRESS", "0")
    doc = copy.deepcopy(BASE)
    doc["select"] = {"sql": sql or " "}  # no samplers: the SQL alone decides, and none of these selects real wells
    code, out, err, new = select_case(yaml.safe_dump(doc, sort_keys=False), tiny_rxrx3)
    assert_clean_error(code, out, err)
    assert not new
    assert not Path("leak.csv").exists()


@FUZZ
@given(text=st.one_of(
    st.binary(max_size=60),
    st.text(max_size=60).map(lambda t: "name: tiny\n" + t + ": [\n"),
    st.sampled_from(["name: [", "\tname: x", "a: b\na: c\n", "!!python/object/apply:os.system ['true']\n",
                     "name: &a [*a]\n", "{{{{", "- - -", "...", ":", "name: tiny\nversion: 1.0\n"]),
))
def test_broken_yaml_fails_cleanly(text, tiny_rxrx3, monkeypatch):
    monkeypatch.setenv("RXCURATE_PROGRESS", "0")
    code, out, err, new = select_case(text, tiny_rxrx3)
    assert_clean_error(code, out, err)
    assert not new


def _mut(**changes: Any) -> str:
    doc = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        path = tuple(int(p) if p.isdigit() else p for p in dotted.split("__"))
        parent = _parent(doc, path)
        if value is KeyError:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return yaml.safe_dump(doc, sort_keys=False)


CORPUS: dict[str, str | bytes] = {
    "empty file": "",
    "not a mapping": "- a\n- b\n",
    "binary": b"\x89PNG\r\n\x1a\n\x00\x00",
    "latin-1 bytes": "name: caf\xe9\n".encode("latin-1"),
    "duplicate key": TINY.read_text() + "name: other\n",
    "python tag": "!!python/object/apply:os.system ['touch pwned']\n",
    "missing select": _mut(select=KeyError),
    "unknown top-level key": _mut(selct={"sql": "SELECT 1"}),
    "version not semver": _mut(version="one"),
    "version as number": _mut(version=1.0),
    "name with slash": _mut(name="../../evil"),
    "layout unknown": _mut(layout="rxrx9"),
    "layout of another screen": _mut(layout="rxrx1"),
    "sample n zero": _mut(select__sample__0__n=0),
    "sample n negative": _mut(select__sample__0__n=-5),
    "sample seed negative": _mut(select__sample__0__seed=-1),
    "sample per unknown column": _mut(select__sample__0__per=["no_such_column"]),
    "sample where broken": _mut(select__sample__0__where="treatment = ("),
    "sample name twice": _mut(select__sample__1__name="empty-controls"),
    "sql empty result": _mut(select={"sql": "SELECT well_id FROM wells WHERE plate = 999"}),
    "sql reads a file": _mut(select__sql="SELECT * FROM read_csv('/etc/passwd')"),
    "sql two statements": _mut(select__sql="SELECT well_id FROM wells; SELECT 1"),
    "sql copy": _mut(select__sql="COPY (SELECT well_id FROM wells) TO 'leak.csv'"),
    "sql attach": _mut(select__sql="ATTACH 'x.db'"),
    "sql syntax": _mut(select__sql="SELEC well_id"),
    "rate nan": _mut(transform__codec__rate=float("nan")),
    "rate inf": _mut(transform__codec__rate=float("inf")),
    "rate negative": _mut(transform__codec__rate=-3),
    "window low nan": _mut(transform__convert__low=float("nan")),
    "window low >= high": _mut(transform__convert__low=30000),
    "crop huge": _mut(transform__crop__size=10**12),
    "crop zero": _mut(transform__crop__size=0),
    "crop string": _mut(transform__crop__size="big"),
    "sites of another layout": _mut(transform__sites=[2]),
    "codec unknown": _mut(transform__codec__name="webp"),
    "shard bytes negative": _mut(output__shard_bytes=-1),
    "shard bytes string": _mut(output__shard_bytes="80 KB"),
    "table path escapes": _mut(tables={"genes": {"path": "../../../etc/genes.csv"}}),
    "table path absolute": _mut(tables={"genes": {"path": "/etc/genes.csv"}}),
    "table missing": _mut(tables={"genes": {"path": "genes.csv"}}),
    "table name reserved": _mut(tables={"wells": {"path": "genes.csv"}}),
    "metadata file escapes": _mut(source={"metadata": "../metadata.csv"}),
    "card repo_id escapes": _mut(card={"repo_id": "../../x"}),
    "encoder entry without encoder": _mut(embeddings=[{"weights": "w.safetensors"}]),
    "benchmark id with a path": _mut(benchmarks=["../../etc/passwd"]),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_known_bad_manifest_corpus(name, tiny_rxrx3, monkeypatch):
    monkeypatch.setenv("RXCURATE_PROGRESS", "0")
    code, out, err, new = select_case(CORPUS[name], tiny_rxrx3)
    assert_clean_error(code, out, err)
    assert not new, f"{name}: partial output {sorted(new)}"
    assert not Path("pwned").exists()


@pytest.mark.parametrize("cmd", ["compress", "embed", "release"])
@pytest.mark.parametrize("name", ["empty file", "missing select", "rate nan", "name with slash", "python tag"])
def test_later_stages_reject_bad_manifests_before_any_work(cmd, name, tiny_rxrx3, monkeypatch):
    monkeypatch.setenv("RXCURATE_PROGRESS", "0")
    code, out, err, new = select_case(CORPUS[name], tiny_rxrx3, cmd=cmd)
    assert_clean_error(code, out, err)
    assert not new, f"{cmd} {name}: partial output {sorted(new)}"


def test_valid_base_manifest_passes_the_same_harness(tiny_rxrx3, monkeypatch):
    """The harness itself: the unmutated manifest succeeds and writes exactly the lockfile."""
    monkeypatch.setenv("RXCURATE_PROGRESS", "0")
    assert check_outcome(*select_case(TINY.read_text(), tiny_rxrx3)) == "ok"


@pytest.mark.parametrize("name", ["rate nan", "sql reads a file"])
def test_real_process_exit_code_and_stderr(name, tiny_rxrx3, tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(CORPUS[name])
    env = {**os.environ, "RXCURATE_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-m", "rxcurate.cli", "select", str(manifest), "--source",
                           str(tiny_rxrx3), "--workdir", str(tmp_path / "w")], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr + proc.stdout
    assert files_under(tmp_path) == {"m.yaml"}
