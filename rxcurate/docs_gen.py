"""Generate reference docs: the CLI reference from ``--help`` and the manifest reference from its JSON schema.

``python -m rxcurate.docs_gen`` rewrites ``docs/cli.md`` and ``docs/manifest.md``; a test fails when they are stale.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from rxcurate.cli import app
from rxcurate.io import atomic_write_text

DOCS = Path(__file__).resolve().parents[1] / "docs"
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
WIDTH = "100"


def _help(args: list[str]) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        result = CliRunner().invoke(app, [*args, "--help"], prog_name="rxcurate")
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    if result.exit_code != 0:
        raise RuntimeError(f"rxcurate {' '.join(args)} --help failed: {result.output}")
    return result.output.rstrip() + "\n"


def cli_reference() -> str:
    group = typer.main.get_command(app)
    names = list(group.commands)  # type: ignore[attr-defined]
    parts = [
        "# CLI reference\n",
        "Generated from `--help` by `python -m rxcurate.docs_gen`; do not edit by hand.\n",
        "```text\n" + _help([]) + "```\n",
    ]
    for name in names:
        parts.append(f"## rxcurate {name}\n")
        parts.append("```text\n" + _help([name]) + "```\n")
    return "\n".join(parts)


def _schema_rows(schema: dict[str, Any], prefix: str = "", required: tuple[str, ...] = ()) -> list[str]:
    rows: list[str] = []
    props = schema.get("properties", {})
    req = set(schema.get("required", []))
    for key, sub in props.items():
        path = f"{prefix}.{key}" if prefix else key
        typ = sub.get("type", "")
        if isinstance(typ, list):
            typ = " or ".join(typ)
        if "enum" in sub:
            typ = " \\| ".join(json.dumps(v) for v in sub["enum"])
        default = json.dumps(sub["default"]) if "default" in sub else ""
        desc = " ".join(str(sub.get("description", "")).split())
        rows.append(f"| `{path}` | {typ} | {'yes' if key in req else ''} | {default} | {desc} |")
        if sub.get("type") == "object" or "properties" in sub:
            rows.extend(_schema_rows(sub, path))
        items = sub.get("items")
        if isinstance(items, dict) and ("properties" in items):
            rows.extend(_schema_rows(items, path + "[]"))
    return rows


def manifest_reference() -> str:
    path = SCHEMAS / "manifest.schema.json"
    if not path.is_file():
        return "# Manifest reference\n\n(schemas/manifest.schema.json is missing)\n"
    schema = json.loads(path.read_text())
    lines = [
        "# Manifest reference\n",
        "Generated from `schemas/manifest.schema.json` by `python -m rxcurate.docs_gen`; do not edit by hand.\n",
        " ".join(str(schema.get("description", "")).split()) + "\n",
        "| field | type | required | default | description |",
        "|---|---|---|---|---|",
        *_schema_rows(schema),
        "",
    ]
    return "\n".join(lines)


def write_all() -> list[Path]:
    out = {DOCS / "cli.md": cli_reference(), DOCS / "manifest.md": manifest_reference()}
    for path, text in out.items():
        atomic_write_text(path, text)
    return list(out)


if __name__ == "__main__":  # pragma: no cover
    for p in write_all():
        print(p)
