# SPDX-License-Identifier: Apache-2.0
"""`max_grad_norm`: off by default (no clipping, as the paper trains); set, every optimiser step sees a gradient
of at most that norm, and the loss curve records the norm before clipping."""

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from hf_heterofusion.pipeline import fit


def _fit_norms(make_config, **overrides) -> tuple[list[float], list[dict]]:
    """The gradient norm each optimiser step applies, and the fit's loss records."""
    seen = []

    def hook(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    handle = register_optimizer_step_pre_hook(hook)
    try:
        result = fit(make_config(sources=("qwen2",), max_steps=3, lr=1e-3, **overrides), show_progress=False)
    finally:
        handle.remove()
    return seen, list(result.report.training.losses)


@pytest.mark.integration
@pytest.mark.parametrize("trainer", ["transfer_nets", "lora"])
def test_max_grad_norm_clips_every_step_and_records_the_norm(make_config, trainer):
    free, free_losses = _fit_norms(make_config, trainer=trainer)
    assert all("grad_norm" not in r for r in free_losses)  # the default records exactly what it did before
    limit = min(free) / 10  # below every step's norm: clipping must engage on each step
    clipped, losses = _fit_norms(make_config, trainer=trainer, max_grad_norm=limit)
    assert len(clipped) == len(losses) == 3
    assert all(n <= limit * (1 + 1e-4) for n in clipped)
    assert all(r["grad_norm"] > limit for r in losses)
    assert losses[0]["grad_norm"] == pytest.approx(free[0], rel=1e-4)  # the same first step, before clipping
