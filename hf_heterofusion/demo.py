# SPDX-License-Identifier: Apache-2.0
"""`hf-heterofusion demo`: the whole method on a laptop CPU, offline, in a few minutes.

1. Build three tiny models of different families (Llama target; Qwen2 and Mistral sources: different depth,
   width, KV heads and FFN width) and pre-train each briefly on a synthetic corpus so they are not random.
2. Train one LoRA expert per model on its own synthetic task (target: person NER; sources: topic and sentiment).
3. Fuse the two source experts into the target's adapter with HeteroFusion on a small replay set.
4. Score target-only vs fused on every task (exact-match scoring) and print the table.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import experts, synthetic
from .config import FusionConfig
from .pipeline import fuse
from .testing.factories import make_tiny_model


@dataclass(frozen=True)
class DemoSettings:
    pretrain_steps: int = 300
    expert_steps: int = 200
    n_train: int = 380
    n_replay: int = 48  # per task
    n_test: int = 60
    fusion_epochs: int = 2


QUICK = DemoSettings(pretrain_steps=20, expert_steps=10, n_train=40, n_replay=6, n_test=8, fusion_epochs=1)
ROLES = (("llama", "ner_person"), ("qwen2", "topic"), ("mistral", "sentiment"))  # target first


def demo_fusion_config(target_model: Path, target_adapter: Path, sources: list[Path], replay: Path,
                       epochs: int) -> FusionConfig:
    """The demo preset: paper defaults scaled to tiny models (block size to width, E=64, a faster lr)."""
    return FusionConfig(
        target_model=str(target_model), target_adapter=str(target_adapter),
        sources=[str(s) for s in sources], replay=str(replay),
        block_size="auto", embed_dim=64, num_heads=4, max_position_embeddings=64, num_projections=128,
        lr=3e-3, epochs=epochs, gradient_accumulation_steps=4, max_length=96, seed=0, checkpoint_every=0,
    )


def run_demo(out_dir: str | Path = "out/demo", *, overwrite: bool = True, quick: bool = False) -> dict:
    """Run the demo and print a score table; returns the measured scores."""
    s = QUICK if quick else DemoSettings()
    # The demo's models are tiny: thousands of sub-millisecond ops, where OpenMP's per-op thread barriers cost
    # more than they save (and collapse on a busy machine). One thread is faster here.
    torch.set_num_threads(1)
    root = Path(out_dir)
    work = root / "work"
    started = time.perf_counter()
    tasks = {name: synthetic.get_task(name, vocab="tiny") for _, name in ROLES}
    splits = {name: synthetic.make_splits(task, 0, s.n_train, s.n_replay, s.n_test) for name, task in tasks.items()}
    corpus = synthetic.make_corpus(0, 2000 if not quick else 200, vocab="tiny")

    print(f"[1/4] building and pre-training tiny {', '.join(f for f, _ in ROLES)} models ...")
    bases, adapters = {}, {}
    for i, (family, _) in enumerate(ROLES):
        bases[family] = make_tiny_model(family, work / "models" / family, seed=i)
        experts.train_base_lm(bases[family], corpus, steps=s.pretrain_steps, lr=3e-3, seed=i)
    print("[2/4] training one LoRA expert per model on its own task ...")
    for i, (family, task) in enumerate(ROLES):
        adapters[family] = experts.train_lora_expert(
            bases[family], splits[task][0], work / "experts" / f"{family}-{task}", r=8, lora_alpha=16,
            steps=s.expert_steps, epochs=None, lr=1e-2, batch_size=16, max_length=96, seed=i)
    replay = synthetic.write_jsonl([row for name in tasks for row in splits[name][1]], work / "replay.jsonl")

    print("[3/4] fusing the Qwen2 and Mistral experts into the Llama adapter (HeteroFusion) ...")
    target_family = ROLES[0][0]
    cfg = demo_fusion_config(bases[target_family], adapters[target_family],
                             [adapters[f] for f, _ in ROLES[1:]], replay, s.fusion_epochs)
    fused_result = fuse(cfg, root / "fused", overwrite=overwrite, show_progress=False)
    fused = fused_result.out_dir
    # The data-only control: continue the anchor adapter on the same replay set for the same optimiser steps.
    # Fusion is worth its cost only where it beats this.
    replay_rows = [row for name in tasks for row in splits[name][1]]
    control = experts.train_lora_expert(
        bases[target_family], replay_rows, work / "replay-sft", init_adapter=adapters[target_family],
        steps=fused_result.report["training"]["optimizer_steps"], epochs=None, lr=cfg.lr,
        batch_size=cfg.gradient_accumulation_steps, max_length=cfg.max_length, seed=0)

    print("[4/4] scoring target-only vs fused on every task ...")
    scores: dict[str, dict[str, float]] = {}
    for family, task in ROLES:
        test = splits[task][2]
        scores[task] = {
            "expert": experts.evaluate(bases[family], adapters[family], tasks[task], test),
            "target_only": experts.evaluate(bases[target_family], adapters[target_family], tasks[task], test),
            "replay_sft": experts.evaluate(bases[target_family], control, tasks[task], test),
            "fused": experts.evaluate(bases[target_family], fused, tasks[task], test),
        }
    elapsed = time.perf_counter() - started
    _print_table(scores, fused, elapsed)
    (root / "demo_scores.json").write_text(json.dumps({"scores": scores, "seconds": elapsed}, indent=2))
    return scores


def _print_table(scores: dict[str, dict[str, float]], fused: Path, elapsed: float) -> None:
    owner = {task: family for family, task in ROLES}
    print()
    print(f"{'task':<14}{'expert (own family)':>22}{'target only':>13}{'replay SFT':>12}{'fused':>8}")
    for task, row in scores.items():
        label = f"{row['expert']:.1f} ({owner[task]})"
        print(f"{task:<14}{label:>22}{row['target_only']:>13.1f}{row['replay_sft']:>12.1f}{row['fused']:>8.1f}")
    avg = {k: sum(r[k] for r in scores.values()) / len(scores) for k in ("target_only", "replay_sft", "fused")}
    print(f"{'average':<14}{'':>22}{avg['target_only']:>13.1f}{avg['replay_sft']:>12.1f}{avg['fused']:>8.1f}")
    print("\nscores: F1 / accuracy (0-100) on held-out test prompts, one seed. 'replay SFT' = the anchor adapter "
          "trained further on the same replay set for the same steps (the data-only control).")
    print(f"wall time {elapsed:.0f} s")
    print(f"fused adapter, report and card: {fused}")
