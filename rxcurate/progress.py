"""Progress bars with throughput, on stderr (never mixed with machine-readable stdout)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_console = Console(stderr=True)


def enabled() -> bool:
    return os.environ.get("RXCURATE_PROGRESS", "1") != "0" and sys.stderr.isatty()


@contextlib.contextmanager
def progress(total: int, desc: str, unit: str = "items") -> Iterator[Callable[[int], None]]:
    """Context manager yielding ``advance(n)``; shows count, rate (``unit``/s), elapsed and ETA."""
    if not enabled():
        yield lambda n=1: None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_console,
        transient=False,
    )
    with bar:
        task = bar.add_task(desc, total=total, rate="")

        def advance(n: int = 1) -> None:
            bar.advance(task, n)
            t = bar.tasks[task]
            speed = t.finished_speed or t.speed
            if speed:
                bar.update(task, rate=f"{speed:,.1f} {unit}/s")

        yield advance


def log(msg: str) -> None:
    """A human status line on stderr."""
    _console.print(msg, highlight=False, markup=False)
