# SPDX-License-Identifier: Apache-2.0
"""The fake Hub's request handler: plumbing, auth, lookups and the read endpoints (whoami, info, tree, paths-info,
refs, commits, resolve, the CDN). Part of `hf_heterofusion.testing.fakehub` (see there); stdlib only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from hf_heterofusion.testing.fakehub.store import REPO_TYPES, URL_PREFIX, HubHTTPError, _lfs_pointer


if TYPE_CHECKING:
    from hf_heterofusion.testing.fakehub.store import Store


class HubHTTPServer(ThreadingHTTPServer):
    """The HTTP server of one fake Hub (or its CDN): what every request handler reads."""

    daemon_threads = True
    store: Store
    tokens: dict[str, str]
    is_cdn: bool
    routes: list
    public_url: str
    hub: Any  # the FakeHub that owns this server


class ReadHandler(BaseHTTPRequestHandler):
    """Routes each request to one small method; every answer carries a Content-Length (keep-alive).

    This class has the plumbing, auth, lookups and every read endpoint; `fakehub_write.WriteEndpoints` adds the
    writes and `fakehub.Handler` combines the two with the route table.
    """

    protocol_version = "HTTP/1.1"
    server: HubHTTPServer

    # --- plumbing -----------------------------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("FAKEHUB_VERBOSE"):
            super().log_message(format, *args)

    def _dispatch(self) -> None:
        method, split = self.command, urlsplit(self.path)
        self.query = parse_qs(split.query)
        # Read the body before anything can fail: an unread body corrupts the next request on a keep-alive socket.
        self.body = self._read_body()
        routes = self.server.routes  # the API's or the CDN's table (fakehub.ROUTES / CDN_ROUTES)
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

    def validate_yaml(self) -> None:
        self._json({"errors": [], "warnings": []})

    def agent_harnesses(self) -> None:
        self._json({"standardEnvVars": [], "harnesses": {}})  # the client's telemetry registry: nothing to detect
