# SPDX-License-Identifier: Apache-2.0
"""The one learning-rate schedule (`schedule.py`) and its `warmup_start` switch, alone and inside a fit."""

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from transformers import get_cosine_schedule_with_warmup

from hf_heterofusion.method.schedule import cosine_with_warmup
from hf_heterofusion.pipeline import fit


def _lrs(make_scheduler, steps: int) -> list[float]:
    """The lr each optimiser step runs at (the scheduler is stepped after every step, as in training)."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=5e-5)
    scheduler = make_scheduler(optimizer)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize(("warmup", "total"), [(0, 10), (1, 20), (3, 24), (5, 100), (7, 7)])
def test_zero_is_bit_identical_to_transformers(warmup, total):
    ours = _lrs(lambda o: cosine_with_warmup(o, warmup, total, start="zero"), total)
    theirs = _lrs(lambda o: get_cosine_schedule_with_warmup(o, warmup, total), total)
    assert ours == theirs  # exact float equality, not approx
    if warmup:
        assert ours[0] == 0.0  # the reference's quirk, kept by default: optimiser step 1 does nothing


@pytest.mark.parametrize(("warmup", "total"), [(1, 20), (3, 24), (5, 100)])
def test_first_step_never_runs_at_zero_and_then_matches_the_cosine(warmup, total):
    ours = _lrs(lambda o: cosine_with_warmup(o, warmup, total, start="first_step"), total)
    zero = _lrs(lambda o: cosine_with_warmup(o, warmup, total, start="zero"), total)
    assert ours[0] > 0.0
    assert ours[:warmup] == pytest.approx([5e-5 * (k + 1) / (warmup + 1) for k in range(warmup)], rel=1e-12)
    assert all(a < b for a, b in zip(ours[:warmup], ours[1 : warmup + 1]))  # climbs to the peak at step W
    assert ours[warmup:] == zero[warmup:]  # the same cosine after warmup, bit for bit


def test_first_step_scheduler_state_round_trips():
    """Checkpoints save the scheduler's state_dict and load it with `weights_only=True`."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = cosine_with_warmup(optimizer, 2, 10, start="first_step")
    optimizer.step()
    scheduler.step()
    state = scheduler.state_dict()
    again = cosine_with_warmup(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 2, 10,
                               start="first_step")
    again.load_state_dict(state)
    assert again.get_last_lr() == scheduler.get_last_lr() == [2 / 3]


@pytest.mark.integration
@pytest.mark.parametrize(("start", "expected"), [("zero", [0.0, 1e-3]), ("first_step", [5e-4, 1e-3])])
def test_warmup_start_switch_in_a_fit(make_config, start, expected):
    """Two optimiser steps, one of them warmup: the lr each real step of the transfer nets ran at."""
    seen = []
    hook = register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: seen.append(
        optimizer.param_groups[0]["lr"]))
    try:
        cfg = make_config(sources=("qwen2",), max_steps=2, warmup_ratio=0.5, warmup_start=start)  # lr 1e-3
        fit(cfg, show_progress=False)
    finally:
        hook.remove()
    assert seen == pytest.approx(expected, rel=1e-12, abs=0.0)
