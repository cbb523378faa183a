# SPDX-License-Identifier: Apache-2.0
"""What the real-vs-synthetic filter keeps: `python -m benchmarks.discriminator --task relation_lives_in --seeds 16`.

One source task of the reduced grid, its real Gemma expert teaching: `--seeds` labelled rows drawn as `seeds_card`
draws them are the seed prompts, the source base writes `--synthesize` prompts, and every filter judges them
(`teacher_discriminator: true`). Printed: each filter's count, the `teacher_rows` shares (on the task's lexicon,
`none`, grounded) of the rows every other filter keeps, split by the discriminator's verdict, and samples of both.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.data.replay import prompt_text
from hf_heterofusion.examples import synthetic
from hf_heterofusion.prepare import prepare
from hf_heterofusion.teacher.run import DISCRIMINATOR_FILTER, judge_source

from .grid import GRIDS
from .regimes import seed_rows
from .run import add_setup_args, setup
from .teacher_rows import row_stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="relation_lives_in")
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--synthesize", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    add_setup_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    grid = GRIDS["reduced"].with_(n_labels=args.seeds)
    bench = setup(grid.with_(regimes=()), args.out, args.cache)
    seeds = seed_rows(bench.splits[args.task].replay, args.task, "seeds_card", grid)
    with tempfile.TemporaryDirectory() as tmp:
        prompts = synthetic.write_jsonl([{"prompt": r["prompt"]} for r in seeds], Path(tmp) / "seeds.jsonl")
        cfg = FusionConfig(target_model=str(bench.target_dir), target_adapter=str(bench.anchor), seed=args.seed,
                           sources=[{"adapter": str(bench.task_experts[args.task]), "base_model": str(bench.source_dir),
                                     "name": args.task, "prompts": str(prompts), "synthesize": args.synthesize}],
                           teacher="sources", teacher_discriminator=True,
                           teacher_max_new_tokens=grid.teacher_max_new_tokens, teacher_batch_size=grid.teacher_batch_size)
        judged = judge_source(prepare(cfg).teaching[0], cfg, show_progress=False)
    rows = {"kept": [], DISCRIMINATOR_FILTER: []}
    counts: dict[str, int] = {}
    for p_, g, reason in zip(judged.prompts, judged.generations, judged.reasons):
        if p_.origin != "synthesized":
            continue
        counts[reason or "kept"] = counts.get(reason or "kept", 0) + 1
        if reason in (None, DISCRIMINATOR_FILTER):
            rows["kept" if reason is None else reason].append(
                {"prompt": prompt_text(p_.prompt), "response": g.text.strip(), "source": args.task})
    print(json.dumps({"task": args.task, "seeds": len(seeds), "synthesis": judged.synthesis, "verdicts": counts,
                      **{f"rows_{k}": row_stats(v).get(args.task) for k, v in rows.items() if v},
                      **{f"samples_{k}": [f"{r['prompt'].strip()} -> {r['response']}" for r in v[:5]]
                         for k, v in rows.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
