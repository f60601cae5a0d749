"""Generated reference docs must match the code (regenerate with `python -m rxcurate.docs_gen`)."""

from __future__ import annotations

from rxcurate.docs_gen import DOCS, cli_reference, manifest_reference


def test_cli_reference_is_current():
    assert (DOCS / "cli.md").read_text() == cli_reference(), "docs/cli.md is stale: run python -m rxcurate.docs_gen"


def test_manifest_reference_is_current():
    assert (DOCS / "manifest.md").read_text() == manifest_reference(), (
        "docs/manifest.md is stale: run python -m rxcurate.docs_gen"
    )
