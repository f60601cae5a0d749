"""Every shell block of the docs runs: each fenced ```bash / ```sh / ```shell / ```console block of README.md and
docs/*.md is executed with ``bash -euo pipefail`` against a tiny release, unless the line right before its fence
says why it cannot run here:

    <!-- docs-test: skip (needs a Hugging Face token and the Hub) -->

(``<!-- docs-test: slow (REASON) -->`` runs the block as a test marked slow.) A block that fails, a marker without
a reason (or not followed by a shell fence) and a fence without a language (shell commands must not hide in an
untagged block) fail the test.

The working directory of each block is a fresh copy of a folder that holds what the docs assume a user has after
``make release`` (and, for docs/real-data.md, after laying out a download and writing a manifest):

- ``manifests/``: a copy of the repository's manifests;
- ``hub/``: a local hub with ``local://rxcurate/rxrx3-core@0.1.0``, the tiny release (tests/release_fixture.py)
  published under the repository id the docs use;
- ``my-embeddings.parquet``, ``my.parquet``: a submission (the release's baseline embeddings, rescaled);
- ``SRC``: the tiny synthetic RxRx3 screen; ``my.yaml``: the tiny manifest as a user's own (``card.repo_id``
  ``my-org/my-rxrx3-core``, the baseline encoder on 32-pixel tiles); ``annotations/``: the screen's truth tables
  (``CORUM.txt`` = its gene-gene relationships, ``compound_gene_interactions.csv``).

``PATH`` starts with this interpreter's bin folder (the ``rxcurate`` command), ``HOME`` and every cache are
private, ``HF_HUB_OFFLINE=1`` and no token or ``RXCURATE_HUB`` is set, so nothing is downloaded or uploaded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from release_fixture import copy_release, write_manifest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
DOCS_REPO_ID = "rxcurate/rxrx3-core"
USER_REPO_ID = "my-org/my-rxrx3-core"
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>skip|slow)\s*"
                    r"\((?P<reason>[^()]*(?:\([^()]*\)[^()]*)*)\)\s*-->\s*$")  # one level of (...) in the reason
BLOCK_TIMEOUT_S = 300


@dataclass(frozen=True)
class Block:
    file: str  # relative to the repository
    line: int  # of the opening fence
    lang: str
    body: str
    skip: str | None  # the reason of a skip marker
    slow: str | None = None  # the reason of a slow marker

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"

    def script(self) -> str:
        if self.lang != "console":
            return self.body
        out: list[str] = []  # console: the "$ " lines (and their "\" continuations) are the commands
        cont = False
        for line in self.body.splitlines():
            if cont or line.startswith("$ "):
                out.append(line[2:] if not cont else line)
                cont = line.rstrip().endswith("\\")
        return "\n".join(out) + "\n"


def parse(path: Path) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a Markdown file and the problems of its markers / fences."""
    rel = path.relative_to(REPO).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if "docs-test" in lines[i] and not MARKER.match(lines[i]):
            problems.append(f"{rel}:{i + 1}: malformed docs-test marker (write <!-- docs-test: skip (REASON) --> or "
                            f"<!-- docs-test: slow (REASON) -->): "
                            f"{lines[i].strip()}")
        elif MARKER.match(lines[i]):
            reason = MARKER.match(lines[i]).group("reason").strip()
            nxt = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
            if len(reason.split()) < 2:
                problems.append(f"{rel}:{i + 1}: a docs-test marker must say why (the block cannot run here / is "
                                f"slow) in a few words, got {reason!r}")
            if nxt is None or nxt.group(3).lower() not in SHELL:
                problems.append(f"{rel}:{i + 1}: a docs-test marker must be the line right before a shell fence "
                                f"(```bash/sh/shell/console)")
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        start = i
        if not lang:
            problems.append(f"{rel}:{i + 1}: a fence without a language: tag it (```bash for commands, ```text for "
                            f"listings and layouts)")
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence[0] * len(fence)):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        if lang in SHELL:
            prev = MARKER.match(lines[start - 1]) if start > 0 else None
            kind, reason = (prev.group("kind"), prev.group("reason").strip()) if prev else (None, None)
            blocks.append(Block(rel, start + 1, lang, "\n".join(body) + "\n", reason if kind == "skip" else None,
                                reason if kind == "slow" else None))
    return blocks, problems


PARSED = [parse(p) for p in DOCS]
BLOCKS = [b for blocks, _ in PARSED for b in blocks]


def test_markers_and_fences_are_well_formed():
    problems = [p for _, probs in PARSED for p in probs]
    assert not problems, "\n".join(problems)


def test_the_docs_have_runnable_shell_blocks():
    runnable = [b.id for b in BLOCKS if b.skip is None]
    assert len(runnable) >= 5, runnable  # the extraction finds the blocks (a parser bug would skip everything)


def test_the_parser_reads_markers_fences_and_console_prompts(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    doc = tmp_path / "x.md"
    doc.write_text("<!-- docs-test: skip (needs a token (HF)) -->\n```bash\nrxcurate push\n```\n\n"
                   "```console\n$ rxcurate a \\\n  --b\noutput\n$ rxcurate c\n```\n"
                   "<!-- docs-test: skip () -->\n```sh\nx\n```\n<!-- docs-test: skip (why not) -->\n\n```bash\ny\n```\n"
                   "```\nuntagged\n```\n<!-- docs-test: skipp -->\n"
                   "<!-- docs-test: slow (a whole build) -->\n```shell\nz\n```\n")
    blocks, problems = parse(doc)
    assert [(b.line, b.lang, b.skip, b.slow) for b in blocks] == [
        (2, "bash", "needs a token (HF)", None), (6, "console", None, None), (13, "sh", "", None),
        (18, "bash", None, None), (26, "shell", None, "a whole build")]
    assert blocks[1].script() == "rxcurate a \\\n  --b\nrxcurate c\n"
    assert len(problems) == 4, problems  # empty reason, marker before a blank line, untagged fence, malformed


@pytest.fixture(scope="module")
def template(built, tiny_rxrx3, tmp_path_factory) -> Path:
    """The folder each block starts from (copied per block); see the module docstring."""
    from rxcurate.assemble import assemble
    from rxcurate.manifest import load_manifest
    from rxcurate.publish import publish

    base = tmp_path_factory.mktemp("docs-shell")
    root = base / "root"
    root.mkdir()
    shutil.copytree(REPO / "manifests", root / "manifests")
    folder = copy_release(built[1], base / "release")
    assemble(load_manifest(write_manifest(base / "rxrx3-core.yaml", repo_id=DOCS_REPO_ID)), folder)
    publish(folder, "local", hub=root / "hub")
    emb = pd.read_parquet(folder / "embeddings" / "baseline" / "embeddings.parquet")
    features = [c for c in emb.columns if c != "well_id"]
    emb[features] = emb[features] * 2.0
    emb.to_parquet(root / "my-embeddings.parquet", index=False)
    emb.to_parquet(root / "my.parquet", index=False)
    (root / "SRC").symlink_to(tiny_rxrx3, target_is_directory=True)
    mine = write_manifest(root / "my.yaml", repo_id=USER_REPO_ID, prose="My own release.")
    raw = yaml.safe_load(mine.read_text())
    raw["embeddings"] = [{"encoder": "baseline", "tile_size": 32}]  # the tiny screen's 64x64 crops
    mine.write_text(yaml.safe_dump(raw, sort_keys=False))
    (root / "annotations").mkdir()
    shutil.copyfile(tiny_rxrx3 / "truth" / "relationships.csv", root / "annotations" / "CORUM.txt")
    shutil.copyfile(tiny_rxrx3 / "truth" / "compound_gene_interactions.csv",
                    root / "annotations" / "compound_gene_interactions.csv")
    return root


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"RXCURATE_HUB", "RXCURATE_CACHE", "HF_TOKEN", "HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE"}
           and not k.startswith(("POLARIS_", "PYTEST_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", HOME=str(home),
               HF_HOME=str(home / "hf"), HF_HUB_OFFLINE="1", RXCURATE_PROGRESS="0", NO_COLOR="1")
    return env


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id, marks=[pytest.mark.slow] if b.slow else [])
                                   for b in BLOCKS])
def test_shell_block_runs(block: Block, template, tmp_path):
    if block.skip is not None:
        pytest.skip(f"{block.id}: {block.skip or '(no reason given: see test_markers_and_fences_are_well_formed)'}")
    cwd = tmp_path / "cwd"
    shutil.copytree(template, cwd, symlinks=True)
    (tmp_path / "home").mkdir()
    script = tmp_path / "block.sh"
    script.write_text(block.script(), encoding="utf-8")
    try:
        proc = subprocess.run(["bash", "-euo", "pipefail", str(script)], cwd=cwd, env=_env(tmp_path / "home"),
                              capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id}: the block ran over {BLOCK_TIMEOUT_S} s; mark it "
                    f"<!-- docs-test: skip (REASON) --> if it cannot be quick here")
    assert proc.returncode == 0, (
        f"{block.id}: exit {proc.returncode}\n--- block\n{block.body}--- stdout\n{proc.stdout[-4000:]}\n"
        f"--- stderr\n{proc.stderr[-4000:]}\n(fix the docs, or mark the block <!-- docs-test: skip (REASON) --> on the "
        f"line before its fence)")
