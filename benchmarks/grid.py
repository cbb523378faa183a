# SPDX-License-Identifier: Apache-2.0
"""The benchmark grids: which models, tasks, regimes, sizes, seeds, learning-rate sweeps and presets a run uses.

Regimes (benchmark v2), all on the same experts and test prompts:

* `paper`: labelled replay rows for every task (the paper's setting);
* `few_labels`: the anchor's task labelled (`n_replay` rows), at most `n_labels` labelled rows per source task,
  plus `n_prompts` unlabeled prompts per source task (what a teacher can label);
* `seeds_only`: the same labelled rows and nothing else; a teacher makes its prompts with `synthesize: n_synth`;
* `noisy`: `few_labels` plus the task-irrelevant experts of `noise` in the source pool;
* `seeds_card` (on request): `seeds_only` with the labelled rows drawn as a model card shows examples, each answer
  kind of a task in turn (a relation found, `none`; each label);
* `seeds_phrasings` (on request): `seeds_card`, but a relation task's seeds are one row per phrasing of its
  sentences (7), to tell a skill the seeds do not show from one the transfer loses (`benchmarks.phrasings`).

Every trained method runs for the same `steps` optimiser steps (batch 1 x `accumulation`) and picks its learning
rate from its sweep (`sft_lrs` for methods that train the anchor adapter, `fusion_lrs` for the transfer nets) by
the average score on a dev split (`n_dev` rows per task, disjoint from train, replay, prompts and test).

`FULL` is the paper's scale (300 replay examples per task, the paper's fusion config with E=1024, three epochs); it
needs a GPU or a long night. `REDUCED` is what fits on a shared 2-core CPU in a few hours; `QUICK` runs the same code
path on tiny random models in about 3.5 minutes on one core (the test suite runs it). Every reduction is listed in
`Grid.reductions` and copied into `results.md`, so a number is never read without its scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal


# The anchor (target) expert's own task comes first; the source family gets one expert for each of the others.
DEFAULT_TASKS = ("ner_person", "ner_location", "relation_works_for", "relation_lives_in", "entity_typing", "sentiment")
# Task-irrelevant experts of the noisy pool: one unrelated task and three label-shuffled ones (same format, no
# signal), the kind of expert a practitioner pulls by mistake from a Hub search.
DEFAULT_NOISE = ("task:topic", "shuffled:ner_person", "shuffled:relation_lives_in", "shuffled:sentiment")
REGIMES = ("paper", "few_labels", "seeds_only", "noisy")  # what a grid runs by default
ALL_REGIMES = (*REGIMES, "seeds_card", "seeds_phrasings")  # on request (`--regimes seeds_card`)
ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Grid:
    """One benchmark grid. Frozen; `with_(...)` returns a modified copy."""

    name: Literal["full", "reduced", "quick"]
    target: str  # model key: "smollm2" (real) or "tiny-llama" (fixture)
    source: str  # "gemma3" or "tiny-gemma"
    tasks: tuple[str, ...] = DEFAULT_TASKS
    noise: tuple[str, ...] = DEFAULT_NOISE
    vocab: Literal["tiny", "full"] = "full"
    n_train: int = 600  # expert training rows per task
    n_replay: int = 300  # replay rows per task (paper: 300)
    n_test: int = 100  # held-out test rows per task
    split_seed: int = 0
    # LoRA experts (r=8, all seven projections), trained once per (model, task, recipe) and cached.
    rank: int = 8
    lora_alpha: int = 16
    expert_steps: int = 150
    noise_steps: int = 150
    expert_batch: int = 8
    expert_lr: float = 1e-3
    max_length: int = 128
    # Regimes (see the module docstring)
    regimes: tuple[str, ...] = REGIMES
    n_dev: int = 50  # dev rows per task, for the learning-rate choice only
    n_labels: int = 4  # labelled rows per source task in few_labels / seeds_only / noisy
    n_prompts: int = 48  # unlabeled prompts per source task in few_labels / noisy
    n_synth: int = 48  # prompts a teacher synthesizes per source task in seeds_only
    teacher_max_new_tokens: int = 24  # the synthetic answers are short
    teacher_batch_size: int = 8
    # Methods
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 3  # paper epochs over the paper regime's replay set: this fixes `steps` when it is None
    steps: int | None = None  # optimiser steps of every trained method in every regime (None: from `epochs`)
    accumulation: int = 8  # paper: batch 1 x accumulation 8
    sft_lr: float = 1e-3  # the v1 SFT learning rate (the performance section still uses it)
    sft_lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)  # sweep of methods that train the anchor adapter itself
    fusion_lrs: tuple[float, ...] = (5e-5, 2.5e-4, 1e-3)  # sweep of the transfer nets (paper: 5e-5)
    sweep_extend: int = 2  # extra lrs tried outwards while the best one is at an edge of the sweep
    tune_placebos: bool = True  # placebo controls get their own sweep (else: the lr of the method they control)
    improved_regimes: tuple[str, ...] = ("paper", "few_labels")  # where the improved preset is run too
    # Where the teacher switches (`methods.DISTILL`: one method per switch a benchmark version measured) run; None:
    # every regime with a teacher. The core teacher methods and their placebos run in every such regime either way.
    distill_regimes: tuple[str, ...] | None = None
    loso_regime: str | None = "few_labels"  # where the leave-one-source-out refit runs (None: nowhere)
    embed_dim: int = 1024  # E of the faithful preset (paper 1024)
    num_heads: int = 8
    num_projections: int = 2048
    max_positions: int = 4096
    block_size: int | Literal["auto"] = "auto"  # next power of two >= the widest hidden size: 1024 here
    fusion_lr: float = 5e-5
    merge_density: float = 0.5  # TIES / DARE keep half of each delta
    placebo_in_noisy: bool = True
    # Evaluation
    max_new_tokens: int = 24
    eval_batch: int = 32
    # Performance section
    perf: bool = True
    perf_examples: int = 32
    perf_embed_dims: tuple[int, ...] = (256, 1024)
    scaling_sources: tuple[int, ...] = (1, 2, 4)
    scaling_ranks: tuple[int, ...] = (4, 8, 16)
    scaling_blocks: tuple[int, ...] = (256, 1024, 4096)
    scaling_examples: int = 8
    reductions: tuple[str, ...] = field(default=())

    def with_(self, **changes: Any) -> Grid:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Grid(name="full", target="smollm2", source="gemma3")

REDUCED = FULL.with_(
    name="reduced", n_train=240, n_replay=16, n_test=32, expert_steps=30, noise_steps=15, epochs=2, embed_dim=256,
    num_projections=512, perf_examples=48, scaling_examples=8, n_dev=16, tune_placebos=False, accumulation=4,
    steps=72,
    improved_regimes=(),
    reductions=(
        "regimes: 16 labelled anchor-task rows, 4 labelled rows per source task, 48 unlabeled prompts (few_labels, "
        "noisy) or 48 synthesized prompts (seeds_only) per source task; dev split 16 rows per task",
        "learning rates: each sweep (3 values) runs on seed 0 only; seeds 1 and 2 run at the chosen lr; the "
        "placebo controls use the lr chosen for the method they control (same hyper-parameters, other content)",
        "no improved preset: with the fast path now the default for every HeteroFusion run, it differs from the "
        "faithful configuration only by `position_mode: per_source`, which the v1 benchmark measured; its runs went "
        "to the task-balanced teacher variants instead",
        "replay set: 16 examples per task (96 in all) instead of 150-300: every replay example costs a forward and "
        "backward pass of the target plus (amortize off) a transfer-net pass, ~2 s per example per epoch for the "
        "faithful preset on one CPU core, and the grid has 18 fusion runs",
        "every trained method: 72 optimiser steps of batch 1 x accumulation 4 (288 examples: about one epoch of "
        "the few-label regime's 36 labelled + 240 teacher rows, 3 epochs of the paper regime's 96 replay rows, 8 of "
        "the 36 labelled few-label rows) instead of 3 epochs of 300 rows per task at accumulation 8; the first "
        "snapshot ran 24 steps, under half an epoch once the teacher rows joined, which diluted every row",
        "HeteroFusion runs take the library's default fast path (`amortize_nets: true`: the nets once per "
        "accumulation window; same CE gradient, one RDM draw per window; tests/method/test_fast_path.py), ~3.5x faster "
        "per step than the reference path on this CPU",
        "faithful preset: E=256 instead of 1024 and K=512 RDM projections instead of 2048; the net pass at E=1024 "
        "costs ~4x more and dominates the step on CPU (see the performance section for E=1024 timings)",
        "experts: 30 optimiser steps of batch 8 (240 rows, one epoch) per task, 15 for the noisy experts",
        "test set: 32 held-out prompts per task (scores move in steps of ~3 points; read spreads accordingly)",
        "block size `auto` = 1024 (next power of two >= 640, the widest hidden size), not the paper's 4096",
    ),
)

QUICK = FULL.with_(
    name="quick", target="tiny-llama", source="tiny-gemma", vocab="tiny",
    tasks=("ner_person", "ner_location", "sentiment"), noise=("task:topic", "shuffled:ner_person"), n_train=16, n_replay=2, n_test=2,
    expert_steps=2, noise_steps=1, expert_batch=4, max_length=128, seeds=(0, 1), epochs=1, accumulation=2,
    n_dev=2, n_labels=1, n_prompts=2, n_synth=2, teacher_max_new_tokens=6, sft_lrs=(1e-3, 3e-3),
    fusion_lrs=(5e-5, 1e-3), tune_placebos=False, improved_regimes=("paper",), sweep_extend=1,
    distill_regimes=("seeds_only",),
    embed_dim=16, num_heads=2, num_projections=16, max_positions=64, max_new_tokens=6, eval_batch=16,
    perf_examples=2, perf_embed_dims=(16,), scaling_sources=(1,), scaling_ranks=(4,), scaling_blocks=(32,),
    scaling_examples=2,
    reductions=("quick smoke run on tiny random models (pipeline check only: the numbers mean nothing); three "
                "tasks, two noisy experts, sweeps of two learning rates, two seeds; the teacher switches run in seeds_only only "
                "(where each one has synthesized prompts and labels to act on)",),
)

def with_steps(grid: Grid, steps: int) -> Grid:
    """`grid` with every trained method at `steps` optimiser steps; the reductions' budget line says so."""
    line = (f"every trained method: {steps} optimiser steps of batch 1 x accumulation {grid.accumulation} "
            f"({steps * grid.accumulation} examples; set by --steps, the grid's own budget is {grid.steps})")
    reductions = tuple(line if r.startswith("every trained method:") else r for r in grid.reductions)
    return grid.with_(steps=steps, reductions=reductions)


GRIDS: dict[str, Grid] = {"full": FULL, "reduced": REDUCED, "quick": QUICK}
