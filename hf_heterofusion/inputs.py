# SPDX-License-Identifier: Apache-2.0
"""Where an input of a config is on this machine: a local path as given, a Hub reference through the pull lock.

Every stage that opens an input (target, anchor, sources, teacher bases, the evaluation) resolves it here, so a
fusion always reads exactly the bytes that `hf-heterofusion pull` pinned.
"""

from __future__ import annotations

from pathlib import Path

from hf_heterofusion.errors import AdapterNotFoundError
from hf_heterofusion.hub.lock import Lock, resolve_with_lock
from hf_heterofusion.hub.refs import parse_ref


def resolve_input(ref: str, *, what: str, lock: str | Path | None = None) -> tuple[Path, str | None]:
    """A local directory for a path or a Hub reference, and the pinned commit sha for Hub references.

    Hub references (`org/name[@revision]`) are looked up in the lock file that `hf-heterofusion pull` wrote, so a
    fusion always reads exactly the bytes that were pulled.
    """
    path = Path(ref).expanduser()
    if path.exists():
        return path, None
    if lock is None or not Path(lock).is_file():
        raise AdapterNotFoundError(
            f"{what} `{ref}` does not exist locally; check the path, or run `hf-heterofusion pull` for Hub ids "
            f"(it writes heterofusion.lock.json next to the config)"
        )
    pinned = Lock.load(lock)
    hub_ref = parse_ref(ref)
    local = resolve_with_lock(hub_ref, pinned)
    return local, pinned.entries[hub_ref.key].sha


__all__ = ["resolve_input"]
