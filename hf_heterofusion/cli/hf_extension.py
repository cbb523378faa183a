# SPDX-License-Identifier: Apache-2.0
"""`hf heterofusion ...`: register this package's `hf-heterofusion` executable as an extension of the `hf` CLI.

huggingface_hub 2.x's `hf` runs an unknown command `hf NAME ...` as an extension when it finds
`~/.local/share/hf/extensions/hf-NAME/manifest.json`; the manifest names the executable to run (the `hf-NAME`
console script of a Python package, or a shell script). `hf extensions install OWNER/hf-NAME` writes that folder
after installing the package from GitHub into a venv of its own. An `hf-NAME` on PATH is not looked up, so
`hf-heterofusion hf-extension install` writes the same manifest for the executable already installed here (no
second copy, no network), and `uninstall` removes it. The manifest's schema is huggingface_hub's own
`ExtensionManifest`, used directly so the two never drift apart.
"""

from __future__ import annotations

import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

from hf_heterofusion import __version__
from hf_heterofusion.errors import ConfigError


SHORT_NAME = "heterofusion"
EXECUTABLE = f"hf-{SHORT_NAME}"
DESCRIPTION = "Fuse LoRA experts from different model families into one adapter (HeteroFusion)"
LOCAL_OWNER = "local"  # shown by `hf extensions list` as the source of a manifest written here


def _extensions_module():
    try:
        from huggingface_hub.cli import extensions
    except ImportError as err:  # pragma: no cover - huggingface_hub >= 2 ships it
        raise ConfigError("this huggingface_hub has no `hf extensions`; install huggingface_hub>=2") from err
    return extensions


def extension_dir() -> Path:
    """`~/.local/share/hf/extensions/hf-heterofusion` (where `hf` looks; follows HOME)."""
    return _extensions_module().EXTENSIONS_ROOT.expanduser() / EXECUTABLE


def installed_executable() -> Path:
    """The `hf-heterofusion` console script of this environment (else the one on PATH)."""
    beside = Path(sys.executable).parent / EXECUTABLE
    if beside.is_file():
        return beside.resolve()
    found = shutil.which(EXECUTABLE)
    if found is None:
        raise ConfigError(f"no `{EXECUTABLE}` executable found next to {sys.executable} or on PATH; install the "
                          f"package (`pip install hf-heterofusion`) first")
    return Path(found).resolve()


def install(executable: str | Path | None = None) -> Path:
    """Write the manifest that makes `hf heterofusion` run `executable`; returns the manifest path."""
    ext = _extensions_module()
    exe = Path(executable).resolve() if executable else installed_executable()
    if not exe.is_file():
        raise ConfigError(f"{exe} is not an executable file")
    folder = extension_dir()
    manifest = ext.ExtensionManifest(
        owner=LOCAL_OWNER, repo=EXECUTABLE, repo_id=f"{LOCAL_OWNER}/{EXECUTABLE}", short_name=SHORT_NAME,
        executable_path=str(exe), type="python", installed_at=datetime.now(timezone.utc),
        description=f"{DESCRIPTION} (v{__version__})", commit_sha=None,
    )
    manifest.save(folder)
    return folder / ext.MANIFEST_FILENAME


def uninstall() -> Path | None:
    """Remove the extension folder written by `install` (or by `hf extensions install`); None if absent."""
    folder = extension_dir()
    if not folder.is_dir():
        return None
    shutil.rmtree(folder)
    return folder


def status() -> str:
    ext = _extensions_module()
    folder = extension_dir()
    if not (folder / ext.MANIFEST_FILENAME).is_file():
        return f"not registered (would write {folder / ext.MANIFEST_FILENAME})"
    manifest = ext.ExtensionManifest.load(folder)
    return f"registered: `hf {manifest.short_name}` runs {manifest.executable_path} (source {manifest.repo_id})"


__all__ = ["extension_dir", "install", "installed_executable", "status", "uninstall"]
