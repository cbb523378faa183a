# SPDX-License-Identifier: Apache-2.0
"""The fake Hub's state: repos, refs and commits in one JSON file, file contents as blobs named by their sha256.

Part of `hf_heterofusion.testing.fakehub` (see there); stdlib only.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hf_heterofusion.files import write_atomic


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
        # atomic: a killed server never leaves half a state file
        write_atomic(self.root / "state.json", json.dumps(self.state, indent=1, sort_keys=True))

    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256

    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha)
        if not path.exists():
            write_atomic(path, data)
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
