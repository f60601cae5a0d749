"""Shared fixtures: tiny synthetic screens (generated once per session) and the optional ../shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Progress lines go to stderr, which CLI test runners mix into their output: off in tests unless a test enables it.
os.environ.setdefault("RXCURATE_PROGRESS", "0")
# Hub reads go through the Hugging Face cache: keep the suite's downloads out of the user's ~/.cache/huggingface.
if "HF_HUB_CACHE" not in os.environ:
    import tempfile

    os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="rxcurate-tests-hf-cache-")
    os.environ.setdefault("HF_DATASETS_CACHE", os.environ["HF_HUB_CACHE"] + "-datasets")

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
    import sys

    from olah_server import serve
    from release_fixture import REPO_ID

    exe = Path(sys.executable).with_name("olah-cli")
    if not exe.exists() and shutil.which("olah-cli") is None:
        pytest.skip("olah is not installed (pip install olah; it is in the dev extra)")
    exe = exe if exe.exists() else Path(shutil.which("olah-cli"))
    with serve(exe, hub, tmp_path_factory.mktemp("olah"), REPO_ID) as endpoint:
        yield endpoint
