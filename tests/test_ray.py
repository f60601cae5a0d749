"""`--engine ray`: compress and embed as Ray Data pipelines on a local 2-CPU Ray, byte-identical to the local engine."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import rxcurate.compress as C
import rxcurate.embed as E
import rxcurate.runners as R
from rxcurate.cli import app, main
from rxcurate.errors import CompressError, EngineError
from rxcurate.layout import COMPRESS_STATE, EMBED_STATE, LOCKFILE, SOURCE_HINT, read_lockfile
from rxcurate.manifest import load_manifest
from rxcurate.select import select

REPO = Path(__file__).resolve().parents[1]
TINY3 = REPO / "tests" / "data" / "manifests" / "tiny-rxrx3.yaml"
COMPRESS_OUTPUTS = ("data", "metadata.csv", "metadata.parquet", "compression_report.json", "checksums.json")
TILE = 32
LOCK_FILES = (LOCKFILE, SOURCE_HINT)  # what select writes: the lockfile + this machine's source-path hint


def digest(work: Path, parts: tuple[str, ...]) -> dict[str, str]:
    """sha256 of every file under ``parts`` of ``work``, by relative path."""
    out = {}
    for part in parts:
        root = work / part
        for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if p.is_file():
                out[str(p.relative_to(work))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tiny_rxrx3, tmp_path_factory):
    """Select + local compress (serial) + local baseline embed of the tiny recipe; read-only."""
    work = tmp_path_factory.mktemp("ray-reference")
    m = load_manifest(TINY3)
    select(m, source=tiny_rxrx3, workdir=work)
    C.compress(m, workdir=work, workers=1)
    E.run_embed(work, "baseline", tile=TILE, num_workers=0)
    return work


def _lock_only(reference: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in LOCK_FILES:
        shutil.copy2(reference / name, dest / name)
    return dest


def _compressed(reference: Path, dest: Path) -> Path:
    """A release folder as compress left it (no embeddings)."""
    dest.mkdir(parents=True)
    for name in (*LOCK_FILES, *COMPRESS_OUTPUTS):
        src = reference / name
        shutil.copytree(src, dest / name) if src.is_dir() else shutil.copy2(src, dest / name)
    return dest


def _count_calls(monkeypatch, module, name: str, arg: str) -> list[int]:
    """Wrap ``module.name`` and record ``len`` of its argument ``arg`` per call (how much work was dispatched)."""
    real, seen = getattr(module, name), []

    def wrapper(*args, **kwargs):
        import inspect

        bound = inspect.signature(real).bind(*args, **kwargs)
        seen.append(len(bound.arguments[arg]))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return seen


@pytest.fixture
def no_ray():
    """No Ray running in this process (shuts down the module's shared instance if it is up, restores it after)."""
    ray = pytest.importorskip("ray")
    was_up = ray.is_initialized()
    if was_up:
        ray.shutdown()
    yield ray
    if ray.is_initialized():
        ray.shutdown()
    if was_up:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")


def test_release_engine_ray_one_session_same_bytes_as_local(no_ray, reference, tiny_rxrx3, tmp_path, monkeypatch):
    """`rxcurate release --engine ray` starts Ray once around compress and embed, publishes the local engine's bytes
    and validates."""
    from rxcurate.publish.local import LocalHub

    ray = no_ray
    monkeypatch.setenv("RXCURATE_PROGRESS", "0")
    raw = yaml.safe_load(TINY3.read_text())
    raw.update(embeddings=[{"encoder": "baseline", "tile_size": TILE}], benchmarks=["perturbation-signal"],
               card={"repo_id": "test/tiny-ray", "pretty_name": "Tiny (Ray)"})
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(raw, sort_keys=False))

    events: list[str] = []
    real_init, real_shutdown = ray.init, ray.shutdown

    def init(*args, **kwargs):
        events.append("init")
        return real_init(*args, **{**kwargs, "num_cpus": 2})

    def shutdown(*args, **kwargs):
        events.append("shutdown")
        return real_shutdown(*args, **kwargs)

    def traced(name, real):
        def wrapper(*args, **kwargs):
            events.append(f"{name}:{'ray up' if ray.is_initialized() else 'no ray'}")
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", shutdown)
    monkeypatch.setattr(R.RayRunner, "map", traced("compress", R.RayRunner.map))  # compress: one task per unit
    monkeypatch.setattr(R.RayRunner, "map_then", traced("embed", R.RayRunner.map_then))  # embed: decode + encode
    w, hub = tmp_path / "w", tmp_path / "hub"
    r = CliRunner().invoke(app, ["release", str(manifest), "--source", str(tiny_rxrx3), "--hub", str(hub),
                                 "--workdir", str(w), "--engine", "ray", "--workers", "2", "--json"])
    assert r.exit_code == 0, r.output[-3000:]
    assert events == ["init", "compress:ray up", "embed:ray up", "shutdown"]  # one session around both stages
    assert not ray.is_initialized()
    summary = json.loads(r.stdout)
    assert summary["validation_ok"] is True and summary["status"]["publish"] == "published"
    assert digest(w, COMPRESS_OUTPUTS) == digest(reference, COMPRESS_OUTPUTS)
    assert digest(w, ("embeddings",)) == digest(reference, ("embeddings",))
    published = LocalHub(hub)
    for rel, sha in digest(reference, ("data", "embeddings")).items():
        assert hashlib.sha256(published.read_file("test/tiny-ray", "0.1.0", rel)).hexdigest() == sha, rel


@pytest.mark.parametrize(("flags", "message"), [
    (["--engine", "spark"], "error: --engine: bad value 'spark'; valid: local, ray"),
    (["--engine", "ray", "--address", "127.0.0.1:1"], "error: --address 127.0.0.1:1: no Ray cluster answers"),
])
def test_release_bad_engine_or_address_is_refused_before_any_work(flags, message, tiny_rxrx3, tmp_path, capsys):
    w = tmp_path / "w"
    with pytest.raises(SystemExit) as exc:
        main(["release", str(TINY3), "--source", str(tiny_rxrx3), "--hub", str(tmp_path / "hub"), "--workdir",
              str(w), *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not w.exists() and not (tmp_path / "hub").exists()


def test_compress_ray_is_byte_identical_to_local(ray_local, reference, tmp_path):
    w = _lock_only(reference, tmp_path / "w")
    r = CliRunner().invoke(app, ["compress", str(TINY3), "--workdir", str(w), "--engine", "ray", "--workers", "2"])
    assert r.exit_code == 0, r.output
    assert "(written)" in r.output
    assert digest(w, COMPRESS_OUTPUTS) == digest(reference, COMPRESS_OUTPUTS)
    assert not (w / COMPRESS_STATE).exists()
    # a second ray run is a no-op
    assert C.compress(load_manifest(TINY3), workdir=w, runner=R.RayRunner()).up_to_date


def test_compress_ray_resumes_a_partial_run(ray_local, reference, tmp_path, monkeypatch):
    m = load_manifest(TINY3)
    w = _lock_only(reference, tmp_path / "w")
    n_units = -(-read_lockfile(w).table.num_rows // C.WELLS_PER_UNIT)
    real_write, writes = C.atomic_write_bytes, {"n": 0}  # the stage's unit-file writer (looked up per call)

    def failing_write(dest, data):
        writes["n"] += str(dest).endswith(".arrow")
        if writes["n"] == 4:
            raise KeyboardInterrupt  # the driver dies after three unit checkpoints
        return real_write(dest, data)

    monkeypatch.setattr(C, "atomic_write_bytes", failing_write)
    with pytest.raises(KeyboardInterrupt):
        C.compress(m, workdir=w, runner=R.RayRunner())
    monkeypatch.setattr(C, "atomic_write_bytes", real_write)
    assert len(list((w / COMPRESS_STATE / "units").glob("u*.arrow"))) == 3
    assert not (w / "data").exists() and not (w / "checksums.json").exists()

    dispatched = _count_calls(monkeypatch, R.RayRunner, "map", "items")
    C.compress(m, workdir=w, runner=R.RayRunner())
    assert dispatched == [n_units - 3]  # only the missing units went to Ray
    assert digest(w, COMPRESS_OUTPUTS) == digest(reference, COMPRESS_OUTPUTS)


def test_compress_ray_bad_image_is_a_domain_error_with_no_output(ray_local, reference, tiny_rxrx3, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_rxrx3, src)
    w = _lock_only(reference, tmp_path / "w")
    rel = read_lockfile(w).table.column("images").to_pylist()[5][2]
    (src / rel).unlink()
    with pytest.raises(CompressError) as exc:
        C.compress(load_manifest(TINY3), source=src, workdir=w, runner=R.RayRunner())
    assert str(src / rel) in str(exc.value) and "source image is missing" in str(exc.value)
    assert not (w / "data").exists() and not (w / "checksums.json").exists()


def test_embed_ray_equals_local(ray_local, reference, tmp_path):
    w = _compressed(reference, tmp_path / "w")
    r = CliRunner().invoke(app, ["embed", str(w), "--encoder", "baseline", "--tile", str(TILE), "--engine", "ray"])
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[-1] == str(w / "embeddings" / "baseline" / "embeddings.parquet")
    assert digest(w, ("embeddings",)) == digest(reference, ("embeddings",))  # parquet and info.json, bytewise
    assert not (w / EMBED_STATE).exists()


def test_embed_ray_partial_run_resumes_on_either_engine(ray_local, reference, tmp_path, monkeypatch):
    w = _compressed(reference, tmp_path / "w")
    n_shards = len(list((w / "data").glob("*.parquet")))
    assert n_shards >= 3
    real_save, saves = E._save_unit, {"n": 0}

    def failing_save(path, arrays):
        saves["n"] += 1
        if saves["n"] == 3:
            raise KeyboardInterrupt  # killed after two shard checkpoints
        return real_save(path, arrays)

    monkeypatch.setattr(E, "_save_unit", failing_save)
    with pytest.raises(KeyboardInterrupt):
        E.run_embed(w, "baseline", tile=TILE, runner=R.RayRunner())
    monkeypatch.setattr(E, "_save_unit", real_save)
    assert len(list((w / EMBED_STATE).rglob("unit-*.npz"))) == 2
    assert not (w / "embeddings").exists()

    # the checkpoints are engine-independent: the local engine finishes what Ray started
    dispatched = _count_calls(monkeypatch, E, "_embed_pending", "pending")
    E.run_embed(w, "baseline", tile=TILE, num_workers=0)
    assert dispatched == [n_shards - 2]
    assert digest(w, ("embeddings",)) == digest(reference, ("embeddings",))


def test_engine_and_address_validation(reference, tmp_path, monkeypatch, capsys):
    w = _lock_only(reference, tmp_path / "w")
    with pytest.raises(EngineError, match="--engine: bad value 'spark'; valid: local, ray"):
        R.make_runner("spark")
    with pytest.raises(EngineError, match="valid: local, ray"):
        R.make_runner("dask", "auto")
    for bad in ("not an address", "host:99999", "10.0.0.5"):
        with pytest.raises(EngineError, match="--address: bad value"):
            R.make_runner("ray", bad)
    # a well-formed address where nothing listens: one clean line at the CLI, exit 2, nothing written
    with pytest.raises(SystemExit) as exc:
        main(["compress", str(TINY3), "--workdir", str(w), "--engine", "ray", "--address", "127.0.0.1:1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --address 127.0.0.1:1: no Ray cluster answers there") and err.count("\n") == 1
    assert sorted(p.name for p in w.iterdir()) == sorted(LOCK_FILES)


def test_ray_missing_names_the_extra(reference, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    w = _lock_only(reference, tmp_path / "w")
    with pytest.raises(EngineError, match=r'pip install "rxcurate\[ray\]"'):
        R.make_runner("ray")
    with pytest.raises(SystemExit) as exc:
        main(["embed", str(reference), "--encoder", "baseline", "--tile", str(TILE), "--engine", "ray"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert 'pip install "rxcurate[ray]"' in err and "Traceback" not in err
    assert sorted(p.name for p in w.iterdir()) == sorted(LOCK_FILES)


@pytest.mark.parametrize("command", ["compress", "embed", "release"])
def test_help_lists_engine_and_address(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "--engine" in result.output and "--address" in result.output and "ray" in result.output
