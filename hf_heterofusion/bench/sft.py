# SPDX-License-Identifier: Apache-2.0
"""Data-only control until `trainer: lora` is in the pipeline: train the anchor adapter itself on the rows.

It follows the fusion's training recipe step for step, read from the same `FusionConfig` (`train.py`): AdamW with
the config's learning rate and weight decay, batch `batch_size` x `gradient_accumulation_steps`, the seeded epoch
order of `train.epoch_order`, the step count of `train.lr_schedule_steps` (so `max_steps` caps both alike), the
same cosine schedule with linear warmup, and no gradient clipping (the fusion does not clip, and `FusionConfig`
has no clipping key). Only the trainable parameters differ: the anchor's LoRA factors instead of the transfer nets.

`experts.train_lora_expert` (the v1 control) clips at 1.0 and uses its own warmup rule, which is why the
benchmark does not use it for the control any more. When the pipeline's `trainer: lora` exists (see
`features.py`), the benchmark calls that instead and this module is unused.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from transformers import get_cosine_schedule_with_warmup

from hf_heterofusion import experts
from hf_heterofusion.config import FusionConfig
from hf_heterofusion.replay import collate, encode_replay, load_replay, pad_token_id
from hf_heterofusion.train import epoch_order, lr_schedule_steps


def _lambda(warmup: int, total: int, first_step: bool):
    """The fusion's schedule; `first_step` starts the warmup at lr/warmup instead of 0 (`warmup_start`)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1) if first_step else step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def train_anchor(cfg: FusionConfig, out_dir: Path) -> dict:
    """Train `cfg.target_adapter` on `cfg.replay` with `cfg`'s schedule; save it to `out_dir`; return a record."""
    examples = load_replay(cfg.replay)
    torch.manual_seed(cfg.seed)
    model, tokenizer = experts.load_model(cfg.target_model, cfg.target_adapter, trainable=True)
    encoded = encode_replay(examples, tokenizer, cfg.max_length)
    pad = pad_token_id(tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    windows, total = lr_schedule_steps(len(encoded), cfg, 1)
    warmup = int(cfg.warmup_ratio * total)
    first_step = getattr(cfg, "warmup_start", "zero") == "first_step"
    if first_step:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lambda(warmup, max(1, total), True))
    else:  # exactly what train.py builds
        scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, max(1, total))
    model.train()
    step, losses, started = 0, [], time.perf_counter()
    per_window = cfg.gradient_accumulation_steps * cfg.batch_size
    for epoch in range(cfg.epochs):
        order = epoch_order(len(encoded), cfg.seed, epoch)
        for w in range(windows):
            if step >= total:
                break
            idx = order[w * per_window:(w + 1) * per_window]
            micro = [idx[i:i + cfg.batch_size] for i in range(0, len(idx), cfg.batch_size)]
            ces = []
            for batch_idx in micro:
                ce = model(**collate([encoded[i] for i in batch_idx], pad)).loss
                (ce / len(micro)).backward()
                ces.append(ce.item())
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append({"step": step, "loss": sum(ces) / len(ces), "lr": scheduler.get_last_lr()[0]})
    seconds = time.perf_counter() - started
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    return {"fit_seconds": seconds, "steps": step, "losses": losses, "examples": len(encoded)}
