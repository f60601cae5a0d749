"""The floor plan: the package layout is the pipeline (docs/concepts.md, "Where code belongs").

Walks every module's imports (top-level and function-local) with :mod:`ast` and checks: no import cycle; each
module imports only modules of lower layers (stages never import each other); nothing outside the CLI imports
``rxcurate.commands``; function-local imports only for optional heavy dependencies, each with its reason; no
private names imported across modules; release-folder file names spelled in ``rxcurate/layout.py`` only.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "rxcurate"

# Layer of each module (a package prefix covers its submodules). A module may import its own package's modules
# (same prefix entry) and anything of a strictly lower layer.
LAYERS: dict[str, int] = {
    "rxcurate": 0,  # the package __init__: version + lazy `load`
    "rxcurate.errors": 0,
    "rxcurate.io": 0,
    "rxcurate.progress": 0,
    "rxcurate.source": 1,
    "rxcurate.schemas": 1,
    "rxcurate.layout": 2,
    "rxcurate.manifest": 3,
    "rxcurate.transform": 4,
    "rxcurate.shards": 4,
    "rxcurate.runners": 4,
    "rxcurate.checkpoint": 4,
    "rxcurate.encoders": 4,
    "rxcurate.benchmarks": 4,
    "rxcurate.synth": 4,
    "rxcurate.publish.targets": 4,
    "rxcurate.publish.hub": 6,  # the Hub interface + factory over both implementations
    "rxcurate.publish.local": 5,
    "rxcurate.publish.hf": 5,
    "rxcurate.release_inputs": 7,
    # stages: siblings on one layer, none imports another
    "rxcurate.select": 10,
    "rxcurate.curate": 10,
    "rxcurate.compress": 10,
    "rxcurate.embed": 10,
    "rxcurate.blockprobe": 10,
    "rxcurate.card": 10,
    "rxcurate.publish.polaris": 10,
    "rxcurate.assemble": 11,
    "rxcurate.validate": 12,
    "rxcurate.publish": 13,  # the publish stage (package __init__)
    "rxcurate.consume": 14,
    "rxcurate.pipeline": 15,
    "rxcurate.commands": 20,
    "rxcurate.cli": 20,
    "rxcurate.docs_gen": 21,
}
STAGES = {m for m, layer in LAYERS.items() if layer == 10}
# Optional or slow-to-import dependencies that may be imported where used (each with a `# reason` comment).
HEAVY = {"torch", "ray", "polaris", "timm", "matplotlib", "torchvision", "datasets", "safetensors"}
# The package root stays import-light: `rxcurate.load` is resolved on first use (PEP 562 __getattr__).
LAZY_ROOT = {("rxcurate", "rxcurate.consume.pull")}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _owner(mod: str) -> str:
    """The LAYERS entry a module belongs to (longest matching prefix)."""
    best = ""
    for key in LAYERS:
        if key == "rxcurate" and mod != key:
            continue  # the root entry is the package __init__ alone
        if (mod == key or mod.startswith(key + ".")) and len(key) > len(best):
            best = key
    return best


def _target(mod: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = mod.split(".")
        if not str(MODULES[mod]).endswith("__init__.py"):
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        name = ".".join(base + ([node.module] if node.module else []))
    else:
        name = node.module or ""
    out = [name]
    out += [f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in MODULES]
    return out


def _imports() -> list[tuple[str, str, bool, int, ast.AST]]:
    """(module, imported rxcurate module or top-level package, function-local?, line, node)."""
    found = []
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(n) for n in tree.body}
        # imports under `if TYPE_CHECKING:` at module level count as top-level
        for n in tree.body:
            if isinstance(n, ast.If):
                top.update(id(c) for c in n.body)
            if isinstance(n, ast.Try):
                top.update(id(c) for c in n.body)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for t in _target(mod, node):
                    if t.startswith("rxcurate"):
                        while t not in MODULES and "." in t:
                            t = t.rsplit(".", 1)[0]
                    found.append((mod, t, id(node) not in top, node.lineno, node))
    return found


IMPORTS = _imports()


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if not _owner(m))
    assert not missing, f"assign a layer in tests/test_architecture.py LAYERS (and docs/concepts.md): {missing}"


def test_no_import_cycle():
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, t, _local, _line, _node in IMPORTS:
        if t in MODULES and t != mod:
            graph[mod].add(t)
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(MODULES):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_modules_import_only_lower_layers():
    bad = []
    for mod, t, _local, line, _node in IMPORTS:
        if t not in MODULES or t == mod:
            continue
        a, b = _owner(mod), _owner(t)
        if a == b or mod.startswith(t + ".") and t == b:
            continue  # inside one package / a module importing its package's __init__
        if t == "rxcurate" or (mod, t) in LAZY_ROOT:
            continue  # the package root (version, lazy load) is base
        if LAYERS[b] >= LAYERS[a]:
            bad.append(f"{MODULES[mod].relative_to(PKG.parent)}:{line} {mod} (layer {LAYERS[a]}) imports {t} "
                       f"(layer {LAYERS[b]})")
    assert not bad, "imports against the layering (move code down a layer):\n" + "\n".join(bad)


def test_stages_never_import_each_other_and_nothing_below_the_cli_imports_it():
    bad = []
    for mod, t, _local, line, _node in IMPORTS:
        a, b = _owner(mod), _owner(t)
        if a in STAGES and b in STAGES and a != b:
            bad.append(f"stage {mod} imports stage {t} (line {line})")
        if t.startswith(("rxcurate.commands", "rxcurate.cli")) and not mod.startswith(
                ("rxcurate.commands", "rxcurate.cli", "rxcurate.docs_gen")):
            bad.append(f"{mod} imports the CLI ({t}, line {line})")
    assert not bad, "\n".join(bad)


def test_select_imports_no_later_stage():
    later = {"rxcurate.curate", "rxcurate.compress", "rxcurate.embed", "rxcurate.card", "rxcurate.assemble",
             "rxcurate.validate", "rxcurate.publish", "rxcurate.pipeline", "rxcurate.blockprobe"}
    got = sorted({t for mod, t, *_ in IMPORTS if mod == "rxcurate.select" and _owner(t) in later})
    assert not got, f"rxcurate.select imports {got}"


def test_function_local_imports_only_for_heavy_optional_dependencies_with_a_reason():
    bad = []
    for mod, t, local, line, _node in IMPORTS:
        if not local:
            continue
        path = MODULES[mod]
        text = path.read_text(encoding="utf-8").splitlines()[line - 1]
        root = t.split(".")[0]
        ok = root in HEAVY or (t in MODULES and _heavy_module(t)) or (mod, t) in LAZY_ROOT
        if not ok or "#" not in text:
            bad.append(f"{path.relative_to(PKG.parent)}:{line}: {text.strip()}")
    assert not bad, ("function-local imports must be of an optional heavy dependency (torch, ray, polaris, timm, "
                     "matplotlib, datasets or a module that loads one) and carry a `# reason` comment:\n"
                     + "\n".join(bad))


def _heavy_module(mod: str) -> bool:
    """An rxcurate module that imports a heavy dependency at its top level (so importing it lazily is a reason)."""
    seen: set[str] = set()
    todo = [mod]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for src, t, local, _line, _node in IMPORTS:
            if src != m or local:
                continue
            if t.split(".")[0] in HEAVY:
                return True
            if t in MODULES:
                todo.append(t)
    return False


def test_no_private_names_imported_across_modules():
    bad = []
    for mod, _t, _local, line, node in IMPORTS:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rxcurate"):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    bad.append(f"{mod}:{line} imports {node.module}.{a.name}")
    assert not bad, "make these public or move them:\n" + "\n".join(bad)


# File and folder names of a release folder (rxcurate/layout.py): as a whole string literal anywhere else they are a
# second spelling. (Prose in docstrings and messages may mention them; only exact literals count.)
RELEASE_NAMES = {
    "release.json", "README.md", "CHANGELOG.md", "lockfile.parquet", "metadata.csv", "metadata.parquet",
    "compression_report.json", "checksums.json", "phenostats.parquet", "curation.json", "curation_comparison.json",
    "embeddings.parquet", "tiles.parquet", "info.json", "benchmarks/definitions", "benchmarks/results",
    "benchmarks/truth", "probe.parquet", "probe.json", "probe.png", ".source.json", ".compress-state",
    ".embed-state", ".candidates", "train-*-of-*.parquet",
    "metadata_rxrx3_core.csv", "OpenPhenom_rxrx3_core_embeddings.parquet",
}


# A source screen's own layout (rxcurate.source) also has a metadata.csv: the same name, another folder.
SOURCE_NAMES = {"rxcurate.source": {"metadata.csv"}}


def test_release_folder_names_are_spelled_in_layout_only():
    bad = []
    for mod, path in MODULES.items():
        if mod in ("rxcurate.layout",):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if node.value in RELEASE_NAMES and node.value not in SOURCE_NAMES.get(mod, set()):
                    bad.append(f"{path.relative_to(PKG.parent)}:{node.lineno} {node.value!r}")
    assert not bad, "use the rxcurate.layout constant instead:\n" + "\n".join(bad)
