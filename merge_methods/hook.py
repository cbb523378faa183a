# SPDX-License-Identifier: Apache-2.0
"""Register `heterofusion` the moment mergekit's method registry is imported, and never earlier.

`install_mergekit_hook()` puts a tiny finder at the front of `sys.meta_path`. It does nothing for every module
except `mergekit.merge_methods.registry`; when that module has executed (so mergekit's built-in methods exist),
it calls `register_all()`. Nothing heavy (torch, mergekit, pydantic) is imported before mergekit itself is, so
the hook can run at interpreter start-up:

* `import hf_heterofusion` installs it (then `mergekit.merge_methods.get("heterofusion")` works in any program);
* the optional `.pth` file written by `hf-heterofusion mergekit-hook install` installs it at start-up, so the
  plain `mergekit-yaml` command (and any script that imports mergekit) finds `heterofusion` too.

This module must stay free of third-party and package-level imports: the `.pth` line imports it in every Python
process of the environment.
"""

from __future__ import annotations

import importlib.abc
import sys
import sysconfig
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any


REGISTRY_MODULE = "mergekit.merge_methods.registry"
PTH_NAME = "hf_heterofusion_mergekit.pth"  # sorts after `__editable__.*.pth`, which must run first in dev installs
# One line, executed by `site` at start-up; a broken or uninstalled package must never break the interpreter.
PTH_LINE = (
    'import sys; exec("try:\\n import hf_heterofusion.merge_methods.hook as h; h.install_mergekit_hook()'
    '\\nexcept Exception:\\n pass")\n'
)
_MARKER = "_hf_heterofusion_mergekit_hook"


def install_mergekit_hook() -> None:
    """Register `heterofusion` now if mergekit's registry is loaded, else as soon as it is imported (idempotent)."""
    if REGISTRY_MODULE in sys.modules:
        _register_quietly()
        return
    if not any(getattr(finder, _MARKER, False) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegistryFinder())


def _register_quietly() -> None:
    """Registration must not turn `import mergekit` into a crash: report the problem and let mergekit load."""
    try:
        from hf_heterofusion.merge_methods import register_all

        register_all()
    except Exception as err:  # pragma: no cover - only a broken install gets here
        warnings.warn(f"hf_heterofusion could not register the `heterofusion` merge method with mergekit: {err}",
                      RuntimeWarning, stacklevel=2)


class _RegistryFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for mergekit's registry it wraps the real loader so registration follows execution."""

    _hf_heterofusion_mergekit_hook = True

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None):
        if fullname != REGISTRY_MODULE:
            return None
        for finder in sys.meta_path:
            if getattr(finder, _MARKER, False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    """Delegates to mergekit's own loader, then registers `heterofusion` and removes the finder."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        # Hand the module back to the real loader (reload, get_source, resources keep working as usual).
        module.__loader__ = self._inner
        if module.__spec__ is not None:
            module.__spec__.loader = self._inner
        sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, _MARKER, False)]
        _register_quietly()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# ------------------------------------------------------------------------------------------- the .pth file


def default_site_dir() -> Path:
    """The running interpreter's site-packages (the environment `mergekit-yaml` runs in)."""
    return Path(sysconfig.get_paths()["purelib"])


def install_pth(site_dir: str | Path | None = None) -> Path:
    """Write the start-up `.pth` file so plain `mergekit-yaml` finds `heterofusion`; returns its path."""
    path = Path(site_dir or default_site_dir()) / PTH_NAME
    path.write_text(PTH_LINE, encoding="utf-8")
    return path


def uninstall_pth(site_dir: str | Path | None = None) -> Path | None:
    """Remove the `.pth` file; returns its path, or `None` when it was not installed."""
    path = Path(site_dir or default_site_dir()) / PTH_NAME
    if not path.is_file():
        return None
    path.unlink()
    return path


def pth_path(site_dir: str | Path | None = None) -> Path | None:
    """The installed `.pth` file, or `None`."""
    path = Path(site_dir or default_site_dir()) / PTH_NAME
    return path if path.is_file() else None
