# SPDX-License-Identifier: Apache-2.0
"""Group-wise blocking and per-block spectra (paper §2.2 "Group-wise Blocking (dim, r)").

A factor `X (n x r)` is zero-padded to a multiple of the block size `b` and cut into `ceil(n / b)` tokens of
shape `b x r`. Different hidden sizes change only the padding; different FFN widths change the token count.
Each token's singular values feed the gate; they are computed once, in fp32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def num_blocks(rows: int, block_size: int) -> int:
    return max(1, math.ceil(rows / block_size))


def to_blocks(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """`(n, r)` -> `(ceil(n/b), b, r)`, zero-padded at the bottom."""
    n, r = x.shape
    pad = num_blocks(n, block_size) * block_size - n
    return F.pad(x.float(), (0, 0, 0, pad)).view(-1, block_size, r)


def from_blocks(tokens: torch.Tensor, rows: int) -> torch.Tensor:
    """`(..., k, b, r)` -> `(..., rows, r)`: undo `to_blocks` and crop the padding."""
    *lead, k, b, r = tokens.shape
    return tokens.reshape(*lead, k * b, r)[..., :rows, :]


def module_tokens(A: torch.Tensor, B: torch.Tensor, block_size: int) -> tuple[torch.Tensor, int, int]:
    """The token sequence `[blocks(A^T); blocks(B)]` of one LoRA module and its A/B token counts."""
    a_tokens, b_tokens = to_blocks(A.t(), block_size), to_blocks(B, block_size)
    return torch.cat([a_tokens, b_tokens]), a_tokens.shape[0], b_tokens.shape[0]


def block_spectra(tokens: torch.Tensor) -> torch.Tensor:
    """Singular values of each `b x r` token, `(..., b, r)` -> `(..., r)` in fp32 (descending)."""
    # X and X^T share singular values; LAPACK is far faster on the short-and-wide r x b layout.
    try:
        return torch.linalg.svdvals(tokens.float().mT)
    except RuntimeError:
        # An all-zero or degenerate block can fail to converge; a tiny shift makes it well-posed.
        return torch.linalg.svdvals(tokens.float().mT + 1e-6)
