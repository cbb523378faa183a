# SPDX-License-Identifier: Apache-2.0
"""Baselines that move source LoRA experts onto the target without training (plus the placebo sources).

All of them start from the same topology alignment HeteroFusion uses (`hf_heterofusion.method.align`):
`align.plan_alignment` pairs target and source layers (tail by default, `transfer_ratio` honoured) and
`align.match_modules` pairs role units (`adapters.LoraModule`) q with q, k with k, ...
Inside a pair, the source factors are cropped or zero-padded to the target's widths: `A_k (r x d_in_k)` keeps
or pads columns to `d_in_T`, `B_k (d_out_k x r)` rows to `d_out_T`. That is all a weight-space method can do
across families, and it is why they fail: row `i` of a Gemma projection has nothing to do with row `i` of a
Llama projection.

* `naive`: the padded/cropped source factors are added to the anchor's factors (`A' = A_T + sum A_k`,
  `B' = B_T + sum (s_k/s_T) B_k`), what "just add the adapters" gives with PEFT-style linear factor merging;
* `task_arithmetic`, `ties`, `dare_ties`: mergekit 0.1.5's own kernels (`mergekit.merge_methods.merge_tensors`)
  applied per role unit to the aligned full-rank deltas `s * B @ A` (anchor included), with a zero base, so the
  result is a merged delta added to the target's weights (evaluated as merged weights, no rank truncation).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from mergekit.merge_methods import merge_tensors
from safetensors.torch import load_file, save_file

from hf_heterofusion.constants import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from hf_heterofusion.method.adapters import PEFT_PREFIX, LoraAdapter, load_adapter
from hf_heterofusion.method.align import match_modules, plan_alignment
from hf_heterofusion.method.rank import refactor_rank


MERGE_METHODS = ("naive", "task_arithmetic", "ties", "dare_ties")


@dataclass(frozen=True)
class AlignedUnit:
    """One target role unit with the aligned, width-matched source factors (tensors are not to be mutated)."""

    weight: str  # base weight name, e.g. `model.layers.3.self_attn.q_proj.weight`
    rows: tuple[int, int] | None  # row slice of a fused projection, None for a whole weight
    A: torch.Tensor  # (r, d_in) target
    B: torch.Tensor  # (d_out, r) target
    scale: float
    sources: tuple[tuple[torch.Tensor, torch.Tensor, float], ...]  # (A_k', B_k', s_k), already cropped/padded


def fit_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """Crop or zero-pad the rows of `x` to exactly `n`."""
    if x.shape[0] >= n:
        return x[:n]
    return torch.cat([x, x.new_zeros(n - x.shape[0], *x.shape[1:])])


def align_units(target: LoraAdapter, sources: Sequence[LoraAdapter], mode: str = "tail",
                ratio: float = 1.0) -> list[AlignedUnit]:
    """Every target role unit with its aligned source units (sources re-factored to the target rank first).

    Units that no source reaches are kept with no sources: the merge still adds the anchor's own delta there.
    """
    sources = [refactor_rank(s, target.rank)[0] for s in sources]
    plan = plan_alignment(target, sources, mode, ratio)
    groups = match_modules(target, sources, plan).values()
    matched = {(m.target.module, m.target.role): m.sources for group in groups for m in group}
    units = []
    for unit in target.modules:
        fitted = []
        for _, src in matched.get((unit.module, unit.role), ()):
            a = fit_rows(src.A.T, unit.A.shape[1]).T  # (r, d_in_T)
            b = fit_rows(src.B, unit.B.shape[0])  # (d_out_T, r)
            fitted.append((a.contiguous(), b.contiguous(), src.scale))
        weight = unit.module.removeprefix(PEFT_PREFIX) + ".weight"
        units.append(AlignedUnit(weight, unit.rows, unit.A, unit.B, unit.scale, tuple(fitted)))
    return units


@torch.no_grad()
def merged_delta(unit: AlignedUnit, method: str, *, density: float) -> torch.Tensor:
    """The merged `dW` of one role unit (`(d_out, d_in)`) under `method` (see the module docstring)."""
    if method == "naive":
        a = unit.A + sum((s[0] for s in unit.sources), torch.zeros_like(unit.A))
        b = unit.B + sum((s[1] * (s[2] / unit.scale) for s in unit.sources), torch.zeros_like(unit.B))
        return unit.scale * b @ a
    deltas = [unit.scale * unit.B @ unit.A] + [s * b @ a for a, b, s in unit.sources]
    params = {"weight": 1.0}
    if method in ("ties", "dare_ties"):
        params["density"] = density
    elif method != "task_arithmetic":
        raise ValueError(f"unknown merge baseline `{method}`; choose one of {', '.join(MERGE_METHODS)}")
    # A zero base makes each input's "task vector" exactly its LoRA delta.
    return merge_tensors([torch.zeros_like(deltas[0]), *deltas], method, base_index=0, parameters=params)


@torch.no_grad()
def apply_merge(model: torch.nn.Module, units: Sequence[AlignedUnit], method: str, *, density: float,
                seed: int = 0) -> int:
    """Add each unit's merged delta to the (plain, non-PEFT) target model's weights in place; returns #units.

    `seed` seeds DARE's random drop (mergekit draws from torch's global generator).
    """
    torch.manual_seed(seed)
    for unit in units:
        weight = model.get_parameter(unit.weight)
        delta = merged_delta(unit, method, density=density).to(weight.dtype)
        if unit.rows is None:
            weight.add_(delta)
        else:
            weight[unit.rows[0]:unit.rows[1]].add_(delta)
    return len(units)


def make_placebo(adapter_dir: Path, out_dir: Path, seed: int) -> Path:
    """A placebo of a source adapter: same config, shapes and per-tensor std, but Gaussian noise as content."""
    if (out_dir / ADAPTER_WEIGHTS_NAME).is_file():
        return out_dir
    tensors = load_file(adapter_dir / ADAPTER_WEIGHTS_NAME)
    gen = torch.Generator().manual_seed(seed)
    noise = {}
    for key in sorted(tensors):
        value = tensors[key].float()
        noise[key] = (torch.randn(value.shape, generator=gen) * value.std()).to(tensors[key].dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(adapter_dir / ADAPTER_CONFIG_NAME, out_dir / ADAPTER_CONFIG_NAME)
    save_file(noise, out_dir / ADAPTER_WEIGHTS_NAME, metadata={"format": "pt", "placebo_of": str(adapter_dir)})
    (out_dir / "placebo.json").write_text(json.dumps({"of": str(adapter_dir), "seed": seed}) + "\n", encoding="utf-8")
    return out_dir


def load_aligned(target_adapter: Path, source_adapters: Sequence[Path], mode: str = "tail",
                 ratio: float = 1.0) -> list[AlignedUnit]:
    return align_units(load_adapter(target_adapter), [load_adapter(p) for p in source_adapters], mode, ratio)
