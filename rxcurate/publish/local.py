"""The local hub: datasets as bare git repositories on disk (``HUB/datasets/<org>/<name>``), the layout ``olah``
serves over the Hub's HTTP read API.

A version is one commit whose tree is the release folder and an annotated tag ``v<version>``; accepted leaderboard
submissions live on a separate ``leaderboard`` branch (``rxcurate submit``), so publishing never touches them.
Publishing writes the release's objects into the repository
(unreferenced, hence invisible), then moves ``refs/heads/main`` and creates the tag in one ``git update-ref``
transaction, with the old value of ``main`` checked: both refs change or neither does, exactly as an atomic push
(``git push --atomic``) does on the receiving side. A crash leaves at most unreferenced objects, never a half
version. Published versions are immutable:

- the same content again is a no-op (the existing commit is returned);
- a change of the card's prose only (``README.md``; ``release.json`` identical up to provenance) is committed on
  ``main`` as a card update while the version's tag keeps pointing at the original commit;
- any other difference under an existing version is refused with :class:`PublishError`.

Git runs as a subprocess (``git`` >= 2.30) with a fixed identity and no user or system configuration.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rxcurate.errors import PublishError
from rxcurate.io import current_umask
from rxcurate.layout import CARD, RELEASE_JSON
from rxcurate.publish.targets import (
    CARRIED_PREFIXES,
    LEADERBOARD_BRANCH,
    PublishResult,
    bump_patch,
    check_relpath,
    parse_version,
    refuse_links,
    release_identity,
    resolve_target,
    semver_key,
    version_tag,
    versions_of,
)

__all__ = ["LocalHub", "PublishResult", "resolve_target", "CARRIED_PREFIXES", "check_relpath", "bump_patch"]

BRANCH = "main"
INDEX_PREFIX = "rxcurate-index-"  # temporary git index folders, made inside the bare repository
TEMP_SUFFIX_RE = re.compile(r"^[A-Za-z0-9_]{8}$")  # tempfile.mkdtemp's random part
IDENTITY = {"GIT_AUTHOR_NAME": "rxcurate", "GIT_AUTHOR_EMAIL": "rxcurate@localhost",
            "GIT_COMMITTER_NAME": "rxcurate", "GIT_COMMITTER_EMAIL": "rxcurate@localhost"}


class LocalHub:
    """A hub folder of bare git dataset repositories (a :class:`rxcurate.publish.hub.Hub`): read API for consumers,
    publish for releases, the ``leaderboard`` branch for accepted submissions. Raises :class:`PublishError`."""

    scheme = "local"
    needs_push = False  # a submission is recorded directly (on the leaderboard branch)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path).resolve()

    def label(self, repo_id: str) -> str:
        return f"local://{repo_id}"

    # ------------------------------------------------------------------------------------------ git plumbing
    def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(IDENTITY)
        env.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
                    "LC_ALL": "C"})
        if extra:
            env.update(extra)
        return env

    def _git(self, repo: Path, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None,
             check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        cmd = ["git", f"--git-dir={repo}", *args]
        try:
            proc = subprocess.run(cmd, input=input, capture_output=True, env=self._env(env), cwd=cwd)
        except FileNotFoundError:
            raise PublishError("the local hub needs the git command line tool: install git (>= 2.30)") from None
        if check and proc.returncode != 0:
            msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise PublishError(f"git {args[0]} failed in {repo}: {msg[-1] if msg else proc.returncode}")
        return proc

    def _out(self, repo: Path, *args: str, **kw: Any) -> str:
        return self._git(repo, *args, **kw).stdout.decode("utf-8").strip()

    # ------------------------------------------------------------------------------------------ read API
    def repo_path(self, repo_id: str) -> Path:
        org, _, name = repo_id.partition("/")
        if not org or not name or "/" in name or org in ("..", ".") or name in ("..", "."):
            raise PublishError(f"bad repository id {repo_id!r}: use <org>/<name> (e.g. rxcurate/rxrx3-core)")
        return self.root / "datasets" / org / name

    def exists(self, repo_id: str) -> bool:
        return (self.repo_path(repo_id) / "HEAD").is_file()

    def _require(self, repo_id: str) -> Path:
        path = self.repo_path(repo_id)
        if not self.exists(repo_id):
            have = ", ".join(self.list_repos()) or "none"
            raise PublishError(f"local://{repo_id} does not exist in the hub {self.root} (repositories: {have}); "
                                 f"publish it first (rxcurate publish MANIFEST --to local://{repo_id}) or pass "
                                 f"--hub DIR")
        return path

    def list_repos(self) -> list[str]:
        base = self.root / "datasets"
        if not base.is_dir():
            return []
        return sorted(f"{o.name}/{r.name}" for o in base.iterdir() if o.is_dir()
                      for r in o.iterdir() if (r / "HEAD").is_file())

    def list_versions(self, repo_id: str) -> list[str]:
        """Published versions (tags ``v<semver>``), oldest first."""
        repo = self._require(repo_id)
        return versions_of(t.strip() for t in self._out(repo, "tag", "--list", "v*").splitlines())

    def resolve_version(self, repo_id: str, version: str | None = "latest") -> str:
        """``latest``/None -> the newest published version; a semver must be published."""
        versions = self.list_versions(repo_id)
        if version in (None, "latest"):
            if not versions:
                raise PublishError(f"local://{repo_id} has no published version yet: publish one first")
            return versions[-1]
        v = parse_version(version)
        if v not in versions:
            raise PublishError(f"local://{repo_id} has no version {v} (published: {', '.join(versions) or 'none'}); "
                                 f"use one of them or @latest")
        return v

    def commit_of(self, repo_id: str, version: str) -> str:
        """The commit id a version's tag points at."""
        repo = self._require(repo_id)
        v = self.resolve_version(repo_id, version)
        return self._out(repo, "rev-parse", f"refs/tags/{version_tag(v)}^{{commit}}")

    def head(self, repo_id: str, branch: str = BRANCH) -> str | None:
        repo = self._require(repo_id)
        proc = self._git(repo, "rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}", check=False)
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def _rev(self, repo_id: str, version: str) -> str:
        return f"refs/tags/{version_tag(self.resolve_version(repo_id, version))}"

    def list_files(self, repo_id: str, version: str) -> dict[str, int]:
        """Every file of a version: path -> size in bytes."""
        repo = self._require(repo_id)
        out = self._git(repo, "ls-tree", "-r", "-l", "-z", "--full-tree", self._rev(repo_id, version)).stdout
        files: dict[str, int] = {}
        for entry in out.split(b"\0"):
            if not entry:
                continue
            meta, _, path = entry.partition(b"\t")
            parts = meta.split()
            if parts[1] == b"blob":
                files[path.decode("utf-8")] = int(parts[3])
        return files

    def read_file(self, repo_id: str, version: str, relpath: str) -> bytes:
        """The bytes of one file of a version."""
        repo = self._require(repo_id)
        rel = check_relpath(relpath)
        rev = self._rev(repo_id, version)
        proc = self._git(repo, "cat-file", "blob", f"{rev}:{rel}", check=False)
        if proc.returncode != 0:
            raise PublishError(f"local://{repo_id}@{rev.rsplit('/v', 1)[-1]} has no file {rel!r}; list the files "
                                 f"with LocalHub.list_files (e.g. release.json, README.md)")
        return proc.stdout

    def copy_file(self, repo_id: str, version: str, relpath: str, dest: str | os.PathLike[str]) -> None:
        """Stream one file of a version into ``dest`` (overwritten) without holding it in memory."""
        repo = self._require(repo_id)
        rel = check_relpath(relpath)
        rev = self._rev(repo_id, version)
        with open(dest, "wb") as out:
            proc = subprocess.run(["git", f"--git-dir={repo}", "cat-file", "blob", f"{rev}:{rel}"], stdout=out,
                                  stderr=subprocess.PIPE, env=self._env())
        if proc.returncode != 0:
            raise PublishError(f"local://{repo_id}@{rev.rsplit('/v', 1)[-1]} has no file {rel!r}")

    def list_branch_files(self, repo_id: str, branch: str, prefix: str = "") -> list[str]:
        """Paths of the files on ``branch`` under ``prefix`` (empty when the branch does not exist)."""
        repo = self._require(repo_id)
        if self.head(repo_id, branch) is None:
            return []
        out = self._git(repo, "ls-tree", "-r", "-z", "--name-only", "--full-tree", f"refs/heads/{branch}").stdout
        return sorted(p for p in out.decode("utf-8").split("\0") if p and p.startswith(prefix))

    def read_branch_file(self, repo_id: str, branch: str, relpath: str) -> bytes | None:
        """The bytes of one file on ``branch``, or None when absent."""
        repo = self._require(repo_id)
        return self._blob(repo, f"refs/heads/{branch}", check_relpath(relpath))

    def checkout(self, repo_id: str, version: str, dest: str | os.PathLike[str]) -> Path:
        """Write the tree of a version into ``dest`` (created; must be absent or empty). Returns ``dest``."""
        repo = self._require(repo_id)
        rev = self._rev(repo_id, version)
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise PublishError(f"checkout destination {dest} is not empty: choose a new folder")
        label = f"local://{repo_id}@{rev.rsplit('/v', 1)[-1]}"
        listing = self._git(repo, "ls-tree", "-r", "-z", "--full-tree", rev).stdout
        odd = [e.partition(b"\t")[2].decode("utf-8", "replace") for e in listing.split(b"\0")
               if e and not e.startswith((b"100644 ", b"100755 "))]
        if odd:
            raise PublishError(f"{label}: {odd[0]} is not a regular file in the repository (a symbolic link or a "
                               f"submodule); a release holds regular files only: republish it from a folder of "
                               f"regular files under a new version")
        dest.mkdir(parents=True, exist_ok=True)
        if not listing:
            return dest  # an empty tree (git archive would write an empty stream, which is no tar)
        proc = subprocess.Popen(["git", f"--git-dir={repo}", "archive", "--format=tar", rev], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self._env())
        assert proc.stdout is not None
        tar_error = ""
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                tar.extractall(dest, filter="data")
        except (tarfile.TarError, OSError) as exc:  # a truncated stream (git died on a corrupt object)
            tar_error = f"{type(exc).__name__}: {exc}"
        finally:
            proc.stdout.close()
            err = proc.stderr.read() if proc.stderr else b""
            code = proc.wait()
        if code != 0 or tar_error:
            lines = err.decode(errors="replace").strip().splitlines()
            raise PublishError(f"git archive failed for {label} ({lines[-1] if lines else tar_error}): the repository "
                               f"is damaged; check it with git --git-dir={repo} fsck")
        return dest

    # ------------------------------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _locked(self, repo_id: str) -> Iterator[None]:
        path = self.repo_path(repo_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _ensure_repo(self, repo_id: str) -> Path:
        path = self.repo_path(repo_id)
        self._remove_stale_temps(path)  # the caller holds the lock
        if (path / "HEAD").is_file():
            return path
        if path.exists():
            raise PublishError(f"{path} exists but is not a git repository: move it away or choose another --hub")
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700: a hub others serve or read honours the umask
        try:
            self._git(tmp, "init", "--bare", "-q", "-b", BRANCH)
            # JPEG 2000 does not compress: store objects with the fastest zlib level.
            self._git(tmp, "config", "core.compression", "1")
            self._git(tmp, "config", "core.looseCompression", "1")
            os.rename(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return path

    @staticmethod
    def _remove_stale_temps(path: Path) -> None:
        """Remove ``.<name>.XXXXXXXX`` folders a killed :meth:`_ensure_repo` left beside ``path``. Called holding the
        repository's lock, which every creator holds while its temp folder exists: any such folder is stale."""
        prefix = f".{path.name}."
        for p in path.parent.glob(f"{prefix}*"):
            suffix = p.name[len(prefix):]
            if TEMP_SUFFIX_RE.match(suffix) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
        for p in path.glob(f"{INDEX_PREFIX}*") if path.is_dir() else ():  # a killed commit's temporary index
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)

    def _build_tree(self, repo: Path, index: Path, folder: Path | None, files: Iterable[str],
                    carry_from: str | None, blobs: Mapping[str, bytes] | None = None) -> str:
        """Write a tree: ``files`` from ``folder`` (+ ``blobs``) + the carried prefixes of ``carry_from``."""
        env = {"GIT_INDEX_FILE": str(index)}
        self._git(repo, "read-tree", "--empty", env=env)
        if carry_from is not None:
            listing = self._git(repo, "ls-tree", "-r", "-z", "--full-tree", carry_from, env=env).stdout
            keep = b"".join(e + b"\0" for e in listing.split(b"\0")
                            if e and e.partition(b"\t")[2].decode().startswith(CARRIED_PREFIXES))
            if keep:
                self._git(repo, "update-index", "-z", "--index-info", input=keep, env=env)
        names = sorted(files)
        if names:
            assert folder is not None
            self._git(repo, f"--work-tree={folder}", "update-index", "--add", "-z", "--stdin",
                      input=b"".join(n.encode() + b"\0" for n in names), env=env, cwd=folder)
        for rel, data in sorted((blobs or {}).items()):
            sha = self._out(repo, "hash-object", "-w", "--stdin", input=data)
            self._git(repo, "update-index", "--add", "--cacheinfo", f"100644,{sha},{rel}", env=env)
        return self._out(repo, "write-tree", env=env)

    def _commit(self, repo: Path, tree: str, parent: str | None, message: str) -> str:
        args = ["commit-tree", tree, "-m", message]
        if parent:
            args += ["-p", parent]
        return self._out(repo, *args)

    def _update_refs(self, repo: Path, updates: list[tuple[str, str, str | None]]) -> None:
        """One atomic ref transaction: [(ref, new, old or None = must not exist)]."""
        zero = "0" * 40
        lines = ["start"]
        lines += [f"update {ref} {new} {old if old else zero}" for ref, new, old in updates]
        lines += ["prepare", "commit"]
        for name in ("HEAD", *(u[0] for u in updates)):  # a killed update-ref's ref locks; callers hold our lock
            (repo / f"{name}.lock").unlink(missing_ok=True)
        proc = self._git(repo, "update-ref", "--stdin", input=("\n".join(lines) + "\n").encode(), check=False)
        if proc.returncode != 0:
            raise PublishError(f"{repo}: another publisher changed {', '.join(u[0] for u in updates)} meanwhile "
                                 f"(nothing was changed); rerun the command")

    def _diff(self, repo: Path, a: str, b: str) -> list[str]:
        out = self._git(repo, "diff-tree", "-r", "-z", "--name-only", "--no-renames", a, b).stdout
        return sorted(p.decode() for p in out.split(b"\0") if p and not p.decode().startswith(CARRIED_PREFIXES))

    def _blob(self, repo: Path, rev: str, rel: str) -> bytes | None:
        proc = self._git(repo, "cat-file", "blob", f"{rev}:{rel}", check=False)
        return proc.stdout if proc.returncode == 0 else None

    def publish(self, repo_id: str, version: str, folder: str | os.PathLike[str], files: Iterable[str],
                message: str | None = None) -> PublishResult:
        """Publish ``files`` (paths relative to ``folder``) as version ``version``: one commit on main + tag."""
        folder = Path(folder).resolve()
        version = parse_version(version)
        if version == "latest":
            raise PublishError("publish needs a concrete version (e.g. 1.0.0), not latest")
        names = [check_relpath(f) for f in files]
        clash = [n for n in names if n.startswith(CARRIED_PREFIXES)]
        if clash:
            raise PublishError(f"release files may not live under {CARRIED_PREFIXES[0]} (the leaderboard's "
                                 f"location): {clash[0]}")
        tag = version_tag(version)
        target = f"local://{repo_id}"
        refuse_links(folder, names, target)  # git would store a link as a link (mode 120000), not the file's bytes
        with self._locked(repo_id):
            repo = self._ensure_repo(repo_id)
            head = self.head(repo_id)
            with tempfile.TemporaryDirectory(prefix=INDEX_PREFIX, dir=repo) as tmp:  # inside: swept if killed
                tree = self._build_tree(repo, Path(tmp) / "index", folder, names, head)
            versions = self.list_versions(repo_id)
            if version in versions:
                return self._republish(repo, repo_id, version, tree, head, message)
            newer = [v for v in versions if semver_key(v) > semver_key(version)]
            if newer:
                raise PublishError(f"{target}: version {version} is older than the published {newer[-1]}; versions "
                                     f"only move forward: set version in the manifest above {versions[-1]}")
            commit = self._commit(repo, tree, head, message or f"Release {version}")
            tag_obj = self._out(repo, "mktag", input=(
                f"object {commit}\ntype commit\ntag {tag}\ntagger rxcurate <rxcurate@localhost> {int(time.time())} "
                f"+0000\n\nRelease {version}\n").encode())
            self._update_refs(repo, [(f"refs/heads/{BRANCH}", commit, head), (f"refs/tags/{tag}", tag_obj, None)])
            return PublishResult(target, version, tag, commit, "published", commit, str(repo))

    def _changes(self, repo: Path, a: str, b: str) -> list[str]:
        """Release paths differing between two trees; release.json counts only if its identity differs."""
        changed = self._diff(repo, f"{a}^{{tree}}", f"{b}^{{tree}}")
        if RELEASE_JSON in changed and release_identity(self._blob(repo, a, RELEASE_JSON)) == \
                release_identity(self._blob(repo, b, RELEASE_JSON)) is not None:
            changed.remove(RELEASE_JSON)  # provenance only (library versions): the same release
        return changed

    def _republish(self, repo: Path, repo_id: str, version: str, tree: str, head: str | None,
                   message: str | None) -> PublishResult:
        tag = version_tag(version)
        target = f"local://{repo_id}"
        tagged = self._out(repo, "rev-parse", f"refs/tags/{tag}^{{commit}}")
        changed = self._changes(repo, tagged, tree)
        if set(changed) - {CARD}:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            raise PublishError(f"{target}: version {version} is already published with different content ({shown}); "
                                 f"published versions are immutable: bump version in the manifest (e.g. "
                                 f"{bump_patch(version)}) and rebuild the card")
        head_carries = head is not None and not set(self._changes(repo, tagged, head)) - {CARD}
        if not head_carries:
            if not changed:
                return PublishResult(target, version, tag, tagged, "unchanged", head, str(repo))
            raise PublishError(f"{target}: the card of {version} can only be updated while it is the newest version "
                                 f"on main; publish the new card with a new version instead")
        assert head is not None
        if not self._changes(repo, head, tree):
            return PublishResult(target, version, tag, tagged, "unchanged", head, str(repo))
        commit = self._commit(repo, tree, head, message or f"Update the dataset card of {version}")
        self._update_refs(repo, [(f"refs/heads/{BRANCH}", commit, head)])
        return PublishResult(target, version, tag, tagged, "card-updated", commit, str(repo))

    def commit_files(self, repo_id: str, files: Mapping[str, bytes], message: str, branch: str = BRANCH) -> str:
        """Add or overwrite ``files`` (path -> bytes) on ``branch`` in one commit (e.g. leaderboard entries).

        The other files of the branch are kept. Returns the new commit id; raises when the branch moved meanwhile.
        """
        if not files:
            raise PublishError("commit_files needs at least one file")
        blobs = {check_relpath(k): bytes(v) for k, v in files.items()}
        with self._locked(repo_id):
            repo = self._require(repo_id)
            head = self.head(repo_id, branch)
            with tempfile.TemporaryDirectory(prefix=INDEX_PREFIX, dir=repo) as tmp:
                env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
                if head:
                    self._git(repo, "read-tree", head, env=env)
                else:
                    self._git(repo, "read-tree", "--empty", env=env)
                for rel, data in sorted(blobs.items()):
                    sha = self._out(repo, "hash-object", "-w", "--stdin", input=data)
                    self._git(repo, "update-index", "--add", "--cacheinfo", f"100644,{sha},{rel}", env=env)
                tree = self._out(repo, "write-tree", env=env)
            commit = self._commit(repo, tree, head, message)
            self._update_refs(repo, [(f"refs/heads/{branch}", commit, head)])
            return commit

    # ------------------------------------------------------------------------------------------ leaderboard
    def read_leaderboard(self, repo_id: str, prefix: str) -> dict[str, bytes]:
        """The leaderboard entries (path -> bytes) under ``prefix`` on the ``leaderboard`` branch."""
        out: dict[str, bytes] = {}
        for path in self.list_branch_files(repo_id, LEADERBOARD_BRANCH, prefix):
            data = self.read_branch_file(repo_id, LEADERBOARD_BRANCH, path)
            if data is not None:
                out[path] = data
        return out

    def record_leaderboard(self, repo_id: str, files: Mapping[str, bytes], message: str) -> str:
        """Commit leaderboard entries on the ``leaderboard`` branch (main and the tags are never touched)."""
        commit = self.commit_files(repo_id, files, message, branch=LEADERBOARD_BRANCH)
        return f"branch {LEADERBOARD_BRANCH} commit {commit[:12]}"
