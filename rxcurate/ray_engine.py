"""The Ray engine (``--engine ray``): compress and embed as Ray Data pipelines, on one machine or a cluster.

Only the expensive, embarrassingly parallel part of each stage runs on Ray; planning, checkpoints, packing and the
final outputs stay in :mod:`rxcurate.compress` / :mod:`rxcurate.embed`, so both engines share one resume logic and
write the same bytes.

- **compress**: one Ray Data row per pending unit (``WELLS_PER_UNIT`` wells); a CPU task reads, checks, decodes, crops
  and JPEG 2000-encodes its images (:func:`rxcurate.compress.encode_unit_bytes`) and returns the unit file's bytes;
  the driver writes each unit checkpoint atomically as it arrives (workers need read access to the source only).
- **embed**: one row per batch of sites (the local engine's batches); CPU tasks decode the shards' JPEG 2000 images
  into tiles, an autoscaling actor pool holding the encoder (``num_gpus=1`` per actor on CUDA) encodes them, and the
  driver adds each shard's batches in batch order (so sums are bitwise equal) and checkpoints the shard.

Scheduling, retries of failed tasks/actors and backpressure are Ray Data's. Bad input (a corrupt image) is returned
as a value and raised on the driver as the stage's domain error, so it is neither retried nor a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rxcurate.errors import CompressError, EmbedError, RxcurateError

INSTALL_HINT = 'pip install "rxcurate[ray]"'
_ADDRESS = re.compile(r"^(?:ray://)?(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")
_QUIET_LOGGERS = ("ray", "ray.data", "ray._private", "ray.util")


def _import_ray(error: type[RxcurateError]) -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise error(f"--engine ray needs Ray Data, which is not installed: {INSTALL_HINT} (or use --engine local)"
                    ) from None
    return ray


def check_address(address: str | None, error: type[RxcurateError]) -> None:
    """Validate ``--address`` before any work: None/``local`` (start a local Ray), ``auto`` (the cluster this machine
    belongs to), ``HOST:PORT`` (a cluster's GCS) or ``ray://HOST:PORT`` (Ray Client); a HOST:PORT must answer."""
    if address is None or address in ("auto", "local"):
        return
    m = _ADDRESS.match(address)
    if m is None or not 0 < int(m["port"]) < 65536:
        raise error(f"--address: bad value {address!r}; valid: auto, HOST:PORT of a running Ray cluster (e.g. "
                    "10.0.0.5:6379), ray://HOST:10001, or omit it to start a local Ray")
    host = m["host"].strip("[]")
    try:
        with socket.create_connection((host, int(m["port"])), timeout=3):
            pass
    except OSError as exc:
        raise error(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); start one with "
                    "`ray start --head`, pass --address auto on a cluster node, or omit --address") from None


def check_ray(address: str | None, error: type[RxcurateError]) -> None:
    """Fail fast (before any work) when Ray is missing or ``address`` is unusable."""
    _import_ray(error)
    check_address(address, error)


@contextlib.contextmanager
def ray_session(address: str | None, error: type[RxcurateError], num_cpus: int | None = None) -> Iterator[Any]:
    """Use the Ray instance already initialised in this process, else connect (``address``) or start a local one
    (quiet: no dashboard, worker logs not forwarded); shut down only what this call started."""
    ray = _import_ray(error)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.enable_auto_log_stats = False
    ctx.print_on_execution_start = False
    if ray.is_initialized():
        yield ray
        return
    check_address(address, error)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
                              "configure_logging": True}
    try:
        if address in (None, "local"):
            ray.init(address="local", num_cpus=num_cpus, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"cannot start or reach Ray (--address {address or 'local'}): {first}; check the address "
                    "(`ray status` on the head node) or omit --address to start a local Ray") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _cpus_per_task(ray: Any) -> float:
    """1 CPU per task/actor; half on a 1-CPU instance so decode tasks and an encoder actor can run side by side."""
    return 1.0 if ray.cluster_resources().get("CPU", 1) >= 2 else 0.5


# ---------------------------------------------------------------------------------------------------- compress


def _encode_row(row: dict[str, Any]) -> dict[str, Any]:
    """Ray task body: encode one unit (bad input comes back as ``error``, not as an exception)."""
    from rxcurate.compress import encode_unit_bytes

    task = pickle.loads(row["task"])
    try:
        data, summary = encode_unit_bytes(task)
    except CompressError as exc:
        return {"index": task.index, "images": 0, "unit": b"", "error": str(exc)}
    return {"index": task.index, "images": summary["images"], "unit": data, "error": ""}


def encode_units(tasks: Sequence[Any], advance: Callable[[int], None], *, address: str | None = None,
                 workers: int | None = None) -> None:
    """Encode the pending ``UnitTask`` s of :func:`rxcurate.compress.compress` on Ray and write their unit files
    (``task.dest``) atomically as they finish; ``workers`` caps concurrent tasks (None: every CPU of the cluster)."""
    from rxcurate.io import atomic_write_bytes

    if not tasks:
        return
    dest = {t.index: Path(t.dest) for t in tasks}
    items = [{"index": t.index, "task": pickle.dumps(t, protocol=5)} for t in tasks]
    with ray_session(address, CompressError) as ray:
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map(_encode_row, num_cpus=_cpus_per_task(ray), compute=ray.data.TaskPoolStrategy(size=workers or None))
        for row in ds.iter_rows():
            if row["error"]:
                raise CompressError(row["error"])
            atomic_write_bytes(dest[row["index"]], row["unit"])
            advance(row["images"])


# ------------------------------------------------------------------------------------------------------- embed

_READERS: dict[tuple, Any] = {}  # per worker process: keeps SiteTiles' row-group cache across batches


def _decode_row(row: dict[str, Any], shards: list[str], image_shape: tuple[int, int], tile: int,
                channels: int) -> dict[str, Any]:
    """Ray task body: decode one batch of sites into uint8 tiles (``collate_sites`` of the local engine)."""
    from rxcurate.embed import SiteTiles, collate_sites

    index, sites = pickle.loads(row["spec"])
    key = (tuple(shards), tuple(image_shape), tile)
    reader = _READERS.get(key)
    if reader is None:
        _READERS.clear()
        reader = _READERS[key] = SiteTiles([Path(s) for s in shards], [], image_shape, tile)
    reader.sites = list(sites)
    batch = collate_sites([reader[i] for i in range(len(sites))])
    if batch["error"]:
        return {"b": row["b"], "error": batch["error"], "index": np.zeros(0, np.int64), "counts": np.zeros(0, np.int64),
                "tiles": np.zeros((0, channels, tile, tile), np.uint8)}
    return {"b": row["b"], "error": "", "index": np.asarray(index, np.int64), "counts": batch["counts"].numpy(),
            "tiles": batch["tiles"].numpy()}


class _EncoderActor:
    """Actor holding one encoder (on its GPU when ``device`` is cuda); configured by subclassing (see
    :func:`_actor_class`): Ray Data then ships the settings with the class instead of as restartable arguments."""

    ENCODER_KWARGS: dict[str, Any] = {}
    BLOCKS: list[str] = []
    OUTPUTS: list[str] = []

    def __init__(self) -> None:
        from rxcurate.encoders import get_encoder

        self.enc = get_encoder(**self.ENCODER_KWARGS)
        self.blocks = list(self.BLOCKS)
        self.outputs = list(self.OUTPUTS)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        import torch

        out = {"b": row["b"], "error": row["error"], "index": row["index"], "counts": row["counts"]}
        if row["error"]:
            return {**out, **{f"v_{k}": np.zeros((0, 0), np.float32) for k in self.outputs}}
        cuda = self.enc.device.type == "cuda"
        tiles = torch.from_numpy(np.ascontiguousarray(row["tiles"]))
        if cuda:
            tiles = tiles.pin_memory()
        vectors = self.enc.encode(tiles.to(self.enc.device, non_blocking=cuda), self.blocks)
        return {**out, **{f"v_{k}": vectors[k].cpu().numpy() for k in self.outputs}}


def _actor_class(encoder_kwargs: dict[str, Any], blocks: list[str], outputs: list[str]) -> type[_EncoderActor]:
    return type("EncoderActor", (_EncoderActor,), {"ENCODER_KWARGS": dict(encoder_kwargs), "BLOCKS": list(blocks),
                                                   "OUTPUTS": list(outputs)})


def embed_units(plan: Any, enc: Any, block_list: list[str], outputs: list[str], pending: list[int],
                unit_path: list[Path], batch_size: int, num_workers: int | None, keep_tiles: bool, *,
                encoder_kwargs: dict[str, Any], address: str | None = None) -> None:
    """The Ray counterpart of ``rxcurate.embed._embed_units``: same batches, same per-shard checkpoints.

    ``encoder_kwargs`` rebuild the driver's encoder in each actor (:func:`rxcurate.encoders.get_encoder`);
    ``num_workers`` caps concurrent decode tasks (None/0: Ray's default, every free CPU)."""
    from rxcurate.embed import _batches, _save_unit, add_batch, unit_sums
    from rxcurate.progress import progress

    if not pending:
        return
    sites_per_batch = max(1, batch_size // plan.tiles_per_image)
    batches, owner = _batches(plan, pending, sites_per_batch)
    expected: dict[int, int] = {}
    for u in owner:
        expected[u] = expected.get(u, 0) + 1
    items = [{"b": b, "spec": pickle.dumps((idx, [plan.sites[i] for i in idx]), protocol=5)}
             for b, idx in enumerate(batches)]
    cuda = enc.device.type == "cuda"
    with ray_session(address, EmbedError) as ray:
        cpus = _cpus_per_task(ray)
        if cuda:
            gpus = int(ray.cluster_resources().get("GPU", 0))
            if gpus < 1:
                raise EmbedError("--device cuda with --engine ray: the Ray cluster has no GPU; use --device cpu")
            actor_args: dict[str, Any] = {"num_gpus": 1, "num_cpus": cpus, "compute": ray.data.ActorPoolStrategy(
                min_size=1, max_size=gpus)}
        else:  # Ray Data fuses decode into the CPU actors: one actor per CPU
            most = max(1, int(ray.cluster_resources().get("CPU", 1)))
            actor_args = {"num_cpus": cpus, "compute": ray.data.ActorPoolStrategy(min_size=1, max_size=most)}
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map(_decode_row, num_cpus=cpus, compute=ray.data.TaskPoolStrategy(size=num_workers or None),
                    fn_kwargs={"shards": [str(p) for p in plan.shards], "image_shape": tuple(plan.image_shape),
                               "tile": plan.tile, "channels": len(plan.channels)})
        ds = ds.map(_actor_class(encoder_kwargs, block_list, outputs), **actor_args)
        buffered: dict[int, dict[int, tuple]] = {}
        total = sum(len(b) for b in batches)
        with progress(total, f"embed {enc.name} (ray)", unit="sites") as advance:
            for row in ds.iter_rows():
                if row["error"]:
                    raise EmbedError(row["error"])
                b = int(row["b"])
                u = owner[b]
                index = np.asarray(row["index"], np.int64)
                arrays = {k: np.asarray(row[f"v_{k}"]) for k in outputs}
                buffered.setdefault(u, {})[b] = (index, np.asarray(row["counts"], np.int64), arrays)
                if len(buffered[u]) == expected[u]:
                    acc = unit_sums(plan, u, outputs, keep_tiles)
                    for _, (idx, counts, arr) in sorted(buffered.pop(u).items()):
                        add_batch(plan, acc, idx, counts, arr)
                    _save_unit(unit_path[u], acc.arrays())
                advance(len(index))
