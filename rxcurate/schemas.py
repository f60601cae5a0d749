"""JSON schemas shipped in ``schemas/``: locate them and validate instances with field-path error messages.

``validate(instance, "manifest", ManifestError, "manifests/x.yaml")`` raises ``ManifestError`` whose message names
the failing field as a path (``select.sample[0].n``), what is wrong, and a valid example taken from the schema.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"


def schema_path(name: str) -> Path:
    """Path of ``schemas/<name>.schema.json`` (``name`` without the suffix, e.g. ``"manifest"``)."""
    return SCHEMA_DIR / f"{name}.schema.json"


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    path = schema_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"schema {path} is missing (a broken installation: reinstall rxcurate)")
    with open(path, encoding="utf-8") as f:
        return dict(json.load(f))  # the packaged schemas are checked against the metaschema by tests/test_schemas


def format_path(parts: Any) -> str:
    """``["select", "sample", 0, "n"]`` -> ``select.sample[0].n`` (``<top level>`` for the root)."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "<top level>"


def _example(schema: dict[str, Any]) -> Any:
    if "examples" in schema and schema["examples"]:
        return schema["examples"][0]
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    return None


def _render(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def describe_error(err: ValidationError) -> str:
    """One line: ``<path>: <problem>; e.g. <example>``."""
    path = list(err.absolute_path)
    schema = err.schema if isinstance(err.schema, dict) else {}
    if err.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
        unknown = ", ".join(repr(k) for k in extra) or "a key"
        where = format_path(path)
        return f"{where}: unknown key {unknown}; allowed keys: {', '.join(allowed)}"
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else str(err.message)
        sub = schema.get("properties", {}).get(missing, {})
        ex = _example(sub)
        tail = f"; e.g. {missing}: {_render(ex)}" if ex is not None else ""
        return f"{format_path([*path, missing])}: required field is missing{tail}"
    ex = _example(schema)
    if ex is None and path:
        # the failing keyword may sit on a nested sub-schema (e.g. items); look for an example on the parent
        ex = _example(err.parent.schema) if err.parent is not None and isinstance(err.parent.schema, dict) else None
    msg = err.message
    if err.validator == "enum":
        msg = f"{_render(err.instance)} is not one of {', '.join(_render(v) for v in err.validator_value)}"
    elif err.validator == "type":
        msg = f"{_render(err.instance)} is not of type {err.validator_value}"
    elif err.validator == "pattern":
        msg = f"{_render(err.instance)} does not match {err.validator_value}"
    tail = f"; e.g. {_render(ex)}" if ex is not None else ""
    desc = schema.get("description")
    hint = f" ({' '.join(desc.split())})" if isinstance(desc, str) and len(desc) <= 120 else ""
    return f"{format_path(path)}: {msg}{hint}{tail}"


def schema_problem(instance: Any, schema_name: str, what: str) -> str | None:
    """The first problem of ``instance`` against ``schemas/<schema_name>.schema.json`` as one message naming ``what``
    (e.g. the manifest's file name), or None when it is valid. The caller raises its own stage's error with it.

    Errors are ordered by field path so the same invalid document always reports the same first problem.
    """
    validator = Draft202012Validator(load_schema(schema_name))
    errors = sorted(validator.iter_errors(instance), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if not errors:
        return None
    # Prefer the deepest error: it names the precise field (a wrong nested value rather than its parent's oneOf).
    first = max(errors, key=lambda e: len(e.absolute_path))
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{what}: {describe_error(first)}{more}"
