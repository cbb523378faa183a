# SPDX-License-Identifier: Apache-2.0
"""The mergekit merge method `heterofusion` (installed as `hf_heterofusion.merge_methods`).

mergekit 0.1.5 has no plugin entry point: a method exists for mergekit only once something calls
`mergekit.merge_methods.register` in the process that plans and executes the merge. `register_all()` does that,
idempotently; `hf-heterofusion merge`, the pytest plugin and the start-up hook (`hook.py`) call it.

Importing this package is cheap on purpose: no torch, no mergekit, no pydantic. The kernel module and mergekit
are imported only inside `register_all()`, because the start-up hook imports this package in every Python
process of an environment where it is installed.

Layout:

* `heterofusion.py`: the `MergeMethodSpec` and the data-free tensor kernel (what mergekit's own planner runs);
* `yaml_config.py`: a mergekit YAML -> `FusionConfig` (trained mode) or a checked `MergeConfiguration` (data-free);
* `planner.py`: the trained mode on mergekit's graph engine (`FitHeteroFusion` -> adapter / merged checkpoint);
* `tasks.py`: the trained mode's own graph nodes (`FitHeteroFusion`, `WriteFusedAdapter`, `FoldLoraIntoWeight`);
* `dry_run.py`: what `hf-heterofusion check` prints;
* `hook.py`: registration when mergekit's registry is imported, and the optional `.pth` file;
* `*.yml`: example configs (the tests run them); `README.md`: every parameter.
"""

from __future__ import annotations


METHOD_NAME = "heterofusion"

_registering = False


def register_all() -> None:
    """Register `heterofusion` with mergekit's method registry; safe to call any number of times.

    A re-entrant call (mergekit's registry being imported *by* this function, which fires the start-up hook,
    which calls this function again) returns at once: the outer call finishes the registration.
    """
    global _registering
    if _registering:
        return
    _registering = True
    try:
        # The registry module, not the `mergekit.merge_methods` package: when the start-up hook calls us, the
        # package is still executing the very line that imports its registry, so its names are not bound yet.
        from mergekit.merge_methods.registry import get, register

        from .heterofusion import build_method

        try:
            get(METHOD_NAME)
        except RuntimeError:  # mergekit's way of saying "not registered"
            register(build_method())
    finally:
        _registering = False


__all__ = ["METHOD_NAME", "register_all"]
