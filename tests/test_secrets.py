"""No secrets and no machine paths leak: tokens set in the environment never reach a file, a git object or the
console; published files carry no absolute path of the machine that built them."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rxcurate.cli import app

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "manifests" / "tiny-rxrx3.yaml"
TOKENS = {
    "HF_TOKEN": "hf_FAKEtok3nSECRETqz91xv",
    "HUGGING_FACE_HUB_TOKEN": "hf_FAKEhubSECRET0077kw",
    "POLARIS_TOKEN": "pol_FAKEsecretXYZ123mn",
}
REPO_ID = "test/secrets"
pytestmark = pytest.mark.slow  # one tiny release end to end plus five more commands (~30 s on 2 idle cores)


def _run(args: list[str]) -> str:
    """In-process CLI run; returns stdout+stderr and any exception text (domain errors included)."""
    result = CliRunner().invoke(app, args)
    return result.output + (f"\n{result.exception!r}" if result.exception else "")


def _run_process(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "rxcurate.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def _git_objects(repo: Path) -> bytes:
    """Every object of a (bare) git repository, decompressed: what a clone of the hub repo would contain."""
    return subprocess.run(["git", "-C", str(repo), "cat-file", "--batch-all-objects", "--batch"],
                          capture_output=True, check=True).stdout


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_rxrx3):
    """The tiny release built, published (local), re-carded, re-published, validated and pushed to unreachable
    hf:// and polaris:// targets, all with fake tokens in the environment; returns what they left behind."""
    base = tmp_path_factory.mktemp("secrets")
    raw = yaml.safe_load(TINY.read_text())
    raw.update(version="0.1.0", embeddings=[{"encoder": "baseline", "tile_size": 32}],
               benchmarks=["gene-gene-recall", "compound-gene-activity", "perturbation-signal"],
               card={"repo_id": REPO_ID, "pretty_name": "Secrets test", "prose": "A tiny release."})
    manifest = base / "m.yaml"
    manifest.write_text(yaml.safe_dump(raw, sort_keys=False))
    hub, work = base / "hub", base / "w"
    outputs: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RXCURATE_PROGRESS", "0")
        for k, v in TOKENS.items():
            mp.setenv(k, v)
        outputs.append(_run(["release", str(manifest), "--source", str(tiny_rxrx3), "--hub", str(hub),
                             "--workdir", str(work), "--workers", "1"]))
        outputs.append(_run(["card", str(manifest), "--workdir", str(work), "--hub", str(hub)]))
        outputs.append(_run(["publish", str(manifest), "--workdir", str(work), "--hub", str(hub)]))
        outputs.append(_run(["validate", f"local://{REPO_ID}@0.1.0", "--hub", str(hub), "--keep",
                             str(base / "checkout"), "--report", str(base / "report.json"), "--no-rerun"]))
        # Remote targets fail here (no network: the Hub endpoint is a closed local port); their errors must not
        # echo the token either. A subprocess, because huggingface_hub reads HF_ENDPOINT at import time.
        env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_DISABLE_TELEMETRY": "1"}
        for target in ("hf://test/secrets", "polaris://test/secrets"):
            code, out = _run_process(["publish", str(manifest), "--workdir", str(work), "--hub", str(hub),
                                      "--to", target], env, base)
            outputs.append(out)
            assert code != 0 or target.startswith("polaris"), out  # hf cannot have succeeded without a server
    assert "local://test/secrets" in outputs[0], outputs[0]
    repo = hub / "datasets" / REPO_ID
    tar = subprocess.run(["git", "-C", str(repo), "archive", "v0.1.0"], capture_output=True, check=True).stdout
    published = base / "published"
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(published, filter="data")
    return {"base": base, "source": tiny_rxrx3, "work": work, "hub": hub, "repo": repo, "outputs": outputs,
            "published": published}


def test_tokens_never_reach_files_git_objects_or_console(built):
    blobs = {f"workdir/{k}": v for k, v in _files(built["work"]).items()}
    blobs |= {f"hub/{k}": v for k, v in _files(built["hub"]).items()}
    blobs |= {f"base/{k}": v for k, v in _files(built["base"]).items() if not k.startswith(("w/", "hub/"))}
    blobs["git objects"] = _git_objects(built["repo"])
    blobs |= {f"output {i}": out.encode() for i, out in enumerate(built["outputs"])}
    assert len(blobs) > 20 and any(k.startswith("hub/") for k in blobs)
    for name, token in TOKENS.items():
        leaks = [k for k, data in blobs.items() if token.encode() in data]
        assert not leaks, f"{name} leaked into {leaks}"


PUBLISHED_TEXT = ("README.md", "release.json", "CHANGELOG.md", "metadata.csv", "metadata.parquet",
                  "compression_report.json", "checksums.json")


def _machine_paths(built) -> list[str]:
    paths = {str(built["base"]), str(built["source"]), str(built["source"].resolve()), str(REPO),
             str(Path.home())}
    return sorted(p for p in paths if len(p) > 5)  # never match a bare "/" or "/root"-like prefix of everything


def test_published_card_release_changelog_metadata_have_no_machine_paths(built):
    files = _files(built["published"])
    assert set(PUBLISHED_TEXT) <= set(files), sorted(files)
    checked = {k: v for k, v in files.items() if k in PUBLISHED_TEXT or k.startswith(("polaris/", "benchmarks/",
                                                                                        "embeddings/"))
               and not k.endswith(".parquet") or k == "metadata.parquet"}
    for p in _machine_paths(built):
        leaks = [k for k, data in checked.items() if p.encode() in data]
        assert not leaks, f"absolute path {p} appears in published {leaks}"


def test_published_lockfile_has_no_machine_paths(built):
    data = (built["published"] / "lockfile.parquet").read_bytes()
    for p in _machine_paths(built):
        assert p.encode() not in data, f"absolute path {p} appears in the published lockfile.parquet"


def test_unreachable_hub_is_a_clean_error(built):
    hf_output = built["outputs"][4]
    assert "Traceback" not in hf_output and "error: " in hf_output, hf_output[-500:]
