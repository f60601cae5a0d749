"""Kill test: SIGKILL `rxcurate compress` and `rxcurate embed` at random moments, resume, compare with a clean run.

On the tiny synthetic RxRx3 screen (``rxcurate synth --preset tiny``) and ``tests/data/manifests/tiny-rxrx3.yaml``:

1. a clean reference run: ``rxcurate select``, ``compress``, ``embed --encoder baseline`` into ``ref/``;
2. for each stage, ``--rounds`` rounds: start the stage as a subprocess (its own process group, so pool/DataLoader
   workers die with it), SIGKILL the group after a seeded random delay, then rerun the same command; each rerun is
   itself killed again with probability ``--rekill`` (at most ``--max-kills`` kills a round, at least one) until one
   completes;
3. compare the round's folder with the reference: rows lost / duplicated (``__key__`` per shard and overall; embedding
   rows by ``well_id``), byte identity of every output file, and no files left over (state folders, temp files).

Most kills are aimed at the work: the script waits until the process holds its stage lock (``/proc/<pid>/fd``), i.e.
past the interpreter start-up and imports, then kills after a delay uniform in [0, the clean run's work time]; with
probability ``--anywhere`` a kill lands anywhere in [0, the clean run's total time]. Each kill records whether the
process was still starting up and what the stage had checkpointed (units, plan, finished shards; embedding
checkpoints), so the result shows where the kills landed. Writes ``benchmarks/results/killtest.json``; exits 1 when
any row is lost or duplicated, any file differs or a resumed run fails.

    .venv/bin/python benchmarks/killtest.py [--rounds 20] [--seed 0] [--compress-workers 1] [--embed-workers 0]
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ["RXCURATE_PROGRESS"] = "0"

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from rxcurate.io import atomic_write_json, sha256_file  # noqa: E402

MANIFEST = REPO / "tests" / "data" / "manifests" / "tiny-rxrx3.yaml"
RXCURATE = [sys.executable, "-m", "rxcurate.cli"]
STAGES = ("compress", "embed")


def stage_cmd(stage: str, workdir: Path, source: Path, args: argparse.Namespace) -> list[str]:
    if stage == "compress":
        return [*RXCURATE, "compress", str(MANIFEST), "--source", str(source), "--workdir", str(workdir),
                "--workers", str(args.compress_workers)]
    return [*RXCURATE, "embed", str(MANIFEST), "--workdir", str(workdir), "--encoder", "baseline", "--device", "cpu",
            "--tile", "32", "--num-workers", str(args.embed_workers)]


def holds_stage_lock(pid: int) -> bool:
    """True once the process has opened its stage's lock file (``.compress-state/lock``, ``.embed-state/*/lock``):
    from then on it is doing the stage's work, past the interpreter start-up and imports."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith("/lock") and ("/.compress-state/" in target or "/.embed-state/" in target):
            return True
    return False


def wait_for_work(proc: subprocess.Popen, deadline_s: float = 120.0) -> float | None:
    """Seconds until ``proc`` holds its stage lock; None when it exited first."""
    t0 = time.perf_counter()
    while proc.poll() is None and time.perf_counter() - t0 < deadline_s:
        if holds_stage_lock(proc.pid):
            return time.perf_counter() - t0
        time.sleep(0.005)
    return None


def run_to_end(cmd: list[str]) -> tuple[float, float]:
    """(total wall seconds, seconds of work after start-up) of one uninterrupted run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    startup = wait_for_work(proc)
    _, err = proc.communicate()
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"clean run failed ({proc.returncode}): {' '.join(cmd)}\n{err.decode()[-2000:]}")
    return total, total - (startup if startup is not None else 0.0)


def checkpoint_state(stage: str, workdir: Path) -> dict[str, int]:
    """What the stage had saved when it was killed (counts of checkpoint files and finished outputs)."""
    if stage == "compress":
        state = workdir / ".compress-state"
        return {"units": len(list((state / "units").glob("u*.arrow"))) if state.is_dir() else 0,
                "plan": int((state / "plan.json").is_file()),
                "shards_done": len(list((state / "done").glob("*.json"))) if state.is_dir() else 0,
                "checksums": int((workdir / "checksums.json").is_file())}
    state = workdir / ".embed-state"
    return {"shard_checkpoints": sum(1 for p in state.rglob("*") if p.is_file() and p.name != "lock"
                                     and not p.name.endswith(".tmp")) if state.is_dir() else 0,
            "embeddings": int((workdir / "embeddings" / "baseline" / "embeddings.parquet").is_file())}


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
                   args: argparse.Namespace, reset) -> dict:
    """Run ``cmd`` until it completes, SIGKILLing it (whole process group) at random moments.

    A kill is aimed at the work (a delay uniform in [0, est work time] after the process takes its stage lock),
    or, with probability ``--anywhere``, at any moment (uniform in [0, est total time] after the start). Every round
    has at least one kill: when the first run finishes before its kill (the machine got faster than the clean run),
    the estimates shrink by 30 %, the folder is reset with ``reset()`` and the round starts again (``missed``)."""
    attempts, kills, missed = [], 0, 0
    t_round = time.perf_counter()
    while True:
        may_kill = kills < args.max_kills and (kills == 0 or rng.random() < args.rekill)
        anywhere = bool(rng.random() < args.anywhere)
        delay = float(rng.uniform(0.0, est["total"] if anywhere else est["work"])) if may_kill else None
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        if delay is not None and not anywhere and wait_for_work(proc) is None:
            delay = None  # it exited before taking its lock (e.g. already up to date): nothing to aim at
        try:
            _, err = proc.communicate(timeout=delay)
        except subprocess.TimeoutExpired:
            in_work = holds_stage_lock(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
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
        rec = {"completed_s": round(time.perf_counter() - t0, 3), "rc": proc.returncode}
        if proc.returncode != 0:
            rec["stderr"] = err.decode(errors="replace")[-1500:]
        attempts.append(rec)
        return {"kills": kills, "missed": missed, "attempts": attempts,
                "wall_s": round(time.perf_counter() - t_round, 3), "ok": proc.returncode == 0}


def files_of(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def key_counts(folder: Path) -> dict[str, collections.Counter]:
    return {p.name: collections.Counter(pq.read_table(p, columns=["__key__"]).column("__key__").to_pylist())
            for p in sorted((folder / "data").glob("*.parquet"))}


def compare(stage: str, got: Path, ref: Path) -> dict:
    """Rows lost/duplicated and file identity of a resumed folder against the reference."""
    want = files_of(ref)
    if stage == "compress":
        want = {k: v for k, v in want.items() if not k.startswith("embeddings/")}
    have = files_of(got)
    out: dict = {
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
    if stage == "embed":
        emb = "embeddings/baseline/embeddings.parquet"
        ref_w = collections.Counter(pq.read_table(ref / emb, columns=["well_id"]).column("well_id").to_pylist())
        got_w = (collections.Counter(pq.read_table(got / emb, columns=["well_id"]).column("well_id").to_pylist())
                 if (got / emb).is_file() else collections.Counter())
        lost += sum((ref_w - got_w).values())
        dup += sum(c - 1 for c in got_w.values() if c > 1) + sum((got_w - ref_w).values())
    out.update(lost=lost, duplicated=dup, shards_with_other_rows=shard_mismatch)
    out["identical"] = not (out["missing_files"] or out["extra_files"] or out["differing_files"])
    return out


def prepare_round(stage: str, ref: Path, dest: Path) -> None:
    if stage == "compress":
        dest.mkdir(parents=True)
        shutil.copy2(ref / "lockfile.parquet", dest / "lockfile.parquet")
    else:
        shutil.copytree(ref, dest, ignore=lambda d, names: ["embeddings"] if Path(d) == ref else [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20, help="rounds per stage (each has at least one kill)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill-time RNG")
    ap.add_argument("--max-kills", type=int, default=3, help="most kills in one round")
    ap.add_argument("--rekill", type=float, default=0.5, help="probability of killing a resumed run again")
    ap.add_argument("--anywhere", type=float, default=0.25,
                    help="probability that a kill is aimed at any moment (start-up included) instead of the work")
    ap.add_argument("--compress-workers", type=int, default=1, help="rxcurate compress --workers")
    ap.add_argument("--embed-workers", type=int, default=0, help="rxcurate embed --num-workers")
    ap.add_argument("--stages", default="compress,embed", help="comma-separated subset of compress,embed")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "killtest.json")
    args = ap.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    if any(s not in STAGES for s in stages) or args.rounds < 1:
        ap.error("--stages takes compress and/or embed; --rounds must be >= 1")

    from rxcurate.synth import generate

    t_start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="rxcurate-killtest-") as tmp:
        base = Path(tmp)
        source = generate(base / "src", layout="rxrx3", preset="tiny", seed=0)
        ref = base / "ref"
        timings = {"select_s": run_to_end([*RXCURATE, "select", str(MANIFEST), "--source", str(source),
                                           "--workdir", str(ref)])[0]}
        for stage in STAGES:
            total, work = run_to_end(stage_cmd(stage, ref, source, args))
            timings[f"{stage}_clean_s"], timings[f"{stage}_clean_work_s"] = total, work
        print(f"reference: {timings}", file=sys.stderr)

        results: dict = {}
        est = {s: {"total": timings[f"{s}_clean_s"], "work": timings[f"{s}_clean_work_s"]} for s in STAGES}
        for stage in stages:
            rounds = []
            for r in range(args.rounds):
                folder = base / f"{stage}-{r:03d}"
                def reset(stage=stage, folder=folder) -> None:
                    shutil.rmtree(folder, ignore_errors=True)
                    prepare_round(stage, ref, folder)

                reset()
                rec = run_with_kills(stage_cmd(stage, folder, source, args), stage, folder, rng, est[stage], args,
                                     reset)
                rec.update(compare(stage, folder, ref) if rec["ok"] else {"identical": False, "lost": None,
                                                                           "duplicated": None})
                rounds.append(rec)
                print(f"{stage} round {r}: kills {rec['kills']}, identical {rec['identical']}, lost {rec['lost']}, "
                      f"duplicated {rec['duplicated']}, {rec['wall_s']} s", file=sys.stderr)
                if rec["identical"] and rec["ok"]:
                    shutil.rmtree(folder)
            phases = collections.Counter(a["phase"] for rd in rounds for a in rd["attempts"] if "phase" in a)
            results[stage] = {
                "rounds": len(rounds),
                "kills": sum(rd["kills"] for rd in rounds),
                "missed_kills": sum(rd["missed"] for rd in rounds),
                "kills_by_phase": dict(sorted(phases.items())),
                "failed_resumes": sum(not rd["ok"] for rd in rounds),
                "rounds_without_kill": sum(rd["kills"] == 0 for rd in rounds),
                "lost": sum(rd["lost"] or 0 for rd in rounds),
                "duplicated": sum(rd["duplicated"] or 0 for rd in rounds),
                "identical": sum(bool(rd["identical"]) for rd in rounds),
                "round_wall_s": {"mean": round(float(np.mean([rd["wall_s"] for rd in rounds])), 3),
                                 "max": round(float(np.max([rd["wall_s"] for rd in rounds])), 3)},
                "per_round": rounds,
            }
    ok = all(v["failed_resumes"] == 0 and v["lost"] == 0 and v["duplicated"] == 0 and v["identical"] == v["rounds"]
             for v in results.values())
    doc = {
        "benchmark": "killtest",
        "passed": ok,
        "manifest": MANIFEST.relative_to(REPO).as_posix(),
        "source": "rxcurate synth --layout rxrx3 --preset tiny --seed 0",
        "config": {"rounds": args.rounds, "seed": args.seed, "max_kills": args.max_kills, "rekill": args.rekill,
                   "anywhere": args.anywhere, "compress_workers": args.compress_workers,
                   "embed_workers": args.embed_workers, "signal": "SIGKILL to the process group"},
        "timings": {k: round(v, 3) for k, v in timings.items()} | {
            "total_s": round(time.perf_counter() - t_start, 3)},
        "summary": {s: {k: v for k, v in r.items() if k != "per_round"} for s, r in results.items()},
        "stages": results,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    atomic_write_json(args.out, doc)
    print(f"wrote {args.out}: passed={ok} " + ", ".join(
        f"{s}: {r['kills']} kills, lost {r['lost']}, duplicated {r['duplicated']}, identical {r['identical']}/"
        f"{r['rounds']}" for s, r in results.items()), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
