# SPDX-License-Identifier: Apache-2.0
"""The trained mode's own mergekit tasks: the nodes that `planner.plan_fusion` wires into mergekit's graph.

* `FitHeteroFusion`: `pipeline.fit` (align, block, train the nets, export pass) as ONE node, run first;
* `WriteFusedAdapter`: the PEFT adapter of the fit (`export.write_adapter`);
* `FoldLoraIntoWeight`: one base weight of the target with the fused update folded in, `W + scale * B' @ A`,
  fed by mergekit's `LoadTensor` and consumed by its `SaveTensor`.

Every other node (loading, saving, sharding, finalising) is mergekit's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from mergekit.common import dtype_from_name
from mergekit.graph import Task
from mergekit.io.tasks import LoadTensor

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.errors import ConfigError
from hf_heterofusion.inputs import resolve_input
from hf_heterofusion.method.adapters import load_adapter
from hf_heterofusion.method.export import adapter_base_reference, write_adapter
from hf_heterofusion.pipeline import FitResult, fit


class FitHeteroFusion(Task[FitResult]):
    """`pipeline.fit` as one graph node; it holds the config as JSON (hashable), never tensors."""

    config_json: str
    lock: str | None = None
    work_dir: str | None = None
    device: str | None = None
    show_progress: bool = True

    def arguments(self) -> dict[str, Task]:
        return {}

    def execute(self, **_kwargs: Any) -> FitResult:
        cfg = FusionConfig.model_validate_json(self.config_json)
        return fit(cfg, work_dir=Path(self.work_dir) if self.work_dir else None, lock=self.lock,
                   accelerator=accelerator_for(cfg, self.device), show_progress=self.show_progress)

    def priority(self) -> int:
        return 100_000  # before any tensor is loaded: loads would otherwise sit in memory during training

    def main_thread_only(self) -> bool:
        return True  # accelerate and the training loop own the device; never run on an executor thread


class WriteFusedAdapter(Task[None]):
    """Write the PEFT adapter (config + safetensors) of the fit into `out_path`."""

    fit: FitHeteroFusion
    out_path: str
    out_dtype: str | None = None

    def arguments(self) -> dict[str, Task]:
        return {"fit": self.fit}

    def execute(self, fit: FitResult, **_kwargs: Any) -> None:
        cfg = FusionConfig.model_validate_json(self.fit.config_json)
        anchor = load_adapter(local_input(cfg.target_adapter, "target adapter", self.fit.lock),
                              allow_pickle=cfg.allow_pickle)
        _, sha = resolve_input(cfg.target_model, what="target model", lock=self.fit.lock)
        write_adapter(Path(self.out_path), anchor, _cast(fit.tensors, self.out_dtype),
                      base=adapter_base_reference(cfg.target_model, sha))

    def main_thread_only(self) -> bool:
        return True


class FoldLoraIntoWeight(Task[torch.Tensor]):
    """One base weight of the target with the fused LoRA update folded in: `W + scale * B' @ A`."""

    base: LoadTensor
    fit: FitHeteroFusion
    a_key: str
    b_key: str
    scale: float
    fan_in_fan_out: bool = False

    def arguments(self) -> dict[str, Task]:
        return {"base": self.base, "fit": self.fit}

    def execute(self, base: torch.Tensor, fit: FitResult, **_kwargs: Any) -> torch.Tensor:
        # fp32 at least, whatever `dtype:` loaded: a bf16 product of B' and A would round the update away.
        work = torch.float64 if base.dtype == torch.float64 else torch.float32
        A = fit.tensors[self.a_key].to(base.device, work)
        B = fit.tensors[self.b_key].to(base.device, work)
        delta = (B @ A) * self.scale
        if self.fan_in_fan_out:  # Conv1D-style layers store the weight transposed
            delta = delta.T
        return (base.to(work) + delta).to(base.dtype)

    def uses_accelerator(self) -> bool:
        return True

    def group_label(self) -> str | None:
        return self.base.group_label()


def local_input(ref: str, what: str, lock: str | Path | None) -> Path:
    """The local folder of an input (Hub references through the pull lock, as `pipeline` resolves them)."""
    return resolve_input(ref, what=what, lock=lock)[0]


def accelerator_for(cfg: FusionConfig, device: str | None):
    """mergekit's default device is the CPU (`--cuda`/`--device` opt in); honour that for training too."""
    from accelerate import Accelerator

    try:
        return Accelerator(mixed_precision=cfg.mixed_precision, cpu=(device or "cpu") == "cpu")
    except ValueError as err:  # accelerate's process-wide state was already set up for another device
        raise ConfigError(f"cannot train on `{device}` in this process: {err}") from None


def _cast(tensors: dict[str, torch.Tensor], dtype: str | None) -> dict[str, torch.Tensor]:
    if not dtype:
        return tensors
    target = dtype_from_name(dtype)
    return {k: v.to(target) if v.is_floating_point() else v for k, v in tensors.items()}


__all__ = ["FitHeteroFusion", "FoldLoraIntoWeight", "WriteFusedAdapter", "accelerator_for", "local_input"]
