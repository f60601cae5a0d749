"""Shared fixtures: tiny synthetic screens (generated once per session) and the optional ../shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Progress lines go to stderr, which CLI test runners mix into their output: off in tests unless a test enables it.
os.environ.setdefault("RXCURATE_PROGRESS", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REALDATA = SHARED / "realdata"


@pytest.fixture(scope="session")
def tiny_rxrx3(tmp_path_factory) -> Path:
    """The tiny RxRx3-layout synthetic screen, seed 0 (read-only: copy it before modifying)."""
    from rxcurate.synth import generate

    return generate(tmp_path_factory.mktemp("synth") / "tiny-rxrx3", layout="rxrx3", preset="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_rxrx1(tmp_path_factory) -> Path:
    """The tiny RxRx1-layout synthetic screen, seed 0 (read-only)."""
    from rxcurate.synth import generate

    return generate(tmp_path_factory.mktemp("synth") / "tiny-rxrx1", layout="rxrx1", preset="tiny", seed=0)


@pytest.fixture(scope="session")
def realdata() -> Path:
    """../shared/realdata beside the repository; tests using it skip when it is absent (a user's clone)."""
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata is absent (only CI and developer machines have it)")
    return REALDATA


@pytest.fixture(scope="session")
def built(tiny_rxrx3, tmp_path_factory) -> tuple[Path, Path]:
    """(manifest, release folder) of the tiny release built once with the real stages (tests/release_fixture.py)."""
    from release_fixture import build_release

    return build_release(tiny_rxrx3, tmp_path_factory.mktemp("tiny-release"))


@pytest.fixture
def release(built, tmp_path) -> Path:
    """A private copy of the tiny release folder (tests may modify it)."""
    from release_fixture import copy_release

    return copy_release(built[1], tmp_path / "release")


@pytest.fixture(scope="module")
def olah_endpoint(hub, tmp_path_factory):
    """olah (offline mirror mode) serving the requesting module's `hub` (bare git repositories) over the Hub's
    HTTP read API."""
    import shutil
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from release_fixture import REPO_ID

    exe = Path(sys.executable).with_name("olah-cli")
    if not exe.exists() and shutil.which("olah-cli") is None:
        pytest.skip("olah is not installed (pip install olah; it is in the dev extra)")
    exe = exe if exe.exists() else Path(shutil.which("olah-cli"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = tmp_path_factory.mktemp("olah")
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
                urllib.request.urlopen(f"{endpoint}/api/datasets/{REPO_ID}/refs", timeout=1)
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
