"""Target strings: where a release is published and read from.

- ``local://<org>/<name>``: a hub on disk (``--hub DIR``, else ``$RXCURATE_HUB``, else ``./hub``) whose datasets are
  bare git repositories ``HUB/datasets/<org>/<name>``; ``local`` alone names the manifest's ``card.repo_id``.
- ``hf://<org>/<name>``: a Hugging Face Hub dataset repository.
- ``polaris://<owner>/<name>``: Polaris artifacts (built into the release folder; see :mod:`rxcurate.publish.polaris`).

``TARGET@VERSION`` pins a version: a semver (``1.0.0``, tag ``v1.0.0``; a leading ``v`` is accepted) or ``latest``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from rxcurate.errors import PublishError, RxcurateError

KINDS = ("local", "hf", "polaris")
SEMVER_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$")
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
DEFAULT_HUB = "hub"
EXAMPLES = "local://rxcurate/rxrx3-core, hf://my-org/rxrx3-core@1.0.0 or polaris://my-org/rxrx3-core"


@dataclass(frozen=True)
class Target:
    """A parsed target: ``kind`` (local | hf | polaris), ``repo_id`` (``org/name``), optional version, hub folder."""

    kind: str
    repo_id: str
    version: str | None = None  # a semver, "latest" or None (not given)
    hub: Path | None = None  # local targets only

    @property
    def org(self) -> str:
        return self.repo_id.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.repo_id.split("/", 1)[1]

    @property
    def tag(self) -> str | None:
        return None if self.version in (None, "latest") else version_tag(self.version)

    def with_version(self, version: str | None) -> Target:
        return replace(self, version=version)

    def __str__(self) -> str:
        return f"{self.kind}://{self.repo_id}" + (f"@{self.version}" if self.version else "")


def version_tag(version: str) -> str:
    return f"v{version}"


def parse_version(text: str, error_cls: type[RxcurateError] = PublishError) -> str:
    """``1.0.0`` / ``v1.0.0`` -> ``1.0.0``; ``latest`` stays; anything else raises ``error_cls``."""
    v = text.strip()
    if v == "latest":
        return v
    if v.startswith("v"):
        v = v[1:]
    if not SEMVER_RE.match(v):
        raise error_cls(f"version {text!r} is not a semantic version: use MAJOR.MINOR.PATCH (e.g. @1.0.0) or @latest")
    return v


def semver_key(version: str) -> tuple:
    """Sort key of a semver: numeric parts, and a pre-release sorts before its release (1.0.0-rc1 < 1.0.0)."""
    m = SEMVER_RE.match(version)
    if not m:
        raise ValueError(f"not a semver: {version!r}")
    pre = m.group(4)
    pre_key: tuple = (1,) if pre is None else (0, tuple((0, int(p)) if p.isdigit() else (1, p)
                                                          for p in pre[1:].split(".")))
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), pre_key)


def default_hub(hub: str | os.PathLike[str] | None = None) -> Path:
    """``hub`` if given, else ``$RXCURATE_HUB``, else ``./hub``."""
    if hub is not None:
        return Path(hub)
    env = os.environ.get("RXCURATE_HUB")
    return Path(env) if env else Path(DEFAULT_HUB)


def parse_target(text: str, *, default_repo_id: str | None = None, hub: str | os.PathLike[str] | None = None,
                 error_cls: type[RxcurateError] = PublishError) -> Target:
    """Parse ``local[://org/name][@version]``, ``hf://org/name[@version]`` or ``polaris://owner/name``.

    ``local`` without a repo uses ``default_repo_id`` (the manifest's ``card.repo_id``). Local targets get their hub
    folder resolved (``hub``, ``$RXCURATE_HUB``, ``./hub``).
    """
    s = (text or "").strip()
    if not s:
        raise error_cls(f"empty target: use {EXAMPLES}")
    version: str | None = None
    if "@" in s:
        s, _, v = s.rpartition("@")
        version = parse_version(v, error_cls)
    if "://" in s:
        kind, _, repo = s.partition("://")
    else:
        kind, repo = s, ""
    kind = kind.lower()
    if kind not in KINDS:
        raise error_cls(f"target {text!r}: unknown kind {kind!r}; use one of {', '.join(KINDS)} (e.g. {EXAMPLES})")
    repo = repo.strip("/")
    if not repo:
        if kind == "local" and default_repo_id:
            repo = default_repo_id
        else:
            raise error_cls(f"target {text!r} names no repository: use {kind}://<org>/<name> (e.g. {EXAMPLES})")
    if not REPO_ID_RE.match(repo) or ".." in repo:
        raise error_cls(f"target {text!r}: repository {repo!r} must be <org>/<name> with letters, digits, '.', '_' "
                        f"or '-' (e.g. rxcurate/rxrx3-core)")
    return Target(kind=kind, repo_id=repo, version=version, hub=default_hub(hub).resolve() if kind == "local" else None)


def resolve_target(text: str, hub: str | os.PathLike[str] | None = None, *, default_repo_id: str | None = None,
                   error_cls: type[RxcurateError] = PublishError) -> Target:
    """Parse a target string (see :func:`parse_target`); the read API's entry point."""
    return parse_target(text, default_repo_id=default_repo_id, hub=hub, error_cls=error_cls)
