# SPDX-License-Identifier: Apache-2.0
"""The fake Hub's write endpoints: repo create/delete/settings, preupload, the LFS batch API and basic PUT
transfer, NDJSON commits (also as pull requests), branches and tags. Part of `hf_heterofusion.testing.fakehub`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from pathlib import Path

from hf_heterofusion.testing.fakehub.store import (
    LFS_MIN_SIZE,
    LFS_SUFFIXES,
    URL_PREFIX,
    HubHTTPError,
    _now,
)


class WriteEndpoints:
    """Mixin for `ReadHandler`: every endpoint that changes the store (each one under the store's lock)."""

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
