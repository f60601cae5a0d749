"""Progress on stderr (never mixed with machine-readable stdout).

On a terminal: rich progress bars with count, rate, elapsed time and ETA. Elsewhere (nohup, CI, Slurm, a pipe):
plain dated lines ``<UTC time> <stage> <done>/<total> <rate> ETA <eta>`` every ``RXCURATE_PROGRESS_INTERVAL``
seconds (default 30) and one when the stage finishes, never hard-wrapped. ``RXCURATE_PROGRESS=0`` silences both.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

INTERVAL_ENV = "RXCURATE_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0

_console = Console(stderr=True, soft_wrap=True)


def _stream() -> TextIO:
    return sys.stderr


def active() -> bool:
    return os.environ.get("RXCURATE_PROGRESS", "1") != "0"


def enabled() -> bool:
    """Interactive progress bars: on, and stderr is a terminal."""
    return active() and _stream().isatty()


def interval() -> float:
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _line(text: str) -> None:
    try:
        stream = _stream()
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError):  # a closed or broken stderr never stops the work
        pass


class LineReporter:
    """Plain progress lines for a non-terminal stderr: one every ``every`` seconds, and one at the end."""

    def __init__(self, total: int, desc: str, unit: str, every: float, clock: Callable[[], float] = time.monotonic,
                 write: Callable[[str], None] = _line) -> None:
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.clock, self.write = clock, write
        self.start = self.last = clock()
        self.done = 0

    def text(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 and self.total >= self.done else None
        eta = f"ETA {_duration(left)}" if left is not None and self.done < self.total else f"in {_duration(elapsed)}"
        return f"{_stamp()} {self.desc} {self.done:,}/{self.total:,} {rate:,.1f} {self.unit}/s {eta}"

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self.write(self.text(now))

    def finish(self) -> None:
        self.write(self.text(self.clock()) + " done")


@contextlib.contextmanager
def progress(total: int, desc: str, unit: str = "items") -> Iterator[Callable[[int], None]]:
    """Context manager yielding ``advance(n)``; shows count, rate (``unit``/s), elapsed and ETA."""
    if not active():
        def ignore(n: int = 1) -> None:
            return None

        yield ignore
        return
    if not _stream().isatty():
        reporter = LineReporter(total, desc, unit, interval())
        yield reporter.advance
        reporter.finish()  # only after success: a failing stage's last stderr line stays its error
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
    """A human status line on stderr (not wrapped: paths stay whole)."""
    _console.print(msg, highlight=False, markup=False)
