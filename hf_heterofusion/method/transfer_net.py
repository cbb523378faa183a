# SPDX-License-Identifier: Apache-2.0
"""The transfer network of one module role (paper §2.3-2.5).

    tokens (b x r blocks of A^T and B) + their singular values
      -> ConflictAwareBlockEncoder: row view + column view, gated by an SVD-driven hard-sparse gate
      -> TopologyAlignedAttention: target tokens attend over all aligned source tokens
      -> decoder, zero-initialised so training starts exactly at the target adapter
      -> one predicted b x r update per target token

`rdm_regulariser` is the rectified distribution matching term (a sliced Wasserstein-2 distance to a rectified
Gaussian) applied to the encoder outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def hypernet_parameters(rank: int, block_size: int, embed_dim: int, max_positions: int, *, sources: int = 1,
                        position_mode: str = "concat") -> int:
    """Closed-form parameter count of one transfer net (one role), used by the dry run and the report."""
    br, e = block_size * rank, embed_dim
    encoder = 2 * br + 2 * (e * br + e) + (rank * (e // 4) + e // 4) + (e // 4 * e + e) + 2 * e
    attention = 4 * (e * e + e)
    decoder = (e * e + e) + (e * br + br)
    positions = max_positions * e + (sources * e if position_mode == "per_source" else 0)
    return encoder + attention + decoder + positions


def next_power_of_two(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


@dataclass(frozen=True)
class TransferNetConfig:
    block_size: int
    rank: int
    embed_dim: int = 1024
    num_heads: int = 8
    max_positions: int = 4096
    mu_gate: float = 0.1
    num_sources: int = 1
    per_source_positions: bool = False
    # Fast kernels (the default `amortize_nets: true` path): PyTorch's fused scaled-dot-product attention instead
    # of explicit softmax weights. Equal to the reference kernels within float tolerance (tests/test_transfer_net);
    # `amortize_nets: false` keeps the reference kernels, bit for bit.
    fast_kernels: bool = False


def _xavier_(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


class ConflictAwareBlockEncoder(nn.Module):
    """Embeds b x r block tokens; an SVD-guided gate zeroes features of conflicting or noisy blocks."""

    def __init__(self, cfg: TransferNetConfig):
        super().__init__()
        b, r, e = cfg.block_size, cfg.rank, cfg.embed_dim
        self.block_size, self.rank, self.mu_gate = b, r, cfg.mu_gate
        self.norm_in = nn.LayerNorm(b * r)
        self.row = nn.Linear(b * r, e)
        self.col = nn.Linear(b * r, e)
        self.gate = nn.Sequential(nn.Linear(r, e // 4), nn.ReLU(), nn.Linear(e // 4, e))
        self.norm_out = nn.LayerNorm(e)
        _xavier_(self)

    def forward(self, tokens: torch.Tensor, spectra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, r = self.block_size, self.rank
        x = self.norm_in(tokens.flatten(-2))  # (..., b*r), row-major view of each block
        x_col = x.unflatten(-1, (b, r)).transpose(-1, -2).flatten(-2)  # (..., r*b), column-major view
        h = F.gelu(self.row(x)) + F.gelu(self.col(x_col))  # (..., E)
        # Hard-sparse: features whose logit + mu_gate <= 0 are exactly zero; the gate sees only the spectrum.
        g = torch.clamp(F.relu(self.gate(spectra) + self.mu_gate), 0.0, 1.0)  # (..., E)
        return self.norm_out(h * g), g


class TopologyAlignedAttention(nn.Module):
    """Multi-head cross-attention from target tokens to source tokens (no residual, no dropout).

    `bias` (`(N_S,)`, optional) is added to every query's logits of each source key: `log(weight)` of that key's
    source, so a weight scales the source's share of the softmax (0 masks it exactly: `exp(-inf) = 0`).
    """

    def __init__(self, cfg: TransferNetConfig):
        super().__init__()
        e = cfg.embed_dim
        self.heads, self.fast = cfg.num_heads, cfg.fast_kernels
        self.q, self.k, self.v, self.out = (nn.Linear(e, e) for _ in range(4))
        _xavier_(self)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, bias: torch.Tensor | None = None,
                need_weights: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        m, n_t, e = query.shape
        h, d = self.heads, e // self.heads
        q = self.q(query).view(m, n_t, h, d).transpose(1, 2)  # (M, h, N_T, d)
        k = self.k(memory).view(m, -1, h, d).transpose(1, 2)  # (M, h, N_S, d)
        v = self.v(memory).view(m, -1, h, d).transpose(1, 2)
        if self.fast and not need_weights:
            mask = None if bias is None else bias.to(q.dtype).expand(n_t, -1)  # (N_T, N_S), broadcast over M, h
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            weights = None
        else:
            logits = q @ k.transpose(-1, -2) / d**0.5  # (M, h, N_T, N_S)
            if bias is not None:
                logits = logits + bias.to(logits.dtype)
            weights = torch.softmax(logits, dim=-1)
            context = weights @ v
        context = context.transpose(1, 2).reshape(m, n_t, e)
        # Sequences are a handful of tokens, so explicit weights are cheap when asked for (per-source attribution).
        return self.out(context), None if weights is None else weights.mean(dim=1)


@dataclass
class NetOutput:
    delta: torch.Tensor  # (M, N_T, b*r) predicted update per target token
    target_embeddings: torch.Tensor  # (M, N_T, E)
    source_embeddings: torch.Tensor  # (M, N_S, E)
    source_gate: torch.Tensor  # (M, N_S, E)
    attention: torch.Tensor | None  # (M, N_T, N_S), head-averaged (None when not asked for on the fast path)


class HeteroFusionTransferNet(nn.Module):
    """Encoder + cross-attention + zero-initialised decoder for one (role, rank) group."""

    def __init__(self, cfg: TransferNetConfig):
        super().__init__()
        e, br = cfg.embed_dim, cfg.block_size * cfg.rank
        self.cfg = cfg
        self.encoder = ConflictAwareBlockEncoder(cfg)
        self.positions = nn.Embedding(cfg.max_positions, e)  # N(0, 1) init, as nn.Embedding does
        self.source_embedding = nn.Embedding(cfg.num_sources, e) if cfg.per_source_positions else None
        self.attention = TopologyAlignedAttention(cfg)
        self.decoder_hidden = nn.Linear(e, e)
        self.decoder_out = nn.Linear(e, br)
        _xavier_(self.decoder_hidden)
        # Zero-initialised last layer: the first predicted update is exactly 0, so training starts at the target.
        nn.init.zeros_(self.decoder_out.weight)
        nn.init.zeros_(self.decoder_out.bias)

    def forward(
        self,
        target_tokens: torch.Tensor,  # (M, N_T, b, r)
        target_spectra: torch.Tensor,  # (M, N_T, r)
        source_tokens: torch.Tensor,  # (M, N_S, b, r)
        source_spectra: torch.Tensor,  # (M, N_S, r)
        source_positions: torch.Tensor,  # (N_S,) long
        source_ids: torch.Tensor,  # (N_S,) long
        source_bias: torch.Tensor | None = None,  # (N_S,) log-weight of each source token's source
        need_weights: bool = True,
    ) -> NetOutput:
        n_t = target_tokens.shape[1]
        if self.cfg.fast_kernels:
            # One encoder pass over target and source tokens together: the encoder works per token, so this is
            # the same function, but its weight gradients come out of one matmul each instead of two matmuls and
            # an add of (E, b*r) tensors (the largest ops of a step at E=1024, b*r=8192).
            both, gate = self.encoder(torch.cat((target_tokens, source_tokens), dim=1),
                                      torch.cat((target_spectra, source_spectra), dim=1))
            e_t, e_s = both[:, :n_t], both[:, n_t:]
            g_s = gate[:, n_t:]
        else:
            e_t, _ = self.encoder(target_tokens, target_spectra)
            e_s, g_s = self.encoder(source_tokens, source_spectra)
        query = e_t + self.positions(torch.arange(n_t, device=e_t.device))
        memory = e_s + self.positions(source_positions)
        if self.source_embedding is not None:
            memory = memory + self.source_embedding(source_ids)
        context, attention = self.attention(query, memory, source_bias, need_weights)
        delta = self.decoder_out(F.gelu(self.decoder_hidden(context)))  # (M, N_T, b*r)
        return NetOutput(delta, e_t, e_s, g_s, attention)


def rdm_regulariser(
    z: torch.Tensor, *, mu: float, sigma: float, num_projections: int, generator: torch.Generator,
    fast: bool = False,
) -> torch.Tensor:
    """Rectified distribution matching: sliced W2 between ReLU(z) and a fresh rectified Gaussian sample.

    Args:
        z (`torch.Tensor` of shape `(M, E)`): embeddings.
        mu, sigma (`float`): the target Gaussian's mean and std before rectification.
        num_projections (`int`): K random unit directions.
        generator (`torch.Generator`): the only source of randomness, so runs are reproducible.
        fast (`bool`, *optional*, defaults to `False`): the same draws and the same value within float tolerance,
            computed faster: the (K, M) projections are built contiguous so each sort runs along memory (2-3x
            faster than sorting (M, K) along dim 0 on CPU), and the directions are normalised after projecting
            (one (K, M) scale instead of an (E, K) norm and division). `False` is the reference arithmetic.
    """
    z = z.reshape(-1, z.shape[-1]).float()
    m, e = z.shape
    noise = torch.randn(m, e, generator=generator, device=generator.device).to(z.device)
    target = F.relu(mu + sigma * noise)  # (M, E)
    theta = torch.randn(e, num_projections, generator=generator, device=generator.device).to(z.device)
    if fast:
        inv_norm = theta.square().sum(dim=0).rsqrt().unsqueeze(1)  # (K, 1)
        projected = torch.sort((theta.t() @ F.relu(z).t()) * inv_norm, dim=-1).values  # (K, M)
        reference = torch.sort((theta.t() @ target.t()) * inv_norm, dim=-1).values
        return ((projected - reference) ** 2).mean()
    theta = theta / theta.norm(dim=0, keepdim=True)  # (E, K) unit directions
    projected = torch.sort(F.relu(z) @ theta, dim=0).values  # (M, K)
    reference = torch.sort(target @ theta, dim=0).values
    return ((projected - reference) ** 2).mean()
