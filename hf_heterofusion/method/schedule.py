# SPDX-License-Identifier: Apache-2.0
"""The one learning-rate schedule: linear warmup, then cosine decay to 0 (paper §2.6: cosine, 5 % warmup).

Both the transfer-net training (`method/train.py`) and the LoRA experts and baselines (`examples/experts.py`) use it. It is a
`LambdaLR` stepped once after every optimiser step, so optimiser step `k` (0-based) runs at `lr * factor(k)`:

* `start="zero"` is transformers' `get_cosine_schedule_with_warmup`, unchanged (the reference's schedule):
  `factor(k) = k / W` during the `W` warmup steps, so the FIRST step runs at lr 0 and does nothing;
* `start="first_step"`: `factor(k) = (k + 1) / (W + 1)`, so warmup climbs `1/(W+1) ... W/(W+1)` and no step is
  wasted. From step `W` on both are the same cosine, `0.5 * (1 + cos(pi * (k - W) / (T - W)))`.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


WarmupStart = Literal["zero", "first_step"]


def cosine_with_warmup(optimizer: Optimizer, warmup_steps: int, total_steps: int, *,
                       start: WarmupStart = "zero") -> LambdaLR:
    """The schedule of the module docstring for `total_steps` optimiser steps, `warmup_steps` of them warmup."""
    if start == "zero":
        from transformers import get_cosine_schedule_with_warmup

        return get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    if start != "first_step":
        raise ValueError(f"unknown warmup start `{start}`; choose `zero` or `first_step`")
    # A `partial` of a module-level function, like transformers' own: the scheduler's state_dict stays loadable.
    return LambdaLR(optimizer, partial(_first_step_factor, warmup=warmup_steps, total=total_steps))


def _first_step_factor(step: int, *, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


__all__ = ["WarmupStart", "cosine_with_warmup"]
