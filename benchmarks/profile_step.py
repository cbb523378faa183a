# SPDX-License-Identifier: Apache-2.0
"""Profile optimiser steps of a fit with `torch.profiler` and print the top ops (the before/after table of a speed change).

    python -m benchmarks.profile_step --target T --anchor A --source S1 --source S2 --replay R.jsonl \
        [--embed-dim 1024] [--amortize on|off] [--trainer transfer_nets|lora] [--step 2] [--shapes] [--top 15]

The first optimiser step pays one-time costs (allocation, lazy init, the optimiser state: `--step 1` shows them);
the table covers optimiser step `--step` (default 2) whole: the window's forward and backward passes, the AdamW
update, the scheduler and `zero_grad`. `--trainer lora` profiles the same step of plain LoRA SFT, `--shapes`
groups ops by input shapes (which matmul is which layer).
"""

from __future__ import annotations

import argparse
import time

import torch
from accelerate import Accelerator
from torch.profiler import ProfilerActivity, profile

import hf_heterofusion.method.train as train_mod
from hf_heterofusion.config import FusionConfig
from hf_heterofusion.pipeline import fit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__)
    p.add_argument("--target", required=True)
    p.add_argument("--anchor", required=True)
    p.add_argument("--source", action="append", required=True)
    p.add_argument("--replay", required=True)
    p.add_argument("--embed-dim", type=int, default=1024)
    p.add_argument("--amortize", choices=("on", "off"), default="on")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--accumulation", type=int, default=8)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--trainer", choices=("transfer_nets", "lora"), default="transfer_nets",
                   help="`lora`: the same step of plain LoRA SFT (the ratio's denominator)")
    p.add_argument("--step", type=int, default=2, help="which optimiser step to profile (1: with one-time costs)")
    p.add_argument("--shapes", action="store_true", help="group the table by input shapes too")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = FusionConfig(target_model=args.target, target_adapter=args.anchor, sources=args.source,
                       replay=args.replay, block_size="auto", embed_dim=args.embed_dim, num_projections=2048,
                       epochs=1, batch_size=args.batch_size, gradient_accumulation_steps=args.accumulation,
                       max_steps=args.step + 1, checkpoint_every=0, max_length=128,
                       amortize_nets=args.amortize == "on", trainer=args.trainer)
    real, calls, box = train_mod._run_window, {"n": 0}, {}

    def profiled(*a, **k):  # window N starts the profiler, window N + 1 stops it: optimiser step N in full
        calls["n"] += 1
        if calls["n"] == args.step:
            box["prof"] = profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes)
            box["prof"].__enter__()
            box["t0"] = time.perf_counter()
        elif calls["n"] == args.step + 1:
            box["seconds"] = time.perf_counter() - box["t0"]
            box["prof"].__exit__(None, None, None)
        return real(*a, **k)

    train_mod._run_window = profiled
    try:
        fit(cfg, show_progress=False, accelerator=Accelerator(cpu=True))
    finally:
        train_mod._run_window = real
    print(f"trainer={args.trainer} amortize_nets={args.amortize} E={args.embed_dim} sources={len(args.source)} batch {args.batch_size} x "
          f"accumulation {args.accumulation}; optimiser step {args.step}: {box['seconds']:.2f} s (profiler on)")
    print(box["prof"].key_averages(group_by_input_shape=args.shapes).table(
        sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=40,
        max_shapes_column_width=60))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
