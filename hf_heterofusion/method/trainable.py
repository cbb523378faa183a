# SPDX-License-Identifier: Apache-2.0
"""What the training loop and the export pass need of a trainer: the `Trainable` interface.

Two trainers implement it: `fusion.FusionModel` (the paper's transfer nets: their forward pass predicts the target's
factors from the sources) and `lora_trainer.AnchorLora` (`trainer: lora`: the anchor's own factors are the
parameters). `train.train` patches whatever factors `forward()` returns into the frozen target and backpropagates the
replay loss into the trainer's parameters; `export.fused_tensors` runs `forward()` once more for the final factors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass
class FusionOutput:
    """One forward pass of a trainer: the target's patched LoRA factors (and, from the nets, the regulariser)."""

    b_patches: dict[str, torch.Tensor]  # module path -> B' (fused modules re-assembled)
    a_patches: dict[str, torch.Tensor]  # module path -> A' (a_only / ab_joint / trainer: lora)
    regulariser: torch.Tensor
    stats: dict = field(default_factory=dict)


@runtime_checkable
class Trainable(Protocol):
    """An `nn.Module` whose forward pass yields the target's LoRA factors to patch in."""

    num_sources: int

    def place(self, device: torch.device) -> Trainable:
        """Move parameters and every cached tensor the forward pass reads to `device`."""

    def forward(self, generator: torch.Generator | None = None, with_stats: bool = False) -> FusionOutput:
        """The patched factors; `generator` seeds the regulariser's draws, `with_stats` adds per-role statistics
        and each source's attention mass (`stats["roles"]`, `stats["source_mass"]`) for the report."""

    def __call__(self, generator: torch.Generator | None = None, with_stats: bool = False) -> FusionOutput: ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> Mapping[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any: ...

    def eval(self) -> Trainable: ...


__all__ = ["FusionOutput", "Trainable"]
