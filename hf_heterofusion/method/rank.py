# SPDX-License-Identifier: Apache-2.0
"""Unequal ranks: re-factor a source adapter to the target's rank from its dW by SVD.

The reference refuses sources whose rank differs from the target's. Here each role unit's `B @ A` is factored
again: exactly (zero-padded) when the source rank is smaller, truncated to the top singular directions when it is
larger. The energy kept, `sum(kept s^2) / sum(s^2)` over all units, is reported.
"""

from __future__ import annotations

import dataclasses

import torch

from hf_heterofusion.method.adapters import LoraAdapter, LoraModule


def refactor_rank(adapter: LoraAdapter, rank: int) -> tuple[LoraAdapter, float]:
    """Return the adapter with every role unit re-factored to `rank`, and the fraction of energy kept."""
    if all(m.rank == rank for m in adapter.modules):
        return adapter, 1.0
    kept = total = 0.0
    units = []
    for unit in adapter.modules:
        new_unit, unit_kept, unit_total = _refactor_unit(unit, rank)
        units.append(new_unit)
        kept, total = kept + unit_kept, total + unit_total
    energy = kept / total if total > 0 else 1.0
    return dataclasses.replace(adapter, modules=tuple(units)), energy


def _refactor_unit(unit: LoraModule, rank: int) -> tuple[LoraModule, float, float]:
    delta = unit.B.double() @ unit.A.double()  # (d_out, d_in), without the scale: both factors share it
    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    k = min(rank, S.shape[0])
    root = S[:k].sqrt()
    B = torch.zeros(unit.B.shape[0], rank, dtype=torch.float64)
    A = torch.zeros(rank, unit.A.shape[1], dtype=torch.float64)
    B[:, :k] = U[:, :k] * root
    A[:k] = root[:, None] * Vh[:k]
    energy = (S**2).sum().item()
    return dataclasses.replace(unit, A=A.float(), B=B.float()), (S[:k] ** 2).sum().item(), energy
