# SPDX-License-Identifier: Apache-2.0
"""Benchmark data and LoRA experts: seeded task splits, noisy-expert data, and experts cached by content hash.

Every expert is a PEFT LoRA (r=8 by default, all seven projections) trained with `experts.train_lora_expert` on
plain `prompt`/`response` rows (no chat template: both families then see byte-identical text, and the Gemma
checkpoint is a base model without an instruct template). An expert's folder name is the hash of everything that
determines it (base checkpoint, rows, recipe), so a rerun, or another grid that needs the same expert, reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_heterofusion.examples import experts, synthetic

from .grid import ALL_PROJECTIONS, Grid


logger = logging.getLogger(__name__)

EXPERT_RECIPE = 2  # bump when the training recipe changes in a way the hash cannot see (2: schedule.py warmup)


@dataclass(frozen=True)
class TaskSplits:
    """Disjoint rows of one task (`{"prompt", "response", "task"}` dicts; do not mutate).

    `train` trains the experts, `replay` is the labelled replay pool, `test` scores every method, `dev` picks the
    learning rates, `pool` holds the prompts given unlabeled to a teacher (their responses are never used).
    """

    task: synthetic.Task
    train: list[dict[str, str]]
    replay: list[dict[str, str]]
    test: list[dict[str, str]]
    dev: list[dict[str, str]] = field(default_factory=list)
    pool: list[dict[str, str]] = field(default_factory=list)


def make_splits(grid: Grid) -> dict[str, TaskSplits]:
    """The benchmark's splits: one fixed draw per task, shared by every method and seed.

    Dev and pool rows are drawn after the test rows from the same seeded stream, so train, replay and test are
    the rows benchmark v1 drew (its cached experts stay valid) and all five splits are disjoint.
    """
    out = {}
    names = list(grid.tasks) + [spec.split(":", 1)[1] for spec in grid.noise if spec.startswith("task:")]
    for name in dict.fromkeys(names):
        task = synthetic.get_task(name, vocab=grid.vocab)
        extra = grid.n_test + grid.n_dev + grid.n_prompts
        train, replay, rest = synthetic.make_splits(task, grid.split_seed, grid.n_train, grid.n_replay, extra)
        test, dev, pool = rest[:grid.n_test], rest[grid.n_test:grid.n_test + grid.n_dev], rest[grid.n_test + grid.n_dev:]
        out[name] = TaskSplits(task, train, replay, test, dev, pool)
    return out


def noise_rows(spec: str, splits: Mapping[str, TaskSplits], seed: int = 0) -> list[dict[str, str]]:
    """Training rows of a task-irrelevant expert.

    `task:NAME` is an unrelated task's training data; `shuffled:NAME` is NAME's training data with the responses
    permuted across rows, so the expert learns the answer format but no input-output signal.
    """
    kind, _, name = spec.partition(":")
    rows = splits[name].train
    if kind == "task":
        return list(rows)
    if kind == "shuffled":
        responses = [r["response"] for r in rows]
        random.Random(f"shuffle:{name}:{seed}").shuffle(responses)
        return [dict(r, response=resp, task=f"shuffled_{name}") for r, resp in zip(rows, responses)]
    raise ValueError(f"unknown noise spec `{spec}`; use `task:NAME` or `shuffled:NAME`")


def base_fingerprint(base_dir: Path) -> str:
    """Cheap identity of a checkpoint: its config, its conversion record and the weight file sizes."""
    parts = []
    for name in sorted(os.listdir(base_dir)):
        path = base_dir / name
        if name.endswith(".json") and path.is_file():
            parts.append(f"{name}:{hashlib.sha256(path.read_bytes()).hexdigest()}")
        elif name.endswith(".safetensors"):
            parts.append(f"{name}:{path.stat().st_size}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def ensure_expert(base_dir: Path, rows: Sequence[Mapping[str, Any]], cache: Path, *, grid: Grid, steps: int,
                  seed: int = 0, label: str = "") -> tuple[Path, dict]:
    """A trained LoRA expert for `rows` on `base_dir`, trained now or taken from the cache.

    Returns the adapter folder and its record (`label`, training seconds, whether it came from the cache).
    """
    recipe = {
        "recipe": EXPERT_RECIPE, "base": base_fingerprint(base_dir), "r": grid.rank, "lora_alpha": grid.lora_alpha,
        "modules": ALL_PROJECTIONS, "steps": steps, "batch": grid.expert_batch, "lr": grid.expert_lr,
        "max_length": grid.max_length, "seed": seed,
        "rows": hashlib.sha256(json.dumps(list(rows), sort_keys=True).encode()).hexdigest(),
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:20]
    out = cache / "experts" / key
    record_path = out / "bench_expert.json"
    if record_path.is_file():
        return out, dict(json.loads(record_path.read_text(encoding="utf-8")), cached=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f".{key}-", dir=out.parent) as tmp:
        stage = Path(tmp) / "adapter"
        experts.train_lora_expert(
            base_dir, rows, stage, r=grid.rank, lora_alpha=grid.lora_alpha, target_modules=list(ALL_PROJECTIONS),
            steps=steps, epochs=None, lr=grid.expert_lr, batch_size=grid.expert_batch, max_length=grid.max_length,
            seed=seed,
        )
        record = {"label": label, "key": key, "base": str(base_dir), "train_seconds": time.perf_counter() - started,
                  "recipe": recipe}
        (stage / "bench_expert.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)  # the record file marks a complete expert
    logger.info("trained expert %s in %.0f s", label, record["train_seconds"])
    return out, dict(record, cached=False)
