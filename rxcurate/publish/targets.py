"""Target strings: where a release is published and read from.

- ``local://<org>/<name>``: a hub on disk (``--hub DIR``, else ``$RXCURATE_HUB``, else ``./hub``) whose datasets are
  bare git repositories ``HUB/datasets/<org>/<name>``; ``local`` alone names the manifest's ``card.repo_id``.
- ``hf://<org>/<name>`` (also ``hf://datasets/<org>/<name>``, the form of huggingface_hub's file system): a Hugging
  Face Hub dataset repository. Where a release is read (pull, load, validate, submit, leaderboard) the bare Hub form
  ``<org>/<name>`` means ``hf://<org>/<name>``.
- ``polaris://<owner>/<name>``: Polaris artifacts (built into the release folder; see :mod:`rxcurate.publish.polaris`).

``TARGET@VERSION`` pins a version: a semver (``1.0.0``, tag ``v1.0.0``; a leading ``v`` is accepted) or ``latest``.
Readers also accept ``TARGET@<commit>`` (7 to 40 hex digits): the published version whose tag points at it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from rxcurate.errors import PublishError, RxcurateError
from rxcurate.io import canonical_hash
from rxcurate.layout import CARD, DATA_DIR, RELEASE_JSON, TOP_FILES, TREE_DIRS, is_visible

KINDS = ("local", "hf", "polaris")
SEMVER_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$")
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}$")
HF_DATASETS = "datasets/"  # hf://datasets/ORG/NAME: huggingface_hub's file-system spelling of a dataset repository
HF_OTHER_TYPES = ("models/", "spaces/")
DEFAULT_HUB = "hub"
EXAMPLES = "local://rxcurate/rxrx3-core, hf://my-org/rxrx3-core@0.1.0 or polaris://my-org/rxrx3-core"
READ_EXAMPLES = ("local://rxcurate/rxrx3-core@0.1.0, hf://my-org/rxrx3-core@0.1.0, "
                 "hf://datasets/my-org/rxrx3-core@v0.1.0 or my-org/rxrx3-core (the newest version on the Hub)")
REVISION_HINT = "@0.1.0 (tag v0.1.0), @latest or a commit id such as @3f2a9c1 (7-40 hex digits)"


@dataclass(frozen=True)
class Target:
    """A parsed target: ``kind`` (local | hf | polaris), ``repo_id`` (``org/name``), optional version, hub folder."""

    kind: str
    repo_id: str
    version: str | None = None  # a semver, "latest" or None (not given)
    hub: Path | None = None  # local targets only
    commit: str | None = None  # readers: @<commit> (hex, maybe abbreviated) instead of a version

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
        """This target pinned to ``version`` (a commit it named is dropped: the version replaces it)."""
        return replace(self, version=version, commit=None)

    def __str__(self) -> str:
        rev = self.version or self.commit
        return f"{self.kind}://{self.repo_id}" + (f"@{rev}" if rev else "")


def version_tag(version: str) -> str:
    return f"v{version}"


def parse_version(text: str) -> str:
    """``1.0.0`` / ``v1.0.0`` -> ``1.0.0``; ``latest`` stays; anything else raises :class:`PublishError`."""
    v = text.strip()
    if v == "latest":
        return v
    if v.startswith("v"):
        v = v[1:]
    if not SEMVER_RE.match(v):
        raise PublishError(f"version {text!r} is not a semantic version: use MAJOR.MINOR.PATCH (e.g. @1.0.0) or "
                           "@latest")
    return v


def parse_revision(text: str) -> tuple[str | None, str | None]:
    """A reader's revision: ``(version, None)`` for ``1.0.0`` / ``v1.0.0`` / ``latest``, ``(None, commit)`` for a
    commit id (7 to 40 hex digits); anything else raises :class:`PublishError` with valid examples."""
    r = text.strip()
    if COMMIT_RE.match(r.lower()) and not SEMVER_RE.match(r.removeprefix("v")):
        return None, r.lower()
    try:
        return parse_version(r), None
    except PublishError:
        raise PublishError(f"revision {text!r} is neither a semantic version (MAJOR.MINOR.PATCH) nor a commit id: use "
                           f"{REVISION_HINT}") from None


def semver_key(version: str) -> tuple[Any, ...]:
    """Sort key of a semver: numeric parts, and a pre-release sorts before its release (1.0.0-rc1 < 1.0.0)."""
    m = SEMVER_RE.match(version)
    if not m:
        raise ValueError(f"not a semver: {version!r}")
    pre = m.group(4)
    pre_key: tuple[Any, ...] = (1,) if pre is None else (0, tuple((0, int(p)) if p.isdigit() else (1, p)
                                                          for p in pre[1:].split(".")))
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), pre_key)


def default_hub(hub: str | os.PathLike[str] | None = None) -> Path:
    """``hub`` if given, else ``$RXCURATE_HUB``, else ``./hub``."""
    if hub is not None:
        return Path(hub)
    env = os.environ.get("RXCURATE_HUB")
    return Path(env) if env else Path(DEFAULT_HUB)


def parse_target(text: str, *, default_repo_id: str | None = None,
                 hub: str | os.PathLike[str] | None = None, reading: bool = False) -> Target:
    """Parse ``local[://org/name][@version]``, ``hf://[datasets/]org/name[@version]`` or ``polaris://owner/name``.

    ``local`` without a repo uses ``default_repo_id`` (the manifest's ``card.repo_id``). Local targets get their hub
    folder resolved (``hub``, ``$RXCURATE_HUB``, ``./hub``). ``reading`` (a release is read, not published): the bare
    Hub form ``org/name`` means ``hf://org/name``, and ``@<commit>`` pins the version whose tag points at the commit.
    """
    s = (text or "").strip()
    examples = READ_EXAMPLES if reading else EXAMPLES
    if not s:
        raise PublishError(f"empty target: use {examples}")
    version: str | None = None
    commit: str | None = None
    if "@" in s:
        s, _, v = s.rpartition("@")
        if not v.strip():
            raise PublishError(f"target {text!r} ends with '@' but names no version: use "
                               f"{REVISION_HINT if reading else '@1.0.0 or @latest'}")
        if reading:
            try:
                version, commit = parse_revision(v)
            except PublishError as exc:
                raise PublishError(f"target {text!r}: {exc}") from None
        else:
            version = parse_version(v)
    if "://" in s:
        kind, _, repo = s.partition("://")
    elif "/" in s and reading:
        kind, repo = "hf", s  # the Hub's own spelling: ORG/NAME
    elif "/" in s:
        raise PublishError(f"target {text!r} names no kind: use hf://{s} or local://{s} (e.g. {EXAMPLES})")
    else:
        kind, repo = s, ""
    kind = kind.lower()
    if kind not in KINDS:
        raise PublishError(f"target {text!r}: unknown kind {kind!r}; use one of {', '.join(KINDS)} (e.g. {examples})")
    repo = repo.strip("/")
    if kind == "hf" and repo.startswith(HF_OTHER_TYPES):
        raise PublishError(f"target {text!r}: releases are dataset repositories, not {repo.split('/', 1)[0]}: use "
                           f"hf://datasets/<org>/<name> or hf://<org>/<name> (e.g. {examples})")
    if kind == "hf" and repo.startswith(HF_DATASETS) and repo.count("/") == 2:
        repo = repo[len(HF_DATASETS):]
    elif kind == "hf" and repo.startswith(HF_DATASETS):
        raise PublishError(f"target {text!r}: hf://datasets/ needs <org>/<name> after it (e.g. {examples})")
    if not repo:
        if kind == "local" and default_repo_id:
            repo = default_repo_id
        else:
            raise PublishError(f"target {text!r} names no repository: use {kind}://<org>/<name> (e.g. {examples})")
    if not REPO_ID_RE.match(repo) or ".." in repo:
        raise PublishError(f"target {text!r}: repository {repo!r} must be <org>/<name> with letters, digits, '.', '_' "
                           f"or '-' (e.g. {examples})")
    return Target(kind=kind, repo_id=repo, version=version, hub=default_hub(hub).resolve() if kind == "local" else None,
                  commit=commit)


def resolve_target(text: str, hub: str | os.PathLike[str] | None = None, *,
                   default_repo_id: str | None = None, reading: bool | None = None) -> Target:
    """Parse a target string (see :func:`parse_target`); the read API's entry point. ``reading`` defaults to True
    unless ``default_repo_id`` is given (publishing: a bare ``local`` names the release's repository)."""
    return parse_target(text, default_repo_id=default_repo_id, hub=hub,
                        reading=default_repo_id is None if reading is None else reading)


def versions_of(tags: Iterable[str]) -> list[str]:
    """The published versions among tag names (``v<semver>``), oldest first; other tags are ignored."""
    out = []
    for name in tags:
        try:
            v = parse_version(name)
        except RxcurateError:
            continue
        if v != "latest":
            out.append(v)
    return sorted(out, key=semver_key)


def bump_patch(version: str) -> str:
    major, minor, patch = version.split("-", 1)[0].split(".")
    return f"{major}.{minor}.{int(patch) + 1}"


def check_relpath(relpath: str) -> str:
    """A repository path: relative, POSIX, no ``..``/``.git`` parts; returned normalised."""
    p = PurePosixPath(relpath)
    if not relpath or p.is_absolute() or any(part in ("..", ".git", "") for part in relpath.split("/")) \
            or "\\" in relpath or "\n" in relpath:
        raise PublishError(f"bad repository path {relpath!r}: use a relative POSIX path such as leaderboard/x.json")
    return str(p)


def linked_files(folder: str | os.PathLike[str], files: Iterable[str] = (), *, whole: bool = False) -> list[str]:
    """Release paths below ``folder`` that are symbolic links (or lie below one): the given ``files``, the top-level
    release names and everything visible under the release folders (``whole``: everything visible in ``folder``)."""
    root = Path(folder)
    found: set[str] = set()
    for rel in files:
        parts = rel.split("/")
        hit = next((i for i in range(1, len(parts) + 1) if root.joinpath(*parts[:i]).is_symlink()), None)
        if hit is not None:
            found.add("/".join(parts[:hit]))
    found.update(n for n in (*TOP_FILES, CARD, RELEASE_JSON) if (root / n).is_symlink())
    for base in [root] if whole else [root / d for d in (DATA_DIR, *TREE_DIRS)]:
        if base.is_symlink():
            found.add(base.relative_to(root).as_posix())
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            for name in (*dirnames, *filenames):
                rel = (Path(dirpath) / name).relative_to(root).as_posix()
                if is_visible(rel) and (Path(dirpath) / name).is_symlink():
                    found.add(rel)
    return sorted(found)


def refuse_links(folder: str | os.PathLike[str], files: Iterable[str], target: str) -> None:
    """Raise :class:`PublishError` naming the first symbolic link among a release's files (a published version holds
    regular files: a link would be committed as a link, not as the file's bytes)."""
    links = linked_files(folder, files)
    if links:
        more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
        raise PublishError(f"{target}: {Path(folder) / links[0]} is a symbolic link{more}; a release holds regular "
                           f"files only: replace the link by a copy of the file (e.g. cp --remove-destination "
                           f"\"$(readlink -f {links[0]})\" {links[0]}) and rerun; nothing was published")


def release_identity(raw: bytes | None) -> str | None:
    """The part of release.json that identifies a release's content (files, card data hash, data version)."""
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    return canonical_hash({k: doc.get(k) for k in ("version", "data_version", "files", "card", "counts")})


@dataclass(frozen=True)
class PublishResult:
    """Outcome of a publish: ``status`` is ``published``, ``unchanged`` or ``card-updated``."""

    target: str
    version: str
    tag: str
    commit: str  # the commit the version's tag points at
    status: str
    head: str | None = None  # main after the operation (differs from ``commit`` after a card update)
    location: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "version": self.version, "tag": self.tag, "commit": self.commit,
                "status": self.status, "head": self.head, "location": self.location}


@contextlib.contextmanager
def relabel(error_type: type[RxcurateError]) -> Iterator[None]:
    """Re-raise a domain error of another stage (e.g. the hub's :class:`PublishError`) as ``error_type``, same text:
    ``with relabel(PullError): hub.read_file(...)``."""
    try:
        yield
    except RxcurateError as exc:
        if isinstance(exc, error_type):
            raise
        raise error_type(str(exc)) from None


CARRIED_PREFIXES = ("leaderboard/",)  # repository content kept across versions, not part of a release
REPO_FILES = (".gitattributes",)  # files a hub keeps in a dataset repository that are not part of a release
LEADERBOARD_BRANCH = "leaderboard"  # the local hub's branch of accepted submissions
LEADERBOARD_DIR = "leaderboard"  # leaderboard/<version>/<benchmark>/<submission id>.json
