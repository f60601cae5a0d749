"""The packaged JSON schemas are valid Draft 2020-12 schemas (checked here once, not on every run)."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from rxcurate.schemas import SCHEMA_DIR, load_schema

NAMES = sorted(p.name.removesuffix(".schema.json") for p in SCHEMA_DIR.glob("*.schema.json"))


def test_there_are_schemas():
    assert {"manifest", "release"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_valid(name):
    Draft202012Validator.check_schema(load_schema(name))


def test_a_broken_schema_is_caught():
    with pytest.raises(SchemaError):
        Draft202012Validator.check_schema({"type": "not-a-type"})
