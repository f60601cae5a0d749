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

import os
from pathlib import Path
from typing import Any

from rxcurate.errors import PublishError, RxcurateError
from rxcurate.publish.local import CARD, CARRIED_PREFIXES, RELEASE_JSON, PublishResult, bump_patch, release_identity
from rxcurate.publish.targets import parse_version, semver_key, version_tag

REPO_TYPE = "dataset"
BRANCH = "main"
MAX_FILES_PER_COMMIT = 25_000
KEEP_ON_MAIN = (".gitattributes",)


def get_token() -> str | None:
    """``HF_TOKEN`` from the environment, else the token stored by the library's login; never printed."""
    env = os.environ.get("HF_TOKEN")
    if env:
        return env
    try:
        from huggingface_hub import get_token as hf_get_token

        return hf_get_token()
    except Exception:  # noqa: BLE001 - no stored login
        return None


def plan_operations(folder: str | os.PathLike[str], files: list[str]) -> list[Any]:
    """``CommitOperationAdd`` of every release file (offline; no network)."""
    from huggingface_hub import CommitOperationAdd

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


def _errors():
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    return HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError


def _http_message(exc: Exception, api: Any = None) -> str:
    """The error's text, one line, with any token redacted (a token is never printed)."""
    text = " ".join(str(exc).split())
    for token in {get_token(), getattr(api, "token", None)}:
        if isinstance(token, str) and token:
            text = text.replace(token, "***")
    return text[:240]


def _tags(api, repo_id: str) -> tuple[dict[str, str], str | None]:
    refs = api.list_repo_refs(repo_id, repo_type=REPO_TYPE)
    tags = {t.name: t.target_commit for t in refs.tags}
    head = next((b.target_commit for b in refs.branches if b.name == BRANCH), None)
    return tags, head


def versions_of(tags: dict[str, str]) -> list[str]:
    out = []
    for name in tags:
        try:
            v = parse_version(name)
        except RxcurateError:
            continue
        if v != "latest":
            out.append(v)
    return sorted(out, key=semver_key)


def _read(api, repo_id: str, revision: str, path: str) -> bytes | None:
    """One file of a revision, or None when absent."""
    from huggingface_hub import hf_hub_download

    _, _, RevisionNotFound = _errors()
    from huggingface_hub.errors import EntryNotFoundError

    try:
        local = hf_hub_download(repo_id, path, repo_type=REPO_TYPE, revision=revision, token=api.token,
                                endpoint=api.endpoint)
    except (EntryNotFoundError, RevisionNotFound):
        return None
    return Path(local).read_bytes()


def publish_hf(repo_id: str, version: str, folder: str | os.PathLike[str], files: list[str], *, api: Any = None,
               private: bool | None = None, message: str | None = None) -> PublishResult:
    """Publish ``files`` of ``folder`` as ``hf://repo_id`` version ``version`` (see the module doc)."""
    folder = Path(folder)
    target = f"hf://{repo_id}"
    tag = version_tag(version)
    ops = plan_operations(folder, files)  # offline first: a missing file fails before any network call
    local_release = (folder / RELEASE_JSON).read_bytes()
    local_card = (folder / CARD).read_bytes() if (folder / CARD).is_file() else None
    if api is None:
        token = get_token()
        if not token:
            raise PublishError(f"{target}: no Hugging Face token: set HF_TOKEN or run `hf auth login` (the token is "
                               f"never printed)")
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    HfHubHTTPError, _, _ = _errors()
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
            from huggingface_hub import CommitOperationDelete

            info = api.create_commit(repo_id, [*ops, *(CommitOperationDelete(path_in_repo=p) for p in deletes)],
                                     commit_message=message or f"Release {version}", repo_type=REPO_TYPE,
                                     revision=BRANCH, parent_commit=head)
            commit = info.oid
        api.create_tag(repo_id, tag=tag, tag_message=f"Release {version}", revision=commit, repo_type=REPO_TYPE)
        return PublishResult(target, version, tag, commit, "published", commit,
                             f"{api.endpoint}/datasets/{repo_id}/tree/{tag}")
    except HfHubHTTPError as exc:
        raise PublishError(f"{target}: the Hub refused or failed ({_http_message(exc, api)}); no tag was created, "
                           f"rerun to resume") from None
    except PublishError:
        raise
    except Exception as exc:  # noqa: BLE001 - network errors of the HTTP client (offline, DNS, refused connection)
        raise PublishError(f"{target}: the Hub is unreachable ({type(exc).__name__}: {_http_message(exc, api)}); no "
                           "tag was created: check the network or HF_ENDPOINT and rerun to resume") from None


def _stale_files(api, repo_id: str, head: str | None, files: list[str]) -> list[str]:
    if head is None:
        return []
    keep = set(files)
    existing = api.list_repo_files(repo_id, revision=head, repo_type=REPO_TYPE)
    return sorted(p for p in existing if p not in keep and p not in KEEP_ON_MAIN and not p.startswith(CARRIED_PREFIXES))


def _staged_upload(api, repo_id: str, version: str, folder: Path, files: list[str], message: str | None) -> str:
    """Very large releases: resumable multi-commit upload to a staging branch; returns its last commit."""
    branch = f"rxcurate-staging-v{version}"
    api.create_branch(repo_id, branch=branch, repo_type=REPO_TYPE, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=REPO_TYPE, revision=branch,
                             allow_patterns=sorted(files), commit_message=message or f"Release {version}")
    return info.oid


def _republish(api, repo_id: str, version: str, tagged: str, head: str | None, local_release: bytes,
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
    card_now = _read(api, repo_id, head if head_carries else tagged, CARD)
    if local_card is None or card_now == local_card:
        return PublishResult(target, version, tag, tagged, "unchanged", head, f"{api.endpoint}/datasets/{repo_id}")
    if not head_carries:
        raise PublishError(f"{target}: the card of {version} can only be updated while it is the newest version on "
                           f"main; publish the new card with a new version instead")
    from huggingface_hub import CommitOperationAdd

    info = api.create_commit(repo_id, [CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=local_card)],
                             commit_message=message or f"Update the dataset card of {version}", repo_type=REPO_TYPE,
                             revision=BRANCH, parent_commit=head)
    return PublishResult(target, version, tag, tagged, "card-updated", info.oid, f"{api.endpoint}/datasets/{repo_id}")


def download_version(repo_id: str, version: str, dest: str | os.PathLike[str], *, endpoint: str | None = None,
                     error_cls: type[RxcurateError] = PublishError) -> tuple[str, str]:
    """Download version ``version`` (or ``latest``) of ``hf://repo_id`` into ``dest``; returns (version, commit)."""
    from huggingface_hub import HfApi, snapshot_download

    HfHubHTTPError, RepoNotFound, _ = _errors()
    api = HfApi(endpoint=endpoint, token=get_token())
    try:
        tags, _ = _tags(api, repo_id)
    except RepoNotFound:
        raise error_cls(f"hf://{repo_id} does not exist (or is private and no token is set: HF_TOKEN)") from None
    except HfHubHTTPError as exc:
        raise error_cls(f"hf://{repo_id}: cannot list its versions ({_http_message(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - network errors (offline, DNS) of the HTTP client
        raise error_cls(f"hf://{repo_id}: the Hub is unreachable ({type(exc).__name__}: {_http_message(exc)}); "
                        f"check the network or HF_ENDPOINT") from None
    versions = versions_of(tags)
    if version in (None, "latest"):
        if not versions:
            raise error_cls(f"hf://{repo_id} has no published version (no v<semver> tag)")
        version = versions[-1]
    if version_tag(version) not in tags:
        raise error_cls(f"hf://{repo_id} has no version {version} (published: {', '.join(versions) or 'none'})")
    commit = tags[version_tag(version)]
    from rxcurate.progress import enabled

    if not enabled():
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    try:
        snapshot_download(repo_id, repo_type=REPO_TYPE, revision=commit, local_dir=str(dest), token=api.token,
                          endpoint=api.endpoint)
    except HfHubHTTPError as exc:
        raise error_cls(f"hf://{repo_id}@{version}: download failed ({_http_message(exc)})") from None
    return version, commit
