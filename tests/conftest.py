"""Shared fixtures: tiny synthetic screens (generated once per session) and the optional ../shared data."""

from __future__ import annotations

from pathlib import Path

import pytest

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
