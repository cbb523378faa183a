# SPDX-License-Identifier: Apache-2.0
"""The benchmark's methods: models -> splits -> experts -> one run of a method in a regime at an lr and seed.

Methods (named in `methods.py`), all scored on the same held-out test prompts of every task:

* `anchor`: the target's own adapter only;
* `task_arithmetic`, `ties`, `dare_ties`: weight-space transfer of the aligned sources (`baselines.py`);
* `sft`: data-only control, the anchor adapter trained directly on the regime's labelled rows;
* `sft_teacher`: the same on the labelled rows plus the teacher's rows (`trainer: lora`, `teacher: sources`):
  it tells whether the transfer nets add anything over the teacher's labels themselves;
* `hf`: HeteroFusion, paper configuration (grid scale; the library's default fast path, `amortize_nets: true`),
  no teacher; `hf_improved`: plus `per_source` positions;
* `hf_teacher`: HeteroFusion with `teacher: sources`; `hf_teacher_placebo`: the same teacher bases with their
  adapters' B zeroed (`teacher_placebo: true`); `hf_placebo`: norm-matched random sources, no teacher;
* `*_bal`: the three teacher methods with `replay_balance: task` (each task an equal share of every epoch).

Every trained method runs `steps` optimiser steps of batch 1 x accumulation with the same AdamW, schedule and
warmup rule, and no gradient clipping: every one of them is one `FusionConfig` through `pipeline.fuse`, the
data-only controls with `trainer: lora` (the anchor's factors are the trained parameters, in the same training
loop; `FusionConfig` has no clipping key and the loop does not clip). `tuning.py` decides which runs to make and
caches them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hf_heterofusion.config import FusionConfig
from hf_heterofusion.data.replay import ReplayExample
from hf_heterofusion.examples import experts
from hf_heterofusion.pipeline import fuse

from . import baselines
from .features import DISTILL_MISSING, LORA_MISSING, TEACHER_MISSING, Features, detect
from .grid import Grid
from .methods import (
    BALANCED,
    DISTILL,
    MERGES,
    PLACEBO_TEACHER,
    SFT_LIKE,
    SOURCE_SWITCHES,
    TEACHER_METHODS,
)
from .models import model_facts, resolve_model
from .regimes import RegimeData, build_regime
from .zoo import TaskSplits, ensure_expert, make_splits, noise_rows


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
    replay_path: Path | None = None  # the paper regime's labelled rows (the performance section uses them)
    regimes: dict[str, RegimeData] = field(default_factory=dict)
    features: Features = field(default_factory=detect)
    results: dict[str, Any] = field(default_factory=dict)
    cached_only: bool = False  # read runs back from the cache, never compute one (`--cached-only`)

    @property
    def eval_tasks(self) -> tuple[str, ...]:
        return self.grid.tasks

    def sources(self, pool: str) -> list[Path]:
        paths = [self.task_experts[t] for t in self.grid.tasks[1:]]
        return paths + list(self.noise_experts.values()) if pool == "noisy" else paths


def methods_for(regime: str, grid: Grid) -> list[str]:
    """The methods of a regime, in run order (teacher methods only where a teacher has prompts)."""
    out = ["anchor", *MERGES, "sft", "hf", "hf_placebo"]
    if regime in grid.improved_regimes:
        out.append("hf_improved")
    if regime != "paper":
        switches_here = grid.distill_regimes is None or regime in grid.distill_regimes
        out += [m for m in TEACHER_METHODS if switches_here or m not in DISTILL]
    return out


def unavailable(bench: Bench, method: str) -> str | None:
    """Why `method` cannot run in this checkout, or None."""
    f = bench.features
    if method in TEACHER_METHODS and not f.teacher:
        return TEACHER_MISSING
    if method in DISTILL and not f.distill:
        return DISTILL_MISSING
    if method in SFT_LIKE and not f.lora_trainer:
        return LORA_MISSING
    return None


# ------------------------------------------------------------------------------------------------------ setup


def add_setup_args(parser) -> None:
    """`--threads`, `--out`, `--cache`: what the one-off benchmark tools pass to `setup`."""
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench_results"))
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "hf_heterofusion" / "bench")


def setup(grid: Grid, out: Path, cache: Path) -> Bench:
    """Models, splits, regime files and every expert (trained once, then cached)."""
    bench = Bench(grid, out, cache)
    started = time.perf_counter()
    bench.target_dir = resolve_model(grid.target, cache)
    bench.source_dir = resolve_model(grid.source, cache)
    bench.results["models"] = {"target": model_facts(grid.target, bench.target_dir),
                               "source": model_facts(grid.source, bench.source_dir)}
    bench.results["setup_seconds"] = {"models": round(time.perf_counter() - started, 1)}
    bench.splits = make_splits(grid)
    for name in grid.regimes:
        bench.regimes[name] = build_regime(grid, bench.splits, name, out / "work")
    bench.replay_path = build_regime(grid, bench.splits, "paper", out / "work").replay

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


def score_model(bench: Bench, model: torch.nn.Module, tokenizer: Any, tasks: Sequence[str] | None = None,
                split: str = "test") -> dict:
    """Greedy generation + exact scoring (F1 or accuracy, 0..100) on each task's `test` (or `dev`) prompts."""
    grid = bench.grid
    scores = {}
    for task in tasks or bench.eval_tasks:
        s = bench.splits[task]
        scores[task] = experts.evaluate_model(model, tokenizer, s.task, getattr(s, split),
                                              max_new_tokens=grid.max_new_tokens, batch_size=grid.eval_batch)
    return scores


def _scores(bench: Bench, model, tok, *, dev: bool) -> dict:
    record = {"scores": score_model(bench, model, tok)}
    if dev:
        record["dev"] = score_model(bench, model, tok, split="dev")
    return record


def reference_scores(bench: Bench) -> dict:
    """Each expert on its own base and task: what a fusion could at best carry over (the efficiency's divisor)."""
    rows = {}
    for task in bench.grid.tasks:
        base = bench.target_dir if task == bench.grid.tasks[0] else bench.source_dir
        adapter = bench.anchor if task == bench.grid.tasks[0] else bench.task_experts[task]
        model, tok = experts.load_model(base, adapter)
        rows[task] = score_model(bench, model, tok, [task])[task]
        del model
    return {"scores": rows}


# ---------------------------------------------------------------------------------------------------- methods


def steps(grid: Grid) -> int:
    """Optimiser steps of every trained run: `grid.steps`, or `epochs` over the paper regime's replay rows."""
    if grid.steps is not None:
        return grid.steps
    n = len(grid.tasks) * grid.n_replay
    return -(-n // grid.accumulation) * grid.epochs


def fusion_config(bench: Bench, regime: RegimeData, seed: int, lr: float, *, method: str,
                  drop_source: str | None = None) -> FusionConfig:
    """The one config every trained method is built from (only the method's switches differ)."""
    g, f = bench.grid, bench.features
    teacher = method in TEACHER_METHODS
    sources: list[dict] = []
    for task in g.tasks[1:]:
        if task == drop_source:
            continue
        spec: dict = {"adapter": str(bench.task_experts[task])}
        if teacher:
            spec.update(base_model=str(bench.source_dir), name=task, prompts=str(regime.prompts[task]),
                        synthesize=regime.synthesize, **SOURCE_SWITCHES.get(method, {}))
        sources.append(spec)
    if regime.pool == "noisy":
        sources += [{"adapter": str(p)} for p in bench.noise_experts.values()]
    n = steps(g)
    extra: dict[str, Any] = {}
    if f.warmup_start:
        extra.update(warmup_start="first_step")
    else:
        # Without the switch, int(0.05 * steps) = 1 warmup step would run at lr 0; no warmup is the same rule
        # for every method and wastes no step.
        extra.update(warmup_ratio=0.0)
    if teacher:
        extra.update(teacher="sources", teacher_placebo=method in PLACEBO_TEACHER,
                     teacher_max_new_tokens=g.teacher_max_new_tokens, teacher_batch_size=g.teacher_batch_size,
                     # Every answer is kept: the placebo teacher (a base without the skill) never stops within the
                     # token budget, and filtering its rows away would turn the control into "no teacher".
                     teacher_drop_truncated=False, teacher_repeat_ngram=0)
    # Explicit for every method: `teacher: sources` has its own defaults (trainer: lora, replay_balance: task,
    # max_grad_norm), and a method's name must mean the same run whatever those defaults become.
    extra.update(trainer="lora" if method in SFT_LIKE else "transfer_nets",
                 replay_balance="task" if method in BALANCED else "none", max_grad_norm=None)
    extra.update(DISTILL.get(method, {}))
    improved = method == "hf_improved"
    return FusionConfig(
        target_model=str(bench.target_dir), target_adapter=str(bench.anchor), sources=sources,
        replay=str(regime.replay), block_size=g.block_size, embed_dim=g.embed_dim, num_heads=g.num_heads,
        max_position_embeddings=g.max_positions, num_projections=g.num_projections, lr=lr,
        epochs=n, max_steps=n, batch_size=1, gradient_accumulation_steps=g.accumulation, max_length=g.max_length,
        seed=seed, checkpoint_every=0, position_mode="per_source" if improved else "concat",
        **extra,
    )


def run_anchor(bench: Bench, regime: RegimeData, lr: float | None, seed: int, **_: Any) -> dict:
    model, tok = experts.load_model(bench.target_dir, bench.anchor)
    return _scores(bench, model, tok, dev=False)


def _merge_runner(method: str) -> Callable[..., dict]:
    def run(bench: Bench, regime: RegimeData, lr: float | None, seed: int, **_: Any) -> dict:
        started = time.perf_counter()
        units = baselines.load_aligned(bench.anchor, bench.sources(regime.pool))
        model, tok = experts.load_model(bench.target_dir)
        n = baselines.apply_merge(model, units, method, density=bench.grid.merge_density, seed=seed)
        seconds = time.perf_counter() - started
        return dict(_scores(bench, model, tok, dev=False), merge_seconds=seconds, units=n)

    return run


def _work_dir(bench: Bench, regime: RegimeData, method: str, lr: float, seed: int, tag: str = "",
              key: str = "") -> Path:
    """Where a run writes its adapter: named by the run's cache key too, so two benchmark processes with other
    grids (say `--steps 216` next to the default) never overwrite each other's files."""
    return bench.out / "work" / "fused" / regime.name / f"{method}{tag}_lr{lr:g}" / f"seed{seed}{key and '-' + key[:8]}"


def _fusion_runner(method: str) -> Callable[..., dict]:
    def run(bench: Bench, regime: RegimeData, lr: float, seed: int, drop_source: str | None = None, *,
            dev: bool = True, key: str = "") -> dict:
        cfg = fusion_config(bench, regime, seed, lr, method=method, drop_source=drop_source)
        if method == "hf_placebo":
            placebos = []
            for i, spec in enumerate(cfg.sources):
                path = baselines.make_placebo(Path(spec.adapter), bench.out / "work" / "placebo" / f"seed{seed}" /
                                              f"src{i}_{Path(spec.adapter).name}", seed=1000 * seed + i)
                placebos.append(spec.model_copy(update={"adapter": str(path)}))
            cfg = cfg.model_copy(update={"sources": tuple(placebos)})
        out = _work_dir(bench, regime, method, lr, seed, tag=f"_minus_{drop_source}" if drop_source else "", key=key)
        report = fuse(cfg, out, overwrite=True, show_progress=False, held_out=_held_out(bench)).report
        if method in TEACHER_METHODS and not (out / "teacher_replay.jsonl").is_file():
            raise RuntimeError(f"{method}: the pipeline wrote no teacher_replay.jsonl; is the teacher stage on?")
        model, tok = experts.load_model(bench.target_dir, out)
        training = report.training
        record = {
            **_scores(bench, model, tok, dev=dev), "fit_seconds": report.timings.get("fit_s"),
            "load_seconds": report.timings.get("load_s"), "steps": training.optimizer_steps,
            "final_loss": training.final_loss, "first_loss": training.losses[0]["loss"] if training.losses else None,
            "replay_examples": training.replay_examples,
            "source_contribution": [_num(s.contribution) for s in report.sources],
            "ablation": [s.ablation for s in report.sources],
        }
        if report.teacher is not None:
            record["teacher"] = dict(report.teacher)
        if method in SFT_LIKE:
            record["trainer"] = "pipeline trainer: lora"
        return record

    return run


def _held_out(bench: Bench) -> list[ReplayExample]:
    """The dev rows, passed as `fuse(held_out=...)`: where the fusion report measures its per-source ablation
    (never trained on; the lr choice reads the same rows' scores, not their losses)."""
    return [ReplayExample(r["prompt"], r["response"], task=r["task"])
            for t in bench.grid.tasks for r in bench.splits[t].dev]


def _num(value: Any) -> float | None:
    return round(float(value), 4) if isinstance(value, (int, float)) else None


RUNNERS: dict[str, Callable[..., dict]] = {
    "reference": lambda bench, regime, lr, seed, **_: reference_scores(bench),
    "anchor": run_anchor,
    **{m: _merge_runner(m) for m in MERGES},
    **{m: _fusion_runner(m) for m in ("sft", "hf", "hf_improved", "hf_placebo", *TEACHER_METHODS)},
}

