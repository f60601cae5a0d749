"""Kill test: SIGKILL `rxcurate compress`, `rxcurate embed` and `rxcurate publish` at many moments, rerun, compare.

On the tiny synthetic RxRx3 screen (``rxcurate synth --preset tiny``) and ``tests/data/manifests/tiny-rxrx3.yaml``:

1. a clean reference run: ``rxcurate select``, ``compress``, ``embed --encoder baseline`` into ``ref/``; a copy of
   it assembled with ``rxcurate card`` (``release/``) and published once to a fresh local hub (``hub-clean/``,
   ``--to local://rxcurate/killtest``), tracing the git subprocesses the publish runs (the kill targets below);
2. for each stage, rounds: start the command as a subprocess (its own session, so pool/DataLoader workers and git
   children die with it), SIGKILL the process group, then rerun the same command; each rerun is itself killed
   again with probability ``--rekill`` (at most ``--max-kills`` kills a round, at least one) until one completes;
3. compress/embed: compare the round's folder with the reference. Every published file (``rxcurate.layout.
   is_visible``) must be byte-identical and no row lost or duplicated (``__key__`` per shard and overall; embedding
   rows by ``well_id``); local, never-published files (``.source.json``, ``.select-state/``) do not count, but a
   completed run must leave no new hidden file behind (its ``.compress-state/`` / ``.embed-state/`` folder, temp
   files);
4. publish (a fresh hub each round): afterwards the hub must hold exactly one version whose tree (``git rev-parse
   v<version>^{tree}``) and ``main``'s equal the clean publish's tree, the tag's files byte-identical to the release
   folder's release files, ``git fsck`` clean, no leftover temp folder (``.<name>.XXXXXXXX``) or git lock file
   (``*.lock``) in the hub, ``rxcurate validate local://rxcurate/killtest@<version> --hub HUB`` exits 0 and one more
   publish reports ``unchanged``. Leftovers outside the hub (``rxcurate-index-*`` in the publish's ``TMPDIR``,
   unreferenced ``tmp_obj_*`` git objects) are counted, not failed.

compress/embed kills are aimed at the work: the script waits until the process holds its stage lock
(``/proc/<pid>/fd``: ``.compress-state/lock``, ``.embed-state/<encoder>/lock``), then kills after a delay uniform in
[0, the clean run's work time]; with probability ``--anywhere`` a kill lands anywhere in [0, the clean run's total
time]. publish kills go through a git shim put first on the publish's PATH (it logs every git subcommand and, at
the target step, SIGKILLs its own process group: the publish and its git). Round ``r``'s first kill takes target
``r`` of the list: ``validate`` (a moment before the hub is touched: the pre-publish validation), ``anywhere`` (any
moment of a clean publish), before the first git step, then during (after a delay uniform in [0, its traced
duration]) and after each git subprocess of the clean publish in order (``init``, ``config``, ``rev-parse``,
``read-tree``, ``update-index``, ``write-tree``, ``tag``, ``commit-tree``, ``mktag``, ``update-ref``), and
``update-ref`` between its transaction's ``prepare`` and ``commit`` (git holds the ref locks); rekills take a random
target (``--publish-targets`` restricts the first ones). Each kill records where it landed (phase,
what was checkpointed, the hub's state). Per stage the result holds kills, rows lost/duplicated, identical rounds,
load average before/after and CPU seconds of reaped children. Writes ``benchmarks/results/killtest.json``; exits 1
when any check fails or there were fewer than ``--min-kills`` kills in total.

    .venv/bin/python benchmarks/killtest.py [--rounds 8] [--publish-rounds 0] [--seed 0] [--stages ...]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ["RXCURATE_PROGRESS"] = "0"

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from rxcurate.checkpoint import LOCK, STATE_KEY, UNITS  # noqa: E402
from rxcurate.compress import DONE_DIR, PLAN  # noqa: E402
from rxcurate.io import atomic_write_json, sha256_file  # noqa: E402
from rxcurate.layout import (  # noqa: E402
    CHECKSUMS,
    COMPRESS_STATE,
    DATA_DIR,
    EMBED_STATE,
    EMBEDDINGS_DIR,
    LOCKFILE,
    SOURCE_HINT,
    embedding_set_name,
    embeddings_path,
    is_visible,
    read_release_json,
    release_files,
)
from rxcurate.publish.targets import version_tag  # noqa: E402

MANIFEST = REPO / "tests" / "data" / "manifests" / "tiny-rxrx3.yaml"
RXCURATE = [sys.executable, "-m", "rxcurate.cli"]
STAGES = ("compress", "embed", "publish")
ENCODER = "baseline"
REPO_ID = "rxcurate/killtest"
TIME_TARGETS = ("validate", "anywhere")
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C"}


# --------------------------------------------------------------------------------------------------- processes
def stage_cmd(stage: str, workdir: Path, source: Path, args: argparse.Namespace, hub: Path | None = None) -> list[str]:
    if stage == "compress":
        return [*RXCURATE, "compress", str(MANIFEST), "--source", str(source), "--workdir", str(workdir),
                "--workers", str(args.compress_workers)]
    if stage == "embed":
        return [*RXCURATE, "embed", str(MANIFEST), "--workdir", str(workdir), "--encoder", ENCODER, "--device", "cpu",
                "--tile", "32", "--num-workers", str(args.embed_workers)]
    assert hub is not None
    return [*RXCURATE, "publish", str(MANIFEST), "--workdir", str(workdir), "--to", f"local://{REPO_ID}", "--hub",
            str(hub), "--json"]


def open_files(pid: int) -> list[str]:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    out = []
    for fd in fds:
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return out


def holds_stage_lock(pid: int) -> bool:
    """True once the process has opened its stage's lock file (``.compress-state/lock``, ``.embed-state/*/lock``):
    from then on it is doing the stage's work, past the interpreter start-up and imports."""
    return any(t.endswith(f"/{LOCK}") and (f"/{COMPRESS_STATE}/" in t or f"/{EMBED_STATE}/" in t)
               for t in open_files(pid))


def holds_hub_lock(pid: int, hub: Path) -> bool:
    """True once ``rxcurate publish`` has opened the hub repository's lock (``HUB/datasets/<org>/.<name>.lock``)."""
    org, name = REPO_ID.split("/")
    return str(hub.resolve() / "datasets" / org / f".{name}.lock") in open_files(pid)


def wait_for(proc: subprocess.Popen, test: Callable[[int], bool], deadline_s: float = 120.0,
             poll_s: float = 0.005) -> float | None:
    """Seconds until ``test(proc.pid)`` holds; None when the process exited first."""
    t0 = time.perf_counter()
    while proc.poll() is None and time.perf_counter() - t0 < deadline_s:
        if test(proc.pid):
            return time.perf_counter() - t0
        time.sleep(poll_s)
    return None


def git_children(sid: int) -> dict[int, str]:
    """``{pid: git subcommand}`` of the git processes in session ``sid`` (the publish and its children)."""
    out: dict[int, str] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == sid:
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[3]) != sid:
                continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except (OSError, IndexError, ValueError):
            continue
        if argv and os.path.basename(argv[0]) == "git":
            sub = next((a for a in argv[1:] if not a.startswith("-")), "?")
            out[int(d)] = sub
    return out


GIT_SHIM = r"""#!/bin/sh
# benchmarks/killtest.py's git shim: logs each git subcommand; at the target step it SIGKILLs its process group
# (rxcurate publish and its children) before, during (after a delay) or after the real git, or (update-ref)
# between its transaction's prepare and commit, while git holds the ref locks.
sub=
dir=
for a in "$@"; do case "$a" in --git-dir=*) dir=${a#--git-dir=} ;; -*) ;; *) sub=$a; break ;; esac; done
held() { [ -e "$dir/refs/heads/main.lock" ] || [ -e "$dir/HEAD.lock" ]; }  # git holds main's ref lock
echo "$sub" >> "$KILLTEST_GIT_LOG"
if [ -n "$KILLTEST_GIT_TIMES" ]; then
  t0=$(date +%s.%N); "$KILLTEST_REAL_GIT" "$@"; rc=$?
  echo "$sub $t0 $(date +%s.%N)" >> "$KILLTEST_GIT_TIMES"; exit $rc
fi
if [ "$sub:$(grep -cxF -- "$sub" "$KILLTEST_GIT_LOG")" = "$KILLTEST_GIT_TARGET" ]; then
  exec 3<&0  # sh gives a background command /dev/null as stdin: hand it ours explicitly (update-ref --stdin ...)
  case "$KILLTEST_GIT_MODE" in
    before) kill -KILL 0 ;;
    during) "$KILLTEST_REAL_GIT" "$@" <&3 3<&- &
            sleep "$KILLTEST_GIT_DELAY"
            st=$(cut -d' ' -f3 "/proc/$!/stat" 2>/dev/null)
            if [ -n "$st" ] && [ "$st" != Z ]; then echo running; else echo finished; fi > "$KILLTEST_GIT_LOG.kill"
            kill -KILL 0 ;;
    after) "$KILLTEST_REAL_GIT" "$@"; kill -KILL 0 ;;
    prepared)  # update-ref --stdin: pass the transaction up to "prepare", wait until git holds its ref locks
            rm -f "$KILLTEST_GIT_LOG.in" "$KILLTEST_GIT_LOG.out"
            mkfifo "$KILLTEST_GIT_LOG.in" "$KILLTEST_GIT_LOG.out"
            "$KILLTEST_REAL_GIT" "$@" < "$KILLTEST_GIT_LOG.in" > "$KILLTEST_GIT_LOG.out" &
            exec 4> "$KILLTEST_GIT_LOG.in" 5< "$KILLTEST_GIT_LOG.out"
            while read -r line; do [ "$line" = commit ] && break; echo "$line" >&4; done
            while read -r line <&5; do [ "$line" = "prepare: ok" ] && break; done
            if held; then echo locks-held; else echo no-locks; fi > "$KILLTEST_GIT_LOG.kill"
            kill -KILL 0 ;;
  esac
fi
exec "$KILLTEST_REAL_GIT" "$@"
"""


def install_git_shim(folder: Path) -> dict[str, str]:
    """Write the git shim into ``folder``; the environment that puts it first on PATH."""
    real = shutil.which("git")
    if real is None:
        raise SystemExit("the publish kill test needs git on PATH")
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "git"
    shim.write_text(GIT_SHIM)
    shim.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}", "KILLTEST_REAL_GIT": real}


def git_log(log: Path) -> list[str]:
    return log.read_text().split() if log.is_file() else []


def run_to_end(cmd: list[str], env: dict[str, str] | None = None,
               started: Callable[[int], bool] = holds_stage_lock) -> tuple[float, float, str]:
    """(total wall seconds, seconds after ``started`` first held, stdout) of one uninterrupted run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    startup = wait_for(proc, started)
    out, err = proc.communicate()
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"clean run failed ({proc.returncode}): {' '.join(cmd)}\n{err.decode()[-2000:]}")
    return total, total - (startup if startup is not None else 0.0), out.decode()


def trace_publish(cmd: list[str], env: dict[str, str], hub: Path, scratch: Path) -> dict[str, Any]:
    """One clean publish through the git shim: ``steps`` = [[subcommand, occurrence, seconds]] in order."""
    scratch.mkdir(parents=True, exist_ok=True)
    times = scratch / "git-times"
    env = env | {"KILLTEST_GIT_LOG": str(scratch / "git-log"), "KILLTEST_GIT_TIMES": str(times)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env)
    lock_s = wait_for(proc, lambda pid: holds_hub_lock(pid, hub), poll_s=0.002)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"clean publish failed ({proc.returncode}): {err.decode()[-2000:]}")
    steps: list[list[Any]] = []
    seen: collections.Counter = collections.Counter()
    for line in times.read_text().splitlines():
        sub, a, b = line.split()
        seen[sub] += 1
        steps.append([sub, seen[sub], round(float(b) - float(a), 4)])
    return {"total_s": time.perf_counter() - t0, "lock_s": lock_s or 0.0, "steps": steps, "stdout": out.decode()}


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


# --------------------------------------------------------------------------------------------------- compress/embed
def checkpoint_state(stage: str, workdir: Path) -> dict[str, int]:
    """What the stage had saved when it was killed (counts of checkpoint files and finished outputs)."""
    if stage == "compress":
        state = workdir / COMPRESS_STATE
        return {"units": len(list((state / UNITS).glob("u*.arrow"))) if state.is_dir() else 0,
                "plan": int((state / PLAN).is_file()),
                "shards_done": len(list((state / DONE_DIR).glob("*.json"))) if state.is_dir() else 0,
                "checksums": int((workdir / CHECKSUMS).is_file())}
    state = workdir / EMBED_STATE
    return {"shard_checkpoints": sum(1 for p in state.rglob("*") if p.is_file()
                                     and p.name not in (LOCK, STATE_KEY) and not p.name.endswith(".tmp"))
            if state.is_dir() else 0,
            "embeddings": int(embeddings_path(workdir, embedding_set_name(ENCODER)).is_file())}


def phase(stage: str, snap: dict[str, int]) -> str:
    if stage == "compress":
        if snap["checksums"]:
            return "finishing"
        if snap["plan"]:
            return "packing"
        return "encoding" if snap["units"] else "before first checkpoint"
    if snap["embeddings"]:
        return "finishing"
    return "embedding" if snap["shard_checkpoints"] else "before first checkpoint"


def run_with_kills(cmd: list[str], stage: str, workdir: Path, rng: np.random.Generator, est: dict[str, float],
                   args: argparse.Namespace, reset: Callable[[], None]) -> dict[str, Any]:
    """Run ``cmd`` until it completes, SIGKILLing it (whole process group) at random moments.

    A kill is aimed at the work (a delay uniform in [0, est work time] after the process takes its stage lock),
    or, with probability ``--anywhere``, at any moment (uniform in [0, est total time] after the start). Every round
    has at least one kill: when the first run finishes before its kill (the machine got faster than the clean run),
    the estimates shrink by 30 %, the folder is reset with ``reset()`` and the round starts again (``missed``)."""
    attempts: list[dict[str, Any]] = []
    kills, missed = 0, 0
    t_round = time.perf_counter()
    while True:
        may_kill = kills < args.max_kills and (kills == 0 or rng.random() < args.rekill)
        anywhere = bool(rng.random() < args.anywhere)
        delay = float(rng.uniform(0.0, est["total"] if anywhere else est["work"])) if may_kill else None
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        if delay is not None and not anywhere and wait_for(proc, holds_stage_lock) is None:
            delay = None  # it exited before taking its lock (e.g. already up to date): nothing to aim at
        try:
            _, err = proc.communicate(timeout=delay)
        except subprocess.TimeoutExpired:
            in_work = holds_stage_lock(proc.pid)
            kill_group(proc)
            kills += 1
            snap = checkpoint_state(stage, workdir)
            attempts.append({"aim": "anywhere" if anywhere else "work", "killed_after_s": round(
                time.perf_counter() - t0, 3), "phase": phase(stage, snap) if in_work else "start-up", "saved": snap})
            continue
        if kills == 0 and proc.returncode == 0 and missed < 20:
            missed += 1
            est["total"], est["work"] = est["total"] * 0.7, est["work"] * 0.7
            attempts.clear()
            reset()
            continue
        rec: dict[str, Any] = {"completed_s": round(time.perf_counter() - t0, 3), "rc": proc.returncode}
        if proc.returncode != 0:
            rec["stderr"] = err.decode(errors="replace")[-1500:]
        attempts.append(rec)
        return {"kills": kills, "missed": missed, "attempts": attempts,
                "wall_s": round(time.perf_counter() - t_round, 3), "ok": proc.returncode == 0}


def files_of(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def published_files(folder: Path) -> dict[str, str]:
    """sha256 of every file a release folder would publish: all but local state (hidden parts, e.g. .source.json)."""
    return {k: v for k, v in files_of(folder).items() if is_visible(k)}


def hidden_paths(folder: Path) -> set[str]:
    """Local, never-published paths (files and folders with a hidden part) in a release folder."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if not is_visible(p.relative_to(folder).as_posix())}


def key_counts(folder: Path) -> dict[str, collections.Counter]:
    return {p.name: collections.Counter(pq.read_table(p, columns=["__key__"]).column("__key__").to_pylist())
            for p in sorted((folder / DATA_DIR).glob("*.parquet"))}


def well_counts(path: Path) -> collections.Counter:
    if not path.is_file():
        return collections.Counter()
    return collections.Counter(pq.read_table(path, columns=["well_id"]).column("well_id").to_pylist())


def compare(got: Path, ref: Path, want: dict[str, str], have: dict[str, str], embeddings: bool) -> dict[str, Any]:
    """Rows lost/duplicated and file identity of ``got`` (files ``have``) against ``ref`` (files ``want``)."""
    out: dict[str, Any] = {
        "missing_files": sorted(set(want) - set(have)),
        "extra_files": sorted(set(have) - set(want)),
        "differing_files": sorted(k for k in set(want) & set(have) if want[k] != have[k]),
    }
    ref_keys, got_keys = key_counts(ref), key_counts(got)
    all_ref = sum(ref_keys.values(), collections.Counter())
    all_got = sum(got_keys.values(), collections.Counter())
    lost = sum((all_ref - all_got).values())
    dup = sum(c - 1 for c in all_got.values() if c > 1) + sum((all_got - all_ref).values())
    shard_mismatch = sorted(s for s in set(ref_keys) | set(got_keys) if ref_keys.get(s) != got_keys.get(s))
    if embeddings:
        set_name = embedding_set_name(ENCODER)
        ref_w, got_w = well_counts(embeddings_path(ref, set_name)), well_counts(embeddings_path(got, set_name))
        lost += sum((ref_w - got_w).values())
        dup += sum(c - 1 for c in got_w.values() if c > 1) + sum((got_w - ref_w).values())
    out.update(lost=lost, duplicated=dup, shards_with_other_rows=shard_mismatch)
    out["identical"] = not (out["missing_files"] or out["extra_files"] or out["differing_files"])
    return out


def compare_stage(stage: str, got: Path, ref: Path, hidden_before: set[str]) -> dict[str, Any]:
    """A resumed compress/embed folder against the reference: published files byte-identical, rows, leftovers."""
    want = published_files(ref)
    if stage == "compress":
        want = {k: v for k, v in want.items() if not k.startswith(f"{EMBEDDINGS_DIR}/")}
    out = compare(got, ref, want, published_files(got), embeddings=stage == "embed")
    state = COMPRESS_STATE if stage == "compress" else EMBED_STATE
    out["leftovers"] = sorted(hidden_paths(got) - hidden_before)  # state folders, temp files of the completed run
    out["state_folder_left"] = (got / state).exists()
    out["identical"] = out["identical"] and not out["leftovers"] and not out["state_folder_left"]
    return out


def prepare_round(stage: str, ref: Path, dest: Path) -> None:
    if stage == "compress":
        dest.mkdir(parents=True)
        shutil.copy2(ref / LOCKFILE, dest / LOCKFILE)
        # select's local fingerprints (source root + each image's mtime_ns): compress checks them as it reads the
        # same source (without them it would check the sizes only)
        shutil.copy2(ref / SOURCE_HINT, dest / SOURCE_HINT)
    else:
        shutil.copytree(ref, dest, ignore=lambda d, names: [EMBEDDINGS_DIR] if Path(d) == ref else [])


# --------------------------------------------------------------------------------------------------- publish
def hub_repo(hub: Path) -> Path:
    org, name = REPO_ID.split("/")
    return hub / "datasets" / org / name


def git(repo: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | GIT_ENV
    return subprocess.run(["git", f"--git-dir={repo}", *args], capture_output=True, env=env, check=check)


def git_out(repo: Path, *args: str) -> str | None:
    proc = git(repo, *args)
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def hub_state(hub: Path) -> dict[str, Any]:
    """The hub after a kill or a completed round: repository present, tags, temp folders, git lock files."""
    repo = hub_repo(hub)
    org_dir = repo.parent
    temps = sorted(p.name for p in org_dir.glob(f".{repo.name}.*") if p.is_dir()) if org_dir.is_dir() else []
    present = (repo / "HEAD").is_file()
    state: dict[str, Any] = {"repo": present, "temp_folders": temps}
    if present:
        state["tags"] = (git_out(repo, "tag", "--list", "v*") or "").split()
        state["main"] = bool(git_out(repo, "rev-parse", "--verify", "-q", "refs/heads/main"))
        state["git_locks"] = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*.lock"))
        state["tmp_objects"] = sum(1 for _ in (repo / "objects").rglob("tmp_*"))
    return state


def pick_delay(target: list[Any], rng: np.random.Generator, est: dict[str, float]) -> float:
    if target[0] == "validate":
        return float(rng.uniform(0.0, est["lock"]))
    if target[0] == "anywhere":
        return float(rng.uniform(0.0, est["total"]))
    return float(rng.uniform(0.0, target[3])) if target[2] == "during" else 0.0  # within the traced git duration


def kill_publish(cmd: list[str], env: dict[str, str], hub: Path, target: list[Any] | None, delay: float,
                 log: Path) -> tuple[subprocess.Popen, dict[str, Any], bytes, bytes]:
    """Run one publish; kill it at ``target``: a moment (``validate``/``anywhere``: this process kills the group
    after ``delay``) or a git step [subcommand, occurrence, mode] (the shim kills its group). The hit ({} when the
    run ended first), stdout and stderr."""
    log.unlink(missing_ok=True)
    Path(f"{log}.kill").unlink(missing_ok=True)
    env = env | {"KILLTEST_GIT_LOG": str(log)}
    if target and target[0] not in TIME_TARGETS:
        env |= {"KILLTEST_GIT_TARGET": f"{target[0]}:{target[1]}", "KILLTEST_GIT_MODE": target[2],
                "KILLTEST_GIT_DELAY": f"{delay:.4f}"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env)
    hit: dict[str, Any] = {}
    if target and target[0] in TIME_TARGETS:
        try:
            out, err = proc.communicate(timeout=delay)
            return proc, hit, out, err
        except subprocess.TimeoutExpired:
            in_hub = holds_hub_lock(proc.pid, hub)
            running = sorted(set(git_children(proc.pid).values()))
            kill_group(proc)
            hit["phase"] = ("git " + ",".join(running)) if running else ("hub" if in_hub else "validation")
            return proc, hit, b"", b""
    out, err = proc.communicate()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # nothing should be left; make sure
    if target and proc.returncode == -signal.SIGKILL:
        hit["phase"] = f"git {target[0]}#{target[1]} {target[2]}"
        state = Path(f"{log}.kill")
        if state.is_file():
            hit["git_at_kill"] = state.read_text().strip()
    return proc, hit, out, err


def run_publish_with_kills(cmd: list[str], env: dict[str, str], hub: Path, first: list[Any], targets: list[list[Any]],
                           rng: np.random.Generator, est: dict[str, float], args: argparse.Namespace,
                           reset: Callable[[], None], log: Path) -> dict[str, Any]:
    """Run ``rxcurate publish`` until it completes, killing the first run at ``first`` and reruns (probability
    ``--rekill``) at a random target. When the first run completes before its kill, the hub is reset and the round
    starts again (``missed``; time estimates shrink by 30 %)."""
    attempts: list[dict[str, Any]] = []
    kills, missed = 0, 0
    t_round = time.perf_counter()
    while True:
        may_kill = kills < args.max_kills and (kills == 0 or rng.random() < args.rekill)
        target = (first if kills == 0 else targets[int(rng.integers(len(targets)))]) if may_kill else None
        delay = pick_delay(target, rng, est) if target else 0.0
        t0 = time.perf_counter()
        proc, hit, out, err = kill_publish(cmd, env, hub, target, delay, log)
        if hit:
            kills += 1
            assert target is not None
            attempts.append({"aim": "/".join(str(x) for x in target[:3]), "delay_s": round(delay, 4),
                             "killed_after_s": round(time.perf_counter() - t0, 3), **hit,
                             "git_steps_run": len(git_log(log)), "hub": hub_state(hub)})
            continue
        if kills == 0 and proc.returncode == 0 and missed < 20:
            missed += 1
            if target and target[0] in TIME_TARGETS:
                est["total"], est["lock"] = est["total"] * 0.7, est["lock"] * 0.7
            attempts.clear()
            reset()
            continue
        rec: dict[str, Any] = {"completed_s": round(time.perf_counter() - t0, 3), "rc": proc.returncode,
                               "git_steps": git_log(log)}
        if proc.returncode == 0:
            rec["status"] = json.loads(out.decode()).get("status")
        else:
            rec["stderr"] = err.decode(errors="replace")[-1500:]
        attempts.append(rec)
        return {"kills": kills, "missed": missed, "attempts": attempts,
                "wall_s": round(time.perf_counter() - t_round, 3), "ok": proc.returncode == 0}


def extract_tag(repo: Path, tag: str, dest: Path) -> None:
    proc = git(repo, "archive", "--format=tar", tag)
    dest.mkdir(parents=True)
    if proc.returncode == 0 and proc.stdout:
        with tarfile.open(fileobj=io.BytesIO(proc.stdout), mode="r:") as tar:
            tar.extractall(dest, filter="data")


def check_hub(hub: Path, release: Path, version: str, clean_tree: str, cmd: list[str], env: dict[str, str],
              scratch: Path, tmpdir: Path) -> dict[str, Any]:
    """The hub after a completed round: one valid version, the clean tree, no leftovers, a rerun is unchanged."""
    repo = hub_repo(hub)
    tag = version_tag(version)
    state = hub_state(hub)
    out: dict[str, Any] = {"hub": state}
    out["tags_ok"] = state.get("tags") == [tag]
    out["tree"] = git_out(repo, "rev-parse", f"refs/tags/{tag}^{{tree}}")
    out["main_tree"] = git_out(repo, "rev-parse", "refs/heads/main^{tree}")
    out["tree_ok"] = out["tree"] == clean_tree and out["main_tree"] == clean_tree
    out["main_commits"] = int(git_out(repo, "rev-list", "--count", "refs/heads/main") or 0)
    fsck = git(repo, "fsck", "--no-dangling", "--no-progress")
    out["fsck_ok"] = fsck.returncode == 0
    if not out["fsck_ok"]:
        out["fsck"] = fsck.stderr.decode(errors="replace")[-800:]
    out["leftover_temp_folders"] = state.get("temp_folders", [])
    out["leftover_git_locks"] = state.get("git_locks", [])
    out["tmp_objects"] = state.get("tmp_objects", 0)
    out["tmpdir_leftovers"] = sorted(p.name for p in tmpdir.iterdir()) if tmpdir.is_dir() else []
    got = scratch / "published"
    if out["tags_ok"]:
        extract_tag(repo, tag, got)
        want = {rel: sha256_file(release / rel) for rel in release_files(release)}
        out.update(compare(got, release, want, files_of(got), embeddings=True))
        shutil.rmtree(got)
    else:
        out.update(identical=False, lost=None, duplicated=None)
    val = subprocess.run([*RXCURATE, "validate", f"local://{REPO_ID}@{version}", "--hub", str(hub)],
                         capture_output=True, env=env)
    out["validate_rc"] = val.returncode
    if val.returncode != 0:
        out["validate_output"] = (val.stdout + val.stderr).decode(errors="replace")[-1500:]
    again = subprocess.run(cmd, capture_output=True, env=env)
    try:
        out["rerun_status"] = json.loads(again.stdout.decode()).get("status") if again.returncode == 0 else None
    except ValueError:
        out["rerun_status"] = None
    if again.returncode != 0:
        out["rerun_stderr"] = again.stderr.decode(errors="replace")[-1500:]
    out["identical"] = bool(out["identical"] and out["tags_ok"] and out["tree_ok"] and out["fsck_ok"]
                            and not out["leftover_temp_folders"] and not out["leftover_git_locks"]
                            and out["validate_rc"] == 0 and out["rerun_status"] == "unchanged")
    return out


# --------------------------------------------------------------------------------------------------- main
def cpu_seconds() -> tuple[float, float]:
    """(reaped children, this process) user + system CPU seconds."""
    kids, me = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    return kids.ru_utime + kids.ru_stime, me.ru_utime + me.ru_stime


def summarise(rounds: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    phases = collections.Counter(a["phase"] for rd in rounds for a in rd["attempts"] if "phase" in a)
    return {
        "rounds": len(rounds),
        "kills": sum(rd["kills"] for rd in rounds),
        "missed_kills": sum(rd["missed"] for rd in rounds),
        "kills_by_phase": dict(sorted(phases.items())),
        "failed_resumes": sum(not rd["ok"] for rd in rounds),
        "rounds_without_kill": sum(rd["kills"] == 0 for rd in rounds),
        "lost": sum(rd.get("lost") or 0 for rd in rounds),
        "duplicated": sum(rd.get("duplicated") or 0 for rd in rounds),
        "identical": sum(bool(rd["identical"]) for rd in rounds),
        "round_wall_s": {"mean": round(float(np.mean([rd["wall_s"] for rd in rounds])), 3),
                         "max": round(float(np.max([rd["wall_s"] for rd in rounds])), 3)},
        **extra,
        "per_round": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8, help="rounds of compress and of embed (each has >= 1 kill)")
    ap.add_argument("--publish-rounds", type=int, default=0,
                    help="rounds of publish; 0: one per kill target (validate, anywhere, before the first git step, "
                         "during and after each git step of the clean publish, update-ref between prepare and commit), "
                         "at least --rounds")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill-time RNG")
    ap.add_argument("--max-kills", type=int, default=3, help="most kills in one round")
    ap.add_argument("--rekill", type=float, default=0.5, help="probability of killing a rerun again")
    ap.add_argument("--anywhere", type=float, default=0.25,
                    help="compress/embed: probability that a kill is aimed at any moment (start-up included) "
                         "instead of the work")
    ap.add_argument("--publish-targets", default="",
                    help="publish: comma-separated names the first kill targets are restricted to (e.g. "
                         "update-ref,validate); rekills still take any target; empty: all")
    ap.add_argument("--compress-workers", type=int, default=1, help="rxcurate compress --workers")
    ap.add_argument("--embed-workers", type=int, default=0, help="rxcurate embed --num-workers")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    ap.add_argument("--min-kills", type=int, default=20, help="fail unless the stages had at least this many kills")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "killtest.json",
                    help="result JSON")
    args = ap.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    if any(s not in STAGES for s in stages) or args.rounds < 1 or args.publish_rounds < 0:
        ap.error(f"--stages takes a subset of {','.join(STAGES)}; --rounds must be >= 1, --publish-rounds >= 0")

    from rxcurate.synth import generate

    t_start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="rxcurate-killtest-") as tmp:
        base = Path(tmp)
        source = generate(base / "src", layout="rxrx3", preset="tiny", seed=0)
        ref = base / "ref"
        timings = {"select_s": run_to_end([*RXCURATE, "select", str(MANIFEST), "--source", str(source),
                                           "--workdir", str(ref)])[0]}
        for stage in ("compress", "embed"):
            total, work, _ = run_to_end(stage_cmd(stage, ref, source, args))
            timings[f"{stage}_clean_s"], timings[f"{stage}_clean_work_s"] = total, work
        release = base / "release"
        shutil.copytree(ref, release)
        timings["card_s"] = run_to_end([*RXCURATE, "card", str(MANIFEST), "--workdir", str(release), "--hub",
                                        str(base / "hub-card")])[0]
        version = read_release_json(release).version
        release_before = files_of(release)
        env = dict(os.environ)
        clean_hub = base / "hub-clean"
        shim_env = install_git_shim(base / "shim")
        logs = base / "gitlogs"
        trace = trace_publish(stage_cmd("publish", release, source, args, clean_hub), env | shim_env, clean_hub,
                              logs)
        clean_tree = git_out(hub_repo(clean_hub), "rev-parse", f"refs/tags/{version_tag(version)}^{{tree}}")
        timings["publish_clean_s"], timings["publish_clean_lock_s"] = trace["total_s"], trace["lock_s"]
        print(f"reference: {timings}; publish git steps: {trace['steps']}", file=sys.stderr)

        results: dict[str, Any] = {}
        est = {s: {"total": timings[f"{s}_clean_s"], "work": timings[f"{s}_clean_work_s"]}
               for s in ("compress", "embed")}
        est["publish"] = {"total": trace["total_s"], "lock": trace["lock_s"]}
        # [name, occurrence, mode, traced seconds]: two moments, then before the first git step and during and
        # after each one (before step k+1 is after step k, up to the Python between them)
        steps = trace["steps"]
        targets: list[list[Any]] = [[t, 0, "", 0.0] for t in TIME_TARGETS] + [[*steps[0][:2], "before", 0.0]] + [
            [sub, occ, mode, dur] for sub, occ, dur in steps for mode in ("during", "after")] + [
            [sub, occ, "prepared", dur] for sub, occ, dur in steps if sub == "update-ref"]
        wanted = [t for t in args.publish_targets.split(",") if t]
        firsts = [t for t in targets if not wanted or t[0] in wanted] or targets
        for stage in stages:
            load_before, (cpu0, self0) = os.getloadavg(), cpu_seconds()
            t_stage = time.perf_counter()
            rounds = []
            n_rounds = args.rounds if stage != "publish" else (args.publish_rounds or max(args.rounds, len(firsts)))
            for r in range(n_rounds):
                folder = base / f"{stage}-{r:03d}"
                if stage == "publish":
                    hub, tmpdir = folder / "hub", folder / "tmp"

                    def reset_hub(folder: Path = folder, tmpdir: Path = tmpdir) -> None:
                        shutil.rmtree(folder, ignore_errors=True)
                        tmpdir.mkdir(parents=True)

                    reset_hub()
                    penv = env | {"TMPDIR": str(tmpdir)}
                    cmd = stage_cmd(stage, release, source, args, hub)
                    rec = run_publish_with_kills(cmd, penv | shim_env, hub, firsts[r % len(firsts)], targets, rng,
                                                 est[stage], args, reset_hub, logs / f"git-{r:03d}")
                    rec.update(check_hub(hub, release, version, clean_tree or "", cmd, penv, folder, tmpdir)
                               if rec["ok"] else {"identical": False, "lost": None, "duplicated": None})
                else:
                    def reset(stage: str = stage, folder: Path = folder) -> None:
                        shutil.rmtree(folder, ignore_errors=True)
                        prepare_round(stage, ref, folder)

                    reset()
                    hidden_before = hidden_paths(folder)
                    rec = run_with_kills(stage_cmd(stage, folder, source, args), stage, folder, rng, est[stage],
                                         args, reset)
                    rec.update(compare_stage(stage, folder, ref, hidden_before) if rec["ok"] else
                               {"identical": False, "lost": None, "duplicated": None})
                rounds.append(rec)
                print(f"{stage} round {r}: kills {rec['kills']} "
                      f"({', '.join(a['phase'] for a in rec['attempts'] if 'phase' in a)}), identical "
                      f"{rec['identical']}, lost {rec['lost']}, duplicated {rec['duplicated']}, {rec['wall_s']} s",
                      file=sys.stderr)
                if rec["identical"] and rec["ok"]:
                    shutil.rmtree(folder)
            cpu1, self1 = cpu_seconds()
            extra: dict[str, Any] = {
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "wall_s": round(time.perf_counter() - t_stage, 3),
                "cpu_s_children": round(cpu1 - cpu0, 2),  # reaped children (killed runs' orphans are not counted)
                "cpu_s_self": round(self1 - self0, 2),  # this script: polling /proc, comparisons
            }
            if stage == "publish":
                extra.update(
                    kill_targets=["/".join(str(x) for x in t[:3]) for t in firsts],
                    targets_hit=len({a["aim"] for rd in rounds for a in rd["attempts"] if "aim" in a}),
                    leftover_tmpdir_entries=sum(len(rd.get("tmpdir_leftovers", [])) for rd in rounds),
                    leftover_tmp_objects=sum(rd.get("tmp_objects", 0) for rd in rounds),
                    rounds_with_extra_commits=sum((rd.get("main_commits") or 1) > 1 for rd in rounds),
                    release_folder_unchanged=files_of(release) == release_before,
                )
            results[stage] = summarise(rounds, extra)
    kills = sum(v["kills"] for v in results.values())
    ok = kills >= args.min_kills and all(
        v["failed_resumes"] == 0 and v["lost"] == 0 and v["duplicated"] == 0 and v["identical"] == v["rounds"]
        and v.get("release_folder_unchanged", True) for v in results.values())
    doc = {
        "benchmark": "killtest",
        "passed": ok,
        "kills": kills,
        "manifest": MANIFEST.relative_to(REPO).as_posix(),
        "source": "rxcurate synth --layout rxrx3 --preset tiny --seed 0",
        "config": {"rounds": args.rounds, "publish_rounds": args.publish_rounds, "seed": args.seed,
                   "max_kills": args.max_kills, "rekill": args.rekill, "anywhere": args.anywhere,
                   "compress_workers": args.compress_workers, "embed_workers": args.embed_workers,
                   "min_kills": args.min_kills, "stages": stages, "publish_targets": args.publish_targets, "target": f"local://{REPO_ID}",
                   "signal": "SIGKILL to the process group"},
        "publish_trace": {"git_steps": trace["steps"], "clean_tree": clean_tree},
        "timings": {k: round(v, 3) for k, v in timings.items()} | {
            "total_s": round(time.perf_counter() - t_start, 3)},
        "summary": {s: {k: v for k, v in r.items() if k != "per_round"} for s, r in results.items()},
        "stages": results,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "git": subprocess.run(["git", "--version"], capture_output=True).stdout.decode().strip()},
    }
    atomic_write_json(args.out, doc)
    print(f"wrote {args.out}: passed={ok}, {kills} kills; " + ", ".join(
        f"{s}: {r['kills']} kills, lost {r['lost']}, duplicated {r['duplicated']}, identical {r['identical']}/"
        f"{r['rounds']}" for s, r in results.items()), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
