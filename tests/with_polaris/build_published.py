"""Run by the CORE environment (.venv, no polaris-lib): build the tiny release with the real stages, publish it to a
local hub and print {"release": ..., "hub": ...} as JSON. tests/with_polaris/ uses it so the artifacts polaris-lib reads
are the ones the core writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from release_fixture import build_release  # noqa: E402

from rxcurate.publish import publish  # noqa: E402
from rxcurate.synth import generate  # noqa: E402


def main(base: Path) -> None:
    screen = generate(base / "screen", layout="rxrx3", preset="tiny", seed=0)
    _, folder = build_release(screen, base)
    hub = base / "hub"
    publish(folder, "local", hub=hub)
    loaded = sorted(m for m in sys.modules if m == "polaris" or m.startswith("polaris."))
    print(json.dumps({"release": str(folder), "hub": str(hub), "polaris_modules": loaded}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
