"""Progress outside a terminal: dated plain lines every RXCURATE_PROGRESS_INTERVAL seconds and at the end."""

from __future__ import annotations

import io
import re

from rxcurate import progress as P

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ compress \d+/10 [\d.,]+ images/s (ETA \S+|in \S+)( done)?$")


def test_line_reporter_prints_every_interval_and_at_the_end():
    now = [0.0]
    lines: list[str] = []
    rep = P.LineReporter(10, "compress", "images", every=30.0, clock=lambda: now[0], write=lines.append)
    for _ in range(10):
        now[0] += 10.0
        rep.advance(1)
    rep.finish()
    assert len(lines) == 4  # at 30, 60, 90 s, then the final line
    assert all(LINE.match(x) for x in lines), lines
    assert "3/10" in lines[0] and "ETA 1m10s" in lines[0]
    assert lines[-1].endswith(" done") and "10/10" in lines[-1] and "in 1m40s" in lines[-1]


def test_progress_writes_plain_lines_when_stderr_is_not_a_terminal(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(P.sys, "stderr", buf)
    monkeypatch.setenv("RXCURATE_PROGRESS", "1")
    monkeypatch.setenv(P.INTERVAL_ENV, "0.000001")
    with P.progress(10, "compress", "images") as advance:
        for _ in range(10):
            advance(1)
    lines = buf.getvalue().splitlines()
    assert len(lines) >= 2 and all(LINE.match(x) for x in lines), lines
    assert lines[-1].endswith(" done")


def test_no_final_line_when_the_stage_fails_and_none_when_silenced(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(P.sys, "stderr", buf)
    monkeypatch.setenv("RXCURATE_PROGRESS", "1")
    try:
        with P.progress(3, "embed", "wells") as advance:
            advance(1)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert buf.getvalue() == ""
    monkeypatch.setenv("RXCURATE_PROGRESS", "0")
    with P.progress(3, "embed", "wells") as advance:
        advance(3)
    assert buf.getvalue() == ""


def test_log_lines_are_not_hard_wrapped(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(P, "_console", P.Console(file=buf, soft_wrap=True, width=80))
    path = "/a/very/long/path/" + "x" * 150 + "/lockfile.parquet"
    P.log(f"select: wrote {path}")
    assert buf.getvalue() == f"select: wrote {path}\n"
