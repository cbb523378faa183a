# SPDX-License-Identifier: Apache-2.0
"""Pytest fixtures for the local Hub-protocol server (`fakehub`).

Enable with `pytest_plugins = ["hf_heterofusion.testing.hub_fixtures"]`. `fake_hub` is one server per session with
two users, `alice` and `bob` (each may write to its own namespace only); `hub_env` points the environment of one
test at it, with a fresh `HF_HOME` and alice's token in `HF_TOKEN`, so the real client and the `hf` CLI
(subprocesses inherit the environment) talk to it.

huggingface_hub binds `HF_ENDPOINT`, `HF_HOME` and `HF_HUB_OFFLINE` when it is first imported. Code under test must
therefore build an explicit `HfApi(endpoint=..., token=...)` and read those variables at call time, as
`hf_heterofusion.hub` does; only `HF_HUB_DISABLE_XET` has to be set before the import, which this module does.
"""

from __future__ import annotations

import os


# No Xet on the fake hub: without this, uploads of LFS files fail with a 404 on /xet-write-token.
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_UPDATE_CHECK", "1")

import shutil  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import pytest  # noqa: E402

from hf_heterofusion.testing.fakehub import FakeHub, start_server  # noqa: E402


if TYPE_CHECKING:
    from huggingface_hub import HfApi

ALICE_TOKEN = "hf_fakehub_alice_write_token_0001"
BOB_TOKEN = "hf_fakehub_bob_token_0002"


@dataclass(frozen=True)
class HubEnv:
    """One test's view of the fake Hub: its URL, alice's token and the per-test `HF_HOME` / cache."""

    hub: FakeHub
    url: str
    token: str
    home: Path
    cache_dir: Path

    def api(self, token: str | bool | None = None) -> HfApi:
        """A client for the fake hub; alice's token by default, `token=False` for an anonymous one."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.url, token=self.token if token is None else token)

    def hf_cli(self) -> str:
        """Path of the `hf` executable (see `hf_cli_path`)."""
        return hf_cli_path()


def hf_cli_path() -> str:
    """Path of the `hf` executable of the running interpreter's environment (else the one on PATH)."""
    exe = Path(sys.executable).parent / "hf"
    return str(exe) if exe.exists() else (shutil.which("hf") or "hf")


@pytest.fixture(scope="session")
def fake_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    """One fake Hub server for the whole session (users `alice` and `bob`)."""
    hub = start_server(tmp_path_factory.mktemp("fakehub"), tokens={ALICE_TOKEN: "alice", BOB_TOKEN: "bob"})
    yield hub
    hub.stop()


@pytest.fixture
def hub_env(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubEnv:
    """Point this test's environment at the fake hub, with its own `HF_HOME` and alice's `HF_TOKEN`."""
    home = tmp_path / "hf_home"
    home.mkdir()
    env = {
        "HF_ENDPOINT": fake_hub.url,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN": ALICE_TOKEN,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    return HubEnv(fake_hub, fake_hub.url, ALICE_TOKEN, home, home / "hub")
