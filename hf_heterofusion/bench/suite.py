# SPDX-License-Identifier: Apache-2.0
"""One benchmark run from start to report: `run_suite` is what `python -m hf_heterofusion.bench` calls."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .grid import GRIDS
from .models import cache_root
from .report import write_all
from .run import fusion_config, optimizer_steps, run_methods, score_reference_experts, setup


logger = logging.getLogger(__name__)

NOTES = (
    "HeteroFusion only ever sees the source *adapters*: the source base model is loaded for training and scoring "
    "the source experts (the upper reference), never by a fusion.",
    "`naive`, `task_arithmetic`, `ties` and `dare_ties` use the same tail alignment and role matching as "
    "HeteroFusion; they are evaluated as merged weights (no re-factoring to rank r, which could only lose more).",
    "The placebo run uses norm-matched Gaussian sources of the same shapes: what the replay data alone buys "
    "through the transfer nets.",
    "The SFT control continues the anchor adapter on the same replay rows for the same optimiser steps, with a "
    "LoRA learning rate (the paper's 5e-5 is for the transfer nets).",
    "Real models come from PyPI as quantised GGUF files (Q4_1 / Q4_K_M) dequantised to fp32: fine for relative "
    "comparisons, not for absolute quality claims.",
)


def run_suite(*, grid_name: str = "full", out: Path = Path("bench_results"), cache: Path | None = None,
              threads: int | None = None, seeds: int | None = None, perf: bool = True,
              only: Sequence[str] | None = None, command: str = "") -> dict:
    """Run the benchmark grid `grid_name`, write results.{md,json,png} into `out`, and return the results."""
    started = time.perf_counter()
    grid = GRIDS[grid_name]
    if seeds is not None:
        grid = grid.with_(seeds=tuple(range(seeds)))
    if not perf:
        grid = grid.with_(perf=False)
    if threads is not None:
        torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache) if cache is not None else (out / "cache" if grid.name == "quick" else cache_root())
    handler = logging.FileHandler(out / "bench.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("hf_heterofusion").addHandler(handler)
    try:
        logger.info("benchmark grid `%s` -> %s (cache %s, %d torch threads)", grid.name, out, cache,
                    torch.get_num_threads())
        bench = setup(grid, out, cache)
        results = bench.results
        results.update(grid=grid.to_dict(), command=command, threads=torch.get_num_threads(), notes=list(NOTES))
        results["optimizer_steps"] = optimizer_steps(bench)
        results["source_names"] = {
            "single": [f"{bench.grid.source}:{t}" for t in grid.tasks[1:]],
            "noisy": [f"{bench.grid.source}:{t}" for t in grid.tasks[1:]] + [f"noise:{n}" for n in grid.noise],
        }
        results["block_size_resolved"] = _resolved_block_size(bench)
        results["constant"] = constant_scores(bench)
        score_reference_experts(bench)
        write_all(results, out)  # partial results early, refreshed as runs finish
        run_methods(bench, only=only, on_result=lambda: write_all(results, out))
        if grid.perf:
            from .perf import run_perf

            results["perf"] = run_perf(bench)
        results["wall_seconds"] = round(time.perf_counter() - started, 1)
        results["compute_seconds"] = _compute_seconds(results)
        results["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        paths = write_all(results, out)
        logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
        return results
    finally:
        logging.getLogger("hf_heterofusion").removeHandler(handler)
        handler.close()


def _compute_seconds(results: dict) -> dict[str, float]:
    """Compute recorded across invocations (expert training and method runs survive in the caches)."""
    runs = [r for methods in results.get("runs", {}).values() for seeds in methods.values() for r in seeds.values()]
    return {
        "experts": round(sum(e.get("train_seconds", 0.0) for e in results.get("experts", [])), 1),
        "methods": round(sum(r.get("wall_seconds", 0.0) for r in runs), 1),
    }


def constant_scores(bench) -> dict[str, float]:
    """Score of always answering a task's most frequent test answer: the floor a format-only model reaches."""
    from collections import Counter

    from hf_heterofusion.synthetic import score

    out = {}
    for task in bench.grid.tasks:
        split = bench.splits[task]
        refs = [row["response"] for row in split.test]
        guess = Counter(refs).most_common(1)[0][0]
        out[task] = score(split.task, [guess] * len(refs), refs)
    out["avg"] = sum(out.values()) / len(out)
    return out


def _resolved_block_size(bench) -> int:
    from hf_heterofusion.pipeline import prepare

    return prepare(fusion_config(bench, bench.sources("single"), 0, preset="faithful")).block_size
