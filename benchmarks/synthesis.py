# SPDX-License-Identifier: Apache-2.0
"""How on-task synthesized prompts are: `python -m benchmarks.synthesis --writer gemma3 --seeds 4 --synthesize 24`.

For every task of the benchmark, `--seeds` replay prompts are the seeds and the teacher stage's own synthesis
(`Labeller.synthesize`, the source base writing with its adapter disabled) writes `--synthesize` new prompts. Per
task it reports the share of written prompts that keep the seeds' template (same instruction prefix and answer
suffix), that name an entity of the task's lexicon (every real prompt of these tasks does, sentiment most), the
queries spent, and the seconds. It needs no expert: the writer is the base model (a no-op adapter stands in).
Prints one JSON object per task and a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import torch

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.examples.synthetic import TASK_NAMES, get_task, make_splits
from hf_heterofusion.teacher.labeller import Labeller
from hf_heterofusion.teacher.plan import TeacherPlan

from .labelling import zero_adapter
from .models import ensure_model


def on_task_stats(task_name: str, seeds: list[str], written: list[str]) -> dict:
    lex = get_task(task_name).lexicon
    names = (*lex.persons, *lex.locations, *lex.orgs)
    prefix, suffix = os.path.commonprefix(seeds), os.path.commonprefix([s[::-1] for s in seeds])[::-1]
    n = max(len(written), 1)
    # A seed of these tasks is one plain sentence: digits, markup or links say the writer left the task's domain.
    foreign = [w for w in written if re.search(r"\d|<|>|http|www\.", w[len(prefix):])]
    return {"written": len(written),
            "template_kept": round(100 * sum(w.startswith(prefix) and w.endswith(suffix) for w in written) / n, 1),
            "lexicon": round(100 * sum(any(x in w for x in names) for w in written) / n, 1),
            "digits_or_markup": round(100 * len(foreign) / n, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--writer", choices=("smollm2", "gemma3"), default="gemma3")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--synthesize", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = ensure_model(args.writer)
    rows_all = []
    totals = {"written": 0, "template_kept": 0.0, "lexicon": 0.0, "digits_or_markup": 0.0, "queries": 0,
              "seconds": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_HETEROFUSION_CACHE"] = str(Path(tmp) / "cache")  # measure the writing, not a cache hit
        adapter = zero_adapter(base, Path(tmp) / "adapter")
        cfg = FusionConfig(target_model=str(base), target_adapter=str(adapter), sources=[str(adapter)],
                           seed=args.seed, teacher="sources")
        for index, name in enumerate(TASK_NAMES):
            seeds = [r["prompt"] for r in make_splits(get_task(name), 11, 0, args.seeds, 0)[1]]
            plan = TeacherPlan(index, name, str(base), base, None, adapter, None, (), tuple(seeds), args.synthesize,
                               "plain")
            labeller = Labeller(plan, cfg, show_progress=False)
            started = time.perf_counter()
            prompts, stats = labeller.synthesize()
            seconds = time.perf_counter() - started
            labeller.close()
            written = [t.prompt for t in prompts]
            row = {"task": name, **on_task_stats(name, seeds, written), "queries": stats.get("queries"),
                   "seconds": round(seconds, 1), "stats": stats, "prompts": written}
            rows_all.append(row)
            print(json.dumps(row), flush=True)
            for key in ("written", "queries", "seconds"):
                totals[key] += row[key] or 0
            totals["template_kept"] += row["template_kept"] * row["written"] / 100
            totals["lexicon"] += row["lexicon"] * row["written"] / 100
            totals["digits_or_markup"] += row["digits_or_markup"] * row["written"] / 100
    n = max(totals["written"], 1)
    print(json.dumps({"summary": True, "writer": args.writer, "written": totals["written"],
                      "template_kept": round(100 * totals["template_kept"] / n, 1),
                      "lexicon": round(100 * totals["lexicon"] / n, 1),
                      "digits_or_markup": round(100 * totals["digits_or_markup"] / n, 1), "queries": totals["queries"],
                      "seconds": round(totals["seconds"], 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
