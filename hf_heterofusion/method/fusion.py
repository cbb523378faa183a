# SPDX-License-Identifier: Apache-2.0
"""The trainable state of one run (transfer nets + per-role alphas) and its forward pass.

`build_groups` turns the matched modules of each (role, rank) group into block tokens and spectra, bucketed so
that modules whose token sequences have the same layout form one batch (the reference batches a group when all
its layers agree and loops otherwise; buckets do both at once). `FusionModel.forward` runs every net and returns
the patched factors (target-basis preservation, paper §2.5) and the RDM regulariser.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.errors import ConfigError
from hf_heterofusion.method.adapters import LoraAdapter
from hf_heterofusion.method.align import MatchedModule
from hf_heterofusion.method.blocks import block_spectra, from_blocks, module_tokens
from hf_heterofusion.method.trainable import FusionOutput
from hf_heterofusion.method.transfer_net import HeteroFusionTransferNet, TransferNetConfig, rdm_regulariser


@dataclass(frozen=True)
class Bucket:
    """Modules of one group whose token sequences share a layout; tensors are stacked along dim 0 (M)."""

    members: tuple[int, ...]  # indices into ModuleGroup.matched
    n_a: int  # target A^T tokens
    n_b: int  # target B tokens
    target_tokens: torch.Tensor  # (M, N_T, b, r)
    target_spectra: torch.Tensor  # (M, N_T, r)
    source_tokens: torch.Tensor  # (M, N_S, b, r)
    source_spectra: torch.Tensor  # (M, N_S, r)
    source_positions: torch.Tensor  # (N_S,)
    source_ids: torch.Tensor  # (N_S,)

    def to(self, device: torch.device) -> Bucket:
        moved = {k: v.to(device) for k, v in self.__dict__.items() if isinstance(v, torch.Tensor)}
        return Bucket(self.members, self.n_a, self.n_b, **moved)


@dataclass(frozen=True)
class ModuleGroup:
    role: str
    rank: int
    matched: tuple[MatchedModule, ...]
    buckets: tuple[Bucket, ...]

    @property
    def key(self) -> str:
        return f"{self.role}_r{self.rank}"


def build_groups(
    matched: dict[tuple[str, int], tuple[MatchedModule, ...]],
    *,
    block_size: int,
    per_source_positions: bool,
) -> tuple[ModuleGroup, ...]:
    """Block tokens of every matched module; source weights act later, in the attention (`FusionModel`)."""
    groups = []
    for (role, rank), modules in matched.items():
        layouts: dict[tuple, list[tuple[int, tuple]]] = {}
        for i, mm in enumerate(modules):
            t_tokens, n_a, n_b = module_tokens(mm.target.A, mm.target.B, block_size)
            s_parts, ids, positions = [], [], []
            for k, unit in mm.sources:
                tokens, _, _ = module_tokens(unit.A, unit.B, block_size)
                s_parts.append(tokens)
                ids += [k] * tokens.shape[0]
            s_tokens = torch.cat(s_parts)
            if per_source_positions:
                positions = [sum(1 for j in ids[:p] if j == ids[p]) for p in range(len(ids))]
            else:  # reference quirk: positions index the concatenated sequence
                positions = list(range(len(ids)))
            key = (n_a, n_b, tuple(ids))
            layouts.setdefault(key, []).append((i, (t_tokens, s_tokens, positions)))
        buckets = []
        for (n_a, n_b, ids), items in layouts.items():
            t = torch.stack([x[1][0] for x in items])
            s = torch.stack([x[1][1] for x in items])
            buckets.append(Bucket(
                members=tuple(x[0] for x in items), n_a=n_a, n_b=n_b,
                target_tokens=t, target_spectra=block_spectra(t),
                source_tokens=s, source_spectra=block_spectra(s),
                source_positions=torch.tensor(items[0][1][2]), source_ids=torch.tensor(ids),
            ))
        groups.append(ModuleGroup(role, rank, modules, tuple(buckets)))
    return tuple(groups)


class FusionModel(nn.Module):
    """Transfer nets (one per role group) and alphas; `forward()` yields the patched target factors."""

    def __init__(self, target: LoraAdapter, groups: tuple[ModuleGroup, ...], cfg: FusionConfig, block_size: int,
                 num_sources: int):
        super().__init__()
        self.cfg, self.block_size, self.num_sources = cfg, block_size, num_sources
        self.groups = groups
        self.nets = nn.ModuleDict()
        self.alphas = nn.ParameterDict()
        for g in groups:
            longest = max(b.source_positions.max().item() + 1 for b in g.buckets)
            longest = max(longest, max(b.n_a + b.n_b for b in g.buckets))
            if longest > cfg.max_position_embeddings:
                raise ConfigError(
                    f"role `{g.role}` needs {longest} positions but `max_position_embeddings` is "
                    f"{cfg.max_position_embeddings}; raise it or use a larger `block_size`"
                )
            net_cfg = TransferNetConfig(block_size, g.rank, cfg.embed_dim, cfg.num_heads,
                                        cfg.max_position_embeddings, cfg.mu_gate, num_sources,
                                        cfg.position_mode == "per_source", fast_kernels=cfg.amortize_nets)
            self.nets[g.key] = HeteroFusionTransferNet(net_cfg)
            self.alphas[g.key] = nn.Parameter(torch.tensor(float(cfg.alpha_init)))
        self._target = target
        self._device = torch.device("cpu")
        self._weights = self._checked_weights([s.weight for s in cfg.sources][:num_sources] or [1.0] * num_sources)
        # Source index of every source token, per bucket, kept on the host: masking decisions need no device sync.
        self._token_sources = {(g.key, i): tuple(b.source_ids.tolist()) for g in groups for i, b in enumerate(g.buckets)}

    # --- source weights (SourceSpec.weight; ablations) ----------------------------------------------------------
    @staticmethod
    def _checked_weights(weights: list[float]) -> tuple[float, ...]:
        if any(w < 0 or not math.isfinite(w) for w in weights):
            raise ConfigError(f"source weights must be finite and >= 0, got {weights}")
        if not any(w > 0 for w in weights):
            raise ConfigError("every source has weight 0, so nothing is fused; give at least one source a weight > 0")
        return tuple(float(w) for w in weights)

    @property
    def source_weights(self) -> tuple[float, ...]:
        """Current weight of each source: `log(w)` is added to the attention logits of that source's tokens."""
        return self._weights

    @contextlib.contextmanager
    def source_weights_override(self, weights: Mapping[int, float]) -> Iterator[FusionModel]:
        """Temporarily set the weights of some sources (by index), e.g. `{k: 0.0}` to mask source k exactly."""
        saved = self._weights
        bad = [k for k in weights if not 0 <= k < self.num_sources]
        if bad:
            raise ValueError(f"source index {bad[0]} out of range (there are {self.num_sources} sources)")
        self._weights = self._checked_weights([weights.get(k, w) for k, w in enumerate(saved)])
        try:
            yield self
        finally:
            self._weights = saved

    def masked_sources(self, sources: Iterable[int]) -> contextlib.AbstractContextManager[FusionModel]:
        """`with fusion.masked_sources({k}): ...` runs without source k's influence (per-source ablation)."""
        return self.source_weights_override({k: 0.0 for k in sources})

    def _source_bias(self, key: tuple[str, int], device: torch.device) -> torch.Tensor | None:
        """log-weight per source token of a bucket; None when all weights are 1 (no bias op at all: bit-identical)."""
        if all(w == 1.0 for w in self._weights):
            return None
        logw = [math.log(self._weights[k]) if self._weights[k] > 0 else -math.inf for k in self._token_sources[key]]
        return torch.tensor(logw, device=device)

    def _kept_tokens(self, key: tuple[str, int]) -> list[int]:
        return [p for p, k in enumerate(self._token_sources[key]) if self._weights[k] > 0]

    def place(self, device: torch.device) -> FusionModel:
        """Move parameters and the (constant) block tokens to `device`."""
        self.to(device)
        self._device = device
        self.groups = tuple(
            ModuleGroup(g.role, g.rank, g.matched, tuple(b.to(device) for b in g.buckets)) for g in self.groups
        )
        return self

    def forward(self, generator: torch.Generator | None = None, with_stats: bool = False) -> FusionOutput:
        mode = self.cfg.update_mode
        role_B: dict[tuple[str, str], torch.Tensor] = {}
        a_patches: dict[str, torch.Tensor] = {}
        reg_terms, stats = [], {"roles": {}, "source_mass": torch.zeros(self.num_sources)}
        masked = any(w == 0 for w in self._weights)
        for g in self.groups:
            net, alpha = self.nets[g.key], self.alphas[g.key]
            e_t, e_s = [], []
            zeros = gate_total = 0
            for i, bucket in enumerate(g.buckets):
                kept = self._kept_tokens((g.key, i)) if masked else None
                if kept == []:
                    continue  # every source of these modules is masked: they keep the target's factors
                bias = self._source_bias((g.key, i), bucket.source_ids.device)
                out = net(bucket.target_tokens, bucket.target_spectra, bucket.source_tokens,
                          bucket.source_spectra, bucket.source_positions, bucket.source_ids, bias, with_stats)
                e_t.append(out.target_embeddings.flatten(0, 1))
                if kept is not None:  # a masked source must not reach the regulariser either
                    e_s.append(out.source_embeddings[:, kept].flatten(0, 1))
                else:
                    e_s.append(out.source_embeddings.flatten(0, 1))
                delta = out.delta.unflatten(-1, (self.block_size, g.rank))  # (M, N_T, b, r)
                for row, member in enumerate(bucket.members):
                    unit = g.matched[member].target
                    if mode in ("b_only", "ab_joint"):
                        dB = from_blocks(delta[row, bucket.n_a:], unit.B.shape[0])
                        role_B[(unit.module, unit.role)] = unit.B.to(delta) + alpha * dB
                    if mode in ("a_only", "ab_joint"):
                        dAt = from_blocks(delta[row, :bucket.n_a], unit.A.shape[1])
                        a_patches[unit.module] = unit.A.to(delta) + alpha * dAt.t()
                if with_stats:
                    zeros += (out.source_gate == 0).sum().item()
                    gate_total += out.source_gate.numel()
                    mass = out.attention.detach().sum(dim=(0, 1)).cpu()  # (N_S,) over modules and target tokens
                    stats["source_mass"].index_add_(0, bucket.source_ids.cpu(), mass)
            if self.cfg.lambda_reg > 0 and generator is not None and e_t:
                reg_terms.append(self._rdm(torch.cat(e_t), generator) + self._rdm(torch.cat(e_s), generator))
            if with_stats:
                stats["roles"][g.role] = {"gate_sparsity": zeros / max(1, gate_total), "alpha": alpha.item()}
        reg = torch.stack(reg_terms).mean() if reg_terms else torch.zeros((), device=self._device)
        return FusionOutput(self._assemble(role_B), a_patches, reg, stats)

    def _rdm(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        c = self.cfg
        return rdm_regulariser(z, mu=c.mu_target, sigma=c.sigma_target, num_projections=c.num_projections,
                               generator=generator, fast=c.amortize_nets)

    def _assemble(self, role_B: dict[tuple[str, str], torch.Tensor]) -> dict[str, torch.Tensor]:
        """Module-level B': role slices of a fused module are concatenated back in row order."""
        out: dict[str, torch.Tensor] = {}
        by_module: dict[str, list] = {}
        for unit in self._target.modules:
            by_module.setdefault(unit.module, []).append(unit)
        for module, units in by_module.items():
            if not any((module, u.role) in role_B for u in units):
                continue
            if len(units) == 1 and units[0].rows is None:
                out[module] = role_B[(module, units[0].role)]
                continue
            parts = sorted(units, key=lambda u: u.rows[0])
            out[module] = torch.cat([role_B.get((module, u.role), u.B.to(self._device)) for u in parts])
        return out
