"""Hostile release folders and environments for publish (issue 16): symbolic links are refused before anything is
committed, tagged or uploaded; a token with surrounding whitespace is stripped and never printed in any form; the
temp folder of a killed repository creation is cleaned on the next run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from release_fixture import REPO_ID, copy_release

from rxcurate.errors import PublishError
from rxcurate.layout import release_files
from rxcurate.publish import publish
from rxcurate.publish.hf import HfHub, get_token, http_message, publish_hf, redact
from rxcurate.publish.local import LocalHub

TOKEN = "hf_FAKEtok3nSECRETqz91xv"


def _link_in_place(path: Path, outside: Path) -> None:
    """Replace ``path`` by a symbolic link to a copy of it outside the release (same bytes)."""
    outside.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, outside)
    path.unlink()
    path.symlink_to(outside)


def _nothing_published(hub: Path) -> None:
    repo = LocalHub(hub).repo_path(REPO_ID)
    if (repo / "HEAD").is_file():
        tags = subprocess.run(["git", f"--git-dir={repo}", "tag", "--list"], capture_output=True, text=True)
        assert tags.stdout.strip() == "", tags.stdout
        heads = subprocess.run(["git", f"--git-dir={repo}", "rev-parse", "--verify", "-q", "refs/heads/main"],
                               capture_output=True, text=True)
        assert heads.returncode != 0


@pytest.mark.parametrize("rel", ["data/train-00001-of-00005.parquet", "embeddings/baseline/embeddings.parquet",
                                 "metadata.csv"])
def test_symlinked_release_file_is_refused_before_anything_is_written(built, tmp_path, rel):
    folder = copy_release(built[1], tmp_path / "release")
    assert rel in release_files(folder)
    _link_in_place(folder / rel, tmp_path / "elsewhere" / Path(rel).name)
    hub = tmp_path / "hub"
    with pytest.raises(PublishError, match=rf"{rel} is a symbolic link.*copy of the file.*nothing was published"):
        publish(folder, "local", hub=hub)
    _nothing_published(hub)


def test_symlinked_folder_is_refused(built, tmp_path):
    folder = copy_release(built[1], tmp_path / "release")
    shutil.move(folder / "embeddings", tmp_path / "real-embeddings")
    (folder / "embeddings").symlink_to(tmp_path / "real-embeddings")
    with pytest.raises(PublishError, match=r"embeddings is a symbolic link"):
        publish(folder, "local", hub=tmp_path / "hub")
    _nothing_published(tmp_path / "hub")


def test_hub_publish_itself_refuses_links(built, tmp_path):
    """The hub interface refuses too (callers other than rxcurate publish): no commit with a mode 120000 entry."""
    folder = copy_release(built[1], tmp_path / "release")
    rel = "data/train-00000-of-00005.parquet"
    _link_in_place(folder / rel, tmp_path / "elsewhere" / "shard.parquet")
    hub = LocalHub(tmp_path / "hub")
    with pytest.raises(PublishError, match=rf"{rel} is a symbolic link"):
        hub.publish(REPO_ID, "0.1.0", folder, release_files(folder) + [rel])
    _nothing_published(tmp_path / "hub")


class _NoNetwork:
    """An HfApi stand-in that fails the test on any call."""

    token = None
    endpoint = "http://127.0.0.1:9"

    def __getattr__(self, name):
        raise AssertionError(f"HfApi.{name} called: the symbolic link must be refused before any network call")


def test_hf_publish_refuses_links_before_upload(built, tmp_path):
    folder = copy_release(built[1], tmp_path / "release")
    rel = "metadata.parquet"
    _link_in_place(folder / rel, tmp_path / "elsewhere" / rel)
    with pytest.raises(PublishError, match=rf"hf://{REPO_ID}: .*{rel} is a symbolic link"):
        publish_hf(REPO_ID, "0.1.0", folder, release_files(folder) + [rel], api=_NoNetwork())
    with pytest.raises(PublishError, match=rf"{rel} is a symbolic link"):
        publish(folder, f"hf://{REPO_ID}", api=_NoNetwork())


def test_stale_repository_temp_folder_is_removed_on_the_next_run(built, tmp_path):
    hub = tmp_path / "hub"
    parent = LocalHub(hub).repo_path(REPO_ID).parent
    stale = parent / f".{Path(REPO_ID).name}.k1ll3d_x"
    stale.mkdir(parents=True)
    subprocess.run(["git", "init", "--bare", "-q", str(stale)], check=True)
    unrelated = parent / f".{Path(REPO_ID).name}.keep-this-one"
    unrelated.mkdir()
    publish(built[1], "local", hub=hub)
    assert not stale.exists()
    assert unrelated.is_dir()
    assert (LocalHub(hub).repo_path(REPO_ID) / "HEAD").is_file()
    # and with the repository already there (a killed second creation), the next publish cleans it too
    stale.mkdir()
    publish(built[1], "local", hub=hub)
    assert not stale.exists()


def test_stale_ref_locks_and_index_folders_of_a_killed_publish_do_not_block_the_next(built, tmp_path):
    """A publish killed inside `git update-ref --stdin` (between prepare and commit) leaves HEAD.lock and
    <ref>.lock; one killed while building its tree leaves a temporary index folder. The next publish, holding the
    repository lock, clears both and publishes."""
    hub = tmp_path / "hub"
    repo = LocalHub(hub).repo_path(REPO_ID)
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "--bare", "-q", "-b", "main", str(repo)], check=True)
    (repo / "HEAD.lock").write_text("")
    (repo / "refs" / "heads" / "main.lock").write_text("")
    (repo / "refs" / "tags").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "tags" / "v0.1.0.lock").write_text("")
    index = repo / "rxcurate-index-k1ll3d"
    index.mkdir()
    (index / "index").write_bytes(b"stale")
    res = publish(built[1], "local", hub=hub)
    assert res["status"] == "published"
    assert not index.exists()
    assert not any(repo.rglob("*.lock"))
    assert LocalHub(hub).list_versions(REPO_ID) == ["0.1.0"]


def test_a_new_hub_repository_honours_the_umask(built, tmp_path):
    old = os.umask(0o022)
    try:
        publish(built[1], "local", hub=tmp_path / "hub")
    finally:
        os.umask(old)
    repo = LocalHub(tmp_path / "hub").repo_path(REPO_ID)
    assert repo.stat().st_mode & 0o777 == 0o755


# ------------------------------------------------------------------------------------------------ tokens
@pytest.mark.parametrize("suffix", ["\n", "\r\n", "  \t"])
def test_token_with_whitespace_is_stripped_and_never_shown(monkeypatch, suffix):
    raw = TOKEN + suffix
    monkeypatch.setenv("HF_TOKEN", raw)
    assert get_token() == TOKEN
    assert HfHub(endpoint="http://127.0.0.1:9").api.token == TOKEN
    header = f"Bearer {raw}"
    exc = ValueError(f"Illegal header value {header.encode()!r} ({header!r}; raw {raw}; {TOKEN})")
    for text in (http_message(exc), redact(str(exc))):
        for form in (raw, TOKEN, repr(raw)[1:-1], repr(raw.encode())[2:-1], TOKEN[3:]):
            assert form not in text, text
    assert "***" in http_message(exc)


def test_token_with_inner_whitespace_is_an_error_that_hides_it(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_FAKE tok3nSECRET")
    with pytest.raises(PublishError) as exc:
        get_token()
    assert "FAKE" not in str(exc.value) and "SECRET" not in str(exc.value) and "HF_TOKEN" in str(exc.value)


class _HeaderRejectingApi:
    """An HfApi holding the raw (unstripped) token whose HTTP client rejects the header, showing its repr (as h11
    does on a reachable server)."""

    endpoint = "http://127.0.0.1:9"

    def __init__(self, token: str) -> None:
        self.token = token

    def create_repo(self, *args, **kwargs):
        import httpx

        raise httpx.LocalProtocolError(f"Illegal header value {('Bearer ' + self.token).encode()!r}")


@pytest.mark.parametrize("suffix", ["\n", "\r\n"])
def test_hub_error_of_a_token_with_a_newline_is_redacted(built, tmp_path, monkeypatch, suffix):
    raw = TOKEN + suffix
    monkeypatch.setenv("HF_TOKEN", raw)
    folder = copy_release(built[1], tmp_path / "release")
    with pytest.raises(PublishError) as exc:
        publish(folder, f"hf://{REPO_ID}", api=_HeaderRejectingApi(raw))
    text = str(exc.value)
    assert "Illegal header value" in text and "***" in text
    for form in (raw, TOKEN, repr(raw)[1:-1], TOKEN[3:]):
        assert form not in text, text
    assert os.environ["HF_TOKEN"] == raw
