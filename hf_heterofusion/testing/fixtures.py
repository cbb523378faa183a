# SPDX-License-Identifier: Apache-2.0
"""Pytest plugin with session-scoped tiny models and adapters for every family in `FAMILIES`.

Enabled from `tests/conftest.py` with `pytest_plugins = ["hf_heterofusion.testing.fixtures"]`. All artefacts
are built lazily by one `FixtureZoo` under a session temporary folder, so a test that needs only the Llama
target never pays for the other families.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_heterofusion.testing.factories import FAMILIES, FixtureZoo


@pytest.fixture(scope="session")
def fixture_zoo(tmp_path_factory: pytest.TempPathFactory) -> FixtureZoo:
    """The session cache: `fixture_zoo.model(family)`, `fixture_zoo.adapter(family, r=4, seed=0)`."""
    return FixtureZoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="session")
def tiny_models(fixture_zoo: FixtureZoo) -> dict[str, Path]:
    """Family name -> folder of its tiny base model (config, safetensors weights, tokenizer)."""
    return {family: fixture_zoo.model(family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_adapters(fixture_zoo: FixtureZoo) -> dict[str, Path]:
    """Family name -> folder of a rank-4 LoRA adapter on all linear projections of that family's base."""
    return {family: fixture_zoo.adapter(family, r=4) for family in FAMILIES}


@pytest.fixture(scope="session")
def llama_target(fixture_zoo: FixtureZoo) -> Path:
    """Folder of the tiny Llama base, the default fusion target."""
    return fixture_zoo.model("llama")


@pytest.fixture(scope="session")
def llama_anchor(fixture_zoo: FixtureZoo) -> Path:
    """Folder of the rank-4 Llama adapter that anchors fusion (fixes r, modules and alpha)."""
    return fixture_zoo.adapter("llama", r=4)
