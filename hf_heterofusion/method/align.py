# SPDX-License-Identifier: Apache-2.0
"""Topology alignment (paper §2.1-2.2).

Depth: each source gets its own layer plan. `tail` (the paper's) pairs the output-side layers one to one
(`offset = L_T - L_k`, target layer t <-> source layer t - offset) so the extra bottom layers of the deeper model
get nothing; `head` pairs the first layers, `naive` pairs i <-> i, `uniform` spreads pairs evenly over both
depths. `transfer_ratio` keeps `max(1, floor(n_pairs * ratio))` pairs: the deepest for tail, the first for head
and naive (as the reference's fork does), an evenly spaced subset for uniform.

Modules: inside an aligned layer pair a target module is matched with the source module of the same *role*
(q, k, v, o, gate, up, down), whatever the family calls it. A target module takes part when at least one source
provides its role; one transfer net serves each (role, rank) group.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from hf_heterofusion.constants import ROLES
from hf_heterofusion.errors import NoAlignedModulesError
from hf_heterofusion.method.adapters import LoraAdapter, LoraModule


@dataclass(frozen=True)
class SourcePlan:
    """Layer pairs `(target_layer, source_layer)` for one source, and target layers it does not reach."""

    source: int
    pairs: tuple[tuple[int, int], ...]
    unmatched_target_layers: tuple[int, ...]


@dataclass(frozen=True)
class AlignmentPlan:
    mode: str
    transfer_ratio: float
    target_layers: int
    per_source: tuple[SourcePlan, ...]

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"alignment `{self.mode}` (transfer_ratio {self.transfer_ratio}), target depth {self.target_layers}"]
        for plan in self.per_source:
            if plan.pairs:
                (t0, s0), (t1, s1) = plan.pairs[0], plan.pairs[-1]
                span = f"target {t0}..{t1} <- source {s0}..{s1} ({len(plan.pairs)} pairs)"
            else:
                span = "no pairs"
            lines.append(f"  source {plan.source}: {span}; {len(plan.unmatched_target_layers)} target layers get nothing")
        return "\n".join(lines)

    def save(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)


def align_layers(n_target: int, n_source: int, mode: str = "tail", ratio: float = 1.0) -> tuple[tuple[int, int], ...]:
    """Layer pairs `(t, s)` for one source, ordered by target layer."""
    if mode == "tail":
        offset = n_target - n_source
        pairs = [(t, t - offset) for t in range(n_target) if 0 <= t - offset < n_source]
        return tuple(pairs[len(pairs) - _keep(len(pairs), ratio):])
    if mode in ("head", "naive"):  # the same in the reference's fork: i <-> i from the bottom, first pairs kept
        pairs = [(i, i) for i in range(min(n_target, n_source))]
        return tuple(pairs[: _keep(len(pairs), ratio)])
    if mode == "uniform":
        keep = _keep(min(n_target, n_source), ratio)
        if keep == 1:
            return ((n_target - 1, n_source - 1),)
        return tuple(
            (round(i * (n_target - 1) / (keep - 1)), round(i * (n_source - 1) / (keep - 1))) for i in range(keep)
        )
    raise ValueError(f"unknown layer_alignment {mode!r}")


def _keep(n_pairs: int, ratio: float) -> int:
    return min(n_pairs, max(1, math.floor(n_pairs * ratio))) if n_pairs else 0


def plan_alignment(target: LoraAdapter, sources: Sequence[LoraAdapter], mode: str, ratio: float) -> AlignmentPlan:
    per_source = []
    for k, src in enumerate(sources):
        pairs = align_layers(target.num_layers, src.num_layers, mode, ratio)
        reached = {t for t, _ in pairs}
        unmatched = tuple(t for t in range(target.num_layers) if t not in reached)
        per_source.append(SourcePlan(k, pairs, unmatched))
    return AlignmentPlan(mode, ratio, target.num_layers, tuple(per_source))


@dataclass(frozen=True)
class MatchedModule:
    """One target role unit and the source role units aligned with it, in source order."""

    target: LoraModule
    sources: tuple[tuple[int, LoraModule], ...]  # (source index, unit)


def match_modules(
    target: LoraAdapter, sources: Sequence[LoraAdapter], plan: AlignmentPlan
) -> dict[tuple[str, int], tuple[MatchedModule, ...]]:
    """Group matched target units by (role, rank); raises when nothing can be fused."""
    lookup: list[dict[tuple[int, str], LoraModule]] = [{(m.layer, m.role): m for m in s.modules} for s in sources]
    layer_maps = [dict(p.pairs) for p in plan.per_source]
    groups: dict[tuple[str, int], list[MatchedModule]] = {}
    for unit in target.modules:
        matched = []
        for k, (layer_map, units) in enumerate(zip(layer_maps, lookup)):
            s_layer = layer_map.get(unit.layer)
            if s_layer is not None and (s_layer, unit.role) in units:
                matched.append((k, units[(s_layer, unit.role)]))
        if matched:
            groups.setdefault((unit.role, unit.rank), []).append(MatchedModule(unit, tuple(matched)))
    if not groups:
        t_roles = ", ".join(target.roles) or "none"
        s_roles = "; ".join(f"source {k}: {', '.join(s.roles) or 'none'}" for k, s in enumerate(sources))
        raise NoAlignedModulesError(
            f"no target module has an aligned source module of the same role (target roles: {t_roles}; {s_roles}); "
            f"train the sources on the same kinds of projections (q, k, v, o, gate, up, down) as the target"
        )
    order = {role: i for i, role in enumerate(ROLES)}
    return {key: tuple(groups[key]) for key in sorted(groups, key=lambda k: (order.get(k[0], 99), k[1]))}
