# SPDX-License-Identifier: Apache-2.0
"""Writing files so that a crash, a kill or a full disk never leaves a half-written one.

    write_atomic(path, text)         one file, replaced in one step
    staged_output(out_dir, ...)      a whole output folder, built in a stage that replaces `out_dir` when complete
    is_disk_full(err)                whether an error (however wrapped) says the device or quota is full
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hf_heterofusion.errors import DiskFullError, OutputExistsError


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `path` through a temporary sibling and `os.replace`: readers see the old file or the new one, never
    part of either (a kill, a full disk or a concurrent writer of the same path included)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def ensure_new_output(out_dir: Path, overwrite: bool) -> None:
    """`out_dir` may be written: absent, empty, or `overwrite` (checked before any compute, not after)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"output path {out_dir} is a file, not a directory; choose another output path")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(f"output directory {out_dir} exists and is not empty; pass --overwrite to replace it")


@contextlib.contextmanager
def staged_output(out_dir: Path, *, overwrite: bool, needs_bytes: int | None = None) -> Iterator[Path]:
    """Yield a staging directory next to `out_dir`; on success it atomically replaces `out_dir`.

    On any failure the stage is deleted; a full disk (or quota) becomes a one-line `DiskFullError` that names
    `out_dir` and the space it needs (`needs_bytes` when the caller knows it, else what was written before).
    """
    out_dir = Path(out_dir)
    ensure_new_output(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_stages(out_dir)
    stage = None
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-{os.getpid()}-", dir=out_dir.parent))
        yield stage
    except BaseException as err:
        written = _tree_bytes(stage) if stage is not None else 0
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        if is_disk_full(err):
            needs = f"~{_mb(needs_bytes)} MB" if needs_bytes else f"more than the {_mb(written)} MB it had written"
            raise DiskFullError(f"no space left on device while writing {out_dir} (needs {needs}); free space or "
                                f"choose another output folder") from None
        raise
    apply_umask(stage)
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(stage, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# How the libraries that write for us report it: safetensors' Rust writer raises `SafetensorError("... No space
# left on device (os error 28)")`, other writers wrap the OSError; match the errno or its strerror text.
_DISK_FULL_TEXT = tuple(os.strerror(code) for code in _DISK_FULL) + tuple(f"os error {code}" for code in _DISK_FULL)


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` (or an exception it was raised from) says the device or the quota is full."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            return True
        if isinstance(err, Exception) and any(text in str(err) for text in _DISK_FULL_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f}" if n < 10 * 2**20 else f"{n / 2**20:.0f}"


def apply_umask(root: Path) -> None:
    """Give the output the modes the user's umask asks for.

    `mkdtemp` creates the stage `0700` on purpose (nobody sees a half-written output), and some writers create files
    `0600`; the finished output must look like anything else the user creates (`0755`/`0644` under umask 022).
    """
    mask = os.umask(0)
    os.umask(mask)
    for path in (root, *root.rglob("*")):
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def _remove_stale_stages(out_dir: Path) -> None:
    """Delete staging folders that a killed export of `out_dir` left behind (their process no longer runs)."""
    for stale in out_dir.parent.glob(f".{out_dir.name}.staging-*"):
        pid = stale.name.removeprefix(f".{out_dir.name}.staging-").split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


__all__ = ["apply_umask", "ensure_new_output", "is_disk_full", "staged_output", "write_atomic"]
