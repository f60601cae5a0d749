"""Publishing to and reading from the Hugging Face Hub (huggingface_hub ``HfApi``).

A version is published as one commit on ``main`` with every release file (``create_commit`` with
``parent_commit`` = the head we read: the server refuses with 412 if the branch moved meanwhile, so nothing is
half-applied), then the tag ``v<version>`` on that commit (``create_tag``). The commit's LFS uploads are resumable:
a retry skips the objects the server already has. If tagging fails after the commit, rerunning the same publish
finds main carrying exactly this release and only creates the tag, so a version is never visible half-done (a
version *is* its tag). Releases beyond one commit's limits (25k files) go through a staging branch with the
library's resumable ``upload_folder`` and the tag is put on the staging branch's last commit.

Immutability rules are the local hub's (see :mod:`rxcurate.publish.local`), decided from ``release.json``: the same
release again is a no-op, a card-prose change is committed to main (the tag stays), anything else is refused.

The token comes from ``HF_TOKEN`` or the library's login (``hf auth login``); it is never printed or logged.
:func:`plan_operations` computes the commit's operations offline: tests check that its files and bytes equal the
local hub's commit of the same release.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    constants,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub import get_token as hf_get_token
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

from rxcurate.errors import PublishError
from rxcurate.layout import CARD, RELEASE_JSON
from rxcurate.progress import enabled
from rxcurate.publish.targets import (
    CARRIED_PREFIXES,
    REPO_FILES,
    PublishResult,
    bump_patch,
    parse_version,
    refuse_links,
    release_identity,
    semver_key,
    version_tag,
    versions_of,
)

REPO_TYPE = "dataset"
BRANCH = "main"
DOWNLOAD_WORKERS = 8  # parallel file downloads of a pull (snapshot_download's max_workers)
MAX_FILES_PER_COMMIT = 25_000
KEEP_ON_MAIN = REPO_FILES


TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{6,}")  # the Hub's token format: redacted wherever it appears
BEARER_RE = re.compile(r"(Bearer\s+)[^\s'\"]+", re.I)


def clean_token(raw: str | None, what: str = "HF_TOKEN") -> str | None:
    """A token as sent: surrounding whitespace (a pasted trailing newline) stripped; None when empty. Raise
    :class:`PublishError` (never showing it) when whitespace or control characters remain inside it."""
    if raw is None or not raw.strip():
        return None
    token = raw.strip()
    if any(c.isspace() or not c.isprintable() for c in token):
        raise PublishError(f"{what} contains whitespace or control characters inside the token (it is not printed): "
                           f"set it again from the Hub's token page, e.g. export HF_TOKEN=hf_...")
    return token


def _stored_token() -> str | None:
    try:
        return hf_get_token()
    except Exception:  # noqa: BLE001 - no stored login
        return None


def get_token() -> str | None:
    """``HF_TOKEN`` from the environment, else the token stored by the library's login, stripped of surrounding
    whitespace (see :func:`clean_token`); never printed."""
    env = os.environ.get("HF_TOKEN")
    if env and env.strip():
        return clean_token(env)
    return clean_token(_stored_token(), "the stored Hugging Face token")


def redact(text: str, *tokens: str | None) -> str:
    """``text`` with every form of every known token replaced by ``***``: the given ones, the environment's and the
    stored login's, each raw, stripped and as Python would show it inside a repr (escaped newlines), then anything
    shaped like a Hub token or following ``Bearer``."""
    known = [*tokens, *(os.environ.get(v) for v in TOKEN_VARIABLES), _stored_token()]
    forms: set[str] = set()
    for t in known:
        if isinstance(t, str) and t.strip():
            for v in (t, t.strip()):
                forms.update({v, repr(v)[1:-1], repr(v.encode("utf-8", "replace"))[2:-1]})
    for form in sorted((f for f in forms if len(f.strip()) >= 4), key=len, reverse=True):
        text = text.replace(form, "***")
    return BEARER_RE.sub(r"\1***", TOKEN_RE.sub("hf_***", text))


def plan_operations(folder: str | os.PathLike[str], files: Iterable[str]) -> list[CommitOperationAdd]:
    """``CommitOperationAdd`` of every release file (offline; no network)."""
    root = Path(folder)
    return [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(root / rel)) for rel in sorted(files)]


def operation_payload(ops: list[Any]) -> dict[str, bytes]:
    """``{path_in_repo: bytes}`` of a list of add operations (for comparing with another target's commit)."""
    out: dict[str, bytes] = {}
    for op in ops:
        src = op.path_or_fileobj
        if isinstance(src, str | Path):
            out[op.path_in_repo] = Path(src).read_bytes()
        elif isinstance(src, bytes):
            out[op.path_in_repo] = src
        else:
            src.seek(0)
            out[op.path_in_repo] = src.read()
    return out


def http_message(exc: Exception, api: Any = None) -> str:
    """The error's text, one line, with any token redacted (a token is never printed)."""
    return " ".join(redact(str(exc), getattr(api, "token", None)).split())[:240]


def _tags(api: Any, repo_id: str) -> tuple[dict[str, str], str | None]:
    refs = api.list_repo_refs(repo_id, repo_type=REPO_TYPE)
    tags = {t.name: t.target_commit for t in refs.tags}
    head = next((b.target_commit for b in refs.branches if b.name == BRANCH), None)
    return tags, head


def _read(api: Any, repo_id: str, revision: str, path: str) -> bytes | None:
    """One file of a revision, or None when absent."""
    try:
        local = hf_hub_download(repo_id, path, repo_type=REPO_TYPE, revision=revision, token=api.token,
                                endpoint=api.endpoint)
    except (EntryNotFoundError, RevisionNotFoundError):
        return None
    return Path(local).read_bytes()


def hf_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> str:
    """The Hugging Face cache folder: ``cache_dir``, else ``$HF_HUB_CACHE``, else ``$HF_HOME/hub`` (read when
    called, so a test or a user may set them after huggingface_hub was imported), else the library's default."""
    if cache_dir is not None:
        return os.path.abspath(Path(cache_dir).expanduser())
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return os.path.abspath(Path(env).expanduser())
    home = os.environ.get("HF_HOME")
    return os.path.abspath(Path(home).expanduser() / "hub") if home else str(constants.HF_HUB_CACHE)


def glob_escape(path: str) -> str:
    """``path`` as an fnmatch pattern matching only itself (``allow_patterns`` are patterns)."""
    return re.sub(r"([*?\[])", r"[\1]", path)


@contextlib.contextmanager
def progress_bars() -> Iterator[None]:
    """huggingface_hub's byte progress bars on only while :func:`rxcurate.progress.enabled` (RXCURATE_PROGRESS not 0
    and stderr a terminal); the library's previous setting is restored."""
    was_disabled = are_progress_bars_disabled()
    if enabled() == was_disabled:
        (enable_progress_bars if enabled() else disable_progress_bars)()
    try:
        yield
    finally:
        if are_progress_bars_disabled() != was_disabled:
            (disable_progress_bars if was_disabled else enable_progress_bars)()


def publish_hf(repo_id: str, version: str, folder: str | os.PathLike[str], files: list[str], *, api: Any = None,
               private: bool | None = None, message: str | None = None) -> PublishResult:
    """Publish ``files`` of ``folder`` as ``hf://repo_id`` version ``version`` (see the module doc)."""
    folder = Path(folder)
    target = f"hf://{repo_id}"
    tag = version_tag(version)
    refuse_links(folder, files, target)  # an upload would follow a link: publish what the release folder holds
    ops = plan_operations(folder, files)  # offline first: a missing file fails before any network call
    local_release = (folder / RELEASE_JSON).read_bytes()
    local_card = (folder / CARD).read_bytes() if (folder / CARD).is_file() else None
    if api is None:
        token = get_token()
        if not token:
            raise PublishError(f"{target}: no Hugging Face token: set HF_TOKEN or run `hf auth login` (the token is "
                               f"never printed)")
        api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type=REPO_TYPE, exist_ok=True, private=private)
        tags, head = _tags(api, repo_id)
        if tag in tags:
            return _republish(api, repo_id, version, tags[tag], head, local_release, local_card, message)
        newer = [v for v in versions_of(tags) if semver_key(v) > semver_key(version)]
        if newer:
            raise PublishError(f"{target}: version {version} is older than the published {newer[-1]}; versions only "
                               f"move forward: set version in the manifest above {newer[-1]}")
        if head is not None and release_identity(_read(api, repo_id, head, RELEASE_JSON)) == \
                release_identity(local_release) is not None:
            commit = head  # a previous run committed this release but did not tag it: finish it
        elif len(ops) > MAX_FILES_PER_COMMIT:
            commit = _staged_upload(api, repo_id, version, folder, files, message)
        else:
            deletes = _stale_files(api, repo_id, head, files)
            info = api.create_commit(repo_id, [*ops, *(CommitOperationDelete(path_in_repo=p) for p in deletes)],
                                     commit_message=message or f"Release {version}", repo_type=REPO_TYPE,
                                     revision=BRANCH, parent_commit=head)
            commit = info.oid
        api.create_tag(repo_id, tag=tag, tag_message=f"Release {version}", revision=commit, repo_type=REPO_TYPE)
        return PublishResult(target, version, tag, commit, "published", commit,
                             f"{api.endpoint}/datasets/{repo_id}/tree/{tag}")
    except HfHubHTTPError as exc:
        raise PublishError(f"{target}: the Hub refused or failed ({http_message(exc, api)}); no tag was created, "
                           f"rerun to resume") from None
    except PublishError:
        raise
    except Exception as exc:  # noqa: BLE001 - network errors of the HTTP client (offline, DNS, refused connection)
        raise PublishError(f"{target}: the Hub is unreachable ({type(exc).__name__}: {http_message(exc, api)}); no "
                           "tag was created: check the network or HF_ENDPOINT and rerun to resume") from None


def _stale_files(api: Any, repo_id: str, head: str | None, files: list[str]) -> list[str]:
    if head is None:
        return []
    keep = set(files)
    existing = api.list_repo_files(repo_id, revision=head, repo_type=REPO_TYPE)
    return sorted(p for p in existing if p not in keep and p not in KEEP_ON_MAIN and not p.startswith(CARRIED_PREFIXES))


def _staged_upload(api: Any, repo_id: str, version: str, folder: Path, files: list[str], message: str | None) -> str:
    """Very large releases: resumable multi-commit upload to a staging branch; returns its last commit."""
    branch = f"rxcurate-staging-v{version}"
    api.create_branch(repo_id, branch=branch, repo_type=REPO_TYPE, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=REPO_TYPE, revision=branch,
                             allow_patterns=sorted(files), commit_message=message or f"Release {version}")
    return str(info.oid)


def _republish(api: Any, repo_id: str, version: str, tagged: str, head: str | None, local_release: bytes,
               local_card: bytes | None, message: str | None) -> PublishResult:
    target = f"hf://{repo_id}"
    tag = version_tag(version)
    published = _read(api, repo_id, tagged, RELEASE_JSON)
    if release_identity(published) != release_identity(local_release) or published is None:
        raise PublishError(f"{target}: version {version} is already published with different content (release.json "
                           f"differs); published versions are immutable: bump version in the manifest (e.g. "
                           f"{bump_patch(version)}) and rebuild the card")
    head_carries = head is not None and release_identity(_read(api, repo_id, head, RELEASE_JSON)) == \
        release_identity(local_release)
    card_now = _read(api, repo_id, head if head_carries and head is not None else tagged, CARD)
    if local_card is None or card_now == local_card:
        return PublishResult(target, version, tag, tagged, "unchanged", head, f"{api.endpoint}/datasets/{repo_id}")
    if not head_carries:
        raise PublishError(f"{target}: the card of {version} can only be updated while it is the newest version on "
                           f"main; publish the new card with a new version instead")
    info = api.create_commit(repo_id, [CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=local_card)],
                             commit_message=message or f"Update the dataset card of {version}", repo_type=REPO_TYPE,
                             revision=BRANCH, parent_commit=head)
    return PublishResult(target, version, tag, tagged, "card-updated", info.oid, f"{api.endpoint}/datasets/{repo_id}")


class HfHub:
    """The Hugging Face Hub as a :class:`rxcurate.publish.hub.Hub`: dataset repositories whose versions are tags
    ``v<semver>``. Reads are pinned to the commit a version's tag points at; the refs of a repository are listed
    once per instance (a hub object lives for one command). Accepted leaderboard entries live on ``main`` (merged
    pull requests); recording one opens a pull request."""

    scheme = "hf"
    needs_push = True  # recording a submission opens a pull request: only on request (--push)

    def __init__(self, api: Any = None, *, endpoint: str | None = None, private: bool | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        self._api = api
        self.endpoint = endpoint
        self.private = private  # a repository created by publish is private
        self.cache_dir = hf_cache_dir(cache_dir)  # the Hugging Face cache every read goes through
        self._refs: dict[str, dict[str, str]] = {}

    @property
    def api(self) -> Any:
        """The ``HfApi`` (read: with the token if one is set)."""
        if self._api is None:
            self._api = HfApi(endpoint=self.endpoint, token=get_token())
        return self._api

    def label(self, repo_id: str) -> str:
        return f"hf://{repo_id}"

    # ------------------------------------------------------------------------------------------ read API
    def tags(self, repo_id: str) -> dict[str, str]:
        """Tag name -> commit of a repository; every listing failure is one :class:`PublishError` naming the fix."""
        if repo_id not in self._refs:
            label = self.label(repo_id)
            if constants.HF_HUB_OFFLINE:
                cached = self.cached_tags(repo_id)
                if not cached:
                    raise PublishError(f"{label}: HF_HUB_OFFLINE is set and the Hugging Face cache {self.cache_dir} "
                                       f"holds no version of it: pull it once online (unset HF_HUB_OFFLINE)")
                self._refs[repo_id] = cached
                return cached
            try:
                self._refs[repo_id] = _tags(self.api, repo_id)[0]
            except RepositoryNotFoundError:
                raise PublishError(f"{label} does not exist (or is private and no token is set: HF_TOKEN); check "
                                   f"the name (e.g. hf://recursionpharma/rxrx3-core)") from None
            except HfHubHTTPError as exc:
                raise PublishError(f"{label}: cannot list its versions ({http_message(exc, self._api)})") from None
            except Exception as exc:  # noqa: BLE001 - network errors (offline, DNS) of the HTTP client
                raise PublishError(f"{label}: the Hub is unreachable ({type(exc).__name__}); check the network or "
                                   f"HF_ENDPOINT") from None
        return self._refs[repo_id]

    def list_versions(self, repo_id: str) -> list[str]:
        return versions_of(self.tags(repo_id))

    def resolve_version(self, repo_id: str, version: str | None = "latest") -> str:
        label = self.label(repo_id)
        versions = self.list_versions(repo_id)
        if version in (None, "latest"):
            if not versions:
                raise PublishError(f"{label} has no published version (no v<semver> tag)")
            return versions[-1]
        v = parse_version(version)
        if version_tag(v) not in self.tags(repo_id):
            raise PublishError(f"{label} has no version {v} (published: {', '.join(versions) or 'none'}); use one of "
                               f"them or @latest")
        return v

    def commit_of(self, repo_id: str, version: str) -> str:
        return self.tags(repo_id)[version_tag(self.resolve_version(repo_id, version))]

    def list_files(self, repo_id: str, version: str) -> dict[str, int]:
        commit = self.commit_of(repo_id, version)
        try:
            entries = self.api.list_repo_tree(repo_id, recursive=True, revision=commit, repo_type=REPO_TYPE)
            return {e.path: int(e.size) for e in entries if isinstance(e, RepoFile)}
        except HfHubHTTPError as exc:
            raise PublishError(f"{self.label(repo_id)}@{version}: cannot list its files "
                               f"({http_message(exc, self._api)})") from None

    def cached_tags(self, repo_id: str) -> dict[str, str]:
        """The version tags (tag -> commit) the Hugging Face cache recorded for a repository (``refs/v*``, written by
        a pull), for reading offline."""
        refs = Path(self.cache_dir) / repo_folder_name(repo_id=repo_id, repo_type=REPO_TYPE) / "refs"
        out: dict[str, str] = {}
        for name in versions_of(p.name for p in refs.glob("v*") if p.is_file()):
            commit = (refs / version_tag(name)).read_text().strip()
            if re.fullmatch(r"[0-9a-f]{40}", commit):
                out[version_tag(name)] = commit
        return out

    def snapshot_folder(self, repo_id: str, version: str) -> Path:
        """Where a version's files lie in the Hugging Face cache: ``CACHE/datasets--org--name/snapshots/<commit>``
        (the folder may be absent or hold only some files)."""
        return Path(self.cache_dir) / repo_folder_name(repo_id=repo_id, repo_type=REPO_TYPE) / "snapshots" / \
            self.commit_of(repo_id, version)

    def cached_file(self, repo_id: str, version: str, relpath: str, *, force: bool = False) -> Path:
        """One file of a version in the Hugging Face cache (downloaded when absent; ``force``: downloaded again,
        replacing a corrupted cache file): ``CACHE/datasets--org--name/snapshots/<commit>/<relpath>``."""
        commit = self.commit_of(repo_id, version)
        with self._errors(repo_id, version, f"cannot download {relpath}"):
            got = hf_hub_download(repo_id, relpath, repo_type=REPO_TYPE, revision=commit, cache_dir=self.cache_dir,
                                  force_download=force, token=self.api.token, endpoint=self.api.endpoint)
        return Path(got)

    def snapshot(self, repo_id: str, version: str, files: Sequence[str], *,
                 max_workers: int = DOWNLOAD_WORKERS) -> Path:
        """Download ``files`` of a version into the Hugging Face cache (parallel, byte progress when
        :func:`rxcurate.progress.enabled`; files already cached are not fetched again) and return the snapshot
        folder ``CACHE/datasets--org--name/snapshots/<commit>``. The revision is the version's tag, so the cache
        records it (``refs/v<version>``) and an offline read (``HF_HUB_OFFLINE=1``) finds the same commit."""
        commit = self.commit_of(repo_id, version)
        with self._errors(repo_id, version, "download failed"), progress_bars():
            got = Path(snapshot_download(repo_id, repo_type=REPO_TYPE, revision=version_tag(version),
                                         allow_patterns=[glob_escape(f) for f in files], cache_dir=self.cache_dir,
                                         max_workers=max_workers, token=self.api.token,
                                         endpoint=self.api.endpoint))
        if got.name != commit:
            raise PublishError(f"{self.label(repo_id)}@{version}: the tag {version_tag(version)} moved (now "
                               f"{got.name}, was {commit}) while pulling; published versions are immutable: "
                               f"report it to the publisher")
        return got

    @contextlib.contextmanager
    def _errors(self, repo_id: str, version: str, what: str) -> Iterator[None]:
        label = f"{self.label(repo_id)}@{version}"
        try:
            yield
        except LocalEntryNotFoundError:
            raise PublishError(f"{label}: {what}: not in the Hugging Face cache {self.cache_dir} and the Hub cannot be "
                               f"reached (HF_HUB_OFFLINE set or offline): pull it once online") from None
        except HfHubHTTPError as exc:
            raise PublishError(f"{label}: {what} ({http_message(exc, self._api)})") from None
        except OSError as exc:
            raise PublishError(f"{label}: {what}: the Hugging Face cache {self.cache_dir} cannot be written "
                               f"({type(exc).__name__}: {exc.strerror or exc}); set HF_HUB_CACHE or --cache-dir to a "
                               f"writable folder") from None

    def copy_file(self, repo_id: str, version: str, relpath: str, dest: str | os.PathLike[str]) -> None:
        """Write one file of a version to ``dest``, through the Hugging Face cache."""
        shutil.copyfile(self.cached_file(repo_id, version, relpath), dest)

    def read_file(self, repo_id: str, version: str, relpath: str) -> bytes:
        return self.cached_file(repo_id, version, relpath).read_bytes()

    def checkout(self, repo_id: str, version: str, dest: str | os.PathLike[str]) -> Path:
        """Download the whole version into ``dest`` (must be absent or empty)."""
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise PublishError(f"checkout destination {dest} is not empty: choose a new folder")
        commit = self.commit_of(repo_id, version)
        with self._errors(repo_id, version, "download failed"), progress_bars():
            snapshot_download(repo_id, repo_type=REPO_TYPE, revision=commit, local_dir=str(dest),
                              token=self.api.token, endpoint=self.api.endpoint)
        return dest

    # ------------------------------------------------------------------------------------------ write API
    def publish(self, repo_id: str, version: str, folder: str | os.PathLike[str], files: Iterable[str],
                message: str | None = None) -> PublishResult:
        self._refs.pop(repo_id, None)
        try:
            return publish_hf(repo_id, version, folder, list(files), api=self._api, private=self.private,
                              message=message)
        finally:
            self._refs.pop(repo_id, None)

    # ------------------------------------------------------------------------------------------ leaderboard
    def read_leaderboard(self, repo_id: str, prefix: str) -> dict[str, bytes]:
        """The leaderboard entries (path -> bytes) under ``prefix`` on ``main`` (merged pull requests)."""
        try:
            paths = [p for p in self.api.list_repo_files(repo_id, repo_type=REPO_TYPE, revision=BRANCH)
                     if p.startswith(prefix)]
            out: dict[str, bytes] = {}
            for p in sorted(paths):
                local = hf_hub_download(repo_id, p, repo_type=REPO_TYPE, revision=BRANCH, token=self.api.token,
                                        endpoint=self.api.endpoint)
                out[p] = Path(local).read_bytes()
            return out
        except HfHubHTTPError as exc:
            raise PublishError(f"{self.label(repo_id)}: cannot read its leaderboard "
                               f"({http_message(exc, self._api)})") from None

    def record_leaderboard(self, repo_id: str, files: Mapping[str, bytes], message: str) -> str:
        """Open a pull request adding leaderboard entries; returns its URL. Needs a token."""
        label = self.label(repo_id)
        if not self.api.token:
            raise PublishError(f"{label}: --push needs a Hugging Face token: set HF_TOKEN or run `hf auth login` "
                               f"(the token is never printed); nothing was recorded")
        ops = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=data) for rel, data in sorted(files.items())]
        try:
            info = self.api.create_commit(repo_id, ops, commit_message=message, repo_type=REPO_TYPE, create_pr=True)
        except HfHubHTTPError as exc:
            raise PublishError(f"{label}: the Hub refused the submission ({http_message(exc, self._api)}); nothing "
                               f"was recorded") from None
        return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", ""))
