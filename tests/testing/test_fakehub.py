# SPDX-License-Identifier: Apache-2.0
"""The fake Hub answers the real huggingface_hub client as the Hub does, checked through that client."""

from __future__ import annotations

import http.client
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hf_heterofusion.testing.fakehub import start_server
from hf_heterofusion.testing.hub_fixtures import BOB_TOKEN, HubEnv


pytestmark = pytest.mark.hub

WEIGHTS = bytes(range(256)) * 40  # 10 KiB, binary: goes through LFS


def _repo(prefix: str) -> str:
    return f"alice/{prefix}-{uuid.uuid4().hex[:8]}"


def _raw(url: str, path: str, method: str = "GET", headers: dict | None = None, body: bytes | None = None):
    """One request without redirects or retries, to look at status codes and headers."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


@pytest.fixture
def uploaded(hub_env: HubEnv, tmp_path: Path) -> tuple[str, str]:
    """A repo with an LFS file, a regular file and a nested file; returns (repo_id, commit sha)."""
    folder = tmp_path / "upload"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(WEIGHTS)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "notes.txt").write_text("hello")
    repo = _repo("proto")
    api = hub_env.api()
    api.create_repo(repo)
    info = api.upload_folder(repo_id=repo, folder_path=folder, commit_message="add files")
    return repo, info.oid


def test_whoami_and_bad_token(hub_env: HubEnv) -> None:
    assert hub_env.api().whoami()["name"] == "alice"
    with pytest.raises(HfHubHTTPError) as err:
        hub_env.api(token="hf_not_a_real_token").whoami()
    assert err.value.response.status_code == 401


def test_create_repo_conflict_and_exist_ok(hub_env: HubEnv) -> None:
    api, repo = hub_env.api(), _repo("create")
    url = api.create_repo(repo)
    assert url.repo_id == repo and url.endswith(repo)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(repo)
    assert err.value.response.status_code == 409
    assert api.create_repo(repo, exist_ok=True).repo_id == repo
    with pytest.raises(HfHubHTTPError):
        hub_env.api(token=BOB_TOKEN).create_repo(_repo("not-bobs"))  # bob may not write to alice's namespace


def test_private_repo_is_hidden_from_others(hub_env: HubEnv) -> None:
    repo = _repo("private")
    hub_env.api().create_repo(repo, private=True)
    assert hub_env.api().model_info(repo).private is True
    for token in (False, BOB_TOKEN):  # anonymous gets 401, another user 404: both read as "not found"
        with pytest.raises(RepositoryNotFoundError):
            hub_env.api(token=token).model_info(repo)
    assert not hub_env.api(token=False).repo_exists(repo)
    hub_env.api().update_repo_settings(repo, private=False)
    assert hub_env.api(token=False).model_info(repo).private is False


def test_upload_then_list_and_download(hub_env: HubEnv, uploaded: tuple[str, str]) -> None:
    repo, sha = uploaded
    api = hub_env.api()
    info = api.model_info(repo, revision=sha, files_metadata=True)
    assert info.sha == sha
    siblings = {s.rfilename: s for s in info.siblings}
    assert siblings["model.safetensors"].lfs.size == len(WEIGHTS) and siblings["config.json"].lfs is None
    assert sorted(api.list_repo_files(repo)) == [".gitattributes", "config.json", "model.safetensors", "sub/notes.txt"]
    top = {e.path for e in api.list_repo_tree(repo)}
    assert top == {".gitattributes", "config.json", "model.safetensors", "sub"}
    assert [e.path for e in api.get_paths_info(repo, ["sub", "config.json", "missing"])] == ["sub", "config.json"]
    assert [c.title for c in api.list_repo_commits(repo)] == ["add files", "initial commit"]
    path = api.hf_hub_download(repo, "model.safetensors", cache_dir=hub_env.cache_dir)
    assert Path(path).read_bytes() == WEIGHTS
    assert api.file_exists(repo, "sub/notes.txt") and not api.file_exists(repo, "nope.txt")
    with pytest.raises(RemoteEntryNotFoundError):
        api.hf_hub_download(repo, "nope.txt", cache_dir=hub_env.cache_dir)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo, revision="no-such-branch")


def test_resolve_headers_redirect_and_range(hub_env: HubEnv, uploaded: tuple[str, str]) -> None:
    repo, sha = uploaded
    status, headers, _ = _raw(hub_env.url, f"/{repo}/resolve/main/model.safetensors", "HEAD")
    assert status == 302 and headers["X-Repo-Commit"] == sha and headers["X-Linked-Size"] == str(len(WEIGHTS))
    assert headers["Location"].startswith(hub_env.hub.cdn_url)  # another origin, like the Hub's CDN
    location = urlsplit(headers["Location"])
    status, _, data = _raw(headers["Location"], f"{location.path}?{location.query}", headers={"Range": "bytes=10-19"})
    assert status == 206 and data == WEIGHTS[10:20]
    status, headers, data = _raw(hub_env.url, f"/{repo}/resolve/{sha}/config.json", headers={"Range": "bytes=-3"})
    assert status == 206 and data == b": 1}"[-3:] and headers["ETag"]
    assert _raw(hub_env.hub.cdn_url, location.path + "?sig=forged")[0] == 403


def test_lfs_upload_checks_sha256(hub_env: HubEnv) -> None:
    href = urlsplit(hub_env.hub.signed_url("upload", "0" * 64))
    status, _, _ = _raw(hub_env.url, f"{href.path}?{href.query}", "PUT", body=b"not matching")
    assert status == 400


def test_branches_pull_requests_and_stale_parent(hub_env: HubEnv, uploaded: tuple[str, str]) -> None:
    repo, sha = uploaded
    api = hub_env.api()
    api.create_branch(repo, branch="dev")
    api.upload_file(path_or_fileobj=b"dev only", path_in_repo="dev.txt", repo_id=repo, revision="dev")
    assert "dev.txt" in api.list_repo_files(repo, revision="dev") and "dev.txt" not in api.list_repo_files(repo)
    pr = api.upload_file(path_or_fileobj=b"proposal", path_in_repo="pr.txt", repo_id=repo, create_pr=True)
    assert pr.pr_revision == "refs/pr/1" and pr.pr_url.endswith("/discussions/1")
    assert "pr.txt" in api.list_repo_files(repo, revision="refs/pr/1")
    refs = api.list_repo_refs(repo, include_pull_requests=True)
    assert {b.name for b in refs.branches} == {"main", "dev"} and refs.pull_requests[0].ref == "refs/pr/1"
    api.create_commit(repo, [CommitOperationDelete("sub/notes.txt")], commit_message="rm", parent_commit=sha)
    with pytest.raises(HfHubHTTPError) as err:  # sha is no longer the head of main
        api.create_commit(repo, [CommitOperationAdd("x.txt", b"x")], commit_message="late", parent_commit=sha)
    assert err.value.response.status_code == 412


def test_state_survives_restart(tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    with start_server(tmp_path / "data", tokens={"tok": "carol"}) as hub:
        HfApi(endpoint=hub.url, token="tok").upload_file(
            path_or_fileobj=b"kept",
            path_in_repo="a.txt",
            repo_id=HfApi(endpoint=hub.url, token="tok").create_repo("carol/persist").repo_id,
        )
    with start_server(tmp_path / "data", tokens={"tok": "carol"}) as hub:
        assert "a.txt" in HfApi(endpoint=hub.url, token="tok").list_repo_files("carol/persist")


@pytest.mark.integration
def test_command_line_server(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hf_heterofusion.testing.fakehub", "--data", str(tmp_path), "--token", "dan=hf_dan"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("fakehub serving http://127.0.0.1:") and "dan" in line
        url = line.split()[2]
        status, _, body = _raw(url, "/api/whoami-v2", headers={"Authorization": "Bearer hf_dan"})
        assert status == 200 and b'"dan"' in body
    finally:
        proc.terminate()
        proc.wait(10)
