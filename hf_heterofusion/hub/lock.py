# SPDX-License-Identifier: Apache-2.0
"""`heterofusion.lock.json`: every Hub reference of a config pinned to a commit sha, and where its files are.

Snapshot folders are stored relative to the Hub cache root (`models--org--name/snapshots/<sha>`), so a lock can be
committed next to its config and used on another machine or by another user with their own cache; a lock written
by an older version with absolute paths still reads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from hf_heterofusion.constants import LOCK_NAME
from hf_heterofusion.errors import HubError
from hf_heterofusion.files import write_atomic
from hf_heterofusion.hub.client import default_cache_dir
from hf_heterofusion.hub.refs import HubRef, parse_ref


Kind = Literal["adapter", "model"]
LOCK_VERSION = 1


@dataclass(frozen=True)
class LockedFile:
    """Size, and sha256 for LFS files, as the Hub reported them."""

    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class LockEntry:
    """One pinned Hub reference: the requested revision, the commit it resolved to and the files taken from it.

    `local_path` is the snapshot folder relative to the Hub cache root (see `folder`).
    """

    repo_id: str
    revision: str | None
    sha: str
    kind: Kind
    local_path: str
    files: dict[str, LockedFile]

    def folder(self, cache_dir: Path | str | None = None) -> Path:
        """The snapshot folder in `cache_dir` (default: `HF_HUB_CACHE` or `HF_HOME/hub`, read now)."""
        path = Path(self.local_path)
        return path if path.is_absolute() else Path(cache_dir or default_cache_dir()) / path


def cache_relative(folder: Path | str, cache_dir: Path | str) -> str:
    """`folder` relative to the cache root when it lies inside it (always, for snapshots), else as given."""
    folder, root = Path(folder), Path(cache_dir)
    try:
        return folder.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(folder)


@dataclass
class Lock:
    """`heterofusion.lock.json`: Hub reference (`repo_id[@revision]`) -> [`LockEntry`]."""

    entries: dict[str, LockEntry] = field(default_factory=dict)
    path: Path | None = None

    def to_json(self) -> str:
        repos = {key: asdict(entry) for key, entry in sorted(self.entries.items())}
        return json.dumps({"version": LOCK_VERSION, "repos": repos}, indent=2, sort_keys=True) + "\n"

    def save(self, path: Path | str | None = None) -> Path:
        target = Path(path or self.path or LOCK_NAME)
        write_atomic(target, self.to_json())  # never leave a half-written lock next to the config
        self.path = target
        return target

    @classmethod
    def load(cls, path: Path | str) -> Lock:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = {
                key: LockEntry(**{**e, "files": {n: LockedFile(**f) for n, f in e["files"].items()}})
                for key, e in data["repos"].items()
            }
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise HubError(f"cannot read lock file {path} ({err}); delete it and run `hf-heterofusion pull`") from err
        return cls(entries, path)


def resolve_with_lock(ref: HubRef | str, lock: Lock | Path | str, *, cache_dir: Path | str | None = None) -> Path:
    """The local directory of a reference: itself if local, else the snapshot pinned in the lock.

    Raises:
        [`HubError`]: the reference was never pulled, or its snapshot is not in the cache.
    """
    lock = lock if isinstance(lock, Lock) else Lock.load(lock)
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    if ref.local_path is not None:
        return ref.local_path
    entry = lock.entries.get(ref.key)
    if entry is None:
        where = lock.path or "the lock file"
        raise HubError(f"`{ref}` is not pinned in {where}; run `hf-heterofusion pull` on the config first")
    path = entry.folder(cache_dir)
    if not path.is_dir():
        raise HubError(f"the pinned snapshot of `{ref}` ({entry.sha[:12]}) is not in the Hub cache ({path}); run "
                       f"`hf-heterofusion pull` again (with HF_HUB_CACHE set as when it was pulled)")
    return path
