"""Hostile input to select (issue 16): each attack ends in one `error:` line, exit 2, no traceback, no lockfile
change; the lockfile never changes under an unchanged manifest."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rxcurate.cli import main
from rxcurate.layout import LOCKFILE
from rxcurate.synth import generate

REPO = Path(__file__).resolve().parents[1]
TINY3 = REPO / "tests" / "data" / "manifests" / "tiny-rxrx3.yaml"
BASE = yaml.safe_load(TINY3.read_text())


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "tiny"
    generate(root, layout="rxrx3", preset="tiny", seed=0)
    return root


def _run(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as ei:
        main(list(args))
    err = capsys.readouterr().err
    return int(ei.value.code or 0), err


def _manifest(tmp_path: Path, sql: str | None = None, where: str | None = None) -> Path:
    m = copy.deepcopy(BASE)
    if sql is not None:
        m["select"]["sql"] = sql
    if where is not None:
        m["select"]["sample"][0]["where"] = where
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump(m))
    return p


def _refused(capsys, tmp_path, screen, manifest: Path, expect: str) -> None:
    work = tmp_path / "w"
    code, err = _run(capsys, "select", str(manifest), "--source", str(screen), "--workdir", str(work))
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    assert expect in err, err
    assert len(err) < 2000
    assert not (work / LOCKFILE).exists()


# volatile functions and sampling clauses: two runs would select other wells
NONDETERMINISTIC = [
    ("SELECT well_id FROM wells WHERE random() < 0.5", "random()"),
    ("SELECT well_id FROM wells ORDER BY random() LIMIT 10", "random()"),
    ("SELECT well_id FROM wells WHERE now() > TIMESTAMP '2000-01-01'", "now()"),
    ("SELECT well_id FROM wells WHERE current_date > DATE '2000-01-01'", "current_date"),
    ("SELECT well_id FROM wells WHERE gen_random_uuid()::VARCHAR > 'a'", "gen_random_uuid()"),
    ("SELECT well_id FROM wells USING SAMPLE 10", "SAMPLE"),
    ("SELECT well_id FROM wells TABLESAMPLE 10%", "SAMPLE"),
    ("SELECT well_id FROM (SELECT * FROM wells USING SAMPLE 50%) t", "SAMPLE"),
]


@pytest.mark.parametrize("sql,name", NONDETERMINISTIC)
def test_nondeterministic_sql_is_refused_naming_the_function(capsys, tmp_path, screen, sql, name):
    _refused(capsys, tmp_path, screen, _manifest(tmp_path, sql=sql), name)


def test_nondeterministic_sampler_where_is_refused(capsys, tmp_path, screen):
    _refused(capsys, tmp_path, screen, _manifest(tmp_path, where="random() < 0.5"), "select.sample[0].where uses "
             "random()")


def test_sampler_where_cannot_close_its_parentheses(capsys, tmp_path, screen):
    where = "1=1)) UNION ALL SELECT well_id FROM wells WHERE ((1=1"
    _refused(capsys, tmp_path, screen, _manifest(tmp_path, where=where), "must be one condition")


@pytest.mark.parametrize("sql,expect", [
    ("SELECT well_id, well_id FROM wells", "2 columns named well_id"),
    ("SELECT [well_id] AS well_id FROM wells", "must be a text column"),
    ("SELECT {'a': well_id} AS well_id FROM wells", "must be a text column"),
    ("SELECT MAP {well_id: 1} AS well_id FROM wells", "must be a text column"),
    ("SELECT '\\xFF'::BLOB AS well_id FROM wells", "must be a text column"),
    ("SELECT repeat('x', 10000000) AS well_id FROM wells LIMIT 1", "characters)"),  # bounded message
])
def test_well_id_of_the_wrong_shape_is_a_clean_error(capsys, tmp_path, screen, sql, expect):
    _refused(capsys, tmp_path, screen, _manifest(tmp_path, sql=sql), expect)


def test_a_runaway_query_hits_the_time_budget(capsys, tmp_path, screen, monkeypatch):
    monkeypatch.setenv("RXCURATE_SELECT_TIMEOUT", "2")
    sql = "SELECT a.well_id || r.range AS well_id FROM wells a, range(300000000) r ORDER BY 1"
    _refused(capsys, tmp_path, screen, _manifest(tmp_path, sql=sql), "ran longer than 2 s")


def test_a_bad_budget_setting_names_the_variable(capsys, tmp_path, screen, monkeypatch):
    monkeypatch.setenv("RXCURATE_SELECT_MEMORY", "lots")
    _refused(capsys, tmp_path, screen, TINY3, "RXCURATE_SELECT_MEMORY")


def _copy_screen(screen: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(screen, dest)
    return dest


def test_unterminated_quote_in_metadata_is_refused_with_the_line(capsys, tmp_path, screen):
    src = _copy_screen(screen, tmp_path / "src")
    lines = (src / "metadata.csv").read_text().split("\n")
    lines[1] = lines[1].replace(",HUVEC", ',"HUVEC')
    (src / "metadata.csv").write_text("\n".join(lines))
    work = tmp_path / "w"
    code, err = _run(capsys, "select", str(TINY3), "--source", str(src), "--workdir", str(work))
    assert code == 2 and "unbalanced quote at line 2" in err and "Traceback" not in err, err
    code, err = _run(capsys, "inspect", str(src))
    assert code == 2, err


def test_plate_overflow_is_a_clean_error(capsys, tmp_path, screen):
    src = _copy_screen(screen, tmp_path / "src")
    lines = (src / "metadata.csv").read_text().split("\n")
    parts = lines[1].split(",")
    parts[2] = "99999999999999999999999"
    lines[1] = ",".join(parts)
    (src / "metadata.csv").write_text("\n".join(lines))
    code, err = _run(capsys, "select", str(TINY3), "--source", str(src), "--workdir", str(tmp_path / "w"))
    assert code == 2 and "plate must be an integer" in err and "Traceback" not in err, err


def test_an_image_that_is_a_fifo_is_refused_not_waited_on(capsys, tmp_path, screen):
    src = _copy_screen(screen, tmp_path / "src")
    victim = sorted((src / "images").rglob("*.png"))[0]
    victim.unlink()
    os.mkfifo(victim)
    code, err = _run(capsys, "select", str(TINY3), "--source", str(src), "--workdir", str(tmp_path / "w"))
    assert code == 2 and "not a regular file" in err and victim.name in err, err


def test_workdir_that_is_a_file_or_cannot_be_created(capsys, tmp_path, screen):
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, err = _run(capsys, "select", str(TINY3), "--source", str(screen), "--workdir", str(afile))
    assert code == 2 and "is a file, not a folder" in err, err
    code, err = _run(capsys, "select", str(TINY3), "--source", str(screen), "--workdir", "/proc/rxcurate-no/w")
    assert code == 2 and "cannot be created" in err, err


def test_table_path_with_nul_is_a_clean_error(capsys, tmp_path, screen):
    m = copy.deepcopy(BASE)
    m["tables"] = {"genes": {"path": "genes\x00.csv"}}
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump(m))
    code, err = _run(capsys, "select", str(p), "--source", str(screen), "--workdir", str(tmp_path / "w"))
    assert code == 2 and "NUL byte" in err and "Traceback" not in err, err


def test_a_second_select_in_the_same_workdir_is_refused_while_one_runs(tmp_path, screen):
    from rxcurate.checkpoint import Checkpoint
    from rxcurate.errors import CheckpointError
    from rxcurate.layout import SELECT_STATE
    from rxcurate.manifest import load_manifest
    from rxcurate.select import select

    work = tmp_path / "w"
    work.mkdir()
    with Checkpoint(work, SELECT_STATE, busy="held by the test").locked():
        with pytest.raises(CheckpointError, match="another rxcurate select is running"):
            select(load_manifest(TINY3), source=screen, workdir=work)
    assert not (work / LOCKFILE).exists()
    select(load_manifest(TINY3), source=screen, workdir=work)
    assert (work / LOCKFILE).is_file()


def test_lockfile_bytes_never_change_under_an_unchanged_manifest(tmp_path, screen):
    from rxcurate.manifest import load_manifest
    from rxcurate.select import select

    a, b = tmp_path / "a", tmp_path / "b"
    select(load_manifest(TINY3), source=screen, workdir=a)
    select(load_manifest(TINY3), source=screen, workdir=b)
    first = (a / LOCKFILE).read_bytes()
    assert first == (b / LOCKFILE).read_bytes()
    select(load_manifest(TINY3), source=screen, workdir=a)
    assert (a / LOCKFILE).read_bytes() == first


YAML_ATTACKS = [
    ("a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)),
     "expands to more than"),
    ("[" * 300 + "]" * 300, "nested deeper than"),
    ("name: !!binary aGVsbG8=\n", "is not allowed in a manifest"),
    ("? [a, b]\n: 1\n", "mapping key must be a plain string"),
    ("name: x\nname: y\n", "duplicated key"),
]


@pytest.mark.parametrize("text,expect", YAML_ATTACKS)
def test_hostile_yaml_is_refused_before_it_expands(capsys, tmp_path, text, expect):
    p = tmp_path / "m.yaml"
    p.write_text(text)
    code, err = _run(capsys, "select", str(p), "--source", str(tmp_path), "--workdir", str(tmp_path / "w"))
    assert code == 2 and expect in err and "Traceback" not in err and len(err) < 2000, err


def test_a_yaml_date_version_stays_text_and_gets_a_schema_error(capsys, tmp_path):
    m = copy.deepcopy(BASE)
    text = yaml.safe_dump(m).replace("version: 0.1.0", "version: 2001-12-14")
    p = tmp_path / "m.yaml"
    p.write_text(text)
    code, err = _run(capsys, "select", str(p), "--source", str(tmp_path), "--workdir", str(tmp_path / "w"))
    assert code == 2 and "version" in err and "Traceback" not in err, err


def test_help_still_works():
    from rxcurate.cli import app

    assert CliRunner().invoke(app, ["select", "--help"]).exit_code == 0
