"""The resumable-stage helper shared by compress and embed: a state folder with a lock, a state key and unit files.

A stage's state lives in a hidden folder of the release folder (``.compress-state/``, ``.embed-state/<encoder>/``,
names from :mod:`rxcurate.layout`)::

    lock          flock'ed while a run works here (a second run is refused, naming the folder)
    state.json    the state key: what the units belong to (data version, settings, run key ...)
    units/        one file per finished unit of work, written atomically: a unit file exists only when complete

A run takes the lock, :meth:`Checkpoint.reset` s the folder unless its key matches (then it *resumes*: only units
whose file is missing are computed), writes outputs atomically, :meth:`Checkpoint.done` (drops the key first, so
leftovers are never mistaken for a resumable state) and, after the lock, :meth:`Checkpoint.discard` s the folder.
:func:`read_record` and :func:`remove_temp_files` serve the stages' up-to-date checks and clean-up of a killed
run's atomic-write leftovers (``.<name>.<random>.tmp``).

Layer: shared (imports only errors and io).
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rxcurate.errors import CheckpointError
from rxcurate.io import atomic_write_json, read_json

LOCK = "lock"
STATE_KEY = "state.json"
UNITS = "units"


class Checkpoint:
    """The state folder ``root/<parts...>`` of one stage run. ``busy`` is the message of the error raised when
    another run holds the lock (name the command and the fix)."""

    def __init__(self, root: str | Path, *parts: str, busy: str) -> None:
        self.root = Path(root)
        self.folder = self.root.joinpath(*parts)
        self.busy = busy

    @property
    def units(self) -> Path:
        return self.folder / UNITS

    @property
    def active(self) -> bool:
        """A state key is present: a run started here and did not finish."""
        return (self.folder / STATE_KEY).is_file()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock (non-blocking: :class:`CheckpointError` with ``busy`` when another run has it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / LOCK, "a+") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CheckpointError(self.busy) from None
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def reset(self, key: Mapping[str, Any], subdirs: Iterable[str] = ()) -> bool:
        """Keep the folder when its state key equals ``key`` (resume); else empty it (all but the lock), create
        ``units/`` and ``subdirs`` and save ``key``. True when a state of another key was discarded."""
        current = read_json(self.folder / STATE_KEY) if self.active else None
        if current == dict(key):
            return False
        for child in self.folder.iterdir():
            if child.name != LOCK:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        for name in (UNITS, *subdirs):
            (self.folder / name).mkdir()
        atomic_write_json(self.folder / STATE_KEY, dict(key))
        return current is not None

    def unit(self, name: str) -> Path:
        """Path of a unit file (present only when the unit is complete)."""
        return self.units / name

    def remove_temp_files(self) -> None:
        """A killed run's atomic-write leftovers anywhere in the state folder."""
        if self.folder.is_dir():
            for p in self.folder.rglob(".*.tmp"):
                p.unlink(missing_ok=True)

    def done(self) -> None:
        """The run finished (its outputs are written): drop the state key first, so that leftovers are never
        mistaken for a resumable state."""
        (self.folder / STATE_KEY).unlink(missing_ok=True)

    def discard(self) -> None:
        """Delete the state folder, and its parents up to ``root`` when they are left empty."""
        shutil.rmtree(self.folder, ignore_errors=True)
        parent = self.folder.parent
        while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def read_record(path: Path, expect: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON object at ``path`` when it is readable and holds every item of ``expect``, else None (the stages'
    up-to-date checks: compress's checksums.json, embed's info.json)."""
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in expect.items()):
        return None
    return record


def remove_temp_files(folder: Path, names: Iterable[str]) -> None:
    """A killed run's atomic-write leftovers (``.<name>.<random>...tmp``) of the files ``names`` (globs allowed)
    in ``folder``."""
    if folder.is_dir():
        for name in names:
            for p in folder.glob(f".{name}.*.tmp"):
                p.unlink(missing_ok=True)
