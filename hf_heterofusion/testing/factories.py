# SPDX-License-Identifier: Apache-2.0
"""Seeded LoRA adapters on the tiny families, and the lazy cache that builds models and adapters once.

The last steps of the fixtures' data flow (`tokenizer.py` -> `families.py` -> here):

* `make_lora_adapter` saves a PEFT LoRA adapter whose `A` *and* `B` are seeded random (PEFT starts `B` at 0);
* `FixtureZoo` builds and caches models and adapters lazily under one root folder.

The names of `families.py` and `tokenizer.py` are importable from here too, where callers have always found them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hf_heterofusion.testing.families import (
    FAMILIES,
    LLAMA_STYLE_MODULES,
    PHI3_MODULES,
    FamilySpec,
    get_family,
    make_tiny_model,
    model_config,
)
from hf_heterofusion.testing.tokenizer import make_tokenizer


def _family_of(base_dir: Path) -> FamilySpec | None:
    model_type = json.loads((base_dir / "config.json").read_text())["model_type"]
    return next((spec for spec in FAMILIES.values() if spec.model_type == model_type), None)


def make_lora_adapter(
    base_dir: Path | str,
    out_dir: Path | str,
    *,
    r: int = 4,
    lora_alpha: int = 8,
    target_modules: Sequence[str] | None = None,
    seed: int = 0,
    scale: float = 0.02,
) -> Path:
    """Save a PEFT LoRA adapter for the model in `base_dir` whose `A` and `B` are both seeded random.

    PEFT initialises `B` to zero, which would make every factory adapter a no-op and hide fusion bugs;
    here `A ~ U(-1/sqrt(d_in), 1/sqrt(d_in))` (PEFT's Kaiming bound) and `B ~ N(0, scale^2)`, so
    `dW = lora_alpha / r * B @ A` changes the logits clearly without swamping the base weights (on the default
    families, r=4, alpha=8: about 0.02-0.14 nats of KL from the base next-token distribution).

    Args:
        base_dir (`Path | str`): a folder written by `make_tiny_model` (or any local causal LM).
        out_dir (`Path | str`): where `adapter_config.json` and `adapter_model.safetensors` go.
        r (`int`, *optional*, defaults to 4): LoRA rank.
        lora_alpha (`int`, *optional*, defaults to 8): LoRA alpha; the scaling is `lora_alpha / r`.
        target_modules (`Sequence[str]`, *optional*):
            Module names to adapt; defaults to all linear projections of the family.
        seed (`int`, *optional*, defaults to 0): the same seed gives identical tensors.
        scale (`float`, *optional*, defaults to 0.02): standard deviation of `B`, the base init's std.

    Returns:
        `Path` of the adapter folder; its `base_model_name_or_path` is the absolute `base_dir`.

    Raises:
        `ValueError`: if `target_modules` is omitted and the base is not a known family.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = Path(base_dir).resolve()
    out = Path(out_dir)
    if target_modules is None:
        spec = _family_of(base)
        if spec is None:
            raise ValueError(f"Cannot infer LoRA `target_modules` for {base}; pass them explicitly.")
        target_modules = spec.target_modules
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    lora_config = LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        target_modules=list(target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora_config)
    generator = torch.Generator().manual_seed(seed)
    # Sorted names make the draw order, hence the tensors, independent of module registration order.
    named = sorted((name, module) for name, module in peft_model.named_modules() if hasattr(module, "lora_A"))
    with torch.no_grad():
        for _, module in named:
            lora_a = module.lora_A["default"].weight  # (r, d_in)
            lora_b = module.lora_B["default"].weight  # (d_out, r)
            bound = 1.0 / math.sqrt(lora_a.shape[1])
            lora_a.copy_(torch.empty(lora_a.shape).uniform_(-bound, bound, generator=generator))
            lora_b.copy_(torch.randn(lora_b.shape, generator=generator) * scale)
    peft_model.peft_config["default"].base_model_name_or_path = str(base)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out), safe_serialization=True)
    return out


@dataclass
class FixtureZoo:
    """Builds tiny models and adapters under `root` on first request and returns the cached path afterwards.

    Tests, the demo and the benchmark share one zoo per session, so a model is saved once however many
    adapters or tests use it. Mutable by design: it is a cache.

    Example:
        >>> zoo = FixtureZoo(tmp_path)
        >>> zoo.adapter("qwen2", r=4, seed=1)  # builds the qwen2 base first  # doctest: +SKIP
    """

    root: Path
    _models: dict[tuple[str, int], Path] = field(default_factory=dict, repr=False)
    _adapters: dict[tuple[Any, ...], Path] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def model(self, family: str, *, seed: int = 0) -> Path:
        """Return the folder of the tiny `family` base model, building it on first use."""
        key = (family, seed)
        if key not in self._models:
            self._models[key] = make_tiny_model(family, self.root / "models" / f"{family}-s{seed}", seed=seed)
        return self._models[key]

    def adapter(
        self,
        family: str,
        *,
        r: int = 4,
        seed: int = 0,
        lora_alpha: int | None = None,
        target_modules: Sequence[str] | None = None,
    ) -> Path:
        """Return the folder of a LoRA adapter on the `family` base, building both on first use.

        `lora_alpha` defaults to `2 * r`, so the scaling `lora_alpha / r` is the same at every rank.
        """
        alpha = 2 * r if lora_alpha is None else lora_alpha
        modules = tuple(target_modules) if target_modules is not None else get_family(family).target_modules
        key = (family, r, seed, alpha, modules)
        if key not in self._adapters:
            tag = "all" if target_modules is None else "-".join(modules)
            out = self.root / "adapters" / f"{family}-r{r}-a{alpha}-s{seed}-{tag}"
            self._adapters[key] = make_lora_adapter(
                self.model(family), out, r=r, lora_alpha=alpha, target_modules=modules, seed=seed
            )
        return self._adapters[key]


__all__ = [
    "FAMILIES", "LLAMA_STYLE_MODULES", "PHI3_MODULES", "FamilySpec", "FixtureZoo", "get_family", "make_lora_adapter",
    "make_tiny_model", "make_tokenizer", "model_config",
]
