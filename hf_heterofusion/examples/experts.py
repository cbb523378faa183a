# SPDX-License-Identifier: Apache-2.0
"""Train and evaluate LoRA experts with PEFT: the inputs of a fusion, and its "plain LoRA SFT" baseline.

The paper's experts are ordinary LoRA SFT adapters, one per task and family (paper §2.9, §6.3). The demo and the
benchmark build their own on synthetic tasks (`synthetic.py`):

* `train_base_lm` briefly pre-trains a tiny random model on plain text, so experts start from a model that reads;
* `train_lora_expert` trains a LoRA adapter on prompt/response rows with the replay encoding (prompt masked), or
  continues an existing adapter: continuing the anchor on the replay set is the control a fusion must beat;
* `evaluate` generates greedily (batched, left-padded) and scores with `synthetic.score`.

Everything is seeded and runs deterministically on CPU.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hf_heterofusion.data.encoding import collate, encode_replay, pad_token_id
from hf_heterofusion.data.generation import generate_answers
from hf_heterofusion.data.models import load_causal_lm, load_tokenizer
from hf_heterofusion.data.replay import ReplayExample, examples_from_rows
from hf_heterofusion.errors import ConfigError
from hf_heterofusion.examples.synthetic import Task, get_task, score
from hf_heterofusion.method.schedule import cosine_with_warmup


logger = logging.getLogger(__name__)

TRAINING_LOG_NAME = "training_log.json"
"""Written next to a trained model or adapter: the per-step losses and the settings, for reports and plots."""

Batch = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------------------------------- loading


def load_model(
    base_dir: str | Path, adapter_dir: str | Path | None = None, *, trainable: bool = False
) -> tuple[torch.nn.Module, Any]:
    """A causal LM in fp32 (optionally with a PEFT adapter) and its tokenizer from `base_dir`."""
    model = load_causal_lm(base_dir, adapter_dir, trainable=trainable, what="base model")
    return model, load_tokenizer(base_dir, what="base model")


# ---------------------------------------------------------------------------------------------------- training


EXPERT_WARMUP = 0.05
"""Share of an expert's optimiser steps spent in linear warmup (then cosine to 0), as in the fusion's default."""


def _batches(items: Sequence[Any], batch_size: int, seed: int) -> Iterator[list[Any]]:
    """Endless seeded stream of shuffled batches; each epoch is a fresh permutation, the last batch may be short."""
    rng = random.Random(seed)
    order = list(range(len(items)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            yield [items[i] for i in order[start : start + batch_size]]


def _fit(
    model: torch.nn.Module,
    batches: Iterator[Batch],
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    desc: str,
) -> list[float]:
    """Run `steps` AdamW steps of causal-LM loss on the trainable parameters; return the loss of every step."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    # `first_step`: an expert's first step is not spent at lr 0 (the experts never had that reference quirk).
    scheduler = cosine_with_warmup(optimizer, int(steps * EXPERT_WARMUP), steps, start="first_step")
    model.train()
    losses = []
    progress = tqdm(range(steps), desc=desc, disable=None, leave=False)
    for _ in progress:
        loss = model(**next(batches)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        progress.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    return losses


def _resolve_steps(steps: int | None, epochs: float | None, n_items: int, batch_size: int) -> int:
    if batch_size < 1:
        raise ConfigError(f"`batch_size` must be at least 1, got {batch_size}")
    if steps is None:
        if epochs is None or epochs <= 0:
            raise ConfigError("give a positive `steps` or `epochs`")
        steps = math.ceil(epochs * math.ceil(n_items / batch_size))
    if steps < 1:
        raise ConfigError(f"`steps` must be at least 1, got {steps}")
    return steps


def _write_log(out_dir: Path, losses: list[float], settings: Mapping[str, Any]) -> None:
    log = {"losses": losses, **settings}
    (out_dir / TRAINING_LOG_NAME).write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")


def train_base_lm(
    model_dir: str | Path,
    texts: Sequence[str],
    *,
    steps: int = 200,
    lr: float = 3e-3,
    seed: int = 0,
    batch_size: int = 16,
    max_length: int = 128,
    weight_decay: float = 0.0,
    out_dir: str | Path | None = None,
) -> Path:
    """Briefly pre-train a (tiny, random) causal LM on plain texts, fine-tuning all weights.

    Each text is encoded as `bos text eos` and every token is supervised. The model and its tokenizer are saved to
    `out_dir`, or back into `model_dir` when `out_dir` is omitted.

    Args:
        model_dir (`str` or `Path`): a saved model with its tokenizer.
        texts (`Sequence[str]`): the corpus, e.g. `synthetic.make_corpus(seed, 2000, vocab="tiny")`.
        steps (`int`, *optional*, defaults to 200): optimizer steps.
        lr (`float`, *optional*, defaults to 3e-3): peak learning rate (5 % warmup, cosine decay).
        seed (`int`, *optional*, defaults to 0): seeds dropout and data order.

    Returns:
        `Path`: the folder the trained model was saved to.
    """
    if not texts:
        raise ConfigError("`texts` is empty; give the base model something to read")
    steps = _resolve_steps(steps, None, len(texts), batch_size)
    torch.manual_seed(seed)
    model, tokenizer = load_model(model_dir)
    examples = [_encode_text(text, tokenizer, max_length) for text in texts]  # plain LM: nothing masked
    pad = pad_token_id(tokenizer)
    batches = (collate(batch, pad) for batch in _batches(examples, batch_size, seed))
    losses = _fit(model, batches, steps=steps, lr=lr, weight_decay=weight_decay, desc="pre-train")
    logger.info("pre-trained %s for %d steps: loss %.3f -> %.3f", model_dir, steps, losses[0], losses[-1])

    target = Path(out_dir) if out_dir is not None else Path(model_dir)
    _save_replacing(model, tokenizer, target)
    _write_log(target, losses, {"steps": steps, "lr": lr, "seed": seed, "batch_size": batch_size})
    return target


def _encode_text(text: str, tokenizer: Any, max_length: int) -> tuple[list[int], list[int]]:
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    ids = ids[:max_length]
    return ids, list(ids)


def _save_replacing(model: Any, tokenizer: Any, target: Path) -> None:
    """Save through a temporary folder and move the files in, so saving over the loaded checkpoint is safe.

    The weights may be memory-mapped from `target`; truncating that file in place could crash the process.
    """
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=target))
    try:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        for item in staging.iterdir():
            os.replace(item, target / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def train_lora_expert(
    base_dir: str | Path,
    rows: Sequence[Mapping[str, Any] | ReplayExample],
    out_dir: str | Path,
    *,
    r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    target_modules: Sequence[str] | str | None = None,
    init_adapter: str | Path | None = None,
    steps: int | None = None,
    epochs: float | None = 3,
    lr: float = 1e-3,
    batch_size: int = 8,
    max_length: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> Path:
    """Train a LoRA expert by supervised fine-tuning on prompt/response rows (loss on responses only).

    Rows are encoded exactly like replay data (`encoding.encode_replay`), so an expert and a fusion see the same
    prompts. With `init_adapter`, that adapter is loaded trainable and trained further (its `r`, `lora_alpha`
    and modules win over the arguments): plain LoRA SFT of the anchor on the replay set, the baseline a fusion
    must beat with the same data.

    Args:
        base_dir (`str` or `Path`): the base model (and tokenizer) folder.
        rows (`Sequence`): replay-style dicts (`{"prompt", "response"}`, chat or alpaca) or `ReplayExample`s.
        out_dir (`str` or `Path`): where the adapter is saved with `save_pretrained`, plus `training_log.json`.
        r (`int`, *optional*, defaults to 8): LoRA rank of a new adapter.
        lora_alpha (`int`, *optional*, defaults to 16): LoRA alpha of a new adapter.
        target_modules (`Sequence[str]` or `str`, *optional*): modules to adapt; defaults to PEFT's
            `"all-linear"` (every projection of every layer, whatever the family calls it).
        init_adapter (`str` or `Path`, *optional*): an adapter on `base_dir` to continue training.
        steps (`int`, *optional*): optimizer steps; when omitted, `epochs` passes over the rows.
        epochs (`float`, *optional*, defaults to 3): passes over the rows when `steps` is omitted.
        lr (`float`, *optional*, defaults to 1e-3): peak learning rate (5 % warmup, cosine decay).
        max_length (`int`, *optional*, defaults to 256): longer examples are truncated, with a warning.
        seed (`int`, *optional*, defaults to 0): seeds LoRA initialisation and data order.

    Returns:
        `Path`: the adapter folder.

    Example:
        ```python
        >>> task = synthetic.get_task("ner_person", vocab="tiny")
        >>> train, _, test = synthetic.make_splits(task, seed=0, n_train=300, n_replay=0, n_test=50)
        >>> adapter = train_lora_expert(base, train, tmp / "ner_person", steps=200)
        >>> evaluate(base, adapter, task, test)
        87.5
        ```
    """
    examples = examples_from_rows(rows)
    steps = _resolve_steps(steps, epochs, len(examples), batch_size)
    torch.manual_seed(seed)  # LoRA A is drawn from the global generator when PEFT builds the layers
    model, tokenizer = load_model(base_dir, init_adapter, trainable=True)
    if init_adapter is None:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=target_modules if target_modules is not None else "all-linear",
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    encoded = encode_replay(examples, tokenizer, max_length)
    pad = pad_token_id(tokenizer)
    batches = (collate(batch, pad) for batch in _batches(encoded, batch_size, seed))
    losses = _fit(model, batches, steps=steps, lr=lr, weight_decay=weight_decay, desc=f"expert {Path(out_dir).name}")
    logger.info("trained LoRA expert %s for %d steps: loss %.3f -> %.3f", out_dir, steps, losses[0], losses[-1])

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    settings = {"steps": steps, "lr": lr, "seed": seed, "batch_size": batch_size, "examples": len(examples)}
    _write_log(out_dir, losses, {**settings, "init_adapter": str(init_adapter) if init_adapter else None})
    return out_dir


# -------------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    tokenizer: Any,
    task: Task | str,
    test_rows: Sequence[Mapping[str, Any] | ReplayExample],
    *,
    max_new_tokens: int = 40,
    batch_size: int = 16,
) -> float:
    """Score an already loaded model on `test_rows` (0..100); see `evaluate`."""
    examples = examples_from_rows(test_rows)
    predictions = generate_answers(model, tokenizer, examples, max_new_tokens=max_new_tokens, batch_size=batch_size)
    task = get_task(task) if isinstance(task, str) else task
    return score(task, predictions, [example.response for example in examples])


def evaluate(
    base_dir: str | Path,
    adapter_dir: str | Path | None,
    task: Task | str,
    test_rows: Sequence[Mapping[str, Any] | ReplayExample],
    *,
    max_new_tokens: int = 40,
    batch_size: int = 16,
) -> float:
    """Generate greedily for every test prompt and score against the reference responses.

    Args:
        base_dir (`str` or `Path`): the base model (and tokenizer) folder.
        adapter_dir (`str` or `Path`, *optional*): a PEFT adapter on it; `None` evaluates the bare base.
        task (`Task` or `str`): decides the metric (micro-F1 or accuracy).
        test_rows (`Sequence`): replay-style rows; `response` is the reference answer.
        max_new_tokens (`int`, *optional*, defaults to 40): generation budget per answer.
        batch_size (`int`, *optional*, defaults to 16): prompts per `generate` call.

    Returns:
        `float`: the score in 0..100.
    """
    model, tokenizer = load_model(base_dir, adapter_dir)
    return evaluate_model(model, tokenizer, task, test_rows, max_new_tokens=max_new_tokens, batch_size=batch_size)
