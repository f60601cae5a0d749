"""olah (PyPI, offline mirror mode) serving a local hub's bare git repositories over the Hub's HTTP read API, for
tests of the hf:// read path (tests/conftest.py, tests/with_polaris/conftest.py)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def serve(exe: Path, hub: Path, work: Path, repo_id: str) -> Iterator[str]:
    """Start ``exe`` (olah-cli) on a free port serving ``hub``; yields the endpoint once ``repo_id`` answers.
    Skips the test when olah cannot start."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (work / "olah.toml").write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nmirrors-path = ["{hub}"]\nmirror-scheme = "http"\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\nmetadata-cache-ttl = 0\n'
        f'repos-path = "{work / "repos"}"\n\n[accessibility]\noffline = true\n')
    proc = subprocess.Popen([str(exe), "-c", "olah.toml"], cwd=work, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(f"{endpoint}/api/datasets/{repo_id}/refs", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.skip("olah exited at start-up")
                time.sleep(0.2)
        else:
            pytest.skip("olah did not start within 30 s")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)
