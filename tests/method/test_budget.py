# SPDX-License-Identifier: Apache-2.0
"""`max_steps: auto`: a held-out slice per task, a scored curve, and the best step's adapter is the one exported."""

import pytest
import torch

from hf_heterofusion.data.replay import ReplayExample
from hf_heterofusion.method import budget
from hf_heterofusion.method.budget import split_for_budget
from hf_heterofusion.pipeline import fit


def _rows(task, n, prefix=None):
    return [ReplayExample(f"{prefix or task} {i}?", f" answer {i}", task=task) for i in range(n)]


def test_each_task_gives_a_seeded_share_and_small_tasks_keep_everything():
    rows = _rows("big", 40) + _rows("mid", 8) + _rows("tiny", 3)
    train, held = split_for_budget(rows, seed=0)
    counts = {t: sum(r.task == t for r in held) for t in ("big", "mid", "tiny")}
    assert counts == {"big": 5, "mid": 1, "tiny": 0}
    assert len(train) + len(held) == len(rows) and not {r.prompt for r in train} & {r.prompt for r in held}
    assert split_for_budget(rows, seed=0) == (train, held) and split_for_budget(rows, seed=1)[1] != held
    assert sum(r.task == "big" for r in split_for_budget(_rows("big", 400), seed=0)[1]) == budget.MAX_PER_TASK


def test_teacher_rows_are_held_out_before_the_few_labelled_ones():
    labelled, taught = _rows("t", 4, prefix="gold"), _rows("t", 44, prefix="teacher")
    rows = labelled + taught
    train, held = split_for_budget(rows, seed=0, spare=frozenset(range(4, 48)))
    assert len(held) == 6 and all(r.prompt.startswith("teacher") for r in held)
    assert all(r in train for r in labelled)
    only_labelled = split_for_budget(_rows("u", 16), seed=0, spare=frozenset())[1]
    assert len(only_labelled) == 2  # a task without teacher rows holds out its own


def test_a_held_out_prompt_leaves_training_everywhere():
    rows = _rows("a", 8) + [ReplayExample(r.prompt, r.response, task="b") for r in _rows("a", 8)]
    train, held = split_for_budget(rows, seed=0)
    assert not {r.prompt for r in train} & {r.prompt for r in held}


@pytest.mark.integration
def test_the_best_scored_step_is_the_adapter_exported(make_config, monkeypatch):
    """Scores are rigged so step 0 (the anchor as it was) is best: the exported factors must be the anchor's."""
    calls = {"n": 0}
    real = budget.token_f1

    def rigged(prediction, reference):
        calls["n"] += 1
        return 1.0 if calls["n"] <= 1 else 0.0 * real(prediction, reference)

    monkeypatch.setattr(budget, "token_f1", rigged)
    cfg = make_config(trainer="lora", max_steps="auto", epochs=4, gradient_accumulation_steps=1, lr=1e-2)
    result = fit(cfg, show_progress=False)
    choice = result.report.training.budget
    assert choice["held_out"] == 1 and choice["chosen_step"] == 0 and choice["score"] == 100.0
    steps = [p["step"] for p in choice["curve"]]
    assert steps[0] == 0 and steps[-1] == choice["total_steps"] == result.report.training.optimizer_steps == 28
    from safetensors.torch import load_file

    anchor = load_file(str(cfg.target_adapter) + "/adapter_model.safetensors")
    for key, tensor in result.tensors.items():
        assert torch.equal(tensor.float(), anchor[key].float()), key


@pytest.mark.integration
def test_the_curve_picks_its_best_step(make_config):
    result = fit(make_config(trainer="lora", max_steps="auto", epochs=3, gradient_accumulation_steps=1, lr=1e-2),
                 show_progress=False)
    choice = result.report.training.budget
    best = max(choice["curve"], key=lambda p: p["score"])  # the first of equal scores: the earliest step
    assert (choice["chosen_step"], choice["score"]) == (best["step"], best["score"])
    assert len(choice["curve"]) >= 4


@pytest.mark.integration
def test_step_selection_works_within_a_fixed_budget(make_config):
    result = fit(make_config(trainer="lora", max_steps=5, step_selection="held_out", epochs=3,
                             gradient_accumulation_steps=1, lr=1e-2), show_progress=False)
    choice = result.report.training.budget
    assert choice["total_steps"] == result.report.training.optimizer_steps == 5
    assert [p["step"] for p in choice["curve"]] == [0, 1, 2, 3, 4, 5]
