"""The command line: help for every command, one-line errors with exit 2, and the synth CLI end to end."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from rxcurate.cli import COMMAND_MODULES, app, main

runner = CliRunner()


def _commands() -> list[str]:
    return [c.name for c in typer.main.get_command(app).commands.values()]  # type: ignore[attr-defined]


def test_root_help_lists_every_subcommand():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in _commands():
        assert name in result.output
    assert {"synth", "inspect"} <= set(_commands())
    assert len(_commands()) >= len(COMMAND_MODULES)


@pytest.mark.parametrize("name", _commands())
def test_each_subcommand_has_help(name):
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(result.output.splitlines()) > 4


def test_domain_error_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["inspect", str(tmp_path / "missing")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert "--source" in err or "does not exist" in err


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("rxcurate ")


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_synth_cli_twice_gives_identical_bytes_and_inspect_passes(tmp_path):
    exe = [sys.executable, "-m", "rxcurate.cli"]
    env = dict(os.environ, RXCURATE_PROGRESS="0")
    for name in ("a", "b"):
        r = subprocess.run([*exe, "synth", "--layout", "rxrx1", "--preset", "tiny", "--seed", "3", "--out",
                            str(tmp_path / name)], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    r = subprocess.run([*exe, "inspect", str(tmp_path / "a")], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "rxrx1" in r.stdout and "ok" in r.stdout
    bad = subprocess.run([*exe, "synth", "--preset", "nope", "--out", str(tmp_path / "c")], capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--preset" in bad.stderr
    assert not (tmp_path / "c").exists()
