# SPDX-License-Identifier: Apache-2.0
"""LoRA experts: a few SFT steps on a tiny model lower the loss, are seeded, continue an adapter; evaluation runs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

from hf_heterofusion.data.replay import examples_from_rows
from hf_heterofusion.errors import AdapterNotFoundError, ConfigError
from hf_heterofusion.examples.experts import (
    TRAINING_LOG_NAME,
    _fit,
    evaluate,
    generate_answers,
    load_model,
    train_base_lm,
    train_lora_expert,
)
from hf_heterofusion.examples.synthetic import get_task, make_corpus, make_splits
from hf_heterofusion.testing.families import LLAMA_STYLE_MODULES


@pytest.fixture(autouse=True)
def _few_threads():
    # Two CPU cores are shared by every test worker; one thread is also the deterministic choice.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def task_rows():
    task = get_task("ner_person", vocab="tiny")
    train, _, test = make_splits(task, seed=0, n_train=16, n_replay=0, n_test=6)
    return task, train, test


@pytest.fixture(scope="module")
def expert(llama_target, task_rows, tmp_path_factory):
    _, train, _ = task_rows
    out = tmp_path_factory.mktemp("experts") / "ner_person"
    return train_lora_expert(llama_target, train, out, r=4, lora_alpha=8, steps=8, lr=1e-2, batch_size=8, seed=1)


def _losses(path):
    return json.loads((path / TRAINING_LOG_NAME).read_text())["losses"]


@pytest.mark.integration
def test_expert_training_lowers_loss(expert):
    losses = _losses(expert)
    assert len(losses) == 8
    assert losses[-1] < losses[0] - 0.3  # a random tiny model: loss starts near log(vocab) and falls steadily
    config = json.loads((expert / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8
    assert set(config["target_modules"]) == set(LLAMA_STYLE_MODULES)  # "all-linear", expanded by PEFT
    tensors = load_file(expert / "adapter_model.safetensors")
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in tensors.items())  # B left zero-init


@pytest.mark.integration
def test_expert_training_is_seeded(expert, llama_target, task_rows, tmp_path):
    _, train, _ = task_rows
    again = train_lora_expert(llama_target, train, tmp_path / "again", r=4, lora_alpha=8, steps=8, lr=1e-2,
                              batch_size=8, seed=1)  # fmt: skip
    first, second = load_file(expert / "adapter_model.safetensors"), load_file(again / "adapter_model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert _losses(again) == _losses(expert)


@pytest.mark.integration
def test_continue_an_existing_adapter(expert, llama_target, task_rows, tmp_path):
    _, train, _ = task_rows
    # r and lora_alpha are ignored: the adapter being continued fixes them.
    out = train_lora_expert(llama_target, train, tmp_path / "cont", init_adapter=expert, r=16, steps=2, lr=1e-2)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    before, after = load_file(expert / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert _losses(out)[0] < _losses(expert)[0]  # it starts where the expert left off, not from scratch


@pytest.mark.integration
def test_evaluate_runs_and_batching_does_not_change_answers(expert, llama_target, task_rows):
    task, _, test = task_rows
    value = evaluate(llama_target, expert, task, test, max_new_tokens=12, batch_size=4)
    assert 0.0 <= value <= 100.0
    model, tokenizer = load_model(llama_target, expert)
    examples = examples_from_rows(test)
    batched = generate_answers(model, tokenizer, examples, max_new_tokens=12, batch_size=6)
    single = generate_answers(model, tokenizer, examples, max_new_tokens=12, batch_size=1)
    assert batched == single  # left padding keeps each row's continuation intact
    assert all("\n" not in answer for answer in batched)


@pytest.mark.integration
def test_train_base_lm_saves_a_loadable_model(llama_target, tmp_path):
    out = train_base_lm(llama_target, make_corpus(0, 32, vocab="tiny"), steps=4, lr=3e-3, batch_size=8,
                        out_dir=tmp_path / "pre")  # fmt: skip
    losses = _losses(out)
    assert len(losses) == 4 and losses[-1] < losses[0]
    model, tokenizer = load_model(out)
    assert tokenizer.eos_token_id is not None and sum(p.numel() for p in model.parameters()) > 0


def test_argument_errors(llama_target, task_rows, tmp_path):
    _, train, _ = task_rows
    with pytest.raises(ConfigError, match="give a positive `steps` or `epochs`"):
        train_lora_expert(llama_target, train, tmp_path / "x", epochs=None)
    with pytest.raises(ConfigError, match="`batch_size` must be at least 1"):
        train_lora_expert(llama_target, train, tmp_path / "x", steps=1, batch_size=0)
    with pytest.raises(AdapterNotFoundError, match="base model folder .*missing does not exist"):
        train_lora_expert(tmp_path / "missing", train, tmp_path / "x", steps=1)


def test_lr_schedule():
    """Experts use `schedule.py` with `first_step` warmup: 5 % of 20 steps = 1 warmup step at lr/2, then cosine."""

    class Quadratic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

        def forward(self, x):
            return SimpleNamespace(loss=(self.w * x).square().sum())

    seen = []
    hook = register_optimizer_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    try:
        _fit(Quadratic(), iter([{"x": torch.ones(2)}] * 20), steps=20, lr=1.0, weight_decay=0.0, desc="t")
    finally:
        hook.remove()
    assert seen[:2] == [0.5, 1.0] and seen[-1] < 0.01
    assert all(a >= b for a, b in zip(seen[1:], seen[2:]))
