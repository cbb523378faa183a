# SPDX-License-Identifier: Apache-2.0
"""One benchmark invocation from start to report: `run_suite` is what `python -m benchmarks` calls.

An invocation runs (or reads back from the run cache) every run of the chosen regimes, refreshing
`results.{json,md,png}` after each one, so the files always show what is complete. `report_only` re-renders them
from `results.json` without running anything; `snapshot` copies the rendered report and chart into `docs/`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from hf_heterofusion.examples.synthetic import score

from .grid import GRIDS, Grid, with_steps
from .methods import DETERMINISTIC
from .models import cache_root
from .perf import run_perf
from .report import write_all
from .run import methods_for, setup, steps
from .stats import loso_agreement, paired_table, summarise_regime
from .tuning import attempt, cached_run, run_loso, run_regime


logger = logging.getLogger(__name__)

NOTES = (
    "HeteroFusion without a teacher only ever sees the source *adapters*; with `teacher: sources` each source's "
    "base + adapter labels its task's prompts (the teacher stage), and those rows join the labelled rows.",
    "TA / TIES / DARE use the same tail alignment and role matching as HeteroFusion and are evaluated as merged "
    "weights; they read no rows, so they are the same in every regime of a source pool.",
    "Placebo sources are norm-matched Gaussian adapters of the same shapes; the placebo teacher is each source's "
    "base with its adapter's B zeroed (same base, no skill).",
    "Data-only SFT trains the anchor adapter itself on the same rows with the same optimiser, steps, batch, "
    "schedule and warmup rule as the fusion, and no gradient clipping (the fusion has none either).",
    "Transfer efficiency: fused score on a source task / the source expert's score on its own base. Anchor "
    "retention: fused score on the anchor's task / the anchor adapter's own score.",
    "Real models come from PyPI as quantised GGUF files (Q4_1 / Q4_K_M) dequantised to fp32: fine for relative "
    "comparisons, not for absolute quality claims.",
)


def run_suite(*, grid_name: str = "full", out: Path = Path("bench_results"), cache: Path | None = None,
              threads: int | None = None, seeds: int | None = None, budget: int | None = None, perf: bool = True,
              only: Sequence[str] | None = None, regimes: Sequence[str] | None = None, loso: bool = True,
              cached_only: bool = False, command: str = "") -> dict:
    """Run the benchmark grid `grid_name` (optionally some regimes / methods), write results into `out`.

    `cached_only`: compute no run, assemble what the run cache holds (e.g. several invocations' cells, run apart
    in parallel, into one report); what it lacks is reported as incomplete.
    """
    started = time.perf_counter()
    grid = GRIDS[grid_name]
    if seeds is not None:
        grid = grid.with_(seeds=tuple(range(seeds)))
    if regimes is not None:
        grid = grid.with_(regimes=tuple(regimes))
    if budget is not None:
        grid = with_steps(grid, budget)
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
        logger.info("benchmark grid `%s`, regimes %s -> %s (cache %s, %d torch threads)", grid.name,
                    ",".join(grid.regimes), out, cache, torch.get_num_threads())
        bench = setup(grid, out, cache)
        bench.cached_only = cached_only
        results = bench.results
        results.update(grid=grid.to_dict(), command=command, threads=torch.get_num_threads(), notes=list(NOTES),
                       features=bench.features.to_dict(), steps=steps(grid), started=_now())
        results["source_names"] = {"single": list(grid.tasks[1:]),
                                   "noisy": [*grid.tasks[1:], *(f"noise:{n}" for n in grid.noise)]}
        results["constant"] = constant_scores(bench)
        first = next(iter(bench.regimes.values()), None)
        if first is not None:
            results["reference"] = attempt(cached_run, bench, first, "reference", None, 0)

        last_chart = [0.0]

        def refresh() -> None:
            # Called after every stored run: the cheap files each time, the chart at most once a minute.
            summarise(results)
            chart = time.monotonic() - last_chart[0] > 60
            write_all(results, out, chart=chart)
            if chart:
                last_chart[0] = time.monotonic()

        refresh()
        for name in grid.regimes:
            run_regime(bench, name, only=only, on_result=refresh)
        if loso and grid.loso_regime in grid.regimes:
            run_loso(bench, on_result=refresh)
        if grid.perf:
            results["perf"] = run_perf(bench)
        results["wall_seconds"] = round(time.perf_counter() - started, 1)
        results["finished"] = _now()
        summarise(results)
        paths = write_all(results, out)
        logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
        return results
    finally:
        logging.getLogger("hf_heterofusion").removeHandler(handler)
        handler.close()


def summarise(results: dict) -> None:
    """Tables, paired differences, cell completeness, LOSO agreement and compute totals, from the raw runs."""
    grid = results["grid"]
    tasks = grid["tasks"]
    reference = (results.get("reference") or {}).get("scores", {})
    results["tables"], results["paired"], results["cells"] = {}, {}, {}
    for name, entries in results.get("runs", {}).items():
        results["tables"][name] = summarise_regime(entries, tasks, reference)
        # Each teacher variant that ran is compared with every control; without one, HeteroFusion itself.
        primaries = [m for m in ("hf_teacher", "hf_teacher_bal") if entries.get(m, {}).get("seeds")] or ["hf"]
        results["paired"][name] = {"primary": primaries[0], "vs": paired_table(entries, primaries[0]),
                                   "also": {m: paired_table(entries, m) for m in primaries[1:]}}
        results["cells"][name] = cells(results, name)
    if results.get("loso"):
        results["loso"]["agreement"] = loso_agreement(results["loso"])
    every = [r for entries in results.get("runs", {}).values() for e in entries.values() for r in e["seeds"].values()]
    results["compute_seconds"] = {
        "experts": round(sum(e.get("train_seconds", 0.0) for e in results.get("experts", [])), 1),
        "methods_chosen_lr": round(sum(r.get("wall_seconds", 0.0) for r in every), 1),
    }


def cells(results: dict, regime: str) -> dict[str, str]:
    """Per method of a regime: `complete`, `n/N seeds`, or why it was skipped (what the README's table shows)."""
    grid = Grid(**{k: tuple(v) if isinstance(v, list) else v for k, v in results["grid"].items()})
    entries = results.get("runs", {}).get(regime, {})
    skipped = results.get("skipped", {}).get(regime, {})
    out = {}
    for m in methods_for(regime, grid):
        if m in skipped:
            out[m] = f"skipped: {skipped[m]}"
            continue
        want = 1 if m in DETERMINISTIC else len(grid.seeds)
        have = len(entries.get(m, {}).get("seeds", {}))
        out[m] = "complete" if have >= want else f"{have}/{want} seeds"
    return out


def constant_scores(bench) -> dict[str, float]:
    """Score of always answering a task's most frequent test answer: the floor a format-only model reaches."""
    out = {}
    for task in bench.grid.tasks:
        split = bench.splits[task]
        refs = [row["response"] for row in split.test]
        guess = Counter(refs).most_common(1)[0][0]
        out[task] = score(split.task, [guess] * len(refs), refs)
    out["avg"] = sum(out.values()) / len(out)
    return out


def report_only(out: Path, snapshot: Path | None = None) -> dict[str, Path]:
    """Re-render `out/results.{md,png}` from `out/results.json`; with `snapshot`, copy them into that folder."""
    path = Path(out) / "results.json"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist; run the benchmark first (python -m benchmarks ...)")
    results = json.loads(path.read_text(encoding="utf-8"))
    summarise(results)
    paths = write_all(results, Path(out))
    if snapshot is not None:
        snapshot.mkdir(parents=True, exist_ok=True)
        text = paths["md"].read_text(encoding="utf-8").replace("(results.png)", "(benchmark_results.png)")
        (snapshot / "benchmark_results.md").write_text(text, encoding="utf-8")
        shutil.copy(paths["png"], snapshot / "benchmark_results.png")
        paths = {"md": snapshot / "benchmark_results.md", "png": snapshot / "benchmark_results.png"}
    return paths


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
