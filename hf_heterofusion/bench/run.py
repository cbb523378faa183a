# SPDX-License-Identifier: Apache-2.0
"""The benchmark run: models -> splits -> experts -> every method x setting x seed -> scores -> report.

Settings (issue 6):

* `single` (single source family): the target (SmolLM2) keeps its own expert for the first task as the anchor;
  the source family (Gemma-3) brings one expert for each other task;
* `noisy`: `single` plus task-irrelevant source experts (an unrelated task and label-shuffled tasks).

Methods, all scored on the same held-out test prompts of every task:

* `anchor`: the target's own adapter only; `sft`: plain LoRA SFT of the anchor on the same replay set, for the same
  optimiser steps (the data-only control a fusion must beat; no source is used, so it is shared by both settings);
* `naive`, `task_arithmetic`, `ties`, `dare_ties`: weight-space transfer of the aligned sources (`baselines.py`);
* `placebo`: HeteroFusion (improved preset) with norm-matched random sources of the same shapes;
* `hf_faithful`: HeteroFusion with the paper's configuration (scaled where the grid says so);
* `hf_improved`: the same plus `position_mode: per_source` and `amortize_nets: true`.

Each (setting, method, seed) result is stored under `<out>/runs/` with a fingerprint of everything it depends on,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hf_heterofusion import experts, synthetic
from hf_heterofusion.config import FusionConfig

from . import baselines
from .grid import Grid
from .models import model_facts, resolve_model
from .zoo import TaskSplits, ensure_expert, make_splits, noise_rows


logger = logging.getLogger(__name__)

SETTINGS = ("single", "noisy")
SEEDED = ("sft", "placebo", "dare_ties", "hf_faithful", "hf_improved")
METHOD_LABELS = {
    "anchor": "target anchor only",
    "sft": "LoRA SFT of the anchor on the replay set (data-only control)",
    "naive": "naive transfer (tail-aligned, cropped/padded factors added)",
    "task_arithmetic": "Task Arithmetic (mergekit kernel, aligned deltas)",
    "ties": "TIES (mergekit kernel, density 0.5)",
    "dare_ties": "DARE-TIES (mergekit kernel, density 0.5)",
    "placebo": "HeteroFusion with placebo sources (improved preset)",
    "hf_faithful": "HeteroFusion, paper config",
    "hf_improved": "HeteroFusion, per_source positions + amortize_nets",
}
METHODS = tuple(METHOD_LABELS)


@dataclass
class Bench:
    """The state of one run (mutable on purpose: it accumulates results)."""

    grid: Grid
    out: Path
    cache: Path
    splits: dict[str, TaskSplits] = field(default_factory=dict)
    target_dir: Path | None = None
    source_dir: Path | None = None
    anchor: Path | None = None
    task_experts: dict[str, Path] = field(default_factory=dict)  # source experts by task
    noise_experts: dict[str, Path] = field(default_factory=dict)
    replay_path: Path | None = None
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def eval_tasks(self) -> tuple[str, ...]:
        return self.grid.tasks

    def sources(self, setting: str) -> list[Path]:
        paths = [self.task_experts[t] for t in self.grid.tasks[1:]]
        return paths + list(self.noise_experts.values()) if setting == "noisy" else paths


# ------------------------------------------------------------------------------------------------------ setup


def setup(grid: Grid, out: Path, cache: Path) -> Bench:
    """Models, splits, replay file and every expert (trained once, then cached)."""
    bench = Bench(grid, out, cache)
    started = time.perf_counter()
    bench.target_dir = resolve_model(grid.target, cache)
    bench.source_dir = resolve_model(grid.source, cache)
    bench.results["models"] = {"target": model_facts(grid.target, bench.target_dir),
                               "source": model_facts(grid.source, bench.source_dir)}
    bench.results["setup_seconds"] = {"models": round(time.perf_counter() - started, 1)}
    bench.splits = make_splits(grid)
    replay_rows = [row for t in grid.tasks for row in bench.splits[t].replay]
    bench.replay_path = synthetic.write_jsonl(replay_rows, out / "work" / "replay.jsonl")

    records = []
    t0 = time.perf_counter()
    first = grid.tasks[0]
    bench.anchor, rec = ensure_expert(bench.target_dir, bench.splits[first].train, cache, grid=grid,
                                      steps=grid.expert_steps, label=f"{grid.target}:{first}")
    records.append(dict(rec, model=grid.target, task=first, role="anchor"))
    for task in grid.tasks[1:]:
        path, rec = ensure_expert(bench.source_dir, bench.splits[task].train, cache, grid=grid,
                                  steps=grid.expert_steps, label=f"{grid.source}:{task}")
        bench.task_experts[task] = path
        records.append(dict(rec, model=grid.source, task=task, role="source"))
    for spec in grid.noise:
        path, rec = ensure_expert(bench.source_dir, noise_rows(spec, bench.splits), cache, grid=grid,
                                  steps=grid.noise_steps, label=f"{grid.source}:{spec}")
        bench.noise_experts[spec] = path
        records.append(dict(rec, model=grid.source, task=spec, role="noise"))
    bench.results["setup_seconds"]["experts"] = round(time.perf_counter() - t0, 1)
    bench.results["experts"] = [{k: v for k, v in r.items() if k != "recipe"} for r in records]
    return bench


# ------------------------------------------------------------------------------------------------- evaluation


def score_model(bench: Bench, model: torch.nn.Module, tokenizer: Any, tasks: Sequence[str] | None = None) -> dict:
    """Greedy generation + exact scoring (F1 or accuracy, 0..100) on each task's test prompts."""
    grid = bench.grid
    scores = {}
    for task in tasks or bench.eval_tasks:
        split = bench.splits[task]
        scores[task] = experts.evaluate_model(model, tokenizer, split.task, split.test,
                                              max_new_tokens=grid.max_new_tokens, batch_size=grid.eval_batch)
    return scores


def score_reference_experts(bench: Bench) -> None:
    """Each expert on its own base and task: what a fusion could at best carry over."""
    cached = _load_run(bench, "reference", "experts", 0, _fingerprint(bench, "reference"))
    if cached is not None:
        bench.results["reference"] = cached
        return
    rows = {}
    for task in bench.grid.tasks:
        base = bench.target_dir if task == bench.grid.tasks[0] else bench.source_dir
        adapter = bench.anchor if task == bench.grid.tasks[0] else bench.task_experts[task]
        model, tok = experts.load_model(base, adapter)
        rows[task] = score_model(bench, model, tok, [task])[task]
        del model
    record = {"scores": rows, "avg": _mean(rows.values())}
    _save_run(bench, "reference", "experts", 0, _fingerprint(bench, "reference"), record)
    bench.results["reference"] = record


# ---------------------------------------------------------------------------------------------------- methods


def fusion_config(bench: Bench, sources: Sequence[Path], seed: int, *, preset: str) -> FusionConfig:
    """The HeteroFusion config of a preset: `faithful` (paper keys, grid scale) or `improved`."""
    g = bench.grid
    improved = preset == "improved"
    return FusionConfig(
        target_model=str(bench.target_dir), target_adapter=str(bench.anchor), sources=[str(s) for s in sources],
        replay=str(bench.replay_path), block_size=g.block_size, embed_dim=g.embed_dim, num_heads=g.num_heads,
        max_position_embeddings=g.max_positions, num_projections=g.num_projections, lr=g.fusion_lr,
        epochs=g.epochs, batch_size=1, gradient_accumulation_steps=g.accumulation, max_length=g.max_length,
        seed=seed, checkpoint_every=0, position_mode="per_source" if improved else "concat",
        amortize_nets=improved,
    )


def optimizer_steps(bench: Bench) -> int:
    """Optimiser steps of a fusion run (batch 1 x accumulation), which the SFT control gets too."""
    n = len(bench.grid.tasks) * bench.grid.n_replay
    return math.ceil(n / bench.grid.accumulation) * bench.grid.epochs


def run_anchor(bench: Bench, setting: str, seed: int) -> dict:
    model, tok = experts.load_model(bench.target_dir, bench.anchor)
    return {"scores": score_model(bench, model, tok)}


def run_sft(bench: Bench, setting: str, seed: int) -> dict:
    g = bench.grid
    rows = [row for t in g.tasks for row in bench.splits[t].replay]
    out = bench.out / "work" / "sft" / f"seed{seed}"
    started = time.perf_counter()
    experts.train_lora_expert(bench.target_dir, rows, out, init_adapter=bench.anchor, steps=optimizer_steps(bench),
                              epochs=None, lr=g.sft_lr, batch_size=g.accumulation, max_length=g.max_length, seed=seed)
    seconds = time.perf_counter() - started
    model, tok = experts.load_model(bench.target_dir, out)
    return {"scores": score_model(bench, model, tok), "fit_seconds": seconds, "steps": optimizer_steps(bench)}


def _merge_runner(method: str) -> Callable[[Bench, str, int], dict]:
    def run(bench: Bench, setting: str, seed: int) -> dict:
        started = time.perf_counter()
        units = baselines.load_aligned(bench.anchor, bench.sources(setting))
        model, tok = experts.load_model(bench.target_dir)
        n = baselines.apply_merge(model, units, method, density=bench.grid.merge_density, seed=seed)
        seconds = time.perf_counter() - started
        aligned = sum(1 for u in units if u.sources)
        return {"scores": score_model(bench, model, tok), "merge_seconds": seconds, "units": n,
                "aligned_units": aligned}

    return run


def _fusion_runner(preset: str, *, placebo: bool = False) -> Callable[[Bench, str, int], dict]:
    def run(bench: Bench, setting: str, seed: int) -> dict:
        from hf_heterofusion.pipeline import fuse

        sources = bench.sources(setting)
        if placebo:
            sources = [baselines.make_placebo(p, bench.out / "work" / "placebo" / f"seed{seed}" / f"src{i}",
                                              seed=1000 * seed + i) for i, p in enumerate(sources)]
        cfg = fusion_config(bench, sources, seed, preset=preset)
        out = bench.out / "work" / "fused" / setting / ("placebo" if placebo else preset) / f"seed{seed}"
        result = fuse(cfg, out, overwrite=True, show_progress=False)
        report = result.report
        model, tok = experts.load_model(bench.target_dir, out)
        contribution = [round(s["contribution"], 4) for s in report["sources"]]
        return {
            "scores": score_model(bench, model, tok), "fit_seconds": report["timings"]["fit_s"],
            "load_seconds": report["timings"]["load_s"], "steps": report["training"]["optimizer_steps"],
            "final_loss": report["training"]["final_loss"],
            "first_loss": report["training"]["losses"][0]["loss"] if report["training"]["losses"] else None,
            "hypernet_parameters": report["hypernet_parameters_total"], "block_size": report["block_size"],
            "source_contribution": contribution,
        }

    return run


RUNNERS: dict[str, Callable[[Bench, str, int], dict]] = {
    "anchor": run_anchor,
    "sft": run_sft,
    **{m: _merge_runner(m) for m in baselines.MERGE_METHODS},
    "placebo": _fusion_runner("improved", placebo=True),
    "hf_faithful": _fusion_runner("faithful"),
    "hf_improved": _fusion_runner("improved"),
}
SHARED = ("anchor", "sft")  # independent of the source pool: run once, reported in both settings


def plan(bench: Bench) -> list[tuple[str, str, int]]:
    """Every (setting, method, seed) to run, seed by seed: a run cut short still has every method once."""
    g = bench.grid
    jobs: list[tuple[str, str, int]] = [("shared", "anchor", g.seeds[0])]
    for seed in g.seeds:
        first = seed == g.seeds[0]
        jobs.append(("shared", "sft", seed))
        for setting in SETTINGS:
            jobs += [(setting, m, seed) for m in baselines.MERGE_METHODS if first or m in SEEDED]
        for method in ("hf_improved", "hf_faithful", "placebo"):
            for setting in SETTINGS:
                if method == "placebo" and setting == "noisy" and not g.placebo_in_noisy:
                    continue
                jobs.append((setting, method, seed))
    return jobs


def run_methods(bench: Bench, *, only: Sequence[str] | None = None, on_result: Callable[[], None] | None = None) -> None:
    """Run (or resume) every job of the plan and collect per-seed records in `bench.results["runs"]`."""
    runs: dict[str, dict[str, dict[str, dict]]] = bench.results.setdefault("runs", {})
    jobs = [j for j in plan(bench) if only is None or j[1] in only]
    for i, (setting, method, seed) in enumerate(jobs, 1):
        key = _fingerprint(bench, setting, method, seed)
        record = _load_run(bench, setting, method, seed, key)
        if record is None:
            logger.info("[%d/%d] %s / %s / seed %d", i, len(jobs), setting, method, seed)
            started = time.perf_counter()
            torch.manual_seed(seed)
            record = RUNNERS[method](bench, setting, seed)
            record["avg"] = _mean(record["scores"].values())
            record["wall_seconds"] = round(time.perf_counter() - started, 1)
            _save_run(bench, setting, method, seed, key, record)
            logger.info("    avg %.1f  %s  (%.0f s)", record["avg"], _fmt_scores(record["scores"]),
                        record["wall_seconds"])
        runs.setdefault(setting, {}).setdefault(method, {})[str(seed)] = record
        bench.results["tables"] = summarise(bench)
        if on_result is not None:
            on_result()


def summarise(bench: Bench) -> dict:
    """Per setting and method: mean and sample std over seeds of every task score and of the average."""
    runs = bench.results.get("runs", {})
    tables = {}
    for setting in SETTINGS:
        table = {}
        for method in METHODS:
            per_seed = (runs.get("shared") if method in SHARED else runs.get(setting, {})) or {}
            seeds = per_seed.get(method)
            if not seeds:
                continue
            records = list(seeds.values())
            cols = {t: [r["scores"][t] for r in records] for t in bench.eval_tasks}
            cols["avg"] = [r["avg"] for r in records]
            table[method] = {
                "n_seeds": len(records),
                "mean": {k: statistics.fmean(v) for k, v in cols.items()},
                "std": {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in cols.items()},
                "fit_seconds": _mean(r.get("fit_seconds", r.get("merge_seconds", 0.0)) for r in records),
            }
        tables[setting] = table
    return tables


# ------------------------------------------------------------------------------------------------- utilities


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _fmt_scores(scores: dict) -> str:
    return " ".join(f"{k}={v:.0f}" for k, v in scores.items())


def _fingerprint(bench: Bench, setting: str, method: str = "", seed: int = 0) -> str:
    """What a stored result depends on: the grid (minus report-only fields), the method, seed and expert files."""
    # Report-only fields and the seed list stay out: adding seeds or re-running the report reuses every result.
    skip = ("perf", "scaling", "reductions", "seeds", "placebo_in_noisy", "name")
    grid = {k: v for k, v in bench.grid.to_dict().items() if not k.startswith(skip)}
    experts_ = [str(bench.anchor), *map(str, bench.task_experts.values()), *map(str, bench.noise_experts.values())]
    data = {"grid": grid, "setting": setting, "method": method, "seed": seed, "experts": experts_, "v": 1}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _run_path(bench: Bench, setting: str, method: str, seed: int) -> Path:
    return bench.out / "runs" / setting / method / f"seed{seed}.json"


def _load_run(bench: Bench, setting: str, method: str, seed: int, key: str) -> dict | None:
    path = _run_path(bench, setting, method, seed)
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data["record"] if data.get("fingerprint") == key else None


def _save_run(bench: Bench, setting: str, method: str, seed: int, key: str, record: dict) -> None:
    path = _run_path(bench, setting, method, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fingerprint": key, "record": record}, indent=2) + "\n", encoding="utf-8")
