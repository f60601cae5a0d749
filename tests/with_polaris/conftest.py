"""Fixtures of the Polaris tests, which run in .venv-polaris (stock polaris-lib 0.13; `make test-polaris`): the tiny
release is built and published by the core environment (.venv, no polaris-lib) and served over the Hub's HTTP API by
olah, so polaris-lib reads exactly what the core writes, through hf:// URLs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from olah_server import serve

pytest.importorskip("polaris", reason="polaris-lib is not installed here: these tests run in .venv-polaris "
                                      "(make test-polaris)")

REPO = Path(__file__).resolve().parents[2]
CORE_PYTHON = Path(os.environ.get("RXCURATE_CORE_PYTHON", REPO / ".venv" / "bin" / "python"))
REPO_ID = "test/tiny-rxrx3"
TAG = "v0.1.0"


@pytest.fixture(scope="session")
def published(tmp_path_factory) -> dict:
    if not CORE_PYTHON.exists():
        pytest.skip(f"the core environment {CORE_PYTHON} is missing (make install)")
    base = tmp_path_factory.mktemp("polaris-release")
    env = {**os.environ, "RXCURATE_PROGRESS": "0"}
    out = subprocess.run([str(CORE_PYTHON), str(Path(__file__).with_name("build_published.py")), str(base)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return {**doc, "release": Path(doc["release"]), "hub": Path(doc["hub"])}


@pytest.fixture(scope="session")
def olah(published, tmp_path_factory):
    """olah (offline mirror mode, from the core environment) serving the published hub; yields its endpoint."""
    exe = CORE_PYTHON.with_name("olah-cli")
    if not exe.exists():
        pytest.skip("olah is not installed in the core environment (dev extra)")
    with serve(exe, published["hub"], tmp_path_factory.mktemp("olah"), REPO_ID) as endpoint:
        yield endpoint
