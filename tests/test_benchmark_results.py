"""The committed scale benchmark results are complete and within their goals, and README's "Performance" section
quotes them exactly (rendered from benchmarks/results/scale.json by benchmarks/scale.py), so the two cannot drift."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCALE_JSON = REPO / "benchmarks" / "results" / "scale.json"
README = REPO / "README.md"


@pytest.fixture(scope="module")
def scale() -> dict:
    return json.loads(SCALE_JSON.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("bench_scale", REPO / "benchmarks" / "scale.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_scale_json_has_the_required_keys(scale):
    for key in ("sizes", "parts", "exponents", "peak_rss_full_size_bytes", "rxrx3_core", "machine", "versions",
                "ran", "rxrx3_core_size"):
        assert key in scale, key
    assert scale["rxrx3_core_size"] == {"wells": 222_601, "images": 1_335_606}
    assert {"load_average_start", "load_average_end", "busy", "cpu_count"} <= set(scale["machine"])
    fractions = {p["fraction"] for p in scale["parts"] if p["part"] == "metadata"}
    assert "full" in fractions and "1/64" in fractions
    assert "1/64" in {p["fraction"] for p in scale["parts"] if p["part"] == "images"}
    for part in scale["parts"]:
        for row in part["stages"]:
            assert {"seconds", "cpu_seconds", "peak_rss_bytes", "load_before", "load_after", "busy",
                    "work_seconds", "work_cpu_seconds"} <= set(row), (part["fraction"], row["stage"])
            assert row["busy"] == (row["load_before"][0] >= scale["machine"]["busy_load"])
    x = scale["rxrx3_core"]
    assert {"2", "16", "64"} <= set(x["on_cores"])
    assert {"nodes", "cores_per_node", "total_hours"} <= set(x["ray_cluster"])
    assert x["assumes"]


def test_every_release_stage_ran_and_grows_at_most_linearly(scale):
    exps = scale["exponents"]
    for stage in ("selection", "select", "compress", "embed", "assemble", "evaluate"):
        assert stage in exps, stage
    for stage, e in exps.items():
        if not e["release_stage"]:
            continue
        assert len(set(e["wells"])) >= 2, stage
        assert e["cpu_exponent"] is not None and e["cpu_exponent"] <= scale["exponent_goal"] <= 1.1, (stage, e)


def test_peak_memory_at_full_size_is_under_8_gb(scale):
    peak = scale["peak_rss_full_size_bytes"]
    assert {"selection", "evaluate"} <= set(peak)
    for stage, n in peak.items():
        assert 0 < n < 8 * 10**9, stage
    full = next(p for p in scale["parts"] if p["fraction"] == "full")
    assert full["wells"] > 200_000 and full["embedding_wells"] > 200_000
    fit = scale["peak_rss_image_stages_at_full_size"]  # the image stages ran below full size: their linear fit
    assert {"select", "compress", "embed", "assemble"} <= set(fit)
    for stage, f in fit.items():
        assert f["at_rxrx3_core_bytes"] < 8 * 10**9, stage


def test_readme_performance_section_equals_the_results(scale, script):
    section = script.readme_section(README.read_text(encoding="utf-8"))
    assert section, "README.md has no '## Performance' section: run benchmarks/scale.py --readme-from scale.json"
    assert section == script.performance_markdown(scale)


def test_readme_performance_numbers_come_from_scale_json(scale, script):
    """Independent of the renderer: the headline numbers appear verbatim, and a changed figure changes the text."""
    section = script.readme_section(README.read_text(encoding="utf-8"))
    x = scale["rxrx3_core"]
    for value in (x["core_hours"]["compress"], x["core_hours"]["embed"], x["ray_cluster"]["total_hours"],
                  *(v["total_hours"] for v in x["on_cores"].values()), x["compress_speedup_2_workers"]):
        assert re.search(rf"(?<![\d.]){re.escape(str(value))}(?![\d])", section), value
    for stage, e in scale["exponents"].items():
        if e["release_stage"]:
            assert f"| {e['cpu_exponent']} | {e['wall_exponent']} |" in section, stage
    changed = json.loads(json.dumps(scale))
    changed["rxrx3_core"]["core_hours"]["compress"] = x["core_hours"]["compress"] + 1000
    assert script.performance_markdown(changed) != section
