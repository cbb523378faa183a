# SPDX-License-Identifier: Apache-2.0
"""Training, inner step: dynamic weight patching (paper §4.2 of the reference, `WeightPatcher`).

Inside `patch_lora_weights`, each patched module's `lora_B` (and `lora_A`) weight is the non-leaf tensor
predicted by the transfer nets, so the replay loss back-propagates into the nets and the alphas while the base
model and the target adapter stay frozen. The original `Parameter`s are put back in `finally`, whatever happens.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn


def _swap(layer: nn.Module, tensor: torch.Tensor) -> nn.Parameter:
    original = layer._parameters.pop("weight")
    # With "weight" out of _parameters, a plain attribute is allowed and F.linear picks it up.
    layer.__dict__["weight"] = tensor.to(original.dtype)
    return original


def _restore(layer: nn.Module, original: nn.Parameter) -> None:
    layer.__dict__.pop("weight", None)
    layer._parameters["weight"] = original


@contextmanager
def patch_lora_weights(
    model: nn.Module,
    b_patches: Mapping[str, torch.Tensor],
    a_patches: Mapping[str, torch.Tensor] | None = None,
    *,
    adapter_name: str = "default",
) -> Iterator[None]:
    """Temporarily replace `lora_B` (and `lora_A`) weights of the named PEFT modules.

    Args:
        model (`nn.Module`): a `PeftModel` (or anything whose submodules carry PEFT LoRA layers).
        b_patches (`Mapping[str, Tensor]`): module path (as in the adapter's state dict) -> new B `(d_out, r)`.
        a_patches (`Mapping[str, Tensor]`, *optional*): module path -> new A `(r, d_in)`.
        adapter_name (`str`, *optional*, defaults to `"default"`): the PEFT adapter to patch.
    """
    swapped: list[tuple[nn.Module, nn.Parameter]] = []
    try:
        for factor, patches in (("lora_B", b_patches), ("lora_A", a_patches or {})):
            for path, tensor in patches.items():
                layer = getattr(model.get_submodule(path), factor)[adapter_name]
                if tuple(layer.weight.shape) != tuple(tensor.shape):
                    raise ValueError(f"patch for {path}.{factor} has shape {tuple(tensor.shape)}, "
                                     f"expected {tuple(layer.weight.shape)}")
                swapped.append((layer, _swap(layer, tensor)))
        yield
    finally:
        for layer, original in reversed(swapped):
            _restore(layer, original)
