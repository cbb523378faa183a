# SPDX-License-Identifier: Apache-2.0
"""A small Hub-protocol server for tests and offline trials (stdlib only).

It answers what `huggingface_hub` 2.x sends for the operations HeteroFusion uses:
whoami, repo create/delete/settings, model_info (with or without revision), tree, paths-info, refs, commits,
branches, tags, preupload, validate-yaml, the LFS batch API with a basic PUT transfer, NDJSON commits (also as
pull requests, `refs/pr/N`) and `resolve` with HEAD, GET and Range. LFS files are redirected to a second port that
plays the CDN, so the client walks its real "signed URL, drop the auth header" path.

Modules: `fakehub_store` (state on disk), `fakehub_handler` (plumbing, auth, reads), `fakehub_write` (writes),
and this one (routes, the servers, `start_server`, the command line).

State lives on disk: `DATA/state.json` (repos, refs, commits) and content-addressed `DATA/blobs/`, so a server
restarted on the same directory serves the same repos. Clients must set `HF_HUB_DISABLE_XET=1` (no Xet here).

Example::

    with start_server(tmp_path, tokens={"hf_alice": "alice"}) as hub:
        api = HfApi(endpoint=hub.url, token="hf_alice")

or from a shell: ``python -m hf_heterofusion.testing.fakehub --port 8080 --data /tmp/hub --token alice=hf_alice``.
"""

from __future__ import annotations

import argparse
import hmac
import re
import secrets
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hf_heterofusion.testing.fakehub.handler import HubHTTPServer, ReadHandler
from hf_heterofusion.testing.fakehub.store import _API_REPO, _REPO, HubHTTPError, Store
from hf_heterofusion.testing.fakehub.write import WriteEndpoints


__all__ = ["FakeHub", "Handler", "HubHTTPError", "Store", "main", "start_server"]


class Handler(WriteEndpoints, ReadHandler):
    """The fake Hub's handler: reads, writes, and the route tables below."""


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

    def _make_server(self, host: str, port: int, is_cdn: bool) -> HubHTTPServer:
        server = HubHTTPServer((host, port), Handler)
        server.store, server.tokens, server.is_cdn, server.hub = self.store, self.tokens, is_cdn, self
        server.routes = CDN_ROUTES if is_cdn else ROUTES
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

