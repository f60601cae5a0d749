"""Option definitions shared by the commands (one spelling and one help text each) and the JSON-error wrapper.

Use as defaults in a command signature: ``hub: Path | None = HUB``. Typer copies an ``OptionInfo`` per
parameter, so sharing one object between commands is safe.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import typer

from rxcurate.errors import RxcurateError

HUB = typer.Option(None, "--hub", help="Local hub folder (default $RXCURATE_HUB, else ./hub).")
WORKDIR = typer.Option(None, "--workdir", help="Release folder; default: the manifest's output.workdir, else "
                       "build/<name>.")
ENGINE = typer.Option("local", "--engine", help="local (a process pool / DataLoader workers on this machine) or ray "
                      "(Ray Data pipelines; needs rxcurate[ray]). Same output bytes either way.")
ADDRESS = typer.Option(None, "--address", help="With --engine ray: the Ray cluster to use, auto (the cluster this "
                       "machine belongs to), HOST:PORT or ray://HOST:10001; default: start a local Ray.")


def json_flag(what: str = "the result") -> bool:
    """A ``--json`` option: ``as_json: bool = json_flag("the report")``."""
    flag: bool = typer.Option(False, "--json", help=f"Print {what} as JSON on stdout.")
    return flag


def json_errors_flag() -> bool:
    """A ``--json`` option for commands whose errors are JSON too (see :func:`json_errors`)."""
    flag: bool = typer.Option(False, "--json", help='Print exactly one JSON object to stdout (errors too: '
                              '{"ok": false, "errors": [...]}, exit 2).')
    return flag


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


@contextlib.contextmanager
def json_errors(enabled: bool) -> Iterator[None]:
    """With ``--json``, a domain error becomes one JSON object on stdout (``ok: false``, its problems) and the
    error's exit status; without it the error propagates to the CLI's one-line renderer."""
    try:
        yield
    except RxcurateError as exc:
        if not enabled:
            raise
        errors = list(getattr(exc, "problems", None) or [one_line(exc)])
        typer.echo(json.dumps({"ok": False, "errors": errors, "message": one_line(exc)}, sort_keys=True))
        raise typer.Exit(exc.exit_code) from None


def echo_json(doc: object) -> None:
    typer.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))
