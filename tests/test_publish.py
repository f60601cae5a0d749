"""Publishing: target strings, the local git hub (atomic, immutable versions, read API), the HF path (offline
operation plan equal to the local commit; call order against a recording test double; real Hub only when
configured) and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from release_fixture import REPO_ID, write_manifest
from typer.testing import CliRunner

from rxcurate.cli import app
from rxcurate.errors import PublishError
from rxcurate.layout import release_files
from rxcurate.publish import publish
from rxcurate.publish.local import LocalHub
from rxcurate.publish.targets import parse_target, semver_key

runner = CliRunner()


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={repo}", *args], capture_output=True, check=True,
                          text=True).stdout.strip()


# ------------------------------------------------------------------------------------------------ targets
@pytest.mark.parametrize("text, kind, repo, version", [
    ("local://org/name", "local", "org/name", None),
    ("local://org/name@1.2.3", "local", "org/name", "1.2.3"),
    ("local://org/name@v1.2.3", "local", "org/name", "1.2.3"),
    ("hf://my-org/rxrx3-core@latest", "hf", "my-org/rxrx3-core", "latest"),
    ("polaris://owner/bench", "polaris", "owner/bench", None),
    ("local", "local", "dflt/repo", None),
])
def test_parse_target(text, kind, repo, version, tmp_path):
    t = parse_target(text, default_repo_id="dflt/repo", hub=tmp_path)
    assert (t.kind, t.repo_id, t.version) == (kind, repo, version)
    assert (t.hub == tmp_path.resolve()) == (kind == "local")


@pytest.mark.parametrize("text, needle", [
    ("s3://a/b", "unknown kind"), ("hf://onlyname", "<org>/<name>"), ("hf://a/b@1.0", "semantic version"),
    ("local://../x", "<org>/<name>"), ("hf://", "names no repository"), ("", "empty target"),
])
def test_parse_target_errors_name_the_fix(text, needle):
    with pytest.raises(PublishError, match="e.g.|use") as exc:
        parse_target(text)
    assert needle in str(exc.value)


def test_hub_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RXCURATE_HUB", str(tmp_path / "envhub"))
    assert parse_target("local://a/b").hub == (tmp_path / "envhub").resolve()


def test_semver_order():
    versions = ["1.0.0", "0.10.0", "1.0.0-rc1", "0.9.1", "1.0.1"]
    assert sorted(versions, key=semver_key) == ["0.9.1", "0.10.0", "1.0.0-rc1", "1.0.0", "1.0.1"]


# ------------------------------------------------------------------------------------------------ local hub
def test_publish_local_then_read_api(release, tmp_path):
    hub = tmp_path / "hub"
    result = publish(release, "local", hub=hub)
    assert result["status"] == "published" and result["version"] == "0.1.0"
    lh = LocalHub(hub)
    repo = lh.repo_path(REPO_ID)
    assert _git(repo, "rev-parse", "--is-bare-repository") == "true"
    assert lh.list_versions(REPO_ID) == ["0.1.0"]
    assert lh.commit_of(REPO_ID, "latest") == result["commit"] == _git(repo, "rev-parse", "refs/heads/main")
    assert _git(repo, "cat-file", "-t", "refs/tags/v0.1.0") == "tag"  # annotated
    files = release_files(release)
    assert sorted(lh.list_files(REPO_ID, "0.1.0")) == files
    assert lh.read_file(REPO_ID, "0.1.0", "release.json") == (release / "release.json").read_bytes()
    out = lh.checkout(REPO_ID, "0.1.0", tmp_path / "co")
    for rel in files:
        assert (out / rel).read_bytes() == (release / rel).read_bytes(), rel
    with pytest.raises(PublishError, match="no version 9.9.9"):
        lh.read_file(REPO_ID, "9.9.9", "release.json")
    with pytest.raises(PublishError, match="does not exist"):
        lh.list_versions("nobody/nothing")
    with pytest.raises(PublishError, match="not empty"):
        lh.checkout(REPO_ID, "0.1.0", out)


def test_republish_same_is_noop_and_different_content_refused(release, tmp_path):
    hub = tmp_path / "hub"
    first = publish(release, "local", hub=hub)
    again = publish(release, "local", hub=hub)
    assert again["status"] == "unchanged" and again["commit"] == first["commit"]
    repo = LocalHub(hub).repo_path(REPO_ID)
    refs_before = _git(repo, "show-ref")
    # different content under the same version: a re-generated, self-consistent release with another embedding value
    import pyarrow as pa
    from release_fixture import rewrite_parquet

    from rxcurate.assemble import assemble
    from rxcurate.manifest import load_manifest

    emb = release / "embeddings" / "baseline" / "embeddings.parquet"
    rewrite_parquet(emb, lambda t: t.set_column(1, "feature_0", pa.array(
        [v + 1.0 for v in t.column("feature_0").to_pylist()], pa.float32())))
    info = json.loads((emb.parent / "info.json").read_text())
    from rxcurate.io import sha256_file

    info["embeddings_sha256"] = sha256_file(emb)
    (emb.parent / "info.json").write_text(json.dumps(info))
    for p in (release / "benchmarks" / "results").rglob("*.json"):  # results of other inputs must go
        p.unlink()
    path = write_manifest(tmp_path / "m.yaml")
    raw = yaml.safe_load(path.read_text())
    raw.pop("benchmarks")  # the manifest (and so release.json's record of it) must not list the removed results
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assemble(load_manifest(path), release)
    with pytest.raises(PublishError, match="already published with different content.*immutable.*0.1.1"):
        publish(release, "local", hub=hub)
    assert _git(repo, "show-ref") == refs_before


def test_prose_change_is_a_card_update_and_tag_stays(built, release, tmp_path):
    from rxcurate.assemble import assemble
    from rxcurate.manifest import load_manifest

    hub = tmp_path / "hub"
    first = publish(release, "local", hub=hub)
    before = (release / "release.json").read_bytes()
    m = load_manifest(write_manifest(tmp_path / "m.yaml", prose="New words about the release."))
    assemble(m, release)
    assert (release / "release.json").read_bytes() == before
    res = publish(release, "local", hub=hub)
    assert res["status"] == "card-updated" and res["commit"] == first["commit"] and res["head"] != first["commit"]
    lh = LocalHub(hub)
    assert lh.commit_of(REPO_ID, "0.1.0") == first["commit"]
    assert b"New words" in subprocess.run(["git", f"--git-dir={lh.repo_path(REPO_ID)}", "show", "main:README.md"],
                                          capture_output=True, check=True).stdout
    assert publish(release, "local", hub=hub)["status"] == "unchanged"


def test_new_version_alongside_old_and_older_refused(release, tmp_path):
    from rxcurate.assemble import assemble, previous_from_local
    from rxcurate.manifest import load_manifest

    hub = tmp_path / "hub"
    v1 = publish(release, "local", hub=hub)
    lh = LocalHub(hub)
    board = lh.commit_files(REPO_ID, {"leaderboard/0.1.0/sub-1.json": b'{"score": 1}'}, "leaderboard entry")
    assert lh.head(REPO_ID) == board and lh.commit_of(REPO_ID, "0.1.0") == v1["commit"]
    m2 = load_manifest(write_manifest(tmp_path / "m2.yaml", version="0.2.0"))
    assemble(m2, release, previous=previous_from_local(hub, REPO_ID, "0.2.0"))
    changelog = (release / "CHANGELOG.md").read_text()
    assert changelog.index("## 0.2.0") < changelog.index("## 0.1.0") and "Follows 0.1.0" in changelog
    v2 = publish(release, "local", hub=hub)
    assert v2["status"] == "published" and lh.list_versions(REPO_ID) == ["0.1.0", "0.2.0"]
    assert "leaderboard/0.1.0/sub-1.json" in lh.list_files(REPO_ID, "0.2.0")  # carried forward on main
    assert "leaderboard/0.1.0/sub-1.json" not in lh.list_files(REPO_ID, "0.1.0")
    assert json.loads(lh.read_file(REPO_ID, "0.1.0", "release.json"))["version"] == "0.1.0"
    m0 = load_manifest(write_manifest(tmp_path / "m0.yaml", version="0.0.9"))
    assemble(m0, release)
    with pytest.raises(PublishError, match="older than the published 0.2.0"):
        publish(release, "local", hub=hub)


def test_failed_ref_update_leaves_no_version(release, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    lh_cls = LocalHub
    real = lh_cls._update_refs

    def crash(self, repo, updates):
        raise PublishError("simulated crash before the ref transaction")

    monkeypatch.setattr(lh_cls, "_update_refs", crash)
    with pytest.raises(PublishError, match="simulated"):
        publish(release, "local", hub=hub)
    lh = LocalHub(hub)
    assert lh.list_versions(REPO_ID) == [] and lh.head(REPO_ID) is None
    monkeypatch.setattr(lh_cls, "_update_refs", real)
    assert publish(release, "local", hub=hub)["status"] == "published"


def test_ref_transaction_checks_the_old_head(release, tmp_path):
    hub = tmp_path / "hub"
    publish(release, "local", hub=hub)
    lh = LocalHub(hub)
    repo = lh.repo_path(REPO_ID)
    head = lh.head(REPO_ID)
    with pytest.raises(PublishError, match="another publisher"):
        lh._update_refs(repo, [("refs/heads/main", head, "1" * 40), ("refs/tags/v9.0.0", head, None)])
    assert lh.head(REPO_ID) == head and lh.list_versions(REPO_ID) == ["0.1.0"]


def test_invalid_release_is_not_published(release, tmp_path):
    shard = sorted((release / "data").glob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(PublishError, match=f"does not validate.*{shard.name}"):
        publish(release, "local", hub=tmp_path / "hub")
    assert not (tmp_path / "hub" / "datasets").exists()


def test_commit_files_keeps_other_files_and_rejects_bad_paths(release, tmp_path):
    hub = tmp_path / "hub"
    publish(release, "local", hub=hub)
    lh = LocalHub(hub)
    lh.commit_files(REPO_ID, {"leaderboard/a.json": b"1"}, "a")
    c2 = lh.commit_files(REPO_ID, {"leaderboard/b.json": b"2", "leaderboard/a.json": b"3"}, "b")
    tree = _git(lh.repo_path(REPO_ID), "ls-tree", "-r", "--name-only", c2).splitlines()
    assert {"leaderboard/a.json", "leaderboard/b.json", "release.json"} <= set(tree)
    assert _git(lh.repo_path(REPO_ID), "show", f"{c2}:leaderboard/a.json") == "3"
    for bad in ("../x", "/abs", "a/../../b", ".git/config"):
        with pytest.raises(PublishError, match="bad repository path"):
            lh.commit_files(REPO_ID, {bad: b"x"}, "bad")


# ------------------------------------------------------------------------------------------------ HF
def test_hf_operations_equal_the_local_commit(release, tmp_path):
    from rxcurate.publish.hf import operation_payload, plan_operations

    hub = tmp_path / "hub"
    publish(release, "local", hub=hub)
    lh = LocalHub(hub)
    ops = plan_operations(release, release_files(release))
    payload = operation_payload(ops)
    local = {rel: lh.read_file(REPO_ID, "0.1.0", rel) for rel in lh.list_files(REPO_ID, "0.1.0")}
    assert payload.keys() == local.keys()
    assert all(payload[k] == local[k] for k in local)


class RecordingHfApi:
    """Test double of huggingface_hub.HfApi's write path: records calls, keeps refs in memory (no server)."""

    endpoint = "https://hub.test-double"
    token = "hf_secret_never_printed"

    def __init__(self, fail_commit: bool = False, fail_tag: bool = False):
        self.calls: list[tuple[str, dict]] = []
        self.fail_commit = fail_commit
        self.fail_tag = fail_tag
        self.tags: dict[str, str] = {}
        self.head = "0" * 40
        self.files: dict[str, dict[str, bytes]] = {self.head: {".gitattributes": b"*.parquet filter=lfs\n"}}

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))

    def list_repo_refs(self, repo_id, **kw):
        from types import SimpleNamespace as NS

        self.calls.append(("list_repo_refs", {}))
        return NS(tags=[NS(name=k, target_commit=v) for k, v in self.tags.items()],
                  branches=[NS(name="main", target_commit=self.head)])

    def list_repo_files(self, repo_id, revision=None, **kw):
        return sorted(self.files[revision])

    def create_commit(self, repo_id, operations, *, commit_message, parent_commit=None, revision=None, **kw):

        from rxcurate.publish.hf import operation_payload

        self.calls.append(("create_commit", {"parent_commit": parent_commit, "revision": revision,
                                             "paths": sorted(op.path_in_repo for op in operations)}))
        if self.fail_commit:
            raise _http_error(f"412 Precondition Failed (token {self.token})")
        assert parent_commit == self.head
        tree = dict(self.files[self.head])
        for op in operations:
            if type(op).__name__ == "CommitOperationDelete":
                tree.pop(op.path_in_repo, None)
        tree.update(operation_payload([op for op in operations if type(op).__name__ == "CommitOperationAdd"]))
        oid = f"{len(self.files):040d}"
        self.files[oid] = tree
        self.head = oid
        from types import SimpleNamespace

        return SimpleNamespace(oid=oid)

    def create_tag(self, repo_id, *, tag, revision, **kw):
        self.calls.append(("create_tag", {"tag": tag, "revision": revision}))
        if self.fail_tag:
            raise _http_error("503 Service Unavailable")
        self.tags[tag] = revision


def _http_error(message: str):
    from types import SimpleNamespace

    from huggingface_hub.errors import HfHubHTTPError

    return HfHubHTTPError(message, response=SimpleNamespace(headers={}, request=None, status_code=500))


@pytest.fixture
def fake_read(monkeypatch):
    """Serve hf_hub_download reads from the RecordingHfApi double's in-memory trees."""
    import rxcurate.publish.hf as hf

    def read(api, repo_id, revision, path):
        return api.files.get(revision, {}).get(path)

    monkeypatch.setattr(hf, "_read", read)


def test_hf_publish_call_order_with_a_test_double(release, fake_read):
    from rxcurate.publish.hf import operation_payload, plan_operations

    api = RecordingHfApi()
    result = publish(release, "hf://org/tiny", api=api)
    names = [c[0] for c in api.calls]
    assert names == ["create_repo", "list_repo_refs", "create_commit", "create_tag"]
    commit_call, tag_call = api.calls[2][1], api.calls[3][1]
    assert commit_call["parent_commit"] == "0" * 40 and commit_call["revision"] == "main"
    assert tag_call == {"tag": "v0.1.0", "revision": result["commit"]}
    tree = api.files[result["commit"]]
    expected = operation_payload(plan_operations(release, release_files(release)))
    assert {k: v for k, v in tree.items() if k != ".gitattributes"} == expected
    # same again: nothing committed; a prose-only card change is one README commit, the tag stays
    n = len(api.calls)
    assert publish(release, "hf://org/tiny", api=api)["status"] == "unchanged"
    assert "create_commit" not in [c[0] for c in api.calls[n:]]


def test_hf_failed_commit_creates_no_tag_and_hides_token(release, fake_read):
    api = RecordingHfApi(fail_commit=True)
    with pytest.raises(PublishError) as exc:
        publish(release, "hf://org/tiny", api=api)
    assert "create_tag" not in [c[0] for c in api.calls] and not api.tags
    assert "rerun" in str(exc.value) and "412" in str(exc.value)
    assert RecordingHfApi.token not in str(exc.value) and "***" in str(exc.value)


def test_hf_failed_tag_is_finished_by_a_rerun(release, fake_read):
    api = RecordingHfApi(fail_tag=True)
    with pytest.raises(PublishError, match="no tag was created, rerun"):
        publish(release, "hf://org/tiny", api=api)
    committed = api.head
    api.fail_tag, api.calls = False, []
    result = publish(release, "hf://org/tiny", api=api)
    assert [c[0] for c in api.calls] == ["create_repo", "list_repo_refs", "create_tag"]  # no second commit
    assert result["commit"] == committed and api.tags == {"v0.1.0": committed}


def test_hf_validates_before_any_call(release):
    (release / "metadata.csv").write_text("tampered\n")
    api = RecordingHfApi()
    with pytest.raises(PublishError, match="metadata.csv"):
        publish(release, "hf://org/tiny", api=api)
    assert api.calls == []


def test_hf_without_token_says_how(release, monkeypatch):
    import rxcurate.publish.hf as hf

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hf, "get_token", lambda: None)
    with pytest.raises(PublishError, match="HF_TOKEN"):
        publish(release, "hf://org/tiny")


@pytest.mark.skipif(not (os.environ.get("RXCURATE_HF_TEST_REPO") and os.environ.get("HF_TOKEN")),
                    reason="real Hub test: set RXCURATE_HF_TEST_REPO (org/name of a scratch dataset repo) and HF_TOKEN")
def test_hf_real_hub_round_trip(release, tmp_path):  # pragma: no cover - needs network and credentials
    import secrets

    from rxcurate.assemble import assemble
    from rxcurate.manifest import load_manifest
    from rxcurate.validate import validate

    repo = os.environ["RXCURATE_HF_TEST_REPO"]
    version = f"0.0.{secrets.randbelow(10**6)}"
    assemble(load_manifest(write_manifest(tmp_path / "m.yaml", version=version, repo_id=repo)), release)
    result = publish(release, f"hf://{repo}")
    assert result["status"] == "published"
    assert publish(release, f"hf://{repo}")["status"] == "unchanged"
    assert validate(f"hf://{repo}@{version}").ok


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_publish_local(built, release, tmp_path):
    manifest = built[0]
    hub = tmp_path / "hub"
    args = ["publish", str(manifest), "--workdir", str(release), "--hub", str(hub)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "published" in r.output and "v0.1.0" in r.output and "rxcurate validate local://" in r.output
    r2 = runner.invoke(app, [*args, "--json"])
    assert r2.exit_code == 0 and json.loads(r2.output)["status"] == "unchanged"


def test_cli_publish_polaris_reports_what_cannot_be_uploaded(built, release):
    """In the core environment (no polaris-lib): a PublishError (exit 2 at the CLI, tests/test_polaris.py), nothing
    uploaded, the message says what and how."""
    r = runner.invoke(app, ["publish", str(release), "--to", "polaris://me/tiny"])
    assert isinstance(r.exception, PublishError), r.output
    text = " ".join(str(r.exception).split())
    assert "not uploaded" in text and "make install-polaris" in text and "PolarisDeprecatedError" in text


def test_cli_publish_help():
    r = runner.invoke(app, ["publish", "--help"])
    assert r.exit_code == 0 and "--to" in r.output and "hf://" in r.output and "immutable" in r.output
