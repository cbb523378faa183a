# SPDX-License-Identifier: Apache-2.0
"""pytest plugin that registers the `heterofusion` merge method with mergekit before tests are collected.

mergekit's registry-wide conformance test is parametrised over `registered_methods()` at collection time, so
running mergekit's own suite with this plugin checks our kernel like a built-in method::

    pytest -p hf_heterofusion.testing.pytest_plugin path/to/mergekit/tests
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    from hf_heterofusion.merge_methods import register_all

    register_all()
