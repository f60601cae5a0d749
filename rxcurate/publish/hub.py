"""One interface to where releases live: a :class:`Hub` holds dataset repositories (``org/name``) whose versions are
tags ``v<semver>`` on immutable commits, plus a leaderboard of accepted submissions.

Two implementations: :class:`rxcurate.publish.local.LocalHub` (bare git repositories on disk, ``local://``) and
:class:`rxcurate.publish.hf.HfHub` (the Hugging Face Hub, ``hf://``). :func:`hub_for` resolves a parsed
:class:`~rxcurate.publish.targets.Target` to its hub; :func:`open_version` pins ``TARGET[@VERSION]`` to one
concrete version and commit (``latest`` -> the newest tag), which is what every reader (pull, validate, submit,
leaderboard) starts from. A hub raises :class:`~rxcurate.errors.PublishError`; a caller of another stage re-labels
with :func:`rxcurate.publish.targets.relabel`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rxcurate.errors import PublishError
from rxcurate.publish.hf import HfHub
from rxcurate.publish.local import LocalHub
from rxcurate.publish.targets import PublishResult, Target, resolve_target

__all__ = ["Hub", "PinnedVersion", "hub_for", "open_version", "version_at"]


class Hub(Protocol):
    """A store of versioned dataset repositories (see the module doc)."""

    scheme: str  # the target kind: "local" or "hf"
    needs_push: bool  # recording a leaderboard entry needs an explicit request (hf: it opens a pull request)

    def label(self, repo_id: str) -> str:
        """``local://org/name`` / ``hf://org/name``."""
        ...

    def list_versions(self, repo_id: str) -> list[str]:
        """Published versions (tags ``v<semver>``), oldest first."""
        ...

    def resolve_version(self, repo_id: str, version: str | None = "latest") -> str:
        """``latest``/None -> the newest published version; a semver must be published."""
        ...

    def commit_of(self, repo_id: str, version: str) -> str:
        """The commit id a version's tag points at."""
        ...

    def list_files(self, repo_id: str, version: str) -> dict[str, int]:
        """Every file of a version: path -> size in bytes."""
        ...

    def read_file(self, repo_id: str, version: str, relpath: str) -> bytes:
        """The bytes of one file of a version."""
        ...

    def copy_file(self, repo_id: str, version: str, relpath: str, dest: str | os.PathLike[str]) -> None:
        """Write one file of a version to ``dest`` (overwritten)."""
        ...

    def checkout(self, repo_id: str, version: str, dest: str | os.PathLike[str]) -> Path:
        """Write every file of a version into ``dest`` (absent or empty); returns ``dest``."""
        ...

    def publish(self, repo_id: str, version: str, folder: str | os.PathLike[str], files: Iterable[str],
                message: str | None = None) -> PublishResult:
        """Publish ``files`` of ``folder`` as ``version``: one commit + the tag, atomically (see the modules)."""
        ...

    def read_leaderboard(self, repo_id: str, prefix: str) -> dict[str, bytes]:
        """Accepted leaderboard entries under ``prefix`` (``leaderboard/<version>/...``): path -> bytes."""
        ...

    def record_leaderboard(self, repo_id: str, files: Mapping[str, bytes], message: str) -> str:
        """Record leaderboard entries (local: a commit on the leaderboard branch; hf: a pull request); returns
        where."""
        ...


def hub_for(target: Target, *, endpoint: str | None = None, api: Any = None, private: bool | None = None,
            cache_dir: str | os.PathLike[str] | None = None) -> Hub:
    """The hub of a parsed target: its local hub folder, or the HF Hub (``endpoint``/``api`` for tests and
    mirrors; ``private``: a repository publish creates is private; ``cache_dir``: the Hugging Face cache reads go
    through, default ``$HF_HUB_CACHE``). Polaris targets have no hub (their artifacts ship inside a dataset
    repository)."""
    if target.kind == "local":
        assert target.hub is not None  # parse_target resolves the folder of every local target
        return LocalHub(target.hub)
    if target.kind == "hf":
        return HfHub(api, endpoint=endpoint, private=private, cache_dir=cache_dir)
    raise PublishError(f"{target}: Polaris artifacts ship inside the dataset repository: use local://{target.repo_id}"
                       f" or hf://{target.repo_id}")


@dataclass(frozen=True)
class PinnedVersion:
    """One concrete published version of a repository: what readers fetch files from."""

    hub: Hub
    target: Target
    version: str
    commit: str

    @property
    def repo_id(self) -> str:
        return self.target.repo_id

    @property
    def label(self) -> str:
        """``local://org/name`` (without the version)."""
        return self.hub.label(self.repo_id)

    def __str__(self) -> str:
        return f"{self.label}@{self.version}"

    def read(self, relpath: str) -> bytes:
        return self.hub.read_file(self.repo_id, self.version, relpath)

    def copy(self, relpath: str, dest: str | os.PathLike[str]) -> None:
        self.hub.copy_file(self.repo_id, self.version, relpath, dest)

    def checkout(self, dest: str | os.PathLike[str]) -> Path:
        return self.hub.checkout(self.repo_id, self.version, dest)


def version_at(h: Hub, repo_id: str, commit: str) -> str:
    """The published version whose tag points at ``commit`` (a full or abbreviated id; the newest if several)."""
    versions = h.list_versions(repo_id)
    commits = {v: h.commit_of(repo_id, v) for v in versions}
    hits = [v for v in versions if commits[v].lower().startswith(commit.lower())]
    if not hits:
        known = ", ".join(f"{v} = {commits[v][:12]}" for v in versions) or "none"
        raise PublishError(f"{h.label(repo_id)}@{commit}: no published version's tag points at commit {commit} "
                           f"(published: {known}); use one of those versions or commits, or @latest")
    return hits[-1]


def open_version(target: str | Target, *, hub: str | os.PathLike[str] | None = None,
                 endpoint: str | None = None, cache_dir: str | os.PathLike[str] | None = None) -> PinnedVersion:
    """Resolve ``TARGET[@VERSION]`` (``latest`` or none: the newest tag; ``@<commit>``: the version tagged on it) to a
    :class:`PinnedVersion`."""
    t = target if isinstance(target, Target) else resolve_target(target, hub)
    h = hub_for(t, endpoint=endpoint, cache_dir=cache_dir)
    version = version_at(h, t.repo_id, t.commit) if t.commit else h.resolve_version(t.repo_id, t.version or "latest")
    return PinnedVersion(h, t.with_version(version), version, h.commit_of(t.repo_id, version))
