"""The ``rxcurate`` command line: a thin typed shell over the stage modules.

Each command lives in ``rxcurate/commands/<name>.py`` and exposes ``register(app)``. Domain errors
(:class:`rxcurate.errors.RxcurateError`) are rendered as one line on stderr with exit status 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from rxcurate import __version__
from rxcurate.errors import RxcurateError

# Order = order in `rxcurate --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "synth",
    "inspect",
    "select",
    "compress",
    "embed",
    "probe",
    "evaluate",
    "card",
    "publish",
    "validate",
    "release",
    "pull",
    "submit",
    "leaderboard",
)

app = typer.Typer(
    name="rxcurate",
    help=(
        "Curate and publish high-content-screening microscopy datasets: synthesise or inspect a source "
        "screen, select a core subset with a manifest, compress it into Parquet shards, embed, benchmark, "
        "publish and validate; pull a published version, submit embeddings to its benchmarks and read the "
        "leaderboard."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"rxcurate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Curate and publish high-content-screening microscopy datasets."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"rxcurate.commands.{_name}").register(app)


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="rxcurate")
    except RxcurateError as exc:
        msg = " ".join(str(exc).split()) if "\n" not in str(exc).strip() else str(exc).strip()
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except OSError as exc:  # a path given on the command line that cannot be read or written: no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}: check the path and its permissions", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
