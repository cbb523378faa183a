# SPDX-License-Identifier: Apache-2.0
"""A small Hub-protocol server for tests and offline trials (stdlib only).

It answers what `huggingface_hub` 2.x sends for the operations HeteroFusion uses (see research/hub.md §1.4):
whoami, repo create/delete/settings, model_info (with or without revision), tree, paths-info, refs, commits,
branches, tags, preupload, validate-yaml, the LFS batch API with a basic PUT transfer, NDJSON commits (also as
pull requests, `refs/pr/N`) and `resolve` with HEAD, GET and Range. LFS files are redirected to a second port that
plays the CDN, so the client walks its real "signed URL, drop the auth header" path.

State lives on disk: `DATA/state.json` (repos, refs, commits) and content-addressed `DATA/blobs/`, so a server
restarted on the same directory serves the same repos. Clients must set `HF_HUB_DISABLE_XET=1` (no Xet here).

Example::

    with start_server(tmp_path, tokens={"hf_alice": "alice"}) as hub:
        api = HfApi(endpoint=hub.url, token="hf_alice")

or from a shell: ``python -m hf_heterofusion.testing.fakehub --port 8080 --data /tmp/hub --token alice=hf_alice``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit


# Extensions the Hub's default .gitattributes routes to LFS; anything >= 10 MiB or binary goes there too.
LFS_SUFFIXES = frozenset(
    ".7z .arrow .bin .bz2 .ckpt .ftz .gguf .gz .h5 .joblib .mlmodel .model .msgpack .npy .npz .onnx .ot .parquet"
    " .pb .pickle .pkl .pt .pth .rar .safetensors .tar .tflite .tgz .wasm .xz .zip .zst".split()
)
LFS_MIN_SIZE = 10 * 1024 * 1024
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_REPO = r"(?P<ns>[^/]+)/(?P<name>[^/]+)"
_API_REPO = r"/api/(?P<kind>models|datasets|spaces)/" + _REPO


class HubHTTPError(Exception):
    """An HTTP error answer, with the `X-Error-Code` huggingface_hub maps to a typed exception."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class Store:
    """Repos, refs and commits in one JSON file, file contents as blobs named by their sha256."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        path = self.root / "state.json"
        self.state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"repos": {}, "commits": {}}

    def save(self) -> None:
        tmp = self.root / "state.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
        os.replace(tmp, self.root / "state.json")  # atomic: a killed server never leaves half a state file

    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256

    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha)
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha

    def file_record(self, data: bytes) -> dict[str, Any]:
        """Store a regular (non-LFS) file; its git oid is the sha1 of its content."""
        return {"sha256": self.put_blob(data), "size": len(data), "lfs": False, "oid": _git_oid(data)}

    def lfs_record(self, sha256: str) -> dict[str, Any]:
        """Record an uploaded LFS object; its git oid is the sha1 of its pointer file."""
        size = self.blob_path(sha256).stat().st_size
        return {"sha256": sha256, "size": size, "lfs": True, "oid": _git_oid(_lfs_pointer(sha256, size))}

    def new_commit(self, key: str, parent: str | None, files: dict, title: str, message: str, author: str) -> str:
        body = json.dumps([key, parent, files, title, message, _now(), secrets.token_hex(8)], sort_keys=True)
        sha = hashlib.sha1(body.encode()).hexdigest()
        self.state["commits"][sha] = {
            "repo": key, "parent": parent, "files": files, "title": title, "message": message,
            "date": _now(), "author": author,
        }  # fmt: skip
        return sha


# ----------------------------------------------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    """Routes each request to one small method; every answer carries a Content-Length (keep-alive)."""

    protocol_version = "HTTP/1.1"
    server: _HubHTTPServer

    # --- plumbing -----------------------------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("FAKEHUB_VERBOSE"):
            super().log_message(format, *args)

    def _dispatch(self) -> None:
        method, split = self.command, urlsplit(self.path)
        self.query = parse_qs(split.query)
        # Read the body before anything can fail: an unread body corrupts the next request on a keep-alive socket.
        self.body = self._read_body()
        routes = CDN_ROUTES if self.server.is_cdn else ROUTES
        try:
            for route_method, pattern, func in routes:
                match = pattern.fullmatch(split.path)
                if match and method in route_method.split("|"):
                    args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    return func(self, **args)
            raise HubHTTPError(404, f"No route for {method} {split.path}")
        except HubHTTPError as err:
            self._error(err)
        except Exception as err:
            # A 5xx would make the client retry with backoff for ~24 s; a 400 surfaces a server bug at once.
            self.log_error("fakehub internal error: %r", err)
            self._error(HubHTTPError(400, f"fakehub internal error: {err!r}"))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode())

    def _error(self, err: HubHTTPError) -> None:
        headers = {"X-Error-Message": err.message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._send(err.status, json.dumps({"error": err.message}).encode(), headers)

    def _body_json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as err:
            raise HubHTTPError(400, f"Body is not JSON: {err}") from None

    # --- auth and lookups ---------------------------------------------------------------------------------------------
    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.server.tokens:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        return self.server.tokens[token]

    def _repo(self, kind: str, ns: str, name: str, *, write: bool = False) -> tuple[str, dict]:
        """The repo record, or the answer the Hub gives when it does not exist *for this caller*."""
        user = self._user()
        key = f"{REPO_TYPES.get(kind, kind)}:{ns}/{name}"
        repo = self.server.store.state["repos"].get(key)
        if repo is None or (repo["private"] and repo["owner"] != user):
            # Anonymous callers get 401 and others 404, as on the Hub; both read as RepositoryNotFoundError.
            raise HubHTTPError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        if write and user != repo["owner"]:
            raise HubHTTPError(403 if user else 401, f"You don't have the rights to write to {ns}/{name}")
        return key, repo

    def _resolve(self, key: str, repo: dict, rev: str) -> tuple[str, str]:
        """(ref name or sha, commit sha) for a branch, tag, `refs/...` name or full commit sha."""
        for ref in (rev, f"refs/heads/{rev}", f"refs/tags/{rev}"):
            if ref in repo["refs"]:
                return ref, repo["refs"][ref]
        commit = self.server.store.state["commits"].get(rev)
        if commit is not None and commit["repo"] == key:
            return rev, rev
        raise HubHTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def _files(self, sha: str) -> dict[str, dict]:
        return self.server.store.state["commits"][sha]["files"]

    def _repo_at(self, kind: str, ns: str, name: str, rev: str, write: bool = False) -> tuple[str, dict, str]:
        """(key, repo record, commit sha) of a readable (or writable) repo at a revision."""
        key, repo = self._repo(kind, ns, name, write=write)
        return key, repo, self._resolve(key, repo, rev)[1]

    def _entry(self, path: str, rec: dict) -> dict:
        entry = {"type": "file", "oid": rec["oid"], "size": rec["size"], "path": path}
        if rec["lfs"]:
            pointer_size = len(_lfs_pointer(rec["sha256"], rec["size"]))
            entry["lfs"] = {"oid": rec["sha256"], "size": rec["size"], "pointerSize": pointer_size}
        return entry

    def _dir_entry(self, path: str) -> dict:
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}

    def _url(self, key: str) -> str:
        kind, repo_id = key.split(":", 1)
        return f"{self.server.public_url}/{URL_PREFIX[kind]}{repo_id}"

    # --- account and repo management ----------------------------------------------------------------------------------
    def whoami(self) -> None:
        user = self._user()
        if user is None:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        token = {"displayName": "fakehub", "role": "write"}
        self._json({"type": "user", "name": user, "fullname": user, "orgs": [], "auth": {"accessToken": token}})

    def create_repo(self) -> None:
        user, data = self._user(), self._body_json()
        ns, kind = data.get("organization") or user, data.get("type") or "model"
        if user is None or ns != user:
            raise HubHTTPError(401 if user is None else 403, f"You don't have the rights to create a repo in {ns}")
        if not re.fullmatch(r"[\w.-]{1,96}", str(data.get("name", ""))) or kind not in URL_PREFIX:
            raise HubHTTPError(400, f"Invalid repo name or type: {data.get('name')!r} ({kind})")
        store, key = self.server.store, f"{kind}:{ns}/{data['name']}"
        with store.lock:
            if key in store.state["repos"]:
                # huggingface_hub reads `url` even from the 409 answer when `exist_ok=True`.
                return self._json({"error": "You already created this repo", "url": self._url(key)}, 409)
            private = bool(data.get("private")) or data.get("visibility") == "private"
            files = {".gitattributes": store.file_record(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n")}
            sha = store.new_commit(key, None, files, "initial commit", "", user)
            store.state["repos"][key] = {"owner": ns, "private": private, "created": _now(), "refs": {}, "next_pr": 1}
            store.state["repos"][key]["refs"]["refs/heads/main"] = sha
            store.save()
        self._json({"url": self._url(key), "name": f"{ns}/{data['name']}", "id": key})

    def delete_repo(self) -> None:
        data = self._body_json()
        ns, kind = data.get("organization") or self._user() or "", (data.get("type") or "model") + "s"
        key, _ = self._repo(kind, ns, data.get("name", ""), write=True)
        with self.server.store.lock:
            del self.server.store.state["repos"][key]
            self.server.store.save()
        self._json({})

    def settings(self, kind: str, ns: str, name: str) -> None:
        _, repo = self._repo(kind, ns, name, write=True)
        data = self._body_json()
        with self.server.store.lock:
            if "private" in data or "visibility" in data:
                repo["private"] = bool(data.get("private")) or data.get("visibility") == "private"
            self.server.store.save()
        self._json({"private": repo["private"]})

    # --- reads ----------------------------------------------------------------------------------------------------------
    def repo_info(self, kind: str, ns: str, name: str, rev: str = "main") -> None:
        key, repo, sha = self._repo_at(kind, ns, name, rev)
        commit = self.server.store.state["commits"][sha]
        siblings = []
        for path, rec in sorted(commit["files"].items()):
            entry = self._entry(path, rec)
            sib = {"rfilename": path, "size": rec["size"], "blobId": rec["oid"]}
            if "lfs" in entry:  # same facts as the tree entry, but the sha256 key is spelled differently
                sib["lfs"] = {"size": rec["size"], "sha256": rec["sha256"], "pointerSize": entry["lfs"]["pointerSize"]}
            siblings.append(sib)
        repo_id = f"{ns}/{name}"
        self._json({
            "_id": hashlib.sha1(key.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id, "author": ns,
            "sha": sha, "lastModified": commit["date"], "createdAt": repo["created"], "private": repo["private"],
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
        })  # fmt: skip

    def tree(self, kind: str, ns: str, name: str, rev: str, path: str = "") -> None:
        _, _, sha = self._repo_at(kind, ns, name, rev)
        files, prefix = self._files(sha), path.strip("/") + "/" if path.strip("/") else ""
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries: dict[str, dict] = {}
        for file_path, rec in sorted(files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):  # every folder on the way, once
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, self._dir_entry(folder))
            if recursive or len(parts) == 1:
                entries[file_path] = self._entry(file_path, rec)
        if prefix and not entries:
            raise HubHTTPError(404, f"{path} does not exist at {rev}", "EntryNotFound")
        self._json(list(entries.values()))

    def paths_info(self, kind: str, ns: str, name: str, rev: str) -> None:
        _, _, sha = self._repo_at(kind, ns, name, rev)
        if "json" in self.headers.get("Content-Type", ""):
            paths = self._body_json().get("paths", [])
        else:
            paths = parse_qs(self.body.decode()).get("paths", [])
        files, out = self._files(sha), []
        for path in paths:
            path = path.strip("/")
            if path in files:
                out.append(self._entry(path, files[path]))
            elif any(f.startswith(path + "/") for f in files):
                out.append(self._dir_entry(path))
        self._json(out)

    def refs(self, kind: str, ns: str, name: str) -> None:
        _, repo = self._repo(kind, ns, name)
        out: dict[str, list] = {"branches": [], "tags": [], "converts": [], "pullRequests": []}
        with self.server.store.lock:  # a commit may add a ref while we iterate
            refs = sorted(repo["refs"].items())
        for ref, sha in refs:
            group, short = ref.split("/")[1], ref.split("/", 2)[2]
            bucket = {"heads": "branches", "tags": "tags", "pr": "pullRequests"}[group]
            out[bucket].append({"name": short if bucket != "pullRequests" else ref, "ref": ref, "targetCommit": sha})
        if not self.query.get("include_prs"):
            del out["pullRequests"]
        self._json(out)

    def commits(self, kind: str, ns: str, name: str, rev: str) -> None:
        _, _, sha = self._repo_at(kind, ns, name, rev)
        out, commits = [], self.server.store.state["commits"]
        while sha is not None:
            c = commits[sha]
            out.append({
                "id": sha, "title": c["title"], "message": c["message"], "date": c["date"],
                "authors": [{"user": c["author"]}],
            })  # fmt: skip
            sha = c["parent"]
        self._json(out)

    def resolve(self, ns: str, name: str, rev: str, path: str, prefix: str = "") -> None:
        _, _, sha = self._repo_at(prefix.rstrip("/") or "models", ns, name, rev)
        rec = self._files(sha).get(path)
        if rec is None:
            raise HubHTTPError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if rec["lfs"]:
            # As on the Hub: LFS content lives on another origin (a signed CDN URL); the client drops its token there.
            headers.update({"X-Linked-Etag": f'"{rec["sha256"]}"', "X-Linked-Size": str(rec["size"])})
            headers["ETag"] = f'"{rec["oid"]}"'
            headers["Location"] = self.server.hub.signed_url("cdn", rec["sha256"])
            return self._send(302, b"", headers)
        self._serve_blob(rec["sha256"], {**headers, "ETag": f'"{rec["oid"]}"'})

    def _serve_blob(self, sha256: str, headers: dict[str, str]) -> None:
        data = self.server.store.blob_path(sha256).read_bytes()
        headers = {**headers, "Content-Type": "application/octet-stream"}
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and (match[1] or match[2]):
            start = int(match[1]) if match[1] else max(0, len(data) - int(match[2]))
            end = min(int(match[2]), len(data) - 1) if match[1] and match[2] else len(data) - 1
            if start >= len(data):
                raise HubHTTPError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start : end + 1], headers)
        self._send(200, data, headers)

    def cdn_get(self, sha256: str) -> None:
        self._check_signature("cdn", sha256)
        self._serve_blob(sha256, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"})

    # --- writes ---------------------------------------------------------------------------------------------------------
    def validate_yaml(self) -> None:
        self._json({"errors": [], "warnings": []})

    def agent_harnesses(self) -> None:
        self._json({"standardEnvVars": [], "harnesses": {}})  # the client's telemetry registry: nothing to detect

    def preupload(self, kind: str, ns: str, name: str, rev: str) -> None:
        _, _, sha = self._repo_at(kind, ns, name, rev, write=True)
        current, out = self._files(sha), []
        for item in self._body_json().get("files", []):
            sample, size, path = base64.b64decode(item.get("sample", "")), int(item["size"]), item["path"]
            lfs = size > 0 and (Path(path).suffix in LFS_SUFFIXES or size >= LFS_MIN_SIZE or b"\0" in sample)
            rec = current.get(path)
            # The client skips a file whose oid matches: sha256 for LFS files, git sha1 for regular ones.
            oid = None if rec is None else rec["sha256"] if rec["lfs"] else rec["oid"]
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": out})

    def lfs_batch(self, ns: str, name: str, prefix: str = "") -> None:
        self._repo(prefix.rstrip("/") or "models", ns, name, write=True)
        objects = []
        for obj in self._body_json().get("objects", []):
            item = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not self.server.store.blob_path(obj["oid"]).exists():  # known objects come back without actions
                item["actions"] = {"upload": {"href": self.server.hub.signed_url("upload", obj["oid"])}}
            objects.append(item)
        self._json({"transfer": "basic", "objects": objects})

    def lfs_upload(self, sha256: str) -> None:
        self._check_signature("upload", sha256)
        if hashlib.sha256(self.body).hexdigest() != sha256:
            raise HubHTTPError(400, f"Uploaded content does not match its sha256 {sha256}")
        self.server.store.put_blob(self.body)
        self._send(200)

    def _check_signature(self, purpose: str, sha256: str) -> None:
        if not hmac.compare_digest(self.query.get("sig", [""])[0], self.server.hub.sign(purpose, sha256)):
            raise HubHTTPError(403, "Bad or missing signature")

    def commit(self, kind: str, ns: str, name: str, rev: str) -> None:
        key, repo = self._repo(kind, ns, name, write=True)
        user, store = self._user() or "", self.server.store
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item["key"] == "header"), {})
        with store.lock:
            ref, head = self._resolve(key, repo, rev)
            if not ref.startswith(("refs/heads/", "refs/pr/")):
                raise HubHTTPError(400, f"Can only commit to a branch or a pull request, not {rev}")
            if header.get("parentCommit") not in (None, head):
                raise HubHTTPError(412, "A commit has happened since. Please refresh and try again.")
            files = self._apply_operations(dict(self._files(head)), lines)
            sha = store.new_commit(key, head, files, header.get("summary", ""), header.get("description", ""), user)
            pr_url = None
            if self.query.get("create_pr"):
                number, ref = repo["next_pr"], f"refs/pr/{repo['next_pr']}"
                repo["next_pr"] += 1
                pr_url = f"{self._url(key)}/discussions/{number}"
            repo["refs"][ref] = sha
            store.save()
        self._json({"commitOid": sha, "commitUrl": f"{self._url(key)}/commit/{sha}", "pullRequestUrl": pr_url})

    def _apply_operations(self, files: dict[str, dict], lines: list[dict]) -> dict[str, dict]:
        store = self.server.store
        for item in lines:
            key, value = item["key"], item["value"]
            path = value.get("path", "").strip("/")
            if key == "file":
                files[path] = store.file_record(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                if not store.blob_path(value["oid"]).exists():
                    raise HubHTTPError(400, f"LFS object {value['oid']} of {path} was never uploaded")
                files[path] = store.lfs_record(value["oid"])
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubHTTPError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif key == "deletedFolder":
                for name in [f for f in files if f.startswith(path + "/")]:
                    del files[name]
            elif key != "header":
                raise HubHTTPError(400, f"Unsupported commit operation {key!r}")
        return files

    def branch(self, kind: str, ns: str, name: str, branch: str) -> None:
        key, repo = self._repo(kind, ns, name, write=True)
        if self.command == "POST":
            return self._add_ref(key, repo, f"refs/heads/{branch}", self._body_json().get("startingPoint") or "main")
        with self.server.store.lock:
            if repo["refs"].pop(f"refs/heads/{branch}", None) is None:
                raise HubHTTPError(404, f"Branch {branch} not found", "RevisionNotFound")
            self.server.store.save()
        self._json({})

    def tag(self, kind: str, ns: str, name: str, rev: str) -> None:
        key, repo = self._repo(kind, ns, name, write=True)
        self._add_ref(key, repo, f"refs/tags/{self._body_json().get('tag', '')}", rev)

    def _add_ref(self, key: str, repo: dict, ref: str, rev: str) -> None:
        with self.server.store.lock:
            if ref in repo["refs"]:
                raise HubHTTPError(409, f"Reference already exists: {ref}")
            repo["refs"][ref] = self._resolve(key, repo, rev)[1]
            self.server.store.save()
        self._json({})


def _route(method: str, pattern: str, func: Any) -> tuple[str, re.Pattern[str], Any]:
    return method, re.compile(pattern), func


_PFX = r"(?P<prefix>datasets/|spaces/)?"
ROUTES = [
    _route("GET", r"/api/whoami-v2", Handler.whoami),
    _route("POST", r"/api/repos/create", Handler.create_repo),
    _route("DELETE", r"/api/repos/delete", Handler.delete_repo),
    _route("POST", r"/api/validate-yaml", Handler.validate_yaml),
    _route("GET", r"/api/agent-harnesses", Handler.agent_harnesses),
    _route("PUT", r"/api/lfs-upload/(?P<sha256>[0-9a-f]{64})", Handler.lfs_upload),
    _route("GET|HEAD", _API_REPO + r"(?:/revision/(?P<rev>[^/]+))?", Handler.repo_info),
    _route("PUT", _API_REPO + r"/settings", Handler.settings),
    _route("GET", _API_REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", Handler.tree),
    _route("POST", _API_REPO + r"/paths-info/(?P<rev>[^/]+)", Handler.paths_info),
    _route("GET", _API_REPO + r"/refs", Handler.refs),
    _route("GET", _API_REPO + r"/commits/(?P<rev>[^/]+)", Handler.commits),
    _route("POST", _API_REPO + r"/preupload/(?P<rev>[^/]+)", Handler.preupload),
    _route("POST", _API_REPO + r"/commit/(?P<rev>[^/]+)", Handler.commit),
    _route("POST|DELETE", _API_REPO + r"/branch/(?P<branch>[^/]+)", Handler.branch),
    _route("POST", _API_REPO + r"/tag/(?P<rev>[^/]+)", Handler.tag),
    _route("POST", "/" + _PFX + _REPO + r"\.git/info/lfs/objects/batch", Handler.lfs_batch),
    _route("GET|HEAD", "/" + _PFX + _REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", Handler.resolve),
]
CDN_ROUTES = [_route("GET|HEAD", r"/lfs/(?P<sha256>[0-9a-f]{64})", Handler.cdn_get)]


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    store: Store
    tokens: dict[str, str]
    is_cdn: bool
    public_url: str
    hub: FakeHub


class FakeHub:
    """A running fake Hub: `url` is what `HF_ENDPOINT` should be; stop it with `stop()` or a `with` block."""

    def __init__(self, data_dir: Path | str, tokens: dict[str, str], host: str = "127.0.0.1", port: int = 0):
        self.store, self.tokens = Store(Path(data_dir)), dict(tokens)
        self._secret = secrets.token_bytes(16)
        self._servers = [self._make_server(host, port, False), self._make_server(host, 0, True)]
        self.url = self._servers[0].public_url
        self.cdn_url = self._servers[1].public_url
        # A short poll interval makes stop() quick (the stdlib default of 0.5 s adds up over many tests).
        self._threads = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True) for s in self._servers]
        for thread in self._threads:
            thread.start()

    def _make_server(self, host: str, port: int, is_cdn: bool) -> _HubHTTPServer:
        server = _HubHTTPServer((host, port), Handler)
        server.store, server.tokens, server.is_cdn, server.hub = self.store, self.tokens, is_cdn, self
        server.public_url = f"http://{host}:{server.server_address[1]}"
        return server

    def sign(self, purpose: str, sha256: str) -> str:
        return hmac.new(self._secret, f"{purpose}:{sha256}".encode(), "sha256").hexdigest()[:32]

    def signed_url(self, purpose: str, sha256: str) -> str:
        """A URL that needs no token, like the Hub's pre-signed S3/CDN URLs."""
        base, path = (self.cdn_url, "/lfs/") if purpose == "cdn" else (self.url, "/api/lfs-upload/")
        return f"{base}{path}{sha256}?sig={quote(self.sign(purpose, sha256))}"

    def token_for(self, user: str) -> str:
        """The first token of `user` in the token table (for tests)."""
        return next(token for token, name in self.tokens.items() if name == user)

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FakeHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(data_dir: Path | str, *, tokens: dict[str, str], host: str = "127.0.0.1", port: int = 0) -> FakeHub:
    """Start a fake Hub in background threads.

    Args:
        data_dir (`Path` or `str`): where `state.json` and `blobs/` live; reused if they exist.
        tokens (`dict[str, str]`): token -> user name. Each user may write to its own namespace only.
        host (`str`, *optional*, defaults to `"127.0.0.1"`): interface to bind.
        port (`int`, *optional*, defaults to 0): port of the API; 0 picks a free one (see `FakeHub.url`).

    Returns:
        [`FakeHub`]: the running server.
    """
    return FakeHub(data_dir, tokens, host, port)


def main(argv: list[str] | None = None) -> int:
    """`python -m hf_heterofusion.testing.fakehub --port 8080 --data DIR --token alice=hf_xxx`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--data", required=True, help="directory for state.json and blobs/")
    parser.add_argument("--token", action="append", default=[], metavar="NAME=TOKEN", help="user and token (repeat)")
    args = parser.parse_args(argv)
    tokens = {}
    for item in args.token:
        name, sep, token = item.partition("=")
        if not sep or not name or not token:
            parser.error(f"--token expects NAME=TOKEN, got {item!r}")
        tokens[token] = name
    hub = start_server(args.data, tokens=tokens, host=args.host, port=args.port)
    print(f"fakehub serving {hub.url} (LFS CDN {hub.cdn_url}); users: {', '.join(sorted(tokens.values())) or 'none'}")
    print(f"export HF_ENDPOINT={hub.url} HF_HUB_DISABLE_XET=1", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
