# SPDX-License-Identifier: Apache-2.0
"""Functional roles of LoRA modules across model families (paper §2.2, matched by role, not by name).

A role is one of q, k, v, o, gate, up, down. Families that fuse projections (Phi-3 `qkv_proj` and
`gate_up_proj`, GPT-NeoX `query_key_value`, GPT-2 `c_attn`) are split into roles on read: the fused B's rows
are cut into the role slices and A is shared, which is exact because `B @ A` of a row slice of B is the row
slice of `B @ A`. On write, a fused target is re-assembled from its role slices.
"""

from __future__ import annotations

from dataclasses import dataclass


# Module name (last path component) -> role, for unfused projections.
SIMPLE_ROLES: dict[str, str] = {
    # Llama, Mistral, Qwen2, Gemma, Phi-3 (o/down), OLMo, ...
    "q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o",
    "gate_proj": "gate", "up_proj": "up", "down_proj": "down",
    # Falcon / GPT-NeoX / Phi-2 style names
    "dense": "o", "dense_h_to_4h": "up", "dense_4h_to_h": "down", "fc1": "up", "fc2": "down",
    # GPT-2 / Bloom style
    "c_proj": "o", "out_proj": "o", "w1": "gate", "w3": "up", "w2": "down",
}

# Fused module name -> the roles stacked along B's rows, in order.
FUSED_ROLES: dict[str, tuple[str, ...]] = {
    "qkv_proj": ("q", "k", "v"),  # Phi-3
    "query_key_value": ("q", "k", "v"),  # GPT-NeoX, Falcon (non-interleaved layout assumed)
    "c_attn": ("q", "k", "v"),  # GPT-2 (Conv1D: weights are transposed, handled by the reader)
    "gate_up_proj": ("gate", "up"),  # Phi-3
    "c_fc": ("up",),  # GPT-2 MLP input
}

# The MLP's `c_proj` in GPT-2 is the down projection; its attention `c_proj` is `o`. The parent tells them apart.
PARENT_OVERRIDES: dict[tuple[str, str], str] = {("mlp", "c_proj"): "down"}


@dataclass(frozen=True)
class RoleSplit:
    """How one fused module's B rows divide into roles: `role -> (start, stop)` row ranges."""

    module: str
    slices: tuple[tuple[str, int, int], ...]


def roles_of(module_path: str) -> tuple[str, ...]:
    """Roles carried by a module path such as `model.layers.3.self_attn.qkv_proj` (empty if unknown)."""
    parts = module_path.split(".")
    name, parent = parts[-1], parts[-2] if len(parts) > 1 else ""
    if (parent, name) in PARENT_OVERRIDES:
        return (PARENT_OVERRIDES[(parent, name)],)
    if name in FUSED_ROLES:
        return FUSED_ROLES[name]
    if name in SIMPLE_ROLES:
        return (SIMPLE_ROLES[name],)
    return ()


def split_rows(module_name: str, d_out: int, d_in: int, model_config: dict | None) -> RoleSplit:
    """Row ranges of each role in a fused module's output, from the base model's config when available.

    Without a config (a source whose base config is not at hand) q/k/v widths are inferred: q is as wide as
    the input (the hidden size) and k, v share the rest equally, which holds for every GQA family we know.
    """
    roles = FUSED_ROLES[module_name]
    if roles == ("gate", "up"):
        half = d_out // 2
        return RoleSplit(module_name, (("gate", 0, half), ("up", half, d_out)))
    if roles == ("up",):
        return RoleSplit(module_name, (("up", 0, d_out),))
    q_width = _q_width(model_config, d_out, d_in)
    kv = (d_out - q_width) // 2
    return RoleSplit(
        module_name, (("q", 0, q_width), ("k", q_width, q_width + kv), ("v", q_width + kv, d_out))
    )


def _q_width(model_config: dict | None, d_out: int, d_in: int) -> int:
    cfg = model_config or {}
    heads = cfg.get("num_attention_heads") or cfg.get("n_head")
    kv_heads = cfg.get("num_key_value_heads") or heads
    hidden = cfg.get("hidden_size") or cfg.get("n_embd")
    head_dim = cfg.get("head_dim") or (hidden // heads if hidden and heads else None)
    if heads and head_dim and kv_heads and heads * head_dim + 2 * kv_heads * head_dim == d_out:
        return heads * head_dim
    if d_out > d_in and (d_out - d_in) % 2 == 0:
        return d_in
    return d_out // 3


# Target families whose decoder layers we can patch and re-fuse (all name their projections as above).
SUPPORTED_TARGET_FAMILIES = (
    "gemma", "gemma2", "gemma3", "gemma3_text", "granite", "llama", "mistral", "olmo", "olmo2", "phi3", "qwen2",
    "qwen3",
)
