# SPDX-License-Identifier: Apache-2.0
"""The hypernet's size against the target's, said before training starts (every entry point: `fuse`, `merge`, Python).

The transfer nets' three `E x (b*r)` matrices grow with the block size `b` and the width `E`. With the paper's
`E=1024` on a tiny model they can be a thousand times larger than the model they adapt, and a run then needs
gigabytes and hours for nothing; the user sees that number first, with a warning and a smaller `embed_dim` that fits.
"""

from __future__ import annotations

import sys
import warnings
from typing import TYPE_CHECKING

from hf_heterofusion.data.safetensors_header import checkpoint_header
from hf_heterofusion.errors import HeteroFusionWarning
from hf_heterofusion.method.transfer_net import hypernet_parameters, next_power_of_two


if TYPE_CHECKING:
    from hf_heterofusion.prepare import PreparedFusion


class HypernetSizeWarning(HeteroFusionWarning):
    """The transfer nets have more parameters than the target model itself."""


def target_parameters(prepared: PreparedFusion) -> int:
    """Parameter count of the target base, from its safetensors headers (0 when unknown)."""
    return sum(info.numel for info in checkpoint_header(prepared.target_model_dir).values())


def positions_needed(prepared: PreparedFusion) -> int:
    """The longest token sequence of any module group (what the learned position table must cover)."""
    longest = 1
    for group in prepared.groups:
        for b in group.buckets:
            longest = max(longest, b.target_tokens.shape[1], int(b.source_positions.max().item()) + 1)
    return longest


def fitting_sizes(prepared: PreparedFusion, budget: int) -> dict[str, int] | None:
    """The largest `embed_dim` (a power of two, a multiple of `num_heads`) whose hypernets fit in `budget`, with
    `max_position_embeddings` cut to what the sequences need when the position table alone would not fit."""
    c = prepared.config
    for positions in dict.fromkeys((c.max_position_embeddings,
                                    min(c.max_position_embeddings, next_power_of_two(positions_needed(prepared))))):
        best = None
        e = c.num_heads
        while e < c.embed_dim:
            total = sum(hypernet_parameters(g.rank, prepared.block_size, e, positions, sources=len(prepared.sources),
                                            position_mode=c.position_mode)
                        for g in prepared.groups)
            if total > budget:
                break
            best, e = e, e * 2
        if best is not None:
            return {"embed_dim": best, **({"max_position_embeddings": positions}
                                         if positions < c.max_position_embeddings else {})}
    return None


def suggestion(prepared: PreparedFusion, budget: int) -> str:
    """`set `embed_dim: 32` ...` for the warning (or the generic advice when nothing fits)."""
    sizes = fitting_sizes(prepared, budget)
    if sizes is None:
        return "lower `embed_dim` and `block_size`"
    return "set " + ", ".join(f"`{k}: {v}`" for k, v in sizes.items()) + " (or smaller)"


def announce_hypernet_size(prepared: PreparedFusion, *, show: bool = True) -> int:
    """Print the hypernet size (to stderr, when `show`) and warn when it exceeds the target's own size.

    Returns:
        `int`: the hypernet parameter count (all roles).
    """
    c = prepared.config
    total = sum(prepared.hypernet_parameters().values())
    target = target_parameters(prepared)
    if show:
        versus = f"; target model {target:,}" if target else ""
        print(f"hypernet: {total:,} parameters in {len(prepared.groups)} transfer net(s) (block size "
              f"{prepared.block_size}, embed_dim {c.embed_dim}){versus}", file=sys.stderr)
    if target and total > target:
        fix = suggestion(prepared, target)
        warnings.warn(HypernetSizeWarning(
            f"the transfer nets have {total:,} parameters, {total / target:.1f}x the target model's {target:,} "
            f"(block size {prepared.block_size}, embed_dim {c.embed_dim}); nets larger than their model cost time "
            f"and memory out of proportion: {fix}"), stacklevel=2)
    return total


__all__ = ["HypernetSizeWarning", "announce_hypernet_size", "fitting_sizes", "positions_needed", "suggestion",
           "target_parameters"]
