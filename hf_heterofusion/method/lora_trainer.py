# SPDX-License-Identifier: Apache-2.0
"""`trainer: lora`: the anchor adapter itself learns from the rows (data-only LoRA SFT), no transfer nets.

It is the control every fusion must beat on the same rows, offered as a switch because on the rows a teacher
writes it may be what trains best (see the README's benchmark). `AnchorLora` has the interface of
`fusion.FusionModel` (the `trainable.Trainable` interface: `place`, `forward() -> FusionOutput` of patched factors), so training, gradient
accumulation, checkpoints, accelerate, export, the report and the card are shared: only the trained parameters
differ (every A and B of the anchor, initialised at the anchor, instead of the nets and alphas).
"""

from __future__ import annotations

import torch
from torch import nn

from hf_heterofusion.data.safetensors_header import LORA_KEY_RE
from hf_heterofusion.method.adapters import LoraAdapter
from hf_heterofusion.method.trainable import FusionOutput


class AnchorLora(nn.Module):
    """The anchor's LoRA factors as trainable parameters; `forward()` hands them to the weight patcher."""

    def __init__(self, target: LoraAdapter, num_sources: int):
        super().__init__()
        factors = sorted((m["module"], m["adapter"] or "") for m in map(LORA_KEY_RE.match, target.tensors)
                         if m is not None and m["factor"] == "A")
        self.module_paths = tuple(module for module, _ in factors)
        self.A = nn.ParameterList(nn.Parameter(target.tensors[f"{module}.lora_A{suffix}.weight"].float().clone())
                                  for module, suffix in factors)
        self.B = nn.ParameterList(nn.Parameter(target.tensors[f"{module}.lora_B{suffix}.weight"].float().clone())
                                  for module, suffix in factors)
        self.num_sources = num_sources
        self._device = torch.device("cpu")

    def place(self, device: torch.device) -> AnchorLora:
        self.to(device)
        self._device = device
        return self

    def forward(self, generator: torch.Generator | None = None, with_stats: bool = False) -> FusionOutput:
        del generator, with_stats  # no regulariser to draw, no gates or attention to report
        return FusionOutput(dict(zip(self.module_paths, self.B)), dict(zip(self.module_paths, self.A)),
                            torch.zeros((), device=self._device),
                            {"roles": {}, "source_mass": torch.zeros(self.num_sources)})


__all__ = ["AnchorLora"]
