# SPDX-License-Identifier: Apache-2.0
"""A directional check, not the tuned grid: some methods of one regime at one fixed lr and the given seeds.

`python -m benchmarks.directional --regime seeds_only --lr 0.001 --seeds 0 --methods sft_teacher_bal ...`

Runs go through the grid's own cache (`tuning.cached_run`), so the full grid reuses them; the printout says plainly
that the lr was not chosen on this regime's dev split.
"""

from __future__ import annotations

import argparse
import json

import torch

from .grid import GRIDS, with_steps
from .run import add_setup_args, setup
from .tuning import cached_run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", default="reduced", choices=sorted(GRIDS))
    p.add_argument("--regime", required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--steps", type=int, default=None, help="optimiser steps of every run (default: the grid's)")
    p.add_argument("--prompts", type=int, default=None,
                   help="unlabeled prompts per source task in few_labels / noisy (default: the grid's, 48)")
    p.add_argument("--synthesize", type=int, default=None,
                   help="prompts a teacher synthesizes per source task in seeds_only / seeds_card (default: the grid's)")
    p.add_argument("--labels", type=int, default=None,
                   help="labelled rows (seeds in seeds_only / seeds_card) per source task (default: the grid's, 4)")
    p.add_argument("--dev", action="store_true", help="score the dev split too (what an lr sweep reads)")
    add_setup_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    grid = GRIDS[args.grid] if args.steps is None else with_steps(GRIDS[args.grid], args.steps)
    if args.prompts is not None:
        grid = grid.with_(n_prompts=args.prompts)
    if args.synthesize is not None:
        grid = grid.with_(n_synth=args.synthesize)
    if args.labels is not None:
        grid = grid.with_(n_labels=args.labels)
    if args.regime not in grid.regimes:  # e.g. `seeds_card`, not in the grid's default list
        grid = grid.with_(regimes=(*grid.regimes, args.regime))
    bench = setup(grid, args.out, args.cache)
    regime = bench.regimes[args.regime]
    for seed in args.seeds:
        for method in args.methods:
            record = cached_run(bench, regime, method, args.lr, seed, dev=args.dev)
            print(json.dumps({"regime": args.regime, "method": method, "lr": args.lr, "seed": seed,
                              "steps": grid.steps, "prompts": grid.n_prompts, "synthesize": grid.n_synth,
                              "labels": grid.n_labels,
                              "lr_rule": "fixed (not chosen on this regime's dev split)",
                              **{k: v for k, v in record.items() if k in ("avg", "tasks", "scores", "dev_avg")},
                              "teacher": record.get("teacher", {}).get("sources")}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
