"""Runners: where a stage's parallel work runs (``--engine local|ray``). Stages are handed one; they never import Ray.

A :class:`Runner` applies a stage's *work function* (a picklable top-level function or picklable callable object)
to a list of picklable *items* and yields ``(index, result)`` pairs as results arrive, in any order; the stage owns
planning, checkpoints and the order in which it combines results, so both runners give the same bytes.

- :meth:`Runner.map`: ``fn(item)`` for every item (compress encodes one unit of wells per item).
- :meth:`Runner.map_then`: ``load(item)`` in parallel CPU workers, then ``step(loaded)`` in a stateful worker that
  ``make_step()`` builds once (embed: decode tiles, then encode them with one encoder per worker/GPU).
- :meth:`Runner.session`: the runner's session (Ray: one session that several stages share; local: nothing).

Both map methods are generators: a caller that stops early (its own error) closes them (``contextlib.closing``) so
the workers stop (and a Ray session this call started ends) at once.

:class:`LocalRunner` uses a fork process pool (``map``) and a torch DataLoader (``map_then``) on this machine;
:class:`RayRunner` runs Ray Data pipelines (tasks, and an autoscaling actor pool for the step, one GPU per actor
with ``gpu``) on a local Ray or a cluster. A domain error (:class:`~rxcurate.errors.RxcurateError`) raised by a work
function is never retried: it stops the work and is re-raised, as it is, where the stage iterates the results.

Layer: shared (imports only errors).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import re
import socket
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from typing import Any, Protocol, TypeVar

from rxcurate.errors import EngineError, RxcurateError

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

ENGINES = ("local", "ray")
INSTALL_HINT = 'pip install "rxcurate[ray]"'
_ADDRESS = re.compile(r"^(?:ray://)?(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")
_QUIET_LOGGERS = ("ray", "ray.data", "ray._private", "ray.util")


class Runner(Protocol):
    """Where a stage's parallel work runs. ``workers`` caps the parallel workers of one call (None: the runner's
    default); results come as ``(index into items, result)`` in any order."""

    def session(self) -> contextlib.AbstractContextManager[None]:
        """A context in which several calls share one engine session (nothing for the local runner)."""
        ...

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, workers: int | None = None
            ) -> Generator[tuple[int, R], None, None]:
        """``fn(items[i])`` for every ``i``; the first exception stops the work and propagates."""
        ...

    def map_then(self, load: Callable[[T], R], items: Sequence[T], make_step: Callable[[], Callable[[R], S]], *,
                 workers: int | None = None, gpu: bool = False) -> Generator[tuple[int, S], None, None]:
        """``step(load(items[i]))`` for every ``i``: ``load`` in parallel CPU workers, ``step`` in stateful
        workers built once each by ``make_step()`` (on a GPU each with ``gpu``)."""
        ...


def make_runner(engine: str, address: str | None = None) -> Runner:
    """The runner of ``--engine`` (``local`` or ``ray``); for ``ray``, Ray and ``--address`` are checked now,
    before any work."""
    if engine not in ENGINES:
        raise EngineError(f"--engine: bad value {engine!r}; valid: {', '.join(ENGINES)}")
    if engine == "local":
        return LocalRunner()
    runner = RayRunner(address)
    runner.check()
    return runner


# ------------------------------------------------------------------------------------------------------- local


def default_loaders() -> int:
    """Loader processes of :meth:`LocalRunner.map_then` by default: cores - 1 (this process runs the step), at
    most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


class _Loaded:
    """Map-style dataset ``i -> load(items[i])`` (a DataLoader with ``batch_size=None`` yields each item as is)."""

    def __init__(self, load: Callable[[Any], Any], items: Sequence[Any]) -> None:
        self.load = load
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.load(self.items[i])


def _as_is(x: Any) -> Any:
    return x


class LocalRunner:
    """This machine: ``map`` in a fork process pool (in-process with one worker or one item; None = one process
    per core), ``map_then`` loading in torch DataLoader processes (0 = in-process; None = :func:`default_loaders`)
    and stepping in this process."""

    def session(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, workers: int | None = None
            ) -> Generator[tuple[int, R], None, None]:
        n_workers = max(1, workers or os.cpu_count() or 1)
        if n_workers == 1 or len(items) <= 1:
            for i, item in enumerate(items):
                yield i, fn(item)
            return
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(n_workers, len(items)), mp_context=ctx) as pool:
            try:
                order: dict[Future[R], int] = {pool.submit(fn, item): i for i, item in enumerate(items)}
                remaining = set(order)
                while remaining:
                    finished, remaining = wait(remaining, return_when=FIRST_EXCEPTION)
                    for f in sorted(finished, key=order.__getitem__):
                        exc = f.exception()
                        if exc is not None:
                            raise exc
                        yield order[f], f.result()
            finally:  # an error, or the caller stopped early (closed the generator): drop the queued items
                pool.shutdown(wait=True, cancel_futures=True)

    def map_then(self, load: Callable[[T], R], items: Sequence[T], make_step: Callable[[], Callable[[R], S]], *,
                 workers: int | None = None, gpu: bool = False) -> Generator[tuple[int, S], None, None]:
        import torch  # heavy: only the local two-stage pipeline (embed) loads with a DataLoader

        n = default_loaders() if workers is None else workers
        dataset: Any = _Loaded(load, items)  # map-style (len + getitem): all a DataLoader needs
        loader: Iterable[Any] = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=n,
                                                            collate_fn=_as_is, pin_memory=gpu,
                                                            prefetch_factor=4 if n > 0 else None)
        step = make_step()
        for i, loaded in enumerate(loader):
            yield i, step(loaded)


# --------------------------------------------------------------------------------------------------------- ray


def _import_ray() -> Any:
    try:
        import ray  # heavy, optional: only --engine ray (the rxcurate[ray] extra)
        import ray.data  # noqa: F401
    except ImportError:
        raise EngineError(f"--engine ray needs Ray Data, which is not installed: {INSTALL_HINT} (or use --engine "
                          "local)") from None
    return ray


def check_address(address: str | None) -> None:
    """Validate ``--address`` before any work: None/``local`` (start a local Ray), ``auto`` (the cluster this machine
    belongs to), ``HOST:PORT`` (a cluster's GCS) or ``ray://HOST:PORT`` (Ray Client); a HOST:PORT must answer."""
    if address is None or address in ("auto", "local"):
        return
    m = _ADDRESS.match(address)
    if m is None or not 0 < int(m["port"]) < 65536:
        raise EngineError(f"--address: bad value {address!r}; valid: auto, HOST:PORT of a running Ray cluster (e.g. "
                          "10.0.0.5:6379), ray://HOST:10001, or omit it to start a local Ray")
    host = m["host"].strip("[]")
    try:
        with socket.create_connection((host, int(m["port"])), timeout=3):
            pass
    except OSError as exc:
        raise EngineError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); start one "
                          "with `ray start --head`, pass --address auto on a cluster node, or omit --address") from None


def _cpus_per_task(ray: Any) -> float:
    """1 CPU per task/actor; half on a 1-CPU instance so load tasks and a step actor can run side by side."""
    return 1.0 if ray.cluster_resources().get("CPU", 1) >= 2 else 0.5


def _call(fn: Callable[[Any], Any], payload: bytes) -> dict[str, Any]:
    """``fn`` on a pickled argument; a domain error comes back as a value (so Ray neither retries nor wraps it)."""
    try:
        out = fn(pickle.loads(payload))
    except RxcurateError as exc:
        return {"out": b"", "error": pickle.dumps(exc)}
    return {"out": pickle.dumps(out, protocol=5), "error": b""}


def _task_row(row: dict[str, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    """Ray task body: one item."""
    return {"i": row["i"], **_call(fn, row["item"])}


class _StepActor:
    """Actor holding one step; configured by subclassing (see :func:`_actor_class`): Ray Data then ships the factory
    with the class instead of as restartable arguments."""

    MAKE_STEP: Callable[[], Callable[[Any], Any]] | None = None

    def __init__(self) -> None:
        assert self.MAKE_STEP is not None
        self.step = type(self).MAKE_STEP()  # type: ignore[misc]

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        if row["error"]:
            return dict(row)
        return {"i": row["i"], **_call(self.step, row["out"])}


def _actor_class(make_step: Callable[[], Callable[[Any], Any]]) -> type[_StepActor]:
    return type("StepActor", (_StepActor,), {"MAKE_STEP": staticmethod(make_step)})


class RayRunner:
    """Ray Data on the cluster at ``address`` (None/``local``: start a local Ray; ``auto``: the cluster this machine
    belongs to; ``HOST:PORT`` or ``ray://HOST:10001``). ``workers`` caps concurrent tasks (None: every CPU)."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def check(self) -> None:
        """Fail fast (before any work) when Ray is missing or the address is unusable."""
        _import_ray()
        check_address(self.address)

    @contextlib.contextmanager
    def session(self, num_cpus: int | None = None) -> Iterator[None]:
        """Use the Ray instance already initialised in this process, else connect (``address``) or start a local one
        (quiet: no dashboard, worker logs not forwarded); shut down only what this call started."""
        with self._ray(num_cpus):
            yield

    @contextlib.contextmanager
    def _ray(self, num_cpus: int | None = None) -> Iterator[Any]:
        ray = _import_ray()
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
        check_address(self.address)
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
                                  "configure_logging": True}
        try:
            if self.address in (None, "local"):
                ray.init(address="local", num_cpus=num_cpus, **kwargs)
            else:
                ray.init(address=self.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"cannot start or reach Ray (--address {self.address or 'local'}): {first}; check the "
                              "address (`ray status` on the head node) or omit --address to start a local Ray"
                              ) from None
        try:
            yield ray
        finally:
            ray.shutdown()

    @staticmethod
    def _dataset(ray: Any, items: Sequence[Any]) -> Any:
        rows = [{"i": i, "item": pickle.dumps(item, protocol=5)} for i, item in enumerate(items)]
        return ray.data.from_items(rows, override_num_blocks=len(rows))

    @staticmethod
    def _results(ds: Any) -> Generator[tuple[int, Any], None, None]:
        for row in ds.iter_rows():
            if row["error"]:
                raise pickle.loads(row["error"])
            yield int(row["i"]), pickle.loads(row["out"])

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, workers: int | None = None
            ) -> Generator[tuple[int, R], None, None]:
        if not items:
            return
        with self._ray() as ray:
            ds = self._dataset(ray, items).map(_task_row, fn_kwargs={"fn": fn}, num_cpus=_cpus_per_task(ray),
                                               compute=ray.data.TaskPoolStrategy(size=workers or None))
            yield from self._results(ds)

    def map_then(self, load: Callable[[T], R], items: Sequence[T], make_step: Callable[[], Callable[[R], S]], *,
                 workers: int | None = None, gpu: bool = False) -> Generator[tuple[int, S], None, None]:
        if not items:
            return
        with self._ray() as ray:
            cpus = _cpus_per_task(ray)
            if gpu:
                gpus = int(ray.cluster_resources().get("GPU", 0))
                if gpus < 1:
                    raise EngineError("--device cuda with --engine ray: the Ray cluster has no GPU; use --device cpu")
                actor_args: dict[str, Any] = {"num_gpus": 1, "num_cpus": cpus,
                                              "compute": ray.data.ActorPoolStrategy(min_size=1, max_size=gpus)}
            else:  # Ray Data fuses the load into the CPU actors: one actor per CPU
                most = max(1, int(ray.cluster_resources().get("CPU", 1)))
                actor_args = {"num_cpus": cpus, "compute": ray.data.ActorPoolStrategy(min_size=1, max_size=most)}
            ds = self._dataset(ray, items).map(_task_row, fn_kwargs={"fn": load}, num_cpus=cpus,
                                               compute=ray.data.TaskPoolStrategy(size=workers or None))
            ds = ds.map(_actor_class(make_step), **actor_args)
            yield from self._results(ds)
