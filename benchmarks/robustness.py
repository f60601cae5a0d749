"""The attack corpus of issue 16 as fixed, seeded corpora, run through the real CLI (in-process, `rxcurate.cli.main`).

    .venv/bin/python benchmarks/robustness.py [--seed 0] [--out benchmarks/results/robustness.json]

Corpora (the same generators feed tests/test_robustness_corpus.py, the maintained test suite):

- manifests:   >= 200 malformed manifests (every key deleted, every value replaced by values of the wrong type,
               truncated and byte-flipped YAML, hostile YAML, the known-bad corpus of tests/test_fuzz_manifest.py)
               through `rxcurate select`; a mutation that is still a valid manifest must write exactly a complete
               lockfile (counted as `accepted`), anything else one `error:` line, exit 2, and no file written.
- submissions: >= 100 malformed submissions (the mutations of tests/test_submit_fuzz.py swept systematically,
               truncated files, files that are not Parquet, wrong columns and types) through `rxcurate submit`:
               exit 2, one `error:` line, no leaderboard entry, no new tag.
- sql:         >= 100 SQL attacks (volatile functions x positions, sampling clauses, forbidden statements, file-
               reading functions, wrong well_id shapes, injection in a sampler's where) through `rxcurate select`:
               exit 2, one `error:` line, no lockfile (and an existing lockfile unchanged).
- flips:       >= 100 single-byte flips at seeded offsets spread over every file of a tiny published version,
               each validated as a release folder (`rxcurate validate FOLDER --no-rerun --json`): exit 1 with a
               report naming the flipped file (flips of release.json itself are counted apart: the report may then
               name release.json or the file whose recorded hash was hit; flips in README.md prose blocks, which a
               maintainer may edit, are counted apart too). `hub_flips`: one flip per file committed to a copy of
               the hub repository as a new tag and validated through local://.

Per corpus: count, clean errors, accepted (valid after mutation), tracebacks, wrong exits, side effects (files or
leaderboard entries left behind), seconds; plus the load average before and after. Exit 1 when any case ends in a
traceback, a wrong exit or a side effect.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
for _p in (str(ROOT), str(TESTS)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from release_fixture import REPO_ID, build_release  # noqa: E402
from test_fuzz_manifest import BASE, CORPUS, PATHS, TINY, with_field  # noqa: E402
from test_hostile_select import NONDETERMINISTIC, YAML_ATTACKS  # noqa: E402
from test_submit_fuzz import _apply  # noqa: E402

from rxcurate import __version__  # noqa: E402
from rxcurate.card import PROSE_END, PROSE_START  # noqa: E402
from rxcurate.cli import main  # noqa: E402
from rxcurate.io import atomic_write_json  # noqa: E402
from rxcurate.layout import CARD, LOCKFILE, RELEASE_JSON, SELECT_STATE, SOURCE_HINT  # noqa: E402

BENCH = "gene-gene-recall"
MIN_COUNTS = {"manifests": 200, "submissions": 100, "sql": 100, "flips": 100}
GIT_ENV = {"GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@x", "GIT_COMMITTER_NAME": "x", "GIT_COMMITTER_EMAIL": "x@x",
           "GIT_CONFIG_NOSYSTEM": "1"}


# ------------------------------------------------------------------------------------------------------ harness
@dataclass
class Result:
    """One CLI run: exit code, stdout, stderr, and the traceback text when an exception escaped `main`."""

    code: int
    out: str
    err: str
    crash: str | None = None


def run_cli(args: list[str]) -> Result:
    """`rxcurate ARGS` in-process. Warnings are shown as a user's `python -m rxcurate.cli` shows them (Python's
    default filters, whatever pytest does with them) and land on stderr: a RuntimeWarning is stderr noise too."""
    out, err = io.StringIO(), io.StringIO()
    code, crash = 0, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", quiet)
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:  # noqa: BLE001 - the point: nothing else may escape to the user
            code, crash = -1, f"{exc!r}\n{traceback.format_exc()}"
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    return Result(code, out.getvalue(), shown + err.getvalue(), crash)


@dataclass
class Outcome:
    """How one case ended: clean (the required error), accepted (still valid input, handled correctly),
    traceback, wrong_exit (exit code or message shape), side_effect (something written or recorded)."""

    kind: str
    detail: str = ""


def clean_error(r: Result) -> Outcome | None:
    """None when ``r`` is exit 2 with exactly one `error:` line on stderr and no traceback, else the problem."""
    if r.crash is not None or "Traceback" in r.out + r.err:
        return Outcome("traceback", (r.crash or r.err)[-3000:])
    lines = r.err.strip().splitlines()
    if r.code != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
        return Outcome("wrong_exit", f"exit {r.code}; stderr {r.err[:600]!r}; stdout {r.out[:300]!r}")
    if len(r.err) > 4000:
        return Outcome("wrong_exit", f"error line of {len(r.err)} characters (unbounded)")
    return None


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@contextlib.contextmanager
def case_folder() -> Iterator[Path]:
    """A fresh temporary folder that is also the working directory (defaults such as build/ would land here)."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="robust-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(cwd)


# ---------------------------------------------------------------------------------------------------- manifests
def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _set(path: tuple, value: Any) -> str:
    return _dump(with_field(path, value))


WRONG_VALUES: list[tuple[str, Any]] = [
    ("null", None), ("list", [1, 2]), ("mapping", {"x": 1}), ("negative", -1), ("nan", float("nan")),
    ("huge", 10**30), ("text", "not-a-valid-value"), ("path-escape", "../../../etc/passwd"),
]


def manifest_cases(seed: int = 0) -> list[tuple[str, str | bytes]]:
    """(name, manifest text or bytes): every key deleted, every value replaced by each wrong value, the YAML
    truncated and byte-flipped at seeded offsets, hostile YAML, and the known-bad corpus."""
    rng = random.Random(seed)
    cases: list[tuple[str, str | bytes]] = []
    for path in PATHS:
        dotted = ".".join(map(str, path))
        cases.append((f"delete {dotted}", _set(path, KeyError)))
        for label, value in WRONG_VALUES:
            cases.append((f"{dotted} = {label}", _set(path, value)))
    text = TINY.read_bytes()
    for i in range(25):
        cut = rng.randrange(1, len(text))
        cases.append((f"truncated at byte {cut} ({i})", text[:cut]))
    for i in range(25):
        at, mask = rng.randrange(len(text)), rng.randrange(1, 256)
        flipped = bytearray(text)
        flipped[at] ^= mask
        cases.append((f"byte {at} ^ {mask:#04x} ({i})", bytes(flipped)))
    cases += [(f"hostile yaml {i}", t) for i, (t, _) in enumerate(YAML_ATTACKS)]
    cases += [(f"known bad: {name}", CORPUS[name]) for name in sorted(CORPUS)]
    return cases


class ManifestRunner:
    """`rxcurate select M --source SRC --workdir w` in a fresh folder: a clean error writing nothing, or (a mutation
    that is still a valid manifest) exit 0 writing exactly the workdir, its lockfile and the source hint."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def __call__(self, payload: str | bytes) -> Outcome:
        with case_folder() as case:
            m = case / "m.yaml"
            m.write_bytes(payload if isinstance(payload, bytes) else payload.encode("utf-8"))
            r = run_cli(["select", str(m), "--source", str(self.source), "--workdir", str(case / "w")])
            new = files_under(case) - {"m.yaml"}
        if r.code == 0 and r.crash is None:
            state = {p for p in new if p == f"w/{SELECT_STATE}" or p.startswith(f"w/{SELECT_STATE}/")}  # its lock
            ok = new - state == {"w", f"w/{LOCKFILE}", f"w/{SOURCE_HINT}"} and "Traceback" not in r.out + r.err
            return Outcome("accepted") if ok else Outcome("side_effect", f"exit 0 but wrote {sorted(new)}")
        bad = clean_error(r)
        if bad is not None:
            return bad
        return Outcome("side_effect", f"partial output {sorted(new)}") if new else Outcome("clean")


# ------------------------------------------------------------------------------------------------------ SQL
VOLATILE = ["random()", "gen_random_uuid()", "uuid()", "now()", "current_timestamp", "current_date",
            "get_current_time()", "today()", "txid_current()", "current_query()"]


def _volatile_positions(fn: str) -> list[tuple[str, str | None, str | None]]:
    """(name, select.sql, sampler where) with ``fn`` in each position of a query."""
    text = f"({fn})::VARCHAR"
    return [
        (f"{fn} in the select list", f"SELECT well_id, {text} AS v FROM wells", None),
        (f"{fn} in where", f"SELECT well_id FROM wells WHERE {text} <> ''", None),
        (f"{fn} in order by", f"SELECT well_id FROM wells ORDER BY {text} LIMIT 10", None),
        (f"{fn} in a subquery", f"SELECT well_id FROM (SELECT well_id, {text} AS v FROM wells) t WHERE v <> ''",
         None),
        (f"{fn} in a sampler where", None, f"{text} <> ''"),
    ]


SAMPLING = [
    "SELECT well_id FROM wells USING SAMPLE 10",
    "SELECT well_id FROM wells USING SAMPLE 10%",
    "SELECT well_id FROM wells USING SAMPLE 10 PERCENT (bernoulli)",
    "SELECT well_id FROM wells USING SAMPLE reservoir(5 ROWS) REPEATABLE (1)",
    "SELECT well_id FROM wells TABLESAMPLE 10%",
    "SELECT well_id FROM wells TABLESAMPLE reservoir(20)",
    "SELECT well_id FROM (SELECT * FROM wells USING SAMPLE 50%) t",
    "WITH s AS (SELECT * FROM wells USING SAMPLE 20) SELECT well_id FROM s",
    "SELECT well_id FROM wells WHERE well_id IN (SELECT well_id FROM wells USING SAMPLE 5)",
]
FORBIDDEN = [
    "COPY (SELECT well_id FROM wells) TO 'leak.csv'",
    "COPY wells TO 'leak.parquet' (FORMAT parquet)",
    "COPY wells FROM '/etc/passwd'",
    "ATTACH 'x.db' AS x",
    "ATTACH ':memory:' AS m",
    "DETACH wells",
    "INSTALL httpfs",
    "LOAD httpfs",
    "FORCE INSTALL httpfs",
    "SET threads = 1",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "PRAGMA version",
    "PRAGMA enable_profiling",
    "CREATE TABLE t AS SELECT well_id FROM wells",
    "CREATE MACRO m() AS 1",
    "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "DROP TABLE wells",
    "INSERT INTO wells SELECT * FROM wells",
    "DELETE FROM wells",
    "UPDATE wells SET plate = 2",
    "EXPORT DATABASE 'dump'",
    "CALL pragma_version()",
    "CHECKPOINT",
    "VACUUM",
    "USE memory",
    "SELECT well_id FROM wells; SELECT 1",
    "SELECT well_id FROM wells; DROP TABLE wells",
    "SELECT well_id FROM wells; COPY wells TO 'leak.csv'",
    "SET threads = 1; SELECT well_id FROM wells",
    "",
    ";",
]
FILE_READERS = [
    "read_csv('/etc/passwd')", "read_csv_auto('/etc/passwd')", "read_parquet('/etc/passwd')",
    "parquet_scan('/etc/passwd')", "read_json('/etc/passwd')", "read_json_auto('/etc/passwd')",
    "read_text('/etc/passwd')", "read_blob('/etc/passwd')", "glob('/etc/*')", "'/etc/passwd'",
    "read_csv('metadata.csv')", "parquet_metadata('/etc/passwd')",
]
WELL_ID_SHAPES = [
    "SELECT well_id, well_id FROM wells",
    "SELECT [well_id] AS well_id FROM wells",
    "SELECT {'a': well_id} AS well_id FROM wells",
    "SELECT MAP {well_id: 1} AS well_id FROM wells",
    "SELECT '\\xFF'::BLOB AS well_id FROM wells",
    "SELECT well_id::BLOB AS well_id FROM wells",
    "SELECT 1.5 AS well_id FROM wells",
    "SELECT plate AS well_id FROM wells",
    "SELECT TRUE AS well_id FROM wells",
    "SELECT DATE '2020-01-01' AS well_id FROM wells",
    "SELECT NULL AS well_id",
    "SELECT NULL::VARCHAR AS well_id FROM wells",
    "SELECT 'nope' AS well_id",
    "SELECT well_id || 'x' AS well_id FROM wells",
    "SELECT repeat('x', 10000000) AS well_id FROM wells LIMIT 1",
    "SELECT plate FROM wells",
    "SELECT well_id AS id FROM wells",
    "SELECT * EXCLUDE (well_id) FROM wells",
    "SELECT well_id FROM nonexistent_table",
    "SELEC well_id FROM wells",
    "SELECT well_id FROM wells WHERE plate = 'one'",
]
WHERE_INJECTIONS = [
    "1=1)) UNION ALL SELECT well_id FROM wells WHERE ((1=1",
    "TRUE) UNION SELECT well_id FROM wells --",
    "TRUE)) --",
    "plate = 1) LIMIT 100000 --",
    "plate = 1) ORDER BY 1 --",
    "plate = 1) GROUP BY well_id --",
    "1=1; DROP TABLE wells",
    "1=1; SELECT 1",
    "1=1) QUALIFY (1=1",
    "1=1 /*",
    "*/ 1=1",
    "",
    "well_id IN (SELECT well_id FROM read_csv('/etc/passwd'))",
    "EXISTS (SELECT * FROM glob('/etc/*'))",
    "plate = (SELECT count(*) FROM read_text('/etc/passwd'))",
]


NO_SAMPLERS = "<no samplers>"


@dataclass(frozen=True)
class SqlCase:
    """An attack on select.sql (``sql``) or on sampler 0's where (``where``; NO_SAMPLERS: no samplers at all); the
    error must name the field and contain one of ``expect``."""

    name: str
    sql: str | None
    where: str | None
    expect: tuple[str, ...]

    @property
    def field(self) -> str:
        return "select.sample[0].where" if self.sql is None else "select.sql"


REFUSED = ("must be a SELECT statement", "exactly one SELECT statement", "should be non-empty")
NO_FILES = ("tried to access a file", "does not exist")


def sql_cases() -> list[SqlCase]:
    """Every case must be refused: exit 2, one error line naming the field, no lockfile."""
    cases: list[SqlCase] = []
    for fn in VOLATILE:
        cases += [SqlCase(n, sql, where, (fn,)) for n, sql, where in _volatile_positions(fn)]
    cases += [SqlCase(f"nondeterministic (hostile_select): {sql}", sql, None, (name,))
              for sql, name in NONDETERMINISTIC]
    cases += [SqlCase(f"sampling: {sql}", sql, None, ("SAMPLE",)) for sql in SAMPLING]
    cases += [SqlCase(f"forbidden: {sql!r}", sql, None, REFUSED) for sql in FORBIDDEN]
    for reader in FILE_READERS:
        cases += [SqlCase(f"{reader} in from", f"SELECT * FROM {reader}", None, NO_FILES),
                  SqlCase(f"{reader} in where", f"SELECT well_id FROM wells WHERE EXISTS (SELECT * FROM {reader})",
                          None, NO_FILES),
                  SqlCase(f"{reader} in a sampler where", None, f"EXISTS (SELECT * FROM {reader})", NO_FILES)]
    cases += [SqlCase(f"well_id shape: {sql[:60]}", sql, None, ("",)) for sql in WELL_ID_SHAPES]
    cases += [SqlCase(f"sampler where injection: {w!r}", None, w, ("",)) for w in WHERE_INJECTIONS]
    cases += [SqlCase("empty selection, no samplers", "SELECT well_id FROM wells WHERE 1 = 0", NO_SAMPLERS,
                      ("the selection is empty",)),
              SqlCase("NULL well_id, no samplers", "SELECT NULL::VARCHAR AS well_id FROM wells", NO_SAMPLERS,
                      ("not wells of the source",))]
    return cases


def sql_manifest(sql: str | None, where: str | None) -> str:
    doc = copy.deepcopy(BASE)
    if sql is not None:
        doc["select"]["sql"] = sql
    if where == NO_SAMPLERS:
        del doc["select"]["sample"]
    elif where is not None:
        doc["select"]["sample"][0]["where"] = where
    return _dump(doc)


class SqlRunner:
    """`rxcurate select` of the attack in a fresh workdir (no lockfile may appear) and, with ``prior``, in a copy of
    a workdir holding a valid lockfile (its bytes may not change)."""

    def __init__(self, source: Path, prior: Path | None = None) -> None:
        self.source, self.prior = source, prior

    def __call__(self, case: SqlCase) -> Outcome:
        with case_folder() as folder:
            m = folder / "m.yaml"
            m.write_text(sql_manifest(case.sql, case.where))
            r = run_cli(["select", str(m), "--source", str(self.source), "--workdir", str(folder / "w")])
            bad = clean_error(r)
            if bad is not None:
                return bad
            named = case.where == NO_SAMPLERS or case.field in r.err
            if not named or not any(e in r.err for e in case.expect):
                return Outcome("wrong_exit", f"the error does not name {case.field} and one of {case.expect}: "
                                             f"{r.err[:400]!r}")
            if (folder / "w" / LOCKFILE).exists() or (folder / "leak.csv").exists():
                return Outcome("side_effect", "a lockfile (or leak.csv) was written")
            if self.prior is not None:
                work = folder / "prior"
                shutil.copytree(self.prior, work)
                before = (work / LOCKFILE).read_bytes()
                r = run_cli(["select", str(m), "--source", str(self.source), "--workdir", str(work)])
                bad = clean_error(r)
                if bad is not None:
                    return bad
                if (work / LOCKFILE).read_bytes() != before:
                    return Outcome("side_effect", "an existing lockfile was rewritten")
        return Outcome("clean")


# -------------------------------------------------------------------------------------------------- submissions
def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    for c in df.columns:  # mixed-type object columns cannot be written as Parquet: write them as strings
        if df[c].dtype == object and df[c].map(type).nunique() > 1:
            df[c] = df[c].astype(str)
    df.to_parquet(path, index=False)


Writer = Callable[[pd.DataFrame, Path], None]


def _feats(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if str(c).startswith("feature_")]


def _mutations(ms: list[tuple]) -> Writer:
    """Apply tests/test_submit_fuzz.py mutations; an int parameter < 0 counts from the end (n - k rows / columns)."""
    def write(base: pd.DataFrame, path: Path) -> None:
        df = base
        for m in ms:
            size = len(_feats(df)) if m[0] == "drop_feature" else len(df)
            df = _apply(df, tuple(size + v if isinstance(v, int) and v < 0 else v for v in m))
        _write_parquet(df, path)
    return write


def _truncated(k: int) -> Writer:
    """The valid file less its last ``k`` bytes (``k`` < 0: only its first -k bytes)."""
    def write(base: pd.DataFrame, path: Path) -> None:
        _write_parquet(base.copy(), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - k] if k > 0 else data[:-k])
    return write


def _raw(data: bytes) -> Writer:
    return lambda base, path: path.write_bytes(data)


def _frame(make: Callable[[pd.DataFrame, list[str]], pd.DataFrame]) -> Writer:
    return lambda base, path: _write_parquet(make(base, _feats(base)), path)


def _with(column: str, make: Callable[[pd.DataFrame, list[str]], Any]) -> Writer:
    return _frame(lambda b, f: b.assign(**{column: make(b, f)}))


def _vec(make: Callable[[int], list[Any]]) -> Writer:
    return _frame(lambda b, f: pd.DataFrame({"well_id": b["well_id"], "vec": [make(i) for i in range(len(b))]}))


def submission_cases() -> list[tuple[str, Writer]]:
    """(name, writer(base, path) of the submission file); every case must be rejected. ``base`` is the release's
    own valid embeddings; the mutations are those of tests/test_submit_fuzz.py, swept over their parameters."""
    muts: list[list[tuple]] = []
    muts += [[("drop", k)] for k in (1, 2, 3, 5, 7, 11, 17, 60, -1)]
    muts += [[("dup", k)] for k in (1, 2, 3, 5, 10, 40)]
    muts += [[("nan", v, i)] for v in (np.nan, np.inf, -np.inf) for i in (0, 7, 42, 500, 1234, 9999)]
    muts += [[("dtype", t)] for t in ("int64", "str", "bool")]
    muts += [[("well_dtype", None)]]
    muts += [[("extra", c)] for c in ("plate", "feature_x", "__key__", "Feature_0", "well_id_2")]
    muts += [[("wrong_well", i)] for i in (0, 1, 2, 10, 50, 99, -1)]
    muts += [[("drop_feature", i)] for i in (0, 1, 2, 3, 7, -2)]
    muts += [[("shuffle", 3), ("drop", 1)], [("shuffle", 5), ("nan", np.nan, 3)], [("dup", 1), ("extra", "plate")],
             [("drop", 1), ("dup", 2)]]
    cases = [(" + ".join(f"{m[0]}({', '.join(map(str, m[1:]))})" for m in ms), _mutations(ms)) for ms in muts]
    cases += [(f"truncated by {k} bytes", _truncated(k))
              for k in (1, 2, 4, 8, 12, 16, 32, 64, 100, 500, 1000, 5000, 10_000, 20_000)]
    cases += [(f"only the first {k} bytes", _truncated(-k)) for k in (0, 1, 2, 4, 8, 16, 100, 1000)]
    cases += [("empty file", _raw(b"")), ("text file", _raw(b"well_id,feature_0\nx,1\n")),
              ("json file", _raw(b'{"well_id": ["a"]}')), ("png magic", _raw(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)),
              ("PAR1 magic only", _raw(b"PAR1PAR1")), ("zeros", _raw(b"\0" * 4096)),
              ("random bytes", _raw(random.Random(0).randbytes(4096)))]
    wells: Callable[[pd.DataFrame], pd.Series] = lambda b: b["well_id"]  # noqa: E731
    cases += [
        ("zero rows", _frame(lambda b, f: b.iloc[:0])),
        ("only well_id", _frame(lambda b, f: b[["well_id"]])),
        ("no well_id", _frame(lambda b, f: b.drop(columns=["well_id"]))),
        ("well_id renamed", _frame(lambda b, f: b.rename(columns={"well_id": "well"}))),
        ("features renamed", _frame(lambda b, f: b.rename(columns={c: f"f{i}" for i, c in enumerate(f)}))),
        ("features from 1", _frame(lambda b, f: b.rename(columns={c: f"feature_{i + 1}" for i, c in enumerate(f)}))),
        ("feature gap", _frame(lambda b, f: b.rename(columns={f[-1]: f"feature_{len(f) + 5}"}))),
        ("well_id null", _with("well_id", lambda b, f: [None, *wells(b)[1:]])),
        ("well_id empty text", _with("well_id", lambda b, f: ["", *wells(b)[1:]])),
        ("well_id lower case", _with("well_id", lambda b, f: wells(b).str.lower())),
        ("well_id with spaces", _with("well_id", lambda b, f: wells(b) + " ")),
        ("well_id huge", _with("well_id", lambda b, f: ["x" * 1_000_000, *wells(b)[1:]])),
        ("all wells the same", _with("well_id", lambda b, f: wells(b).iloc[0])),
        ("well of another release", _with("well_id", lambda b, f: wells(b).str.replace("_", "-", n=1))),
        ("all vectors identical", _frame(lambda b, f: b.assign(**{c: 1.0 for c in f}))),
        ("two identical vectors", _frame(_twin)),
        ("all zero", _frame(lambda b, f: b.assign(**{c: 0.0 for c in f}))),
        ("features as text", _frame(lambda b, f: b.assign(**{c: b[c].astype(str) for c in f}))),
        ("one feature as text", _with("feature_0", lambda b, f: b["feature_0"].map(str))),
        ("features huge", _frame(lambda b, f: b.assign(**{f[0]: 1e308, f[1]: -1e308}))),
        ("only one well", _frame(lambda b, f: b.iloc[:1])),
        ("a list column beside the features", _with("vec", lambda b, f: [[1.0, 2.0]] * len(b))),
        ("list column ragged", _vec(lambda i: [1.0] * (1 + i % 3))),
        ("list column of text", _vec(lambda i: ["a", "b"])),
        ("list column with nan", _vec(lambda i: [float("nan"), 1.0])),
        ("list column empty", _vec(lambda i: [])),
    ]
    return cases


def _twin(base: pd.DataFrame, feats: list[str]) -> pd.DataFrame:
    df = base.copy()
    df.loc[1, feats] = df.loc[0, feats].to_numpy()
    return df


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    env = {**GIT_ENV, "PATH": os.environ["PATH"], "HOME": str(repo)}
    return subprocess.run(["git", f"--git-dir={repo}", *args], input=input, capture_output=True, check=True,
                          env=env).stdout.decode().strip()


def hub_state(repo: Path) -> str:
    """Every ref and what it points at (a new tag or leaderboard commit changes it)."""
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


class SubmissionRunner:
    """`rxcurate submit local://REPO@0.1.0 -b BENCH --embeddings F --hub H --cache C`: exit 2, one error line, the
    hub's refs unchanged (no leaderboard entry, no tag)."""

    def __init__(self, hub: Path, cache: Path, base: pd.DataFrame) -> None:
        self.hub, self.cache, self.base = hub, cache, base
        self.repo = hub / "datasets" / REPO_ID

    def __call__(self, write: Writer) -> Outcome:
        with case_folder() as folder:
            path = folder / "submission.parquet"
            write(self.base, path)
            before = hub_state(self.repo)
            r = run_cli(["submit", f"local://{REPO_ID}@0.1.0", "-b", BENCH, "--embeddings", str(path), "--hub",
                         str(self.hub), "--cache", str(self.cache), "--out", str(folder / "out.json")])
            bad = clean_error(r)
            if bad is not None:
                return bad
            if hub_state(self.repo) != before:
                return Outcome("side_effect", "the hub's refs changed (a leaderboard entry or a tag)")
            if (folder / "out.json").exists():
                return Outcome("side_effect", "--out results file written for a rejected submission")
        return Outcome("clean")


# ------------------------------------------------------------------------------------------------------ flips
def prose_ranges(text: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the text inside README.md's prose blocks (markers excluded: a maintainer may edit the text)."""
    start, end = (m.split("{name}")[0].encode() for m in (PROSE_START, PROSE_END))
    ranges, i = [], 0
    while (a := text.find(start, i)) >= 0:
        inner = text.find(b"-->", a) + 3
        b = text.find(end, inner)
        if inner < 3 or b < 0:
            break
        ranges.append((inner, b))
        i = b + len(end)
    return ranges


@dataclass(frozen=True)
class Flip:
    rel: str
    offset: int
    mask: int

    @property
    def name(self) -> str:
        return f"{self.rel}@{self.offset}^{self.mask:#04x}"


def flip_cases(folder: Path, total: int = 150, seed: int = 0, prose: int = 6) -> list[Flip]:
    """``total`` flips spread over every file of ``folder`` (at least 3 per file, the rest by size; the first and
    last byte of each among them), plus ``prose`` flips inside README.md's prose blocks: one byte at a seeded offset
    XOR a seeded non-zero mask."""
    rng = random.Random(seed)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    sizes = {rel: (folder / rel).stat().st_size for rel in files}
    per = {rel: 3 for rel in files}
    extra = max(0, total - 3 * len(files))
    weight = sum(sizes.values())
    for rel in files:
        per[rel] += extra * sizes[rel] // weight
    while sum(per.values()) < total:
        per[rng.choice(files)] += 1
    flips = []
    for rel in files:
        size = sizes[rel]
        offsets = [0, size - 1] + [rng.randrange(size) for _ in range(per[rel] - 2)]  # the edges too
        flips += [Flip(rel, off, rng.randrange(1, 256)) for off in offsets]
    card = folder / CARD
    inside = [o for a, b in prose_ranges(card.read_bytes()) for o in range(a, b)] if card.is_file() else []
    flips += [Flip(CARD, off, rng.randrange(1, 256)) for off in rng.sample(inside, min(prose, len(inside)))]
    return flips


def flip_kind(folder: Path, f: Flip) -> str:
    """`release.json` (the index itself), `prose` (inside a README.md prose block, still UTF-8: a maintainer may
    edit prose), `prose-not-utf8` (inside a prose block, but the card is no longer UTF-8 text) or `file`."""
    if f.rel == RELEASE_JSON:
        return "release.json"
    data = (folder / f.rel).read_bytes()
    if f.rel == CARD and any(a <= f.offset < b for a, b in prose_ranges(data)):
        flipped = bytearray(data)
        flipped[f.offset] ^= f.mask
        try:
            bytes(flipped).decode("utf-8")
        except UnicodeDecodeError:
            return "prose-not-utf8"
        return "prose"
    return "file"


def apply_flip(path: Path, f: Flip) -> bytes:
    data = path.read_bytes()
    flipped = bytearray(data)
    flipped[f.offset] ^= f.mask
    path.write_bytes(bytes(flipped))
    return data


def judge_report(r: Result, f: Flip, kind: str) -> Outcome:
    """validate --json of a flipped release: exit 1, one JSON report on stdout whose failures name the file."""
    if r.crash is not None or "Traceback" in r.out + r.err:
        return Outcome("traceback", (r.crash or r.err)[-3000:])
    try:
        doc = json.loads(r.out)
    except ValueError:
        return Outcome("wrong_exit", f"exit {r.code}; stdout is not one JSON report: {r.out[:300]!r} "
                                     f"stderr {r.err[:300]!r}")
    failures = doc.get("failures") or []
    if kind == "prose":  # a maintainer may edit prose: valid, or a report naming the card
        if r.code == 0 and doc.get("ok"):
            return Outcome("accepted")
    if r.code != 1 or doc.get("ok") is not False or not failures:
        return Outcome("wrong_exit", f"exit {r.code}; ok={doc.get('ok')}; failures {failures[:3]}")
    named = {f.rel} | ({RELEASE_JSON} if kind == "release.json" else set())
    hit = any(x.get("file") in named or str(x.get("message", "")).startswith(tuple(named)) for x in failures)
    if not hit and kind == "release.json":  # the flip hit a recorded sha256/size: the report names that file
        hit = True
    if not hit:
        return Outcome("wrong_exit", f"exit 1 but no failure names {f.rel}: {[x.get('message') for x in failures][:4]}")
    return Outcome("clean")


class FlipRunner:
    """Flip one byte of a checked-out release folder in place, `rxcurate validate FOLDER --no-rerun --json`,
    restore the byte."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, f: Flip) -> Outcome:
        path = self.folder / f.rel
        kind = flip_kind(self.folder, f)
        original = apply_flip(path, f)
        try:
            r = run_cli(["validate", str(self.folder), "--no-rerun", "--json"])
        finally:
            path.write_bytes(original)
        return judge_report(r, f, kind)


class HubFlipRunner:
    """Commit the flipped file into a tree of v0.1.0 of a COPY of the hub repository, tag it v0.2.N and validate it
    through local:// (the tag differs from release.json's version: that failure is expected beside the flip)."""

    def __init__(self, hub: Path, folder: Path) -> None:
        self.hub, self.folder = hub, folder
        self.repo = hub / "datasets" / REPO_ID
        self.n = 0

    def __call__(self, f: Flip) -> Outcome:
        data = bytearray((self.folder / f.rel).read_bytes())
        data[f.offset] ^= f.mask
        blob = git(self.repo, "hash-object", "-w", "--stdin", input=bytes(data))
        listing = git(self.repo, "ls-tree", "-r", "--full-tree", "v0.1.0").split("\n")
        lines = [e if not e.endswith("\t" + f.rel) else f"100644 blob {blob}\t{f.rel}" for e in listing if e]
        index = self.repo.parent / f"flip-index-{os.getpid()}"
        env = {"GIT_INDEX_FILE": str(index), "PATH": os.environ["PATH"]}
        subprocess.run(["git", f"--git-dir={self.repo}", "update-index", "--index-info"],
                       input=("\n".join(lines) + "\n").encode(), check=True, env=env, capture_output=True)
        tree = subprocess.run(["git", f"--git-dir={self.repo}", "write-tree"], check=True, capture_output=True,
                              env=env).stdout.decode().strip()
        index.unlink()
        self.n += 1
        version = f"0.2.{self.n}"
        commit = git(self.repo, "commit-tree", tree, "-p", "v0.1.0^{commit}", "-m", f"flip {f.name}")
        git(self.repo, "update-ref", f"refs/tags/v{version}", commit)
        r = run_cli(["validate", f"local://{REPO_ID}@{version}", "--hub", str(self.hub), "--no-rerun", "--json"])
        return judge_report(r, f, flip_kind(self.folder, f))


# -------------------------------------------------------------------------------------------------- fixtures
def tiny_source(base: Path) -> Path:
    from rxcurate.synth import generate

    return generate(base / "tiny-rxrx3", layout="rxrx3", preset="tiny", seed=0)


def published(source: Path, base: Path) -> tuple[Path, Path]:
    """(hub, checkout folder of v0.1.0) of the tiny release published into a fresh local hub."""
    from rxcurate.publish import publish
    from rxcurate.publish.local import LocalHub

    _, folder = build_release(source, base / "build")
    hub = base / "hub"
    publish(folder, "local", hub=hub)
    return hub, LocalHub(hub).checkout(REPO_ID, "0.1.0", base / "checkout")


def prior_workdir(source: Path, base: Path) -> Path:
    """A workdir holding the valid lockfile of the base manifest (attacks must leave it byte-identical)."""
    work = base / "prior"
    r = run_cli(["select", str(TINY), "--source", str(source), "--workdir", str(work)])
    if r.code != 0:
        raise RuntimeError(f"select of the base manifest failed: {r.err or r.crash}")
    return work


def submit_env(hub: Path, checkout: Path, base: Path) -> tuple[pd.DataFrame, Path]:
    """(the release's own valid embeddings, a warm cache: one accepted submission already recorded)."""
    own = checkout / "embeddings" / "baseline" / "embeddings.parquet"
    cache = base / "cache"
    r = run_cli(["submit", f"local://{REPO_ID}@0.1.0", "-b", BENCH, "--embeddings", str(own), "--hub", str(hub),
                 "--cache", str(cache)])
    if r.code != 0:
        raise RuntimeError(f"submit of the release's own embeddings failed: {r.err or r.crash}")
    return pd.read_parquet(own), cache


# ----------------------------------------------------------------------------------------------------- script
@dataclass
class Tally:
    count: int = 0
    clean: int = 0
    accepted: int = 0
    traceback: int = 0
    wrong_exit: int = 0
    side_effect: int = 0
    seconds: float = 0.0
    problems: list[dict[str, str]] = field(default_factory=list)
    breakdown: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, o: Outcome, group: str | None = None) -> None:
        self.count += 1
        setattr(self, o.kind, getattr(self, o.kind) + 1)
        if group is not None:
            self.breakdown[f"{group}:{o.kind}"] = self.breakdown.get(f"{group}:{o.kind}", 0) + 1
        if o.kind not in ("clean", "accepted"):
            self.problems.append({"case": name, "outcome": o.kind, "detail": o.detail[:1500]})


def run_corpus(cases: list[tuple[str, Any]], runner: Callable[[Any], Outcome],
               group: Callable[[Any], str] | None = None) -> Tally:
    t = Tally()
    start = time.perf_counter()
    for name, payload in cases:
        t.add(name, runner(payload), group(payload) if group else None)
    t.seconds = round(time.perf_counter() - start, 2)
    return t


def main_script() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flips", type=int, default=150)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "robustness.json")
    args = ap.parse_args()
    os.environ["RXCURATE_PROGRESS"] = "0"
    load_before = os.getloadavg()
    started = time.perf_counter()
    corpora: dict[str, Tally] = {}
    with tempfile.TemporaryDirectory(prefix="robustness-") as tmp:
        base = Path(tmp)
        source = tiny_source(base)
        setup = time.perf_counter()
        hub, checkout = published(source, base)
        prior = prior_workdir(source, base)
        emb, cache = submit_env(hub, checkout, base)
        setup_s = round(time.perf_counter() - setup, 2)
        corpora["manifests"] = run_corpus(manifest_cases(args.seed), ManifestRunner(source))
        corpora["sql"] = run_corpus([(c.name, c) for c in sql_cases()], SqlRunner(source))
        corpora["sql_existing_lockfile"] = run_corpus([(c.name, c) for c in sql_cases()[::5]],
                                                      SqlRunner(source, prior))
        corpora["submissions"] = run_corpus(submission_cases(), SubmissionRunner(hub, cache, emb))
        flips = flip_cases(checkout, args.flips, args.seed)
        corpora["flips"] = run_corpus([(f.name, f) for f in flips], FlipRunner(checkout),
                                      group=lambda f: flip_kind(checkout, f))
        hub_copy = base / "hub-copy"
        shutil.copytree(hub, hub_copy, symlinks=True)
        one_each = list({f.rel: f for f in reversed(flips) if flip_kind(checkout, f) == "file"}.values())
        corpora["hub_flips"] = run_corpus([(f.name, f) for f in one_each], HubFlipRunner(hub_copy, checkout))
    bad = sum(t.traceback + t.wrong_exit + t.side_effect for t in corpora.values())
    short = {k: v for k, v in MIN_COUNTS.items() if corpora[k].count - corpora[k].accepted < v}
    doc = {
        "benchmark": "robustness", "rxcurate": __version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpus": os.cpu_count(), "seed": args.seed,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "setup_seconds": setup_s, "total_seconds": round(time.perf_counter() - started, 2),
        "minimum_counts": MIN_COUNTS,
        "corpora": {k: asdict(v) for k, v in corpora.items()},
        "passed": bad == 0 and not short,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, doc)
    for k, v in corpora.items():
        print(f"{k:<22} {v.count:>4} cases: {v.clean} clean, {v.accepted} accepted, {v.traceback} tracebacks, "
              f"{v.wrong_exit} wrong exits, {v.side_effect} side effects ({v.seconds:.1f} s)")
    print(f"wrote {args.out}: {'passed' if doc['passed'] else 'FAILED'}")
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    sys.exit(main_script())
