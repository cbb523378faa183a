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
MERGE_MODULE = "mergekit.merge"  # its `run_merge` gets a guard for trained-mode configs (see `guard_run_merge`)
PTH_NAME = "hf_heterofusion_mergekit.pth"  # sorts after `__editable__.*.pth`, which must run first in dev installs
# One line, executed by `site` at start-up; a broken or uninstalled package must never break the interpreter.
PTH_LINE = (
    'import sys; exec("try:\\n import hf_heterofusion.merge_methods.hook as h; h.install_mergekit_hook()'
    '\\nexcept Exception:\\n pass")\n'
)
_MARKER = "_hf_heterofusion_mergekit_hook"


def install_mergekit_hook() -> None:
    """Register `heterofusion` now if mergekit's registry is loaded, else as soon as it is imported (idempotent);
    the same for the guard on `mergekit.merge.run_merge`."""
    if REGISTRY_MODULE in sys.modules:
        _register_quietly()
    if MERGE_MODULE in sys.modules:
        guard_run_merge(sys.modules[MERGE_MODULE])
    if all(name in sys.modules for name in _ACTIONS):
        return
    if not any(getattr(finder, _MARKER, False) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegistryFinder())


def guard_run_merge(module: ModuleType) -> None:
    """Make `mergekit.merge.run_merge` refuse a trained-mode `heterofusion` config with one line that says what to run.

    mergekit's planner pairs tensors by name and architecture, so a `base_model: target+anchor_adapter` config of
    other families ends in `Must specify --allow-crimes` or `All inputs to a slice must contain the same number of
    layers`; that mode runs only through `hf-heterofusion merge` (our planner). Data-free configs and every other
    method pass through untouched.
    """
    original = getattr(module, "run_merge", None)
    if original is None or getattr(original, _MARKER, False):
        return

    def run_merge(merge_config, out_path, *args, **kwargs):
        base = getattr(merge_config, "base_model", None)
        if getattr(merge_config, "merge_method", None) == "heterofusion" and getattr(base, "lora", None) is not None:
            raise _trained_mode_error(out_path)
        return original(merge_config, out_path, *args, **kwargs)

    run_merge.__doc__ = original.__doc__
    run_merge.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(run_merge, _MARKER, True)
    module.run_merge = run_merge


def _trained_mode_error(out_path: Any) -> Exception:
    """A `ConfigError` that click (mergekit-yaml's CLI) prints as one `Error:` line with exit status 2."""
    import click

    from hf_heterofusion.errors import ConfigError

    class TrainedModeError(ConfigError, click.ClickException):
        exit_code = 2

        def __init__(self, message: str) -> None:
            click.ClickException.__init__(self, message)  # sets `.message`, which click prints

    return TrainedModeError(
        "this heterofusion config trains transfer nets (`base_model: target+anchor_adapter`), which mergekit's "
        f"planner cannot run; run it with `hf-heterofusion merge CONFIG.yml {out_path}` (same options)"
    )


def _register_quietly() -> None:
    """Registration must not turn `import mergekit` into a crash: report the problem and let mergekit load."""
    try:
        from hf_heterofusion.merge_methods import register_all

        register_all()
    except Exception as err:  # pragma: no cover - only a broken install gets here
        warnings.warn(f"hf_heterofusion could not register the `heterofusion` merge method with mergekit: {err}",
                      RuntimeWarning, stacklevel=2)


class _RegistryFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for mergekit's registry (and `mergekit.merge`) it wraps the real loader so that our
    action (registration, the `run_merge` guard) follows the module's execution."""

    _hf_heterofusion_mergekit_hook = True

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None):
        if fullname not in _ACTIONS:
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
            spec.loader = _RegisteringLoader(spec.loader, fullname)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    """Delegates to mergekit's own loader, then registers `heterofusion` and removes the finder."""

    def __init__(self, inner: importlib.abc.Loader, name: str) -> None:
        self._inner = inner
        self._name = name

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        # Hand the module back to the real loader (reload, get_source, resources keep working as usual).
        module.__loader__ = self._inner
        if module.__spec__ is not None:
            module.__spec__.loader = self._inner
        if all(name in sys.modules for name in _ACTIONS):
            sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, _MARKER, False)]
        _ACTIONS[self._name](module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_ACTIONS = {REGISTRY_MODULE: lambda _module: _register_quietly(), MERGE_MODULE: guard_run_merge}


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
