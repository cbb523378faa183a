# SPDX-License-Identifier: Apache-2.0
"""Test and demo helpers: tiny heterogeneous model families, a local tokenizer and seeded LoRA adapters.

Everything is built locally from transformers configs; nothing is downloaded. The pytest fixtures live in
`hf_heterofusion.testing.fixtures` (a pytest plugin) and are not imported here, so importing this package
does not require pytest.
"""

from __future__ import annotations

from hf_heterofusion.testing.factories import (
    FAMILIES,
    FamilySpec,
    FixtureZoo,
    get_family,
    make_lora_adapter,
    make_tiny_model,
    make_tokenizer,
    model_config,
)


__all__ = [
    "FAMILIES",
    "FamilySpec",
    "FixtureZoo",
    "get_family",
    "make_lora_adapter",
    "make_tiny_model",
    "make_tokenizer",
    "model_config",
]
