# SPDX-License-Identifier: Apache-2.0
"""The teacher stage with loading included: `python -m benchmarks.teacher_loading --prompts 8 --repeats 2`.

The reduced grid's five Gemma-3 source experts share one base. The whole teacher stage (`run_teachers`, nothing
cached, every model and tokenizer load included) runs twice per repeat in one process, alternating: as it does now
(the base and tokenizer stay resident between sources, only the adapters are swapped) and loading them per source
(what it did before). Printed: seconds per mode and their ratio; the labels must be the same.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.examples import synthetic
from hf_heterofusion.prepare import prepare
from hf_heterofusion.teacher import labeller
from hf_heterofusion.teacher.run import run_teachers

from .grid import GRIDS
from .run import add_setup_args, setup


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=8, help="given prompts per source task")
    p.add_argument("--repeats", type=int, default=2)
    add_setup_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    grid = GRIDS["reduced"]
    bench = setup(grid.with_(regimes=()), args.out, args.cache)
    keep = labeller._RESIDENT.keep
    seconds: dict[str, list[float]] = {"resident": [], "per_source": []}
    labels: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = []
        for task in grid.tasks[1:]:
            rows = [{"prompt": r["prompt"]} for r in bench.splits[task].pool[:args.prompts]]
            sources.append({"adapter": str(bench.task_experts[task]), "base_model": str(bench.source_dir),
                            "name": task, "prompts": str(synthetic.write_jsonl(rows, Path(tmp) / f"{task}.jsonl"))})
        cfg = FusionConfig(target_model=str(bench.target_dir), target_adapter=str(bench.anchor), sources=sources,
                           teacher="sources", teacher_max_new_tokens=grid.teacher_max_new_tokens,
                           teacher_batch_size=grid.teacher_batch_size)
        plans = prepare(cfg).teaching
        for repeat in range(args.repeats):
            for mode in ("per_source", "resident") if repeat % 2 else ("resident", "per_source"):
                os.environ["HF_HETEROFUSION_CACHE"] = str(Path(tmp) / f"cache-{mode}-{repeat}")  # nothing cached
                labeller._RESIDENT.keep = keep if mode == "resident" else (lambda *a: labeller._RESIDENT.release())
                started = time.perf_counter()
                result = run_teachers(plans, cfg, show_progress=False)
                seconds[mode].append(time.perf_counter() - started)
                labels[mode] = [r.response for r in result.rows]
    labeller._RESIDENT.keep = keep
    best = {mode: min(s) for mode, s in seconds.items()}
    print(json.dumps({"sources": len(sources), "prompts_per_source": args.prompts, "threads": args.threads,
                      "seconds": seconds, "speedup_best": round(best["per_source"] / best["resident"], 2),
                      "same_labels": labels["resident"] == labels["per_source"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
