"""Manifests: schema validation with field paths and examples, normalisation, hashes, path containment."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rxcurate.cli import app
from rxcurate.errors import ManifestError
from rxcurate.manifest import load_manifest, parse_manifest
from rxcurate.schemas import load_schema

REPO = Path(__file__).resolve().parents[1]
SHIPPED = [REPO / "manifests" / "rxrx3-core.yaml", REPO / "manifests" / "rxrx1-core.yaml",
           *sorted((REPO / "tests" / "data" / "manifests").glob("*.yaml"))]

BASE = {
    "name": "t",
    "version": "1.0.0",
    "layout": "rxrx3",
    "select": {"sql": "SELECT well_id FROM wells"},
}


def _err(doc, path="m.yaml") -> str:
    with pytest.raises(ManifestError) as exc:
        parse_manifest(doc, path)
    return str(exc.value)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_manifests_are_valid(path):
    m = load_manifest(path)
    assert m.name == path.stem or path.parent.name == "manifests"
    assert m.transform.codec.name == "jpeg2000"
    assert len(m.manifest_hash()) == 64


def test_schema_is_valid_draft_2020_12():
    schema = load_schema("manifest")
    assert schema["additionalProperties"] is False
    # later stages have declared, optional sections
    for key in ("embeddings", "benchmarks", "card", "output", "tables"):
        assert key in schema["properties"] and key not in schema["required"]


def test_unknown_top_level_key_names_it_and_the_allowed_keys():
    msg = _err({**BASE, "selct": {}})
    assert "unknown key 'selct'" in msg and "allowed keys" in msg and "select" in msg


def test_unknown_nested_key_names_its_path():
    msg = _err({**BASE, "transform": {"codec": {"name": "jpeg2000", "ratio": 20}}})
    assert msg.startswith("m.yaml: transform.codec: unknown key 'ratio'") and "rate" in msg


def test_wrong_type_names_field_path_and_example():
    doc = copy.deepcopy(BASE)
    doc["select"]["sample"] = [{"name": "c", "where": "true", "n": "three"}]
    msg = _err(doc)
    assert "select.sample[0].n" in msg and "not of type" in msg and "e.g. 8" in msg


def test_bad_enum_and_pattern_values():
    msg = _err({**BASE, "layout": "rxrx2"})
    assert "layout" in msg and '"rxrx3"' in msg
    msg = _err({**BASE, "version": "1.0"})
    assert "version" in msg and "e.g. \"1.0.0\"" in msg
    msg = _err({**BASE, "transform": {"convert": {"method": "gamma"}}})
    assert "transform.convert.method" in msg and "percentile" in msg


def test_missing_required_field_is_named_with_example():
    msg = _err({**BASE, "select": {}})
    assert "select.sql: required field is missing" in msg and "SELECT well_id FROM wells" in msg
    msg = _err({k: v for k, v in BASE.items() if k != "layout"})
    assert "layout: required field is missing" in msg


@pytest.mark.parametrize("transform, fragment", [
    ({"codec": {"rate": 20, "psnr": 40}}, "choose one of rate, psnr"),
    ({"codec": {"name": "jpeg2000", "qstep": 0.1}}, "qstep applies to htj2k only"),
    ({"codec": {"name": "htj2k", "rate": 20}}, "rate applies to jpeg2000 only"),
    ({"convert": {"method": "window", "low": [0, 0], "high": 1000}}, "one number or 6 numbers"),
    ({"convert": {"method": "window", "low": 10, "high": 5}}, "needs low < high"),
    ({"convert": {"method": "window"}}, "window needs low and high"),
    ({"convert": {"method": "percentile", "low": 99, "high": 1}}, "0 <= low < high <= 100"),
    ({"convert": {"method": "none", "low": 1}}, "does not apply to method 'none'"),
    ({"sites": [2]}, "transform.sites"),
    ({"crop": {"origin": "top"}}, "transform.crop.origin"),
])
def test_semantic_transform_errors(transform, fragment):
    assert fragment in _err({**BASE, "transform": transform})


def test_reserved_table_names_and_duplicate_samplers():
    assert "reserved" in _err({**BASE, "tables": {"wells": {"path": "w.csv"}}})
    doc = copy.deepcopy(BASE)
    doc["select"]["sample"] = [{"name": "a", "where": "true", "n": 1}] * 2
    assert "used twice" in _err(doc)


def test_yaml_problems_are_manifest_errors(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("name: a\nname: b\n")
    with pytest.raises(ManifestError, match="line 2.*duplicated key 'name'"):
        load_manifest(p)
    p.write_text("name: [unclosed\n")
    with pytest.raises(ManifestError, match="invalid YAML at line"):
        load_manifest(p)
    p.write_text("- a list\n")
    with pytest.raises(ManifestError, match="YAML mapping"):
        load_manifest(p)
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "absent.yaml")


def test_defaults_are_applied_and_hash_the_same_when_spelled_out():
    short = parse_manifest(BASE)
    spelled = parse_manifest({
        **BASE,
        "source": {"metadata": "metadata.csv"},
        "transform": {
            "crop": {"size": [512, 512], "origin": "center"},
            "convert": {"method": "percentile", "low": 0.1, "high": 99.9},
            "codec": {"name": "jpeg2000", "rate": 20.0, "resolutions": 6},
            "sites": [1], "channels": [6, 5, 4, 3, 2, 1], "on_error": "error",
            "report": {"sample_images": 64, "seed": 0},
        },
        "output": {"shard_bytes": 500_000_000},
        "description": "prose only",
        "card": {"pretty_name": "x"},
    })
    assert short.manifest_hash() == spelled.manifest_hash()
    assert short.transform.codec.mode == "rate" and short.transform.codec.value == 20.0
    assert short.shard_bytes == 500_000_000 and short.transform.channels == (1, 2, 3, 4, 5, 6)


def test_hash_sections_change_independently():
    base = parse_manifest(BASE)
    other_codec = parse_manifest({**BASE, "transform": {"codec": {"rate": 30}}})
    assert other_codec.selection_hash() == base.selection_hash()
    assert other_codec.transform_hash() != base.transform_hash()
    assert other_codec.manifest_hash() != base.manifest_hash()
    other_sql = parse_manifest({**BASE, "select": {"sql": "SELECT well_id FROM wells WHERE plate = 1"}})
    assert other_sql.selection_hash() != base.selection_hash()
    assert other_sql.transform_hash() == base.transform_hash()
    fewer_channels = parse_manifest({**BASE, "transform": {"channels": [1, 2]}})
    assert fewer_channels.selection_hash() != base.selection_hash()  # the lockfile lists other images
    cosmetic = parse_manifest({**BASE, "version": "2.0.0", "card": {"prose": "new words"}})
    assert cosmetic.manifest_hash() == base.manifest_hash()


def test_table_paths_must_stay_inside_their_base(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "outside.csv").write_text("gene\nA\n")
    (tmp_path / "m" / "inside.csv").write_text("gene\nA\n")
    (tmp_path / "m" / "link.csv").symlink_to(tmp_path / "outside.csv")
    for path, ok in (("inside.csv", True), ("../outside.csv", False), ("link.csv", False)):
        m = parse_manifest({**BASE, "tables": {"genes": {"path": path}}}, tmp_path / "m" / "m.yaml")
        if ok:
            assert m.resolve_table(m.tables[0], tmp_path) == (tmp_path / "m" / "inside.csv").resolve()
        else:
            with pytest.raises(ManifestError, match="leaves its base folder"):
                m.resolve_table(m.tables[0], tmp_path)
    msg = _err({**BASE, "tables": {"genes": {"path": "/etc/passwd.csv"}}})
    assert "tables.genes.path" in msg
    m = parse_manifest({**BASE, "tables": {"genes": {"path": "nope.csv", "base": "source"}}}, tmp_path / "m.yaml")
    with pytest.raises(ManifestError, match="not found"):
        m.resolve_table(m.tables[0], tmp_path)


def test_source_and_workdir_resolution(tmp_path, monkeypatch):
    m = parse_manifest(BASE, tmp_path / "m.yaml")
    with pytest.raises(ManifestError, match="--source"):
        m.resolve_source()
    assert m.resolve_source(tmp_path / "s") == tmp_path / "s"
    m = parse_manifest({**BASE, "source": {"root": "../src"}}, tmp_path / "sub" / "m.yaml")
    assert m.resolve_source() == tmp_path.resolve() / "sub" / ".." / "src"
    assert m.resolve_workdir() == Path("build") / "t"
    assert m.resolve_workdir(tmp_path / "w") == tmp_path / "w"
    m = parse_manifest({**BASE, "output": {"workdir": "out/x"}})
    assert m.resolve_workdir() == Path("out/x")


def test_cli_reports_a_bad_manifest_in_one_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({**BASE, "transform": {"codec": {"rate": "fast"}}}))
    for cmd in ("select", "compress"):
        result = CliRunner().invoke(app, [cmd, str(p), "--workdir", str(tmp_path / "w")])
        assert result.exit_code != 0
        assert isinstance(result.exception, ManifestError)
        assert "transform.codec.rate" in str(result.exception)
    assert not (tmp_path / "w").exists()


def test_cli_main_exits_2_without_traceback(tmp_path, capsys):
    from rxcurate.cli import main

    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({**BASE, "extra": 1}))
    with pytest.raises(SystemExit) as exc:
        main(["select", str(p)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "unknown key 'extra'" in err
    assert os.fspath(p) in err
